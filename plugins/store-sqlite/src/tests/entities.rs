//! Entities, what only SQLite does: the JSON text keeps key order, and a
//! stored value that does not decode is reported as corrupt. The behaviour
//! every backend shares is in hubsync-store-testkit (tests/conformance.rs).

use hubsync_core::entity::Entity;
use hubsync_core::store::{Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use super::{entity, id, memory_store, temp_store, ts};
use crate::SqliteStore;

async fn put_all(store: &SqliteStore, entities: &[Entity]) {
    let mut tx = store.begin().await.unwrap();
    for e in entities {
        tx.put_entity(e).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_json_text_keeps_its_key_order() {
    let t = temp_store().await;
    let original = Entity {
        entity_type: "DailyReport".into(),
        uuid: Uuid::new_v4(),
        updated_at: ts(42, 987_654),
        is_deleted: false,
        data: json!({"zeta": 1, "alpha": 2, "mid": {"z": [], "a": {}}}),
        rev: None,
        origin: None,
    };
    put_all(&t.store, std::slice::from_ref(&original)).await;
    let read = t
        .store
        .get_entity("DailyReport", original.uuid)
        .await
        .unwrap()
        .unwrap();
    // serde_json preserve_order, stored as text.
    assert_eq!(read.data.to_string(), original.data.to_string());
}

#[tokio::test]
async fn a_stored_value_that_does_not_decode_is_corrupt_not_a_panic() {
    let store = memory_store().await;
    put_all(&store, &[entity("Report", id(1), json!({}))]).await;
    for (column, bad) in [
        ("updated_at", "yesterday"),
        ("data", "{not json"),
        ("origin_node_id", "not-a-uuid"),
    ] {
        let sql = format!("UPDATE entities SET {column} = ? WHERE uuid = ?");
        let mut conn = store.writer.pool.acquire().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bad)
            .bind(id(1).to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        match store.get_entity("Report", id(1)).await {
            Err(StoreError::Corrupt { what }) => assert!(what.contains(column), "{what}"),
            other => panic!("{column} = {bad:?}: expected Corrupt, got {other:?}"),
        }
        put_all(&store, &[entity("Report", id(1), json!({}))]).await;
    }
}
