//! The schema, as an ordered list of versioned migrations applied at open.
//!
//! A database records the migrations applied to it in
//! `hubsync_schema_migrations`. Opening runs in ONE transaction that first
//! takes a transaction-scoped advisory lock ([`MIGRATION_LOCK`]), so that
//! several hosts starting at once against a fresh database cannot both
//! create the tables (PostgreSQL DDL is transactional: a failed migration
//! leaves nothing behind). A database whose version is newer than this code
//! knows is refused (`StoreError::TooNew`): an older binary must never write
//! into a schema it does not understand.
//!
//! The logical tables and their semantics are those of the SQLite backend;
//! the types are PostgreSQL's own (UUID, TIMESTAMPTZ, BIGINT, BOOLEAN,
//! JSONB).
//!
//! Never edit a released migration; append a new one.

use hubsync_core::entity::now_utc;
use hubsync_core::store::{StoreError, StoreResult};
use sqlx::PgPool;

use crate::locks::MIGRATION_LOCK;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: V1_INITIAL,
    },
    Migration {
        version: 2,
        name: "entity versions (base versions for three-way merges)",
        sql: V2_ENTITY_VERSIONS,
    },
    Migration {
        version: 3,
        name: "security events",
        sql: V3_SECURITY_EVENTS,
    },
    Migration {
        version: 4,
        name: "references index and held changes",
        sql: V4_REFERENCES_AND_HELD,
    },
    Migration {
        version: 5,
        name: "routing scopes and what scoped nodes hold",
        sql: V5_ROUTING,
    },
    Migration {
        version: 6,
        name: "the results of a node's packet before its last",
        sql: V6_PREV_RESULTS,
    },
    Migration {
        version: 7,
        name: "the revision range of a master packet built ahead",
        sql: V7_PREV_OUT_UP_TO_REV,
    },
];

/// `sync_nodes.prev_out_up_to_rev`: the master may build its next packet
/// for a node that holds the last one but has not acknowledged it yet, and
/// keeps the revision range of both (docs/protocol.md, "Built ahead for a
/// download").
const V7_PREV_OUT_UP_TO_REV: &str = "ALTER TABLE sync_nodes ADD COLUMN prev_out_up_to_rev BIGINT;";

/// `sync_nodes.prev_results`: the master keeps the results of a node's
/// last two packets, so that a node may send its next packet before it has
/// applied the answer to the one before (docs/protocol.md).
const V6_PREV_RESULTS: &str = "ALTER TABLE sync_nodes ADD COLUMN prev_results JSONB;";

/// `node_scopes`: the scope each node receives and a change waiting to take
/// effect. `node_holdings`: what the master sent each scoped node, so that
/// a row leaving the scope can be evicted from exactly the nodes that have
/// it (unscoped nodes have no rows here).
const V5_ROUTING: &str = r#"
CREATE TABLE node_scopes (
    node_id     UUID PRIMARY KEY,
    scope       JSONB,
    has_pending BOOLEAN NOT NULL DEFAULT FALSE,
    pending     JSONB,
    resend_own_to BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE node_holdings (
    node_id      UUID NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_uuid  UUID NOT NULL,
    since_packet BIGINT NOT NULL,
    evicted_in   BIGINT,
    PRIMARY KEY (node_id, entity_uuid, entity_type)
);
"#;

/// `entity_refs`: the references live entities hold (so that a delete finds
/// its dependants by index). `held_changes`: changes received before an
/// entity they reference, kept until it arrives.
const V4_REFERENCES_AND_HELD: &str = r#"
CREATE TABLE entity_refs (
    source_type TEXT NOT NULL,
    source_uuid UUID NOT NULL,
    pointer     TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_uuid UUID NOT NULL,
    PRIMARY KEY (source_type, source_uuid, pointer, target_uuid)
);
CREATE INDEX entity_refs_target ON entity_refs (target_uuid, target_type);

CREATE TABLE held_changes (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_node  UUID NOT NULL,
    entity_type  TEXT NOT NULL,
    uuid         UUID NOT NULL,
    change       JSONB NOT NULL,
    waiting_type TEXT NOT NULL,
    waiting_for  UUID NOT NULL,
    packet_no    BIGINT NOT NULL,
    held_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (source_node, entity_type, uuid)
);
CREATE INDEX held_changes_waiting ON held_changes (waiting_for);
CREATE INDEX held_changes_at ON held_changes (held_at);
"#;

/// The security event log (authentication failures, lockouts, denials,
/// limit violations, token issue/rotate/revoke). Never holds a token, key
/// or entity data. `id` orders events recorded in the same microsecond.
const V3_SECURITY_EVENTS: &str = r#"
CREATE TABLE security_events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    kind      TEXT NOT NULL,
    node_id   UUID,
    node_code TEXT,
    peer      TEXT,
    detail    TEXT NOT NULL
);
CREATE INDEX security_events_at ON security_events (at, id);
CREATE INDEX security_events_node ON security_events (node_id, at, id);
"#;

