//! The baselines: the same rows written with nothing but SQL — a scratch
//! SQLite file with the store's pragmas (WAL, `synchronous = FULL`, foreign
//! keys, one connection), or a table in the master's PostgreSQL database —
//! into a bare table shaped like the store's `entities` (same columns, same
//! primary key); for SQLite also into a store file with the store's own
//! schema, with the reference and queue rows the store writes ([`Rows`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

/// Rows per transaction (and per multi-row INSERT) in the batched baselines,
/// the engine's packet and batch size.
pub const CHUNK: usize = 500;

const SQLITE_TABLE: &str = "CREATE TABLE entities (
    entity_type TEXT NOT NULL, uuid TEXT NOT NULL, updated_at TEXT NOT NULL,
    is_deleted INTEGER NOT NULL, data TEXT NOT NULL, rev INTEGER, origin_node_id TEXT,
    PRIMARY KEY (entity_type, uuid))";

/// A baseline's SQLite file, its WAL and its shared-memory file, gone.
fn remove_sqlite_files(file: &Path) {
    for f in [
        file.to_path_buf(),
        file.with_extension("db-wal"),
        file.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(f);
    }
}

/// Where a SQLite baseline writes its rows.
pub enum Rows<'a> {
    /// A bare table shaped like the store's `entities` (same columns, same
    /// primary key): the entity rows alone.
    Plain,
    /// A fresh store file with the store's own schema (every index, the
    /// foreign keys), and the rows a client's store gets for each entity:
    /// the entity, its interned key and one `entity_refs` row per
    /// reference (`(pointer, target type, target uuid)`; the pointer
    /// interned too), and its queue row.
    Store {
        /// The references of row `i` (of `0..count`).
        refs: &'a (dyn Fn(usize) -> Vec<(&'static str, &'static str, Uuid)> + Sync),
    },
}

/// One connection to `file` with the store's pragmas.
async fn sqlite_connect(file: &Path) -> anyhow::Result<sqlx::SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("opening the baseline SQLite file {}", file.display()))
}

