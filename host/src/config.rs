//! Typed configuration of a hubsync node (contract §3).
//!
//! Owns: layering (built-in defaults, then the TOML file, then `HUBSYNC_*`
//! environment variables with `__` for nesting), resolving relative paths
//! against the config file's directory, validation that reports every
//! problem at once, and rendering a config back to commented TOML for
//! `hubsync init`.
//!
//! Must never: do I/O while validating (files named by the config are
//! checked by whoever opens them), accept a key it does not know, or show a
//! token in an error, a log line or `Debug` output.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

/// Environment variables with this prefix override the file.
pub const ENV_PREFIX: &str = "HUBSYNC_";
/// Separator for nested keys in environment variable names.
pub const ENV_NESTING: &str = "__";
/// `HUBSYNC_*` variables that belong to the command line, not the file.
/// (`HUBSYNC_LOG` sets the log filter, `HUBSYNC_TOKEN` feeds `init client`,
/// `HUBSYNC_TEST_*` belong to the test suite.)
const ENV_RESERVED: &[&str] = &["CONFIG", "LOG", "TOKEN"];
/// Prefixes (after `HUBSYNC_`) of variables that are never configuration.
const ENV_RESERVED_PREFIXES: &[&str] = &["TEST_", "BENCH_"];

/// Which role this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The arbiter: serves the sync protocol over HTTPS.
    Master,
    /// Syncs with a master over HTTPS.
    Client,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Master => "master",
            Mode::Client => "client",
        })
    }
}

/// A node's whole configuration. After [`Config::load`] every path in it is
/// absolute (resolved against the config file's directory).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// The schema set directory.
    #[serde(default = "default_schemas")]
    pub schemas: PathBuf,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Master only: where the sync protocol is served (HTTPS).
    #[serde(default)]
    pub listen: Option<ListenConfig>,
    #[serde(default)]
    pub api: ApiConfig,
    /// Client only: the master this node syncs with.
    #[serde(default)]
    pub master: Option<MasterLink>,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub conflicts: ConflictsConfig,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub log: LogConfig,
    /// Master only: resource limits of the sync endpoint.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Master only: the security event log's retention.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Master only: which rows each node receives.
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(skip)]
    config_dir: PathBuf,
}

/// `[routing]`: per node code, the scope it receives
/// (`[routing.nodes.DESKTOP-1]` with `types` and `with_references`, the
/// form of `hubsync node scope`; docs/operations.md "Routing"). Nodes not
/// listed keep the scope set with `hubsync node scope` (everything by
/// default). Applied when the master starts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub nodes: BTreeMap<String, serde_json::Value>,
}

/// `[storage]`: where the node keeps its data, and the connection pool of
/// backends that have one (PostgreSQL). SQLite ignores the pool settings:
/// it always keeps one writer connection and a few readers.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://relative/or/absolute.db`, `sqlite:///abs/path.db`, or
    /// `postgres://user@host/db`.
    pub url: String,
    /// Most connections one host opens to the database.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// Seconds a request waits for a free connection before it fails.
    pub acquire_timeout_secs: u64,
    /// Seconds before an idle connection (above `min_connections`) is
    /// closed; 0 = never.
    pub idle_timeout_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://data/hubsync.db".into(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 30,
            idle_timeout_secs: 600,
        }
    }
}

/// A PostgreSQL URL may hold a password: never shown.
impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &crate::storage::display_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .finish()
    }
}

impl StorageConfig {
    /// The pool settings handed to the storage backend.
    pub fn pool_options(&self) -> hubsync_core::store::PoolOptions {
        hubsync_core::store::PoolOptions {
            max_connections: self.max_connections,
            min_connections: self.min_connections,
            acquire_timeout: Duration::from_secs(self.acquire_timeout_secs),
            idle_timeout: (self.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.idle_timeout_secs)),
        }
    }

    /// The URL scheme (`sqlite`, `postgres`, …), lowercased; empty if none.
    pub fn scheme(&self) -> String {
        self.url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// `[listen]`: the master's sync protocol endpoint (HTTPS only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// Deprecated spelling of `[limits].max_body_bytes` (the compressed
    /// request body cap); when set, it wins.
    pub max_body_bytes: Option<usize>,
    /// Mutual TLS: every client must present a certificate issued by
    /// `client_ca` (`hubsync node add --cert`) that names the same node as
    /// its token.
    pub require_client_cert: bool,
    /// The CA client certificates must chain to (default: the master's own
    /// CA, which `node add --cert` signs with).
    pub client_ca: PathBuf,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert: "tls/server.pem".into(),
            key: "tls/server.key".into(),
            max_body_bytes: None,
            require_client_cert: false,
            client_ca: "tls/ca.pem".into(),
        }
    }
}

/// `[limits]`: what one request, one node and one address may cost the
/// master (issue 7). Every refusal is a security event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body as sent (gzip), bytes; more gets 413.
    pub max_body_bytes: usize,
    /// Largest request body after decompression, bytes; decompression
    /// stops there (a gzip bomb costs at most this much memory) with 413.
    pub max_decompressed_bytes: usize,
    /// Most entities in one packet; more gets 413.
    pub max_entities_per_packet: usize,
    /// Deepest nesting of JSON arrays/objects in a packet; deeper gets 413
    /// before any parsing.
    pub max_json_depth: usize,
    /// Seconds a client may take to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Seconds a client may take to send a request's body (a slow client is
    /// cut with 408).
    pub body_read_timeout_secs: u64,
    /// Exchanges of one node served at once; more get 429 at once (with
    /// `Retry-After: 1`) rather than waiting.
    pub max_concurrent_exchanges_per_node: u32,
    /// Sustained requests per minute per node (token bucket); more get 429
    /// `rate_limited` with `Retry-After`. The default (3000 = 50/s) is what
    /// one node moving 100,000 entities/s in packets of 2000 sends, so a
    /// bulk sync at that speed never empties the bucket
    /// (docs/operations.md, "Security").
    pub rate_limit_per_minute: u32,
    /// Requests a node may make back to back above the sustained rate: the
    /// bucket's size. The default (2000) covers a 1M-entity session in the
    /// clients' default packets of 500.
    pub rate_limit_burst: u32,
    /// Authentication failures from one address (or for one node) within
    /// `auth_failure_window_secs` before it is locked out.
    pub auth_failures_before_lockout: u32,
    pub auth_failure_window_secs: u64,
    /// How long a lockout lasts; requests meanwhile get 429 with
    /// `Retry-After`, whatever their token.
    pub lockout_secs: u64,
    /// Each authentication failure's answer is delayed by this much per
    /// failure so far in the window (capped at 2 s): guessing is slowed
    /// before it is locked out.
    pub auth_failure_delay_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_entities_per_packet: 2000,
            max_json_depth: 64,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            max_concurrent_exchanges_per_node: 2,
            rate_limit_per_minute: 3000,
            rate_limit_burst: 2000,
            auth_failures_before_lockout: 10,
            auth_failure_window_secs: 300,
            lockout_secs: 900,
            auth_failure_delay_ms: 200,
        }
    }
}

