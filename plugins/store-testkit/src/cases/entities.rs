//! Entities: exact round trips and paging.

use hubsync_core::entity::Entity;
use hubsync_core::store::Page;
use serde_json::json;
use uuid::Uuid;

use crate::{Subject, entity, id, put_all, ts};

pub async fn an_entity_round_trips_exactly(s: &Subject) {
    let store = s.store.as_ref();
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
    put_all(store, std::slice::from_ref(&original)).await;

    // Equality of JSON objects ignores key order (a backend may not keep
    // it, e.g. JSONB); everything else is exact, timestamps to the µs.
    let read = store
        .get_entity("DailyReport", original.uuid)
        .await
        .unwrap();
    assert_eq!(read.as_ref(), Some(&original));
    assert_eq!(read.unwrap().updated_at.timestamp_subsec_micros(), 987_654);

    // The transaction sees the same thing.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.get_entity("DailyReport", original.uuid).await.unwrap(),
        Some(original.clone())
    );
    // The same uuid under another type is another entity.
    assert_eq!(tx.get_entity("Other", original.uuid).await.unwrap(), None);
}

pub async fn json_numbers_and_text_round_trip(s: &Subject) {
    let store = s.store.as_ref();
    let data = json!({
        "integers": [0, -1, 42, i64::MIN, i64::MAX, u64::MAX],
        "floats": [0.1, 2.5, -3.75, 100.0, 1e300, 1e-7, 1.7976931348623157e308, 5e-324],
        "text": ["", " leading and trailing ", "quote \" backslash \\ tab \t newline \n", "\u{1F600} \u{00e9} \u{4e2d}"],
        "deep": {"a": {"b": {"c": {"d": [[[]]]}}}},
        "bools": [true, false, null]
    });
    let e = entity("Report", id(1), data);
    put_all(store, std::slice::from_ref(&e)).await;
    let read = store.get_entity("Report", id(1)).await.unwrap().unwrap();
    assert_eq!(read.data, e.data, "read back: {}", read.data);
}

/// U+0000 is valid JSON. A backend either keeps it exactly or refuses the
/// write with an error — it never silently alters the document.
pub async fn a_nul_character_is_stored_exactly_or_refused(s: &Subject) {
    let store = s.store.as_ref();
    let e = entity(
        "Report",
        id(1),
        json!({"note": "a\u{0}b", "lines": [{"t": "\u{0}"}]}),
    );
    let mut tx = store.begin().await.unwrap();
    match tx.put_entity(&e).await {
        Ok(()) => {
            tx.commit().await.unwrap();
            assert_eq!(store.get_entity("Report", id(1)).await.unwrap(), Some(e));
        }
        Err(err) => {
            let text = err.to_string();
            assert!(
                text.contains("U+0000"),
                "the error must name the character: {text}"
            );
            drop(tx);
            assert_eq!(store.get_entity("Report", id(1)).await.unwrap(), None);
        }
    }
    // Either way the store goes on working.
    put_all(store, &[entity("Report", id(2), json!({"ok": true}))]).await;
    assert!(store.get_entity("Report", id(2)).await.unwrap().is_some());
}

pub async fn put_entity_replaces_the_previous_version(s: &Subject) {
    let store = s.store.as_ref();
    let mut first = entity("Report", id(1), json!({"v": 1}));
    first.rev = Some(3);
    put_all(store, &[first.clone()]).await;
    let second = Entity {
        data: json!({"v": 2}),
        updated_at: ts(1, 1),
        rev: None,
        origin: Some(id(9)),
        ..first
    };
    put_all(store, std::slice::from_ref(&second)).await;
    assert_eq!(
        store.get_entity("Report", id(1)).await.unwrap(),
        Some(second)
    );
    assert_eq!(store.dump_entities().await.unwrap().len(), 1);
}

pub async fn listing_pages_by_uuid_with_an_exclusive_cursor(s: &Subject) {
    let store = s.store.as_ref();
    let mut all: Vec<Entity> = [5u128, 1, 4, 2, 3]
        .into_iter()
        .map(|n| entity("Report", id(n), json!({"n": n as u64})))
        .collect();
    all[4].is_deleted = true; // #3
    // Uuids whose text order must match their numeric order across digits/letters.
    all.push(entity("Report", id(0xa0 << 120), json!({})));
    all.push(entity("Other", id(2), json!({})));
    put_all(store, &all).await;

    let check =
        async |after: Option<u128>, limit: u32, include_deleted: bool, expected: &[u128]| {
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
        };
    check(None, 2, false, &[1, 2]).await;
    check(Some(2), 2, false, &[4, 5]).await;
    check(Some(2), 2, true, &[3, 4]).await;
    check(Some(5), 10, false, &[0xa0 << 120]).await;
    check(Some(0xa0 << 120), 10, true, &[]).await;
    check(None, 0, true, &[]).await;
    check(None, 100, true, &[1, 2, 3, 4, 5, 0xa0 << 120]).await;
}

pub async fn dump_orders_by_type_then_uuid_and_includes_deleted(s: &Subject) {
    let store = s.store.as_ref();
    let mut deleted = entity("B", id(1), json!({}));
    deleted.is_deleted = true;
    put_all(
        store,
        &[
            entity("B", id(2), json!({})),
            deleted,
            entity("A", id(9), json!({})),
            // Bytewise type order: uppercase before lowercase.
            entity("a", id(1), json!({})),
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
            ("B".into(), id(2)),
            ("a".into(), id(1)),
        ]
    );
}

pub async fn past_versions_are_kept_by_revision_once(s: &Subject) {
    let store = s.store.as_ref();
    let mut v3 = entity("Report", id(1), json!({"v": 3, "lines": [{"h": 1.5}]}));
    v3.rev = Some(3);
    v3.origin = Some(id(7));
    let mut v5 = v3.clone();
    v5.rev = Some(5);
    v5.data = json!({"v": 5});
    v5.is_deleted = true;
    let mut tx = store.begin().await.unwrap();
    tx.put_version(&v3).await.unwrap();
    tx.put_version(&v5).await.unwrap();
    // Keeping revision 3 again changes nothing.
    let mut again = v3.clone();
    again.data = json!({"v": "changed"});
    tx.put_version(&again).await.unwrap();
    assert_eq!(
        tx.get_version("Report", id(1), 3).await.unwrap(),
        Some(v3.clone())
    );
    assert_eq!(tx.get_version("Report", id(1), 5).await.unwrap(), Some(v5));
    assert_eq!(tx.get_version("Report", id(1), 4).await.unwrap(), None);
    assert_eq!(tx.get_version("Other", id(1), 3).await.unwrap(), None);
    // A version without a revision is refused, not stored.
    let mut norev = v3.clone();
    norev.rev = None;
    assert!(tx.put_version(&norev).await.is_err());
    drop(tx);
    // Versions are not entities.
    assert!(store.get_entity("Report", id(1)).await.unwrap().is_none());
}
