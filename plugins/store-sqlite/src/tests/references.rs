//! The raw-handle reference writes (raw.rs): keys looked up once per call,
//! a new key told from an existing one by the INSERT's change count.

use hubsync_core::store::{EntityRef, Store};
use sqlx::Row;

use super::{id, memory_store};

fn reference(source: u128, target: u128) -> EntityRef {
    EntityRef {
        source_type: "Report".into(),
        source_uuid: id(source),
        pointer: "/employee".into(),
        target_type: "Employee".into(),
        target_uuid: id(target),
    }
}

/// A key that exists, looked up right after a statement that added a row
/// (the change count it must not mistake for its own), resolves to its own
/// id; and every key is stored once.
#[tokio::test]
async fn an_existing_key_after_a_new_one_is_its_own() {
    let s = memory_store().await;
    let mut tx = s.begin().await.unwrap();
    tx.set_references("Report", id(1), &[reference(1, 100)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Source 2 is new (its INSERT adds a row), then target 100 exists.
    let mut tx = s.begin().await.unwrap();
    tx.set_references_many(&[
        (("Report".into(), id(2)), vec![reference(2, 100)]),
        (
            ("Report".into(), id(3)),
            vec![reference(3, 101), reference(3, 100)],
        ),
        // Source 1 exists: its old rows go.
        (("Report".into(), id(1)), vec![reference(1, 101)]),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut tx = s.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Employee", id(100)).await.unwrap(),
        vec![reference(2, 100), reference(3, 100)]
    );
    assert_eq!(
        tx.referrers("Employee", id(101)).await.unwrap(),
        vec![reference(1, 101), reference(3, 101)]
    );
    drop(tx);
    let keys = sqlx::query("SELECT COUNT(*) AS n, COUNT(DISTINCT uuid) AS d FROM entity_keys")
        .fetch_one(&s.writer.pool)
        .await
        .unwrap();
    assert_eq!(keys.get::<i64, _>("n"), 5);
    assert_eq!(keys.get::<i64, _>("d"), 5);
}