impl LimitsConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }
}

/// `[security]`: the security event log (`hubsync security-events`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Days security events are kept; a master serving the sync protocol
    /// deletes older ones at start-up and then hourly. 0 = keep forever.
    pub events_retention_days: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            events_retention_days: 90,
        }
    }
}

impl SecurityConfig {
    /// How long events are kept; None = forever.
    pub fn events_retention(&self) -> Option<chrono::Duration> {
        (self.events_retention_days > 0)
            .then(|| chrono::Duration::days(i64::from(self.events_retention_days)))
    }
}

/// `[api]`: the local entity API (plain HTTP; loopback by default).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// A bearer token every request but `GET /health` must carry
    /// (`Authorization: Bearer …`). Required when `addr` is not a loopback
    /// address; `HUBSYNC_API__TOKEN` keeps it out of the file.
    pub token: Option<String>,
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
        }
    }
}

/// `[master]`: a client's link to its master. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterLink {
    /// `https://host:port` of the master's sync endpoint.
    pub url: String,
    /// The CA certificate (PEM) the master's certificate must chain to.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// This node's id (a UUID), as printed by `hubsync node add`.
    pub node_id: String,
    /// The node's token inline; exactly one of `token` / `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the node's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Mutual TLS: this node's client certificate (PEM), from `hubsync node
    /// add --cert` on the master; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl fmt::Debug for MasterLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterLink")
            .field("url", &self.url)
            .field("ca_cert", &self.ca_cert)
            .field("node_id", &self.node_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// `[sync]`: session timing and packet limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Seconds between background sync sessions; 0 = only on demand.
    pub interval_secs: u64,
    /// Most entities in one packet.
    pub max_packet_entities: usize,
    /// Largest packet (uncompressed JSON) in bytes.
    pub max_packet_bytes: usize,
    /// Bound on one request to the master, response included.
    pub request_timeout_secs: u64,
    /// After a failed background sync, the first wait before trying again;
    /// each further failure doubles it (with ±25% jitter) up to
    /// `retry_max_secs`.
    pub retry_initial_ms: u64,
    /// The longest wait between background attempts after failures.
    pub retry_max_secs: u64,
    /// Master: how long a received change whose reference never arrived is
    /// held before it goes to the manual queue.
    pub hold_timeout_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_secs: 30,
            max_packet_entities: 500,
            max_packet_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            retry_initial_ms: 1000,
            retry_max_secs: 300,
            hold_timeout_secs: 24 * 3600,
        }
    }
}

impl SyncConfig {
    /// The background sync interval; `None` when syncing only on demand.
    pub fn interval(&self) -> Option<Duration> {
        (self.interval_secs > 0).then(|| Duration::from_secs(self.interval_secs))
    }

    /// The bound on one request to the master.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// `[conflicts]`: which resolver settles conflicts, per entity type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConflictsConfig {
    /// The resolver for types not listed in `per_type`.
    pub default: String,
    /// Entity type name → resolver name.
    pub per_type: BTreeMap<String, String>,
    /// Keep losing versions in the version history.
    pub versioning: bool,
    /// The bound on one call into a resolver plugin; past it the conflict
    /// is deferred to a person.
    pub plugin_timeout_ms: u64,
    /// Options per resolver name (`[conflicts.options.field-merge]`),
    /// checked at start against each resolver's declared options.
    pub options: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

impl Default for ConflictsConfig {
    fn default() -> Self {
        ConflictsConfig {
            default: "server-wins".into(),
            per_type: BTreeMap::new(),
            versioning: true,
            plugin_timeout_ms: 2000,
            options: BTreeMap::new(),
        }
    }
}

impl ConflictsConfig {
    /// The bound on one call into a resolver plugin.
    pub fn plugin_timeout(&self) -> Duration {
        Duration::from_millis(self.plugin_timeout_ms)
    }

    /// The resolver configured for `entity_type`.
    pub fn resolver_for(&self, entity_type: &str) -> &str {
        self.per_type
            .get(entity_type)
            .map_or(self.default.as_str(), String::as_str)
    }
}

/// `[[plugins]]`: a resolver plugin to load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub path: PathBuf,
}

/// `[log]`: logging defaults (`RUST_LOG` still wins where the CLI honours it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `hubsync=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

fn default_schemas() -> PathBuf {
    PathBuf::from("schemas")
}

fn default_ca_cert() -> PathBuf {
    PathBuf::from("tls/ca.pem")
}

