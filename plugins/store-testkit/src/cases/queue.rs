//! The client queue: one unsent row per entity and target, coalesced in
//! place; sent rows stay until their packet is acknowledged.

use hubsync_core::entity::Operation::{self, Delete, Insert, Update};
use hubsync_core::store::{QueuedChange, StoreError, StoreTx};
use uuid::Uuid;

use crate::{Subject, add_node, id};

/// `node`'s unsent rows (`None`) or the rows of packet `p`, in queue order.
async fn queue_of(tx: &mut dyn StoreTx, node: Uuid, packet: Option<i64>) -> Vec<QueuedChange> {
    match packet {
        None => tx.unsent_changes(node, 1000).await.unwrap(),
        Some(p) => tx.changes_in_packet(node, p).await.unwrap(),
    }
}

pub async fn coalescing_keeps_the_row_and_its_place_and_applies_the_rule(s: &Subject) {
    let store = s.store.as_ref();
    let master = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();

    async fn check(tx: &mut dyn StoreTx, master: Uuid, ops: &[Operation], expected: Operation) {
        let entity = id(ops.len() as u128 * 1000 + ops[0] as u128 * 100 + ops[1] as u128);
        for op in ops {
            tx.queue_change(master, "Report", entity, *op)
                .await
                .unwrap();
        }
        let rows: Vec<_> = queue_of(tx, master, None)
            .await
            .into_iter()
            .filter(|r| r.entity_uuid == entity)
            .collect();
        assert_eq!(rows.len(), 1, "{ops:?}");
        assert_eq!(rows[0].operation, expected, "{ops:?}");
    }
    check(&mut *tx, master, &[Insert, Update], Insert).await;
    check(&mut *tx, master, &[Insert, Delete], Delete).await;
    check(&mut *tx, master, &[Update, Update], Update).await;
    check(&mut *tx, master, &[Update, Delete], Delete).await;
    check(&mut *tx, master, &[Delete, Update], Update).await;
    check(&mut *tx, master, &[Delete, Insert], Update).await;
    check(&mut *tx, master, &[Insert, Update, Delete], Delete).await;

    // The row keeps its id, hence its place before later entities, and
    // its created_at.
    tx.queue_change(master, "T", id(1), Insert).await.unwrap();
    tx.queue_change(master, "T", id(2), Insert).await.unwrap();
    let before = queue_of(&mut *tx, master, None).await;
    tx.queue_change(master, "T", id(1), Delete).await.unwrap();
    let after = queue_of(&mut *tx, master, None).await;
    let ids = |rows: &[QueuedChange]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after));
    let row = after.iter().find(|r| r.entity_uuid == id(1)).unwrap();
    let was = before.iter().find(|r| r.entity_uuid == id(1)).unwrap();
    assert_eq!(
        (row.operation, row.entity_type.as_str(), row.node_id),
        (Delete, "T", master)
    );
    assert_eq!(row.created_at, was.created_at);
    assert_eq!(row.packet_no, None);
}

pub async fn a_sent_row_and_a_new_unsent_row_coexist_until_acknowledged(s: &Subject) {
    let store = s.store.as_ref();
    let master = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();

    tx.queue_change(master, "Report", id(1), Insert)
        .await
        .unwrap();
    tx.queue_change(master, "Report", id(2), Insert)
        .await
        .unwrap();
    let unsent = queue_of(&mut *tx, master, None).await;
    let ids: Vec<i64> = unsent.iter().map(|r| r.id).collect();
    assert!(ids[0] < ids[1]);
    tx.assign_packet(master, &ids, 1).await.unwrap();
    assert!(queue_of(&mut *tx, master, None).await.is_empty());

    // Edited again while packet 1 is in flight: a new row, not the sent one.
    tx.queue_change(master, "Report", id(1), Update)
        .await
        .unwrap();
    let in_packet = queue_of(&mut *tx, master, Some(1)).await;
    assert_eq!(in_packet.len(), 2);
    assert!(
        in_packet
            .iter()
            .all(|r| r.packet_no == Some(1) && r.operation == Insert)
    );
    let fresh = queue_of(&mut *tx, master, None).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(
        (fresh[0].entity_uuid, fresh[0].operation, fresh[0].packet_no),
        (id(1), Update, None)
    );
    assert!(
        fresh[0].id > ids[1],
        "a new row goes to the end of the queue"
    );
    assert!(tx.has_queued(master, "Report", id(1)).await.unwrap());
    assert!(
        tx.has_queued(master, "Report", id(2)).await.unwrap(),
        "sent rows count"
    );
    assert!(!tx.has_queued(master, "Report", id(3)).await.unwrap());
    assert!(!tx.has_queued(master, "Other", id(1)).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.count_queued(master).await.unwrap(), 3);
    // Capped: exact below the cap (sent rows count), the cap at or above it.
    assert_eq!(store.count_queued_capped(master, 10).await.unwrap(), 3);
    assert_eq!(store.count_queued_capped(master, 3).await.unwrap(), 3);
    assert_eq!(store.count_queued_capped(master, 2).await.unwrap(), 2);
    assert_eq!(store.count_queued_capped(master, 0).await.unwrap(), 0);

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.delete_acknowledged(master, 1).await.unwrap(), 2);
    assert!(queue_of(&mut *tx, master, Some(1)).await.is_empty());
    assert_eq!(queue_of(&mut *tx, master, None).await, fresh);
    assert!(!tx.has_queued(master, "Report", id(2)).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.count_queued(master).await.unwrap(), 1);
}

