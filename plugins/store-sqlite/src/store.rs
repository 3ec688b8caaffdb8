//! [`SqliteStore`]: the `Store` read methods on the reader pool, and
//! `begin()` on the single writer connection.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hubsync_core::entity::Entity;
use hubsync_core::security::{SecurityEvent, SecurityEventKind, SecurityEventQuery};
use hubsync_core::store::{
    AuditRecord, HistoryRecord, NodeRecord, Page, Store, StoreError, StoreResult, StoreTx,
    WriteStats,
};
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::codec::{RowReader, opt_uuid_text, ts_text, uuid_text};
use crate::queries::{
    self, audit_cols, audit_from_row, entity_cols, entity_from_row, history_cols, history_from_row,
    node_from_row, node_listed_cols,
};
use crate::tx::SqliteTx;
use crate::writer::Writer;

/// A hubsync store in one SQLite file. Cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct SqliteStore {
    /// One connection: every write transaction, committed in groups.
    pub(crate) writer: Writer,
    /// Read-only connections: the `Store` read methods.
    pub(crate) reader: SqlitePool,
    pub(crate) url: Arc<str>,
    /// Keeps a `sqlite::memory:` store's scratch directory alive.
    pub(crate) _scratch: Option<Arc<crate::open::ScratchDir>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

pub(crate) const LIST_ENTITIES: &str = concat!(
    "SELECT ",
    entity_cols!(),
    " FROM entities WHERE entity_type = ? AND uuid > ? AND (? OR is_deleted = 0)
              ORDER BY uuid LIMIT ? + 0"
);

/// The queue rows and the log rows a node would be sent, counted no further
/// than a bound (`? + 0`: a bound LIMIT SQLite would otherwise plan as a
/// constant and compile again at every execution).
pub(crate) const COUNT_QUEUED: &str = "SELECT count(*) AS n FROM (SELECT 1 FROM sync_changes
             WHERE kind = 'queue' AND node_id = ? LIMIT ? + 0)";

pub(crate) const COUNT_REVISIONS_AFTER: &str =
    "SELECT count(*) AS n FROM (SELECT 1 FROM sync_changes
             WHERE kind = 'log' AND id > ? AND (node_id IS NULL OR node_id = ?) LIMIT ? + 0)";