/// Master only: past versions of entities by revision, so that a conflict
/// can be merged against the version both sides started from.
const V2_ENTITY_VERSIONS: &str = r#"
CREATE TABLE entity_versions (
    entity_type    TEXT NOT NULL,
    uuid           UUID NOT NULL,
    rev            BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    is_deleted     BOOLEAN NOT NULL,
    data           JSONB NOT NULL,
    origin_node_id UUID,
    PRIMARY KEY (entity_type, uuid, rev)
);
"#;

/// The schema version this code creates and understands.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS hubsync_schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)";

const V1_INITIAL: &str = r#"
CREATE TABLE hubsync_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every synchronized entity, of every type. `data` is the business JSON
-- (JSONB: key order is not kept, U+0000 is refused before it gets here);
-- `rev` is the master revision of this version (master) or the one it is
-- based on (client); `origin_node_id` the node whose write produced it.
CREATE TABLE entities (
    entity_type    TEXT NOT NULL,
    uuid           UUID NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    is_deleted     BOOLEAN NOT NULL,
    data           JSONB NOT NULL,
    rev            BIGINT,
    origin_node_id UUID,
    PRIMARY KEY (entity_type, uuid)
);

CREATE TABLE sync_nodes (
    id                 UUID PRIMARY KEY,
    code               TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('master', 'client')),
    is_self            BOOLEAN NOT NULL,
    token_hash         TEXT,
    revoked            BOOLEAN NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    last_sync_in       TIMESTAMPTZ,
    last_sync_out      TIMESTAMPTZ,
    received_packet_no BIGINT NOT NULL,
    sent_packet_no     BIGINT NOT NULL,
    out_packet_no      BIGINT NOT NULL,
    acked_rev          BIGINT NOT NULL,
    out_up_to_rev      BIGINT NOT NULL,
    last_results       JSONB,
    schema_version     TEXT
);
-- Authentication looks a client up by the hash of its token.
CREATE UNIQUE INDEX sync_nodes_token_hash ON sync_nodes (token_hash)
    WHERE token_hash IS NOT NULL;
-- A store describes exactly one node as itself.
CREATE UNIQUE INDEX sync_nodes_one_self ON sync_nodes (is_self) WHERE is_self;

-- One table, two uses, told apart by `kind` (as in the SQLite backend):
--  * 'queue': a client's outgoing queue. `node_id` is the target node,
--    `packet_no` NULL until the row is sent; rows are deleted once their
--    packet is acknowledged. `id` is the row's place in the queue.
--  * 'log': the master's change log. `id` is the revision; `node_id` NULL
--    for a revision every node must learn, or the one node it is addressed
--    to. Only the latest revision per (entity, target) is kept.
-- An identity column: ids (revisions) are never reused. Allocation order is
-- commit order only because appending a revision takes the write lock
-- (see locks.rs).
CREATE TABLE sync_changes (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('queue', 'log')),
    node_id        UUID REFERENCES sync_nodes (id),
    entity_type    TEXT NOT NULL,
    entity_uuid    UUID NOT NULL,
    operation      TEXT NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    packet_no      BIGINT,
    created_at     TIMESTAMPTZ NOT NULL,
    origin_node_id UUID,
    CHECK (kind = 'log' OR node_id IS NOT NULL),
    CHECK (kind = 'queue' OR packet_no IS NULL)
);
-- Queue: at most one unsent row per (target, entity); queue_change finds it.
CREATE UNIQUE INDEX sync_changes_queue_unsent
    ON sync_changes (node_id, entity_type, entity_uuid)
    WHERE kind = 'queue' AND packet_no IS NULL;
