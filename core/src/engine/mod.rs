//! The engine: one node's view of the sync network.
//!
//! An [`Engine`] binds a [`Store`], the [`EntityRegistry`] and the
//! [`ConflictPolicy`] to the node's identity. Local writes (`local`), the
//! client side of a sync session (`client`) and the master side of an
//! exchange (`master`) are its methods. Every write path runs in one store
//! transaction; nothing is acknowledged before it is committed.

mod cached_tx;
mod client;
mod integrity;
mod local;
mod manual;
mod master;
mod order;
mod routing;
mod size;
mod turns;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::conflict::ConflictPolicy;
use crate::entity::Entity;
use crate::schema::{EntityRegistry, SchemaVersion};
use crate::store::{NodeRecord, NodeRole, Page, Store, StoreError};

pub use client::{NoProgress, Progress, SyncProgress, SyncSummary};
pub use local::{BatchItemError, BatchOp, PutOutcome};
pub use manual::{
    Choice, ConflictStatus, ConflictView, MANUAL_RESOLVED, ManualResolution, PendingConflict,
};
pub use master::{ExchangeError, ImportReport};
pub use routing::{Scope, TypeRule};

/// Meta keys of the store.
const META_NODE_ID: &str = "node_id";
const META_ROLE: &str = "role";
const META_MASTER_ID: &str = "master_node_id";

/// Bounds of one packet.
#[derive(Debug, Clone, Copy)]
pub struct PacketLimits {
    pub max_entities: u32,
    /// Bound on the serialized (uncompressed) size of a packet's entities; a
    /// single larger entity still travels alone.
    pub max_bytes: usize,
}

impl Default for PacketLimits {
    fn default() -> Self {
        PacketLimits {
            max_entities: 500,
            max_bytes: 4 << 20,
        }
    }
}

/// Engine settings that come from configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub limits: PacketLimits,
    /// Keep losing versions in object_version_history.
    pub versioning: bool,
    /// Upper bound of round trips in one sync session.
    pub max_rounds: u32,
    /// Master: how long a change received before an entity it references
    /// is held; after that it goes to the manual queue.
    pub hold_timeout: std::time::Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            limits: PacketLimits::default(),
            versioning: true,
            max_rounds: 100_000,
            hold_timeout: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// See [`Engine::replica_state`].
pub type ReplicaState = Vec<(String, Uuid, String, bool, serde_json::Value)>;

/// Who this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub node_id: Uuid,
    pub role: NodeRole,
    /// On a client: the master's node id.
    pub master_id: Option<Uuid>,
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("unknown entity type '{name}'; the schema set defines: {known}")]
    UnknownType { name: String, known: String },
    #[error("{entity_type} {uuid} not found")]
    NotFound { entity_type: String, uuid: Uuid },
    #[error("{entity_type} {uuid} already exists; use PUT to update it")]
    AlreadyExists { entity_type: String, uuid: Uuid },
    #[error("{0}")]
    Invalid(crate::schema::ValidationError),
    #[error("this {} cannot be deleted: {}", .0.entity_type, issue_list(.0))]
    StillReferenced(crate::schema::ValidationError),
    #[error("the batch was not applied: {} of its operations are invalid", .0.len())]
    Batch(Vec<BatchItemError>),
    #[error(
        "this store is not initialized; run `hubsync init master` or `hubsync init client` first"
    )]
    NotInitialized,
    #[error("this operation needs a {needed} node, but this node is a {actual}")]
    WrongRole {
        needed: &'static str,
        actual: &'static str,
    },
    #[error(
        "the store belongs to node {found}, but the configuration names node {configured}; point the configuration at the right store"
    )]
    IdentityMismatch { found: Uuid, configured: Uuid },
    #[error("the routing scope is not valid: {0}")]
    InvalidScope(String),
    #[error("node code '{0}' is already registered; choose another code")]
    DuplicateNode(String),
    #[error("no node with code '{0}'")]
    UnknownNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sync failed: {0}")]
    Sync(String),
    #[error(
        "{what} works on the master only, and this node is a client: run it against the master's configuration (or the master's local API)"
    )]
    MasterOnly { what: &'static str },
    #[error(
        "no deferred conflict {id}; `hubsync conflicts list` (GET /api/v1/conflicts) shows the ids of the conflicts waiting for a person"
    )]
    ConflictNotFound { id: Uuid },
    #[error(
        "conflict {id} was already resolved at {at} ({how}, resolution {resolution}); nothing was changed — make an ordinary edit if the entity needs another change"
    )]
    ConflictResolved {
        id: Uuid,
        resolution: Uuid,
        at: String,
        how: String,
    },
    #[error(
        "version {version} is not a stored version of {entity_type} {uuid}; `hubsync conflicts show` lists the versions that can be taken"
    )]
    VersionNotFound {
        version: Uuid,
        entity_type: String,
        uuid: Uuid,
    },
    #[error(
        "the incoming version of conflict {id} was not kept (versioning was off when it was deferred); take the master's version, another stored version, or supply merged data"
    )]
    IncomingVersionMissing { id: Uuid },
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