pub async fn the_unsent_row_of_an_entity_is_found_and_sent_rows_are_not(s: &Subject) {
    let store = s.store.as_ref();
    let a = add_node(store, 1).await;
    let b = add_node(store, 2).await;
    let mut tx = store.begin().await.unwrap();
    tx.queue_change(a, "Report", id(1), Insert).await.unwrap();
    let sent = tx.unsent_changes(a, 10).await.unwrap();
    tx.assign_packet(a, &[sent[0].id], 1).await.unwrap();
    assert_eq!(
        tx.unsent_change_for(a, "Report", id(1)).await.unwrap(),
        None,
        "a sent row is not the unsent row"
    );
    tx.queue_change(a, "Report", id(1), Update).await.unwrap();
    tx.queue_change(b, "Report", id(1), Delete).await.unwrap();
    let found = tx
        .unsent_change_for(a, "Report", id(1))
        .await
        .unwrap()
        .expect("the new unsent row");
    assert_eq!(
        (found.node_id, found.operation, found.packet_no),
        (a, Update, None)
    );
    assert_eq!(tx.unsent_change_for(a, "Other", id(1)).await.unwrap(), None);
    assert_eq!(
        tx.unsent_change_for(a, "Report", id(2)).await.unwrap(),
        None
    );
}

pub async fn acknowledging_a_packet_deletes_it_and_every_earlier_one_only(s: &Subject) {
    let store = s.store.as_ref();
    let master = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();
    for packet in 1..=3u128 {
        tx.queue_change(master, "Report", id(packet), Insert)
            .await
            .unwrap();
        let ids: Vec<i64> = queue_of(&mut *tx, master, None)
            .await
            .iter()
            .map(|r| r.id)
            .collect();
        tx.assign_packet(master, &ids, packet as i64).await.unwrap();
    }
    tx.queue_change(master, "Report", id(9), Insert)
        .await
        .unwrap();

    assert_eq!(tx.delete_acknowledged(master, 0).await.unwrap(), 0);
    assert_eq!(tx.delete_acknowledged(master, 2).await.unwrap(), 2);
    assert_eq!(
        tx.delete_acknowledged(master, 2).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(queue_of(&mut *tx, master, Some(3)).await.len(), 1);
    assert_eq!(
        queue_of(&mut *tx, master, None).await.len(),
        1,
        "unsent rows stay"
    );
}

pub async fn queues_of_different_targets_are_separate_and_ordered(s: &Subject) {
    let store = s.store.as_ref();
    let a = add_node(store, 1).await;
    let b = add_node(store, 2).await;
    let mut tx = store.begin().await.unwrap();
    for n in [5u128, 3, 8] {
        tx.queue_change(a, "Report", id(n), Update).await.unwrap();
    }
    tx.queue_change(b, "Report", id(3), Delete).await.unwrap();

    let order: Vec<Uuid> = tx
        .unsent_changes(a, 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.entity_uuid)
        .collect();
    assert_eq!(order, [id(5), id(3)], "queue order, limited");
    let of_b = tx.unsent_changes(b, 10).await.unwrap();
    assert_eq!(of_b.len(), 1);
    assert_eq!(of_b[0].operation, Delete);
    // Packet numbers are per target.
    tx.assign_packet(b, &[of_b[0].id], 1).await.unwrap();
    assert!(tx.changes_in_packet(a, 1).await.unwrap().is_empty());
    assert_eq!(tx.delete_acknowledged(a, 1).await.unwrap(), 0);
    tx.commit().await.unwrap();
    assert_eq!(store.count_queued(a).await.unwrap(), 3);
    assert_eq!(store.count_queued(b).await.unwrap(), 1);
}

pub async fn assigning_rows_that_are_not_queued_for_the_node_is_refused(s: &Subject) {
    let store = s.store.as_ref();
    let a = add_node(store, 1).await;
    let b = add_node(store, 2).await;
    let mut tx = store.begin().await.unwrap();
    tx.queue_change(a, "Report", id(1), Insert).await.unwrap();
    let row = tx.unsent_changes(a, 10).await.unwrap()[0].id;

    assert!(matches!(
        tx.assign_packet(b, &[row], 1).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        tx.assign_packet(a, &[row, row + 1], 1).await,
        Err(StoreError::Corrupt { .. })
    ));
    tx.assign_packet(a, &[], 1).await.unwrap();
    tx.assign_packet(a, &[row, row], 1).await.unwrap();
    assert_eq!(tx.changes_in_packet(a, 1).await.unwrap().len(), 1);
}

pub async fn a_queue_row_must_target_a_known_node(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .queue_change(id(77), "Report", id(1), Insert)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
}
