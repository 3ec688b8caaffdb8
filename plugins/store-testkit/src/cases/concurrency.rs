//! Concurrency: several write transactions at once, on one handle and on
//! two handles of the same database (as two hosts would have). Nothing is
//! lost, revisions appear in order, and read-decide-write transactions
//! serialize.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hubsync_core::entity::Operation;
use hubsync_core::store::Store;
use serde_json::json;

use crate::{Subject, add_node, entity, id, put_all};

const WRITERS: usize = 6;
const EACH: usize = 8;

/// The two handles, alternating: writer `w` uses `handles[w % 2]`.
async fn handles(s: &Subject) -> [Arc<dyn Store>; 2] {
    [s.store.clone(), s.second_handle().await]
}

/// Writers append revisions of new entities and hold each transaction open
/// a moment after allocating its revision; a reader follows the log with a
/// cursor, as a node's exchanges do. If a revision could become visible
/// after a higher one, the reader's cursor would pass it and never see it.
pub async fn concurrent_writers_lose_nothing_and_revisions_appear_in_order(s: &Subject) {
    let handles = handles(s).await;
    let node = add_node(handles[0].as_ref(), 100).await;
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = handles[0].clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = BTreeSet::new();
            loop {
                let last_pass = done.load(Ordering::SeqCst);
                let mut tx = store.begin().await.expect("reader begin");
                let page = tx
                    .revisions_after(node, cursor, 10_000)
                    .await
                    .expect("reader revisions_after");
                drop(tx);
                for (r, _) in page {
                    assert!(r.rev > cursor, "revision {} at cursor {cursor}", r.rev);
                    seen.insert(r.rev);
                    cursor = r.rev;
                }
                if last_pass {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = handles[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..EACH {
                let uuid = id((w * 1000 + i) as u128 + 1);
                let mut tx = store.begin().await.expect("writer begin");
                let rev = tx
                    .append_revision(None, "Report", uuid, Operation::Insert, None)
                    .await
                    .expect("append_revision");
                tx.put_entity(&entity("Report", uuid, json!({"w": w, "i": i})))
                    .await
                    .expect("put_entity");
                tokio::time::sleep(Duration::from_millis(2)).await;
                tx.commit().await.expect("commit");
                revs.push(rev);
            }
            revs
        }));
    }
    let mut all = BTreeSet::new();
    for w in writers {
        let revs = w.await.expect("writer task");
        assert!(
            revs.windows(2).all(|p| p[0] < p[1]),
            "one writer's revisions increase: {revs:?}"
        );
        all.extend(revs);
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader task");

    assert_eq!(all.len(), WRITERS * EACH, "every revision number is unique");
    assert_eq!(
        seen, all,
        "a reader following the log with a cursor saw every committed revision"
    );
    let total = (WRITERS * EACH) as i64;
    assert_eq!(
        handles[1].count_revisions_after(0, node).await.unwrap(),
        total
    );
    assert_eq!(
        handles[1].dump_entities().await.unwrap().len(),
        WRITERS * EACH
    );
    handles[1].close().await;
}

/// Each transaction reads a counter entity, waits a moment, and writes it
/// back incremented — the shape of a conflict decision. Under any
/// interleaving the final count is exact.
pub async fn read_decide_write_transactions_never_lose_an_update(s: &Subject) {
    let handles = handles(s).await;
    put_all(
        handles[0].as_ref(),
        &[entity("Counter", id(1), json!({"n": 0}))],
    )
    .await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = handles[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut tx = store.begin().await.expect("begin");
                let mut e = tx
                    .get_entity("Counter", id(1))
                    .await
                    .expect("get_entity")
                    .expect("the counter exists");
                let n = e.data["n"].as_u64().expect("a count");
                tokio::time::sleep(Duration::from_millis(1)).await;
                e.data = json!({"n": n + 1});
                let rev = tx
                    .append_revision(None, "Counter", id(1), Operation::Update, None)
                    .await
                    .expect("append_revision");
                e.rev = Some(rev);
                tx.put_entity(&e).await.expect("put_entity");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let e = handles[1]
        .get_entity("Counter", id(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.data, json!({"n": WRITERS * 5}), "no increment was lost");
    handles[1].close().await;
}

/// Two exchanges of one node: each reads the node row in its transaction,
/// bumps its packet number and writes it back. They must serialize, the
/// second seeing the first's committed number.
pub async fn transactions_on_one_node_row_serialize(s: &Subject) {
    let handles = handles(s).await;
    let node = add_node(handles[0].as_ref(), 7).await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = handles[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let mut tx = store.begin().await.expect("begin");
                let mut row = tx
                    .get_node(node)
                    .await
                    .expect("get_node")
                    .expect("the node exists");
                seen.push(row.received_packet_no);
                tokio::time::sleep(Duration::from_millis(1)).await;
                row.received_packet_no += 1;
                tx.put_node(&row).await.expect("put_node");
                tx.commit().await.expect("commit");
            }
            seen
        }));
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        for n in t.await.expect("task") {
            assert!(
                seen.insert(n),
                "packet number {n} was read by two transactions"
            );
        }
    }
    let row = handles[1].get_node(node).await.unwrap().unwrap();
    assert_eq!(row.received_packet_no, (WRITERS * 5) as i64);
    handles[1].close().await;
}
