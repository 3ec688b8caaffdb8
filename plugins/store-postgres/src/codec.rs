//! Binding domain values to PostgreSQL and the checked decoding of rows.
//!
//! Everything read from the database is treated as untrusted: a value that
//! does not decode is `StoreError::Corrupt` naming the table, the column and
//! the problem, never a panic.

use chrono::{DateTime, Utc};
use hubsync_core::entity::Operation;
use hubsync_core::store::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

/// A JSON document that PostgreSQL's JSONB cannot hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} contains the character U+0000 (NUL) at {path}, which PostgreSQL cannot store in JSONB; remove it from the data (the SQLite backend stores it, PostgreSQL refuses it)"
)]
pub struct NulInJson {
    pub what: &'static str,
    /// JSON pointer of the offending string or key ("" for the root).
    pub path: String,
}

/// Refuses JSON that JSONB would reject (a `\u0000` in any string or key),
/// with the JSON pointer of the first occurrence, before the statement is
/// sent: PostgreSQL's own message does not say where.
pub(crate) fn check_jsonb(what: &'static str, value: &Value) -> Result<(), NulInJson> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                let found = walk(v, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, v)| {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                let found = k.contains('\0') || walk(v, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    if walk(value, &mut path) {
        Err(NulInJson { what, path })
    } else {
        Ok(())
    }
}

/// [`check_jsonb`] of JSON text: the text is parsed only when it holds the
/// escape of U+0000 at all (it may be an escaped backslash followed by
/// `u0000`, which JSONB accepts).
pub(crate) fn check_jsonb_text(what: &'static str, text: &str) -> Result<(), NulInJson> {
    if !text.contains("\\u0000") {
        return Ok(());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => check_jsonb(what, &value),
        // Not JSON: PostgreSQL refuses it with its own message.
        Err(_) => Ok(()),
    }
}

/// Checks `value` for JSONB and wraps it for binding.
pub(crate) fn jsonb<'v>(
    op: &'static str,
    what: &'static str,
    value: &'v Value,
) -> StoreResult<sqlx::types::Json<&'v Value>> {
    check_jsonb(what, value).map_err(|e| StoreError::backend(op, e))?;
    Ok(sqlx::types::Json(value))
}

/// Reads the columns of one row of `table`, checking every value.
pub(crate) struct RowReader<'r> {
    row: &'r PgRow,
    table: &'static str,
}

impl<'r> RowReader<'r> {
    pub(crate) fn new(row: &'r PgRow, table: &'static str) -> Self {
        RowReader { row, table }
    }

    fn corrupt(&self, col: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError::corrupt(format!("{}.{col}: {problem}", self.table))
    }

    fn get<T>(&self, col: &str) -> StoreResult<Option<T>>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get::<Option<T>, _>(col)
            .map_err(|e| self.corrupt(col, e))
    }

    fn required<T>(&self, col: &str, v: Option<T>) -> StoreResult<T> {
        v.ok_or_else(|| self.corrupt(col, "unexpected NULL"))
    }

    pub(crate) fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.get::<String>(col)
    }

    pub(crate) fn text(&self, col: &str) -> StoreResult<String> {
        let v = self.opt_text(col)?;
        self.required(col, v)
    }

    pub(crate) fn opt_i64(&self, col: &str) -> StoreResult<Option<i64>> {
        self.get::<i64>(col)
    }

    pub(crate) fn i64(&self, col: &str) -> StoreResult<i64> {
        let v = self.opt_i64(col)?;
        self.required(col, v)
    }

    pub(crate) fn bool(&self, col: &str) -> StoreResult<bool> {
        let v = self.get::<bool>(col)?;
        self.required(col, v)
    }

    pub(crate) fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.get::<Uuid>(col)
    }

    pub(crate) fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        let v = self.opt_uuid(col)?;
        self.required(col, v)
    }

    pub(crate) fn opt_ts(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.get::<DateTime<Utc>>(col)
    }

    pub(crate) fn ts(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        let v = self.opt_ts(col)?;
        self.required(col, v)
    }

    pub(crate) fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        self.get::<Value>(col)
    }

    pub(crate) fn json(&self, col: &str) -> StoreResult<Value> {
        let v = self.opt_json(col)?;
        self.required(col, v)
    }

    pub(crate) fn operation(&self, col: &str) -> StoreResult<Operation> {
        let s = self.text(col)?;
        Operation::parse(&s).ok_or_else(|| {
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
    use serde_json::json;

    fn check(value: Value, expected: Option<&str>) {
        let found = check_jsonb("data", &value).err().map(|e| e.path);
        assert_eq!(found.as_deref(), expected, "{value}");
    }

    #[test]
    fn a_nul_anywhere_is_found_with_its_json_pointer() {
        check(json!({"a": "ok", "b": [1, "x"]}), None);
        check(json!("a\u{0}b"), Some(""));
        check(json!({"a": {"b/c": ["x", "y\u{0}"]}}), Some("/a/b~1c/1"));
        check(json!({"ke\u{0}y": 1}), Some("/ke\u{0}y"));
        check(json!([{"t~": "\u{0}"}]), Some("/0/t~0"));
    }
}
