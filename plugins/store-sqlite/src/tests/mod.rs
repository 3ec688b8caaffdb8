//! What only the SQLite backend does, scenario by scenario: opening (WAL,
//! pragmas, migrations, URLs), query plans, its JSON text and its writer.
//! Each test opens its own database (a temp file, or `sqlite::memory:`
//! where durability is beside the point).
//!
//! The behaviour every backend shares — entities, queue, change log, nodes,
//! history, audit, atomicity, concurrency — is the conformance suite of
//! hubsync-store-testkit, run in `tests/conformance.rs`.

mod checkpoint;
mod entities;
mod groups;
mod open;
mod plans;
mod property;
mod references;
mod transactions;

use chrono::{DateTime, TimeZone, Utc};
use hubsync_core::entity::Entity;
use hubsync_core::store::{NodeRecord, NodeRole, Store};
use serde_json::Value;
use uuid::Uuid;

use crate::SqliteStore;

/// A store in a fresh temporary directory (removed on drop).
pub(crate) struct TempStore {
    pub(crate) store: SqliteStore,
    pub(crate) url: String,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn temp_store() -> TempStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/hub.db", dir.path().display());
    let store = SqliteStore::open(&url).await.expect("open");
    TempStore {
        store,
        url,
        _dir: dir,
    }
}

pub(crate) async fn memory_store() -> SqliteStore {
    SqliteStore::open("sqlite::memory:")
        .await
        .expect("open memory")
}

/// A timestamp with a non-zero microsecond part, so truncation bugs show.
pub(crate) fn ts(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + secs, micros * 1000)
        .single()
        .expect("valid timestamp")
}

pub(crate) fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub(crate) fn entity(entity_type: &str, uuid: Uuid, data: Value) -> Entity {
    Entity {
        entity_type: entity_type.to_string(),
        uuid,
        updated_at: ts(0, 123_456),
        is_deleted: false,
        data,
        rev: None,
        origin: None,
    }
}

/// Registers node `n` (queue rows and targeted revisions must name a node
/// that exists).
pub(crate) async fn add_node(store: &SqliteStore, n: u128) -> Uuid {
    let node = NodeRecord::new(
        id(n),
        &format!("NODE-{n}"),
        "a node",
        NodeRole::Client,
        false,
    );
    let mut tx = store.begin().await.expect("begin");
    tx.put_node(&node).await.expect("put node");
    tx.commit().await.expect("commit");
    node.id
}
