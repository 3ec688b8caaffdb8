//! Opening a store: URL parsing, connection settings, the two pools, and
//! migrations.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hubsync_core::store::{StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

use crate::checkpoint::{self, Checkpointer};
use crate::migrations;
use crate::store::SqliteStore;
use crate::writer::Writer;

/// How long a statement waits for a lock held by another connection (or
/// another process) before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `begin()` waits for the single writer connection. Write
/// transactions are serialized behind it, so this bounds the wait behind
/// other writers; it also turns a task that calls `begin()` while holding a
/// transaction (a self-deadlock) into an error instead of a hang.
const WRITER_WAIT: Duration = Duration::from_secs(60);

/// Rows a statement may hand to the reading task before the connection's
/// worker thread waits: a packet's worth (max_packet_entities is 500 by
/// default, and a packet's prefetch reads what its entities refer to too).
const ROW_CHANNEL: usize = 2_048;

/// Concurrent `Store` reads.
const READERS: u32 = 4;

/// Where the database lives.
#[derive(Debug, PartialEq)]
enum Location {
    File(PathBuf),
    /// A private scratch database, gone when the store is dropped.
    Memory,
}

/// `sqlite://relative/path.db`, `sqlite:///abs/path.db`, `sqlite:path.db`
/// or `sqlite::memory:`. The rest of the URL is taken literally as a path
/// (no percent-decoding); relative paths are relative to the working
/// directory. Query parameters are refused: hubsync chooses the SQLite
/// settings itself.
fn parse_url(url: &str) -> StoreResult<Location> {
    let bad = |reason: &str| StoreError::Open {
        url: url.to_string(),
        reason: format!(
            "{reason}; expected sqlite://path/to/file.db, sqlite:///absolute/path.db or sqlite::memory:"
        ),
    };
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(bad("not a sqlite: URL"));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest == ":memory:" {
        return Ok(Location::Memory);
    }
    if rest.is_empty() {
        return Err(bad("the URL names no file"));
    }
    if rest.contains('?') {
        return Err(bad("query parameters are not supported"));
    }
    Ok(Location::File(PathBuf::from(rest)))
}