/// The issues of a refusal, one after the other.
fn issue_list(e: &crate::schema::ValidationError) -> String {
    e.issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EngineError {
    /// A stable, machine-readable classification.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownType { .. } | EngineError::NotFound { .. } => "not_found",
            EngineError::AlreadyExists { .. } => "conflict",
            EngineError::StillReferenced(_) => "still_referenced",
            EngineError::Invalid(_) | EngineError::Batch(_) | EngineError::InvalidScope(_) => {
                "validation_failed"
            }
            EngineError::NotInitialized => "not_initialized",
            EngineError::WrongRole { .. } => "wrong_mode",
            EngineError::IdentityMismatch { .. } => "identity_mismatch",
            EngineError::DuplicateNode(_) => "conflict",
            EngineError::UnknownNode(_) => "not_found",
            EngineError::Store(_) => "storage_error",
            EngineError::Sync(_) => "sync_failed",
            EngineError::MasterOnly { .. } => "wrong_mode",
            EngineError::ConflictNotFound { .. } | EngineError::VersionNotFound { .. } => {
                "not_found"
            }
            EngineError::ConflictResolved { .. } | EngineError::IncomingVersionMissing { .. } => {
                "conflict"
            }
            EngineError::Transport(_) => "master_unreachable",
        }
    }
}

/// The node's state, for `hubsync status` and `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_id: Uuid,
    pub code: String,
    pub mode: &'static str,
    pub schema_version: String,
    /// Client: changes queued for the master. Master: revisions in the log.
    pub pending_changes: i64,
    /// Changes received before an entity they reference, held until it
    /// arrives (on a master, after `hold_timeout` they go to the manual
    /// queue).
    pub held_changes: i64,
    pub last_sync_in: Option<DateTime<Utc>>,
    pub last_sync_out: Option<DateTime<Utc>>,
    pub received_packet_no: i64,
    pub sent_packet_no: i64,
    /// Master only: a row per client node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PeerStatus>,
}

/// A client as the master sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub node_id: Uuid,
    pub code: String,
    pub name: String,
    pub revoked: bool,
    pub schema_version: Option<String>,
    pub last_sync_in: Option<DateTime<Utc>>,
    pub last_sync_out: Option<DateTime<Utc>>,
    pub received_packet_no: i64,
    pub sent_packet_no: i64,
    /// Master revisions not yet acknowledged by the node (0 for a revoked
    /// node: it is sent nothing more).
    pub lag: i64,
}

/// One node's engine.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    registry: EntityRegistry,
    policy: ConflictPolicy,
    options: EngineOptions,
    identity: Identity,
    /// Master: each node's packets taken in number order (shared by clones).
    turns: Arc<turns::Turns>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.store.backend())
            .field("identity", &self.identity)
            .field("schema_version", &self.registry.version().to_string())
            .finish()
    }
}

/// What `Engine::initialize` sets up.
#[derive(Debug, Clone)]
pub struct InitParams {
    pub role: NodeRole,
    pub node_id: Uuid,
    pub code: String,
    pub name: String,
    /// Client only: the master's node id.
    pub master_id: Option<Uuid>,
}

