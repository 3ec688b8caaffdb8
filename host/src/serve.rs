//! Running a node: the servers its mode needs and, on a client, the
//! background sync loop. Used by `hubsync serve`, the demo and the
//! end-to-end tests (which run real servers in-process).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hubsync_core::engine::NoProgress;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warp::Filter;

use crate::config::{Config, Mode};
use crate::error::HostError;
use crate::listener::{ConnectionTimeouts, ServerHandle, serve_http, serve_https_with};
use crate::node::Node;

/// A node with its servers running.
pub struct RunningNode {
    pub node: Arc<Node>,
    /// The local entity API (plain HTTP, loopback).
    pub api_addr: SocketAddr,
    /// Master only: the HTTPS sync endpoint.
    pub sync_addr: Option<SocketAddr>,
    servers: Vec<ServerHandle>,
    sync_loop: Option<JoinHandle<()>>,
    /// Master only: prunes old security events.
    retention: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, HostError> {
    TcpListener::bind(addr).await.map_err(|e| {
        HostError::Other(format!(
            "could not listen on {addr} for the {what}: {e}; choose another address in the configuration or stop what uses it"
        ))
    })
}

impl RunningNode {
    /// Opens the node and starts its servers.
    pub async fn start(config: Config) -> Result<RunningNode, HostError> {
        let node = Arc::new(Node::open(config).await?);
        Self::start_node(node).await
    }

    /// Starts the servers of an opened node.
    pub async fn start_node(node: Arc<Node>) -> Result<RunningNode, HostError> {
        let config = &node.config;
        if config.mode == Mode::Master {
            apply_routing(&node).await?;
        }
        let mut servers = Vec::new();
        let api_listener = bind(config.api.addr, "local API").await?;
        let api = crate::api::authorized(config.api.token.clone())
            .and(crate::api::routes(node.clone()))
            .recover(crate::api::recover)
            .unify();
        let api_handle = serve_http(api_listener, api).await;
        let api_addr = api_handle.local_addr;
        servers.push(api_handle);
        let mut sync_addr = None;
        if config.mode == Mode::Master {
            let listen = config.listen.as_ref().ok_or_else(|| {
                HostError::Other("a master configuration needs a [listen] section".into())
            })?;
            let tls = crate::tls::server_config_for(listen)?;
            let listener = bind(listen.addr, "sync protocol (HTTPS)").await?;
            let routes = crate::exchange::route(node.clone())
                .recover(crate::api::recover)
                .unify();
            let timeouts = ConnectionTimeouts {
                header_read: config.limits.header_read_timeout(),
                ..ConnectionTimeouts::default()
            };
            let handle = serve_https_with(listener, tls, routes, timeouts).await;
            sync_addr = Some(handle.local_addr);
            servers.push(handle);
        }
        let (stop, stop_rx) = watch::channel(false);
        let sync_loop = (config.mode == Mode::Client && config.sync.interval_secs > 0).then(|| {
            let node = node.clone();
            let every = Duration::from_secs(config.sync.interval_secs);
            tokio::spawn(sync_loop(node, every, stop_rx.clone()))
        });
        let retention = (config.mode == Mode::Master)
            .then(|| config.security.events_retention())
            .flatten()
            .map(|keep| tokio::spawn(prune_security_events(node.clone(), keep, stop_rx)));
        tracing::info!(mode = ?node.config.mode, node_id = %node.engine.identity().node_id, api = %api_addr, sync = ?sync_addr, "node running");
        Ok(RunningNode {
            node,
            api_addr,
            sync_addr,
            servers,
            sync_loop,
            retention,
            stop,
        })
    }

    /// Stops the sync loop and the servers; in-flight requests get `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.sync_loop {
            // A session in progress finishes its current exchange first.
            let _ = tokio::time::timeout(grace, task).await;
        }
        if let Some(task) = self.retention {
            let _ = tokio::time::timeout(grace, task).await;
        }
        for s in self.servers {
            s.shutdown(grace).await;
        }
        self.node.engine.store().close().await;
    }
}

