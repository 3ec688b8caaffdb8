//! The batch methods (`get_entities`, `put_entities`,
//! `set_references_many`): the same results as the one-row methods, for
//! batches larger than one statement's worth of rows.

use hubsync_core::entity::Entity;
use hubsync_core::store::EntityRef;
use serde_json::json;
use uuid::Uuid;

use crate::{Subject, entity, id, ts};

/// More than one statement's worth in every backend's batching.
const MANY: u128 = 1_234;

fn report(n: u128, v: i64) -> Entity {
    let mut e = entity(
        "DailyReport",
        id(n),
        json!({"n": n.to_string(), "v": v, "text": "ü \"q\""}),
    );
    e.rev = Some(v);
    e.origin = n.is_multiple_of(2).then(|| id(7));
    e.updated_at = ts(n as i64, 7);
    e.is_deleted = n.is_multiple_of(5);
    e
}

fn employee_ref(source: u128, target: u128) -> EntityRef {
    EntityRef {
        source_type: "DailyReport".into(),
        source_uuid: id(source),
        pointer: "/lines/*/employee".into(),
        target_type: "Employee".into(),
        target_uuid: id(target),
    }
}

pub async fn batched_entity_reads_and_writes_match_the_one_row_methods(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    // Empty batches are fine.
    tx.put_entities(&[]).await.unwrap();
    assert!(tx.get_entities(&[]).await.unwrap().is_empty());
    let first: Vec<Entity> = (1..=MANY).map(|n| report(n, 1)).collect();
    tx.put_entities(&first).await.unwrap();
    // Replacing some, and a key given twice ends with its last version.
    let mut second: Vec<Entity> = (1..=MANY).step_by(3).map(|n| report(n, 2)).collect();
    second.push(report(2, 3));
    second.push(report(2, 4));
    tx.put_entities(&second).await.unwrap();
    tx.commit().await.unwrap();

    let expected = |n: u128| match n {
        2 => report(2, 4),
        n if (n - 1) % 3 == 0 => report(n, 2),
        n => report(n, 1),
    };
    for n in [1, 2, 3, 4, 500, 501, 1000, MANY] {
        assert_eq!(
            store.get_entity("DailyReport", id(n)).await.unwrap(),
            Some(expected(n)),
            "entity {n}"
        );
    }

    let mut tx = store.begin().await.unwrap();
    let mut keys: Vec<(String, Uuid)> = (1..=MANY)
        .map(|n| ("DailyReport".to_string(), id(n)))
        .collect();
    // Absent keys and a wrong type are not found; a repeated key is fine.
    keys.push(("DailyReport".into(), id(MANY + 1)));
    keys.push(("Employee".into(), id(1)));
    let mut found = tx.get_entities(&keys).await.unwrap();
    found.sort_by_key(|e| e.uuid);
    found.dedup_by_key(|e| e.uuid);
    assert_eq!(found.len(), MANY as usize);
    for e in &found {
        assert_eq!(e, &expected(e.uuid.as_u128()));
    }
    // Written in this transaction: read back by the batch read.
    tx.put_entities(&[report(MANY + 1, 9)]).await.unwrap();
    let found = tx
        .get_entities(&[("DailyReport".into(), id(MANY + 1))])
        .await
        .unwrap();
    assert_eq!(found, vec![report(MANY + 1, 9)]);
    drop(tx);
    // Not committed: nothing of it stays.
    assert_eq!(
        store.get_entity("DailyReport", id(MANY + 1)).await.unwrap(),
        None
    );
}

pub async fn batched_references_replace_each_sources_references(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    // Every source refers to employees 100_000 and 100_000 + n % 3.
    let items: Vec<((String, Uuid), Vec<EntityRef>)> = (1..=MANY)
        .map(|n| {
            (
                ("DailyReport".to_string(), id(n)),
                vec![
                    employee_ref(n, 100_000),
                    employee_ref(n, 100_000 + n % 3),
                    employee_ref(n, 100_000 + n % 3),
                ],
            )
        })
        .collect();
    tx.set_references_many(&items).await.unwrap();
    tx.set_references_many(&[]).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Employee", id(100_000)).await.unwrap().len(),
        MANY as usize
    );
    assert_eq!(
        tx.referrers("Employee", id(100_001)).await.unwrap().len(),
        (1..=MANY).filter(|n| n % 3 == 1).count()
    );
    // Replacing: source 1 now refers to 200_000 only, source 2 to nothing,
    // the others keep theirs; one-row and batch writes mix.
    tx.set_references_many(&[
        (
            ("DailyReport".into(), id(1)),
            vec![employee_ref(1, 200_000)],
        ),
        (("DailyReport".into(), id(2)), vec![]),
    ])
    .await
    .unwrap();
    tx.set_references("DailyReport", id(3), &[employee_ref(3, 200_000)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Employee", id(200_000)).await.unwrap(),
        vec![employee_ref(1, 200_000), employee_ref(3, 200_000)]
    );
    let left = tx.referrers("Employee", id(100_000)).await.unwrap();
    assert_eq!(left.len(), MANY as usize - 3);
    assert!(left.iter().all(|r| r.source_uuid.as_u128() > 3));
}
