//! `hubsync init master` and `hubsync init client`: a node directory with
//! its configuration, store, schema set and (master) TLS material.

use std::path::{Path, PathBuf};

use hubsync_core::store::NodeRole;
use hubsync_core::{Engine, InitParams};
use uuid::Uuid;

use crate::error::HostError;

/// The example schema set, shipped inside the binary so that a new node
/// works without a checkout.
pub const EXAMPLE_SCHEMAS: &[(&str, &str)] = &[
    (
        "schema-set.json",
        include_str!("../../schemas/schema-set.json"),
    ),
    ("common.json", include_str!("../../schemas/common.json")),
    (
        "Brigade.schema.json",
        include_str!("../../schemas/Brigade.schema.json"),
    ),
    (
        "Employee.schema.json",
        include_str!("../../schemas/Employee.schema.json"),
    ),
    (
        "Site.schema.json",
        include_str!("../../schemas/Site.schema.json"),
    ),
    (
        "DailyReport.schema.json",
        include_str!("../../schemas/DailyReport.schema.json"),
    ),
];

pub struct MasterInit<'a> {
    pub dir: &'a Path,
    pub listen: &'a str,
    pub api: &'a str,
    pub schemas: Option<&'a Path>,
    pub storage: Option<&'a str>,
    pub code: &'a str,
}

pub struct ClientInit<'a> {
    pub dir: &'a Path,
    pub master_url: &'a str,
    pub ca_cert: &'a Path,
    pub node_id: Uuid,
    pub token: &'a str,
    pub api: &'a str,
    pub schemas: Option<&'a Path>,
    pub sync_interval_secs: u64,
}

/// What `init` created.
#[derive(Debug, serde::Serialize)]
pub struct InitOutcome {
    pub config: PathBuf,
    pub node_id: Uuid,
    pub schemas: PathBuf,
    /// Without its password.
    pub storage_url: String,
    pub ca_cert: Option<PathBuf>,
}

fn create_dir(dir: &Path) -> Result<(), HostError> {
    std::fs::create_dir_all(dir).map_err(|e| HostError::io("could not create", dir, e))?;
    let config = dir.join("hubsync.toml");
    if config.exists() {
        return Err(HostError::Other(format!(
            "{} already exists; choose an empty directory or remove it first",
            config.display()
        )));
    }
    Ok(())
}

/// The schema set for a new node: the one given (referenced by absolute
/// path), else the example set copied into `dir/schemas`.
fn schema_dir(dir: &Path, given: Option<&Path>) -> Result<PathBuf, HostError> {
    if let Some(given) = given {
        let abs =
            std::path::absolute(given).map_err(|e| HostError::io("could not resolve", given, e))?;
        hubsync_core::schema::EntityRegistry::load_dir(&abs)?;
        return Ok(abs);
    }
    let target = dir.join("schemas");
    std::fs::create_dir_all(&target).map_err(|e| HostError::io("could not create", &target, e))?;
    for (name, text) in EXAMPLE_SCHEMAS {
        let p = target.join(name);
        std::fs::write(&p, text).map_err(|e| HostError::io("could not write", &p, e))?;
    }
    Ok(PathBuf::from("schemas"))
}

