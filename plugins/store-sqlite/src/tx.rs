//! [`SqliteTx`]: one write transaction on the writer connection (a
//! [`Member`] of a commit group, see `writer.rs`). Dropping it without
//! `commit` rolls its work back before the connection is used again.

use std::fmt::Write as _;

use hubsync_core::entity::{Entity, Operation, now_utc};
use hubsync_core::store::{
    AuditRecord, EntityRef, EntityStamp, HeldChange, HistoryRecord, Holding, NewRevision,
    NodeRecord, QueuedChange, Revision, ScopeFilter, ScopeRecord, ScopedPage, SourceReferences,
    StoreError, StoreResult, StoreTx,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use crate::codec::{
    RowReader, SharedTexts, json_text, opt_ts_text, opt_uuid_arg, opt_uuid_text, ts_text, uuid_arg,
    uuid_text,
};
use crate::queries::{self, queued_cols, queued_from_row, revision_from_row};
use crate::writer::Member;

macro_rules! held_cols {
    () => {
        "id, source_node, entity_type, uuid, change, waiting_type, waiting_for, packet_no, held_at"
    };
}

fn held_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<HeldChange> {
    let r = RowReader::new(row, "held_changes");
    Ok(HeldChange {
        id: r.i64("id")?,
        source_node: r.uuid("source_node")?,
        entity_type: r.text("entity_type")?.to_string(),
        uuid: r.uuid("uuid")?,
        change: r.json("change")?,
        waiting_type: r.text("waiting_type")?.to_string(),
        waiting_for: r.uuid("waiting_for")?,
        packet_no: r.i64("packet_no")?,
        held_at: r.ts("held_at")?,
    })
}

/// Rows per statement in the batch methods (7 values a row stays far below
/// SQLite's limit of 32,766 bound values).
const BATCH_ROWS: usize = 500;

/// A statement with its values bound, and what it does (for its error).
type Statement = (QueryBuilder<Sqlite>, &'static str);

/// Per [`BATCH_ROWS`] revisions: the DELETE of the log rows they replace,
/// then their multi-row INSERT. Each statement is built when the iterator
/// reaches it.
fn revision_statements<'q>(
    picked: &'q [&'q NewRevision],
    created_at: &'q str,
) -> impl Iterator<Item = Statement> + Send + 'q {
    picked.chunks(BATCH_ROWS).flat_map(move |chunk| {
        [false, true].into_iter().map(move |insert| {
            if insert {
                revisions_insert(chunk, created_at)
            } else {
                revisions_delete(chunk)
            }
        })
    })
}

fn revisions_delete<'q>(chunk: &'q [&'q NewRevision]) -> Statement {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "DELETE FROM sync_changes
         WHERE kind = 'log' AND (entity_type, entity_uuid, ifnull(node_id, '')) IN (VALUES ",
    );
    let mut texts = SharedTexts::default();
    for (i, r) in chunk.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(")
            .push_bind(texts.get(&r.entity_type))
            .push(", ")
            .push_bind(uuid_arg(r.entity_uuid))
            .push(", ")
            .push_bind(opt_uuid_arg(r.target).unwrap_or_else(|| texts.get("")))
            .push(")");
    }
    q.push(")");
    (q, "replacing the previous revisions")
}

fn revisions_insert<'q>(chunk: &'q [&'q NewRevision], created_at: &'q str) -> Statement {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO sync_changes
             (id, kind, node_id, entity_type, entity_uuid, operation, created_at, origin_node_id) ",
    );
    let mut texts = SharedTexts::default();
    q.push_values(chunk, |mut b, r| {
        b.push_bind(r.rev)
            .push("'log'")
            .push_bind(opt_uuid_arg(r.target))
            .push_bind(texts.get(&r.entity_type))
            .push_bind(uuid_arg(r.entity_uuid))
            .push_bind(texts.get(r.operation.as_str()))
            .push_bind(texts.get(created_at))
            .push_bind(opt_uuid_arg(r.origin));
    });
    (q, "appending revisions")
}

/// One multi-row upsert per [`BATCH_ROWS`] entities.
fn entity_statements<'q>(
    entities: &'q [&'q Entity],
) -> impl Iterator<Item = Statement> + Send + 'q {
    entities.chunks(BATCH_ROWS).map(|chunk| {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id) ",
        );
        let mut texts = SharedTexts::default();
        q.push_values(chunk, |mut b, e| {
            b.push_bind(texts.get(&e.entity_type))
                .push_bind(uuid_arg(e.uuid))
                .push_bind(ts_text(e.updated_at))
                .push_bind(e.is_deleted)
                .push_bind(json_text(&e.data))
                .push_bind(e.rev)
                .push_bind(opt_uuid_arg(e.origin));
        });
        q.push(
            " ON CONFLICT (entity_type, uuid) DO UPDATE SET
                 updated_at = excluded.updated_at,
                 is_deleted = excluded.is_deleted,
                 data = excluded.data,
                 rev = excluded.rev,
                 origin_node_id = excluded.origin_node_id",
        );
        (q, "writing entities")
    })
}

/// Runs `f`, which blocks on SQLite, telling a multi-threaded runtime so
/// (its other tasks move to another worker meanwhile).
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(crate) struct SqliteTx {
    tx: Member,
}

impl SqliteTx {
    pub(crate) fn new(tx: Member) -> Self {
        SqliteTx { tx }
    }

