//! One transaction: a local write and its change registration, or a whole
//! exchange, are committed together or not at all.

use std::time::Duration;

use hubsync_core::entity::Operation;
use hubsync_core::store::{NodeRecord, NodeRole, Store, StoreTx};
use serde_json::json;

use crate::{Subject, add_node, entity, id};

/// An open transaction that wrote an entity, queued it, appended a
/// revision and set a meta key.
async fn write_everything(store: &dyn Store) -> Box<dyn StoreTx> {
    let master = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();
    tx.put_entity(&entity("Report", id(1), json!({"n": 1})))
        .await
        .unwrap();
    tx.queue_change(master, "Report", id(1), Operation::Insert)
        .await
        .unwrap();
    tx.append_revision(None, "Report", id(1), Operation::Insert, None)
        .await
        .unwrap();
    tx.set_meta("touched", "yes").await.unwrap();
    tx
}

/// Nothing of [`write_everything`] is visible, through reads and through a
/// new transaction.
async fn nothing_was_written(store: &dyn Store) {
    assert_eq!(store.get_entity("Report", id(1)).await.unwrap(), None);
    assert_eq!(store.count_queued(id(100)).await.unwrap(), 0);
    assert_eq!(store.count_revisions_after(0, id(100)).await.unwrap(), 0);
    assert_eq!(store.get_meta("touched").await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.get_entity("Report", id(1)).await.unwrap(), None);
    assert!(!tx.has_queued(id(100), "Report", id(1)).await.unwrap());
    assert!(tx.revisions_after(id(100), 0, 10).await.unwrap().is_empty());
}

pub async fn a_dropped_transaction_leaves_nothing_behind(s: &Subject) {
    let store = s.store.as_ref();
    let tx = write_everything(store).await;
    drop(tx);
    nothing_was_written(store).await;
}

pub async fn a_committed_transaction_keeps_everything(s: &Subject) {
    let store = s.store.as_ref();
    let tx = write_everything(store).await;
    tx.commit().await.unwrap();

    assert!(store.get_entity("Report", id(1)).await.unwrap().is_some());
    assert_eq!(store.count_queued(id(100)).await.unwrap(), 1);
    assert_eq!(store.count_revisions_after(0, id(100)).await.unwrap(), 1);
    assert_eq!(
        store.get_meta("touched").await.unwrap().as_deref(),
        Some("yes")
    );
}

/// A statement fails half-way (a unique constraint); the caller gives up
/// and drops the transaction: nothing of it remains, and the store works.
pub async fn a_failure_in_the_middle_then_drop_leaves_nothing_half_written(s: &Subject) {
    let store = s.store.as_ref();
    let taken = NodeRecord::new(id(5), "TAKEN", "first", NodeRole::Client, false);
    let mut tx = store.begin().await.unwrap();
    tx.put_node(&taken).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = write_everything(store).await;
    let impostor = NodeRecord::new(id(6), "TAKEN", "second", NodeRole::Client, false);
    assert!(
        tx.put_node(&impostor).await.is_err(),
        "a duplicate code must fail"
    );
    drop(tx);
    nothing_was_written(store).await;
    assert_eq!(store.get_node(id(6)).await.unwrap(), None);

    // The connection the failed transaction used is fine afterwards.
    for n in 0..3u128 {
        let mut tx = store.begin().await.unwrap();
        tx.put_entity(&entity("Report", id(10 + n), json!({})))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(store.dump_entities().await.unwrap().len(), 3);
}

pub async fn reads_see_committed_data_only_while_a_write_is_open(s: &Subject) {
    let store = s.store.as_ref();
    let tx = write_everything(store).await;
    // Bounded: a reader that waited for the writer would hang here.
    let seen = tokio::time::timeout(Duration::from_secs(10), store.get_entity("Report", id(1)))
        .await
        .expect("a read must not wait for an open write transaction")
        .unwrap();
    assert_eq!(seen, None);
    let queued = tokio::time::timeout(Duration::from_secs(10), store.count_queued(id(100)))
        .await
        .expect("a read must not wait for an open write transaction")
        .unwrap();
    assert_eq!(queued, 0);
    tx.commit().await.unwrap();
    assert!(store.get_entity("Report", id(1)).await.unwrap().is_some());
}

pub async fn a_second_handle_sees_what_the_first_committed(s: &Subject) {
    let other = s.second_handle().await;
    let tx = write_everything(s.store.as_ref()).await;
    tx.commit().await.unwrap();
    assert!(other.get_entity("Report", id(1)).await.unwrap().is_some());
    let mut tx = other.begin().await.unwrap();
    assert_eq!(
        tx.get_meta("touched").await.unwrap().as_deref(),
        Some("yes")
    );
    tx.set_meta("touched", "again").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.store.get_meta("touched").await.unwrap().as_deref(),
        Some("again")
    );
    other.close().await;
}
