//! The writer connection, and group commit.
//!
//! Every write transaction ([`Member`]) runs on the store's one writer
//! connection, one at a time, behind a fair (first come, first served)
//! lock. With `synchronous = FULL` each SQLite COMMIT waits for the WAL to
//! reach the disk (an fsync: 0.3 ms on the benchmark VM's idle disk, 0.9–1.8 ms under load), and the
//! lock is held meanwhile, so a master serving many clients spent a good
//! part of each exchange waiting for its own fsync while the next exchanges
//! queued.
//!
//! So transactions that find others queued behind them share one SQLite
//! transaction (a *group*), each member's work inside it a SAVEPOINT
//! (except the first's, which is the transaction itself), and the group is
//! committed once for all of them:
//!
//! - A member that commits while nobody waits for the writer (the usual
//!   case with one client) commits the group at once: one `BEGIN IMMEDIATE`
//!   and one `COMMIT`, as without groups.
//! - A member that commits while others wait releases its savepoint, lets
//!   the waiters in, and queues for the writer again behind them. The first
//!   member of a group to get the writer back commits the group; the others
//!   find it committed. [`MAX_MEMBERS`] bounds a group.
//! - No member's `commit` returns before the group's COMMIT has succeeded:
//!   nothing is acknowledged before it is durable. If the COMMIT fails, the
//!   group is rolled back and every member's `commit` fails with the error.
//! - A member waits for the group's COMMIT as long as `begin` waits for the
//!   writer (60 s): a later member that hangs with the writer (a resolver
//!   plugin that never answers) makes the earlier ones fail with an error
//!   that says their write may still be committed when it ends.
//! - A member dropped without `commit` rolls back to its savepoint (or the
//!   whole transaction, when it is the first and so the only member): the
//!   others' work stays in the group.
//!
//! Members see each other's uncommitted work (the group is one SQLite
//! transaction), exactly as serialized transactions would see the earlier
//! ones' committed work; if the group fails, they all fail together, so no
//! member was decided on data that did not stay. Readers on other
//! connections see a group's work when it commits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hubsync_core::store::{StoreError, StoreResult, WriteStats};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::checkpoint::Checkpointer;

/// A joined member's work: `SAVEPOINT` at its start, `RELEASE` at its
/// commit, `ROLLBACK TO` (then `RELEASE`) when it is dropped.
const SAVEPOINT: &str = "SAVEPOINT member";
const RELEASE: &str = "RELEASE member";
const ROLLBACK_TO: &str = "ROLLBACK TO member; RELEASE member";

/// Runs a transaction-control statement on the writer.
async fn control(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
}

/// The most transactions one group commits together. Bounds how long the
/// group's first member waits for the COMMIT (behind at most this many
/// others' work) and the size of the group's WAL frames.
pub(crate) const MAX_MEMBERS: usize = 64;

/// The writer connection, the lock that serializes write transactions,
/// and the group in progress.
#[derive(Clone)]
pub(crate) struct Writer {
    /// One connection. Idle (no group open) it is in this pool, so that
    /// anything using the pool directly gets it.
    pub(crate) pool: SqlitePool,
    state: Arc<Mutex<State>>,
    /// Transactions waiting in [`Writer::begin`] for the writer.
    pub(crate) waiting: Arc<AtomicUsize>,
    /// How long `begin` waits for the writer.
    wait: Duration,
    stats: Arc<Stats>,
    /// Checkpoints the WAL after commits, off this connection (`None`:
    /// SQLite's own checkpoints on the writer, as in some tests).
    checkpoint: Option<Checkpointer>,
}

struct State {
    /// The writer connection while a group is open.
    conn: Option<PoolConnection<Sqlite>>,
    group: Option<Group>,
}

/// What [`Writer::stats`] reports, counted as groups commit.
#[derive(Default)]
struct Stats {
    transactions: AtomicU64,
    commits: AtomicU64,
}

/// The SQLite transaction in progress and what its members will learn.
struct Group {
    members: usize,
    outcome: Arc<OnceLock<Outcome>>,
}

/// How a group ended: committed, or the COMMIT's error (a message: every
/// member reports it).
type Outcome = Result<(), String>;

/// One write transaction: the writer connection, held until it commits or
/// is dropped (which rolls its work back).
pub(crate) struct Member {
    /// `None` once the member has ended.
    guard: Option<OwnedMutexGuard<State>>,
    /// Joined an open group (its work is a savepoint) rather than opening
    /// one (its work is the transaction).
    joined: bool,
    outcome: Arc<OnceLock<Outcome>>,
    /// The writer it came from: its lock, waiters, wait and counts.
    writer: Writer,
}

