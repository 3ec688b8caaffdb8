//! Test kit for hubsync's end-to-end and property tests: a master and
//! clients as real in-process servers over real HTTPS on loopback with real
//! SQLite files (the master optionally on a fresh PostgreSQL database,
//! [`MasterBackend`]), and in-memory engines for fast property tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hubsync::config::Config;
use hubsync::serve::RunningNode;
use hubsync_core::conflict::ConflictPolicy;
use hubsync_core::engine::NoProgress;
use hubsync_core::protocol::{self, DecodeLimits, Envelope};
use hubsync_core::schema::EntityRegistry;
use hubsync_core::store::NodeRole;
use hubsync_core::transport::{Transport, TransportError};
use hubsync_core::{Engine, EngineOptions, InitParams};
use hubsync_store_postgres::scratch::{ScratchDatabase, TEST_URL_VAR, test_url};
use uuid::Uuid;

pub mod front_door;

/// The example schema set of the repository.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

pub fn registry() -> EntityRegistry {
    EntityRegistry::load_dir(&schemas_dir()).expect("example schema set loads")
}

/// The storage backend of a test cluster's master (clients always use
/// SQLite).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MasterBackend {
    /// A SQLite file in the cluster's directory.
    #[default]
    Sqlite,
    /// A fresh PostgreSQL database on the server named by
    /// `HUBSYNC_TEST_POSTGRES_URL`, dropped when the cluster is.
    Postgres,
}

/// Options for a test cluster.
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// The master's storage backend.
    pub master_backend: MasterBackend,
    /// Lines appended to the master's hubsync.toml (e.g. a [conflicts.per_type] table).
    pub master_toml: String,
    /// Packet bound for clients and master.
    pub max_packet_entities: Option<usize>,
    /// Schema directory for clients (default: the example set).
    pub client_schemas: Option<PathBuf>,
}

/// A master and clients, each a real node with its own directory, SQLite
/// store and servers (HTTPS sync endpoint, HTTP local API) on loopback.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: RunningNode,
    pub clients: Vec<RunningNode>,
    pub tokens: Vec<String>,
    /// The master's PostgreSQL database, if any; declared last so that it
    /// is dropped (`DROP DATABASE … WITH (FORCE)`) after the nodes.
    pub master_db: Option<Arc<ScratchDatabase>>,
}

impl Cluster {
    /// Starts a cluster; fails if `opts` asks for a PostgreSQL master and
    /// `HUBSYNC_TEST_POSTGRES_URL` is not set (see [`Cluster::try_start`]).
    pub async fn start(clients: usize, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        Cluster::try_start(clients, opts).await?.ok_or_else(|| {
            anyhow::anyhow!("{TEST_URL_VAR} is not set: no PostgreSQL to test against")
        })
    }

    /// Starts a cluster, or returns `None` (after saying SKIPPED on stderr)
    /// when `opts` asks for a PostgreSQL master and no test server is set.
    pub async fn try_start(
        clients: usize,
        opts: ClusterOptions,
    ) -> anyhow::Result<Option<Cluster>> {
        let dir = tempfile::tempdir()?;
        let master_dir = dir.path().join("master");
        let master_db = match opts.master_backend {
            MasterBackend::Sqlite => None,
            MasterBackend::Postgres => {
                let Some(base) = test_url("a cluster with a PostgreSQL master") else {
                    return Ok(None);
                };
                Some(Arc::new(ScratchDatabase::create(&base).await?))
            }
        };
        hubsync::init::init_master(&hubsync::init::MasterInit {
            dir: &master_dir,
            listen: "127.0.0.1:0",
            api: "127.0.0.1:0",
            schemas: Some(&schemas_dir()),
            storage: master_db.as_ref().map(|db| db.url.as_str()),
            code: "MASTER",
        })
        .await?;
        let cfg_path = master_dir.join("hubsync.toml");
        let mut text = std::fs::read_to_string(&cfg_path)?;
        if let Some(n) = opts.max_packet_entities {
            text.push_str(&format!("\n[sync]\nmax_packet_entities = {n}\n"));
        }
        text.push_str(&opts.master_toml);
        std::fs::write(&cfg_path, text)?;
        let master = RunningNode::start(Config::load_with_env(&cfg_path, &[])?).await?;
        let sync_addr = master.sync_addr.expect("master has a sync address");
        let mut cluster = Cluster {
            dir,
            master,
            clients: Vec::new(),
            tokens: Vec::new(),
            master_db,
        };
        for i in 0..clients {
            cluster
                .add_client(&format!("DESKTOP-{}", i + 1), sync_addr, &opts)
                .await?;
        }
        Ok(Some(cluster))
    }

