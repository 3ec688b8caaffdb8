//! [`PgTx`]: one READ COMMITTED transaction on a pooled connection.
//! Dropping it without `commit` rolls back (sqlx issues the ROLLBACK before
//! the connection is used again).

use hubsync_core::entity::{Entity, Operation, now_utc};
use hubsync_core::store::{
    AuditRecord, EntityRef, EntityStamp, HeldChange, HistoryRecord, Holding, NewRevision,
    NodeRecord, QueuedChange, Revision, ScopeFilter, ScopeRecord, ScopedPage, StoreError,
    StoreResult, StoreTx, references_to_insert,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::codec::{RowReader, check_jsonb_text, jsonb};
use crate::locks::WRITE_LOCK;
use crate::rows::{
    self, node_cols, node_from_row, queued_cols, queued_from_row, revision_from_row,
};

fn held_from_row(row: &sqlx::postgres::PgRow) -> StoreResult<HeldChange> {
    let r = RowReader::new(row, "held_changes");
    Ok(HeldChange {
        id: r.i64("id")?,
        source_node: r.uuid("source_node")?,
        entity_type: r.text("entity_type")?,
        uuid: r.uuid("uuid")?,
        change: r.json("change")?,
        waiting_type: r.text("waiting_type")?,
        waiting_for: r.uuid("waiting_for")?,
        packet_no: r.i64("packet_no")?,
        held_at: r.ts("held_at")?,
    })
}

pub(crate) struct PgTx {
    tx: Transaction<'static, Postgres>,
    /// Whether this transaction holds the write lock (locks.rs) already.
    write_locked: bool,
}

impl PgTx {
    pub(crate) fn new(tx: Transaction<'static, Postgres>) -> Self {
        PgTx {
            tx,
            write_locked: false,
        }
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
        let rows = sqlx::query(REVISIONS_AFTER)
            .bind(after_rev)
            .bind(node)
            .bind(i64::from(limit))
            .bind(own_above.map(|_| node))
            .bind(own_above.unwrap_or(0))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading revisions", e))?;
        rows.iter()
            .map(|r| revision_from_row(r, own_above.is_some()))
            .collect()
    }

    /// Takes the write lock, once; it is released when the transaction
    /// ends.
    async fn lock_writes(&mut self) -> StoreResult<()> {
        if !self.write_locked {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(WRITE_LOCK.0)
                .bind(WRITE_LOCK.1)
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("waiting for the write lock", e))?;
            self.write_locked = true;
        }
        Ok(())
    }
}

/// The log rows `node` must learn above a revision, each with its entity
/// (LEFT JOIN, so that a missing entity shows up as corruption instead of
/// silently shortening the page).
pub(crate) const REVISIONS_AFTER: &str = "
    SELECT c.id AS rev, c.node_id AS target, c.entity_type, c.entity_uuid, c.operation,
           c.origin_node_id, c.created_at,
           e.updated_at AS e_updated_at, e.is_deleted AS e_is_deleted,
           CASE WHEN c.node_id IS NULL AND e.origin_node_id = $4::uuid AND c.id > $5::int8
                THEN NULL ELSE e.data END AS e_data,
           e.rev AS e_rev, e.origin_node_id AS e_origin_node_id
    FROM sync_changes AS c
    LEFT JOIN entities AS e ON e.entity_type = c.entity_type AND e.uuid = c.entity_uuid
    WHERE c.kind = 'log' AND c.id > $1 AND (c.node_id IS NULL OR c.node_id = $2)
    ORDER BY c.id
    LIMIT $3";

/// The size and last revision of a scoped node's window: the first `$3`
/// log rows above `$1` for every node or addressed to `$2`.
const SCOPED_WINDOW: &str = "
    SELECT COUNT(*)::int8 AS n, COALESCE(MAX(id), $1::int8)::int8 AS last FROM (
        SELECT id FROM sync_changes
        WHERE kind = 'log' AND id > $1 AND (node_id IS NULL OR node_id = $2)
        ORDER BY id
        LIMIT $3) AS w";

