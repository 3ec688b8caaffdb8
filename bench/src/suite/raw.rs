//! The baselines: the same rows written with nothing but SQL — a scratch
//! SQLite file with the store's pragmas (WAL, `synchronous = FULL`, foreign
//! keys, one connection), or a table in the master's PostgreSQL database —
//! into a bare table shaped like the store's `entities` (same columns, same
//! primary key).

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

async fn sqlite_pool(file: &Path) -> anyhow::Result<sqlx::SqlitePool> {
    let _ = std::fs::remove_file(file);
    let opts = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("opening the baseline SQLite file {}", file.display()))?;
    sqlx::raw_sql(SQLITE_TABLE).execute(&pool).await?;
    Ok(pool)
}

/// Raw SQLite: rows `0..count` of `row` inserted `per_tx` at a time (1:
/// one INSERT and one commit per row; otherwise one multi-row INSERT per
/// transaction). Only the inserts and commits are timed; the rows are made
/// a chunk at a time, so memory stays bounded for any count.
pub async fn sqlite_insert(
    file: &Path,
    ty: &str,
    count: usize,
    per_tx: usize,
    row: impl Fn(usize) -> Value,
) -> anyhow::Result<Duration> {
    let pool = sqlite_pool(file).await?;
    let ts = hubsync_core::entity::format_ts(hubsync_core::entity::now_utc());
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
            b.push_bind(ty)
                .push_bind(uuid.as_str())
                .push_bind(ts.as_str())
                .push_bind(0_i64)
                .push_bind(json.as_str())
                .push_bind(i as i64)
                .push_bind(None::<String>);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        took += started.elapsed();
    }
    pool.close().await;
    for f in [
        file.to_path_buf(),
        file.with_extension("db-wal"),
        file.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(f);
    }
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
