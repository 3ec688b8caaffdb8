//! The hubsync conflict resolver API: what a resolver author writes against.
//!
//! A resolver is a plain Rust type implementing [`Resolver`]. It is handed a
//! [`ConflictInput`] (the entity type, the master's version, the incoming
//! version, the base version when known, node ids, timestamps and the
//! type's JSON Schema) and returns a [`Decision`]: keep the master's
//! version, take the incoming one, a merged value, or defer to a person.
//!
//! [`declare_resolver!`] exports a resolver over a small, versioned C ABI
//! (see [`abi`] and docs/plugins.md) so that a `cdylib` built from it can be
//! loaded by any hubsync host built with a compatible ABI version, whatever
//! compiler version built either side. Only JSON bytes, pointers, lengths
//! and `u32`/`i32` cross that boundary.
//!
//! Owns: the author trait, the serde types (their JSON *is* the wire format
//! of the ABI), the ABI table and the plugin-side glue. Must never: depend
//! on anything beyond serde and serde_json (every plugin links this crate),
//! or let a panic unwind across the C boundary.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod abi;

#[doc(hidden)]
pub mod __export;

/// One side of a conflict (or the base both sides started from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// The entity's business data (validated against the type's schema).
    pub data: Value,
    /// Soft-deleted?
    pub is_deleted: bool,
    /// When this version was written, UTC, RFC 3339 with microseconds and
    /// `Z` (`2025-12-12T10:30:00.000000Z`).
    pub updated_at: String,
    /// The same instant as microseconds since the Unix epoch: compare these
    /// rather than parsing `updated_at`.
    pub updated_at_us: i64,
    /// The node (uuid, lowercase hyphenated) whose write produced this
    /// version, when known.
    pub node_id: Option<String>,
}

/// Everything a resolver may look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictInput {
    /// The entity type's name (the schema's `title`), e.g. `DailyReport`.
    pub entity_type: String,
    /// The entity's uuid, lowercase hyphenated.
    pub entity_uuid: String,
    /// The master's current version.
    pub master: Version,
    /// The version a node sent, based on an older master version.
    pub incoming: Version,
    /// The version both sides started from, when the master still has it
    /// (today it never does: treat `None` as "every difference may be a
    /// change on both sides").
    #[serde(default)]
    pub base: Option<Version>,
    /// The entity type's JSON Schema (draft 2020-12), as loaded by the host;
    /// `$ref`s to other files of the schema set are left unresolved.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Options the operator set for this resolver (see
    /// [`Manifest::options`]); absent keys mean "use the default".
    #[serde(default)]
    pub options: Map<String, Value>,
}

impl ConflictInput {
    /// The same conflict seen from the other side: master and incoming
    /// swapped. A resolver that declares itself `symmetric` must answer it
    /// with the [mirrored](Decision::mirrored) decision.
    pub fn swapped(&self) -> ConflictInput {
        let mut s = self.clone();
        std::mem::swap(&mut s.master, &mut s.incoming);
        s
    }

    /// The option `name` as a string, if the operator set one.
    pub fn option_str(&self, name: &str) -> Option<&str> {
        self.options.get(name).and_then(Value::as_str)
    }
}

/// What a resolver decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The master's version stands; the incoming one is kept in history.
    KeepMaster,
    /// The incoming version replaces the master's, which is kept in history.
    TakeIncoming,
    /// A new version built from both; the host validates `data` against the
    /// type's schema before applying it (an invalid merge is deferred).
    Merge { data: Value },
    /// A person decides; the master's version stands meanwhile.
    Defer { reason: String },
}

impl Decision {
    /// The decision with master and incoming swapped: what a symmetric
    /// resolver answers to [`ConflictInput::swapped`].
    pub fn mirrored(&self) -> Decision {
        match self {
            Decision::KeepMaster => Decision::TakeIncoming,
            Decision::TakeIncoming => Decision::KeepMaster,
            other => other.clone(),
        }
    }
}

/// What a resolver says about itself (`describe()` over the ABI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The name it is selected by in schemas (`x-hubsync.conflict`) and in
    /// `[conflicts]`; lowercase words joined by `-`.
    pub name: String,
    /// The plugin's own version (semver), e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// One sentence for operators.
    pub description: String,
    /// Whether swapping master and incoming mirrors the decision
    /// (KeepMaster <-> TakeIncoming; Merge and Defer unchanged). The
    /// resolver laws check it.
    pub symmetric: bool,
    /// Options the operator may set.
    #[serde(default)]
    pub options: Vec<OptionSpec>,
}

/// One declared option of a resolver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSpec {
    pub name: String,
    pub description: String,
    /// The value used when the operator sets none.
    pub default: Value,
    /// The allowed values, if the option is an enumeration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Value>,
}