/// Every other node's lag in one statement (`Store::node_lags`). The log is
/// read twice at most from the lowest acknowledged revision up, by rowid
/// range: the rows for everyone are counted once per span between two
/// nodes' acknowledged revisions and summed from the top down (a node's
/// count is the sum of the spans above it); the addressed rows are counted
/// per node. `+c.kind` keeps SQLite off the log's entity index, which would
/// scan the whole log.
pub(crate) const NODE_LAGS: &str = "WITH
    peers AS (SELECT id, acked_rev FROM sync_nodes WHERE is_self = 0 AND revoked = 0),
    bounds AS (SELECT r, lead(r) OVER (ORDER BY r) AS next_r
               FROM (SELECT DISTINCT acked_rev AS r FROM peers)),
    spans AS (SELECT r, (SELECT count(*) FROM sync_changes c
                         WHERE c.id > bounds.r
                           AND c.id <= ifnull(bounds.next_r, 9223372036854775807)
                           AND +c.kind = 'log' AND c.node_id IS NULL) AS k
              FROM bounds),
    everyone AS (SELECT r, sum(k) OVER (ORDER BY r DESC) AS n FROM spans),
    addressed AS (SELECT c.node_id, count(*) AS n
                  FROM sync_changes c JOIN peers p ON p.id = c.node_id
                  WHERE c.id > (SELECT min(acked_rev) FROM peers)
                    AND +c.kind = 'log' AND c.id > p.acked_rev
                  GROUP BY c.node_id)
    SELECT p.id AS node_id, e.n + ifnull(a.n, 0) AS lag
    FROM peers p JOIN everyone e ON e.r = p.acked_rev
    LEFT JOIN addressed a ON a.node_id = p.id";

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn write_stats(&self) -> Option<WriteStats> {
        Some(self.writer.stats())
    }

    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>> {
        Ok(Box::new(SqliteTx::new(self.writer.begin().await?)))
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        queries::get_meta(&self.reader, key).await
    }

    async fn get_entity(&self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>> {
        queries::get_entity(&self.reader, entity_type, uuid).await
    }

    /// Ordered by uuid; `page.after` is exclusive; a `limit` of 0 returns
    /// nothing.
    async fn list_entities(&self, entity_type: &str, page: Page) -> StoreResult<Vec<Entity>> {
        // '' sorts before every uuid text, so "no cursor" is just a cursor.
        let after = page.after.map(uuid_text).unwrap_or_default();
        let rows = sqlx::query(LIST_ENTITIES)
            .bind(entity_type)
            .bind(after)
            .bind(page.include_deleted)
            .bind(i64::from(page.limit))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| StoreError::backend("listing entities", e))?;
        rows.iter().map(entity_from_row).collect()
    }

    async fn dump_entities(&self) -> StoreResult<Vec<Entity>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entity_cols!(),
            " FROM entities ORDER BY entity_type, uuid"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| StoreError::backend("dumping entities", e))?;
        rows.iter().map(entity_from_row).collect()
    }

    async fn get_node(&self, id: Uuid) -> StoreResult<Option<NodeRecord>> {
        queries::get_node(&self.reader, id).await
    }

    async fn get_node_by_code(&self, code: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes WHERE code = ?"
        ))
        .bind(code)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| StoreError::backend("reading a node by code", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn get_node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes WHERE token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| StoreError::backend("reading a node by token", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Ordered by code.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            node_listed_cols!(),
            " FROM sync_nodes ORDER BY code"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| StoreError::backend("listing nodes", e))?;
        rows.iter().map(node_from_row).collect()
    }

    async fn count_queued_capped(&self, node: Uuid, cap: i64) -> StoreResult<i64> {
        let row = sqlx::query(COUNT_QUEUED)
            .bind(uuid_text(node))
            .bind(cap.max(0))
            .fetch_one(&self.reader)
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
        let row = sqlx::query(COUNT_REVISIONS_AFTER)
            .bind(rev)
            .bind(uuid_text(node))
            .bind(cap.max(0))
            .fetch_one(&self.reader)
            .await
            .map_err(|e| StoreError::backend("counting revisions", e))?;
        RowReader::new(&row, "sync_changes").i64("n")
    }

    async fn node_lags(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        let rows = sqlx::query(NODE_LAGS)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| StoreError::backend("counting the nodes' lags", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "sync_nodes");
                Ok((r.uuid("node_id")?, r.i64("lag")?))
            })
            .collect()
    }

    async fn count_held(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT count(*) AS n FROM held_changes")
            .fetch_one(&self.reader)
            .await
            .map_err(|e| StoreError::backend("counting held changes", e))?;
        RowReader::new(&row, "held_changes").i64("n")
    }

    async fn history(&self, entity_uuid: Uuid) -> StoreResult<Vec<HistoryRecord>> {
        // rowid breaks ties between versions that arrived in the same µs.
        let rows = sqlx::query(concat!(
            "SELECT ",
            history_cols!(),
            " FROM object_version_history WHERE entity_uuid = ? ORDER BY arrival_time, rowid"
        ))
        .bind(uuid_text(entity_uuid))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| StoreError::backend("reading entity history", e))?;
        rows.iter().map(history_from_row).collect()
    }

    /// The oldest `limit` records, oldest first (as the trait specifies).
    async fn audit(&self, entity_uuid: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows = match entity_uuid {
            Some(uuid) => {
                sqlx::query(concat!(
                    "SELECT ",
                    audit_cols!(),
                    " FROM conflict_audit WHERE entity_uuid = ? ORDER BY at, rowid LIMIT ? + 0"
                ))
                .bind(uuid_text(uuid))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    audit_cols!(),
                    " FROM conflict_audit ORDER BY at, rowid LIMIT ? + 0"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
            }
        }
        .map_err(|e| StoreError::backend("reading the conflict audit", e))?;
        rows.iter().map(audit_from_row).collect()
    }

    /// A write transaction of its own, committed on return.
    async fn record_security_event(&self, event: &SecurityEvent) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO security_events (at, kind, node_id, node_code, peer, detail)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(ts_text(event.at))
        .bind(event.kind.as_str())
        .bind(opt_uuid_text(event.node_id))
        .bind(event.node_code.as_deref())
        .bind(event.peer.as_deref())
        .bind(&event.detail)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::backend("recording a security event", e))?;
        tx.commit().await
    }

    async fn security_events(&self, query: &SecurityEventQuery) -> StoreResult<Vec<SecurityEvent>> {
        // NULL filters match everything; text timestamps are fixed-width,
        // so text order is time order.
        let rows = sqlx::query(
            "SELECT at, kind, node_id, node_code, peer, detail FROM security_events
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR node_id = ?3)
             ORDER BY at DESC, id DESC LIMIT ?4 + 0",
        )
        .bind(query.since.map(ts_text))
        .bind(query.kind.map(SecurityEventKind::as_str))
        .bind(opt_uuid_text(query.node_id))
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| StoreError::backend("reading security events", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "security_events");
                let kind = r.text("kind")?;
                Ok(SecurityEvent {
                    at: r.ts("at")?,
                    kind: SecurityEventKind::parse(kind).ok_or_else(|| {
                        StoreError::corrupt(format!(
                            "security_events.kind: {kind:?} is not a security event kind ({})",
                            SecurityEventKind::names()
                        ))
                    })?,
                    node_id: r.opt_uuid("node_id")?,
                    node_code: r.opt_text("node_code")?.map(str::to_owned),
                    peer: r.opt_text("peer")?.map(str::to_owned),
                    detail: r.text("detail")?.to_owned(),
                })
            })
            .collect()
    }

    async fn prune_security_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM security_events WHERE at < ?")
            .bind(ts_text(before))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::backend("pruning security events", e))?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Waits for connections in use (an open transaction) to be returned;
    /// a transaction dropped meanwhile is rolled back.
    async fn close(&self) {
        self.reader.close().await;
        self.writer.pool.close().await;
        self.writer.close_checkpoints().await;
    }
}