/// Counts a task in [`Writer::begin`] as waiting until it has the lock,
/// or gives up (a cancelled `begin` must not stay counted).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Writer {
    pub(crate) fn new(pool: SqlitePool, wait: Duration, checkpoint: Option<Checkpointer>) -> Self {
        Writer {
            pool,
            state: Arc::new(Mutex::new(State {
                conn: None,
                group: None,
            })),
            waiting: Arc::new(AtomicUsize::new(0)),
            wait,
            stats: Arc::new(Stats::default()),
            checkpoint,
        }
    }

    /// Stops the background checkpoints and closes their connection.
    pub(crate) async fn close_checkpoints(&self) {
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint.close().await;
        }
    }

    /// Transactions committed and the COMMITs that carried them.
    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.stats.transactions.load(Ordering::Relaxed),
            commits: self.stats.commits.load(Ordering::Relaxed),
        }
    }

    /// Starts a write transaction: waits (up to the writer wait) for the
    /// writer, then joins the open group or opens one (`BEGIN IMMEDIATE`:
    /// the write lock is taken now, so the transaction never fails half
    /// way on a lock upgrade when another process holds the file).
    pub(crate) async fn begin(&self) -> StoreResult<Member> {
        let mut guard = {
            let _waiting = Waiting::enter(&self.waiting);
            tokio::time::timeout(self.wait, self.state.clone().lock_owned())
                .await
                .map_err(|_| {
                    StoreError::backend("starting a write transaction", WriterBusy(self.wait))
                })?
        };
        let state = &mut *guard;
        let (joined, outcome) = match (&mut state.group, &mut state.conn) {
            (Some(group), Some(conn)) => {
                control(conn, SAVEPOINT)
                    .await
                    .map_err(|e| StoreError::backend("starting a write transaction", e))?;
                group.members += 1;
                (true, group.outcome.clone())
            }
            _ => {
                let conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| StoreError::backend("starting a write transaction", e))?;
                let mut opening = Opening(Some(conn));
                control(opening.conn(), "BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| StoreError::backend("starting a write transaction", e))?;
                let outcome = Arc::new(OnceLock::new());
                state.conn = opening.0.take();
                state.group = Some(Group {
                    members: 1,
                    outcome: outcome.clone(),
                });
                (false, outcome)
            }
        };
        Ok(Member {
            guard: Some(guard),
            joined,
            outcome,
            writer: self.clone(),
        })
    }
}

/// The writer connection while `BEGIN IMMEDIATE` runs on it. A `begin`
/// dropped meanwhile (its request was cancelled) cannot stop the statement
/// on the connection's worker thread, so the connection would go back to
/// the pool inside a transaction nobody owns, and every later `BEGIN` on
/// it (the pool's only connection) would fail. Dropped still holding the
/// connection, it rolls back whatever began before handing it back; a task
/// of its own keeps the connection out of the pool until then.
struct Opening(Option<PoolConnection<Sqlite>>);

impl Opening {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self.0.as_mut() {
            Some(conn) => conn,
            None => unreachable!("the connection is taken only when the transaction began"),
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Fails harmlessly when the BEGIN did not start one.
                    let _ = control(&mut conn, "ROLLBACK").await;
                });
            }
            // No runtime left: SQLite rolls back when the connection closes.
            Err(_) => conn.close_on_drop(),
        }
    }
}

impl Member {
    /// Commits: returns once the group holding this member's work is
    /// committed (see the module's documentation).
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let Some(mut guard) = self.guard.take() else {
            return Err(ended());
        };
        if self.joined {
            let released = match guard.conn.as_mut() {
                Some(conn) => control(conn, RELEASE).await,
                None => return Err(ended()),
            };
            if let Err(e) = released {
                // The savepoint is still open: undo it, keep the group.
                roll_back_member(guard).await;
                return Err(StoreError::backend("committing", e));
            }
        }
        let members = guard.group.as_ref().map_or(0, |g| g.members);
        let writer = &self.writer;
        if writer.waiting.load(Ordering::SeqCst) == 0 || members >= MAX_MEMBERS {
            // A task of its own: a caller that stops waiting (a cancelled
            // request) must not leave the COMMIT half done, the connection
            // in an unknown state, or the group's outcome unset.
            let back = writer.clone();
            let task = tokio::spawn(async move { end_group(&mut guard, &back).await });
            return task
                .await
                .map_err(|e| StoreError::backend("committing", e))?;
        }
        // Others wait: let them in, and come back behind them. The group's
        // first member back commits it. A task of its own, so that the
        // group is committed even if this caller stops waiting.
        drop(guard);
        let (back, outcome) = (writer.clone(), self.outcome.clone());
        let task = tokio::spawn(async move {
            let mut guard = back.state.clone().lock_owned().await;
            match outcome.get() {
                Some(done) => done.clone().map_err(group_failed),
                None => end_group(&mut guard, &back).await,
            }
        });
        // Bounded like `begin`: a transaction of the group that hangs (it
        // holds the writer) must not hang the ones that came before it.
        match tokio::time::timeout(writer.wait, task).await {
            Ok(done) => done.map_err(|e| StoreError::backend("committing", e))?,
            Err(_) => Err(StoreError::backend("committing", CommitWait(writer.wait))),
        }
    }
}

