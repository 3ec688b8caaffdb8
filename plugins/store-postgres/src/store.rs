//! [`PostgresStore`]: opening (pool, migrations) and the `Store` read
//! methods, each on a connection of the pool; `begin()` hands out a
//! [`PgTx`](crate::tx::PgTx).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hubsync_core::entity::Entity;
use hubsync_core::security::{SecurityEvent, SecurityEventKind, SecurityEventQuery};
use hubsync_core::store::{
    AuditRecord, HistoryRecord, NodeRecord, Page, PoolOptions, Store, StoreError, StoreResult,
    StoreTx,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::codec::RowReader;
use crate::rows::{
    self, audit_cols, audit_from_row, entity_cols, entity_from_row, history_cols, history_from_row,
    node_cols, node_from_row, node_listed_cols,
};
use crate::tx::PgTx;

/// Bound on waiting for a row or advisory lock: a host that died inside a
/// transaction is cut off by the server, but a live one stuck on a lock
/// fails here rather than hanging an exchange forever.
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// A session idle inside a transaction this long is ended by the server,
/// releasing its locks (hubsync never waits on anything but the database
/// while a transaction is open).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// A hubsync store in one PostgreSQL database. Cheap to clone (the pool is
/// shared). Several processes may open the same database: see the crate
/// docs for why that is correct.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// The URL without its password, for messages.
    pub(crate) url: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`,
    /// `postgresql://…`, with the usual libpq parameters such as
    /// `sslmode=require`) with a pool sized by `options`, and brings its
    /// schema up to date.
    ///
    /// The database must exist; hubsync creates its tables in the
    /// connection's default schema (`search_path`).
    ///
    /// Fails with `StoreError::TooNew` when the database was migrated by a
    /// newer hubsync, and `StoreError::Open` when it cannot be reached.
    pub async fn open(url: &str, options: &PoolOptions) -> StoreResult<PostgresStore> {
        let shown = crate::redact_url(url);
        let open_err = |what: &str, e: &dyn std::fmt::Display| StoreError::Open {
            url: shown.clone(),
            reason: format!("{what}: {e}"),
        };
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| open_err("the URL is not a valid PostgreSQL URL", &e))?
            .application_name("hubsync")
            .options([
                ("lock_timeout", format!("{}", LOCK_TIMEOUT.as_millis())),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}", IDLE_IN_TRANSACTION_TIMEOUT.as_millis()),
                ),
            ]);
        let max = options.max_connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(options.min_connections.min(max))
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                open_err(
                    "connecting (is the server running, the database created and the user allowed?)",
                    &e,
                )
            })?;
        crate::migrations::migrate(&pool, &shown).await?;
        tracing::debug!(url = %shown, max_connections = max, "opened postgres store");
        Ok(PostgresStore {
            pool,
            url: Arc::from(shown),
        })
    }

    /// The pool, for tests and tools that inspect the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

pub(crate) const LIST_ENTITIES_FIRST: &str = concat!(
    "SELECT ",
    entity_cols!(),
    " FROM entities WHERE entity_type = $1 AND ($2 OR NOT is_deleted)
      ORDER BY uuid LIMIT $3"
);

