//! WAL checkpoints on a connection of their own, off the writer's path.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a
//! checkpoint copies them back into the database file and syncs it. SQLite
//! does that by default inside the COMMIT that takes the WAL past 1,000
//! pages, on the writer connection, with the write lock held: on the
//! benchmark VM one commit in three of a push took 10–13 ms instead of
//! 2.5–3.5 ms, and every transaction queued behind it waited too.
//!
//! Here a task of its own runs `PRAGMA wal_checkpoint(PASSIVE)` a moment
//! after writes were committed ([`Checkpointer::kick`]), at most once per
//! [`CHECKPOINT_EVERY`], on a connection that is not the writer, so the copy
//! and its fsync overlap the next transactions instead of delaying them.
//! A PASSIVE checkpoint takes no lock a writer or reader waits for; it copies
//! what no open read snapshot still needs, and the frames it leaves are
//! copied by a later one.
//!
//! The writer keeps SQLite's own checkpoint as a backstop, at
//! [`WRITER_BACKSTOP_PAGES`]: if this task falls behind (or its connection
//! failed), the WAL is still bounded, as it was before.
//!
//! The task ends when the store (every [`Checkpointer`] handle) is dropped,
//! after at most one more checkpoint.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// At most one background checkpoint per this interval. A push moves 1–2 MB
/// of pages per commit, so this keeps the WAL near SQLite's default of
/// 1,000 pages under load.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// `wal_autocheckpoint` on the writer connection: 16,384 pages (64 MiB with
/// 4 KiB pages). Reached only when the background checkpoints fall behind.
pub(crate) const WRITER_BACKSTOP_PAGES: u32 = 16_384;

/// Asks the checkpoint task for a checkpoint; cheap, never waits.
#[derive(Clone, Debug)]
pub(crate) struct Checkpointer {
    kick: mpsc::Sender<()>,
    /// The task's connection; `None` once closed.
    conn: Arc<Mutex<Option<SqliteConnection>>>,
}

impl Checkpointer {
    /// Starts the task on `conn` (a read-write connection to the store's
    /// file, used for nothing else).
    pub(crate) fn start(conn: SqliteConnection, url: &str, every: Duration) -> Checkpointer {
        // One pending request is enough: a checkpoint copies everything
        // committed before it starts.
        let (kick, requests) = mpsc::channel(1);
        let conn = Arc::new(Mutex::new(Some(conn)));
        tokio::spawn(run(conn.clone(), requests, url.to_string(), every));
        Checkpointer { kick, conn }
    }

    /// Writes were committed: checkpoint them soon.
    pub(crate) fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    /// Closes the connection (after the checkpoint in progress, if any);
    /// no checkpoint runs after this.
    pub(crate) async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

async fn run(
    conn: Arc<Mutex<Option<SqliteConnection>>>,
    mut requests: mpsc::Receiver<()>,
    url: String,
    every: Duration,
) {
    let mut last: Option<Instant> = None;
    // `None` once every handle is dropped: the store is gone.
    while requests.recv().await.is_some() {
        // Let the writes of the next moments join this checkpoint.
        if let Some(at) = last {
            tokio::time::sleep_until(at + every).await;
        }
        // Requests that arrived while waiting are served by this one.
        while requests.try_recv().is_ok() {}
        let mut guard = conn.lock().await;
        let Some(conn) = guard.as_mut() else {
            return; // closed with the store
        };
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(row) => {
                // (busy, pages in the WAL, pages copied); -1 when the file
                // is not in WAL mode.
                let log: i64 = row.try_get(1).unwrap_or(-1);
                let copied: i64 = row.try_get(2).unwrap_or(-1);
                tracing::trace!(url, log, copied, "WAL checkpoint");
            }
            Err(e) => {
                // The writer's own checkpoint (the backstop) still bounds
                // the WAL; go on trying.
                tracing::warn!(url, error = %e, "background WAL checkpoint failed; the writer's own checkpoints keep the WAL bounded");
            }
        }
        drop(guard);
        last = Some(Instant::now());
    }
    if let Some(conn) = conn.lock().await.take() {
        let _ = conn.close().await;
    }
}