    /// Starts another master host on the master's configuration and store
    /// (a PostgreSQL master: the same database), with its own sync and API
    /// ports, as an operator runs several hosts behind a load balancer.
    pub async fn start_master_host(&self) -> anyhow::Result<RunningNode> {
        let mut config = self.master.node.config.clone();
        if let Some(listen) = config.listen.as_mut() {
            listen.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        }
        config.api.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(RunningNode::start(config).await?)
    }

    /// An HTTPS transport of client `i` to the master host listening on
    /// `sync_addr` (one of several hosts).
    pub fn transport_to(
        &self,
        i: usize,
        sync_addr: std::net::SocketAddr,
    ) -> anyhow::Result<hubsync::transport::HttpsTransport> {
        let cfg = &self.clients[i].node.config;
        let link = cfg.master.as_ref().expect("client has [master]");
        Ok(hubsync::transport::HttpsTransport::new(
            hubsync::tls::client_config(&link.ca_cert)?,
            &format!("https://{sync_addr}"),
            self.tokens[i].clone(),
            Duration::from_secs(30),
        ))
    }

    async fn add_client(
        &mut self,
        code: &str,
        sync_addr: std::net::SocketAddr,
        opts: &ClusterOptions,
    ) -> anyhow::Result<()> {
        let engine = &self.master.node.engine;
        let token = hubsync::auth::new_token(engine.identity().node_id)
            .map_err(|_| anyhow::anyhow!("rng"))?;
        let rec = engine
            .add_node(code, code, &hubsync::auth::token_hash(&token))
            .await?;
        let dir = self.dir.path().join(code.to_lowercase());
        let schemas = opts.client_schemas.clone().unwrap_or_else(schemas_dir);
        hubsync::init::init_client(&hubsync::init::ClientInit {
            dir: &dir,
            master_url: &format!("https://{sync_addr}"),
            ca_cert: &self.dir.path().join("master/tls/ca.pem"),
            node_id: rec.id,
            token: &token,
            api: "127.0.0.1:0",
            schemas: Some(&schemas),
            sync_interval_secs: 0,
        })
        .await?;
        let cfg_path = dir.join("hubsync.toml");
        if let Some(n) = opts.max_packet_entities {
            let mut text = std::fs::read_to_string(&cfg_path)?;
            text = text.replace("[sync]\n", &format!("[sync]\nmax_packet_entities = {n}\n"));
            std::fs::write(&cfg_path, text)?;
        }
        let node = RunningNode::start(Config::load_with_env(&cfg_path, &[])?).await?;
        self.clients.push(node);
        self.tokens.push(token);
        Ok(())
    }

    pub fn client(&self, i: usize) -> &Engine {
        &self.clients[i].node.engine
    }

    pub fn master(&self) -> &Engine {
        &self.master.node.engine
    }

    /// One sync session of client `i` through its real HTTPS transport.
    pub async fn sync(&self, i: usize) -> anyhow::Result<hubsync_core::engine::SyncSummary> {
        Ok(self.clients[i].node.sync_now(&NoProgress).await?)
    }

