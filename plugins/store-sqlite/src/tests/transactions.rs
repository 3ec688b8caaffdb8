//! One transaction: a local write and its change registration are
//! committed together or not at all.

use std::time::Duration;

use hubsync_core::entity::Operation;
use hubsync_core::store::{Store, StoreTx};
use serde_json::json;

use super::{add_node, entity, id, memory_store, temp_store};
use crate::SqliteStore;

async fn write_entity_and_queue_it(store: &SqliteStore) -> Box<dyn StoreTx> {
    let master = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();
    tx.put_entity(&entity("Report", id(1), json!({"n": 1})))
        .await
        .unwrap();
    tx.queue_change(master, "Report", id(1), Operation::Insert)
        .await
        .unwrap();
    tx.set_meta("touched", "yes").await.unwrap();
    tx
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing_behind() {
    let t = temp_store().await;
    let tx = write_entity_and_queue_it(&t.store).await;
    drop(tx);

    assert_eq!(t.store.get_entity("Report", id(1)).await.unwrap(), None);
    assert_eq!(t.store.count_queued(id(100)).await.unwrap(), 0);
    assert_eq!(t.store.get_meta("touched").await.unwrap(), None);
    // And through the writer connection too, which the rollback went to.
    let mut tx = t.store.begin().await.unwrap();
    assert_eq!(tx.get_entity("Report", id(1)).await.unwrap(), None);
    assert!(!tx.has_queued(id(100), "Report", id(1)).await.unwrap());
}

#[tokio::test]
async fn a_committed_transaction_keeps_everything() {
    let t = temp_store().await;
    let tx = write_entity_and_queue_it(&t.store).await;
    tx.commit().await.unwrap();

    assert!(t.store.get_entity("Report", id(1)).await.unwrap().is_some());
    assert_eq!(t.store.count_queued(id(100)).await.unwrap(), 1);
    assert_eq!(
        t.store.get_meta("touched").await.unwrap().as_deref(),
        Some("yes")
    );
}

#[tokio::test]
async fn reads_see_committed_data_only_while_a_write_is_open() {
    let file = temp_store().await;
    for (kind, store) in [
        ("file", file.store.clone()),
        ("memory", memory_store().await),
    ] {
        let tx = write_entity_and_queue_it(&store).await;
        // Bounded: a reader that waited for the writer would hang here.
        let seen = tokio::time::timeout(Duration::from_secs(5), store.get_entity("Report", id(1)))
            .await
            .unwrap_or_else(|_| {
                panic!("{kind}: a read must not wait for the open write transaction")
            })
            .unwrap();
        assert_eq!(seen, None);
        tx.commit().await.unwrap();
        assert!(store.get_entity("Report", id(1)).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn write_transactions_are_serialized() {
    let store = memory_store().await;
    let first = store.begin().await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(200), store.begin()).await;
    assert!(
        second.is_err(),
        "begin() must wait while another transaction is open"
    );
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(5), store.begin()).await;
    assert!(matches!(second, Ok(Ok(_))));
}
