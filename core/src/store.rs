//! The `Store` trait: everything the engine needs from a storage backend.
//!
//! The engine decides *what* to write; a backend decides *how* in its SQL
//! dialect. All writes go through a [`StoreTx`], so that a local write and
//! its change registration, or a whole packet and its acknowledgement, are
//! committed together or not at all. A transaction dropped without
//! [`StoreTx::commit`] rolls back.
//!
//! Backends must serialize write transactions that touch the same node's
//! packet state, and transactions that read an entity to decide a write
//! (SQLite does so by having a single writer; PostgreSQL with a row lock on
//! the node and a transaction-scoped advisory lock, see
//! `hubsync-store-postgres`). Every backend runs the same conformance suite,
//! `hubsync-store-testkit`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{Entity, Operation};
use crate::security::{SecurityEvent, SecurityEventQuery};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("could not open the store at {url}: {reason}")]
    Open { url: String, reason: String },
    #[error(
        "the database at {url} has schema version {found}, newer than this hubsync supports ({supported}); upgrade hubsync or use a backup made by this version"
    )]
    TooNew {
        url: String,
        found: i64,
        supported: i64,
    },
    #[error("storage error while {op}: {source}")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "stored data is corrupt ({what}); restore from a backup or run `hubsync status` for details"
    )]
    Corrupt { what: String },
    #[error("no storage backend for URL scheme '{scheme}' (compiled in: {available}); {hint}")]
    UnknownScheme {
        scheme: String,
        available: String,
        hint: String,
    },
}

impl StoreError {
    pub fn backend(op: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend {
            op,
            source: Box::new(e),
        }
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt { what: what.into() }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connection-pool settings, from `[storage]` in the host's configuration.
/// Each backend uses what applies to it and documents what it ignores
/// (SQLite keeps one writer connection and a few readers whatever is set
/// here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long `begin()` or a read waits for a free connection before it
    /// fails.
    pub acquire_timeout: std::time::Duration,
    /// An idle connection above `min_connections` is closed after this long;
    /// `None` keeps it.
    pub idle_timeout: Option<std::time::Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: std::time::Duration::from_secs(30),
            idle_timeout: Some(std::time::Duration::from_secs(600)),
        }
    }
}

/// The role a node row plays in this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Master,
    Client,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Client => "client",
        }
    }
    pub fn parse(s: &str) -> Option<NodeRole> {
        match s {
            "master" => Some(NodeRole::Master),
            "client" => Some(NodeRole::Client),
            _ => None,
        }
    }
}

/// A participant of the sync network (`sync_nodes`), with the packet state
/// of this store's exchange with it. On the master there is a row per client
/// (and one for itself); on a client, one for itself and one for the master.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    pub role: NodeRole,
    /// True for the row describing this store's own node.
    pub is_self: bool,
    /// SHA-256 of the node's token, hex (master only, client rows).
    pub token_hash: Option<String>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    /// Last time data from this node was received and applied.
    pub last_sync_in: Option<DateTime<Utc>>,
    /// Last time data was sent to this node.
    pub last_sync_out: Option<DateTime<Utc>>,
    /// Last packet number from this node that this store applied.
    pub received_packet_no: i64,
    /// Last packet number of ours that this node confirmed.
    pub sent_packet_no: i64,
    /// Last packet number we built for this node (> sent_packet_no while a
    /// packet is in flight).
    pub out_packet_no: i64,
    /// Master only: the highest revision this node has acknowledged.
    pub acked_rev: i64,
    /// Master only: the highest revision covered by packet `out_packet_no`.
    pub out_up_to_rev: i64,
    /// Master only: while two of our packets are unacknowledged
    /// (`out_packet_no - 1` and `out_packet_no`, the second built ahead for
    /// a node that said it holds the first; docs/protocol.md, "Built ahead
    /// for a download"), the highest revision the first covers. None while
    /// at most one is.
    pub prev_out_up_to_rev: Option<i64>,
    /// Master only: the results returned for packet `received_packet_no`
    /// (JSON text of a list of `ChangeResult`), replayed when that packet
    /// arrives again. Text: it is parsed only for a replay, not with the
    /// node row at every exchange (500 results are ~65 KB).
    pub last_results: Option<String>,
    /// Master only: the results returned for packet `received_packet_no -
    /// 1`, in the same form: a node may send its next packet before it has
    /// applied the answer to the one before (docs/protocol.md, "Sent before
    /// the answer is applied"), and after a crash in between it sends that
    /// one again and must get its results, not an empty answer.
    pub prev_results: Option<String>,
    /// The schema set version the node reported last.
    pub schema_version: Option<String>,
}

