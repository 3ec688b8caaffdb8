//! The schema set's version (`schema-set.json`) and the compatibility rule
//! between a client's set and the master's.
//!
//! Owns parsing/printing of `MAJOR.MINOR.PATCH` and the decision "may these
//! two nodes exchange packets". It must never look at entity data: the rule is
//! about the declared version only, so that a node can be refused before any
//! data is applied (contract §7.9).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A schema set version, `MAJOR.MINOR.PATCH`.
///
/// MAJOR changes are breaking (nodes on different MAJOR versions never
/// exchange data); MINOR and PATCH changes are additive or cosmetic. Ordering
/// is numeric, field by field (`1.10.0 > 1.9.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl SchemaVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        SchemaVersion {
            major,
            minor,
            patch,
        }
    }

    /// Can a node with `self` (the client's schema set) exchange with a master at `master`?
    ///
    /// Rule: same MAJOR => `Ok`; different MAJOR => `Err(SchemaMismatch)`,
    /// whose message names both versions and what to do.
    pub fn check_compatible(&self, master: &SchemaVersion) -> Result<(), SchemaMismatch> {
        if self.major == master.major {
            Ok(())
        } else {
            Err(SchemaMismatch {
                client: *self,
                master: *master,
            })
        }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A string that is not a strict `MAJOR.MINOR.PATCH` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid schema version {input:?}: {reason}; write it as MAJOR.MINOR.PATCH with plain decimal numbers, e.g. \"1.0.0\""
)]
pub struct SchemaVersionParseError {
    pub input: String,
    pub reason: String,
}

impl FromStr for SchemaVersion {
    type Err = SchemaVersionParseError;

    /// Strict: exactly three dot-separated decimal numbers, no sign, no
    /// leading zeros, no pre-release or build suffix. Being strict here keeps
    /// "1.2" or "v1.2.0" from silently meaning something else on another node.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SchemaVersionParseError {
            input: input.to_owned(),
            reason,
        };
        let parts: Vec<&str> = input.split('.').collect();
        if parts.len() != 3 {
            return Err(fail(format!(
                "expected 3 dot-separated numbers, found {}",
                parts.len()
            )));
        }
        let mut numbers = [0u64; 3];
        for ((slot, part), name) in numbers
            .iter_mut()
            .zip(&parts)
            .zip(["MAJOR", "MINOR", "PATCH"])
        {
            if part.is_empty() {
                return Err(fail(format!("{name} is empty")));
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(format!("{name} {part:?} is not a decimal number")));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(fail(format!("{name} {part:?} has a leading zero")));
            }
            *slot = part
                .parse()
                .map_err(|_| fail(format!("{name} {part:?} is too large")))?;
        }
        Ok(SchemaVersion::new(numbers[0], numbers[1], numbers[2]))
    }
}

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A client's schema set cannot exchange data with the master's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "client schema set {client} is incompatible with the master's {master} (different MAJOR version); \
     install the master's schema set {}.x on this node, or upgrade the master",
    master.major
)]
pub struct SchemaMismatch {
    pub client: SchemaVersion,
    pub master: SchemaVersion,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SchemaVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_strict_major_minor_patch() {
        for text in ["0.0.0", "1.2.0", "1.9.3", "10.20.30"] {
            assert_eq!(v(text).to_string(), text);
        }
        assert_eq!(v("1.2.3"), SchemaVersion::new(1, 2, 3));
    }

    #[test]
    fn rejects_anything_but_three_plain_numbers() {
        let check = |input: &str, reason_contains: &str| {
            let err = input.parse::<SchemaVersion>().unwrap_err();
            assert!(
                err.reason.contains(reason_contains),
                "{input:?}: {err} should mention {reason_contains:?}"
            );
            assert!(err.to_string().contains("MAJOR.MINOR.PATCH"), "{err}");
        };
        check("1.2", "expected 3");
        check("1.2.3.4", "expected 3");
        check("", "expected 3");
        check("v1.2.0", "MAJOR \"v1\" is not a decimal number");
        check("1..0", "MINOR is empty");
        check("1.2.3-beta", "PATCH \"3-beta\" is not a decimal number");
        check("1.2.+3", "not a decimal number");
        check(" 1.2.3", "not a decimal number");
        check("01.2.3", "leading zero");
        check("1.2.99999999999999999999", "too large");
    }

    #[test]
    fn orders_numerically() {
        assert!(v("1.10.0") > v("1.9.3"));
        assert!(v("2.0.0") > v("1.99.99"));
    }

    #[test]
    fn serde_uses_the_string_form() {
        assert_eq!(serde_json::to_string(&v("1.2.0")).unwrap(), "\"1.2.0\"");
        let back: SchemaVersion = serde_json::from_str("\"3.4.5\"").unwrap();
        assert_eq!(back, v("3.4.5"));
        let err = serde_json::from_str::<SchemaVersion>("\"3.4\"").unwrap_err();
        assert!(err.to_string().contains("invalid schema version"), "{err}");
    }

    #[test]
    fn same_major_is_compatible_whatever_minor_and_patch() {
        assert_eq!(v("1.2.0").check_compatible(&v("1.9.3")), Ok(()));
        assert_eq!(v("1.9.3").check_compatible(&v("1.2.0")), Ok(()));
        assert_eq!(v("0.1.0").check_compatible(&v("0.0.1")), Ok(()));
    }

    #[test]
    fn different_major_is_refused_naming_both_versions_and_the_fix() {
        let err = v("2.0.0").check_compatible(&v("1.2.0")).unwrap_err();
        assert_eq!(
            err,
            SchemaMismatch {
                client: v("2.0.0"),
                master: v("1.2.0")
            }
        );
        assert_eq!(
            err.to_string(),
            "client schema set 2.0.0 is incompatible with the master's 1.2.0 (different MAJOR version); \
             install the master's schema set 1.x on this node, or upgrade the master"
        );
        assert!(v("1.0.0").check_compatible(&v("2.0.0")).is_err());
    }
}
