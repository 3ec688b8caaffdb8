//! Reads shared by the `Store` (reader pool) and `StoreTx` (writer
//! transaction) sides, and the decoding of each table's rows.

use hubsync_core::entity::Entity;
use hubsync_core::store::{
    AuditRecord, HistoryRecord, NodeRecord, NodeRole, QueuedChange, Revision, StoreError,
    StoreResult,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Sqlite};
use uuid::Uuid;

use crate::codec::{RowReader, uuid_text};

/// Column lists, as macros so that `concat!` can build `&'static str` SQL
/// (static SQL is what sqlx caches as prepared statements).
macro_rules! entity_cols {
    () => {
        "entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id"
    };
}
/// The `sync_nodes` columns, with `$results` for the two stored results.
macro_rules! node_cols_with {
    ($results:literal) => {
        concat!(
            "id, code, name, role, is_self, token_hash, revoked, created_at, last_sync_in, \
             last_sync_out, received_packet_no, sent_packet_no, out_packet_no, acked_rev, \
             out_up_to_rev, prev_out_up_to_rev, ",
            $results,
            ", schema_version"
        )
    };
}
macro_rules! node_cols {
    () => {
        crate::queries::node_cols_with!("last_results, prev_results")
    };
}
/// [`node_cols!`] for listings and lookups by code or token: the stored
/// results (up to ~65 KB each per node) left out, as NULL.
macro_rules! node_listed_cols {
    () => {
        crate::queries::node_cols_with!("NULL AS last_results, NULL AS prev_results")
    };
}
macro_rules! queued_cols {
    () => {
        "id, node_id, entity_type, entity_uuid, operation, packet_no, created_at"
    };
}
macro_rules! history_cols {
    () => {
        "id, entity_uuid, entity_type, source_node_id, arrival_time, serialized_data, \
         conflict_resolution, audit_id"
    };
}
macro_rules! audit_cols {
    () => {
        "id, at, entity_type, entity_uuid, node_id, packet_no, strategy, outcome, master_rev, \
         base_rev, result_rev, detail"
    };
}
pub(crate) use {
    audit_cols, entity_cols, history_cols, node_cols_with, node_listed_cols, queued_cols,
};

pub(crate) async fn get_meta<'e>(
    ex: impl Executor<'e, Database = Sqlite>,
    key: &str,
) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT value FROM hubsync_meta WHERE key = ?")
        .bind(key)
        .fetch_optional(ex)
        .await
        .map_err(|e| StoreError::backend("reading metadata", e))?;
    row.map(|row| {
        RowReader::new(&row, "hubsync_meta")
            .text("value")
            .map(str::to_owned)
    })
    .transpose()
}

pub(crate) async fn get_entity<'e>(
    ex: impl Executor<'e, Database = Sqlite>,
    entity_type: &str,
    uuid: Uuid,
) -> StoreResult<Option<Entity>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        entity_cols!(),
        " FROM entities WHERE entity_type = ? AND uuid = ?"
    ))
    .bind(entity_type)
    .bind(uuid_text(uuid))
    .fetch_optional(ex)
    .await
    .map_err(|e| StoreError::backend("reading an entity", e))?;
    row.as_ref().map(entity_from_row).transpose()
}

pub(crate) async fn get_node<'e>(
    ex: impl Executor<'e, Database = Sqlite>,
    id: Uuid,
) -> StoreResult<Option<NodeRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        node_cols!(),
        " FROM sync_nodes WHERE id = ?"
    ))
    .bind(uuid_text(id))
    .fetch_optional(ex)
    .await
    .map_err(|e| StoreError::backend("reading a node", e))?;
    row.as_ref().map(node_from_row).transpose()
}

/// An `entities` row selected with [`entity_cols!`].
pub(crate) fn entity_from_row(row: &SqliteRow) -> StoreResult<Entity> {
    let r = RowReader::new(row, "entities");
    Ok(Entity {
        entity_type: r.text("entity_type")?.to_owned(),
        uuid: r.uuid("uuid")?,
        updated_at: r.ts("updated_at")?,
        is_deleted: r.bool("is_deleted")?,
        data: r.json("data")?,
        rev: r.opt_i64("rev")?,
        origin: r.opt_uuid("origin_node_id")?,
    })
}