/// Commits the open group and hands the connection back to the pool;
/// records the outcome for the members still to learn it.
async fn end_group(state: &mut State, writer: &Writer) -> StoreResult<()> {
    let (Some(mut conn), Some(group)) = (state.conn.take(), state.group.take()) else {
        return Err(ended());
    };
    let committed = control(&mut conn, "COMMIT").await;
    let outcome = match &committed {
        Ok(()) => Ok(()),
        Err(e) => {
            // A failed COMMIT can leave the transaction open (and when it
            // did not, this ROLLBACK fails harmlessly).
            if let Err(rollback) = control(&mut conn, "ROLLBACK").await
                && !rollback.to_string().contains("no transaction is active")
            {
                tracing::error!(error = %rollback, "rolling back after a failed COMMIT failed; reconnecting the writer");
                conn.close_on_drop();
            }
            Err(e.to_string())
        }
    };
    if outcome.is_ok() {
        let stats = &writer.stats;
        stats
            .transactions
            .fetch_add(group.members as u64, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(checkpoint) = &writer.checkpoint {
            checkpoint.kick();
        }
    }
    let _ = group.outcome.set(outcome);
    committed.map_err(|e| StoreError::backend("committing", e))
}

impl Drop for Member {
    /// Rolls back what this member wrote: to its savepoint when it joined a
    /// group (the others' work stays), else the whole transaction (it is
    /// the group's only member: nobody joins while it holds the writer).
    /// A task of its own takes the writer with it, so nothing else uses the
    /// connection before the rollback is done.
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let joined = self.joined;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if joined {
                        roll_back_member(guard).await;
                    } else {
                        roll_back_group(guard, None).await;
                    }
                });
            }
            // No runtime left (the process is ending): nothing can use the
            // connection again, and SQLite rolls back what is open on it
            // when it closes.
            Err(_) => drop(guard),
        }
    }
}

/// Undoes a joined member's work (its savepoint); the group goes on. If
/// even that fails, the whole group is rolled back and its members learn it.
async fn roll_back_member(mut guard: OwnedMutexGuard<State>) {
    let undone = match guard.conn.as_mut() {
        Some(conn) => control(conn, ROLLBACK_TO).await,
        None => return,
    };
    match undone {
        Ok(()) => {
            if let Some(group) = guard.group.as_mut() {
                group.members -= 1;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "rolling back a write transaction failed; rolling back every transaction committed with it");
            roll_back_group(
                guard,
                Some(format!(
                    "rolling back another transaction of the group failed: {e}"
                )),
            )
            .await;
        }
    }
}

/// Rolls the open group back and hands the connection back to the pool
/// (or closes it, when even ROLLBACK fails). With `why`, the members
/// waiting for the group's COMMIT fail with it.
async fn roll_back_group(mut guard: OwnedMutexGuard<State>, why: Option<String>) {
    let group = guard.group.take();
    if let Some(mut conn) = guard.conn.take()
        && let Err(e) = control(&mut conn, "ROLLBACK").await
    {
        tracing::error!(error = %e, "rolling back the store's write transaction failed; reconnecting the writer");
        conn.close_on_drop();
    }
    if let (Some(group), Some(why)) = (group, why) {
        let _ = group.outcome.set(Err(why));
    }
}

impl std::ops::Deref for Member {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self.guard.as_ref().and_then(|g| g.conn.as_ref()) {
            Some(conn) => conn,
            None => unreachable!("a write transaction holds the writer connection until it ends"),
        }
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self.guard.as_mut().and_then(|g| g.conn.as_mut()) {
            Some(conn) => conn,
            None => unreachable!("a write transaction holds the writer connection until it ends"),
        }
    }
}

fn ended() -> StoreError {
    StoreError::backend("committing", TxEnded)
}

fn group_failed(message: String) -> StoreError {
    StoreError::backend("committing", GroupFailed(message))
}

#[derive(Debug, thiserror::Error)]
#[error(
    "another write transaction held the store's writer for {0:?}; the store is overloaded or a transaction hangs (see the log for what was running)"
)]
struct WriterBusy(Duration);

#[derive(Debug, thiserror::Error)]
#[error(
    "this write was committed together with later ones, and one of them has held the store's writer for {0:?}; it may still be committed when that one ends, so check before writing it again (see the log for what was running)"
)]
struct CommitWait(Duration);

#[derive(Debug, thiserror::Error)]
#[error("the transaction had already ended")]
struct TxEnded;

#[derive(Debug, thiserror::Error)]
#[error("{0} (the write was committed together with others, and none of them was kept)")]
struct GroupFailed(String);