    /// Syncs every client, twice round, so that everything reaches everyone.
    pub async fn sync_all(&self) -> anyhow::Result<()> {
        for _ in 0..2 {
            for i in 0..self.clients.len() {
                self.sync(i).await?;
            }
        }
        Ok(())
    }

    /// An HTTPS transport of client `i`, for wrapping in fault layers.
    pub fn transport(&self, i: usize) -> anyhow::Result<hubsync::transport::HttpsTransport> {
        let cfg = &self.clients[i].node.config;
        let link = cfg.master.as_ref().expect("client has [master]");
        Ok(hubsync::transport::HttpsTransport::new(
            hubsync::tls::client_config(&link.ca_cert)?,
            &link.url,
            self.tokens[i].clone(),
            Duration::from_secs(30),
        ))
    }

    pub async fn shutdown(self) {
        for c in self.clients {
            c.shutdown(Duration::from_secs(5)).await;
        }
        self.master.shutdown(Duration::from_secs(5)).await;
    }
}

/// What must be identical on every node after convergence.
pub type Dump = hubsync_core::engine::ReplicaState;

pub async fn dump(engine: &Engine) -> anyhow::Result<Dump> {
    Ok(engine.replica_state().await?)
}

/// A transport that hands envelopes straight to a master engine, through
/// the real gzip codec: the protocol without sockets, for property tests.
pub struct MemoryTransport {
    pub master: Engine,
    pub node_id: Uuid,
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let wire = protocol::encode_envelope(request).map_err(|e| TransportError::Unreachable {
            reason: e.to_string(),
            transient: false,
        })?;
        let decoded = protocol::decode_envelope(&wire, DecodeLimits::default()).map_err(|e| {
            TransportError::Unreachable {
                reason: e.to_string(),
                transient: false,
            }
        })?;
        match self.master.handle_exchange(self.node_id, decoded).await {
            Ok(answer) => {
                let wire = protocol::encode_envelope(&answer).map_err(|e| {
                    TransportError::Unreachable {
                        reason: e.to_string(),
                        transient: false,
                    }
                })?;
                protocol::decode_envelope(&wire, DecodeLimits::default()).map_err(|e| {
                    TransportError::Unreachable {
                        reason: e.to_string(),
                        transient: false,
                    }
                })
            }
            Err(e) => Err(TransportError::Refused {
                status: e.status(),
                error: protocol::ErrorDetail {
                    code: e.code().into(),
                    message: e.to_string(),
                    detail: e.detail(),
                    hint: e.hint(),
                },
            }),
        }
    }
}

/// A master and clients as bare engines on SQLite files (no servers).
pub struct EngineSet {
    pub dir: tempfile::TempDir,
    pub master: Engine,
    pub clients: Vec<(Engine, MemoryTransport)>,
}

impl EngineSet {
    pub async fn new(clients: usize, options: EngineOptions) -> anyhow::Result<EngineSet> {
        let dir = tempfile::tempdir()?;
        let reg = registry();
        let open = |name: &str| {
            let url = format!("sqlite://{}", dir.path().join(name).display());
            async move { hubsync::storage::open_store(&url).await }
        };
        let master_store = open("master.db").await?;
        let master_id = Uuid::now_v7();
        Engine::initialize(
            master_store.as_ref(),
            &InitParams {
                role: NodeRole::Master,
                node_id: master_id,
                code: "MASTER".into(),
                name: "master".into(),
                master_id: None,
            },
        )
        .await?;
        let master = Engine::open(
            master_store,
            reg.clone(),
            ConflictPolicy::server_wins(),
            options.clone(),
        )
        .await?;
        let mut out = Vec::new();
        for i in 0..clients {
            let code = format!("C{i}");
            let rec = master.add_node(&code, &code, &format!("hash-{i}")).await?;
            let store = open(&format!("client{i}.db")).await?;
            Engine::initialize(
                store.as_ref(),
                &InitParams {
                    role: NodeRole::Client,
                    node_id: rec.id,
                    code: code.clone(),
                    name: code.clone(),
                    master_id: Some(master_id),
                },
            )
            .await?;
            let engine = Engine::open(
                store,
                reg.clone(),
                ConflictPolicy::server_wins(),
                options.clone(),
            )
            .await?;
            out.push((
                engine,
                MemoryTransport {
                    master: master.clone(),
                    node_id: rec.id,
                },
            ));
        }
        Ok(EngineSet {
            dir,
            master,
            clients: out,
        })
    }

