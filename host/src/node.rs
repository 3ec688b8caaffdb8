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
use crate::transport::{HttpsTransport, RetryAfterWaits, WaitPolicy};

/// What `/api/v1/status` shows of the client's syncing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncState {
    pub running: bool,
    /// The running session's progress (None when idle).
    pub progress: Option<crate::progress::ProgressReport>,
    pub last_summary: Option<SyncSummary>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Background sessions that failed in a row.
    pub consecutive_failures: u32,
    /// When the background loop tries next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The wait the master asked for (`Retry-After` on a 429 or 503) when
    /// it refused the last session, in seconds.
    pub retry_after_secs: Option<u64>,
    /// The waits the master asked for (429/503 with `Retry-After`) in the
    /// running or last session, each waited out before sending again.
    pub retry_after_waits: RetryAfterWaits,
}

/// Store meta keys under which a client records its sync health, so that
/// `hubsync status` (another process) can show it.
pub mod health_keys {
    pub const LAST_ERROR: &str = "sync.last_error";
    pub const LAST_ERROR_AT: &str = "sync.last_error_at";
    pub const FAILURES: &str = "sync.consecutive_failures";
    pub const NEXT_ATTEMPT_AT: &str = "sync.next_attempt_at";
    pub const LAST_SUCCESS_AT: &str = "sync.last_success_at";
}

/// The sync health a client recorded, as `hubsync status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncHealth {
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub consecutive_failures: u32,
    pub next_attempt_at: Option<String>,
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
            hold_timeout: std::time::Duration::from_secs(config.sync.hold_timeout_secs),
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
                let tls = crate::tls::client_config_for_link(link)?;
                let transport = HttpsTransport::new(
                    tls,
                    &link.url,
                    config.master_token()?,
                    Duration::from_secs(config.sync.request_timeout_secs),
                )
                // A rate-limited session waits as asked and goes on; each
                // wait at most retry_max_secs (transport.rs).
                .waiting_on_retry_after(WaitPolicy::new(Duration::from_secs(
                    config.sync.retry_max_secs,
                )));
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

    /// The wait the master asked for (`Retry-After`) when it refused the
    /// last session; None after a success or when it asked nothing.
    pub fn requested_retry_after(&self) -> Option<Duration> {
        self.sync.as_ref().and_then(|s| s.transport.retry_after())
    }

    /// Runs one sync session now, waiting for a running one to finish first.
    pub async fn sync_now(&self, progress: &dyn Progress) -> Result<SyncSummary, HostError> {
        Ok(self.sync_now_reported(progress).await?.summary)
    }

    /// [`Node::sync_now`], with the waits the master asked for during the
    /// session (as `hubsync sync` and `POST /api/v1/sync` report them).
    pub async fn sync_now_reported(
        &self,
        progress: &dyn Progress,
    ) -> Result<SyncReport, HostError> {
        let sync = self
            .sync
            .as_ref()
            .ok_or(hubsync_core::EngineError::WrongRole {
                needed: "client",
                actual: "master",
            })?;
        let _guard = sync.lock.lock().await;
        sync.transport.begin_session();
        set_state(sync, |s| {
            s.running = true;
            s.progress = Some(crate::progress::ProgressReport::starting());
            s.retry_after_waits = RetryAfterWaits::default();
        });
        let observer = StateProgress {
            sync,
            inner: progress,
            meter: crate::progress::ProgressMeter::start(),
        };
        let result = self.engine.sync_session(&sync.transport, &observer).await;
        self.metrics.record_session(result.is_ok());
        let now = Utc::now();
        set_state(sync, |s| {
            s.running = false;
            s.progress = None;
            s.last_finished_at = Some(now);
            s.retry_after_waits = sync.transport.session_waits();
            match &result {
                Ok(summary) => {
                    s.last_summary = Some(summary.clone());
                    s.last_error = None;
                    s.last_error_at = None;
                    s.consecutive_failures = 0;
                }
                Err(e) => {
                    s.last_error = Some(e.to_string());
                    s.last_error_at = Some(now);
                    s.consecutive_failures += 1;
                }
            }
            s.retry_after_secs = match &result {
                Ok(_) => None,
                Err(_) => sync.transport.retry_after().map(|d| d.as_secs()),
            };
        });
        self.record_health(result.as_ref().err().map(|e| e.to_string()), now)
            .await;
        if let Ok(summary) = &result {
            self.metrics
                .record_conflicts(summary.conflicts.len() as u64);
        }
        Ok(SyncReport {
            summary: result?,
            retry_after_waits: sync.transport.session_waits(),
        })
    }
}