/// One thing wrong with a configuration: the key, what is wrong, and (when
/// there is one) what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key (`master.url`) or environment variable name.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigProblem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded or used. Never contains a token.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}; check the path given with --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Every problem found, parse errors or validation failures.
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },

    #[error(
        "this node has no [master] section (mode = \"{mode}\"); a master link and token are only used in client mode"
    )]
    NoMasterLink { mode: Mode },

    #[error(
        "no node token configured; set [master].token or [master].token_file to the token printed by `hubsync node add`"
    )]
    NoToken,

    #[error("cannot read the node token from {path}: {source}; check [master].token_file")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the node token in {origin} is empty; put the token printed by `hubsync node add` there"
    )]
    EmptyToken { origin: String },
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`]; empty for other errors.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn describe_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = match problems.len() {
        1 => format!("invalid configuration {}:", path.display()),
        n => format!("invalid configuration {} ({n} problems):", path.display()),
    };
    for problem in problems {
        let _ = write!(out, "\n  - {problem}");
    }
    out
}

impl Config {
    /// A default configuration for `mode` rooted at `config_dir` (for
    /// `hubsync init`): fill in what differs, check with
    /// [`Config::validate`], then write [`Config::to_toml`]. Paths are
    /// resolved against `config_dir` as [`Config::load`] would.
    pub fn new(mode: Mode, config_dir: &Path) -> Config {
        let mut config = Config {
            mode,
            schemas: default_schemas(),
            storage: StorageConfig::default(),
            listen: (mode == Mode::Master).then(ListenConfig::default),
            api: ApiConfig::default(),
            master: None,
            sync: SyncConfig::default(),
            conflicts: ConflictsConfig::default(),
            plugins: Vec::new(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
            routing: RoutingConfig::default(),
            config_dir: absolute(config_dir),
        };
        config.resolve_paths();
        config
    }

    /// Loads `path` with the process's `HUBSYNC_*` environment variables
    /// layered on top (environment wins). See [`Config::load_with_env`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.to_string_lossy();
                has_env_prefix(&k).then(|| (k.into_owned(), v.to_string_lossy().into_owned()))
            })
            .collect();
        Config::load_with_env(path, &env)
    }

    /// Loads `path` with the given environment variables (only `HUBSYNC_*`
    /// ones are used) layered on top, resolves every relative path against
    /// the file's directory, and validates without I/O. Returns every
    /// problem found at once.
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut figment = Figment::new().merge(Toml::string(&text));
        for (name, value) in env {
            if let Some(var) = EnvVar::parse(name, value) {
                figment = figment.merge(var);
            }
        }
        // Lossy: environment values arrive as strings ("30", "true").
        let mut config: Config = figment.extract_lossy().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: figment_problems(e),
        })?;
        config.config_dir = absolute(path.parent().unwrap_or(Path::new(".")));
        // Validate before resolving: emptiness of paths is only visible now.
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        config.resolve_paths();
        if !config.api.addr.ip().is_loopback() {
            tracing::warn!(
                addr = %config.api.addr,
                "the local API is plain HTTP and listens beyond loopback: its token travels in clear; put it behind TLS"
            );
        }
        Ok(config)
    }

    /// Checks the configuration without I/O; all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.config_dir.join("hubsync.toml"),
                problems,
            })
        }
    }

    /// The directory relative paths in the file are resolved against.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The storage URL with a sqlite path made absolute (against the config
    /// directory); other URLs unchanged.
    pub fn storage_url_resolved(&self) -> String {
        resolve_sqlite_url(&self.storage.url, &self.config_dir)
            .unwrap_or_else(|| self.storage.url.clone())
    }

    /// The client's token: `[master].token`, or the contents of
    /// `[master].token_file`, trimmed. Errors name the file, never the token.
    pub fn master_token(&self) -> Result<String, ConfigError> {
        let link = self
            .master
            .as_ref()
            .ok_or(ConfigError::NoMasterLink { mode: self.mode })?;
        let (token, origin) = match (&link.token, &link.token_file) {
            (Some(token), _) => (token.trim().to_string(), "[master].token".to_string()),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                        path: path.clone(),
                        source,
                    })?;
                (text.trim().to_string(), path.display().to_string())
            }
            (None, None) => return Err(ConfigError::NoToken),
        };
        if token.is_empty() {
            return Err(ConfigError::EmptyToken { origin });
        }
        Ok(token)
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.api.addr.ip().is_loopback()
            && self
                .api
                .token
                .as_deref()
                .is_none_or(|t| t.trim().is_empty())
        {
            problems.push(
                ConfigProblem::new(
                    "api.addr",
                    format!(
                        "{} is not a loopback address, and the local API has no token: anyone who can reach it could read and write every entity",
                        self.api.addr
                    ),
                )
                .hint("bind it to 127.0.0.1, or set [api].token (or HUBSYNC_API__TOKEN) to a long random secret"),
            );
        }
        let mut empty_path = |key: &str, path: &Path| {
            if path.as_os_str().is_empty() {
                problems.push(ConfigProblem::new(key, "must not be empty"));
            }
        };
        empty_path("schemas", &self.schemas);
        if let Some(listen) = &self.listen {
            empty_path("listen.cert", &listen.cert);
            empty_path("listen.key", &listen.key);
            empty_path("listen.client_ca", &listen.client_ca);
        }
        if let Some(master) = &self.master {
            empty_path("master.ca_cert", &master.ca_cert);
            if let Some(file) = &master.token_file {
                empty_path("master.token_file", file);
            }
            if let Some(file) = &master.client_cert {
                empty_path("master.client_cert", file);
            }
            if let Some(file) = &master.client_key {
                empty_path("master.client_key", file);
            }
        }
        for (i, plugin) in self.plugins.iter().enumerate() {
            empty_path(&format!("plugins[{i}].path"), &plugin.path);
        }

        match self.storage.scheme().as_str() {
            "sqlite" => {
                if resolve_sqlite_url(&self.storage.url, Path::new("/")).is_none() {
                    problems.push(
                        ConfigProblem::new(
                            "storage.url",
                            format!("`{}` is not a sqlite URL", self.storage.url),
                        )
                        .hint("write sqlite://relative/path.db or sqlite:///absolute/path.db"),
                    );
                }
            }
            "postgres" | "postgresql" => {
                if !self.storage.url.contains("://") {
                    problems.push(
                        ConfigProblem::new(
                            "storage.url",
                            format!(
                                "`{}` is not a PostgreSQL URL",
                                crate::storage::display_url(&self.storage.url)
                            ),
                        )
                        .hint("write postgres://user[:password]@host[:port]/database"),
                    );
                }
            }
            _ => problems.push(
                ConfigProblem::new(
                    "storage.url",
                    format!("`{}` names no supported storage backend", self.storage.url),
                )
                .hint("use sqlite://path/to/file.db or postgres://user@host/db"),
            ),
        }

        match self.mode {
            Mode::Master => {
                if self.listen.is_none() {
                    problems.push(
                        ConfigProblem::new("listen", "mode = \"master\" needs a [listen] section")
                            .hint("add [listen] with addr, cert and key (the sync protocol is served over HTTPS)"),
                    );
                }
                if self.master.is_some() {
                    problems.push(
                        ConfigProblem::new("master", "[master] is only used in client mode")
                            .hint("remove the [master] section, or set mode = \"client\""),
                    );
                }
            }
            Mode::Client => {
                if self.listen.is_some() {
                    problems.push(
                        ConfigProblem::new("listen", "[listen] is only used in master mode").hint(
                            "remove the [listen] section; a client serves only the local [api]",
                        ),
                    );
                }
                match &self.master {
                    None => problems.push(
                        ConfigProblem::new("master", "mode = \"client\" needs a [master] section")
                            .hint("add [master] with url, ca_cert, node_id and token (see `hubsync node add` on the master)"),
                    ),
                    Some(link) => link_problems(link, &mut problems),
                }
            }
        }

        if let Some(listen) = &self.listen {
            // Port 0 asks the OS for a free port: two of them never clash.
            if listen.addr == self.api.addr && listen.addr.port() != 0 {
                problems.push(
                    ConfigProblem::new(
                        "api.addr",
                        format!("{} is also [listen].addr", self.api.addr),
                    )
                    .hint("give the local API and the sync protocol different ports"),
                );
            }
            if listen.max_body_bytes == Some(0) {
                problems.push(ConfigProblem::new(
                    "listen.max_body_bytes",
                    "must be greater than 0",
                ));
            }
        }
        if let Some(master) = &self.master
            && master.client_cert.is_some() != master.client_key.is_some()
        {
            problems.push(
                ConfigProblem::new(
                    "master.client_cert",
                    "client_cert and client_key go together: set both or neither",
                )
                .hint("use the two files `hubsync node add --cert` wrote for this node"),
            );
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            (
                "limits.max_decompressed_bytes",
                l.max_decompressed_bytes as u64,
            ),
            (
                "limits.max_entities_per_packet",
                l.max_entities_per_packet as u64,
            ),
            ("limits.max_json_depth", l.max_json_depth as u64),
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("limits.body_read_timeout_secs", l.body_read_timeout_secs),
            (
                "limits.max_concurrent_exchanges_per_node",
                u64::from(l.max_concurrent_exchanges_per_node),
            ),
            (
                "limits.rate_limit_per_minute",
                u64::from(l.rate_limit_per_minute),
            ),
            ("limits.rate_limit_burst", u64::from(l.rate_limit_burst)),
            (
                "limits.auth_failures_before_lockout",
                u64::from(l.auth_failures_before_lockout),
            ),
            (
                "limits.auth_failure_window_secs",
                l.auth_failure_window_secs,
            ),
            ("limits.lockout_secs", l.lockout_secs),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        if l.max_decompressed_bytes < l.max_body_bytes {
            problems.push(ConfigProblem::new(
                "limits.max_decompressed_bytes",
                format!(
                    "{} is less than limits.max_body_bytes ({}): a packet never shrinks when decompressed",
                    l.max_decompressed_bytes, l.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            (
                "sync.max_packet_entities",
                self.sync.max_packet_entities as u64,
            ),
            ("sync.max_packet_bytes", self.sync.max_packet_bytes as u64),
            ("sync.request_timeout_secs", self.sync.request_timeout_secs),
            ("sync.retry_initial_ms", self.sync.retry_initial_ms),
            ("sync.retry_max_secs", self.sync.retry_max_secs),
            (
                "conflicts.plugin_timeout_ms",
                self.conflicts.plugin_timeout_ms,
            ),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        if self.storage.max_connections == 0 {
            problems.push(
                ConfigProblem::new("storage.max_connections", "must be greater than 0")
                    .hint("for example 10; see docs/operations.md for sizing"),
            );
        }
        if self.storage.min_connections > self.storage.max_connections {
            problems.push(ConfigProblem::new(
                "storage.min_connections",
                format!(
                    "{} is more than storage.max_connections ({})",
                    self.storage.min_connections, self.storage.max_connections
                ),
            ));
        }
        if self.storage.acquire_timeout_secs == 0 {
            problems.push(ConfigProblem::new(
                "storage.acquire_timeout_secs",
                "must be greater than 0",
            ));
        }
        if self.conflicts.default.trim().is_empty() {
            problems.push(
                ConfigProblem::new("conflicts.default", "must name a resolver")
                    .hint("for example \"server-wins\" or \"last-writer-wins\""),
            );
        }
        for (entity_type, resolver) in &self.conflicts.per_type {
            if resolver.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("conflicts.per_type.{entity_type}"),
                    "must name a resolver",
                ));
            }
        }
        if self.log.level.trim().is_empty() {
            problems.push(
                ConfigProblem::new("log.level", "must not be empty").hint("for example \"info\""),
            );
        }
        problems
    }

    /// Makes every relative path absolute against the config directory.
    fn resolve_paths(&mut self) {
        let dir = self.config_dir.clone();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        resolve(&mut self.schemas);
        if let Some(listen) = &mut self.listen {
            resolve(&mut listen.cert);
            resolve(&mut listen.key);
            resolve(&mut listen.client_ca);
        }
        if let Some(master) = &mut self.master {
            resolve(&mut master.ca_cert);
            if let Some(file) = &mut master.token_file {
                resolve(file);
            }
            for file in [&mut master.client_cert, &mut master.client_key]
                .into_iter()
                .flatten()
            {
                resolve(file);
            }
        }
        for plugin in &mut self.plugins {
            resolve(&mut plugin.path);
        }
        if let Some(url) = resolve_sqlite_url(&self.storage.url, &dir) {
            self.storage.url = url;
        }
    }

    /// Renders the configuration as commented TOML (paths relative to the
    /// config directory where they lie under it), for `hubsync init`.
    ///
    /// A `[master].token` is written as is: keep the file private (0600).
    pub fn to_toml(&self) -> String {
        let rel = |p: &Path| -> String {
            let shown = p.strip_prefix(&self.config_dir).unwrap_or(p);
            toml_string(&shown.to_string_lossy())
        };
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "# hubsync node configuration (contract §3).");
        let _ = writeln!(w, "# Relative paths are relative to this file's directory.");
        let _ = writeln!(w, "# Any key can be overridden by an environment variable:");
        let _ = writeln!(
            w,
            "# HUBSYNC_<SECTION>__<KEY>, e.g. HUBSYNC_STORAGE__URL, HUBSYNC_SYNC__INTERVAL_SECS."
        );
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "# \"master\" (arbiter, serves the sync protocol) or \"client\"."
        );
        let _ = writeln!(w, "mode = {}", toml_string(&self.mode.to_string()));
        let _ = writeln!(
            w,
            "# The schema set directory (<Type>.schema.json + schema-set.json)."
        );
        let _ = writeln!(w, "schemas = {}", rel(&self.schemas));
        let _ = writeln!(w);
        let _ = writeln!(w, "[storage]");
        let _ = writeln!(
            w,
            "# sqlite://relative/path.db, sqlite:///absolute/path.db or postgres://user@host/db"
        );
        let _ = writeln!(w, "url = {}", toml_string(&self.storage_url_for_file()));
        let _ = writeln!(
            w,
            "# Connection pool of a PostgreSQL store (SQLite ignores these)."
        );
        let _ = writeln!(w, "max_connections = {}", self.storage.max_connections);
        let _ = writeln!(w, "min_connections = {}", self.storage.min_connections);
        let _ = writeln!(
            w,
            "acquire_timeout_secs = {}",
            self.storage.acquire_timeout_secs
        );
        let _ = writeln!(w, "# 0 = idle connections are never closed.");
        let _ = writeln!(w, "idle_timeout_secs = {}", self.storage.idle_timeout_secs);
        if let Some(listen) = &self.listen {
            let _ = writeln!(w);
            let _ = writeln!(w, "# The sync protocol endpoint (HTTPS only).");
            let _ = writeln!(w, "[listen]");
            let _ = writeln!(w, "addr = {}", toml_string(&listen.addr.to_string()));
            let _ = writeln!(w, "# Server certificate chain and private key (PEM).");
            let _ = writeln!(w, "cert = {}", rel(&listen.cert));
            let _ = writeln!(w, "key = {}", rel(&listen.key));
            let _ = writeln!(
                w,
                "# Mutual TLS: require a client certificate from `hubsync node add --cert`,"
            );
            let _ = writeln!(
                w,
                "# issued by client_ca and naming the same node as the token."
            );
            let _ = writeln!(w, "require_client_cert = {}", listen.require_client_cert);
            let _ = writeln!(w, "client_ca = {}", rel(&listen.client_ca));
            let l = &self.limits;
            let _ = writeln!(w);
            let _ = writeln!(
                w,
                "# What one request, node or address may cost (refusals are security events)."
            );
            let _ = writeln!(w, "[limits]");
            let _ = writeln!(w, "# Request body as sent (gzip), and after decompression.");
            let _ = writeln!(w, "max_body_bytes = {}", l.max_body_bytes);
            let _ = writeln!(w, "max_decompressed_bytes = {}", l.max_decompressed_bytes);
            let _ = writeln!(w, "max_entities_per_packet = {}", l.max_entities_per_packet);
            let _ = writeln!(w, "# Deepest JSON nesting accepted in a packet.");
            let _ = writeln!(w, "max_json_depth = {}", l.max_json_depth);
            let _ = writeln!(
                w,
                "# A client slower than this sending headers / body is cut."
            );
            let _ = writeln!(
                w,
                "header_read_timeout_secs = {}",
                l.header_read_timeout_secs
            );
            let _ = writeln!(w, "body_read_timeout_secs = {}", l.body_read_timeout_secs);
            let _ = writeln!(
                w,
                "# Per node: exchanges at once (more: 429), and a request rate (429 + Retry-After)."
            );
            let _ = writeln!(
                w,
                "# The defaults (3000/min, burst 2000) let one node sync 1M entities at 100k/s unthrottled."
            );
            let _ = writeln!(
                w,
                "max_concurrent_exchanges_per_node = {}",
                l.max_concurrent_exchanges_per_node
            );
            let _ = writeln!(w, "rate_limit_per_minute = {}", l.rate_limit_per_minute);
            let _ = writeln!(w, "rate_limit_burst = {}", l.rate_limit_burst);
            let _ = writeln!(
                w,
                "# Authentication failures per address or node: each answer slowed by"
            );
            let _ = writeln!(
                w,
                "# auth_failure_delay_ms x failures, then locked out for lockout_secs."
            );
            let _ = writeln!(
                w,
                "auth_failures_before_lockout = {}",
                l.auth_failures_before_lockout
            );
            let _ = writeln!(
                w,
                "auth_failure_window_secs = {}",
                l.auth_failure_window_secs
            );
            let _ = writeln!(w, "lockout_secs = {}", l.lockout_secs);
            let _ = writeln!(w, "auth_failure_delay_ms = {}", l.auth_failure_delay_ms);
            let _ = writeln!(w);
            let _ = writeln!(w, "[security]");
            let _ = writeln!(
                w,
                "# Days security events are kept (pruned at start-up, then hourly); 0 = forever."
            );
            let _ = writeln!(
                w,
                "events_retention_days = {}",
                self.security.events_retention_days
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "# The local entity API: plain HTTP without authentication, keep it on loopback."
        );
        let _ = writeln!(w, "[api]");
        let _ = writeln!(w, "addr = {}", toml_string(&self.api.addr.to_string()));
        if let Some(token) = &self.api.token {
            let _ = writeln!(w, "token = {}", toml_string(token));
        }
        if let Some(master) = &self.master {
            let _ = writeln!(w);
            let _ = writeln!(w, "# The master this client syncs with.");
            let _ = writeln!(w, "[master]");
            let _ = writeln!(w, "url = {}", toml_string(&master.url));
            let _ = writeln!(
                w,
                "# The CA certificate the master's certificate must chain to."
            );
            let _ = writeln!(w, "ca_cert = {}", rel(&master.ca_cert));
            let _ = writeln!(
                w,
                "# This node's id and token, as printed by `hubsync node add` on the master."
            );
            let _ = writeln!(w, "node_id = {}", toml_string(&master.node_id));
            if let Some(token) = &master.token {
                let _ = writeln!(w, "# Secret: keep this file readable by its owner only.");
                let _ = writeln!(w, "token = {}", toml_string(token));
            }
            if let Some(file) = &master.token_file {
                let _ = writeln!(
                    w,
                    "# A file holding the token (keep it readable by its owner only)."
                );
                let _ = writeln!(w, "token_file = {}", rel(file));
            }
            if let (Some(cert), Some(key)) = (&master.client_cert, &master.client_key) {
                let _ = writeln!(
                    w,
                    "# Mutual TLS: this node's certificate and key from `hubsync node add --cert`."
                );
                let _ = writeln!(w, "client_cert = {}", rel(cert));
                let _ = writeln!(w, "client_key = {}", rel(key));
            }
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "[sync]");
        let _ = writeln!(
            w,
            "# Seconds between background sync sessions; 0 = only on demand."
        );
        let _ = writeln!(w, "interval_secs = {}", self.sync.interval_secs);
        let _ = writeln!(
            w,
            "# Packet limits: most entities, and most bytes of (uncompressed) JSON."
        );
        let _ = writeln!(w, "max_packet_entities = {}", self.sync.max_packet_entities);
        let _ = writeln!(w, "max_packet_bytes = {}", self.sync.max_packet_bytes);
        let _ = writeln!(
            w,
            "# Bound on one request to the master, response included."
        );
        let _ = writeln!(
            w,
            "request_timeout_secs = {}",
            self.sync.request_timeout_secs
        );
        let _ = writeln!(
            w,
            "# After a failed background sync: first wait, doubled per failure up to the maximum."
        );
        let _ = writeln!(w, "retry_initial_ms = {}", self.sync.retry_initial_ms);
        let _ = writeln!(w, "retry_max_secs = {}", self.sync.retry_max_secs);
        let _ = writeln!(w);
        let _ = writeln!(w, "[conflicts]");
        let _ = writeln!(
            w,
            "# The resolver for entity types not listed under [conflicts.per_type]."
        );
        let _ = writeln!(w, "default = {}", toml_string(&self.conflicts.default));
        let _ = writeln!(
            w,
            "# Keep the losing version of every resolved conflict in the version history."
        );
        let _ = writeln!(w, "versioning = {}", self.conflicts.versioning);
        let _ = writeln!(
            w,
            "# The bound on one call into a resolver plugin; past it the conflict waits for a person."
        );
        let _ = writeln!(
            w,
            "plugin_timeout_ms = {}",
            self.conflicts.plugin_timeout_ms
        );
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "# Entity type = resolver, e.g. DailyReport = \"last-writer-wins\"."
        );
        let _ = writeln!(w, "[conflicts.per_type]");
        for (entity_type, resolver) in &self.conflicts.per_type {
            let _ = writeln!(w, "{} = {}", toml_key(entity_type), toml_string(resolver));
        }
        for plugin in &self.plugins {
            let _ = writeln!(w);
            let _ = writeln!(
                w,
                "# A resolver plugin; its resolver names become usable in [conflicts]."
            );
            let _ = writeln!(w, "[[plugins]]");
            let _ = writeln!(w, "path = {}", rel(&plugin.path));
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "[log]");
        let _ = writeln!(
            w,
            "# A tracing filter: error, warn, info, debug, trace, or per target (hubsync=debug,info)."
        );
        let _ = writeln!(w, "level = {}", toml_string(&self.log.level));
        out
    }

    /// The storage URL as the file should hold it: sqlite paths under the
    /// config directory written relative to it.
    fn storage_url_for_file(&self) -> String {
        let resolved = self.storage_url_resolved();
        let Some(rest) = resolved.strip_prefix("sqlite://") else {
            return self.storage.url.clone();
        };
        let (path, query) = split_query(rest);
        match Path::new(path).strip_prefix(&self.config_dir) {
            Ok(relative) if !relative.as_os_str().is_empty() => {
                format!("sqlite://{}{query}", relative.to_string_lossy())
            }
            _ => resolved.clone(),
        }
    }
}

fn link_problems(link: &MasterLink, problems: &mut Vec<ConfigProblem>) {
    let url = link.url.trim();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https") => {
            let valid = url
                .parse::<hyper::Uri>()
                .ok()
                .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()));
            if !valid {
                problems.push(
                    ConfigProblem::new("master.url", format!("`{url}` is not a valid URL"))
                        .hint("write https://host:port, e.g. https://127.0.0.1:8443"),
                );
            }
        }
        Some("http") => problems.push(
            ConfigProblem::new(
                "master.url",
                format!("`{url}` uses http://, but the sync protocol is HTTPS only"),
            )
            .hint("write https://… and set [master].ca_cert to the master's CA certificate"),
        ),
        _ => problems.push(
            ConfigProblem::new("master.url", format!("`{url}` is not an https:// URL"))
                .hint("write https://host:port, e.g. https://127.0.0.1:8443"),
        ),
    }
    if uuid::Uuid::parse_str(link.node_id.trim()).is_err() {
        problems.push(
            ConfigProblem::new(
                "master.node_id",
                format!("`{}` is not a UUID", link.node_id),
            )
            .hint("use the node id printed by `hubsync node add` on the master"),
        );
    }
    match (&link.token, &link.token_file) {
        (Some(_), Some(_)) => problems.push(
            ConfigProblem::new("master.token", "both token and token_file are set")
                .hint("keep exactly one of them"),
        ),
        (None, None) => problems.push(
            ConfigProblem::new("master.token", "neither token nor token_file is set")
                .hint("set token_file to a file holding the token printed by `hubsync node add` (or token inline)"),
        ),
        (Some(token), None) if token.trim().is_empty() => problems.push(
            ConfigProblem::new("master.token", "is empty")
                .hint("use the token printed by `hubsync node add` on the master"),
        ),
        _ => {}
    }
}

/// For a sqlite URL, the same URL with its path made absolute against
/// `dir`; `None` if `url` is not a sqlite URL. In-memory databases and
/// query strings are kept.
fn resolve_sqlite_url(url: &str, dir: &Path) -> Option<String> {
    let (scheme, rest) = url.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sqlite") {
        return None;
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = split_query(rest);
    if path.is_empty() {
        return None;
    }
    if path == ":memory:" || path.starts_with("file:") {
        return Some(url.to_string());
    }
    let path = Path::new(path);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    Some(format!("sqlite://{}{query}", absolute.to_string_lossy()))
}

/// Splits `path?query` into the path and `?query` (or "").
fn split_query(s: &str) -> (&str, &str) {
    match s.find('?') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // `std::path::absolute` does no I/O beyond reading the working directory.
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

fn has_env_prefix(name: &str) -> bool {
    name.len() > ENV_PREFIX.len()
        && name.is_char_boundary(ENV_PREFIX.len())
        && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
}

/// One `HUBSYNC_*` environment variable as a figment provider, so that
/// errors about its value name the variable.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    /// `HUBSYNC_STORAGE__URL` → key `storage.url`. Entity type names under
    /// `conflicts.per_type` keep their case; everything else is lowercased.
    fn parse(name: &str, value: &str) -> Option<EnvVar> {
        if !has_env_prefix(name) {
            return None;
        }
        let rest = &name[ENV_PREFIX.len()..];
        if ENV_RESERVED.iter().any(|r| r.eq_ignore_ascii_case(rest))
            || ENV_RESERVED_PREFIXES
                .iter()
                .any(|p| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p))
        {
            return None;
        }
        let mut segments: Vec<String> = rest.split(ENV_NESTING).map(str::to_string).collect();
        if segments.iter().any(|s| s.is_empty() || s.contains('.')) {
            tracing::warn!(
                variable = name,
                "ignoring environment variable that names no configuration key"
            );
            return None;
        }
        let keep_case = segments.len() == 3
            && segments[0].eq_ignore_ascii_case("conflicts")
            && segments[1].eq_ignore_ascii_case("per_type");
        for (i, segment) in segments.iter_mut().enumerate() {
            if !(keep_case && i == 2) {
                *segment = segment.to_ascii_lowercase();
            }
        }
        Some(EnvVar {
            name: name.to_string(),
            key: segments.join("."),
            value: value.to_string(),
        })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Scalars stay strings: a token or node id that looks like a number
        // must not become one. Numbers and booleans are read from strings by
        // the lossy extraction in `load_with_env`; arrays and tables
        // (`[…]`, `{…}`) are parsed.
        let value = match self.value.parse::<Value>() {
            Ok(parsed @ (Value::Array(..) | Value::Dict(..))) => parsed,
            Ok(_) => Value::from(self.value.clone()),
            Err(never) => match never {},
        };
        let dict = figment::util::nest(&self.key, value)
            .into_dict()
            .unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

/// Turns figment's errors into problems naming the key and its source.
fn figment_problems(error: figment::Error) -> Vec<ConfigProblem> {
    error
        .into_iter()
        .map(|e| {
            use figment::error::Kind;
            let from_env = e
                .metadata
                .as_ref()
                .filter(|m| m.name.starts_with("environment variable"))
                .map(|m| m.name.to_string());
            let path = e.path.join(".");
            // figment's path usually ends with the offending field already.
            let join = |field: &str| {
                if e.path.last().is_some_and(|last| last == field) {
                    path.clone()
                } else if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                }
            };
            let mut problem = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    let key = join(field);
                    ConfigProblem::new(key.clone(), format!("unknown key `{key}`")).hint(
                        if expected.is_empty() {
                            "remove it; this section takes no keys".to_string()
                        } else {
                            format!("remove it or use one of: {}", expected.join(", "))
                        },
                    )
                }
                Kind::MissingField(field) => {
                    let key = join(field);
                    ConfigProblem::new(key.clone(), format!("missing required key `{key}`"))
                }
                Kind::UnknownVariant(actual, expected) => {
                    ConfigProblem::new(path.clone(), format!("unknown value `{actual}`"))
                        .hint(format!("use one of: {}", expected.join(", ")))
                }
                Kind::InvalidType(actual, expected) => {
                    ConfigProblem::new(path.clone(), format!("expected {expected}, found {actual}"))
                }
                Kind::InvalidValue(actual, expected) => ConfigProblem::new(
                    path.clone(),
                    format!("invalid value {actual}: expected {expected}"),
                ),
                other if path.is_empty() => ConfigProblem::new("(TOML syntax)", other.to_string()),
                other => ConfigProblem::new(path.clone(), other.to_string()),
            };
            // Never echo what was given for a secret.
            if path.ends_with("token") && !matches!(e.kind, Kind::UnknownField(..)) {
                problem.message = "has the wrong type or value: expected a string".into();
            }
            if path.ends_with("addr") && problem.hint.is_none() {
                problem = problem.hint("write host:port, e.g. \"127.0.0.1:8443\"");
            }
            if let Some(var) = from_env {
                problem.message = format!("{} (from {var})", problem.message);
            }
            problem
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(name)
    }

    /// Writes `text` as `hubsync.toml` in a fresh directory and loads it.
    fn load_text(
        text: &str,
        env: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hubsync.toml");
        std::fs::write(&path, text).expect("write");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Config::load_with_env(&path, &env);
        (dir, result)
    }

    const CLIENT: &str = r#"
mode = "client"
[master]
url = "https://127.0.0.1:8443"
ca_cert = "tls/ca.pem"
node_id = "0190a3c4-6c8e-7b8a-9f00-2d3c4b5a6978"
token_file = "secrets/token"
"#;

    const MASTER: &str = r#"
mode = "master"
[listen]
addr = "127.0.0.1:8443"
"#;

    #[test]
    fn the_example_configs_parse() {
        let master = Config::load_with_env(&example("master.toml"), &[]).expect("master.toml");
        assert_eq!(master.mode, Mode::Master);
        assert!(master.listen.is_some());
        let client = Config::load_with_env(&example("client.toml"), &[]).expect("client.toml");
        assert_eq!(client.mode, Mode::Client);
        assert!(client.master.is_some());
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let (dir, config) = load_text(CLIENT, &[]);
        let config = config.expect("valid");
        let root = absolute(dir.path());
        assert_eq!(config.config_dir(), root);
        assert_eq!(config.schemas, root.join("schemas"));
        let link = config.master.as_ref().expect("master");
        assert_eq!(link.ca_cert, root.join("tls/ca.pem"));
        assert_eq!(
            link.token_file.as_deref(),
            Some(root.join("secrets/token").as_path())
        );
        let expected = format!("sqlite://{}", root.join("data/hubsync.db").display());
        assert_eq!(config.storage_url_resolved(), expected);
        assert_eq!(config.storage.url, expected);
    }

    #[test]
    fn sqlite_urls_resolve() {
        let dir = Path::new("/etc/hubsync");
        let check = |url: &str, expected: Option<&str>| {
            assert_eq!(resolve_sqlite_url(url, dir).as_deref(), expected, "{url}");
        };
        check(
            "sqlite://data/hubsync.db",
            Some("sqlite:///etc/hubsync/data/hubsync.db"),
        );
        check("sqlite:///var/lib/h.db", Some("sqlite:///var/lib/h.db"));
        check(
            "sqlite:data.db?mode=rwc",
            Some("sqlite:///etc/hubsync/data.db?mode=rwc"),
        );
        check("sqlite::memory:", Some("sqlite::memory:"));
        check("postgres://u@h/db", None);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let (_dir, result) = load_text(&format!("{MASTER}\n[storage]\nurll = \"x\"\n"), &[]);
        let err = result.expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("`storage.urll`"), "{text}");
        assert!(!text.contains("urll.urll"), "{text}");
        assert!(text.contains("hubsync.toml"), "{text}");

        let (_dir, result) = load_text(&format!("colour = \"blue\"\n{MASTER}"), &[]);
        let text = result.expect_err("unknown top-level key").to_string();
        assert!(text.contains("colour"), "{text}");

        let (_dir, result) = load_text(MASTER, &[("HUBSYNC_SYNC__INTERVAL", "5")]);
        let text = result.expect_err("unknown key from env").to_string();
        assert!(text.contains("sync.interval"), "{text}");
        assert!(text.contains("HUBSYNC_SYNC__INTERVAL"), "{text}");
    }

    #[test]
    fn environment_variables_win_over_the_file() {
        let text = format!(
            "{MASTER}\n[storage]\nurl = \"sqlite://file.db\"\n[sync]\ninterval_secs = 30\n"
        );
        let (_dir, result) = load_text(
            &text,
            &[
                (
                    "HUBSYNC_STORAGE__URL",
                    "postgres://sync@db.example.org/hubsync",
                ),
                ("HUBSYNC_SYNC__INTERVAL_SECS", "0"),
                ("HUBSYNC_CONFIG", "/ignored/by/config"),
                ("OTHER_SYNC__INTERVAL_SECS", "7"),
            ],
        );
        let config = result.expect("valid");
        assert_eq!(config.storage.url, "postgres://sync@db.example.org/hubsync");
        assert_eq!(
            config.storage_url_resolved(),
            "postgres://sync@db.example.org/hubsync"
        );
        assert_eq!(config.sync.interval_secs, 0);
        assert_eq!(config.sync.interval(), None);
        // Untouched keys keep their defaults.
        assert_eq!(config.sync.max_packet_entities, 500);
    }

    #[test]
    fn per_type_entity_names_from_the_environment_keep_their_case() {
        let (_dir, result) = load_text(
            MASTER,
            &[(
                "HUBSYNC_CONFLICTS__PER_TYPE__DailyReport",
                "last-writer-wins",
            )],
        );
        let config = result.expect("valid");
        assert_eq!(
            config.conflicts.resolver_for("DailyReport"),
            "last-writer-wins"
        );
        assert_eq!(config.conflicts.resolver_for("Brigade"), "server-wins");
    }

    #[test]
    fn environment_values_that_look_like_numbers_stay_strings_where_strings_are_wanted() {
        let text = CLIENT.replace("token_file = \"secrets/token\"", "");
        let (_dir, result) = load_text(
            &text,
            &[
                ("HUBSYNC_MASTER__TOKEN", "123456"),
                ("HUBSYNC_CONFLICTS__VERSIONING", "false"),
            ],
        );
        let config = result.expect("valid");
        assert_eq!(config.master_token().expect("token"), "123456");
        assert!(!config.conflicts.versioning);
    }

    #[test]
    fn a_token_of_the_wrong_type_is_not_echoed() {
        let text = CLIENT.replace("token_file = \"secrets/token\"", "token = 987654321");
        let (_dir, result) = load_text(&text, &[]);
        let text = result.expect_err("wrong type").to_string();
        assert!(text.contains("master.token"), "{text}");
        assert!(!text.contains("987654321"), "{text}");
    }

    #[test]
    fn a_client_with_an_http_master_url_is_refused() {
        let text = CLIENT.replace("https://", "http://");
        let (_dir, result) = load_text(&text, &[]);
        let err = result.expect_err("http refused");
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_eq!(err.problems()[0].key, "master.url");
        assert!(
            err.to_string().contains("the sync protocol is HTTPS only"),
            "{err}"
        );
    }

    #[test]
    fn several_problems_are_reported_together() {
        let text = r#"
mode = "client"
[storage]
url = "mysql://x"
[master]
url = "http://master:8443"
node_id = "node-1"
token = "abc"
token_file = "secrets/token"
[sync]
max_packet_entities = 0
"#;
        let (_dir, result) = load_text(text, &[]);
        let err = result.expect_err("invalid");
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for key in [
            "storage.url",
            "master.url",
            "master.node_id",
            "master.token",
            "sync.max_packet_entities",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let text = err.to_string();
        assert!(text.contains("5 problems"), "{text}");
        assert!(!text.contains("abc"), "the token must not appear: {text}");
    }

    #[test]
    fn master_needs_listen_and_client_needs_master() {
        let (_dir, result) = load_text("mode = \"master\"\n", &[]);
        let err = result.expect_err("no listen");
        assert_eq!(err.problems()[0].key, "listen");
        let (_dir, result) = load_text("mode = \"client\"\n", &[]);
        let err = result.expect_err("no master");
        assert_eq!(err.problems()[0].key, "master");
        let (_dir, result) = load_text("mode = \"slave\"\n", &[]);
        let text = result.expect_err("bad mode").to_string();
        assert!(
            text.contains("slave") && text.contains("master, client"),
            "{text}"
        );
        let (_dir, result) = load_text("[api]\naddr = \"127.0.0.1:1\"\n", &[]);
        let text = result.expect_err("no mode").to_string();
        assert!(text.contains("mode"), "{text}");
    }

    #[test]
    fn the_token_never_shows_in_debug_and_is_read_from_its_file() {
        let (dir, result) = load_text(CLIENT, &[]);
        let config = result.expect("valid");
        let err = config.master_token().expect_err("file missing");
        assert!(err.to_string().contains("secrets/token"), "{err}");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("mkdir");
        std::fs::write(dir.path().join("secrets/token"), "  s3cret-token\n").expect("write");
        assert_eq!(config.master_token().expect("token"), "s3cret-token");

        let inline = CLIENT.replace("token_file = \"secrets/token\"", "token = \"s3cret-token\"");
        let (_dir, result) = load_text(&inline, &[]);
        let config = result.expect("valid");
        assert_eq!(config.master_token().expect("token"), "s3cret-token");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn to_toml_round_trips_with_relative_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(Mode::Client, dir.path());
        config.master = Some(MasterLink {
            url: "https://master.example.org:8443".into(),
            ca_cert: config.config_dir().join("tls/ca.pem"),
            node_id: "0190a3c4-6c8e-7b8a-9f00-2d3c4b5a6978".into(),
            token: Some("tok\"en".into()),
            token_file: None,
            client_cert: Some(config.config_dir().join("tls/client.pem")),
            client_key: Some(config.config_dir().join("tls/client.key")),
        });
        config
            .conflicts
            .per_type
            .insert("DailyReport".into(), "last-writer-wins".into());
        config.plugins.push(PluginConfig {
            path: config.config_dir().join("plugins/libx.so"),
        });
        config.validate().expect("valid");
        let text = config.to_toml();
        assert!(text.contains("ca_cert = \"tls/ca.pem\""), "{text}");
        assert!(
            text.contains("url = \"sqlite://data/hubsync.db\""),
            "{text}"
        );
        let path = dir.path().join("hubsync.toml");
        std::fs::write(&path, &text).expect("write");
        let loaded = Config::load_with_env(&path, &[]).expect("reload");
        assert_eq!(loaded, config);

        let master = Config::new(Mode::Master, dir.path());
        std::fs::write(&path, master.to_toml()).expect("write");
        assert_eq!(Config::load_with_env(&path, &[]).expect("reload"), master);
    }

    #[test]
    fn storage_pool_settings_have_defaults_validation_and_env_overrides() {
        let (_dir, result) = load_text(MASTER, &[]);
        let pool = result.expect("valid").storage.pool_options();
        assert_eq!(pool, hubsync_core::store::PoolOptions::default());

        let env = [
            (
                "HUBSYNC_STORAGE__URL",
                "postgres://sync:pw@db.example.org/hub",
            ),
            ("HUBSYNC_STORAGE__MAX_CONNECTIONS", "32"),
            ("HUBSYNC_STORAGE__IDLE_TIMEOUT_SECS", "0"),
        ];
        let (_dir, result) = load_text(MASTER, &env);
        let config = result.expect("valid");
        assert_eq!(config.storage.url, "postgres://sync:pw@db.example.org/hub");
        let pool = config.storage.pool_options();
        assert_eq!((pool.max_connections, pool.idle_timeout), (32, None));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(":pw@"),
            "the password must not show: {debug}"
        );

        let bad = format!(
            "{MASTER}\n[storage]\nurl = \"postgres:hub\"\nmax_connections = 0\nmin_connections = 5\nacquire_timeout_secs = 0\n"
        );
        let (_dir, result) = load_text(&bad, &[]);
        let err = result.expect_err("invalid pool");
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for key in [
            "storage.url",
            "storage.max_connections",
            "storage.min_connections",
            "storage.acquire_timeout_secs",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load_with_env(Path::new("/nonexistent/hubsync.toml"), &[])
            .expect_err("missing");
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/hubsync.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_local_api_beyond_loopback_needs_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hubsync.toml");
        let base = "mode = \"master\"\n[listen]\naddr = \"127.0.0.1:8443\"\n";
        std::fs::write(&path, format!("{base}[api]\naddr = \"0.0.0.0:8080\"\n")).expect("write");
        let err = Config::load_with_env(&path, &[]).expect_err("refused without a token");
        assert!(
            err.problems()
                .iter()
                .any(|p| p.key == "api.addr" && p.message.contains("no token")),
            "{err}"
        );
        std::fs::write(
            &path,
            format!("{base}[api]\naddr = \"0.0.0.0:8080\"\ntoken = \"a-long-random-secret\"\n"),
        )
        .expect("write");
        let config = Config::load_with_env(&path, &[]).expect("accepted with a token");
        assert!(
            !format!("{config:?}").contains("a-long-random-secret"),
            "Debug redacts the token"
        );
        let env = [("HUBSYNC_API__TOKEN".to_string(), "from-env".to_string())];
        std::fs::write(&path, format!("{base}[api]\naddr = \"0.0.0.0:8080\"\n")).expect("write");
        assert_eq!(
            Config::load_with_env(&path, &env)
                .expect("env token")
                .api
                .token
                .as_deref(),
            Some("from-env")
        );
    }
}