    /// Runs `statements` in order, binding the values of the next one while
    /// the connection's worker thread runs the current one. Binding a
    /// multi-row write (formatting uuids and timestamps, serializing
    /// entity data) is CPU work of the same order as SQLite's; done in
    /// turn, each waited for the other (docs/benchmarks.md, session 11).
    /// The statements still run one at a time, in order, on the one
    /// connection; the first error stops the rest.
    async fn run_pipelined(
        &mut self,
        mut statements: impl Iterator<Item = Statement> + Send,
    ) -> StoreResult<()> {
        let mut next = statements.next();
        while let Some((mut q, what)) = next {
            // `join` polls the execution first: its first poll hands the
            // statement to the worker thread, then the next one is built.
            let (done, following) =
                futures_util::future::join(q.build().execute(&mut *self.tx), async {
                    statements.next()
                })
                .await;
            done.map_err(|e| StoreError::backend(what, e))?;
            next = following;
        }
        Ok(())
    }

    /// [`REVISIONS_AFTER`]; with `own_above`, the node's own versions above
    /// it come without their data (`revisions_after_skipping_own`).
    async fn revisions(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        own_above: Option<i64>,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        let node = uuid_text(node);
        let rows = sqlx::query(REVISIONS_AFTER)
            .bind(after_rev)
            .bind(node.as_str())
            .bind(i64::from(limit))
            .bind(own_above.map(|_| node.as_str()))
            .bind(own_above.unwrap_or(0))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading revisions", e))?;
        rows.iter()
            .map(|r| revision_from_row(r, own_above.is_some()))
            .collect()
    }
}

// Every bound limit here is written `? + 0`, an expression, never a bare
// parameter: SQLite (3.51, as bundled) plans a limit that is a bare bound
// parameter as a constant, which marks the statement to be compiled again
// after every new binding, i.e. at every execution (`sqlite3ExprIsInteger`
// → `sqlite3VdbeSetVarmask`). That re-compilation was 8 % of a master's CPU
// with 500 scoped clients (docs/benchmarks.md, session 6). A test
// (`tests/plans.rs`) keeps bare bound limits out of this backend.

/// The log rows `node` must learn above a revision, each with its entity.
/// `id > ?` on the INTEGER PRIMARY KEY is a range scan of the table's own
/// b-tree in revision order (no sort, stops at LIMIT); the entity is one
/// primary-key lookup per row. LEFT JOIN so that a missing entity shows up
/// (as corruption) instead of silently shortening the page.
pub(crate) const REVISIONS_AFTER: &str = "
    SELECT c.id AS rev, c.node_id AS target, c.entity_type, c.entity_uuid, c.operation,
           c.origin_node_id, c.created_at,
           e.updated_at AS e_updated_at, e.is_deleted AS e_is_deleted,
           CASE WHEN c.node_id IS NULL AND e.origin_node_id = ?4 AND c.id > ?5
                THEN NULL ELSE e.data END AS e_data,
           e.rev AS e_rev, e.origin_node_id AS e_origin_node_id
    FROM sync_changes AS c
    LEFT JOIN entities AS e ON e.entity_type = c.entity_type AND e.uuid = c.entity_uuid
    WHERE c.kind = 'log' AND c.id > ?1 AND (c.node_id IS NULL OR c.node_id = ?2)
    ORDER BY c.id
    LIMIT ?3 + 0";

/// The size and last revision of a scoped node's window: the first `?3`
/// log rows above `?1` for every node or addressed to `?2`.
pub(crate) const SCOPED_WINDOW: &str = "
    SELECT COUNT(*) AS n, COALESCE(MAX(id), ?1) AS last FROM (
        SELECT id FROM sync_changes
        WHERE kind = 'log' AND id > ?1 AND (node_id IS NULL OR node_id = ?2)
        ORDER BY id
        LIMIT ?3 + 0)";

/// The candidates of a scoped node's window `(after, last]`
/// (`StoreTx::scoped_revisions_after`): the columns of
/// [`REVISIONS_AFTER`], the cheap tests first (addressed, own, the scope's
/// types and fields), then the holdings' primary key and
/// `entity_refs_target`. A log row whose entity is missing is kept, so
/// that it shows up as corruption.
pub(crate) fn scoped_candidates(
    node: &str,
    after: i64,
    last: i64,
    limit: u32,
    filter: &ScopeFilter,
) -> QueryBuilder<Sqlite> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT c.id AS rev, c.node_id AS target, c.entity_type, c.entity_uuid, c.operation,
                c.origin_node_id, c.created_at,
                e.updated_at AS e_updated_at, e.is_deleted AS e_is_deleted, e.data AS e_data,
                e.rev AS e_rev, e.origin_node_id AS e_origin_node_id
         FROM sync_changes AS c
         LEFT JOIN entities AS e ON e.entity_type = c.entity_type AND e.uuid = c.entity_uuid
         WHERE c.kind = 'log' AND c.id > ",
    );
    q.push_bind(after)
        .push(" AND c.id <= ")
        .push_bind(last)
        .push(" AND (c.node_id IS NULL OR c.node_id = ")
        .push_bind(node)
        .push(") AND (c.node_id IS NOT NULL OR e.uuid IS NULL OR e.origin_node_id = ")
        .push_bind(node);
    for (ty, fields) in &filter.types {
        q.push(" OR (c.entity_type = ").push_bind(ty.as_str());
        for (field, values) in fields.iter().flatten() {
            let list = serde_json::Value::from(values.clone()).to_string();
            if field == "uuid" {
                q.push(" AND c.entity_uuid IN (SELECT value FROM json_each(")
                    .push_bind(list)
                    .push("))");
            } else if !field.contains(['"', '\\']) {
                push_text_prefilter(&mut q, values);
                q.push(" AND json_extract(e.data, ")
                    .push_bind(format!("$.\"{field}\""))
                    .push(") IN (SELECT value FROM json_each(")
                    .push_bind(list)
                    .push("))");
            }
            // Otherwise the field is left out: a wider rule.
        }
        q.push(")");
    }
    q.push(
        " OR EXISTS (SELECT 1 FROM node_holdings AS h
             WHERE h.node_id = ",
    )
    .push_bind(node)
    .push(" AND h.entity_uuid = c.entity_uuid AND h.entity_type = c.entity_type)");
    if filter.with_references {
        q.push(
            " OR EXISTS (SELECT 1 FROM entity_keys AS tk
                 CROSS JOIN entity_refs AS r ON r.target_id = tk.id
                 CROSS JOIN entity_keys AS sk ON sk.id = r.source_id
                 CROSS JOIN node_holdings AS h ON h.node_id = ",
        )
        .push_bind(node)
        .push(
            " AND h.entity_uuid = sk.uuid AND h.entity_type = sk.entity_type
                   AND h.evicted_in IS NULL
               WHERE tk.uuid = c.entity_uuid AND tk.entity_type = c.entity_type)",
        );
    }
    q.push(") ORDER BY c.id LIMIT ")
        .push_bind(i64::from(limit))
        .push(" + 0");
    q
}