impl SqliteStore {
    /// Opens (creating the file and its parent directories if missing) the
    /// database at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite://relative/path.db`, `sqlite:///absolute/path.db`,
    /// or `sqlite::memory:` (a private scratch database that lives as long
    /// as this store, meant for tests).
    ///
    /// Fails with `StoreError::TooNew` when the database was migrated by a
    /// newer hubsync, and `StoreError::Open` when it cannot be opened.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        let open_err = |what: &str, e: &dyn std::fmt::Display| StoreError::Open {
            url: url.to_string(),
            reason: format!("{what}: {e}"),
        };
        let location = parse_url(url)?;
        let mut scratch = None;

        let base = SqliteConnectOptions::new()
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // FULL, not NORMAL: in WAL mode NORMAL does not sync the WAL at
            // commit, so the last transactions can be lost on power failure.
            // A committed queue row or applied packet has been acknowledged
            // to a user or a peer and must survive that.
            .synchronous(SqliteSynchronous::Full)
            // Rows a statement returns wait here for the reading task. sqlx's
            // default (50) parks the connection's worker thread every 50
            // rows of a packet-sized read until the task has drained them.
            .row_buffer_size(ROW_CHANNEL);
        let (writer_opts, reader_opts) = match &location {
            Location::File(path) => {
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| open_err("creating the parent directory", &e))?;
                }
                let base = base.filename(path);
                (
                    // WAL: readers never block the writer nor the writer them.
                    base.clone()
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal),
                    base.read_only(true),
                )
            }
            Location::Memory => {
                // Not SQLite's `:memory:`: its shared-cache mode makes readers
                // wait on table locks for the writer's commit, and the `memdb`
                // VFS refuses readers while a write transaction is open. Either
                // would make a `Store` read during an open `StoreTx` behave
                // unlike a real store (hang or SQLITE_BUSY). A scratch file in
                // the temp directory, removed when the store is dropped, gives
                // the same WAL semantics as production.
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "hubsync-memory-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| open_err("creating a scratch directory", &e))?;
                let base = base
                    .filename(dir.join("scratch.db"))
                    // Nothing here is meant to survive a crash.
                    .synchronous(SqliteSynchronous::Off);
                scratch = Some(Arc::new(ScratchDir(dir)));
                (
                    base.clone()
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal),
                    base.read_only(true),
                )
            }
        };

        // The WAL is checkpointed by a connection of its own (checkpoint.rs);
        // the writer's own checkpoint is only the backstop.
        let checkpoint_opts = writer_opts.clone();
        let writer_opts = writer_opts.pragma(
            "wal_autocheckpoint",
            checkpoint::WRITER_BACKSTOP_PAGES.to_string(),
        );
        // One connection: write transactions are serialized here rather than
        // in SQLite, so they never fail with SQLITE_BUSY on lock upgrade.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(WRITER_WAIT)
            // A local SQLite connection does not go stale like a socket;
            // skipping the ping saves a round trip to its worker per begin().
            .test_before_acquire(false)
            .connect_with(writer_opts)
            .await
            .map_err(|e| open_err("connecting", &e))?;

        {
            let mut conn = writer
                .acquire()
                .await
                .map_err(|e| open_err("connecting", &e))?;
            // Some file systems (network mounts) cannot do WAL; SQLite then
            // silently keeps its rollback journal.
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| open_err("reading the journal mode", &e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(url, journal_mode = %mode, "SQLite did not switch to WAL; reads will wait for writes");
            }
            migrations::migrate(&mut conn, url).await?;
        }

        // Opened after migrating: these connections are read-only and the
        // file (and its WAL) must exist.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(reader_opts)
            .await
            .map_err(|e| open_err("connecting readers", &e))?;

        // Without it the writer checkpoints (at the backstop's size only if
        // nothing else does): still correct, so a failure here is a warning.
        let checkpoint = match SqliteConnection::connect_with(&checkpoint_opts).await {
            Ok(conn) => Some(Checkpointer::start(conn, url, checkpoint::CHECKPOINT_EVERY)),
            Err(e) => {
                tracing::warn!(url, error = %e, "no background WAL checkpoints: the connection for them did not open; the writer checkpoints instead");
                None
            }
        };

        tracing::debug!(url, "opened sqlite store");
        Ok(SqliteStore {
            writer: Writer::new(writer, WRITER_WAIT, checkpoint),
            reader,
            url: Arc::from(url),
            _scratch: scratch,
        })
    }
}

/// The directory of a `sqlite::memory:` store: a real file, so that it has
/// WAL semantics like any store, removed (best effort) when the last clone
/// of the store is dropped. A crashed process leaves it in the temp
/// directory.
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Open connections do not prevent unlinking on Unix; elsewhere the
        // directory may stay behind.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Option<Location>) {
        match (parse_url(url), expected) {
            (Ok(found), Some(expected)) => assert_eq!(found, expected, "{url}"),
            (Err(StoreError::Open { .. }), None) => {}
            (found, expected) => panic!("{url}: expected {expected:?}, found {found:?}"),
        }
    }

    #[test]
    fn urls_name_a_file_or_memory() {
        check(
            "sqlite://data/hub.db",
            Some(Location::File("data/hub.db".into())),
        );
        check(
            "sqlite:///var/lib/hub.db",
            Some(Location::File("/var/lib/hub.db".into())),
        );
        check("sqlite:hub.db", Some(Location::File("hub.db".into())));
        check("sqlite::memory:", Some(Location::Memory));
        check("sqlite://:memory:", Some(Location::Memory));
        check("sqlite://", None);
        check("sqlite://hub.db?mode=rwc", None);
        check("postgres://localhost/hub", None);
    }
}