/// Raw SQLite: rows `0..count` of `row` inserted `per_tx` at a time (1:
/// one INSERT and one commit per row; otherwise one multi-row INSERT per
/// table and transaction) into a fresh file, as `into` says. Only the
/// inserts and commits are timed; the rows are made a chunk at a time, so
/// memory stays bounded for any count. With [`Rows::Store`] the gap to
/// [`Rows::Plain`] is the cost of the store's schema (the reverse
/// reference index, the queue), and the gap between hubsync and it is
/// hubsync's own.
pub async fn sqlite_insert(
    file: &Path,
    into: Rows<'_>,
    ty: &str,
    count: usize,
    per_tx: usize,
    row: impl Fn(usize) -> Value,
) -> anyhow::Result<Duration> {
    remove_sqlite_files(file);
    let ts = hubsync_core::entity::format_ts(hubsync_core::entity::now_utc());
    // The writing client (`origin_node_id` of its entities) and its master
    // (the queue's target), for the store's rows.
    let (origin, master) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let pool = match into {
        Rows::Plain => {
            let pool = sqlite_connect(file).await?;
            sqlx::raw_sql(SQLITE_TABLE).execute(&pool).await?;
            pool
        }
        Rows::Store { .. } => {
            // The store creates the file and its schema, then lets go of it.
            let url = format!("sqlite://{}", file.display());
            drop(
                hubsync_store_sqlite::SqliteStore::open(&url)
                    .await
                    .with_context(|| format!("creating a store at {url}"))?,
            );
            let pool = sqlite_connect(file).await?;
            sqlx::query(
                "INSERT INTO sync_nodes (id, code, name, role, is_self, revoked, created_at,
                     received_packet_no, sent_packet_no, out_packet_no, acked_rev, out_up_to_rev)
                 VALUES (?, 'MASTER', 'master', 'master', 0, 0, ?, 0, 0, 0, 0, 0)",
            )
            .bind(&master)
            .bind(&ts)
            .execute(&pool)
            .await
            .context("registering the baseline's master node")?;
            pool
        }
    };
    let per_tx = per_tx.max(1);
    let mut took = Duration::ZERO;
    for start in (0..count).step_by(per_tx) {
        let chunk: Vec<(String, String)> = (start..(start + per_tx).min(count))
            .map(|i| (Uuid::now_v7().to_string(), row(i).to_string()))
            .collect();
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id) ",
        );
        q.push_values(chunk.iter().enumerate(), |mut b, (i, (uuid, json))| {
            let (rev, origin) = match into {
                Rows::Plain => (Some(i as i64), None),
                Rows::Store { .. } => (None, Some(origin.as_str())),
            };
            b.push_bind(ty)
                .push_bind(uuid.as_str())
                .push_bind(ts.as_str())
                .push_bind(0_i64)
                .push_bind(json.as_str())
                .push_bind(rev)
                .push_bind(origin);
        });
        q.build().execute(&mut *tx).await?;
        if let Rows::Store { refs } = into {
            // (source uuid, (pointer, target type, target uuid)) per reference.
            let rows: Vec<(&str, (&str, &str, String))> = chunk
                .iter()
                .enumerate()
                .flat_map(|(j, (uuid, _))| {
                    refs(start + j)
                        .into_iter()
                        .map(move |(p, t, u)| (uuid.as_str(), (p, t, u.to_string())))
                })
                .collect();
            // The references' interned keys (the sources' and the
            // targets'), then the rows keyed by them, as the store writes
            // them.
            let mut seen = std::collections::HashSet::new();
            let keys: Vec<(&str, &str)> = chunk
                .iter()
                .map(|(uuid, _)| (ty, uuid.as_str()))
                .chain(rows.iter().map(|(_, (_, t, target))| (*t, target.as_str())))
                .filter(|k| seen.insert(*k))
                .collect();
            for part in keys.chunks(per_tx) {
                let mut q: QueryBuilder<Sqlite> =
                    QueryBuilder::new("INSERT OR IGNORE INTO entity_keys (entity_type, uuid) ");
                q.push_values(part, |mut b, (t, u)| {
                    b.push_bind(*t).push_bind(*u);
                });
                q.build().execute(&mut *tx).await?;
            }
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT OR IGNORE INTO ref_pointers (pointer) ");
            let mut pointers: Vec<&str> = rows.iter().map(|(_, (p, _, _))| *p).collect();
            pointers.sort_unstable();
            pointers.dedup();
            q.push_values(pointers, |mut b, p| {
                b.push_bind(p);
            });
            q.build().execute(&mut *tx).await?;
            for part in rows.chunks(per_tx) {
                let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                    "INSERT INTO entity_refs (source_id, pointer_id, target_id)
                     SELECT s.id, p.id, t.id FROM (",
                );
                q.push_values(part, |mut b, (uuid, (p, t, target))| {
                    b.push_bind(ty)
                        .push_bind(*uuid)
                        .push_bind(*p)
                        .push_bind(*t)
                        .push_bind(target.as_str());
                });
                q.push(
                    ") AS v
                     CROSS JOIN entity_keys AS s ON s.uuid = v.column2 AND s.entity_type = v.column1
                     CROSS JOIN ref_pointers AS p ON p.pointer = v.column3
                     CROSS JOIN entity_keys AS t ON t.uuid = v.column5 AND t.entity_type = v.column4",
                );
                q.build().execute(&mut *tx).await?;
            }
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, packet_no, created_at, origin_node_id) ",
            );
            q.push_values(&chunk, |mut b, (uuid, _)| {
                b.push_bind("queue")
                    .push_bind(master.as_str())
                    .push_bind(ty)
                    .push_bind(uuid.as_str())
                    .push_bind("INSERT")
                    .push_bind(None::<i64>)
                    .push_bind(ts.as_str())
                    .push_bind(None::<String>);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        took += started.elapsed();
    }
    pool.close().await;
    remove_sqlite_files(file);
    Ok(took)
}

/// Raw PostgreSQL: the rows into a bare table of the database at `url`,
/// [`CHUNK`] per multi-row INSERT and transaction (data as JSONB, like the
/// store).
pub async fn postgres_insert(
    url: &str,
    ty: &str,
    count: usize,
    row: impl Fn(usize) -> Value,
) -> anyhow::Result<Duration> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .context("connecting to the baseline PostgreSQL database")?;
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_baseline;
         CREATE TABLE bench_baseline (
            entity_type TEXT NOT NULL, uuid UUID NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
            is_deleted BOOLEAN NOT NULL, data JSONB NOT NULL, rev BIGINT, origin_node_id UUID,
            PRIMARY KEY (entity_type, uuid))",
    )
    .execute(&pool)
    .await?;
    let now = hubsync_core::entity::now_utc();
    let mut took = Duration::ZERO;
    for start in (0..count).step_by(CHUNK) {
        let chunk: Vec<Value> = (start..(start + CHUNK).min(count)).map(&row).collect();
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO bench_baseline (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id) ",
        );
        q.push_values(chunk.iter().enumerate(), |mut b, (i, d)| {
            b.push_bind(ty)
                .push_bind(Uuid::now_v7())
                .push_bind(now)
                .push_bind(false)
                .push_bind(sqlx::types::Json(d))
                .push_bind(i as i64)
                .push_bind(None::<Uuid>);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        took += started.elapsed();
    }
    sqlx::raw_sql("DROP TABLE bench_baseline")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(took)
}