/// What one session did, as `hubsync sync` and `POST /api/v1/sync` report
/// it: the engine's summary, and the waits the master asked for.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    #[serde(flatten)]
    pub summary: SyncSummary,
    pub retry_after_waits: RetryAfterWaits,
}

impl Node {
    /// Persists the outcome of the last session (best effort: a store that
    /// cannot take it is logged, and syncing goes on).
    async fn record_health(&self, error: Option<String>, at: DateTime<Utc>) {
        let failures = self.sync_state().map_or(0, |s| s.consecutive_failures);
        let at = hubsync_core::entity::format_ts(at);
        let result = async {
            let mut tx = self.engine.store().begin().await?;
            match &error {
                None => {
                    tx.set_meta(health_keys::LAST_SUCCESS_AT, &at).await?;
                    tx.set_meta(health_keys::LAST_ERROR, "").await?;
                    tx.set_meta(health_keys::FAILURES, "0").await?;
                }
                Some(e) => {
                    tx.set_meta(health_keys::LAST_ERROR, e).await?;
                    tx.set_meta(health_keys::LAST_ERROR_AT, &at).await?;
                    tx.set_meta(health_keys::FAILURES, &failures.to_string())
                        .await?;
                }
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record the sync outcome in the store");
        }
    }

    /// Records when the background loop tries next.
    pub async fn record_next_attempt(&self, at: DateTime<Utc>) {
        if let Some(sync) = &self.sync {
            set_state(sync, |s| s.next_attempt_at = Some(at));
        }
        let result = async {
            let mut tx = self.engine.store().begin().await?;
            tx.set_meta(
                health_keys::NEXT_ATTEMPT_AT,
                &hubsync_core::entity::format_ts(at),
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record the next sync attempt in the store");
        }
    }

    /// The sync health recorded in the store (by this or another process).
    pub async fn recorded_health(&self) -> Result<SyncHealth, HostError> {
        let store = self.engine.store();
        let get = |k: &'static str| async move { store.get_meta(k).await };
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(SyncHealth {
            last_success_at: non_empty(get(health_keys::LAST_SUCCESS_AT).await?),
            last_error: non_empty(get(health_keys::LAST_ERROR).await?),
            last_error_at: non_empty(get(health_keys::LAST_ERROR_AT).await?),
            consecutive_failures: get(health_keys::FAILURES)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            next_attempt_at: non_empty(get(health_keys::NEXT_ATTEMPT_AT).await?),
        })
    }
}

/// The wait before the next background attempt after `failures` failed
/// sessions in a row: `initial` doubled per failure, capped at `max`, with
/// ±25% jitter (`jitter` in 0..=1) so that a fleet does not retry in step.
pub fn backoff(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = exp.min(max);
    let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).min(max)
}

/// The wait before the next background attempt: the backoff, or longer
/// when the master asked for more with `Retry-After` — but never past `max`
/// (`[sync].retry_max_secs`), so that a master asking for hours cannot stall
/// a client's queue for hours.
pub fn retry_wait(backoff: Duration, requested: Option<Duration>, max: Duration) -> Duration {
    requested.map_or(backoff, |asked| backoff.max(asked.min(max)))
}

/// A uniform draw in 0..=1 from the system's random source (0.5 if it fails).
pub fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
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
    meter: crate::progress::ProgressMeter,
}

impl Progress for StateProgress<'_> {
    fn on_round(&self, progress: &SyncProgress) {
        let waits = self.sync.transport.session_waits();
        set_state(self.sync, |s| {
            s.progress = Some(self.meter.report(progress));
            s.retry_after_waits = waits;
        });
        self.inner.on_round(progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap_with_bounded_jitter() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        let mid = |n| backoff(n, i, m, 0.5);
        assert_eq!(mid(1), Duration::from_secs(1));
        assert_eq!(mid(2), Duration::from_secs(2));
        assert_eq!(mid(5), Duration::from_secs(16));
        assert_eq!(mid(30), m, "capped, and no overflow however long it fails");
        assert_eq!(backoff(1, i, m, 0.0), Duration::from_millis(750));
        assert_eq!(backoff(1, i, m, 1.0), Duration::from_millis(1250));
        assert!(backoff(40, i, m, 1.0) <= m);
        let j = jitter();
        assert!((0.0..=1.0).contains(&j));
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap_and_never_shortens_it() {
        let s = Duration::from_secs;
        let check = |backoff, asked, expected| {
            assert_eq!(
                retry_wait(backoff, asked, s(300)),
                expected,
                "{backoff:?} {asked:?}"
            );
        };
        check(s(2), None, s(2));
        check(s(2), Some(s(30)), s(30));
        check(s(60), Some(s(5)), s(60));
        check(s(2), Some(s(86_400)), s(300));
        check(s(2), Some(Duration::ZERO), s(2));
    }
}