    pub async fn sync(&self, i: usize) -> anyhow::Result<hubsync_core::engine::SyncSummary> {
        let (engine, transport) = &self.clients[i];
        Ok(engine.sync_session(transport, &NoProgress).await?)
    }

    pub async fn close(self) {
        for (c, _) in &self.clients {
            c.store().close().await;
        }
        self.master.store().close().await;
    }
}

/// Runs a future on a fresh current-thread runtime (for proptest bodies).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Keeps `Arc` in the public surface used by tests.
pub type Shared<T> = Arc<T>;

/// Upper bound of any single wait in the end-to-end tests: a sync session,
/// a cluster start, an API request. Generous, so that it only fires on a
/// hang, never on a slow machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// A cluster whose master runs on `backend` (the scenario files set it per
/// target), or `None` when that backend is not available here (the kit has
/// said SKIPPED on stderr); bounded, and failing the test if it does not
/// start.
pub async fn start_on(
    backend: MasterBackend,
    clients: usize,
    opts: ClusterOptions,
) -> Option<Cluster> {
    let opts = ClusterOptions {
        master_backend: backend,
        ..opts
    };
    bounded("starting the cluster", Cluster::try_start(clients, opts))
        .await
        .expect("the cluster starts")
}

/// Runs `fut`, failing the test (naming `what`) if it does not finish
/// within [`WAIT`].
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {WAIT:?}"),
    }
}

impl Cluster {
    /// Syncs every client, pass after pass, until one whole pass moves
    /// nothing (no change sent or received, no conflict); returns the
    /// number of passes. Fails after `max_passes` passes that all moved
    /// something.
    pub async fn sync_until_quiet(&self, max_passes: usize) -> anyhow::Result<usize> {
        for pass in 1..=max_passes {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let s = self.sync(i).await?;
                moved |= s.sent_changes > 0
                    || s.received_changes > 0
                    || s.kept_local > 0
                    || !s.conflicts.is_empty();
            }
            if !moved {
                return Ok(pass);
            }
        }
        anyhow::bail!("the cluster was still moving changes after {max_passes} sync passes")
    }

    /// An HTTPS transport that presents `token` as client `i` (to test
    /// authentication).
    pub fn transport_with_token(
        &self,
        i: usize,
        token: &str,
    ) -> anyhow::Result<hubsync::transport::HttpsTransport> {
        let cfg = &self.clients[i].node.config;
        let link = cfg.master.as_ref().expect("client has [master]");
        Ok(hubsync::transport::HttpsTransport::new(
            hubsync::tls::client_config(&link.ca_cert)?,
            &link.url,
            token.to_string(),
            Duration::from_secs(30),
        ))
    }

    /// Shuts the master down (servers stopped, store closed); the clients
    /// keep running. [`MasterDown::restart_master`] brings it back on the
    /// same sync address.
    pub async fn stop_master(self) -> MasterDown {
        let Cluster {
            dir,
            master,
            clients,
            tokens,
            master_db,
        } = self;
        let master_config = master.node.config.clone();
        let master_sync_addr = master.sync_addr.expect("master has a sync address");
        master.shutdown(Duration::from_secs(5)).await;
        MasterDown {
            dir,
            clients,
            tokens,
            master_config,
            master_sync_addr,
            master_db,
        }
    }
}