/// Syncs every `every` until stopped; a failed session is logged and shown
/// in the status, and the loop goes on.
///
/// After a failure the next attempt comes sooner than the interval at first
/// and then backs off: `retry_initial_ms` doubled per failure, with jitter,
/// up to `retry_max_secs`; a success goes back to the interval. A master
/// that refuses with `Retry-After` (429 when rate limiting, 503) gets at
/// least the wait it asked for, still capped at `retry_max_secs`. The last
/// error and the next attempt are recorded in the store for `hubsync
/// status` and shown by `GET /api/v1/status`.
async fn sync_loop(node: Arc<Node>, every: Duration, mut stop: watch::Receiver<bool>) {
    let initial = Duration::from_millis(node.config.sync.retry_initial_ms);
    let max = Duration::from_secs(node.config.sync.retry_max_secs);
    let mut failures = 0u32;
    let mut wait = every;
    loop {
        let next =
            chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        node.record_next_attempt(next).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match node.sync_now(&NoProgress).await {
            Ok(s) => {
                failures = 0;
                wait = every;
                tracing::info!(
                    sent = s.sent_changes,
                    received = s.received_changes,
                    conflicts = s.conflicts.len(),
                    "sync session done"
                );
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let backoff = crate::node::backoff(failures, initial, max, crate::node::jitter());
                wait = crate::node::retry_wait(backoff, node.requested_retry_after(), max);
                tracing::warn!(error = %e, failures, retry_in_ms = wait.as_millis() as u64, "sync session failed; nothing is lost, the changes stay queued");
            }
        }
    }
}

/// How often a master prunes its security event log.
pub const SECURITY_EVENTS_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes security events older than `keep` (`[security]
/// events_retention_days`) now and then every
/// [`SECURITY_EVENTS_PRUNE_EVERY`], until stopped. Several master hosts on
/// one store may all prune: deleting is idempotent. A failure is logged and
/// retried at the next round.
async fn prune_security_events(
    node: Arc<Node>,
    keep: chrono::Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        // A retention longer than the calendar reaches back keeps everything.
        if let Some(before) = chrono::Utc::now().checked_sub_signed(keep) {
            match node.engine.store().prune_security_events(before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(deleted = n, before = %before, "pruned old security events")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune old security events; retrying in an hour")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SECURITY_EVENTS_PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The lock file that keeps one process syncing a node at a time.
pub fn lock_path(config: &Config) -> std::path::PathBuf {
    config.config_dir().join(".hubsync.lock")
}

/// Takes the node's process lock, or returns None when another process
/// (a running `hubsync serve`) holds it.
pub fn try_lock(config: &Config) -> Result<Option<std::fs::File>, HostError> {
    let path = lock_path(config);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HostError::io("could not open the lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(HostError::io("could not lock", &path, e)),
    }
}

/// Applies the scopes of `[routing.nodes]` (a no-op for those already in
/// effect). A scope that does not fit the schema set refuses the start; a
/// code not registered yet is reported and applied by `node add`.
pub async fn apply_routing(node: &Node) -> Result<(), HostError> {
    for (code, scope) in &node.config.routing.nodes {
        match node.engine.set_node_scope(code, Some(scope.clone())).await {
            Ok(r) if r.pending.is_some() => {
                tracing::info!(node = %code, "routing scope from [routing.nodes] takes effect with the node's next packet");
            }
            Ok(_) => {}
            Err(hubsync_core::engine::EngineError::UnknownNode(_)) => {
                tracing::warn!(node = %code, "[routing.nodes.{code}] names a node that is not registered; `hubsync node add --code {code}` applies it");
            }
            Err(e) => {
                return Err(HostError::Other(format!(
                    "[routing.nodes.{code}] in the configuration: {e}"
                )));
            }
        }
    }
    Ok(())
}
