//! Entities: exact round trips and paging.

use hubsync_core::entity::Entity;
use hubsync_core::store::{Page, Store, StoreError};
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
async fn an_entity_round_trips_exactly() {
    let t = temp_store().await;
    let data = json!({
        "title": "Отчёт бригады № 7 — 📋",
        "zeta": 1, "alpha": 2,
        "lines": [[1, 2.5, -3], {"nested": [true, null, "x"]}, []],
        "empty": {}
    });
    let original = Entity {
        entity_type: "DailyReport".into(),
        uuid: Uuid::new_v4(),
        updated_at: ts(42, 987_654),
        is_deleted: true,
        data,
        rev: Some(17),
        origin: Some(Uuid::new_v4()),
    };
    put_all(&t.store, std::slice::from_ref(&original)).await;

    let read = t
        .store
        .get_entity("DailyReport", original.uuid)
        .await
        .unwrap();
    assert_eq!(read.as_ref(), Some(&original));
    let read = read.unwrap();
    // Key order survives too (serde_json preserve_order).
    assert_eq!(read.data.to_string(), original.data.to_string());
    assert_eq!(read.updated_at.timestamp_subsec_micros(), 987_654);

    // The transaction sees the same thing.
    let mut tx = t.store.begin().await.unwrap();
    assert_eq!(
        tx.get_entity("DailyReport", original.uuid).await.unwrap(),
        Some(original.clone())
    );
    // The same uuid under another type is another entity.
    assert_eq!(tx.get_entity("Other", original.uuid).await.unwrap(), None);
}

#[tokio::test]
async fn put_entity_replaces_the_previous_version() {
    let store = memory_store().await;
    let mut first = entity("Report", id(1), json!({"v": 1}));
    first.rev = Some(3);
    put_all(&store, &[first.clone()]).await;
    let second = Entity {
        data: json!({"v": 2}),
        updated_at: ts(1, 1),
        rev: None,
        origin: Some(id(9)),
        ..first
    };
    put_all(&store, std::slice::from_ref(&second)).await;
    assert_eq!(
        store.get_entity("Report", id(1)).await.unwrap(),
        Some(second)
    );
    assert_eq!(store.dump_entities().await.unwrap().len(), 1);
}

/// Lists a page of `Report` entities and checks which uuids it holds.
async fn check(
    store: &SqliteStore,
    after: Option<u128>,
    limit: u32,
    include_deleted: bool,
    expected: &[u128],
) {
    let page = Page {
        after: after.map(id),
        limit,
        include_deleted,
    };
    let found: Vec<Uuid> = store
        .list_entities("Report", page)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.uuid)
        .collect();
    let expected: Vec<Uuid> = expected.iter().copied().map(id).collect();
    assert_eq!(found, expected, "{page:?}");
}

#[tokio::test]
async fn listing_pages_by_uuid_with_an_exclusive_cursor() {
    let store = memory_store().await;
    let mut all: Vec<Entity> = [5u128, 1, 4, 2, 3]
        .into_iter()
        .map(|n| entity("Report", id(n), json!({"n": n as u64})))
        .collect();
    all[4].is_deleted = true; // #3
    // Uuids whose text order must match their numeric order across digits/letters.
    all.push(entity("Report", id(0xa0 << 120), json!({})));
    all.push(entity("Other", id(2), json!({})));
    put_all(&store, &all).await;

    check(&store, None, 2, false, &[1, 2]).await;
    check(&store, Some(2), 2, false, &[4, 5]).await;
    check(&store, Some(2), 2, true, &[3, 4]).await;
    check(&store, Some(5), 10, false, &[0xa0 << 120]).await;
    check(&store, Some(0xa0 << 120), 10, true, &[]).await;
    check(&store, None, 0, true, &[]).await;
    check(&store, None, 100, true, &[1, 2, 3, 4, 5, 0xa0 << 120]).await;
}

#[tokio::test]
async fn dump_orders_by_type_then_uuid_and_includes_deleted() {
    let store = memory_store().await;
    let mut deleted = entity("B", id(1), json!({}));
    deleted.is_deleted = true;
    put_all(
        &store,
        &[
            entity("B", id(2), json!({})),
            deleted,
            entity("A", id(9), json!({})),
        ],
    )
    .await;
    let keys: Vec<(String, Uuid)> = store
        .dump_entities()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.entity_type, e.uuid))
        .collect();
    assert_eq!(
        keys,
        [
            ("A".into(), id(9)),
            ("B".into(), id(1)),
            ("B".into(), id(2))
        ]
    );
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
        let mut conn = store.writer.acquire().await.unwrap();
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
