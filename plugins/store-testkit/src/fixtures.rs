//! Small builders the cases share.

use chrono::{DateTime, TimeZone, Utc};
use hubsync_core::entity::Entity;
use hubsync_core::store::{NodeRecord, NodeRole, Store};
use serde_json::Value;
use uuid::Uuid;

/// A timestamp with a non-zero microsecond part, so truncation bugs show.
pub fn ts(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + secs, micros * 1000)
        .single()
        .expect("valid timestamp")
}

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn entity(entity_type: &str, uuid: Uuid, data: Value) -> Entity {
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

/// Registers client node `n` (queue rows and targeted revisions must name a
/// node that exists).
pub async fn add_node(store: &dyn Store, n: u128) -> Uuid {
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

/// Commits `entities` in one transaction.
pub async fn put_all(store: &dyn Store, entities: &[Entity]) {
    let mut tx = store.begin().await.expect("begin");
    for e in entities {
        tx.put_entity(e).await.expect("put entity");
    }
    tx.commit().await.expect("commit");
}
