//! A running node: configuration, store, schema registry, conflict policy
//! and engine, opened together; on a client also the HTTPS transport, the
//! session lock and the state of the current sync for `/api/v1/status`.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hubsync_core::conflict::ConflictPolicy;
use hubsync_core::engine::{Progress, SyncProgress, SyncSummary};
use hubsync_core::schema::EntityRegistry;
use hubsync_core::{Engine, EngineOptions, PacketLimits};
use serde::Serialize;

use crate::config::{Config, Mode};
use crate::error::HostError;
use crate::metrics::Metrics;
use crate::transport::HttpsTransport;

/// What `/api/v1/status` shows of the client's syncing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncState {
    pub running: bool,
    pub progress: Option<SyncProgress>,
    pub last_summary: Option<SyncSummary>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The client's side of syncing.
pub struct ClientSync {
    transport: HttpsTransport,
    /// One session at a time within this process.
    lock: tokio::sync::Mutex<()>,
    state: Mutex<SyncState>,
}

/// An opened node.
pub struct Node {
    pub config: Config,
    pub engine: Engine,
    pub metrics: Metrics,
    sync: Option<ClientSync>,
}

/// Loads the schema set named by the configuration.
pub fn load_registry(dir: &Path) -> Result<EntityRegistry, HostError> {
    Ok(EntityRegistry::load_dir(dir)?)
}

/// Builds the conflict policy from the configuration and the schemas: the
/// built-in strategies plus the `[[plugins]]` (loaded here, once per
/// process), then the per-type selection. Every problem — a refused
/// plugin, a bad option, an unknown strategy name — is reported at once.
pub fn build_policy(
    config: &Config,
    registry: &EntityRegistry,
) -> Result<ConflictPolicy, HostError> {
    let paths: Vec<_> = config.plugins.iter().map(|p| p.path.clone()).collect();
    let resolvers = crate::plugins::offered_strategies(
        &paths,
        config.conflicts.plugin_timeout(),
        &config.conflicts.options,
    )
    .map_err(HostError::Strategies)?;
    let schema_choices: Vec<(String, String)> = registry
        .types()
        .filter_map(|t| t.conflict.clone().map(|c| (t.name.clone(), c)))
        .collect();
    ConflictPolicy::build(
        resolvers,
        &config.conflicts.default,
        &schema_choices,
        &config.conflicts.per_type,
    )
    .map_err(|errs| HostError::Strategies(errs.into_iter().map(Into::into).collect()))
}

impl Node {
    /// Opens everything the configuration names; reports what is wrong with
    /// the file, schema set, store or certificates.
    pub async fn open(config: Config) -> Result<Node, HostError> {
        let registry = load_registry(&config.schemas)?;
        let policy = build_policy(&config, &registry)?;
        let store = crate::storage::open_store_with(
            &config.storage_url_resolved(),
            &config.storage.pool_options(),
        )
        .await?;
        let options = EngineOptions {
            limits: PacketLimits {
                max_entities: u32::try_from(config.sync.max_packet_entities).unwrap_or(u32::MAX),
                max_bytes: config.sync.max_packet_bytes,
            },
            versioning: config.conflicts.versioning,
            ..EngineOptions::default()
        };
        let engine = Engine::open(store, registry, policy, options).await?;
        let sync = match config.mode {
            Mode::Client => {
                let link = config.master.as_ref().ok_or_else(|| {
                    HostError::Other("a client configuration needs a [master] section".into())
                })?;
                let configured: uuid::Uuid = link.node_id.parse().map_err(|_| {
                    HostError::Other(format!("[master].node_id '{}' is not a uuid", link.node_id))
                })?;
                if configured != engine.identity().node_id {
                    return Err(hubsync_core::EngineError::IdentityMismatch {
                        found: engine.identity().node_id,
                        configured,
                    }
                    .into());
                }
                let tls = crate::tls::client_config(&link.ca_cert)?;
                let transport = HttpsTransport::new(
                    tls,
                    &link.url,
                    config.master_token()?,
                    Duration::from_secs(config.sync.request_timeout_secs),
                );
                Some(ClientSync {
                    transport,
                    lock: tokio::sync::Mutex::new(()),
                    state: Mutex::new(SyncState::default()),
                })
            }
            Mode::Master => None,
        };
        Ok(Node {
            config,
            engine,
            metrics: Metrics::default(),
            sync,
        })
    }

    pub fn is_client(&self) -> bool {
        self.sync.is_some()
    }

    /// The client's sync state (None on a master).
    pub fn sync_state(&self) -> Option<SyncState> {
        self.sync
            .as_ref()
            .map(|s| s.state.lock().map(|g| g.clone()).unwrap_or_default())
    }

    /// Runs one sync session now, waiting for a running one to finish first.
    pub async fn sync_now(&self, progress: &dyn Progress) -> Result<SyncSummary, HostError> {
        let sync = self
            .sync
            .as_ref()
            .ok_or(hubsync_core::EngineError::WrongRole {
                needed: "client",
                actual: "master",
            })?;
        let _guard = sync.lock.lock().await;
        set_state(sync, |s| {
            s.running = true;
            s.progress = None;
        });
        let observer = StateProgress {
            sync,
            inner: progress,
        };
        let result = self.engine.sync_session(&sync.transport, &observer).await;
        self.metrics.record_session(result.is_ok());
        set_state(sync, |s| {
            s.running = false;
            s.last_finished_at = Some(Utc::now());
            match &result {
                Ok(summary) => {
                    s.last_summary = Some(summary.clone());
                    s.last_error = None;
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        });
        if let Ok(summary) = &result {
            self.metrics
                .record_conflicts(summary.conflicts.len() as u64);
        }
        Ok(result?)
    }
}

fn set_state(sync: &ClientSync, f: impl FnOnce(&mut SyncState)) {
    if let Ok(mut g) = sync.state.lock() {
        f(&mut g);
    }
}

/// Forwards progress to the caller and records it for `/api/v1/status`.
struct StateProgress<'a> {
    sync: &'a ClientSync,
    inner: &'a dyn Progress,
}

impl Progress for StateProgress<'_> {
    fn on_round(&self, progress: &SyncProgress) {
        set_state(self.sync, |s| s.progress = Some(progress.clone()));
        self.inner.on_round(progress);
    }
}
