//! Text encodings of domain values in SQLite, and the checked decoding of
//! rows back into them.
//!
//! Everything read from the database is treated as untrusted: a value that
//! does not decode is reported as `StoreError::Corrupt` naming the table,
//! the column and the offending value, never a panic.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hubsync_core::entity::{Operation, format_ts, parse_ts};
use hubsync_core::store::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

/// A UUID as stored: canonical hyphenated lowercase text (so text order is
/// byte order, which `list_entities` pagination relies on).
pub(crate) fn uuid_text(id: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

pub(crate) fn opt_uuid_text(id: Option<Uuid>) -> Option<String> {
    id.map(uuid_text)
}

/// A uuid's text as a bound value in one allocation (sqlx wraps a
/// `String` in a second one, an `Arc<str>` in none).
pub(crate) fn uuid_arg(id: Uuid) -> Arc<str> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(&*id.hyphenated().encode_lower(&mut buf))
}

pub(crate) fn opt_uuid_arg(id: Option<Uuid>) -> Option<Arc<str>> {
    id.map(uuid_arg)
}

/// The short texts a multi-row statement binds again and again (entity
/// types, reference pointers, a timestamp), each allocated once and shared:
/// sqlx copies a bound `&str` into two new allocations per value, and
/// binds an `Arc<str>` clone without any.
#[derive(Default)]
pub(crate) struct SharedTexts(Vec<Arc<str>>);

impl SharedTexts {
    /// Distinct texts kept; past that each is allocated (still correct).
    const KEPT: usize = 32;

    pub(crate) fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(kept) = self.0.iter().find(|k| ***k == *text) {
            return kept.clone();
        }
        let new: Arc<str> = Arc::from(text);
        if self.0.len() < Self::KEPT {
            self.0.push(new.clone());
        }
        new
    }
}

pub(crate) fn ts_text(ts: DateTime<Utc>) -> String {
    format_ts(ts)
}

pub(crate) fn opt_ts_text(ts: Option<DateTime<Utc>>) -> Option<String> {
    ts.map(format_ts)
}

/// JSON as stored: compact text (key order is preserved by the workspace's
/// `preserve_order` feature of serde_json).
pub(crate) fn json_text(value: &Value) -> String {
    // Written into a byte buffer, not through `Display` (`to_string`),
    // which goes through `fmt::Write` a piece at a time: twice the time for
    // a report (~0.36 against ~0.72 µs, docs/benchmarks.md, session 17).
    // The same serializer and formatter, so the same text. Serializing a
    // `Value` cannot fail (its keys are strings); should it, `Display`
    // writes it.
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// Reads the columns of one row of `table`, checking every value.
pub(crate) struct RowReader<'r> {
    row: &'r SqliteRow,
    table: &'static str,
}

impl<'r> RowReader<'r> {
    pub(crate) fn new(row: &'r SqliteRow, table: &'static str) -> Self {
        RowReader { row, table }
    }

    fn corrupt(&self, col: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError::corrupt(format!("{}.{col}: {problem}", self.table))
    }

    pub(crate) fn opt_text(&self, col: &str) -> StoreResult<Option<&'r str>> {
        self.row
            .try_get::<Option<&str>, _>(col)
            .map_err(|e| self.corrupt(col, e))
    }

    pub(crate) fn text(&self, col: &str) -> StoreResult<&'r str> {
        self.opt_text(col)?
            .ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn opt_i64(&self, col: &str) -> StoreResult<Option<i64>> {
        self.row
            .try_get::<Option<i64>, _>(col)
            .map_err(|e| self.corrupt(col, e))
    }

    pub(crate) fn i64(&self, col: &str) -> StoreResult<i64> {
        self.opt_i64(col)?
            .ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn bool(&self, col: &str) -> StoreResult<bool> {
        match self.i64(col)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.corrupt(col, format_args!("{n} is not a boolean (0 or 1)"))),
        }
    }

    pub(crate) fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.opt_text(col)?
            .map(|s| {
                Uuid::try_parse(s)
                    .map_err(|_| self.corrupt(col, format_args!("{s:?} is not a UUID")))
            })
            .transpose()
    }

    pub(crate) fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        self.opt_uuid(col)?
            .ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn opt_ts(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.opt_text(col)?
            .map(|s| {
                parse_ts(s).ok_or_else(|| {
                    self.corrupt(col, format_args!("{s:?} is not an RFC 3339 timestamp"))
                })
            })
            .transpose()
    }

    pub(crate) fn ts(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        self.opt_ts(col)?
            .ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        self.opt_text(col)?
            .map(|s| {
                serde_json::from_str(s)
                    .map_err(|e| self.corrupt(col, format_args!("invalid JSON: {e}")))
            })
            .transpose()
    }

    pub(crate) fn json(&self, col: &str) -> StoreResult<Value> {
        self.opt_json(col)?
            .ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn operation(&self, col: &str) -> StoreResult<Operation> {
        let s = self.text(col)?;
        Operation::parse(s).ok_or_else(|| {
            self.corrupt(
                col,
                format_args!("{s:?} is not an operation (INSERT, UPDATE, DELETE)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_the_display_text() {
        for v in [
            serde_json::json!({"z": 1, "a": [1.5, -0.0, 1e300, null], "q": "\"\\\n\u{1}é🙂"}),
            serde_json::json!("plain"),
            serde_json::json!([]),
            serde_json::json!({"n": 0.1, "big": 12345678901234567890u64, "neg": -7}),
        ] {
            assert_eq!(json_text(&v), v.to_string());
        }
    }

    #[test]
    fn a_uuid_bound_as_shared_text_is_its_stored_text() {
        let id = Uuid::from_u128(0xABCDEF01_2345_6789_ABCD_EF0123456789);
        assert_eq!(&*uuid_arg(id), uuid_text(id));
        assert_eq!(opt_uuid_arg(None), None);
    }

    #[test]
    fn shared_texts_hand_out_one_copy_per_text_and_stay_correct_past_their_bound() {
        let mut texts = SharedTexts::default();
        let a = texts.get("Report");
        let b = texts.get(&String::from("Report"));
        assert_eq!(&*a, "Report");
        assert!(Arc::ptr_eq(&a, &b), "the same text is shared");
        assert_ne!(&*texts.get("Brigade"), &*a);
        let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        for t in &many {
            assert_eq!(&*texts.get(t), t.as_str());
        }
        assert_eq!(&*texts.get("t99"), "t99");
        assert!(texts.0.len() <= SharedTexts::KEPT);
    }

    #[test]
    fn uuid_text_is_canonical_lowercase_hyphenated() {
        let id = Uuid::from_u128(0xABCDEF01_2345_6789_ABCD_EF0123456789);
        assert_eq!(uuid_text(id), "abcdef01-2345-6789-abcd-ef0123456789");
        assert_eq!(uuid_text(id), id.to_string());
    }

    #[test]
    fn uuid_text_order_is_uuid_order() {
        let a = Uuid::from_u128(0x0fff_ffff_ffff_ffff_ffff_ffff_ffff_ffff);
        let b = Uuid::from_u128(0xa000_0000_0000_0000_0000_0000_0000_0000);
        assert!(a < b);
        assert!(uuid_text(a) < uuid_text(b));
    }
}