impl Engine {
    /// Records the node's identity in a new store. Idempotent for the same
    /// identity; refuses a store that belongs to another node.
    pub async fn initialize(store: &dyn Store, params: &InitParams) -> Result<(), EngineError> {
        let mut tx = store.begin().await?;
        if let Some(existing) = tx.get_meta(META_NODE_ID).await? {
            let found = Uuid::parse_str(&existing)
                .map_err(|_| StoreError::corrupt(format!("meta node_id '{existing}'")))?;
            if found != params.node_id {
                return Err(EngineError::IdentityMismatch {
                    found,
                    configured: params.node_id,
                });
            }
            return Ok(());
        }
        tx.set_meta(META_NODE_ID, &params.node_id.to_string())
            .await?;
        tx.set_meta(META_ROLE, params.role.as_str()).await?;
        tx.put_node(&NodeRecord::new(
            params.node_id,
            &params.code,
            &params.name,
            params.role,
            true,
        ))
        .await?;
        if let Some(master) = params.master_id {
            tx.set_meta(META_MASTER_ID, &master.to_string()).await?;
            tx.put_node(&NodeRecord::new(
                master,
                "MASTER",
                "master",
                NodeRole::Master,
                false,
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Opens the engine of an initialized store.
    pub async fn open(
        store: Arc<dyn Store>,
        registry: EntityRegistry,
        policy: ConflictPolicy,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let node_id = read_uuid_meta(store.as_ref(), META_NODE_ID)
            .await?
            .ok_or(EngineError::NotInitialized)?;
        let role = store
            .get_meta(META_ROLE)
            .await?
            .and_then(|r| NodeRole::parse(&r))
            .ok_or_else(|| StoreError::corrupt("meta role missing or unknown"))?;
        let master_id = read_uuid_meta(store.as_ref(), META_MASTER_ID).await?;
        if role == NodeRole::Client && master_id.is_none() {
            return Err(StoreError::corrupt("client store without a master node id").into());
        }
        Ok(Engine {
            store,
            registry,
            policy,
            options,
            identity: Identity {
                node_id,
                role,
                master_id,
            },
            turns: Arc::default(),
        })
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }
    pub fn registry(&self) -> &EntityRegistry {
        &self.registry
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
    pub fn policy(&self) -> &ConflictPolicy {
        &self.policy
    }
    pub fn schema_version(&self) -> SchemaVersion {
        self.registry.version()
    }

    fn require(&self, role: NodeRole) -> Result<(), EngineError> {
        if self.identity.role == role {
            Ok(())
        } else {
            Err(EngineError::WrongRole {
                needed: role.as_str(),
                actual: self.identity.role.as_str(),
            })
        }
    }

    fn master_id(&self) -> Result<Uuid, EngineError> {
        self.identity.master_id.ok_or(EngineError::WrongRole {
            needed: "client",
            actual: self.identity.role.as_str(),
        })
    }

    pub(crate) fn check_type(&self, entity_type: &str) -> Result<(), EngineError> {
        if self.registry.contains(entity_type) {
            Ok(())
        } else {
            Err(EngineError::UnknownType {
                name: entity_type.to_string(),
                known: self.registry.type_names().join(", "),
            })
        }
    }

    pub async fn get(&self, entity_type: &str, uuid: Uuid) -> Result<Entity, EngineError> {
        self.check_type(entity_type)?;
        self.store
            .get_entity(entity_type, uuid)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                entity_type: entity_type.to_string(),
                uuid,
            })
    }

    pub async fn list(&self, entity_type: &str, page: Page) -> Result<Vec<Entity>, EngineError> {
        self.check_type(entity_type)?;
        Ok(self.store.list_entities(entity_type, page).await?)
    }

    /// What must be identical on every node once all have synced with no
    /// new writes (convergence, contract §7.6): each entity's type, uuid,
    /// `updated_at` (canonical text), deletion flag and data, ordered by
    /// (type, uuid). Revision bookkeeping is left out: it is per node.
    pub async fn replica_state(&self) -> Result<ReplicaState, EngineError> {
        Ok(self
            .store
            .dump_entities()
            .await?
            .into_iter()
            .map(|e| {
                (
                    e.entity_type,
                    e.uuid,
                    crate::entity::format_ts(e.updated_at),
                    e.is_deleted,
                    e.data,
                )
            })
            .collect())
    }

    /// The status's `pending_changes` alone, for a metrics scrape: on a
    /// client its queued changes, on a master the sum of every node's lag
    /// (one statement, without listing the nodes).
    pub async fn pending_changes(&self) -> Result<i64, EngineError> {
        Ok(match self.identity.master_id {
            Some(master) => self.store.count_queued(master).await?,
            None => self.store.node_lags().await?.iter().map(|(_, n)| n).sum(),
        })
    }

    pub async fn status(&self) -> Result<NodeStatus, EngineError> {
        let me = self
            .store
            .get_node(self.identity.node_id)
            .await?
            .ok_or_else(|| StoreError::corrupt("own node row missing"))?;
        let mut status = NodeStatus {
            node_id: me.id,
            code: me.code.clone(),
            mode: self.identity.role.as_str(),
            schema_version: self.registry.version().to_string(),
            pending_changes: 0,
            held_changes: self.store.count_held().await?,
            last_sync_in: None,
            last_sync_out: None,
            received_packet_no: 0,
            sent_packet_no: 0,
            nodes: Vec::new(),
        };
        match self.identity.master_id {
            Some(master) => {
                let peer = self
                    .store
                    .get_node(master)
                    .await?
                    .ok_or_else(|| StoreError::corrupt("master node row missing"))?;
                status.pending_changes = self.store.count_queued(master).await?;
                status.last_sync_in = peer.last_sync_in;
                status.last_sync_out = peer.last_sync_out;
                status.received_packet_no = peer.received_packet_no;
                status.sent_packet_no = peer.sent_packet_no;
            }
            None => {
                let nodes = self.store.list_nodes().await?;
                // All lags in one read of the log, not one count per node;
                // read after the list, so every listed node is in it (nodes
                // are never removed).
                let lags: std::collections::HashMap<Uuid, i64> =
                    self.store.node_lags().await?.into_iter().collect();
                for n in nodes {
                    if n.is_self {
                        continue;
                    }
                    let lag = lags.get(&n.id).copied().unwrap_or(0);
                    status.last_sync_in = status.last_sync_in.max(n.last_sync_in);
                    status.last_sync_out = status.last_sync_out.max(n.last_sync_out);
                    status.nodes.push(PeerStatus {
                        node_id: n.id,
                        code: n.code,
                        name: n.name,
                        revoked: n.revoked,
                        schema_version: n.schema_version,
                        last_sync_in: n.last_sync_in,
                        last_sync_out: n.last_sync_out,
                        received_packet_no: n.received_packet_no,
                        sent_packet_no: n.sent_packet_no,
                        lag,
                    });
                }
                status.pending_changes = status.nodes.iter().map(|n| n.lag).sum();
            }
        }
        Ok(status)
    }

    /// Registers a client node on the master with the hash of its token.
    pub async fn add_node(
        &self,
        code: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<NodeRecord, EngineError> {
        self.require(NodeRole::Master)?;
        if self.store.get_node_by_code(code).await?.is_some() {
            return Err(EngineError::DuplicateNode(code.to_string()));
        }
        let mut node = NodeRecord::new(Uuid::new_v4(), code, name, NodeRole::Client, false);
        node.token_hash = Some(token_hash.to_string());
        let mut tx = self.store.begin().await?;
        tx.put_node(&node).await?;
        tx.commit().await?;
        Ok(node)
    }

    /// Revokes a node (it is refused from its next request) or replaces its
    /// token hash.
    pub async fn update_node_access(
        &self,
        code: &str,
        revoke: bool,
        new_token_hash: Option<&str>,
    ) -> Result<NodeRecord, EngineError> {
        self.require(NodeRole::Master)?;
        let found = self
            .store
            .get_node_by_code(code)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        let mut tx = self.store.begin().await?;
        let mut node = tx
            .get_node(found.id)
            .await?
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        if revoke {
            node.revoked = true;
        }
        if let Some(h) = new_token_hash {
            node.token_hash = Some(h.to_string());
            node.revoked = false;
        }
        tx.put_node(&node).await?;
        tx.commit().await?;
        Ok(node)
    }
}

async fn read_uuid_meta(store: &dyn Store, key: &str) -> Result<Option<Uuid>, EngineError> {
    match store.get_meta(key).await? {
        None => Ok(None),
        Some(v) => Uuid::parse_str(&v)
            .map(Some)
            .map_err(|_| StoreError::corrupt(format!("meta {key} '{v}' is not a uuid")).into()),
    }
}