/// The candidates of a scoped node's window `($1, $2]`
/// (`StoreTx::scoped_revisions_after`): the columns of [`REVISIONS_AFTER`];
/// `$4` is the scope as `{"Type": null | {"field": ["value", …]}}` (a
/// field's JSON value must be one of its list; `uuid` is the entity's id).
/// A log row whose entity is missing is kept, so that it shows up as
/// corruption.
const SCOPED_CANDIDATES: &str = "
    SELECT c.id AS rev, c.node_id AS target, c.entity_type, c.entity_uuid, c.operation,
           c.origin_node_id, c.created_at,
           e.updated_at AS e_updated_at, e.is_deleted AS e_is_deleted, e.data AS e_data,
           e.rev AS e_rev, e.origin_node_id AS e_origin_node_id
    FROM sync_changes AS c
    LEFT JOIN entities AS e ON e.entity_type = c.entity_type AND e.uuid = c.entity_uuid
    WHERE c.kind = 'log' AND c.id > $1 AND c.id <= $2 AND (c.node_id IS NULL OR c.node_id = $3)
      AND (c.node_id IS NOT NULL OR e.uuid IS NULL OR e.origin_node_id = $3
        OR EXISTS (SELECT 1 FROM jsonb_each($4::jsonb) AS t(ty, rule)
             WHERE t.ty = c.entity_type
               AND (jsonb_typeof(t.rule) = 'null' OR NOT EXISTS (
                 SELECT 1 FROM jsonb_each(t.rule) AS f(field, vals)
                 WHERE NOT f.vals @> jsonb_build_array(CASE WHEN f.field = 'uuid'
                     THEN to_jsonb(c.entity_uuid::text) ELSE e.data -> f.field END))))
        OR EXISTS (SELECT 1 FROM node_holdings AS h
             WHERE h.node_id = $3 AND h.entity_uuid = c.entity_uuid
               AND h.entity_type = c.entity_type)
        OR ($5 AND EXISTS (SELECT 1 FROM entity_refs AS r
             JOIN node_holdings AS h ON h.node_id = $3 AND h.entity_uuid = r.source_uuid
                  AND h.entity_type = r.source_type AND h.evicted_in IS NULL
             WHERE r.target_uuid = c.entity_uuid AND r.target_type = c.entity_type)))
    ORDER BY c.id
    LIMIT $6";

/// Removes the previous revision of an entity for the same target. The
/// coalesce matches the key of sync_changes_log_entity (a NULL target is
/// the nil uuid there), so this is an index lookup.
const LOG_DELETE_PREVIOUS: &str = "DELETE FROM sync_changes
    WHERE kind = 'log' AND entity_type = $1 AND entity_uuid = $2
      AND coalesce(node_id, '00000000-0000-0000-0000-000000000000'::uuid)
        = coalesce($3, '00000000-0000-0000-0000-000000000000'::uuid)";

/// The reference rows to insert, each once: a document that names one
/// target twice under one pointer (one employee on two lines) records it
/// once (migration 9: no key refuses the second).
fn distinct_references<'a>(
    refs: Vec<(&'a str, Uuid, &'a EntityRef)>,
) -> Vec<(&'a str, Uuid, &'a EntityRef)> {
    let mut seen = std::collections::HashSet::new();
    refs.into_iter()
        .filter(|(t, u, r)| seen.insert((*t, *u, r.pointer.as_str(), r.target_uuid)))
        .collect()
}

