//! Group commit (`writer.rs`): transactions that queue for the writer are
//! committed together, none returns before the group's COMMIT, a member
//! rolled back takes only its own work with it, and a failed COMMIT fails
//! every member.
//!
//! Each test lines the transactions up by hand: the first holds the writer
//! while the others reach `begin()` (bounded waits on the count of waiting
//! transactions), so what joins which group is certain.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{TempStore, temp_store};
use crate::SqliteStore;
use crate::writer::{Member, Writer};

/// Every wait in these tests: long enough for a loaded CI machine, short
/// enough that a hang fails the test instead of the job.
const BOUND: Duration = Duration::from_secs(20);

async fn with_table(store: &SqliteStore) {
    let mut m = store.writer.begin().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE t (n INTEGER PRIMARY KEY,
             parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .execute(&mut *m)
    .await
    .unwrap();
    m.commit().await.unwrap();
}

async fn insert(m: &mut Member, n: i64) {
    sqlx::query("INSERT INTO t (n) VALUES (?)")
        .bind(n)
        .execute(&mut **m)
        .await
        .unwrap();
}

/// A store with the test tables, and a transaction holding the writer that
/// has inserted row 1.
async fn first_with_row() -> (TempStore, Member) {
    let t = temp_store().await;
    with_table(&t.store).await;
    let mut first = t.store.writer.begin().await.unwrap();
    insert(&mut first, 1).await;
    (t, first)
}

/// The rows committed, as a reader sees them.
async fn committed(store: &SqliteStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM t ORDER BY n")
        .fetch_all(&store.reader)
        .await
        .unwrap()
}

/// Waits (bounded) until `n` transactions wait in `begin()`.
async fn until_waiting(writer: &Writer, n: usize) {
    tokio::time::timeout(BOUND, async {
        while writer.waiting.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} transactions never reached begin()"));
}

/// A transaction that, once it has the writer, inserts `n` and then
/// commits, or drops itself without committing when `commit` is false.
fn queued(store: &SqliteStore, n: i64, commit: bool) -> JoinHandle<Result<(), String>> {
    let writer = store.writer.clone();
    tokio::spawn(async move {
        let mut m = writer.begin().await.map_err(|e| e.to_string())?;
        insert(&mut m, n).await;
        if commit {
            m.commit().await.map_err(|e| e.to_string())
        } else {
            drop(m);
            Ok(())
        }
    })
}

/// A transaction that, once it has the writer, inserts `n` and holds the
/// writer until the returned sender fires (or is dropped), then commits.
fn held_open(writer: &Writer, n: i64) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let writer = writer.clone();
    let task = tokio::spawn(async move {
        let mut m = writer.begin().await.unwrap();
        insert(&mut m, n).await;
        let _ = wait.await;
        m.commit().await.unwrap();
    });
    (go, task)
}

/// Waits (bounded) until a reader sees exactly `rows` committed.
async fn until_committed(store: &SqliteStore, rows: &[i64]) {
    tokio::time::timeout(BOUND, async {
        while committed(store).await != rows {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("rows {rows:?} never committed"));
}

/// A transaction of its own: inserts `n`, commits.
async fn write_one(writer: &Writer, n: i64) {
    let mut m = writer.begin().await.unwrap();
    insert(&mut m, n).await;
    m.commit().await.unwrap();
}

async fn outcome(task: JoinHandle<Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(BOUND, task)
        .await
        .expect("a transaction never finished")
        .expect("a transaction's task panicked")
}

#[tokio::test]
async fn queued_transactions_are_committed_together_and_none_returns_before() {
    let (t, first) = first_with_row().await;
    // Nothing of the first is committed yet.
    let before = t.store.writer.stats();
    let others: Vec<_> = (2..=4).map(|n| queued(&t.store, n, true)).collect();
    until_waiting(&t.store.writer, 3).await;
    let first = tokio::spawn(first.commit());
    // The first cannot return before the others' work is committed with
    // it: they all wait behind it, so its COMMIT comes after theirs.
    for task in others {
        assert_eq!(outcome(task).await, Ok(()));
    }
    tokio::time::timeout(BOUND, first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(committed(&t.store).await, vec![1, 2, 3, 4]);
    let after = t.store.writer.stats();
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.commits - before.commits
        ),
        (4, 1),
        "four transactions that queued together are one COMMIT"
    );
}

#[tokio::test]
async fn a_lone_transaction_commits_at_once() {
    let t = temp_store().await;
    with_table(&t.store).await;
    write_one(&t.store.writer, 1).await;
    // Committed on return, as a reader sees it.
    assert_eq!(committed(&t.store).await, vec![1]);
}

#[tokio::test]
async fn a_member_rolled_back_takes_only_its_own_work() {
    let (t, first) = first_with_row().await;
    let dropped = queued(&t.store, 2, false);
    until_waiting(&t.store.writer, 1).await;
    let kept = queued(&t.store, 3, true);
    until_waiting(&t.store.writer, 2).await;
    let first = tokio::spawn(first.commit());
    assert_eq!(outcome(dropped).await, Ok(()));
    assert_eq!(outcome(kept).await, Ok(()));
    tokio::time::timeout(BOUND, first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(committed(&t.store).await, vec![1, 3]);
}

#[tokio::test]
async fn the_first_member_dropped_rolls_back_and_frees_the_writer() {
    let (t, first) = first_with_row().await;
    let next = queued(&t.store, 2, true);
    until_waiting(&t.store.writer, 1).await;
    drop(first);
    assert_eq!(outcome(next).await, Ok(()));
    assert_eq!(committed(&t.store).await, vec![2]);
}

#[tokio::test]
async fn a_failed_commit_fails_every_member_and_keeps_nothing() {
    let (t, first) = first_with_row().await;
    // A deferred foreign key: the insert and the savepoint's RELEASE pass,
    // the group's COMMIT fails.
    let writer = t.store.writer.clone();
    let bad = tokio::spawn(async move {
        let mut m = writer.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO t (n, parent) VALUES (2, 99)")
            .execute(&mut *m)
            .await
            .map_err(|e| e.to_string())?;
        m.commit().await.map_err(|e| e.to_string())
    });
    until_waiting(&t.store.writer, 1).await;
    let first = tokio::spawn(first.commit());
    let bad = outcome(bad).await;
    let first = tokio::time::timeout(BOUND, first)
        .await
        .unwrap()
        .unwrap()
        .map_err(|e| e.to_string());
    for (who, result) in [("the first", &first), ("the second", &bad)] {
        let err = result
            .as_ref()
            .expect_err(&format!("{who} member's commit must fail"));
        assert!(err.contains("FOREIGN KEY"), "{who}: {err}");
    }
    assert_eq!(committed(&t.store).await, Vec::<i64>::new());
    // The writer is free and works.
    write_one(&t.store.writer, 5).await;
    assert_eq!(committed(&t.store).await, vec![5]);
}

#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_stop_the_group() {
    let (t, first) = first_with_row().await;
    // Holds the writer until told, so that the first member's commit has
    // to wait behind it.
    let (go, second) = held_open(&t.store.writer, 2);
    until_waiting(&t.store.writer, 1).await;
    // The first member commits, defers behind the second, and its caller
    // gives up waiting: the group must still be committed.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), first.commit()).await;
    assert!(gave_up.is_err(), "the commit had to wait for the second");
    let _ = go.send(());
    tokio::time::timeout(BOUND, second).await.unwrap().unwrap();
    until_committed(&t.store, &[1, 2]).await;
}

#[tokio::test]
async fn a_begin_that_gives_up_is_not_counted_as_waiting() {
    let t = temp_store().await;
    let held = t.store.writer.begin().await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(50), t.store.writer.begin()).await;
    assert!(gave_up.is_err());
    assert_eq!(t.store.writer.waiting.load(Ordering::SeqCst), 0);
    held.commit().await.unwrap();
}

#[tokio::test]
async fn a_commit_waiting_behind_a_hung_member_gives_up_and_says_it_may_land() {
    let t = temp_store().await;
    with_table(&t.store).await;
    let writer = Writer::new(
        t.store.writer.pool.clone(),
        Duration::from_millis(300),
        None,
    );
    let mut first = writer.begin().await.unwrap();
    insert(&mut first, 1).await;
    let (go, second) = held_open(&writer, 2);
    until_waiting(&writer, 1).await;
    let err = tokio::time::timeout(BOUND, first.commit())
        .await
        .expect("the commit's own wait is bounded")
        .expect_err("the group cannot commit while the second hangs");
    assert!(err.to_string().contains("may still be committed"), "{err}");
    // When the second ends, the group (the first's row too) is committed.
    let _ = go.send(());
    tokio::time::timeout(BOUND, second).await.unwrap().unwrap();
    until_committed(&t.store, &[1, 2]).await;
}

#[tokio::test]
async fn a_begin_cancelled_half_way_leaves_the_writer_usable() {
    // A request whose client goes away is dropped wherever it is, also
    // between sending `BEGIN IMMEDIATE` to the connection's worker thread
    // and its answer: the statement still runs. The writer connection
    // (the pool's only one) must not go back to the pool inside that
    // transaction, or every later write fails with "cannot start a
    // transaction within a transaction".
    let t = temp_store().await;
    with_table(&t.store).await;
    let mut n = 0;
    for polls in 1..=20 {
        for _ in 0..20 {
            let mut begin = Box::pin(t.store.writer.begin());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for _ in 0..polls {
                if begin.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            drop(begin);
            n += 1;
            tokio::time::timeout(BOUND, write_one(&t.store.writer, n))
                .await
                .expect("a write after a cancelled begin finishes");
        }
    }
    assert_eq!(committed(&t.store).await, (1..=n).collect::<Vec<_>>());
}