impl NodeRecord {
    pub fn new(id: Uuid, code: &str, name: &str, role: NodeRole, is_self: bool) -> Self {
        NodeRecord {
            id,
            code: code.to_string(),
            name: name.to_string(),
            role,
            is_self,
            token_hash: None,
            revoked: false,
            created_at: crate::entity::now_utc(),
            last_sync_in: None,
            last_sync_out: None,
            received_packet_no: 0,
            sent_packet_no: 0,
            out_packet_no: 0,
            acked_rev: 0,
            out_up_to_rev: 0,
            prev_out_up_to_rev: None,
            last_results: None,
            prev_results: None,
            schema_version: None,
        }
    }
}

/// Routing state of one node on the master (store migration 5): the scope
/// it receives (`None`: everything) and a scope change that takes effect
/// with the next new packet built for it. The scope is JSON in the form
/// documented in docs/operations.md ("Routing"); the engine parses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeRecord {
    pub scope: Option<Value>,
    /// `Some(new)`: a change waiting (`Some(None)` clears the scope).
    pub pending: Option<Option<Value>>,
    /// The log revision the last scope change took effect at: up to it, the
    /// node's own versions are sent back to it too (it may have dropped
    /// them while scoped).
    pub resend_own_to: i64,
}

/// What the master sent a scoped node of one entity: first sent in packet
/// `since_packet`; `evicted_in` is the packet that told the node to drop
/// it (None while the node holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub since_packet: i64,
    pub evicted_in: Option<i64>,
}

/// A scope's rule for one entity type, as [`ScopeFilter`] carries it:
/// `None`, every row; `Some(fields)`, rows where every listed field holds
/// one of its strings.
pub type FieldRule = Option<Vec<(String, Vec<String>)>>;

/// What a scoped node's packet can carry, in a form a backend can test in
/// its query ([`StoreTx::scoped_revisions_after`]). It describes a superset
/// of the rows the scope matches: a rule the backend cannot express (a
/// value that is not a string) is left out, which only widens it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeFilter {
    /// Per entity type the scope lists: `None`, every row; `Some(fields)`,
    /// rows where every listed field (`uuid`: the entity's own id) holds
    /// one of the strings (a JSON string equal to it).
    pub types: Vec<(String, FieldRule)>,
    /// Rows a live holding of the node refers to are candidates too.
    pub with_references: bool,
}

/// A page of candidate rows for a scoped node's packet.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedPage {
    /// The candidates, in revision order.
    pub rows: Vec<(Revision, Entity)>,
    /// The highest revision examined: a revision in `(after_rev,
    /// scanned_to]` that is not in `rows` is not a candidate.
    pub scanned_to: i64,
    /// Whether revisions above `scanned_to` may remain.
    pub more: bool,
}

impl ScopedPage {
    /// The page of `rows`, the candidates (at most `limit`) a backend found
    /// in a window of `scanned` log rows (of at most `window`) ending at
    /// revision `last`: a full page ends at its last candidate.
    pub fn from_window(
        rows: Vec<(Revision, Entity)>,
        limit: u32,
        window: u32,
        scanned: i64,
        last: i64,
    ) -> ScopedPage {
        let full = rows.len() >= limit as usize;
        ScopedPage {
            scanned_to: match rows.last() {
                Some((r, _)) if full => r.rev,
                _ => last,
            },
            more: full || scanned >= i64::from(window),
            rows,
        }
    }
}

/// A row of a client's outgoing queue (`sync_changes` with a target node).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedChange {
    pub id: i64,
    pub node_id: Uuid,
    pub entity_type: String,
    pub entity_uuid: Uuid,
    pub operation: Operation,
    pub packet_no: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// A row of the master's change log: the latest change of one entity, at
/// revision `rev`, either for every node (`target` = None) or addressed to
/// one node (for example a conflict outcome its origin must learn).
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub rev: i64,
    pub target: Option<Uuid>,
    pub entity_type: String,
    pub entity_uuid: Uuid,
    pub operation: Operation,
    pub origin: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// An entity's version stamp, without its data