/// Values a scope rule lists beyond which the text prefilter is left out
/// (one `instr` per value per row costs more than the parse it saves).
const PREFILTER_VALUES: usize = 16;

/// ` AND (instr(e.data, '"v1"') > 0 OR …)`: a row whose JSON text does not
/// contain any of `values` as a JSON string cannot hold one in a field, so
/// the far dearer `json_extract` (a parse of the whole document) is skipped
/// for it. Exact because the store writes every document with serde_json
/// (`json_text`), which writes a string with no `"`, `\` or control
/// character as itself between quotes; a value with one of those, or a
/// longer list, gets no prefilter (nothing is lost, only time). On the
/// 500-client scoped benchmark's log this took the candidate scan from
/// ~1.6 to ~1.1 µs a row (docs/benchmarks.md, session 8).
fn push_text_prefilter(q: &mut QueryBuilder<Sqlite>, values: &[String]) {
    let plain = |v: &String| !v.contains(|c: char| c == '"' || c == '\\' || c.is_control());
    if values.is_empty() || values.len() > PREFILTER_VALUES || !values.iter().all(plain) {
        return;
    }
    q.push(" AND (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        q.push("instr(e.data, ")
            .push_bind(format!("\"{v}\""))
            .push(") > 0");
    }
    q.push(")");
}

// Statements whose plans matter, named so that tests can EXPLAIN them.
pub(crate) const QUEUE_FIND_UNSENT: &str = "SELECT id, operation FROM sync_changes
             WHERE kind = 'queue' AND packet_no IS NULL
               AND node_id = ? AND entity_type = ? AND entity_uuid = ?";

pub(crate) const HAS_QUEUED: &str = "SELECT 1 FROM sync_changes
             WHERE kind = 'queue' AND node_id = ? AND entity_type = ? AND entity_uuid = ?
             LIMIT 1";

pub(crate) const DELETE_ACKNOWLEDGED: &str = "DELETE FROM sync_changes
             WHERE kind = 'queue' AND node_id = ? AND packet_no IS NOT NULL AND packet_no <= ?";

pub(crate) const LOG_DELETE_PREVIOUS: &str = "DELETE FROM sync_changes
             WHERE kind = 'log' AND entity_type = ? AND entity_uuid = ? AND ifnull(node_id, '') = ?";

/// The rows by their ids (`+node_id`: without the `+`, SQLite walks every
/// queue row of the node in `sync_changes_queue_order` testing each id
/// against the list, which made a push of a million queued rows quadratic).
pub(crate) const ASSIGN_PACKET: &str = "UPDATE sync_changes SET packet_no = ?
             WHERE kind = 'queue' AND +node_id = ? AND id IN (SELECT value FROM json_each(?))";

pub(crate) const UNSENT_CHANGES: &str = concat!(
    "SELECT ",
    queued_cols!(),
    " FROM sync_changes
      WHERE kind = 'queue' AND node_id = ? AND packet_no IS NULL
      ORDER BY id LIMIT ? + 0"
);

pub(crate) const UNSENT_CHANGE_FOR: &str = concat!(
    "SELECT ",
    queued_cols!(),
    " FROM sync_changes
      WHERE kind = 'queue' AND packet_no IS NULL
        AND node_id = ? AND entity_type = ? AND entity_uuid = ?"
);

pub(crate) const CHANGES_IN_PACKET: &str = concat!(
    "SELECT ",
    queued_cols!(),
    " FROM sync_changes
      WHERE kind = 'queue' AND node_id = ? AND packet_no = ?
      ORDER BY id"
);

#[async_trait::async_trait]
impl StoreTx for SqliteTx {
    async fn get_meta(&mut self, key: &str) -> StoreResult<Option<String>> {
        queries::get_meta(&mut *self.tx, key).await
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO hubsync_meta (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("writing metadata", e))?;
        Ok(())
    }

    async fn get_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>> {
        queries::get_entity(&mut *self.tx, entity_type, uuid).await
    }

    async fn put_entity(&mut self, entity: &Entity) -> StoreResult<()> {
        // An upsert rather than INSERT OR REPLACE: REPLACE deletes and
        // re-inserts, which moves the row and fires delete semantics.
        sqlx::query(
            "INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (entity_type, uuid) DO UPDATE SET
                 updated_at = excluded.updated_at,
                 is_deleted = excluded.is_deleted,
                 data = excluded.data,
                 rev = excluded.rev,
                 origin_node_id = excluded.origin_node_id",
        )
        .bind(entity.entity_type.as_str())
        .bind(uuid_text(entity.uuid))
        .bind(ts_text(entity.updated_at))
        .bind(entity.is_deleted)
        .bind(json_text(&entity.data))
        .bind(entity.rev)
        .bind(opt_uuid_text(entity.origin))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("writing an entity", e))?;
        Ok(())
    }

    async fn put_version(&mut self, entity: &Entity) -> StoreResult<()> {
        let rev = entity.rev.ok_or_else(|| {
            StoreError::corrupt(format!(
                "a version of {} {} without a revision",
                entity.entity_type, entity.uuid
            ))
        })?;
        sqlx::query(
            "INSERT INTO entity_versions (entity_type, uuid, rev, updated_at, is_deleted, data, origin_node_id)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (entity_type, uuid, rev) DO NOTHING",
        )
        .bind(entity.entity_type.as_str())
        .bind(uuid_text(entity.uuid))
        .bind(rev)
        .bind(ts_text(entity.updated_at))
        .bind(entity.is_deleted)
        .bind(json_text(&entity.data))
        .bind(opt_uuid_text(entity.origin))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("keeping an entity version", e))?;
        Ok(())
    }

    async fn get_version(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        rev: i64,
    ) -> StoreResult<Option<Entity>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            crate::queries::entity_cols!(),
            " FROM entity_versions WHERE entity_type = ? AND uuid = ? AND rev = ?"
        ))
        .bind(entity_type)
        .bind(uuid_text(uuid))
        .bind(rev)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading an entity version", e))?;
        row.as_ref()
            .map(crate::queries::entity_from_row)
            .transpose()
    }

    /// A coalesced row keeps its id (place in the queue) and its
    /// `created_at` (when the change was first registered).
    async fn queue_change(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
    ) -> StoreResult<()> {
        let node = uuid_text(node);
        let uuid = uuid_text(uuid);
        let unsent = sqlx::query(QUEUE_FIND_UNSENT)
            .bind(node.as_str())
            .bind(entity_type)
            .bind(uuid.as_str())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading the change queue", e))?;

        match unsent {
            Some(row) => {
                let r = RowReader::new(&row, "sync_changes");
                let (id, queued) = (r.i64("id")?, r.operation("operation")?);
                let coalesced = Operation::coalesce(queued, op);
                if coalesced != queued {
                    sqlx::query("UPDATE sync_changes SET operation = ? WHERE id = ?")
                        .bind(coalesced.as_str())
                        .bind(id)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(|e| StoreError::backend("updating a queued change", e))?;
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, created_at)
                     VALUES ('queue', ?, ?, ?, ?, ?)",
                )
                .bind(node)
                .bind(entity_type)
                .bind(uuid)
                .bind(op.as_str())
                .bind(ts_text(now_utc()))
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("queueing a change", e))?;
            }
        }
        Ok(())
    }

    async fn has_queued(&mut self, node: Uuid, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        let row = sqlx::query(HAS_QUEUED)
            .bind(uuid_text(node))
            .bind(entity_type)
            .bind(uuid_text(uuid))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading the change queue", e))?;
        Ok(row.is_some())
    }

    async fn unsent_changes(&mut self, node: Uuid, limit: u32) -> StoreResult<Vec<QueuedChange>> {
        let rows = sqlx::query(UNSENT_CHANGES)
            .bind(uuid_text(node))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading unsent changes", e))?;
        rows.iter().map(queued_from_row).collect()
    }

    async fn unsent_change_for(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<QueuedChange>> {
        let row = sqlx::query(UNSENT_CHANGE_FOR)
            .bind(uuid_text(node))
            .bind(entity_type)
            .bind(uuid_text(uuid))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading the change queue", e))?;
        row.as_ref().map(queued_from_row).transpose()
    }

    async fn changes_in_packet(
        &mut self,
        node: Uuid,
        packet_no: i64,
    ) -> StoreResult<Vec<QueuedChange>> {
        let rows = sqlx::query(CHANGES_IN_PACKET)
            .bind(uuid_text(node))
            .bind(packet_no)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading a packet's changes", e))?;
        rows.iter().map(queued_from_row).collect()
    }

    /// One statement for the whole batch (ids passed as a JSON array). Every
    /// id must be a queue row of `node`: anything else means the caller's
    /// view of the queue and the stored queue disagree, reported as Corrupt
    /// rather than silently sending a packet that does not match its rows.
    async fn assign_packet(&mut self, node: Uuid, ids: &[i64], packet_no: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut json = String::with_capacity(2 + sorted.len() * 8);
        json.push('[');
        for (i, id) in sorted.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let _ = write!(json, "{id}"); // writing to a String cannot fail
        }
        json.push(']');

        let done = sqlx::query(ASSIGN_PACKET)
            .bind(packet_no)
            .bind(uuid_text(node))
            .bind(json)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("assigning changes to a packet", e))?;
        if done.rows_affected() != sorted.len() as u64 {
            return Err(StoreError::corrupt(format!(
                "sync_changes: assigning {} queue rows to packet {packet_no} for node {node} matched only {}",
                sorted.len(),
                done.rows_affected()
            )));
        }
        Ok(())
    }

    async fn delete_acknowledged(&mut self, node: Uuid, packet_no: i64) -> StoreResult<u64> {
        let done = sqlx::query(DELETE_ACKNOWLEDGED)
            .bind(uuid_text(node))
            .bind(packet_no)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("deleting acknowledged changes", e))?;
        Ok(done.rows_affected())
    }

    async fn append_revision(
        &mut self,
        target: Option<Uuid>,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
        origin: Option<Uuid>,
    ) -> StoreResult<i64> {
        let target = opt_uuid_text(target);
        let uuid = uuid_text(uuid);
        // `ifnull(node_id, '')` is the key of sync_changes_log_entity, so
        // that a NULL target replaces a NULL target.
        sqlx::query(LOG_DELETE_PREVIOUS)
            .bind(entity_type)
            .bind(uuid.as_str())
            .bind(target.as_deref().unwrap_or(""))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("replacing the previous revision", e))?;
        let done = sqlx::query(
            "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, created_at, origin_node_id)
             VALUES ('log', ?, ?, ?, ?, ?, ?)",
        )
        .bind(target)
        .bind(entity_type)
        .bind(uuid)
        .bind(op.as_str())
        .bind(ts_text(now_utc()))
        .bind(opt_uuid_text(origin))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("appending a revision", e))?;
        Ok(done.last_insert_rowid())
    }

    async fn revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        self.revisions(node, after_rev, limit, None).await
    }

    async fn revisions_after_skipping_own(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        own_above: i64,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        self.revisions(node, after_rev, limit, Some(own_above))
            .await
    }

    /// Two statements: the window's last revision and size
    /// ([`SCOPED_WINDOW`], a range scan of the log's own b-tree), then the
    /// candidates in it ([`scoped_candidates`]); a row that is not a
    /// candidate costs column tests and index probes, never its data.
    async fn scoped_revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        window: u32,
        filter: &ScopeFilter,
    ) -> StoreResult<ScopedPage> {
        let node_text = uuid_text(node);
        let row = sqlx::query(SCOPED_WINDOW)
            .bind(after_rev)
            .bind(node_text.as_str())
            .bind(i64::from(window.max(1)))
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading a scoped node's log window", e))?;
        let r = RowReader::new(&row, "sync_changes");
        let (scanned, last) = (r.i64("n")?, r.i64("last")?);
        let mut q = scoped_candidates(&node_text, after_rev, last, limit, filter);
        let rows = q
            .build()
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading a scoped node's revisions", e))?;
        let rows = rows
            .iter()
            .map(|r| revision_from_row(r, false))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(ScopedPage::from_window(
            rows,
            limit,
            window.max(1),
            scanned,
            last,
        ))
    }

    /// SQLite has a single writer, so the row is already "locked": this
    /// transaction holds the database write lock until it ends.
    async fn get_node(&mut self, id: Uuid) -> StoreResult<Option<NodeRecord>> {
        queries::get_node(&mut *self.tx, id).await
    }

    async fn put_node(&mut self, node: &NodeRecord) -> StoreResult<()> {
        // An upsert keyed by id: INSERT OR REPLACE would silently delete
        // another node that has the same code; this fails instead.
        sqlx::query(
            "INSERT INTO sync_nodes (id, code, name, role, is_self, token_hash, revoked, created_at,
                 last_sync_in, last_sync_out, received_packet_no, sent_packet_no, out_packet_no,
                 acked_rev, out_up_to_rev, prev_out_up_to_rev, last_results, prev_results,
                 schema_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET
                 code = excluded.code,
                 name = excluded.name,
                 role = excluded.role,
                 is_self = excluded.is_self,
                 token_hash = excluded.token_hash,
                 revoked = excluded.revoked,
                 created_at = excluded.created_at,
                 last_sync_in = excluded.last_sync_in,
                 last_sync_out = excluded.last_sync_out,
                 received_packet_no = excluded.received_packet_no,
                 sent_packet_no = excluded.sent_packet_no,
                 out_packet_no = excluded.out_packet_no,
                 acked_rev = excluded.acked_rev,
                 out_up_to_rev = excluded.out_up_to_rev,
                 prev_out_up_to_rev = excluded.prev_out_up_to_rev,
                 last_results = excluded.last_results,
                 prev_results = excluded.prev_results,
                 schema_version = excluded.schema_version",
        )
        .bind(uuid_text(node.id))
        .bind(node.code.as_str())
        .bind(node.name.as_str())
        .bind(node.role.as_str())
        .bind(node.is_self)
        .bind(node.token_hash.as_deref())
        .bind(node.revoked)
        .bind(ts_text(node.created_at))
        .bind(opt_ts_text(node.last_sync_in))
        .bind(opt_ts_text(node.last_sync_out))
        .bind(node.received_packet_no)
        .bind(node.sent_packet_no)
        .bind(node.out_packet_no)
        .bind(node.acked_rev)
        .bind(node.out_up_to_rev)
        .bind(node.prev_out_up_to_rev)
        .bind(node.last_results.as_deref())
        .bind(node.prev_results.as_deref())
        .bind(node.schema_version.as_deref())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("writing a node", e))?;
        Ok(())
    }

    async fn add_history(&mut self, record: &HistoryRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO object_version_history (id, entity_uuid, entity_type, source_node_id,
                 arrival_time, serialized_data, conflict_resolution, audit_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid_text(record.id))
        .bind(uuid_text(record.entity_uuid))
        .bind(record.entity_type.as_str())
        .bind(opt_uuid_text(record.source_node_id))
        .bind(ts_text(record.arrival_time))
        .bind(json_text(&record.serialized_data))
        .bind(record.conflict_resolution.as_str())
        .bind(opt_uuid_text(record.audit_id))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording an entity version", e))?;
        Ok(())
    }

    async fn add_audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO conflict_audit (id, at, entity_type, entity_uuid, node_id, packet_no,
                 strategy, outcome, master_rev, base_rev, result_rev, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid_text(record.id))
        .bind(ts_text(record.at))
        .bind(record.entity_type.as_str())
        .bind(uuid_text(record.entity_uuid))
        .bind(uuid_text(record.node_id))
        .bind(record.packet_no)
        .bind(record.strategy.as_str())
        .bind(record.outcome.as_str())
        .bind(record.master_rev)
        .bind(record.base_rev)
        .bind(record.result_rev)
        .bind(record.detail.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording a conflict decision", e))?;
        Ok(())
    }

    async fn set_references(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: &[EntityRef],
    ) -> StoreResult<()> {
        let item = ((entity_type.to_owned(), uuid), refs.to_vec());
        self.set_references_many(std::slice::from_ref(&item)).await
    }

    async fn referrers(&mut self, target_type: &str, target: Uuid) -> StoreResult<Vec<EntityRef>> {
        let rows = sqlx::query(
            "SELECT s.entity_type AS source_type, s.uuid AS source_uuid, p.pointer,
                    t.entity_type AS target_type, t.uuid AS target_uuid
             FROM entity_keys AS t
             JOIN entity_refs AS r ON r.target_id = t.id
             JOIN entity_keys AS s ON s.id = r.source_id
             JOIN ref_pointers AS p ON p.id = r.pointer_id
             WHERE t.uuid = ? AND t.entity_type = ?
             ORDER BY s.entity_type, s.uuid, p.pointer",
        )
        .bind(uuid_text(target))
        .bind(target_type)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("finding an entity's referrers", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "entity_refs");
                Ok(EntityRef {
                    source_type: r.text("source_type")?.to_string(),
                    source_uuid: r.uuid("source_uuid")?,
                    pointer: r.text("pointer")?.to_string(),
                    target_type: r.text("target_type")?.to_string(),
                    target_uuid: r.uuid("target_uuid")?,
                })
            })
            .collect()
    }

    async fn hold_change(&mut self, held: &HeldChange) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO held_changes (source_node, entity_type, uuid, change, waiting_type,
                 waiting_for, packet_no, held_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (source_node, entity_type, uuid) DO UPDATE SET
                 change = excluded.change,
                 waiting_type = excluded.waiting_type,
                 waiting_for = excluded.waiting_for,
                 packet_no = excluded.packet_no,
                 held_at = excluded.held_at",
        )
        .bind(uuid_text(held.source_node))
        .bind(held.entity_type.as_str())
        .bind(uuid_text(held.uuid))
        .bind(json_text(&held.change))
        .bind(held.waiting_type.as_str())
        .bind(uuid_text(held.waiting_for))
        .bind(held.packet_no)
        .bind(ts_text(held.held_at))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("holding a change", e))?;
        Ok(())
    }

    async fn held_waiting_for(&mut self, target: Uuid) -> StoreResult<Vec<HeldChange>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            held_cols!(),
            " FROM held_changes WHERE waiting_for = ? ORDER BY id"
        ))
        .bind(uuid_text(target))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading held changes", e))?;
        rows.iter().map(held_from_row).collect()
    }

    async fn held_before(
        &mut self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<Vec<HeldChange>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            held_cols!(),
            " FROM held_changes WHERE held_at < ? ORDER BY held_at, id LIMIT ? + 0"
        ))
        .bind(ts_text(before))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading held changes", e))?;
        rows.iter().map(held_from_row).collect()
    }

    async fn release_held(&mut self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM held_changes WHERE id = ?")
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("releasing a held change", e))?;
        Ok(())
    }

    async fn get_scope(&mut self, node: Uuid) -> StoreResult<ScopeRecord> {
        let row = sqlx::query(
            "SELECT scope, has_pending, pending, resend_own_to FROM node_scopes WHERE node_id = ?",
        )
        .bind(uuid_text(node))
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading a node's scope", e))?;
        let Some(row) = row else {
            return Ok(ScopeRecord::default());
        };
        let r = RowReader::new(&row, "node_scopes");
        Ok(ScopeRecord {
            scope: r.opt_json("scope")?,
            pending: if r.bool("has_pending")? {
                Some(r.opt_json("pending")?)
            } else {
                None
            },
            resend_own_to: r.i64("resend_own_to")?,
        })
    }

    async fn put_scope(&mut self, node: Uuid, scope: &ScopeRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO node_scopes (node_id, scope, has_pending, pending, resend_own_to)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (node_id) DO UPDATE SET scope = excluded.scope,
                 has_pending = excluded.has_pending, pending = excluded.pending,
                 resend_own_to = excluded.resend_own_to",
        )
        .bind(uuid_text(node))
        .bind(scope.scope.as_ref().map(json_text))
        .bind(scope.pending.is_some())
        .bind(
            scope
                .pending
                .as_ref()
                .and_then(|p| p.as_ref())
                .map(json_text),
        )
        .bind(scope.resend_own_to)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("storing a node's scope", e))?;
        Ok(())
    }

    async fn holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<Holding>> {
        let row = sqlx::query(
            "SELECT since_packet, evicted_in FROM node_holdings
             WHERE node_id = ? AND entity_uuid = ? AND entity_type = ?",
        )
        .bind(uuid_text(node))
        .bind(uuid_text(uuid))
        .bind(entity_type)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading what a node holds", e))?;
        row.map(|row| {
            let r = RowReader::new(&row, "node_holdings");
            Ok(Holding {
                since_packet: r.i64("since_packet")?,
                evicted_in: r.opt_i64("evicted_in")?,
            })
        })
        .transpose()
    }

    async fn put_holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        holding: Holding,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO node_holdings (node_id, entity_type, entity_uuid, since_packet, evicted_in)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (node_id, entity_uuid, entity_type) DO UPDATE SET
                 since_packet = excluded.since_packet, evicted_in = excluded.evicted_in",
        )
        .bind(uuid_text(node))
        .bind(entity_type)
        .bind(uuid_text(uuid))
        .bind(holding.since_packet)
        .bind(holding.evicted_in)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording what a node holds", e))?;
        Ok(())
    }

    async fn referenced_by_holding(
        &mut self,
        node: Uuid,
        target_type: &str,
        target: Uuid,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM entity_keys t
             CROSS JOIN entity_refs r ON r.target_id = t.id
             CROSS JOIN entity_keys s ON s.id = r.source_id
             CROSS JOIN node_holdings h ON h.node_id = ? AND h.entity_uuid = s.uuid
                  AND h.entity_type = s.entity_type AND h.evicted_in IS NULL
             WHERE t.uuid = ? AND t.entity_type = ? LIMIT 1",
        )
        .bind(uuid_text(node))
        .bind(uuid_text(target))
        .bind(target_type)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("checking what refers to a held entity", e))?;
        Ok(row.is_some())
    }

    /// One SELECT per [`BATCH_ROWS`] keys.
    async fn holdings(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<((String, Uuid), Holding)>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(BATCH_ROWS) {
            // From the key list into the primary key (CROSS JOIN fixes the
            // order: an IN list after `node_id = ?` is not used for the
            // search, and a node may hold the whole dataset).
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT h.entity_type, h.entity_uuid, h.since_packet, h.evicted_in FROM (VALUES ",
            );
            push_keys(&mut q, chunk.iter().map(|(t, u)| (t.as_str(), *u)));
            q.push(
                " AS k CROSS JOIN node_holdings h
                 ON h.node_id = ",
            )
            .push_bind(uuid_text(node))
            .push(" AND h.entity_uuid = k.column2 AND h.entity_type = k.column1");
            let rows = q
                .build()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("reading what a node holds", e))?;
            for row in &rows {
                let r = RowReader::new(row, "node_holdings");
                out.push((
                    (r.text("entity_type")?.to_owned(), r.uuid("entity_uuid")?),
                    Holding {
                        since_packet: r.i64("since_packet")?,
                        evicted_in: r.opt_i64("evicted_in")?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// One SELECT per [`BATCH_ROWS`] targets.
    async fn referenced_by_holdings(
        &mut self,
        node: Uuid,
        targets: &[(String, Uuid)],
    ) -> StoreResult<Vec<(String, Uuid)>> {
        let mut out = Vec::new();
        for chunk in targets.chunks(BATCH_ROWS) {
            // Key list → entity_keys → entity_refs_target → the source's
            // key → node_holdings' primary key.
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT DISTINCT t.entity_type AS target_type, t.uuid AS target_uuid FROM (VALUES ",
            );
            push_keys(&mut q, chunk.iter().map(|(t, u)| (t.as_str(), *u)));
            q.push(
                " AS k CROSS JOIN entity_keys t
                   ON t.uuid = k.column2 AND t.entity_type = k.column1
                 CROSS JOIN entity_refs r ON r.target_id = t.id
                 CROSS JOIN entity_keys s ON s.id = r.source_id
                 CROSS JOIN node_holdings h ON h.node_id = ",
            )
            .push_bind(uuid_text(node))
            .push(
                " AND h.entity_uuid = s.uuid AND h.entity_type = s.entity_type
                  AND h.evicted_in IS NULL",
            );
            let rows = q
                .build()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("checking what refers to held entities", e))?;
            for row in &rows {
                let r = RowReader::new(row, "entity_refs");
                out.push((r.text("target_type")?.to_owned(), r.uuid("target_uuid")?));
            }
        }
        Ok(out)
    }

    async fn log_head(&mut self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS head FROM sync_changes")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading the change log's head", e))?;
        RowReader::new(&row, "sync_changes").i64("head")
    }

    async fn seed_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "INSERT INTO node_holdings (node_id, entity_type, entity_uuid, since_packet, evicted_in)
             SELECT ?, entity_type, uuid, 0, NULL FROM entities WHERE true
             ON CONFLICT (node_id, entity_uuid, entity_type) DO NOTHING",
        )
        .bind(uuid_text(node))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording what a node may hold", e))?;
        Ok(done.rows_affected())
    }

    async fn clear_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM node_holdings WHERE node_id = ?")
            .bind(uuid_text(node))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("forgetting what a node holds", e))?;
        Ok(done.rows_affected())
    }

    async fn purge_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM entities WHERE entity_type = ? AND uuid = ?")
            .bind(entity_type)
            .bind(uuid_text(uuid))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("removing an evicted entity", e))?;
        sqlx::query(
            "DELETE FROM entity_refs WHERE source_id =
                 (SELECT id FROM entity_keys WHERE uuid = ? AND entity_type = ?)",
        )
        .bind(uuid_text(uuid))
        .bind(entity_type)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("removing an evicted entity's references", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await
    }

    /// One `SELECT … WHERE (entity_type, uuid) IN (VALUES …)` per
    /// [`BATCH_ROWS`] keys: each key is a primary-key lookup, and the whole
    /// batch one round trip to the connection's worker thread instead of
    /// one per key.
    async fn get_entities(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<Entity>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT ",
                crate::queries::entity_cols!(),
                " FROM entities WHERE (entity_type, uuid) IN (VALUES "
            ));
            push_keys(&mut q, chunk.iter().map(|(t, u)| (t.as_str(), *u)));
            let rows = q
                .build()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("reading entities", e))?;
            for row in &rows {
                found.push(crate::queries::entity_from_row(row)?);
            }
        }
        Ok(found)
    }

    /// One multi-row upsert per [`BATCH_ROWS`] entities (a key given twice
    /// keeps its last version: SQLite applies the rows in order).
    async fn put_entities(&mut self, entities: &[&Entity]) -> StoreResult<()> {
        self.write_rows(&[], entities, &[]).await
    }

    /// Through the raw handle (raw.rs): each key and pointer looked up
    /// once, one prepared single-row INSERT per reference.
    async fn set_references_many(&mut self, items: &[SourceReferences]) -> StoreResult<()> {
        self.write_rows(&[], &[], items).await
    }

    /// The revisions and the entities in one pipeline
    /// ([`SqliteTx::run_pipelined`]), so that the values of the entities are
    /// bound while the revisions are written; then the references, on this
    /// thread through the connection's raw handle (raw.rs: prepared
    /// single-row statements, each key looked up once, ~25 % less time
    /// than the multi-row statements that found every row's keys in SQL).
    async fn write_rows(
        &mut self,
        revisions: &[NewRevision],
        entities: &[&Entity],
        references: &[SourceReferences],
    ) -> StoreResult<()> {
        let picked = NewRevision::latest_per_key(revisions);
        let created_at = ts_text(now_utc());
        self.run_pipelined(
            revision_statements(&picked, &created_at).chain(entity_statements(entities)),
        )
        .await?;
        if references.is_empty() {
            return Ok(());
        }
        // On this thread, through the raw handle (raw.rs).
        let mut handle = self
            .tx
            .lock_handle()
            .await
            .map_err(|e| StoreError::backend("locking the writer connection", e))?;
        let db = handle.as_raw_handle();
        run_blocking(|| crate::raw::write_references(db, references))
    }
    /// One primary-key lookup per key, [`BATCH_ROWS`] keys a statement, the
    /// data column not read.
    async fn entity_stamps(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<EntityStamp>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT entity_type, uuid, updated_at, rev FROM entities
                 WHERE (entity_type, uuid) IN (VALUES ",
            );
            push_keys(&mut q, chunk.iter().map(|(t, u)| (t.as_str(), *u)));
            let rows = q
                .build()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("reading entity stamps", e))?;
            for row in &rows {
                let r = RowReader::new(row, "entities");
                found.push(EntityStamp {
                    entity_type: r.text("entity_type")?.to_owned(),
                    uuid: r.uuid("uuid")?,
                    updated_at: r.ts("updated_at")?,
                    rev: r.opt_i64("rev")?,
                });
            }
        }
        Ok(found)
    }

    /// One UPDATE … FROM (VALUES …) per [`BATCH_ROWS`] entities.
    async fn raise_revs(&mut self, items: &[(String, Uuid, i64)]) -> StoreResult<()> {
        let rows = EntityStamp::highest_per_entity(items);
        for chunk in rows.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE entities SET rev = v.column3 FROM (VALUES ");
            for (i, (t, u, rev)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(")
                    .push_bind(*t)
                    .push(", ")
                    .push_bind(uuid_text(*u))
                    .push(", ")
                    .push_bind(*rev)
                    .push(")");
            }
            q.push(
                ") AS v WHERE entities.entity_type = v.column1 AND entities.uuid = v.column2
                   AND (entities.rev IS NULL OR entities.rev < v.column3)",
            );
            q.build()
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("recording the master's revisions", e))?;
        }
        Ok(())
    }

    /// Moves the table's AUTOINCREMENT high-water mark (`sqlite_sequence`)
    /// up by `n`: the numbers below it are never handed out again, by
    /// SQLite or by this method, whether they are used or not.
    async fn reserve_revisions(&mut self, n: usize) -> StoreResult<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(n)
            .map_err(|_| StoreError::corrupt("too many revision numbers asked for at once"))?;
        let err = |e| StoreError::backend("reserving revision numbers", e);
        let top: Option<i64> = sqlx::query_scalar(
            "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'sync_changes' RETURNING seq",
        )
        .bind(n)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(err)?;
        let top = match top {
            Some(top) => top,
            // Nothing was ever inserted into sync_changes.
            None => sqlx::query_scalar(
                "INSERT INTO sqlite_sequence (name, seq)
                 SELECT 'sync_changes', coalesce(max(id), 0) + ? FROM sync_changes
                 RETURNING seq",
            )
            .bind(n)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(err)?,
        };
        Ok((top - n + 1..=top).collect())
    }

    /// One DELETE of the previous rows and one multi-row INSERT per
    /// [`BATCH_ROWS`] revisions.
    async fn append_revisions(&mut self, revisions: &[NewRevision]) -> StoreResult<()> {
        self.write_rows(revisions, &[], &[]).await
    }

    async fn queued_rows(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<QueuedChange>> {
        let node = uuid_text(node);
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT ",
                queued_cols!(),
                " FROM sync_changes WHERE kind = 'queue' AND node_id = "
            ));
            q.push_bind(node.as_str())
                .push(" AND (entity_type, entity_uuid) IN (VALUES ");
            push_keys(&mut q, chunk.iter().map(|(t, u)| (t.as_str(), *u)));
            let rows = q
                .build()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("reading the change queue", e))?;
            for row in &rows {
                found.push(queued_from_row(row)?);
            }
        }
        found.sort_by_key(|r| r.id);
        found.dedup_by_key(|r| r.id);
        Ok(found)
    }

    /// One multi-row INSERT per [`BATCH_ROWS`] new rows and one UPDATE per
    /// [`BATCH_ROWS`] changed ones.
    async fn write_queue(
        &mut self,
        node: Uuid,
        inserts: &[(String, Uuid, Operation)],
        updates: &[(i64, Operation)],
    ) -> StoreResult<()> {
        let node = uuid_text(node);
        let created_at = ts_text(now_utc());
        for chunk in inserts.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, created_at) ",
            );
            q.push_values(chunk, |mut b, (t, u, op)| {
                b.push_bind("queue")
                    .push_bind(node.as_str())
                    .push_bind(t.as_str())
                    .push_bind(uuid_text(*u))
                    .push_bind(op.as_str())
                    .push_bind(created_at.as_str());
            });
            q.build()
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("queueing changes", e))?;
        }
        for chunk in updates.chunks(BATCH_ROWS) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE sync_changes SET operation = CASE id");
            for (id, op) in chunk {
                q.push(" WHEN ")
                    .push_bind(*id)
                    .push(" THEN ")
                    .push_bind(op.as_str());
            }
            q.push(" END WHERE kind = 'queue' AND node_id = ")
                .push_bind(node.as_str())
                .push(" AND id IN (");
            for (i, (id, _)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push_bind(*id);
            }
            q.push(")");
            let done = q
                .build()
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("updating queued changes", e))?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(StoreError::corrupt(format!(
                    "{} of {} queued changes to update are not queue rows of node {node}",
                    chunk.len() as u64 - done.rows_affected(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}

/// Appends keys as the rows of a `VALUES` list, `(?, ?), (?, ?)`, and the
/// `)` that closes the `IN (VALUES ` the statement ends with.
fn push_keys<'a>(q: &mut QueryBuilder<Sqlite>, keys: impl IntoIterator<Item = (&'a str, Uuid)>) {
    let mut texts = SharedTexts::default();
    for (i, (t, u)) in keys.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(")
            .push_bind(texts.get(t))
            .push(", ")
            .push_bind(uuid_arg(u))
            .push(")");
    }
    q.push(")");
}