pub(crate) const LIST_ENTITIES_AFTER: &str = concat!(
    "SELECT ",
    entity_cols!(),
    " FROM entities WHERE entity_type = $1 AND ($2 OR NOT is_deleted) AND uuid > $4
      ORDER BY uuid LIMIT $3"
);

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// READ COMMITTED: every statement sees what was committed before it
    /// started, which is what the locks in locks.rs rely on.
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::backend("starting a write transaction", e))?;
        Ok(Box::new(PgTx::new(tx)))
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        rows::get_meta(&self.pool, key).await
    }

    async fn get_entity(&self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>> {
        rows::get_entity(&self.pool, entity_type, uuid).await
    }

    /// Ordered by uuid (PostgreSQL compares UUIDs bytewise, as `Uuid`'s
    /// `Ord` does); `page.after` is exclusive; a `limit` of 0 returns
    /// nothing.
    async fn list_entities(&self, entity_type: &str, page: Page) -> StoreResult<Vec<Entity>> {
        let query = match page.after {
            None => sqlx::query(LIST_ENTITIES_FIRST),
            Some(_) => sqlx::query(LIST_ENTITIES_AFTER),
        };
        let mut query = query
            .bind(entity_type)
            .bind(page.include_deleted)
            .bind(i64::from(page.limit));
        if let Some(after) = page.after {
            query = query.bind(after);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::backend("listing entities", e))?;
        rows.iter().map(entity_from_row).collect()
    }

    /// Ordered by (type, uuid). `COLLATE "C"`: bytewise, like SQLite, so
    /// that the order does not depend on the database's locale.
    async fn dump_entities(&self) -> StoreResult<Vec<Entity>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entity_cols!(),
            " FROM entities ORDER BY entity_type COLLATE \"C\", uuid"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::backend("dumping entities", e))?;
        rows.iter().map(entity_from_row).collect()
    }

    async fn get_node(&self, id: Uuid) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM sync_nodes WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::backend("reading a node", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn get_node_by_code(&self, code: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes WHERE code = $1"
        ))
        .bind(code)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::backend("reading a node by code", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn get_node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::backend("reading a node by token", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Ordered by code (bytewise).
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes ORDER BY code COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::backend("listing nodes", e))?;
        rows.iter().map(node_from_row).collect()
    }

    async fn count_held(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT count(*) AS n FROM held_changes")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::backend("counting held changes", e))?;
        RowReader::new(&row, "held_changes").i64("n")
    }

    async fn count_queued_capped(&self, node: Uuid, cap: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT count(*) AS n FROM (SELECT 1 FROM sync_changes
             WHERE kind = 'queue' AND node_id = $1 LIMIT $2) AS q",
        )
        .bind(node)
        .bind(cap.max(0))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::backend("counting queued changes", e))?;
        RowReader::new(&row, "sync_changes").i64("n")
    }

    async fn count_revisions_after_capped(
        &self,
        rev: i64,
        node: Uuid,
        cap: i64,
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT count(*) AS n FROM (SELECT 1 FROM sync_changes
             WHERE kind = 'log' AND id > $1 AND (node_id IS NULL OR node_id = $2) LIMIT $3) AS r",
        )
        .bind(rev)
        .bind(node)
        .bind(cap.max(0))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::backend("counting revisions", e))?;
        RowReader::new(&row, "sync_changes").i64("n")
    }

    /// One statement, as in SQLite: the log read by revision range from
    /// the lowest acknowledged revision up, the rows for everyone counted
    /// per span between two nodes' acknowledged revisions and summed from
    /// the top down, the addressed rows counted per node.
    async fn node_lags(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        let rows = sqlx::query(
            "WITH
             peers AS (SELECT id, acked_rev FROM sync_nodes WHERE NOT is_self AND NOT revoked),
             bounds AS (SELECT r, lead(r) OVER (ORDER BY r) AS next_r
                        FROM (SELECT DISTINCT acked_rev AS r FROM peers) AS d),
             spans AS (SELECT r, (SELECT count(*) FROM sync_changes c
                                  WHERE c.kind = 'log' AND c.id > bounds.r
                                    AND c.id <= coalesce(bounds.next_r, 9223372036854775807)
                                    AND c.node_id IS NULL) AS k
                       FROM bounds),
             everyone AS (SELECT r, sum(k) OVER (ORDER BY r DESC) AS n FROM spans),
             addressed AS (SELECT c.node_id, count(*) AS n
                           FROM sync_changes c JOIN peers p ON p.id = c.node_id
                           WHERE c.kind = 'log' AND c.id > (SELECT min(acked_rev) FROM peers)
                             AND c.id > p.acked_rev
                           GROUP BY c.node_id)
             SELECT p.id AS node_id, (e.n + coalesce(a.n, 0))::BIGINT AS lag
             FROM peers p JOIN everyone e ON e.r = p.acked_rev
             LEFT JOIN addressed a ON a.node_id = p.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::backend("counting the nodes' lags", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "sync_nodes");
                Ok((r.uuid("node_id")?, r.i64("lag")?))
            })
            .collect()
    }

    async fn history(&self, entity_uuid: Uuid) -> StoreResult<Vec<HistoryRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            history_cols!(),
            " FROM object_version_history WHERE entity_uuid = $1 ORDER BY arrival_time, seq"
        ))
        .bind(entity_uuid)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::backend("reading entity history", e))?;
        rows.iter().map(history_from_row).collect()
    }

    async fn audit(&self, entity_uuid: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows = match entity_uuid {
            Some(uuid) => {
                sqlx::query(concat!(
                    "SELECT ",
                    audit_cols!(),
                    " FROM conflict_audit WHERE entity_uuid = $1 ORDER BY at, seq LIMIT $2"
                ))
                .bind(uuid)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    audit_cols!(),
                    " FROM conflict_audit ORDER BY at, seq LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| StoreError::backend("reading the conflict audit", e))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn record_security_event(&self, event: &SecurityEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO security_events (at, kind, node_id, node_code, peer, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.at)
        .bind(event.kind.as_str())
        .bind(event.node_id)
        .bind(event.node_code.as_deref())
        .bind(event.peer.as_deref())
        .bind(&event.detail)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::backend("recording a security event", e))?;
        Ok(())
    }

    async fn security_events(&self, query: &SecurityEventQuery) -> StoreResult<Vec<SecurityEvent>> {
        let rows = sqlx::query(
            "SELECT at, kind, node_id, node_code, peer, detail FROM security_events
             WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::uuid IS NULL OR node_id = $3)
             ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(query.since)
        .bind(query.kind.map(SecurityEventKind::as_str))
        .bind(query.node_id)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::backend("reading security events", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "security_events");
                let kind = r.text("kind")?;
                Ok(SecurityEvent {
                    at: r.ts("at")?,
                    kind: SecurityEventKind::parse(&kind).ok_or_else(|| {
                        StoreError::corrupt(format!(
                            "security_events.kind: {kind:?} is not a security event kind ({})",
                            SecurityEventKind::names()
                        ))
                    })?,
                    node_id: r.opt_uuid("node_id")?,
                    node_code: r.opt_text("node_code")?,
                    peer: r.opt_text("peer")?,
                    detail: r.text("detail")?,
                })
            })
            .collect()
    }

    async fn prune_security_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM security_events WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::backend("pruning security events", e))?;
        Ok(done.rows_affected())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
