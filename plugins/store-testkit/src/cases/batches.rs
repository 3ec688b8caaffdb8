//! The batch methods (`get_entities`, `put_entities`,
//! `set_references_many`, `reserve_revisions` and `append_revisions`,
//! `write_rows`, `queued_rows` and `write_queue`): the same results as the
//! one-row methods, for batches larger than one statement's worth of rows.

use hubsync_core::entity::{Entity, Operation};
use hubsync_core::store::{EntityRef, NewRevision, StoreError};
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

fn each(entities: &[Entity]) -> Vec<&Entity> {
    entities.iter().collect()
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
    tx.put_entities(&each(&first)).await.unwrap();
    // Replacing some, and a key given twice ends with its last version.
    let mut second: Vec<Entity> = (1..=MANY).step_by(3).map(|n| report(n, 2)).collect();
    second.push(report(2, 3));
    second.push(report(2, 4));
    tx.put_entities(&each(&second)).await.unwrap();
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
    tx.put_entities(&[&report(MANY + 1, 9)]).await.unwrap();
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

pub async fn writing_rows_at_once_is_the_three_batch_writes_in_order(s: &Subject) {
    write_rows_of(s, MANY).await;
}

/// The same with a few rows (one statement per table, no chunking): a
/// backend may write a small batch another way.
pub async fn writing_few_rows_at_once_is_the_three_batch_writes_in_order(s: &Subject) {
    write_rows_of(s, 3).await;
}

/// `write_rows` of sources 1..=many + 1 with their references and
/// revisions, repeats included, then what the store holds.
async fn write_rows_of(s: &Subject, many: u128) {
    let store = s.store.as_ref();
    let node = crate::add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();
    // Nothing at all is fine.
    tx.write_rows(&[], &[], &[]).await.unwrap();
    // Sources 1..=many, each with two references; many + 1 refers to
    // 300_000 and is then given no references in the same call (the later
    // item wins, as in set_references_many).
    let mut items: Vec<((String, Uuid), Vec<EntityRef>)> = (1..=many + 1)
        .map(|n| {
            (
                ("DailyReport".to_string(), id(n)),
                vec![employee_ref(n, 300_000), employee_ref(n, 300_001 + n % 2)],
            )
        })
        .collect();
    items.push((("DailyReport".into(), id(many + 1)), vec![]));
    let mut entities: Vec<Entity> = (1..=many + 1).map(|n| report(n, 1)).collect();
    // A key given twice ends with its last version.
    entities.push(report(2, 5));
    let reserved = tx.reserve_revisions(many as usize + 2).await.unwrap();
    let mut revisions: Vec<NewRevision> = (1..=many + 1)
        .map(|n| new_rev(reserved[n as usize - 1], n, None, Operation::Insert))
        .collect();
    // Of a key given twice, the higher number stays.
    let last = reserved[many as usize + 1];
    revisions.push(new_rev(last, 2, None, Operation::Update));
    tx.write_rows(&revisions, &each(&entities), &items)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    for n in [1, 3, 500, 501, 1000, many, many + 1]
        .into_iter()
        .filter(|n| *n <= many + 1)
    {
        assert_eq!(
            store.get_entity("DailyReport", id(n)).await.unwrap(),
            Some(report(n, 1)),
            "entity {n}"
        );
    }
    assert_eq!(
        store.get_entity("DailyReport", id(2)).await.unwrap(),
        Some(report(2, 5))
    );
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Employee", id(300_000)).await.unwrap().len(),
        many as usize
    );
    assert_eq!(
        tx.referrers("Employee", id(300_001)).await.unwrap().len(),
        (1..=many).filter(|n| n % 2 == 0).count()
    );
    let seen = tx.revisions_after(node, 0, 10_000).await.unwrap();
    assert_eq!(seen.len(), many as usize + 1);
    assert!(seen.windows(2).all(|w| w[0].0.rev < w[1].0.rev));
    let of_2: Vec<_> = seen
        .iter()
        .filter(|(r, _)| r.entity_uuid == id(2))
        .map(|(r, e)| (r.rev, r.operation, e.data.clone()))
        .collect();
    assert_eq!(
        of_2,
        [(last, Operation::Update, report(2, 5).data)],
        "one log row for entity 2, the later one, with its entity's last version"
    );
}