#[async_trait::async_trait]
impl StoreTx for PgTx {
    async fn get_meta(&mut self, key: &str) -> StoreResult<Option<String>> {
        rows::get_meta(&mut *self.tx, key).await
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO hubsync_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("writing metadata", e))?;
        Ok(())
    }

    /// Takes the write lock first: the caller decides a write on what it
    /// reads (see locks.rs).
    async fn get_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>> {
        self.lock_writes().await?;
        rows::get_entity(&mut *self.tx, entity_type, uuid).await
    }

    async fn put_entity(&mut self, entity: &Entity) -> StoreResult<()> {
        let data = jsonb("writing an entity", "the entity's data", &entity.data)?;
        self.lock_writes().await?;
        sqlx::query(
            "INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (entity_type, uuid) DO UPDATE SET
                 updated_at = excluded.updated_at,
                 is_deleted = excluded.is_deleted,
                 data = excluded.data,
                 rev = excluded.rev,
                 origin_node_id = excluded.origin_node_id",
        )
        .bind(entity.entity_type.as_str())
        .bind(entity.uuid)
        .bind(entity.updated_at)
        .bind(entity.is_deleted)
        .bind(data)
        .bind(entity.rev)
        .bind(entity.origin)
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
        let data = jsonb(
            "keeping an entity version",
            "the entity's data",
            &entity.data,
        )?;
        sqlx::query(
            "INSERT INTO entity_versions (entity_type, uuid, rev, updated_at, is_deleted, data, origin_node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (entity_type, uuid, rev) DO NOTHING",
        )
        .bind(entity.entity_type.as_str())
        .bind(entity.uuid)
        .bind(rev)
        .bind(entity.updated_at)
        .bind(entity.is_deleted)
        .bind(data)
        .bind(entity.origin)
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
            crate::rows::entity_cols!(),
            " FROM entity_versions WHERE entity_type = $1 AND uuid = $2 AND rev = $3"
        ))
        .bind(entity_type)
        .bind(uuid)
        .bind(rev)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading an entity version", e))?;
        row.as_ref().map(rows::entity_from_row).transpose()
    }

    /// A coalesced row keeps its id (place in the queue) and its
    /// `created_at`.
    async fn queue_change(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
    ) -> StoreResult<()> {
        self.lock_writes().await?;
        let unsent = sqlx::query(
            "SELECT id, operation FROM sync_changes
             WHERE kind = 'queue' AND packet_no IS NULL
               AND node_id = $1 AND entity_type = $2 AND entity_uuid = $3",
        )
        .bind(node)
        .bind(entity_type)
        .bind(uuid)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading the change queue", e))?;
        match unsent {
            Some(row) => {
                let r = RowReader::new(&row, "sync_changes");
                let (id, queued) = (r.i64("id")?, r.operation("operation")?);
                let coalesced = Operation::coalesce(queued, op);
                if coalesced != queued {
                    sqlx::query("UPDATE sync_changes SET operation = $1 WHERE id = $2")
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
                     VALUES ('queue', $1, $2, $3, $4, $5)",
                )
                .bind(node)
                .bind(entity_type)
                .bind(uuid)
                .bind(op.as_str())
                .bind(now_utc())
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::backend("queueing a change", e))?;
            }
        }
        Ok(())
    }

    async fn has_queued(&mut self, node: Uuid, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM sync_changes
             WHERE kind = 'queue' AND node_id = $1 AND entity_type = $2 AND entity_uuid = $3
             LIMIT 1",
        )
        .bind(node)
        .bind(entity_type)
        .bind(uuid)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading the change queue", e))?;
        Ok(row.is_some())
    }

    /// An index lookup (sync_changes_queue_unsent).
    async fn unsent_change_for(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<QueuedChange>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            queued_cols!(),
            " FROM sync_changes
              WHERE kind = 'queue' AND packet_no IS NULL
                AND node_id = $1 AND entity_type = $2 AND entity_uuid = $3"
        ))
        .bind(node)
        .bind(entity_type)
        .bind(uuid)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading the change queue", e))?;
        row.as_ref().map(queued_from_row).transpose()
    }

    async fn unsent_changes(&mut self, node: Uuid, limit: u32) -> StoreResult<Vec<QueuedChange>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            queued_cols!(),
            " FROM sync_changes
              WHERE kind = 'queue' AND node_id = $1 AND packet_no IS NULL
              ORDER BY id LIMIT $2"
        ))
        .bind(node)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading unsent changes", e))?;
        rows.iter().map(queued_from_row).collect()
    }

    async fn changes_in_packet(
        &mut self,
        node: Uuid,
        packet_no: i64,
    ) -> StoreResult<Vec<QueuedChange>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            queued_cols!(),
            " FROM sync_changes
              WHERE kind = 'queue' AND node_id = $1 AND packet_no = $2
              ORDER BY id"
        ))
        .bind(node)
        .bind(packet_no)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading a packet's changes", e))?;
        rows.iter().map(queued_from_row).collect()
    }

    /// One statement for the whole batch. Every id must be a queue row of
    /// `node`: anything else is reported as Corrupt (the caller's view of
    /// the queue and the stored queue disagree).
    async fn assign_packet(&mut self, node: Uuid, ids: &[i64], packet_no: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let done = sqlx::query(
            "UPDATE sync_changes SET packet_no = $1
             WHERE kind = 'queue' AND node_id = $2 AND id = ANY($3)",
        )
        .bind(packet_no)
        .bind(node)
        .bind(&sorted)
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
        let done = sqlx::query(
            "DELETE FROM sync_changes
             WHERE kind = 'queue' AND node_id = $1 AND packet_no IS NOT NULL AND packet_no <= $2",
        )
        .bind(node)
        .bind(packet_no)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("deleting acknowledged changes", e))?;
        Ok(done.rows_affected())
    }

    /// Under the write lock: the revision is allocated and committed in one
    /// serialized section, so revisions become visible in revision order
    /// even with several hosts on one database (locks.rs).
    async fn append_revision(
        &mut self,
        target: Option<Uuid>,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
        origin: Option<Uuid>,
    ) -> StoreResult<i64> {
        self.lock_writes().await?;
        sqlx::query(LOG_DELETE_PREVIOUS)
            .bind(entity_type)
            .bind(uuid)
            .bind(target)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("replacing the previous revision", e))?;
        let row = sqlx::query(
            "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, created_at, origin_node_id)
             VALUES ('log', $1, $2, $3, $4, $5, $6)
             RETURNING id",
        )
        .bind(target)
        .bind(entity_type)
        .bind(uuid)
        .bind(op.as_str())
        .bind(now_utc())
        .bind(origin)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("appending a revision", e))?;
        RowReader::new(&row, "sync_changes").i64("id")
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

    /// Two statements: the window's last revision and size, then the
    /// candidates in it ([`SCOPED_CANDIDATES`], the scope bound as JSONB).
    async fn scoped_revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        window: u32,
        filter: &ScopeFilter,
    ) -> StoreResult<ScopedPage> {
        let row = sqlx::query(SCOPED_WINDOW)
            .bind(after_rev)
            .bind(node)
            .bind(i64::from(window.max(1)))
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading a scoped node's log window", e))?;
        let r = RowReader::new(&row, "sync_changes");
        let (scanned, last) = (r.i64("n")?, r.i64("last")?);
        let rules: serde_json::Map<String, serde_json::Value> = filter
            .types
            .iter()
            .map(|(ty, fields)| {
                let rule = match fields {
                    None => serde_json::Value::Null,
                    Some(fields) => fields
                        .iter()
                        .map(|(f, values)| (f.clone(), serde_json::Value::from(values.clone())))
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                };
                (ty.clone(), rule)
            })
            .collect();
        let rows = sqlx::query(SCOPED_CANDIDATES)
            .bind(after_rev)
            .bind(last)
            .bind(node)
            .bind(serde_json::Value::Object(rules))
            .bind(filter.with_references)
            .bind(i64::from(limit))
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

    /// `FOR UPDATE`: the row stays locked until this transaction ends. A
    /// concurrent transaction (another host handling the same node) waits
    /// here and, READ COMMITTED, then reads the row as committed — with the
    /// packet numbers this one wrote — so it replays instead of applying
    /// the same packet again.
    async fn get_node(&mut self, id: Uuid) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM sync_nodes WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading a node for update", e))?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn put_node(&mut self, node: &NodeRecord) -> StoreResult<()> {
        for (what, text) in [
            ("the node's last results", &node.last_results),
            ("the node's previous results", &node.prev_results),
        ] {
            if let Some(text) = text {
                check_jsonb_text(what, text)
                    .map_err(|e| StoreError::backend("writing a node", e))?;
            }
        }
        // An upsert keyed by id: a node with the same code under another id
        // violates the unique constraint instead of being replaced.
        sqlx::query(
            "INSERT INTO sync_nodes (id, code, name, role, is_self, token_hash, revoked, created_at,
                 last_sync_in, last_sync_out, received_packet_no, sent_packet_no, out_packet_no,
                 acked_rev, out_up_to_rev, prev_out_up_to_rev, last_results, prev_results,
                 schema_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17::jsonb, $18::jsonb, $19)
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
        .bind(node.id)
        .bind(node.code.as_str())
        .bind(node.name.as_str())
        .bind(node.role.as_str())
        .bind(node.is_self)
        .bind(node.token_hash.as_deref())
        .bind(node.revoked)
        .bind(node.created_at)
        .bind(node.last_sync_in)
        .bind(node.last_sync_out)
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
        let data = jsonb(
            "recording an entity version",
            "the stored version",
            &record.serialized_data,
        )?;
        sqlx::query(
            "INSERT INTO object_version_history (id, entity_uuid, entity_type, source_node_id,
                 arrival_time, serialized_data, conflict_resolution, audit_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(record.id)
        .bind(record.entity_uuid)
        .bind(record.entity_type.as_str())
        .bind(record.source_node_id)
        .bind(record.arrival_time)
        .bind(data)
        .bind(record.conflict_resolution.as_str())
        .bind(record.audit_id)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording an entity version", e))?;
        Ok(())
    }

    /// [`StoreTx::set_references_many`] of the one source.
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
        self.lock_writes().await?;
        let rows = sqlx::query(
            "SELECT source_type, source_uuid, pointer, target_type, target_uuid
             FROM entity_refs WHERE target_uuid = $1 AND target_type = $2
             ORDER BY source_type, source_uuid, pointer",
        )
        .bind(target)
        .bind(target_type)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("finding an entity's referrers", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "entity_refs");
                Ok(EntityRef {
                    source_type: r.text("source_type")?,
                    source_uuid: r.uuid("source_uuid")?,
                    pointer: r.text("pointer")?,
                    target_type: r.text("target_type")?,
                    target_uuid: r.uuid("target_uuid")?,
                })
            })
            .collect()
    }

    async fn hold_change(&mut self, held: &HeldChange) -> StoreResult<()> {
        let change = jsonb("holding a change", "the held change", &held.change)?;
        self.lock_writes().await?;
        sqlx::query(
            "INSERT INTO held_changes (source_node, entity_type, uuid, change, waiting_type,
                 waiting_for, packet_no, held_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (source_node, entity_type, uuid) DO UPDATE SET
                 change = excluded.change,
                 waiting_type = excluded.waiting_type,
                 waiting_for = excluded.waiting_for,
                 packet_no = excluded.packet_no,
                 held_at = excluded.held_at",
        )
        .bind(held.source_node)
        .bind(held.entity_type.as_str())
        .bind(held.uuid)
        .bind(change)
        .bind(held.waiting_type.as_str())
        .bind(held.waiting_for)
        .bind(held.packet_no)
        .bind(held.held_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("holding a change", e))?;
        Ok(())
    }

    async fn held_waiting_for(&mut self, target: Uuid) -> StoreResult<Vec<HeldChange>> {
        self.lock_writes().await?;
        let rows = sqlx::query(
            "SELECT id, source_node, entity_type, uuid, change, waiting_type, waiting_for,
                    packet_no, held_at
             FROM held_changes WHERE waiting_for = $1 ORDER BY id",
        )
        .bind(target)
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
        self.lock_writes().await?;
        let rows = sqlx::query(
            "SELECT id, source_node, entity_type, uuid, change, waiting_type, waiting_for,
                    packet_no, held_at
             FROM held_changes WHERE held_at < $1 ORDER BY held_at, id LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading held changes", e))?;
        rows.iter().map(held_from_row).collect()
    }

    async fn release_held(&mut self, id: i64) -> StoreResult<()> {
        self.lock_writes().await?;
        sqlx::query("DELETE FROM held_changes WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("releasing a held change", e))?;
        Ok(())
    }

    async fn add_audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO conflict_audit (id, at, entity_type, entity_uuid, node_id, packet_no,
                 strategy, outcome, master_rev, base_rev, result_rev, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(record.id)
        .bind(record.at)
        .bind(record.entity_type.as_str())
        .bind(record.entity_uuid)
        .bind(record.node_id)
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

    async fn get_scope(&mut self, node: Uuid) -> StoreResult<ScopeRecord> {
        let row = sqlx::query(
            "SELECT scope, has_pending, pending, resend_own_to FROM node_scopes WHERE node_id = $1",
        )
        .bind(node)
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
        let op = "storing a node's scope";
        let active = scope
            .scope
            .as_ref()
            .map(|v| jsonb(op, "the node's scope", v))
            .transpose()?;
        let pending = scope
            .pending
            .as_ref()
            .and_then(|p| p.as_ref())
            .map(|v| jsonb(op, "the node's next scope", v))
            .transpose()?;
        self.lock_writes().await?;
        sqlx::query(
            "INSERT INTO node_scopes (node_id, scope, has_pending, pending, resend_own_to)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (node_id) DO UPDATE SET scope = excluded.scope,
                 has_pending = excluded.has_pending, pending = excluded.pending,
                 resend_own_to = excluded.resend_own_to",
        )
        .bind(node)
        .bind(active)
        .bind(scope.pending.is_some())
        .bind(pending)
        .bind(scope.resend_own_to)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend(op, e))?;
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
             WHERE node_id = $1 AND entity_uuid = $2 AND entity_type = $3",
        )
        .bind(node)
        .bind(uuid)
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
        self.lock_writes().await?;
        sqlx::query(
            "INSERT INTO node_holdings (node_id, entity_type, entity_uuid, since_packet, evicted_in)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (node_id, entity_uuid, entity_type) DO UPDATE SET
                 since_packet = excluded.since_packet, evicted_in = excluded.evicted_in",
        )
        .bind(node)
        .bind(entity_type)
        .bind(uuid)
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
            "SELECT 1 FROM entity_refs r
             JOIN node_holdings h ON h.node_id = $1 AND h.entity_uuid = r.source_uuid
                  AND h.entity_type = r.source_type AND h.evicted_in IS NULL
             WHERE r.target_uuid = $2 AND r.target_type = $3 LIMIT 1",
        )
        .bind(node)
        .bind(target)
        .bind(target_type)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("checking what refers to a held entity", e))?;
        Ok(row.is_some())
    }

    /// One SELECT from arrays.
    async fn holdings(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<((String, Uuid), Holding)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = keys.iter().map(|(_, u)| *u).collect();
        let rows = sqlx::query(
            "SELECT entity_type, entity_uuid, since_packet, evicted_in FROM node_holdings
             WHERE node_id = $1
               AND (entity_uuid, entity_type) IN (SELECT u, t FROM unnest($2::text[], $3::uuid[]) AS k(t, u))",
        )
        .bind(node)
        .bind(&types)
        .bind(&uuids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading what a node holds", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "node_holdings");
                Ok((
                    (r.text("entity_type")?, r.uuid("entity_uuid")?),
                    Holding {
                        since_packet: r.i64("since_packet")?,
                        evicted_in: r.opt_i64("evicted_in")?,
                    },
                ))
            })
            .collect()
    }

    /// One SELECT from arrays.
    async fn referenced_by_holdings(
        &mut self,
        node: Uuid,
        targets: &[(String, Uuid)],
    ) -> StoreResult<Vec<(String, Uuid)>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = targets.iter().map(|(t, _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = targets.iter().map(|(_, u)| *u).collect();
        let rows = sqlx::query(
            "SELECT DISTINCT r.target_type, r.target_uuid FROM entity_refs r
             JOIN node_holdings h ON h.node_id = $1 AND h.entity_uuid = r.source_uuid
                  AND h.entity_type = r.source_type AND h.evicted_in IS NULL
             WHERE (r.target_uuid, r.target_type) IN (SELECT u, t FROM unnest($2::text[], $3::uuid[]) AS k(t, u))",
        )
        .bind(node)
        .bind(&types)
        .bind(&uuids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("checking what refers to held entities", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "entity_refs");
                Ok((r.text("target_type")?, r.uuid("target_uuid")?))
            })
            .collect()
    }

    async fn log_head(&mut self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS head FROM sync_changes")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("reading the change log's head", e))?;
        RowReader::new(&row, "sync_changes").i64("head")
    }

    async fn seed_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        self.lock_writes().await?;
        let done = sqlx::query(
            "INSERT INTO node_holdings (node_id, entity_type, entity_uuid, since_packet, evicted_in)
             SELECT $1, entity_type, uuid, 0, NULL FROM entities WHERE true
             ON CONFLICT (node_id, entity_uuid, entity_type) DO NOTHING",
        )
        .bind(node)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording what a node may hold", e))?;
        Ok(done.rows_affected())
    }

    async fn clear_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        self.lock_writes().await?;
        let done = sqlx::query("DELETE FROM node_holdings WHERE node_id = $1")
            .bind(node)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("forgetting what a node holds", e))?;
        Ok(done.rows_affected())
    }

    async fn purge_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        self.lock_writes().await?;
        let done = sqlx::query("DELETE FROM entities WHERE entity_type = $1 AND uuid = $2")
            .bind(entity_type)
            .bind(uuid)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("removing an evicted entity", e))?;
        sqlx::query("DELETE FROM entity_refs WHERE source_type = $1 AND source_uuid = $2")
            .bind(entity_type)
            .bind(uuid)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("removing an evicted entity's references", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx
            .commit()
            .await
            .map_err(|e| StoreError::backend("committing", e))
    }

    /// Takes the write lock, as `get_entity` does; one statement for the
    /// keys (arrays joined on the primary key).
    async fn get_entities(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<Entity>> {
        self.lock_writes().await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = keys.iter().map(|(_, u)| *u).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            rows::entity_cols!(),
            " FROM entities WHERE (entity_type, uuid) IN
                 (SELECT t, u FROM unnest($1::text[], $2::uuid[]) AS k(t, u))"
        ))
        .bind(&types)
        .bind(&uuids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading entities", e))?;
        rows.iter().map(rows::entity_from_row).collect()
    }

    /// One upsert from arrays. PostgreSQL refuses to update a row twice in
    /// one statement, so a key given twice is sent once, with its last
    /// version (what writing them in order leaves).
    async fn put_entities(&mut self, entities: &[&Entity]) -> StoreResult<()> {
        if entities.is_empty() {
            return Ok(());
        }
        let mut last: std::collections::HashMap<(&str, Uuid), usize> =
            std::collections::HashMap::with_capacity(entities.len());
        for (i, e) in entities.iter().enumerate() {
            last.insert((e.entity_type.as_str(), e.uuid), i);
        }
        let mut picked: Vec<usize> = last.into_values().collect();
        picked.sort_unstable();
        let mut data = Vec::with_capacity(picked.len());
        for &i in &picked {
            data.push(jsonb(
                "writing entities",
                "the entity's data",
                &entities[i].data,
            )?);
        }
        let rows: Vec<&Entity> = picked.iter().map(|&i| entities[i]).collect();
        let types: Vec<&str> = rows.iter().map(|e| e.entity_type.as_str()).collect();
        let uuids: Vec<Uuid> = rows.iter().map(|e| e.uuid).collect();
        let updated: Vec<chrono::DateTime<chrono::Utc>> =
            rows.iter().map(|e| e.updated_at).collect();
        let deleted: Vec<bool> = rows.iter().map(|e| e.is_deleted).collect();
        let revs: Vec<Option<i64>> = rows.iter().map(|e| e.rev).collect();
        let origins: Vec<Option<Uuid>> = rows.iter().map(|e| e.origin).collect();
        self.lock_writes().await?;
        sqlx::query(
            "INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::bool[],
                                  $5::jsonb[], $6::int8[], $7::uuid[])
             ON CONFLICT (entity_type, uuid) DO UPDATE SET
                 updated_at = excluded.updated_at,
                 is_deleted = excluded.is_deleted,
                 data = excluded.data,
                 rev = excluded.rev,
                 origin_node_id = excluded.origin_node_id",
        )
        .bind(&types)
        .bind(&uuids)
        .bind(&updated)
        .bind(&deleted)
        .bind(&data)
        .bind(&revs)
        .bind(&origins)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("writing entities", e))?;
        Ok(())
    }

    /// One DELETE and one INSERT from arrays for all the entities.
    async fn set_references_many(
        &mut self,
        items: &[((String, Uuid), Vec<EntityRef>)],
    ) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.lock_writes().await?;
        let types: Vec<&str> = items.iter().map(|((t, _), _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = items.iter().map(|((_, u), _)| *u).collect();
        sqlx::query(
            "DELETE FROM entity_refs WHERE (source_type, source_uuid) IN
                 (SELECT t, u FROM unnest($1::text[], $2::uuid[]) AS k(t, u))",
        )
        .bind(&types)
        .bind(&uuids)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("replacing entities' references", e))?;
        let refs = distinct_references(references_to_insert(items));
        if refs.is_empty() {
            return Ok(());
        }
        let source_types: Vec<&str> = refs.iter().map(|(t, _, _)| *t).collect();
        let source_uuids: Vec<Uuid> = refs.iter().map(|(_, u, _)| *u).collect();
        let pointers: Vec<&str> = refs.iter().map(|(_, _, r)| r.pointer.as_str()).collect();
        let target_types: Vec<&str> = refs
            .iter()
            .map(|(_, _, r)| r.target_type.as_str())
            .collect();
        let targets: Vec<Uuid> = refs.iter().map(|(_, _, r)| r.target_uuid).collect();
        sqlx::query(
            "INSERT INTO entity_refs (source_type, source_uuid, pointer, target_type, target_uuid)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::uuid[])",
        )
        .bind(&source_types)
        .bind(&source_uuids)
        .bind(&pointers)
        .bind(&target_types)
        .bind(&targets)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording entities' references", e))?;
        Ok(())
    }

    /// Takes the write lock, as `get_entity` does; the data column is not
    /// read.
    async fn entity_stamps(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<EntityStamp>> {
        self.lock_writes().await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = keys.iter().map(|(_, u)| *u).collect();
        let rows = sqlx::query(
            "SELECT entity_type, uuid, updated_at, rev FROM entities
             WHERE (entity_type, uuid) IN (SELECT t, u FROM unnest($1::text[], $2::uuid[]) AS k(t, u))",
        )
        .bind(&types)
        .bind(&uuids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading entity stamps", e))?;
        rows.iter()
            .map(|row| {
                let r = RowReader::new(row, "entities");
                Ok(EntityStamp {
                    entity_type: r.text("entity_type")?,
                    uuid: r.uuid("uuid")?,
                    updated_at: r.ts("updated_at")?,
                    rev: r.opt_i64("rev")?,
                })
            })
            .collect()
    }

    /// One UPDATE from arrays.
    async fn raise_revs(&mut self, items: &[(String, Uuid, i64)]) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.lock_writes().await?;
        let rows = EntityStamp::highest_per_entity(items);
        let types: Vec<&str> = rows.iter().map(|(t, _, _)| *t).collect();
        let uuids: Vec<Uuid> = rows.iter().map(|(_, u, _)| *u).collect();
        let revs: Vec<i64> = rows.iter().map(|(_, _, r)| *r).collect();
        sqlx::query(
            "UPDATE entities AS e SET rev = k.r
             FROM unnest($1::text[], $2::uuid[], $3::int8[]) AS k(t, u, r)
             WHERE e.entity_type = k.t AND e.uuid = k.u AND (e.rev IS NULL OR e.rev < k.r)",
        )
        .bind(&types)
        .bind(&uuids)
        .bind(&revs)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("recording the master's revisions", e))?;
        Ok(())
    }

    /// Numbers from the log's identity sequence, taken under the write lock
    /// (every writer of the log holds it, so they follow commit order).
    async fn reserve_revisions(&mut self, n: usize) -> StoreResult<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(n)
            .map_err(|_| StoreError::corrupt("too many revision numbers asked for at once"))?;
        self.lock_writes().await?;
        let mut revs: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('sync_changes', 'id'))
             FROM generate_series(1, $1::int8)",
        )
        .bind(n)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reserving revision numbers", e))?;
        revs.sort_unstable();
        Ok(revs)
    }

    /// One upsert from arrays: a key's previous log row is moved to its new
    /// revision (migration 8). The conflict is found through the unique
    /// index whatever the table's statistics say; a DELETE joined to the
    /// keys was planned from them, and without them read the whole log.
    async fn append_revisions(&mut self, revisions: &[NewRevision]) -> StoreResult<()> {
        if revisions.is_empty() {
            return Ok(());
        }
        self.lock_writes().await?;
        let picked = NewRevision::latest_per_key(revisions);
        let ids: Vec<i64> = picked.iter().map(|r| r.rev).collect();
        let targets: Vec<Option<Uuid>> = picked.iter().map(|r| r.target).collect();
        let types: Vec<&str> = picked.iter().map(|r| r.entity_type.as_str()).collect();
        let uuids: Vec<Uuid> = picked.iter().map(|r| r.entity_uuid).collect();
        let ops: Vec<&str> = picked.iter().map(|r| r.operation.as_str()).collect();
        let origins: Vec<Option<Uuid>> = picked.iter().map(|r| r.origin).collect();
        sqlx::query(
            "INSERT INTO sync_changes
                 (id, kind, node_id, entity_type, entity_uuid, operation, created_at, origin_node_id)
             SELECT id, 'log', n, t, u, op, $7, o
             FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::uuid[])
                 AS k(id, n, t, u, op, o)
             ON CONFLICT (entity_type, entity_uuid,
                          (coalesce(node_id, '00000000-0000-0000-0000-000000000000'::uuid)))
                 WHERE kind = 'log'
             DO UPDATE SET id = excluded.id,
                           operation = excluded.operation,
                           created_at = excluded.created_at,
                           origin_node_id = excluded.origin_node_id",
        )
        .bind(&ids)
        .bind(&targets)
        .bind(&types)
        .bind(&uuids)
        .bind(&ops)
        .bind(&origins)
        .bind(now_utc())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("appending revisions", e))?;
        Ok(())
    }

    async fn queued_rows(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<QueuedChange>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        let uuids: Vec<Uuid> = keys.iter().map(|(_, u)| *u).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            queued_cols!(),
            " FROM sync_changes
              WHERE kind = 'queue' AND node_id = $1 AND (entity_type, entity_uuid) IN
                  (SELECT t, u FROM unnest($2::text[], $3::uuid[]) AS k(t, u))
              ORDER BY id"
        ))
        .bind(node)
        .bind(&types)
        .bind(&uuids)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| StoreError::backend("reading the change queue", e))?;
        rows.iter().map(queued_from_row).collect()
    }

    /// One INSERT and one UPDATE, from arrays.
    async fn write_queue(
        &mut self,
        node: Uuid,
        inserts: &[(String, Uuid, Operation)],
        updates: &[(i64, Operation)],
    ) -> StoreResult<()> {
        if inserts.is_empty() && updates.is_empty() {
            return Ok(());
        }
        self.lock_writes().await?;
        if !inserts.is_empty() {
            let types: Vec<&str> = inserts.iter().map(|(t, _, _)| t.as_str()).collect();
            let uuids: Vec<Uuid> = inserts.iter().map(|(_, u, _)| *u).collect();
            let ops: Vec<&str> = inserts.iter().map(|(_, _, op)| op.as_str()).collect();
            sqlx::query(
                "INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation, created_at)
                 SELECT 'queue', $1, t, u, op, $5
                 FROM unnest($2::text[], $3::uuid[], $4::text[]) WITH ORDINALITY AS k(t, u, op, i)
                 ORDER BY i",
            )
            .bind(node)
            .bind(&types)
            .bind(&uuids)
            .bind(&ops)
            .bind(now_utc())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("queueing changes", e))?;
        }
        if !updates.is_empty() {
            let ids: Vec<i64> = updates.iter().map(|(id, _)| *id).collect();
            let ops: Vec<&str> = updates.iter().map(|(_, op)| op.as_str()).collect();
            let done = sqlx::query(
                "UPDATE sync_changes AS c SET operation = k.op
                 FROM unnest($2::int8[], $3::text[]) AS k(id, op)
                 WHERE c.id = k.id AND c.kind = 'queue' AND c.node_id = $1",
            )
            .bind(node)
            .bind(&ids)
            .bind(&ops)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend("updating queued changes", e))?;
            if done.rows_affected() != updates.len() as u64 {
                return Err(StoreError::corrupt(format!(
                    "{} of {} queued changes to update are not queue rows of node {node}",
                    updates.len() as u64 - done.rows_affected(),
                    updates.len()
                )));
            }
        }
        Ok(())
    }
}