fn write_config(dir: &Path, text: &str) -> Result<PathBuf, HostError> {
    let path = dir.join("hubsync.toml");
    std::fs::write(&path, text).map_err(|e| HostError::io("could not write", &path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A client config holds its token.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(path)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Creates a master node directory.
pub async fn init_master(p: &MasterInit<'_>) -> Result<InitOutcome, HostError> {
    create_dir(p.dir)?;
    let schemas = schema_dir(p.dir, p.schemas)?;
    let host = p
        .listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| p.listen.to_string());
    let tls = crate::tls::generate_ca_and_server(&p.dir.join("tls"), p.code, &[host])?;
    let storage = p.storage.unwrap_or("sqlite://data/hubsync.db");
    let text = format!(
        r#"# hubsync master node — created by `hubsync init master`.
mode = "master"
# The schema set: one <Type>.schema.json per entity type, and schema-set.json.
schemas = {schemas}

[storage]
url = {storage}

# The sync protocol, HTTPS only. Clients trust tls/ca.pem.
[listen]
addr = {listen}
cert = "tls/server.pem"
key = "tls/server.key"

# The local entity API (plain HTTP; keep it on loopback).
[api]
addr = {api}

[conflicts]
default = "server-wins"
versioning = true

# [conflicts.per_type]
# DailyReport = "last-writer-wins"
"#,
        schemas = toml_str(&schemas.display().to_string()),
        storage = toml_str(storage),
        listen = toml_str(p.listen),
        api = toml_str(p.api),
    );
    let config_path = write_config(p.dir, &text)?;
    let config = crate::config::Config::load_with_env(&config_path, &[])?;
    // A PostgreSQL database is migrated here; it must exist already.
    let store = crate::storage::open_store_with(
        &config.storage_url_resolved(),
        &config.storage.pool_options(),
    )
    .await?;
    let node_id = Uuid::now_v7();
    Engine::initialize(
        store.as_ref(),
        &InitParams {
            role: NodeRole::Master,
            node_id,
            code: p.code.to_string(),
            name: "master".into(),
            master_id: None,
        },
    )
    .await?;
    store.close().await;
    Ok(InitOutcome {
        config: config_path,
        node_id,
        schemas: config.schemas.clone(),
        storage_url: crate::storage::display_url(&config.storage_url_resolved()),
        ca_cert: Some(tls.ca_cert),
    })
}

/// Creates a client node directory.
pub async fn init_client(p: &ClientInit<'_>) -> Result<InitOutcome, HostError> {
    let master_id = crate::auth::master_id_of(p.token).ok_or_else(|| {
        HostError::Other(
            "the token is not a hubsync node token (expected hs1.<master id>.<secret>); copy it exactly as `hubsync node add` printed it".into(),
        )
    })?;
    if !p.master_url.starts_with("https://") {
        return Err(HostError::Other(format!(
            "the master URL '{}' is not https://; the sync protocol is HTTPS only",
            p.master_url
        )));
    }
    create_dir(p.dir)?;
    let schemas = schema_dir(p.dir, p.schemas)?;
    let tls_dir = p.dir.join("tls");
    std::fs::create_dir_all(&tls_dir)
        .map_err(|e| HostError::io("could not create", &tls_dir, e))?;
    let ca = tls_dir.join("ca.pem");
    std::fs::copy(p.ca_cert, &ca)
        .map_err(|e| HostError::io("could not copy the master's CA certificate", p.ca_cert, e))?;
    let text = format!(
        r#"# hubsync client node — created by `hubsync init client`.
mode = "client"
schemas = {schemas}

[storage]
url = "sqlite://data/hubsync.db"

# The local entity API your application talks to (plain HTTP; keep it on loopback).
[api]
addr = {api}

[master]
url = {url}
ca_cert = "tls/ca.pem"
node_id = "{node_id}"
token = {token}

[sync]
# Seconds between background syncs while `hubsync serve` runs; 0 = only on demand.
interval_secs = {interval}
"#,
        schemas = toml_str(&schemas.display().to_string()),
        api = toml_str(p.api),
        url = toml_str(p.master_url),
        node_id = p.node_id,
        token = toml_str(p.token),
        interval = p.sync_interval_secs,
    );
    let config_path = write_config(p.dir, &text)?;
    let config = crate::config::Config::load_with_env(&config_path, &[])?;
    let store = crate::storage::open_store(&config.storage_url_resolved()).await?;
    Engine::initialize(
        store.as_ref(),
        &InitParams {
            role: NodeRole::Client,
            node_id: p.node_id,
            code: format!("node-{}", &p.node_id.simple().to_string()[..8]),
            name: "client".into(),
            master_id: Some(master_id),
        },
    )
    .await?;
    store.close().await;
    Ok(InitOutcome {
        config: config_path,
        node_id: p.node_id,
        schemas: config.schemas.clone(),
        storage_url: config.storage_url_resolved(),
        ca_cert: Some(ca),
    })
}