-- Queue: has_queued (sent or not).
CREATE INDEX sync_changes_queue_entity
    ON sync_changes (node_id, entity_type, entity_uuid)
    WHERE kind = 'queue';
-- Queue: unsent rows in order, a packet's rows, the acknowledged prefix,
-- counts per target.
CREATE INDEX sync_changes_queue_order
    ON sync_changes (node_id, packet_no, id)
    WHERE kind = 'queue';
-- Log: the one revision per (entity, target); a NULL target is its own key.
CREATE UNIQUE INDEX sync_changes_log_entity
    ON sync_changes (entity_type, entity_uuid,
                     coalesce(node_id, '00000000-0000-0000-0000-000000000000'::uuid))
    WHERE kind = 'log';
-- Log: revisions_after / count_revisions_after, in revision order.
CREATE INDEX sync_changes_log_order ON sync_changes (id) WHERE kind = 'log';

-- `seq` orders versions that arrived in the same microsecond (SQLite's
-- rowid does that there).
CREATE TABLE object_version_history (
    id                  UUID PRIMARY KEY,
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY,
    entity_uuid         UUID NOT NULL,
    entity_type         TEXT NOT NULL,
    source_node_id      UUID,
    arrival_time        TIMESTAMPTZ NOT NULL,
    serialized_data     JSONB NOT NULL,
    conflict_resolution TEXT NOT NULL,
    audit_id            UUID
);
CREATE INDEX object_version_history_entity
    ON object_version_history (entity_uuid, arrival_time, seq);

CREATE TABLE conflict_audit (
    id          UUID PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    at          TIMESTAMPTZ NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid UUID NOT NULL,
    node_id     UUID NOT NULL,
    packet_no   BIGINT NOT NULL,
    strategy    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    master_rev  BIGINT,
    base_rev    BIGINT,
    result_rev  BIGINT,
    detail      TEXT NOT NULL
);
CREATE INDEX conflict_audit_entity ON conflict_audit (entity_uuid, at, seq);
CREATE INDEX conflict_audit_at ON conflict_audit (at, seq);
"#;

/// Brings the database behind `pool` to [`latest_version`]. `url` is for
/// errors (shown without its password).
pub(crate) async fn migrate(pool: &PgPool, url: &str) -> StoreResult<()> {
    let open_err = |what: &str, e: sqlx::Error| StoreError::Open {
        url: url.to_string(),
        reason: format!("{what}: {e}"),
    };
    let latest = latest_version();
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| open_err("starting the schema migration", e))?;
    // Before anything else: concurrent `CREATE TABLE IF NOT EXISTS` of the
    // same table can fail in PostgreSQL; under the lock only one host
    // migrates and the others then find the schema up to date.
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(MIGRATION_LOCK.0)
        .bind(MIGRATION_LOCK.1)
        .execute(&mut *tx)
        .await
        .map_err(|e| open_err("waiting for the migration lock", e))?;
    sqlx::raw_sql(MIGRATIONS_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(|e| open_err("creating the migrations table", e))?;
    let found: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM hubsync_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| open_err("reading the schema version", e))?;
    if found > latest {
        return Err(StoreError::TooNew {
            url: url.to_string(),
            found,
            supported: latest,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| open_err("applying a schema migration", e))?;
        sqlx::query(
            "INSERT INTO hubsync_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_utc())
        .execute(&mut *tx)
        .await
        .map_err(|e| open_err("recording a schema migration", e))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied schema migration"
        );
    }
    tx.commit()
        .await
        .map_err(|e| open_err("committing the schema migration", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {:?}", m.name);
        }
    }
}