/// A resolver could not decide. The host turns it into a deferred
/// conflict (nothing is lost) and logs the message, so say what failed,
/// why, and what an operator can do.
///
/// (Hand-written rather than thiserror: this crate is linked into every
/// plugin and keeps to serde and serde_json.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError(pub String);

impl ResolveError {
    pub fn new(message: impl Into<String>) -> ResolveError {
        ResolveError(message.into())
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolveError {}

/// A conflict resolution strategy, written by a plugin author.
///
/// Rules (checked by `hubsync-resolver-testkit`'s `assert_resolver_laws`):
/// never panic, be deterministic (same input, same decision — no clocks,
/// no randomness, no I/O), mirror the decision under a swap if the
/// manifest says `symmetric`, change nothing when both versions are the
/// same, and return merged data that validates against the type's schema.
///
/// `resolve` may be called concurrently from several threads (hence
/// `Send + Sync`), and runs inside the master's transaction: keep it fast;
/// the host bounds it with a timeout.
pub trait Resolver: Send + Sync + 'static {
    /// Name, version, description, symmetry, options.
    fn manifest(&self) -> Manifest;
    /// Decides one conflict.
    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError>;
}

/// Exports a [`Resolver`] over the C ABI as the library's entry symbol
/// [`abi::ENTRY_SYMBOL`] (`hubsync_resolver_entry_v1`).
///
/// `declare_resolver!(MyResolver);` builds it with `Default`;
/// `declare_resolver!(MyResolver, MyResolver::new(42));` with an
/// expression. Use it once per `cdylib`. Panics in the constructor,
/// `manifest` or `resolve` are caught inside the plugin and reported to the
/// host as errors.
///
/// A binary cannot link two crates that both export the entry symbol (the
/// linker refuses the duplicate), so a crate that is also linked into a
/// host as an rlib (hubsync's built-in strategies) invokes this macro
/// behind a cargo feature; see docs/plugins.md.
#[macro_export]
macro_rules! declare_resolver {
    ($ty:ty) => {
        $crate::declare_resolver!($ty, <$ty as ::core::default::Default>::default());
    };
    ($ty:ty, $make:expr) => {
        const _: () = {
            static INSTANCE: ::std::sync::OnceLock<
                ::core::option::Option<$crate::__export::Instance<$ty>>,
            > = ::std::sync::OnceLock::new();

            fn instance() -> ::core::option::Option<&'static $crate::__export::Instance<$ty>> {
                INSTANCE
                    .get_or_init(|| {
                        $crate::__export::Instance::build(
                            || $make,
                            cfg!(panic = "unwind"),
                            describe,
                            resolve,
                        )
                    })
                    .as_ref()
            }

            unsafe extern "C" fn describe(out: *mut $crate::abi::OwnedBuf) -> i32 {
                // SAFETY: the host passes a valid out-pointer (ABI contract).
                unsafe { $crate::__export::describe(instance(), out) }
            }

            unsafe extern "C" fn resolve(
                input: *const u8,
                input_len: usize,
                out: *mut $crate::abi::OwnedBuf,
            ) -> i32 {
                // SAFETY: the host passes `input_len` readable bytes and a
                // valid out-pointer (ABI contract).
                unsafe { $crate::__export::resolve(instance(), input, input_len, out) }
            }

            /// The plugin's entry point: a pointer to its ABI table, or
            /// null if the resolver could not be constructed.
            #[unsafe(no_mangle)]
            pub extern "C" fn hubsync_resolver_entry_v1() -> *const $crate::abi::ResolverEntryV1 {
                $crate::__export::entry(instance())
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_have_a_stable_json_form() {
        let check = |d: Decision, json: &str| {
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::from_str::<Decision>(json).unwrap(), d);
        };
        check(Decision::KeepMaster, r#"{"decision":"keep_master"}"#);
        check(Decision::TakeIncoming, r#"{"decision":"take_incoming"}"#);
        check(
            Decision::Merge {
                data: serde_json::json!({"a": 1}),
            },
            r#"{"decision":"merge","data":{"a":1}}"#,
        );
        check(
            Decision::Defer { reason: "x".into() },
            r#"{"decision":"defer","reason":"x"}"#,
        );
    }

    #[test]
    fn mirroring_swaps_only_the_sides() {
        assert_eq!(Decision::KeepMaster.mirrored(), Decision::TakeIncoming);
        assert_eq!(Decision::TakeIncoming.mirrored(), Decision::KeepMaster);
        let m = Decision::Merge { data: Value::Null };
        assert_eq!(m.mirrored(), m);
    }
}