/// ([`StoreTx::entity_stamps`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityStamp {
    pub entity_type: String,
    pub uuid: Uuid,
    pub updated_at: DateTime<Utc>,
    pub rev: Option<i64>,
}

impl EntityStamp {
    /// The stamp of a stored entity.
    pub fn of(e: &Entity) -> Self {
        EntityStamp {
            entity_type: e.entity_type.clone(),
            uuid: e.uuid,
            updated_at: e.updated_at,
            rev: e.rev,
        }
    }

    /// Of [`StoreTx::raise_revs`] items naming the same entity, the highest
    /// revision: what raising them one by one leaves.
    pub fn highest_per_entity(items: &[(String, Uuid, i64)]) -> Vec<(&str, Uuid, i64)> {
        let mut top: std::collections::HashMap<(&str, Uuid), i64> =
            std::collections::HashMap::with_capacity(items.len());
        for (t, u, rev) in items {
            let slot = top.entry((t.as_str(), *u)).or_insert(*rev);
            *slot = (*slot).max(*rev);
        }
        top.into_iter().map(|((t, u), rev)| (t, u, rev)).collect()
    }
}

/// A revision to append in a batch ([`StoreTx::append_revisions`]), its
/// number reserved beforehand ([`StoreTx::reserve_revisions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRevision {
    pub rev: i64,
    pub target: Option<Uuid>,
    pub entity_type: String,
    pub entity_uuid: Uuid,
    pub operation: Operation,
    pub origin: Option<Uuid>,
}

impl NewRevision {
    /// Of revisions with the same entity and target, the one with the
    /// highest number (what appending them one by one leaves in the log),
    /// in number order.
    pub fn latest_per_key(revisions: &[NewRevision]) -> Vec<&NewRevision> {
        let mut last: std::collections::HashMap<(&str, Uuid, Option<Uuid>), &NewRevision> =
            std::collections::HashMap::with_capacity(revisions.len());
        for r in revisions {
            let slot = last
                .entry((r.entity_type.as_str(), r.entity_uuid, r.target))
                .or_insert(r);
            if r.rev > slot.rev {
                *slot = r;
            }
        }
        let mut picked: Vec<&NewRevision> = last.into_values().collect();
        picked.sort_by_key(|r| r.rev);
        picked
    }
}

/// The references of several sources, as [`StoreTx::set_references_many`]
/// takes them.
pub type SourceReferences = ((String, Uuid), Vec<EntityRef>);

/// The reference rows a batch replacement ([`StoreTx::set_references_many`])
/// inserts: `(source type, source, reference)`, of a source given twice
/// only its last item's (what replacing them one by one leaves).
pub fn references_to_insert(items: &[SourceReferences]) -> Vec<(&str, Uuid, &EntityRef)> {
    let mut last: std::collections::HashMap<(&str, Uuid), usize> =
        std::collections::HashMap::with_capacity(items.len());
    for (i, ((t, u), _)) in items.iter().enumerate() {
        last.insert((t.as_str(), *u), i);
    }
    items
        .iter()
        .enumerate()
        .filter(|(i, ((t, u), _))| last.get(&(t.as_str(), *u)) == Some(i))
        .flat_map(|(_, ((t, u), refs))| refs.iter().map(move |r| (t.as_str(), *u, r)))
        .collect()
}

/// A stored version of an entity (`object_version_history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub id: Uuid,
    pub entity_uuid: Uuid,
    pub entity_type: String,
    /// The node that originated this version.
    pub source_node_id: Option<Uuid>,
    /// When this version arrived at this store.
    pub arrival_time: DateTime<Utc>,
    /// The complete entity: framework fields and data.
    pub serialized_data: Value,
    /// How the conflict that produced this record was resolved.
    pub conflict_resolution: String,
    /// The audit record of that conflict.
    pub audit_id: Option<Uuid>,
}

/// One conflict decision (the audit log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub entity_type: String,
    pub entity_uuid: Uuid,
    /// The node whose change met the conflict.
    pub node_id: Uuid,
    /// The packet that carried the change.
    pub packet_no: i64,
    pub strategy: String,
    pub outcome: String,
    /// Master revision when the change arrived, and the one it was based on.
    pub master_rev: Option<i64>,
    pub base_rev: Option<i64>,
    /// Master revision after the decision.
    pub result_rev: Option<i64>,
    pub detail: String,
}