fn new_rev(rev: i64, n: u128, target: Option<Uuid>, op: Operation) -> NewRevision {
    NewRevision {
        rev,
        target,
        entity_type: "DailyReport".into(),
        entity_uuid: id(n),
        operation: op,
        origin: Some(id(9)),
    }
}

pub async fn reserved_revisions_come_after_everything_and_batches_keep_the_latest_per_key(
    s: &Subject,
) {
    let store = s.store.as_ref();
    let node = crate::add_node(store, 100).await;
    let other = crate::add_node(store, 101).await;
    let mut tx = store.begin().await.unwrap();
    let all: Vec<Entity> = (1..=MANY).map(|n| report(n, 1)).collect();
    tx.put_entities(&each(&all)).await.unwrap();
    assert!(tx.reserve_revisions(0).await.unwrap().is_empty());
    tx.append_revisions(&[]).await.unwrap();
    let r1 = tx
        .append_revision(None, "DailyReport", id(1), Operation::Insert, None)
        .await
        .unwrap();

    // Reserved numbers: increasing and above every number handed out.
    let reserved = tx.reserve_revisions(MANY as usize + 2).await.unwrap();
    assert_eq!(reserved.len(), MANY as usize + 2);
    assert!(reserved[0] > r1);
    assert!(reserved.windows(2).all(|w| w[0] < w[1]));
    // Every entity once, the first again with a higher number (it keeps
    // that one and its row of r1 is replaced), and one row addressed to
    // the node beside the untargeted one.
    let mut batch: Vec<NewRevision> = (1..=MANY)
        .map(|n| new_rev(reserved[n as usize - 1], n, None, Operation::Insert))
        .collect();
    let last = reserved[MANY as usize];
    batch.push(new_rev(last, 1, None, Operation::Update));
    let targeted = reserved[MANY as usize + 1];
    batch.push(new_rev(targeted, 2, Some(node), Operation::Update));
    tx.append_revisions(&batch).await.unwrap();

    // Unused reserved numbers are never handed out again, by either method.
    let unused = tx.reserve_revisions(10).await.unwrap();
    assert!(unused[0] > targeted);
    let after = tx
        .append_revision(None, "DailyReport", id(3), Operation::Update, None)
        .await
        .unwrap();
    assert!(after > unused[9]);
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let seen = tx.revisions_after(node, 0, 10_000).await.unwrap();
    // MANY entities, one of them (3) moved on, plus the targeted row.
    assert_eq!(seen.len(), MANY as usize + 1);
    assert!(seen.windows(2).all(|w| w[0].0.rev < w[1].0.rev));
    let of = |n: u128, target: Option<Uuid>| {
        seen.iter()
            .filter(|(r, _)| r.entity_uuid == id(n) && r.target == target)
            .map(|(r, _)| (r.rev, r.operation, r.origin))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(1, None), [(last, Operation::Update, Some(id(9)))]);
    assert_eq!(
        of(2, Some(node)),
        [(targeted, Operation::Update, Some(id(9)))]
    );
    assert_eq!(of(2, None), [(reserved[1], Operation::Insert, Some(id(9)))]);
    assert_eq!(of(3, None), [(after, Operation::Update, None)]);
    assert_eq!(
        of(MANY, None),
        [(reserved[MANY as usize - 1], Operation::Insert, Some(id(9)))]
    );
    // Another node does not see the targeted row.
    assert_eq!(
        tx.revisions_after(other, 0, 10_000).await.unwrap().len(),
        MANY as usize
    );
    // Across transactions, reserved numbers still come after everything.
    let next = tx.reserve_revisions(1).await.unwrap();
    assert!(next[0] > after);
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let again = tx
        .append_revision(None, "DailyReport", id(4), Operation::Update, None)
        .await
        .unwrap();
    assert!(again > after);
    drop(tx);
}

