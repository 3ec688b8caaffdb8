//! Referential integrity support: the references index and held changes.

use hubsync_core::store::{EntityRef, HeldChange};
use serde_json::json;

use crate::{Subject, id, ts};

fn reference(source: u128, pointer: &str, target: u128) -> EntityRef {
    EntityRef {
        source_type: "DailyReport".into(),
        source_uuid: id(source),
        pointer: pointer.into(),
        target_type: "Employee".into(),
        target_uuid: id(target),
    }
}

pub async fn references_are_replaced_per_source_and_found_by_target(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    tx.set_references(
        "DailyReport",
        id(1),
        &[
            reference(1, "/lines/*/employee", 10),
            reference(1, "/lines/*/employee", 11),
            // The same reference twice (two lines, one employee) is one row.
            reference(1, "/lines/*/employee", 11),
        ],
    )
    .await
    .unwrap();
    tx.set_references(
        "DailyReport",
        id(2),
        &[reference(2, "/lines/*/employee", 11)],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Employee", id(11)).await.unwrap(),
        vec![
            reference(1, "/lines/*/employee", 11),
            reference(2, "/lines/*/employee", 11)
        ]
    );
    // The type is part of the key.
    assert!(tx.referrers("Brigade", id(11)).await.unwrap().is_empty());
    // Replacing drops what is no longer referenced; empty clears.
    tx.set_references(
        "DailyReport",
        id(1),
        &[reference(1, "/lines/*/employee", 12)],
    )
    .await
    .unwrap();
    tx.set_references("DailyReport", id(2), &[]).await.unwrap();
    assert!(tx.referrers("Employee", id(11)).await.unwrap().is_empty());
    assert!(tx.referrers("Employee", id(10)).await.unwrap().is_empty());
    assert_eq!(tx.referrers("Employee", id(12)).await.unwrap().len(), 1);
    // Not committed: nothing of it stays.
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.referrers("Employee", id(11)).await.unwrap().len(), 2);
}

fn held(source: u128, entity: u128, waiting_for: u128, secs: i64, v: i64) -> HeldChange {
    HeldChange {
        id: 0,
        source_node: id(source),
        entity_type: "DailyReport".into(),
        uuid: id(entity),
        change: json!({"type": "DailyReport", "v": v, "text": "ü"}),
        waiting_type: "Brigade".into(),
        waiting_for: id(waiting_for),
        packet_no: v,
        held_at: ts(secs, 5),
    }
}

pub async fn held_changes_are_kept_replaced_found_and_released(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    tx.hold_change(&held(1, 100, 500, 10, 1)).await.unwrap();
    tx.hold_change(&held(1, 101, 500, 11, 2)).await.unwrap();
    tx.hold_change(&held(2, 100, 501, 12, 3)).await.unwrap();
    // A newer version of (node 1, entity 100) replaces the first.
    tx.hold_change(&held(1, 100, 502, 13, 4)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_held().await.unwrap(), 3);

    let mut tx = store.begin().await.unwrap();
    let waiting = tx.held_waiting_for(id(500)).await.unwrap();
    assert_eq!(waiting.len(), 1);
    let w = &waiting[0];
    assert!(w.id > 0, "the store assigns an id");
    let mut expected = held(1, 101, 500, 11, 2);
    expected.id = w.id;
    assert_eq!(w, &expected);
    let replaced = tx.held_waiting_for(id(502)).await.unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].change["v"], 4);

    // Oldest first, bounded.
    let old = tx.held_before(ts(13, 0), 10).await.unwrap();
    let order: Vec<i64> = old.iter().map(|h| h.packet_no).collect();
    assert_eq!(order, vec![2, 3]);
    assert_eq!(tx.held_before(ts(100, 0), 1).await.unwrap().len(), 1);

    tx.release_held(w.id).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_held().await.unwrap(), 2);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.held_waiting_for(id(500)).await.unwrap().is_empty());
}