/// A change received but not applied yet because an entity it references is
/// not in this store (contract §7.8). It is applied when that entity
/// arrives, or handed to a person when it never does.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldChange {
    /// Assigned by the store (0 before it is stored).
    pub id: i64,
    /// The node the change came from (on a client, the master).
    pub source_node: Uuid,
    pub entity_type: String,
    pub uuid: Uuid,
    /// The change as it arrived (a `WireChange` in JSON).
    pub change: Value,
    /// The first missing reference: its type and uuid.
    pub waiting_type: String,
    pub waiting_for: Uuid,
    /// The packet that carried it.
    pub packet_no: i64,
    pub held_at: DateTime<Utc>,
}

/// One reference held by a live entity: `source` refers to `target` at
/// `pointer` (the reference's location, e.g. `/lines/*/employee`). The
/// store keeps these as an index so that deleting an entity finds the live
/// entities that still refer to it without scanning the data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub source_type: String,
    pub source_uuid: Uuid,
    pub pointer: String,
    pub target_type: String,
    pub target_uuid: Uuid,
}

/// A page of entities of one type, ordered by uuid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page {
    pub after: Option<Uuid>,
    pub limit: u32,
    pub include_deleted: bool,
}

/// Write transactions committed since the store was opened, and the
/// COMMITs (each one sync to disk) that made them durable: a backend that
/// commits queued transactions together has fewer commits than
/// transactions (`GET /metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub transactions: u64,
    pub commits: u64,
}