/// A `sync_nodes` row selected with [`node_cols!`].
pub(crate) fn node_from_row(row: &SqliteRow) -> StoreResult<NodeRecord> {
    let r = RowReader::new(row, "sync_nodes");
    let role = r.text("role")?;
    Ok(NodeRecord {
        id: r.uuid("id")?,
        code: r.text("code")?.to_owned(),
        name: r.text("name")?.to_owned(),
        role: NodeRole::parse(role).ok_or_else(|| {
            StoreError::corrupt(format!("sync_nodes.role: {role:?} is not master or client"))
        })?,
        is_self: r.bool("is_self")?,
        token_hash: r.opt_text("token_hash")?.map(str::to_owned),
        revoked: r.bool("revoked")?,
        created_at: r.ts("created_at")?,
        last_sync_in: r.opt_ts("last_sync_in")?,
        last_sync_out: r.opt_ts("last_sync_out")?,
        received_packet_no: r.i64("received_packet_no")?,
        sent_packet_no: r.i64("sent_packet_no")?,
        out_packet_no: r.i64("out_packet_no")?,
        acked_rev: r.i64("acked_rev")?,
        out_up_to_rev: r.i64("out_up_to_rev")?,
        prev_out_up_to_rev: r.opt_i64("prev_out_up_to_rev")?,
        last_results: r.opt_text("last_results")?.map(str::to_owned),
        prev_results: r.opt_text("prev_results")?.map(str::to_owned),
        schema_version: r.opt_text("schema_version")?.map(str::to_owned),
    })
}

/// A queue row of `sync_changes` selected with [`queued_cols!`].
pub(crate) fn queued_from_row(row: &SqliteRow) -> StoreResult<QueuedChange> {
    let r = RowReader::new(row, "sync_changes");
    Ok(QueuedChange {
        id: r.i64("id")?,
        node_id: r.uuid("node_id")?,
        entity_type: r.text("entity_type")?.to_owned(),
        entity_uuid: r.uuid("entity_uuid")?,
        operation: r.operation("operation")?,
        packet_no: r.opt_i64("packet_no")?,
        created_at: r.ts("created_at")?,
    })
}

/// A log row of `sync_changes` joined (LEFT) to its entity; the columns are
/// those of `tx::REVISIONS_AFTER`.
/// `data_may_be_left_out`: the statement leaves out the data of some rows
/// on purpose (`revisions_after_skipping_own`); they read as `Null`.
pub(crate) fn revision_from_row(
    row: &SqliteRow,
    data_may_be_left_out: bool,
) -> StoreResult<(Revision, Entity)> {
    let c = RowReader::new(row, "sync_changes");
    let revision = Revision {
        rev: c.i64("rev")?,
        target: c.opt_uuid("target")?,
        entity_type: c.text("entity_type")?.to_owned(),
        entity_uuid: c.uuid("entity_uuid")?,
        operation: c.operation("operation")?,
        origin: c.opt_uuid("origin_node_id")?,
        created_at: c.ts("created_at")?,
    };
    let e = RowReader::new(row, "entities");
    if e.opt_text("e_updated_at")?.is_none() {
        return Err(StoreError::corrupt(format!(
            "sync_changes: revision {} refers to entity {}/{}, which is not in entities",
            revision.rev, revision.entity_type, revision.entity_uuid
        )));
    }
    let entity = Entity {
        entity_type: revision.entity_type.clone(),
        uuid: revision.entity_uuid,
        updated_at: e.ts("e_updated_at")?,
        is_deleted: e.bool("e_is_deleted")?,
        data: if data_may_be_left_out {
            e.opt_json("e_data")?.unwrap_or(serde_json::Value::Null)
        } else {
            e.json("e_data")?
        },
        rev: e.opt_i64("e_rev")?,
        origin: e.opt_uuid("e_origin_node_id")?,
    };
    Ok((revision, entity))
}

/// An `object_version_history` row selected with [`history_cols!`].
pub(crate) fn history_from_row(row: &SqliteRow) -> StoreResult<HistoryRecord> {
    let r = RowReader::new(row, "object_version_history");
    Ok(HistoryRecord {
        id: r.uuid("id")?,
        entity_uuid: r.uuid("entity_uuid")?,
        entity_type: r.text("entity_type")?.to_owned(),
        source_node_id: r.opt_uuid("source_node_id")?,
        arrival_time: r.ts("arrival_time")?,
        serialized_data: r.json("serialized_data")?,
        conflict_resolution: r.text("conflict_resolution")?.to_owned(),
        audit_id: r.opt_uuid("audit_id")?,
    })
}

/// A `conflict_audit` row selected with [`audit_cols!`].
pub(crate) fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditRecord> {
    let r = RowReader::new(row, "conflict_audit");
    Ok(AuditRecord {
        id: r.uuid("id")?,
        at: r.ts("at")?,
        entity_type: r.text("entity_type")?.to_owned(),
        entity_uuid: r.uuid("entity_uuid")?,
        node_id: r.uuid("node_id")?,
        packet_no: r.i64("packet_no")?,
        strategy: r.text("strategy")?.to_owned(),
        outcome: r.text("outcome")?.to_owned(),
        master_rev: r.opt_i64("master_rev")?,
        base_rev: r.opt_i64("base_rev")?,
        result_rev: r.opt_i64("result_rev")?,
        detail: r.text("detail")?.to_owned(),
    })
}