/// A cluster whose master is shut down.
pub struct MasterDown {
    pub dir: tempfile::TempDir,
    pub clients: Vec<RunningNode>,
    pub tokens: Vec<String>,
    pub master_config: Config,
    pub master_sync_addr: std::net::SocketAddr,
    /// The master's PostgreSQL database, if any (kept while it is down).
    pub master_db: Option<Arc<ScratchDatabase>>,
}

impl MasterDown {
    pub fn client(&self, i: usize) -> &Engine {
        &self.clients[i].node.engine
    }

    /// One sync session of client `i` (through its real HTTPS transport).
    pub async fn sync(&self, i: usize) -> anyhow::Result<hubsync_core::engine::SyncSummary> {
        Ok(self.clients[i].node.sync_now(&NoProgress).await?)
    }

    /// Starts the master again from its configuration and store, listening
    /// on the sync address the clients know.
    pub async fn restart_master(self) -> anyhow::Result<Cluster> {
        let mut config = self.master_config;
        if let Some(listen) = config.listen.as_mut() {
            listen.addr = self.master_sync_addr;
        }
        let master = RunningNode::start(config).await?;
        Ok(Cluster {
            dir: self.dir,
            master,
            clients: self.clients,
            tokens: self.tokens,
            master_db: self.master_db,
        })
    }

    pub async fn shutdown(self) {
        for c in self.clients {
            c.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A raw HTTP/1.1 exchange with a local API, for what
/// `hubsync::local_client::request` cannot send or read: a body that is not
/// JSON, an answer that is not JSON (`/metrics`). Returns the status, the
/// lower-cased header lines and the body text. Bounded by [`WAIT`].
pub async fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<String>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{method} {path}: no answer within {WAIT:?}"))??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{method} {path}: no end of headers in {text:?}"))?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{method} {path}: no status line in {head:?}"))?;
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    let body = if headers
        .iter()
        .any(|h| h.starts_with("transfer-encoding:") && h.contains("chunked"))
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, headers, body))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| anyhow::anyhow!("truncated chunk"))?;
        out.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// The scenario vocabulary the end-to-end tests share: each step is bounded
/// and panics saying what failed.
pub mod scenario {
    use hubsync_core::Engine;
    use hubsync_core::engine::SyncSummary;
    use serde_json::Value;
    use uuid::Uuid;

    use crate::{Cluster, ClusterOptions, bounded, dump};

    /// A master (with `master_toml` appended to its configuration) and
    /// `clients` clients.
    pub async fn start_with(clients: usize, master_toml: String) -> Cluster {
        bounded(
            "starting the cluster",
            Cluster::start(
                clients,
                ClusterOptions {
                    master_toml,
                    ..ClusterOptions::default()
                },
            ),
        )
        .await
        .expect("the cluster starts")
    }

    pub async fn sync(c: &Cluster, i: usize) -> SyncSummary {
        bounded(&format!("sync of client {i}"), c.sync(i))
            .await
            .unwrap_or_else(|e| panic!("sync of client {i} failed: {e:#}"))
    }

    pub async fn create(e: &Engine, ty: &str, data: Value) -> Uuid {
        e.create(ty, None, data)
            .await
            .unwrap_or_else(|err| panic!("creating a {ty}: {err}"))
            .uuid
    }

    pub async fn update(e: &Engine, ty: &str, uuid: Uuid, data: Value) {
        e.put(ty, uuid, data)
            .await
            .unwrap_or_else(|err| panic!("updating {ty} {uuid}: {err}"));
    }

    /// Syncs until quiet, then every client holds exactly the master's state.
    pub async fn converge(c: &Cluster) {
        bounded("syncing until quiet", c.sync_until_quiet(6))
            .await
            .expect("the cluster becomes quiet");
        let master = dump(c.master()).await.expect("master dump");
        for i in 0..c.clients.len() {
            assert_eq!(
                dump(c.client(i)).await.expect("client dump"),
                master,
                "client {i} does not hold the master's state"
            );
        }
    }
}