pub async fn batched_queue_reads_and_writes_match_queue_change(s: &Subject) {
    let store = s.store.as_ref();
    let node = crate::add_node(store, 100).await;
    let other = crate::add_node(store, 101).await;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.queued_rows(node, &[]).await.unwrap().is_empty());
    tx.write_queue(node, &[], &[]).await.unwrap();
    // Entity 1: a sent row and an unsent one; 2: unsent; 3: another node's.
    tx.queue_change(node, "DailyReport", id(1), Operation::Insert)
        .await
        .unwrap();
    let sent = tx.unsent_changes(node, 10).await.unwrap();
    tx.assign_packet(node, &[sent[0].id], 1).await.unwrap();
    tx.queue_change(node, "DailyReport", id(1), Operation::Update)
        .await
        .unwrap();
    tx.queue_change(node, "DailyReport", id(2), Operation::Insert)
        .await
        .unwrap();
    tx.queue_change(other, "DailyReport", id(3), Operation::Insert)
        .await
        .unwrap();

    let key = |n: u128| ("DailyReport".to_string(), id(n));
    let rows = tx
        .queued_rows(node, &[key(1), key(2), key(3), key(4), key(1)])
        .await
        .unwrap();
    let seen: Vec<(Uuid, Option<i64>, Operation)> = rows
        .iter()
        .map(|r| (r.entity_uuid, r.packet_no, r.operation))
        .collect();
    assert_eq!(
        seen,
        [
            (id(1), Some(1), Operation::Insert),
            (id(1), None, Operation::Update),
            (id(2), None, Operation::Insert),
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));

    // New rows for many entities (more than one statement's worth) and a
    // new operation for 2's row.
    let inserts: Vec<(String, Uuid, Operation)> = (10..10 + MANY)
        .map(|n| ("DailyReport".to_string(), id(n), Operation::Insert))
        .collect();
    tx.write_queue(node, &inserts, &[(rows[2].id, Operation::Delete)])
        .await
        .unwrap();
    let unsent = tx.unsent_changes(node, 10_000).await.unwrap();
    assert_eq!(unsent.len(), MANY as usize + 2);
    // Queue order: the earlier rows first, then the new ones as given.
    assert_eq!(unsent[0].entity_uuid, id(1));
    assert_eq!(
        (unsent[1].entity_uuid, unsent[1].operation),
        (id(2), Operation::Delete)
    );
    let new_order: Vec<Uuid> = unsent[2..].iter().map(|r| r.entity_uuid).collect();
    let given: Vec<Uuid> = (10..10 + MANY).map(id).collect();
    assert_eq!(new_order, given);
    // The one-row reads agree.
    assert!(tx.has_queued(node, "DailyReport", id(10)).await.unwrap());
    assert!(!tx.has_queued(node, "DailyReport", id(3)).await.unwrap());

    // Updating a row that is not a queue row of the node is refused.
    let theirs = tx.queued_rows(other, &[key(3)]).await.unwrap();
    let err = tx
        .write_queue(node, &[], &[(theirs[0].id, Operation::Update)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    drop(tx);
    // Nothing of the dropped transaction stayed.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.queued_rows(node, &[key(1)]).await.unwrap().is_empty());
    drop(tx);
}

pub async fn stamps_and_raised_revisions_leave_the_data_alone(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.entity_stamps(&[]).await.unwrap().is_empty());
    tx.raise_revs(&[]).await.unwrap();
    // report(n, v) has rev Some(v); 1..=MANY at rev 5, one without a rev.
    let mut all: Vec<Entity> = (1..=MANY).map(|n| report(n, 5)).collect();
    all[0].rev = None;
    tx.put_entities(&each(&all)).await.unwrap();
    let key = |n: u128| ("DailyReport".to_string(), id(n));
    let mut keys: Vec<(String, Uuid)> = (1..=MANY).map(key).collect();
    keys.push(key(MANY + 7)); // absent
    keys.push(key(2)); // twice
    let mut stamps = tx.entity_stamps(&keys).await.unwrap();
    stamps.sort_by_key(|s| s.uuid);
    stamps.dedup_by_key(|s| s.uuid);
    assert_eq!(stamps.len(), MANY as usize);
    for st in &stamps {
        let e = all.iter().find(|e| e.uuid == st.uuid).unwrap();
        assert_eq!(
            (st.entity_type.as_str(), st.updated_at, st.rev),
            ("DailyReport", e.updated_at, e.rev)
        );
    }
    // Raised where unset or lower, never lowered; the highest of a key
    // given twice wins; absent entities are skipped.
    let mut items: Vec<(String, Uuid, i64)> = (1..=MANY).map(|n| (key(n).0, id(n), 7)).collect();
    items[2].2 = 3; // entity 3 stays at 5
    items.push(("DailyReport".into(), id(4), 9));
    items.push(("DailyReport".into(), id(MANY + 7), 9));
    tx.raise_revs(&items).await.unwrap();
    tx.commit().await.unwrap();
    for n in [1, 2, 3, 4, 600, MANY] {
        let got = store
            .get_entity("DailyReport", id(n))
            .await
            .unwrap()
            .unwrap();
        let want_rev = match n {
            3 => 5,
            4 => 9,
            _ => 7,
        };
        let mut want = all[n as usize - 1].clone();
        want.rev = Some(want_rev);
        assert_eq!(got, want, "entity {n}");
    }
    assert!(
        store
            .get_entity("DailyReport", id(MANY + 7))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn revisions_can_be_read_without_the_data_of_the_nodes_own_versions(s: &Subject) {
    let store = s.store.as_ref();
    let node = crate::add_node(store, 100).await;
    let other = crate::add_node(store, 101).await;
    let mut tx = store.begin().await.unwrap();
    // 1 and 3 written by the node, 2 by the other; 3 also addressed to it.
    for (n, origin) in [(1, node), (2, other), (3, node)] {
        let mut e = report(n, 1);
        e.origin = Some(origin);
        tx.put_entity(&e).await.unwrap();
    }
    let r1 = tx
        .append_revision(None, "DailyReport", id(1), Operation::Insert, Some(node))
        .await
        .unwrap();
    tx.append_revision(None, "DailyReport", id(2), Operation::Insert, Some(other))
        .await
        .unwrap();
    tx.append_revision(
        Some(node),
        "DailyReport",
        id(3),
        Operation::Update,
        Some(node),
    )
    .await
    .unwrap();
    let full = tx.revisions_after(node, 0, 100).await.unwrap();
    let data = |rows: &[(hubsync_core::store::Revision, Entity)]| {
        rows.iter()
            .map(|(r, e)| (r.entity_uuid, e.data.is_null(), e.origin))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        data(&full),
        [
            (id(1), false, Some(node)),
            (id(2), false, Some(other)),
            (id(3), false, Some(node))
        ]
    );
    // Everything but the data is the same.
    let skipping = tx
        .revisions_after_skipping_own(node, 0, 100, 0)
        .await
        .unwrap();
    assert_eq!(
        data(&skipping),
        [
            (id(1), true, Some(node)),
            (id(2), false, Some(other)),
            (id(3), false, Some(node))
        ]
    );
    for ((a, ea), (b, eb)) in full.iter().zip(&skipping) {
        assert_eq!(a, b);
        assert_eq!(
            (ea.updated_at, ea.is_deleted, ea.rev),
            (eb.updated_at, eb.is_deleted, eb.rev)
        );
    }
    // At or below `own_above`, the node's own versions come whole; another
    // node reads everything.
    let above = tx
        .revisions_after_skipping_own(node, 0, 100, r1)
        .await
        .unwrap();
    assert!(above.iter().all(|(_, e)| !e.data.is_null()));
    let theirs = tx
        .revisions_after_skipping_own(other, 0, 100, 0)
        .await
        .unwrap();
    assert_eq!(
        data(&theirs),
        [(id(1), false, Some(node)), (id(2), true, Some(other))]
    );
    drop(tx);
}
