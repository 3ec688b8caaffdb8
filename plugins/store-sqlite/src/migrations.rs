//! The schema, as an ordered list of versioned migrations applied at open.
//!
//! A database records the migrations applied to it in
//! `hubsync_schema_migrations`. Opening applies the missing ones, each in
//! its own `BEGIN IMMEDIATE` transaction (so two processes opening the same
//! file at once cannot both apply one), and refuses a database whose version
//! is newer than this code knows (`StoreError::TooNew`): an older binary
//! must never write into a schema it does not understand.
//!
//! Never edit a released migration; append a new one.

use hubsync_core::entity::now_utc;
use hubsync_core::store::{StoreError, StoreResult};
use sqlx::{Connection, SqliteConnection};

use crate::codec::ts_text;

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
    Migration {
        version: 8,
        name: "references keyed by interned integer keys",
        sql: V8_INTERNED_REFERENCE_KEYS,
    },
    Migration {
        version: 9,
        name: "references' pointers interned",
        sql: V9_INTERNED_POINTERS,
    },
];

/// `ref_pointers`: one integer per JSON pointer a reference was found at
/// (a few per schema). `entity_refs` is rebuilt with the pointer's id in
/// place of its text: a reference row is then three integers in both of its
/// B-trees, ~10 bytes instead of ~30. The target index takes references
/// wherever their targets sort, so with thousands of targets every row
/// dirties its own page; at a third of the size, a transaction's writes
/// touch far fewer pages (docs/benchmarks.md, session 19: 100,000 reports
/// with 3,000 targets, 61 → 40 µs per report of reference writes and
/// commit). Pointers are never removed.
const V9_INTERNED_POINTERS: &str = r#"
CREATE TABLE ref_pointers (
    id      INTEGER PRIMARY KEY,
    pointer TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO ref_pointers (pointer) SELECT DISTINCT pointer FROM entity_refs;

CREATE TABLE entity_refs_v9 (
    source_id  INTEGER NOT NULL,
    pointer_id INTEGER NOT NULL,
    target_id  INTEGER NOT NULL,
    PRIMARY KEY (source_id, pointer_id, target_id)
) WITHOUT ROWID;
INSERT INTO entity_refs_v9 (source_id, pointer_id, target_id)
    SELECT r.source_id, p.id, r.target_id
    FROM entity_refs AS r JOIN ref_pointers AS p ON p.pointer = r.pointer;
DROP TABLE entity_refs;
ALTER TABLE entity_refs_v9 RENAME TO entity_refs;
CREATE INDEX entity_refs_target ON entity_refs (target_id);
"#;

/// `entity_keys`: one integer key per (type, uuid) that a reference names
/// as its source or target (a target need not exist yet). `entity_refs`
/// is rebuilt on those keys: its rows were ~130 bytes of text in two
/// B-trees (the primary key and `entity_refs_target`), five per report,
/// and the largest part of both a sync's SQL time and a client's file;
/// keyed by integers they are ~20 (docs/benchmarks.md, session 17:
/// `refs-joined`, 1.59× on the rows' floor, half the file). Keys are never
/// removed: a purged entity's key stays, unused.
const V8_INTERNED_REFERENCE_KEYS: &str = r#"
CREATE TABLE entity_keys (
    id          INTEGER PRIMARY KEY,
    entity_type TEXT NOT NULL,
    uuid        TEXT NOT NULL,
    UNIQUE (uuid, entity_type)
);
INSERT OR IGNORE INTO entity_keys (entity_type, uuid)
    SELECT source_type, source_uuid FROM entity_refs;
INSERT OR IGNORE INTO entity_keys (entity_type, uuid)
    SELECT target_type, target_uuid FROM entity_refs;

CREATE TABLE entity_refs_v8 (
    source_id INTEGER NOT NULL,
    pointer   TEXT NOT NULL,
    target_id INTEGER NOT NULL,
    PRIMARY KEY (source_id, pointer, target_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO entity_refs_v8 (source_id, pointer, target_id)
    SELECT s.id, r.pointer, t.id
    FROM entity_refs AS r
    JOIN entity_keys AS s ON s.uuid = r.source_uuid AND s.entity_type = r.source_type
    JOIN entity_keys AS t ON t.uuid = r.target_uuid AND t.entity_type = r.target_type;
DROP TABLE entity_refs;
ALTER TABLE entity_refs_v8 RENAME TO entity_refs;
CREATE INDEX entity_refs_target ON entity_refs (target_id);
"#;

/// `sync_nodes.prev_out_up_to_rev`: the master may build its next packet
/// for a node that holds the last one but has not acknowledged it yet, and
/// keeps the revision range of both (docs/protocol.md, "Built ahead for a
/// download").
const V7_PREV_OUT_UP_TO_REV: &str = "ALTER TABLE sync_nodes ADD COLUMN prev_out_up_to_rev INTEGER;";

/// `sync_nodes.prev_results`: the master keeps the results of a node's
/// last two packets, so that a node may send its next packet before it has
/// applied the answer to the one before (docs/protocol.md).
const V6_PREV_RESULTS: &str = "ALTER TABLE sync_nodes ADD COLUMN prev_results TEXT;";

/// `node_scopes`: the scope each node receives and a change waiting to take
/// effect. `node_holdings`: what the master sent each scoped node, so that
/// a row leaving the scope can be evicted from exactly the nodes that have
/// it (unscoped nodes have no rows here).
const V5_ROUTING: &str = r#"
CREATE TABLE node_scopes (
    node_id     TEXT PRIMARY KEY,
    scope       TEXT,
    has_pending INTEGER NOT NULL DEFAULT 0,
    pending     TEXT,
    resend_own_to INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE node_holdings (
    node_id      TEXT NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_uuid  TEXT NOT NULL,
    since_packet INTEGER NOT NULL,
    evicted_in   INTEGER,
    PRIMARY KEY (node_id, entity_uuid, entity_type)
) WITHOUT ROWID;
"#;

/// `entity_refs`: the references live entities hold (so that a delete finds
/// its dependants by index). `held_changes`: changes received before an
/// entity they reference, kept until it arrives.
const V4_REFERENCES_AND_HELD: &str = r#"
CREATE TABLE entity_refs (
    source_type TEXT NOT NULL,
    source_uuid TEXT NOT NULL,
    pointer     TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_uuid TEXT NOT NULL,
    PRIMARY KEY (source_type, source_uuid, pointer, target_uuid)
) WITHOUT ROWID;
CREATE INDEX entity_refs_target ON entity_refs (target_uuid, target_type);

CREATE TABLE held_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source_node  TEXT NOT NULL,
    entity_type  TEXT NOT NULL,
    uuid         TEXT NOT NULL,
    change       TEXT NOT NULL,
    waiting_type TEXT NOT NULL,
    waiting_for  TEXT NOT NULL,
    packet_no    INTEGER NOT NULL,
    held_at      TEXT NOT NULL,
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
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    node_id   TEXT,
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
    uuid           TEXT NOT NULL,
    rev            INTEGER NOT NULL,
    updated_at     TEXT NOT NULL,
    is_deleted     INTEGER NOT NULL CHECK (is_deleted IN (0, 1)),
    data           TEXT NOT NULL,
    origin_node_id TEXT,
    PRIMARY KEY (entity_type, uuid, rev)
);
"#;

/// The schema version this code creates and understands.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS hubsync_schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)";

const V1_INITIAL: &str = r#"
CREATE TABLE hubsync_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Every synchronized entity, of every type. `data` is the business JSON;
-- `rev` is the master revision of this version (master) or the one it is
-- based on (client); `origin_node_id` the node whose write produced it.
CREATE TABLE entities (
    entity_type    TEXT NOT NULL,
    uuid           TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    is_deleted     INTEGER NOT NULL CHECK (is_deleted IN (0, 1)),
    data           TEXT NOT NULL,
    rev            INTEGER,
    origin_node_id TEXT,
    PRIMARY KEY (entity_type, uuid)
);

CREATE TABLE sync_nodes (
    id                 TEXT PRIMARY KEY NOT NULL,
    code               TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('master', 'client')),
    is_self            INTEGER NOT NULL CHECK (is_self IN (0, 1)),
    token_hash         TEXT,
    revoked            INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    created_at         TEXT NOT NULL,
    last_sync_in       TEXT,
    last_sync_out      TEXT,
    received_packet_no INTEGER NOT NULL,
    sent_packet_no     INTEGER NOT NULL,
    out_packet_no      INTEGER NOT NULL,
    acked_rev          INTEGER NOT NULL,
    out_up_to_rev      INTEGER NOT NULL,
    last_results       TEXT,
    schema_version     TEXT
);
-- Authentication looks a client up by the hash of its token.
CREATE UNIQUE INDEX sync_nodes_token_hash ON sync_nodes (token_hash)
    WHERE token_hash IS NOT NULL;
-- A store describes exactly one node as itself.
CREATE UNIQUE INDEX sync_nodes_one_self ON sync_nodes (is_self) WHERE is_self = 1;

-- One table, two uses, told apart by `kind`:
--  * 'queue': a client's outgoing queue. `node_id` is the target node,
--    `packet_no` NULL until the row is sent; rows are deleted once their
--    packet is acknowledged. `id` is the row's place in the queue.
--  * 'log': the master's change log. `id` is the revision; `node_id` NULL
--    for a revision every node must learn, or the one node it is addressed
--    to. Only the latest revision per (entity, target) is kept.
-- AUTOINCREMENT: ids (revisions) are never reused, even after the row with
-- the highest id is deleted.
CREATE TABLE sync_changes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL CHECK (kind IN ('queue', 'log')),
    node_id        TEXT REFERENCES sync_nodes (id),
    entity_type    TEXT NOT NULL,
    entity_uuid    TEXT NOT NULL,
    operation      TEXT NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    packet_no      INTEGER,
    created_at     TEXT NOT NULL,
    origin_node_id TEXT,
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
-- Queue: unsent rows in order (packet_no IS NULL), a packet's rows, the
-- acknowledged prefix (packet_no <= ?), counts per target.
CREATE INDEX sync_changes_queue_order
    ON sync_changes (node_id, packet_no, id)
    WHERE kind = 'queue';
-- Log: the one revision per (entity, target); a NULL target is its own key.
CREATE UNIQUE INDEX sync_changes_log_entity
    ON sync_changes (entity_type, entity_uuid, ifnull(node_id, ''))
    WHERE kind = 'log';
-- revisions_after / count_revisions_after need no index of their own: they
-- are a range scan of the primary key (id > ?), which is also revision order.

CREATE TABLE object_version_history (
    id                  TEXT PRIMARY KEY NOT NULL,
    entity_uuid         TEXT NOT NULL,
    entity_type         TEXT NOT NULL,
    source_node_id      TEXT,
    arrival_time        TEXT NOT NULL,
    serialized_data     TEXT NOT NULL,
    conflict_resolution TEXT NOT NULL,
    audit_id            TEXT
);
CREATE INDEX object_version_history_entity
    ON object_version_history (entity_uuid, arrival_time);

CREATE TABLE conflict_audit (
    id          TEXT PRIMARY KEY NOT NULL,
    at          TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    packet_no   INTEGER NOT NULL,
    strategy    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    master_rev  INTEGER,
    base_rev    INTEGER,
    result_rev  INTEGER,
    detail      TEXT NOT NULL
);
CREATE INDEX conflict_audit_entity ON conflict_audit (entity_uuid, at);
CREATE INDEX conflict_audit_at ON conflict_audit (at);
"#;

/// Brings the database on `conn` to [`latest_version`]. `url` is for errors.
pub(crate) async fn migrate(conn: &mut SqliteConnection, url: &str) -> StoreResult<()> {
    let open_err = |what: &str, e: sqlx::Error| StoreError::Open {
        url: url.to_string(),
        reason: format!("{what}: {e}"),
    };
    sqlx::raw_sql(MIGRATIONS_TABLE)
        .execute(&mut *conn)
        .await
        .map_err(|e| open_err("creating the migrations table", e))?;

    let latest = latest_version();
    // Outside a transaction first, so that opening an up-to-date database
    // takes no write lock at all.
    let found = current_version(&mut *conn)
        .await
        .map_err(|e| open_err("reading the schema version", e))?;
    if found > latest {
        return Err(StoreError::TooNew {
            url: url.to_string(),
            found,
            supported: latest,
        });
    }
    if found == latest {
        return Ok(());
    }
    for migration in MIGRATIONS {
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| open_err("starting a migration", e))?;
        // Read inside the transaction: another process may have migrated
        // since we last looked.
        let found = current_version(&mut tx)
            .await
            .map_err(|e| open_err("reading the schema version", e))?;
        if found > latest {
            return Err(StoreError::TooNew {
                url: url.to_string(),
                found,
                supported: latest,
            });
        }
        if found >= migration.version {
            continue; // dropping `tx` rolls the empty transaction back
        }
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| open_err("applying a schema migration", e))?;
        sqlx::query("INSERT INTO hubsync_schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(migration.version)
            .bind(ts_text(now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(|e| open_err("recording a schema migration", e))?;
        tx.commit()
            .await
            .map_err(|e| open_err("committing a schema migration", e))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied schema migration"
        );
    }
    Ok(())
}

async fn current_version(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT ifnull(max(version), 0) FROM hubsync_schema_migrations")
        .fetch_one(conn)
        .await
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
