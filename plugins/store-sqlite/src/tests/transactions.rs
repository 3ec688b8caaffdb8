//! Transactions, what only SQLite does: one writer connection, so a second
//! `begin()` waits; and a `sqlite::memory:` store behaves like a file (reads
//! never wait for the writer). Atomicity and concurrency, shared by every
//! backend, are in hubsync-store-testkit (tests/conformance.rs).

use std::time::Duration;

use hubsync_core::entity::Operation;
use hubsync_core::store::{Store, StoreTx};
use serde_json::json;

use super::{add_node, entity, id, memory_store};
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
    tx
}

#[tokio::test]
async fn a_memory_store_reads_committed_data_only_while_a_write_is_open() {
    let store = memory_store().await;
    let tx = write_entity_and_queue_it(&store).await;
    // Bounded: a reader that waited for the writer would hang here.
    let seen = tokio::time::timeout(Duration::from_secs(5), store.get_entity("Report", id(1)))
        .await
        .expect("a read must not wait for the open write transaction")
        .unwrap();
    assert_eq!(seen, None);
    tx.commit().await.unwrap();
    assert!(store.get_entity("Report", id(1)).await.unwrap().is_some());
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