/// A storage backend. Reads here see committed data only.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Counts of committed write transactions and commits, for backends
    /// that keep them.
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }

    /// Starts a write transaction.
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx>>;

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn get_entity(&self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>>;
    async fn list_entities(&self, entity_type: &str, page: Page) -> StoreResult<Vec<Entity>>;
    /// Every entity of every type, ordered by (type, uuid), deleted included.
    async fn dump_entities(&self) -> StoreResult<Vec<Entity>>;
    async fn get_node(&self, id: Uuid) -> StoreResult<Option<NodeRecord>>;
    /// A node found by code, **without** its stored results
    /// (`last_results` and `prev_results` are None): they are up to ~65 KB
    /// each per node and only an exchange reads them, with the row it
    /// updates ([`StoreTx::get_node`]). Read the row by id in a
    /// transaction before writing it back.
    async fn get_node_by_code(&self, code: &str) -> StoreResult<Option<NodeRecord>>;
    /// A node found by the hash of its token (authentication, at every
    /// request), without its stored results, as [`Store::get_node_by_code`].
    async fn get_node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>>;
    /// Every node, without their stored results, as
    /// [`Store::get_node_by_code`]: a master's status lists 10,000 nodes
    /// without reading ~65 KB of results for each.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    /// Number of queued changes addressed to `node` (client queue rows,
    /// sent and awaiting acknowledgement or not).
    async fn count_queued(&self, node: Uuid) -> StoreResult<i64> {
        self.count_queued_capped(node, i64::MAX).await
    }
    /// Number of change-log revisions above `rev` that `node` would be sent:
    /// those for every node and those addressed to it, including its own
    /// (master: a node's lag).
    async fn count_revisions_after(&self, rev: i64, node: Uuid) -> StoreResult<i64> {
        self.count_revisions_after_capped(rev, node, i64::MAX).await
    }
    /// Every other node's lag ([`Store::count_revisions_after`] from the
    /// revision it acknowledged), the store's own node and revoked nodes
    /// left out (a revoked node is sent nothing more: its lag only grows,
    /// and counting it would read the log from its mark on every call), in
    /// no particular order. The backends answer in one statement that reads the
    /// log once, from the lowest acknowledged revision up, instead of once
    /// per node: a master with 10,000 nodes answers `status` and a
    /// `/metrics` scrape without 10,000 counts. This default is the
    /// reference: one count per node.
    async fn node_lags(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        let mut lags = Vec::new();
        for n in self.list_nodes().await? {
            if !n.is_self && !n.revoked {
                lags.push((n.id, self.count_revisions_after(n.acked_rev, n.id).await?));
            }
        }
        Ok(lags)
    }
    /// [`Store::count_queued`], counted no further than `cap`: the exact
    /// number when it is below `cap`, else `cap`. Reads at most `cap` index
    /// entries, so a caller that asks every round (a sync session) does not
    /// scan a queue of a million rows each time.
    async fn count_queued_capped(&self, node: Uuid, cap: i64) -> StoreResult<i64>;
    /// [`Store::count_revisions_after`], counted no further than `cap`.
    async fn count_revisions_after_capped(
        &self,
        rev: i64,
        node: Uuid,
        cap: i64,
    ) -> StoreResult<i64>;
    /// Number of held changes (waiting for a reference to arrive).
    async fn count_held(&self) -> StoreResult<i64>;
    /// Stored versions of an entity, oldest first.
    async fn history(&self, entity_uuid: Uuid) -> StoreResult<Vec<HistoryRecord>>;
    /// Audit records of an entity, oldest first (all entities when None).
    async fn audit(&self, entity_uuid: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    // --- security events (outside data transactions) ------------------------

    /// Appends a security event, committed on return (an event is recorded
    /// whether or not any data transaction happens around it).
    async fn record_security_event(&self, event: &SecurityEvent) -> StoreResult<()>;
    /// The newest `query.limit` events matching every filter of `query`,
    /// newest first (events recorded at the same instant: last recorded
    /// first).
    async fn security_events(&self, query: &SecurityEventQuery) -> StoreResult<Vec<SecurityEvent>>;
    /// Deletes the events recorded before `before`; returns how many.
    async fn prune_security_events(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Closes pools; pending transactions are rolled back.
    async fn close(&self);
}

/// One write transaction. Dropping it without `commit` rolls it back.
#[async_trait::async_trait]
pub trait StoreTx: Send {
    async fn get_meta(&mut self, key: &str) -> StoreResult<Option<String>>;
    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()>;

    /// Reads an entity to decide a write on it (a conflict decision, a
    /// coalesced change). Backends with concurrent writers make every other
    /// transaction that reads or writes entities wait until this one ends,
    /// so that no decision is taken on a version another transaction is
    /// replacing (a lost update).
    async fn get_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>>;
    /// Inserts or replaces the entity keyed by (type, uuid).
    async fn put_entity(&mut self, entity: &Entity) -> StoreResult<()>;
    /// [`StoreTx::put_entity`], handing the entity over: a transaction that
    /// keeps it until it writes (the engine's cache) need not copy its data.
    async fn put_entity_owned(&mut self, entity: Entity) -> StoreResult<()> {
        self.put_entity(&entity).await
    }
    /// Master only: keeps `entity` (which has a `rev`) as the version of its
    /// entity at that revision, so that a later conflict can find the base
    /// version a client's change started from. Keeping the same revision
    /// twice changes nothing.
    async fn put_version(&mut self, entity: &Entity) -> StoreResult<()>;
    /// Master only: the version of an entity kept at revision `rev`.
    async fn get_version(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        rev: i64,
    ) -> StoreResult<Option<Entity>>;

    // --- client queue -------------------------------------------------------

    /// Registers a change for `node`: if an unsent row (packet_no NULL) exists
    /// for the entity, its operation becomes `Operation::coalesce(old, op)`
    /// and it keeps its place in the queue; otherwise a new row is appended.
    async fn queue_change(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
    ) -> StoreResult<()>;
    /// True when any row (sent or not) for the entity is queued for `node`.
    async fn has_queued(&mut self, node: Uuid, entity_type: &str, uuid: Uuid) -> StoreResult<bool>;
    /// Up to `limit` unsent rows for `node`, in queue order.
    async fn unsent_changes(&mut self, node: Uuid, limit: u32) -> StoreResult<Vec<QueuedChange>>;
    /// The unsent row for the entity queued for `node`, if any.
    ///
    /// The default scans the unsent rows; backends override it with an
    /// index lookup (it runs once per acknowledged change that was edited
    /// again while its packet was in flight).
    async fn unsent_change_for(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<QueuedChange>> {
        Ok(self
            .unsent_changes(node, u32::MAX)
            .await?
            .into_iter()
            .find(|c| c.entity_type == entity_type && c.entity_uuid == uuid))
    }
    /// The rows carried by packet `packet_no`, in queue order.
    async fn changes_in_packet(
        &mut self,
        node: Uuid,
        packet_no: i64,
    ) -> StoreResult<Vec<QueuedChange>>;
    /// Marks the given rows as carried by `packet_no`.
    async fn assign_packet(&mut self, node: Uuid, ids: &[i64], packet_no: i64) -> StoreResult<()>;
    /// Deletes the rows for `node` carried by packets up to `packet_no`;
    /// returns how many.
    async fn delete_acknowledged(&mut self, node: Uuid, packet_no: i64) -> StoreResult<u64>;

    // --- master change log --------------------------------------------------

    /// Appends a revision of the entity and returns its number, which is
    /// greater than every revision before it. Revisions become visible to
    /// readers in revision order: once a reader has seen revision N, no
    /// revision below N can appear later (backends with concurrent writers
    /// serialize allocation and commit). A previous revision of the same
    /// entity with the same target is removed (the log keeps the latest).
    async fn append_revision(
        &mut self,
        target: Option<Uuid>,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
        origin: Option<Uuid>,
    ) -> StoreResult<i64>;
    /// Revisions above `after_rev` that are for every node or addressed to
    /// `node`, in revision order, at most `limit`, each with the entity's
    /// current stored state.
    async fn revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
    ) -> StoreResult<Vec<(Revision, Entity)>>;

    /// As [`StoreTx::revisions_after`], except that an untargeted revision
    /// above `own_above` whose entity's current version was written by
    /// `node` itself comes without the entity's data (`Value::Null`): the
    /// node has that version already, and reading it back was the largest
    /// cost of answering a push. The default reads the data anyway.
    async fn revisions_after_skipping_own(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        own_above: i64,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        let _ = own_above;
        self.revisions_after(node, after_rev, limit).await
    }

    /// The rows a packet for the scoped node `node` may carry, among the
    /// first `window` revisions above `after_rev` that are for every node
    /// or addressed to it: at most `limit` of them, in revision order, each
    /// with the entity's current stored state. A row is a candidate when it
    /// is addressed to the node, or its entity's current version was
    /// written by the node, or `filter` covers it, or the node has a
    /// holding of it (evicted or not), or (`filter.with_references`) a live
    /// holding of the node refers to it: every row the routing would not
    /// skip. A backend may return more, never fewer. The rows that are not
    /// candidates are never read with their data, which is what makes a
    /// scoped node's packet cheap when little of the log concerns it. The
    /// default filters nothing (`revisions_after`).
    async fn scoped_revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        window: u32,
        filter: &ScopeFilter,
    ) -> StoreResult<ScopedPage> {
        // Every row read is a candidate: the window is the page itself.
        let _ = (window, filter);
        let rows = self.revisions_after(node, after_rev, limit).await?;
        let last = rows.last().map_or(after_rev, |(r, _)| r.rev);
        let scanned = rows.len() as i64;
        Ok(ScopedPage::from_window(rows, limit, limit, scanned, last))
    }

    // --- referential integrity ---------------------------------------------

    /// Replaces the references recorded for the entity `(entity_type, uuid)`
    /// with `refs` (empty: the entity refers to nothing, e.g. once deleted).
    async fn set_references(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: &[EntityRef],
    ) -> StoreResult<()>;
    /// The recorded references to `(target_type, target)`, ordered by
    /// (source_type, source_uuid, pointer).
    async fn referrers(&mut self, target_type: &str, target: Uuid) -> StoreResult<Vec<EntityRef>>;
    /// Keeps a change until what it references arrives. A change held
    /// before for the same (source node, type, uuid) is replaced (the newer
    /// version supersedes it).
    async fn hold_change(&mut self, held: &HeldChange) -> StoreResult<()>;
    /// The held changes waiting for the entity `target`, oldest first.
    async fn held_waiting_for(&mut self, target: Uuid) -> StoreResult<Vec<HeldChange>>;
    /// Up to `limit` held changes held before `before`, oldest first.
    async fn held_before(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<HeldChange>>;
    /// Forgets a held change (applied, or handed to a person).
    async fn release_held(&mut self, id: i64) -> StoreResult<()>;

    // --- nodes, history, audit ---------------------------------------------

    /// Reads a node row for update: backends with concurrent writers lock it
    /// until this transaction ends, and a second transaction's `get_node` of
    /// the same row waits and then sees this one's committed changes (so two
    /// exchanges of one node never both apply its packet).
    async fn get_node(&mut self, id: Uuid) -> StoreResult<Option<NodeRecord>>;
    /// Inserts or replaces a node row (keyed by id; `code` is unique).
    async fn put_node(&mut self, node: &NodeRecord) -> StoreResult<()>;
    async fn add_history(&mut self, record: &HistoryRecord) -> StoreResult<()>;
    async fn add_audit(&mut self, record: &AuditRecord) -> StoreResult<()>;

    // --- routing (master: what scoped nodes hold; client: eviction) --------

    /// The node's routing state (the default when none was ever set).
    async fn get_scope(&mut self, node: Uuid) -> StoreResult<ScopeRecord>;
    /// Replaces the node's routing state.
    async fn put_scope(&mut self, node: Uuid, scope: &ScopeRecord) -> StoreResult<()>;
    /// What `node` was sent of the entity, if anything.
    async fn holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<Holding>>;
    /// Records what `node` was sent of the entity.
    async fn put_holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        holding: Holding,
    ) -> StoreResult<()>;
    /// Whether a live entity that `node` holds (not evicted) refers to the
    /// entity `(target_type, target)`.
    async fn referenced_by_holding(
        &mut self,
        node: Uuid,
        target_type: &str,
        target: Uuid,
    ) -> StoreResult<bool>;
    /// What `node` was sent of each of several entities: those it has a
    /// holding for, in any order ([`StoreTx::holding`] for each, in one
    /// query where the backend can).
    async fn holdings(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<((String, Uuid), Holding)>> {
        let mut out = Vec::new();
        for (t, u) in keys {
            if let Some(h) = self.holding(node, t, *u).await? {
                out.push(((t.clone(), *u), h));
            }
        }
        Ok(out)
    }
    /// Of several entities, those a live entity that `node` holds refers
    /// to, in any order ([`StoreTx::referenced_by_holding`] for each, in
    /// one query where the backend can).
    async fn referenced_by_holdings(
        &mut self,
        node: Uuid,
        targets: &[(String, Uuid)],
    ) -> StoreResult<Vec<(String, Uuid)>> {
        let mut out = Vec::new();
        for (t, u) in targets {
            if self.referenced_by_holding(node, t, *u).await? {
                out.push((t.clone(), *u));
            }
        }
        Ok(out)
    }
    /// The highest revision in the master's change log (0 when empty).
    async fn log_head(&mut self) -> StoreResult<i64>;
    /// Records every current entity as possibly held by `node` (sent before
    /// packet 1): a node that received everything becomes scoped, and the
    /// rescan evicts what is out of its scope. Returns how many.
    async fn seed_holdings(&mut self, node: Uuid) -> StoreResult<u64>;
    /// Forgets everything recorded as sent to `node` (its scope was removed:
    /// it receives everything again).
    async fn clear_holdings(&mut self, node: Uuid) -> StoreResult<u64>;
    /// Client: removes an entity the master no longer routes to this node
    /// (its row and its references; history is kept). Returns whether it
    /// was there.
    async fn purge_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<bool>;

    async fn commit(self: Box<Self>) -> StoreResult<()>;

    // --- batches (performance; the defaults do it one row at a time) -------

    /// Reads several entities at once, as [`StoreTx::get_entity`] would one
    /// by one (with the same locking): the ones found, in any order. Keys
    /// may repeat.
    async fn get_entities(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<Entity>> {
        let mut found = Vec::with_capacity(keys.len());
        for (entity_type, uuid) in keys {
            if let Some(e) = self.get_entity(entity_type, *uuid).await? {
                found.push(e);
            }
        }
        Ok(found)
    }

    /// Inserts or replaces several entities, as [`StoreTx::put_entity`] of
    /// each in order would (a key given twice ends with its last version).
    async fn put_entities(&mut self, entities: &[&Entity]) -> StoreResult<()> {
        for e in entities {
            self.put_entity(e).await?;
        }
        Ok(())
    }

    /// Whether the entity is stored (deleted or not), as
    /// `get_entity(..).is_some()` without handing out a copy.
    async fn entity_exists(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        Ok(self.entity_is_deleted(entity_type, uuid).await?.is_some())
    }

    /// Whether the entity is deleted (None: not stored), as
    /// `get_entity(..).map(|e| e.is_deleted)` without handing out a copy.
    async fn entity_is_deleted(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<bool>> {
        Ok(self
            .get_entity(entity_type, uuid)
            .await?
            .map(|e| e.is_deleted))
    }

    /// [`StoreTx::set_references`], handing the references over: a
    /// transaction that keeps them until it writes (the engine's cache) need
    /// not copy them.
    async fn set_references_owned(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: Vec<EntityRef>,
    ) -> StoreResult<()> {
        self.set_references(entity_type, uuid, &refs).await
    }

    /// Replaces the recorded references of several entities, as
    /// [`StoreTx::set_references`] of each in order would.
    async fn set_references_many(
        &mut self,
        items: &[((String, Uuid), Vec<EntityRef>)],
    ) -> StoreResult<()> {
        for ((entity_type, uuid), refs) in items {
            self.set_references(entity_type, *uuid, refs).await?;
        }
        Ok(())
    }

    /// The stamps of several entities (when and at which revision they were
    /// written), without reading their data: the ones found, in any order.
    async fn entity_stamps(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<EntityStamp>> {
        Ok(self
            .get_entities(keys)
            .await?
            .iter()
            .map(EntityStamp::of)
            .collect())
    }

    /// Raises the revision of each entity to the one given where it is
    /// unset or lower, without touching anything else of the entity
    /// (a client learning the master's revision of what it sent). Absent
    /// entities are skipped.
    async fn raise_revs(&mut self, items: &[(String, Uuid, i64)]) -> StoreResult<()> {
        for (entity_type, uuid, rev) in items {
            if let Some(mut e) = self.get_entity(entity_type, *uuid).await?
                && e.rev.is_none_or(|r| r < *rev)
            {
                e.rev = Some(*rev);
                self.put_entity(&e).await?;
            }
        }
        Ok(())
    }

    /// Reserves `n` revision numbers for [`StoreTx::append_revisions`] in
    /// this transaction: increasing, above every number handed out before
    /// (by this method or [`StoreTx::append_revision`]) and never handed
    /// out again, used or not (an unused one is a gap in the log, which
    /// nothing reads as a change). Takes the write lock.
    async fn reserve_revisions(&mut self, n: usize) -> StoreResult<Vec<i64>>;

    /// Appends revisions numbered by [`StoreTx::reserve_revisions`] in
    /// this transaction, as [`StoreTx::append_revision`] of each in number
    /// order would: each replaces the log row of the same entity and
    /// target. Of a key given twice, the higher number stays.
    async fn append_revisions(&mut self, revisions: &[NewRevision]) -> StoreResult<()>;

    /// Writes buffered rows: [`StoreTx::append_revisions`] of `revisions`,
    /// then [`StoreTx::put_entities`] of `entities`, then
    /// [`StoreTx::set_references_many`] of `references`, with the same
    /// outcome as those three calls in that order. A backend may overlap
    /// the work of one batch with the next (the SQLite store binds the
    /// next statement's values while the current one runs).
    async fn write_rows(
        &mut self,
        revisions: &[NewRevision],
        entities: &[&Entity],
        references: &[SourceReferences],
    ) -> StoreResult<()> {
        if !revisions.is_empty() {
            self.append_revisions(revisions).await?;
        }
        if !entities.is_empty() {
            self.put_entities(entities).await?;
        }
        if !references.is_empty() {
            self.set_references_many(references).await?;
        }
        Ok(())
    }

    /// The queue rows of `node` for these entities, sent or not, in queue
    /// order. Keys may repeat.
    async fn queued_rows(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<QueuedChange>>;

    /// Writes what [`StoreTx::queue_change`] of several changes decided
    /// (the caller coalesced them against [`StoreTx::queued_rows`]): new
    /// unsent rows for entities that have none, and new operations for
    /// existing rows, by id.
    async fn write_queue(
        &mut self,
        node: Uuid,
        inserts: &[(String, Uuid, Operation)],
        updates: &[(i64, Operation)],
    ) -> StoreResult<()>;
}
