//! The generic entity: framework fields (`uuid`, `updated_at`, `is_deleted`,
//! revision bookkeeping) around business `data` validated by the registry.
//!
//! Timestamps are always UTC and truncated to whole microseconds, so that
//! every backend (SQLite text, PostgreSQL `timestamptz`) and the wire format
//! round-trip them exactly (Property 16).

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The operation a change represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "INSERT" => Some(Operation::Insert),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            _ => None,
        }
    }

    /// What one queued change becomes when another change of the same entity
    /// is registered before the first was sent: an entity the peer never saw
    /// stays an INSERT, a delete always wins, an undelete is an UPDATE.
    pub fn coalesce(queued: Operation, new: Operation) -> Operation {
        match (queued, new) {
            (_, Operation::Delete) => Operation::Delete,
            (Operation::Insert, _) => Operation::Insert,
            (Operation::Delete, _) => Operation::Update,
            (Operation::Update, op) => op,
        }
    }
}

/// An entity as stored on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub uuid: Uuid,
    pub updated_at: DateTime<Utc>,
    pub is_deleted: bool,
    pub data: Value,
    /// On the master: the revision (global change sequence number) of this
    /// version. On a client: the master revision this local copy is based on
    /// (`None` for an entity the master has not seen yet).
    pub rev: Option<i64>,
    /// The node whose write produced this version.
    pub origin: Option<Uuid>,
}

impl Entity {
    /// The entity as the local API shows it (contract §4).
    pub fn to_api_json(&self) -> Value {
        serde_json::to_value(self.api_view()).unwrap_or(Value::Null)
    }

    /// The same as [`Entity::to_api_json`], borrowed: serializing it writes
    /// the data straight from the entity, without copying the tree (a batch
    /// answer of 500 entities).
    pub fn api_view(&self) -> ApiEntity<'_> {
        ApiEntity(self)
    }

    /// True when two versions carry the same user-visible content.
    pub fn same_content(&self, data: &Value, is_deleted: bool) -> bool {
        self.is_deleted == is_deleted && &self.data == data
    }
}

/// An entity as the local API shows it: `type`, `uuid`, `updated_at`,
/// `is_deleted`, `data` ([`Entity::api_view`]).
pub struct ApiEntity<'a>(&'a Entity);

impl Serialize for ApiEntity<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("type", &e.entity_type)?;
        m.serialize_entry("uuid", &e.uuid)?;
        m.serialize_entry("updated_at", &format_ts(e.updated_at))?;
        m.serialize_entry("is_deleted", &e.is_deleted)?;
        m.serialize_entry("data", &e.data)?;
        m.end()
    }
}

/// Current UTC time, truncated to microseconds.
pub fn now_utc() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Canonical text form of a timestamp: RFC 3339, microseconds, `Z`.
pub fn format_ts(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses an RFC 3339 timestamp into UTC (any offset accepted), truncated to
/// microseconds.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
}

/// The timestamp for a new local version: now, but strictly after the
/// previous version's so that `updated_at` never goes backwards for one
/// entity even if the wall clock does.
pub fn next_updated_at(previous: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = now_utc();
    match previous {
        Some(prev) if prev >= now => prev + chrono::Duration::microseconds(1),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_keeps_what_the_peer_must_learn() {
        use Operation::*;
        let check = |a, b, expected| assert_eq!(Operation::coalesce(a, b), expected, "{a:?}+{b:?}");
        check(Insert, Update, Insert);
        check(Insert, Delete, Delete);
        check(Update, Update, Update);
        check(Update, Delete, Delete);
        check(Delete, Update, Update);
        check(Delete, Insert, Update);
    }

    #[test]
    fn timestamps_round_trip_through_text() {
        let t = now_utc();
        assert_eq!(parse_ts(&format_ts(t)), Some(t));
    }

    #[test]
    fn updated_at_never_goes_backwards() {
        let future = now_utc() + chrono::Duration::hours(1);
        assert!(next_updated_at(Some(future)) > future);
    }
}
