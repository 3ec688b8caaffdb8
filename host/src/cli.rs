//! The `hubsync` command line (contract §2). Every command that prints data
//! accepts `--json` and then prints exactly one JSON document on stdout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hubsync_core::engine::{NoProgress, Progress};
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::error::HostError;
use crate::node::Node;

#[derive(Debug, Parser)]
#[command(name = "hubsync", version, about = "Offline-first data synchronization: a master and many offline clients", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The node's configuration file.
    #[arg(
        long,
        short = 'c',
        env = "HUBSYNC_CONFIG",
        default_value = "hubsync.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct JsonArg {
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A self-contained tour on loopback: a master and two clients, offline edits, sync, a conflict.
    Demo {
        /// Keep the demo's directory here instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Create a node directory.
    #[command(subcommand)]
    Init(InitCommand),
    /// Manage client nodes (master).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Run the node in the mode its configuration names, until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// (client) Run one sync session now, until both directions are drained.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Write the next packet for the other side into a sealed file (sneakernet); client: to its master, master: to --node.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// (master) The node the file is for.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Receive a packet file written by `hubsync export` on the other side, exactly once.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The packet file.
        file: PathBuf,
        /// Show what would be applied and what would conflict; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show the node's state.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show the stored versions of an entity (object_version_history).
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// The entity's uuid.
        uuid: Uuid,
        #[command(flatten)]
        json: JsonArg,
    },
    /// (master) The manual resolution queue: conflicts deferred to a person.
    #[command(subcommand)]
    Conflicts(ConflictsCommand),
    /// Schema set tools.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Resolver plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The security event log: authentication failures, lockouts, denials, limit violations, token changes (newest first).
    SecurityEvents(crate::security_cli::SecurityEventsArgs),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a resolver plugin through the master's own loader, check its ABI, print its name, version and manifest.
    Check {
        /// The plugin library (lib<name>.so).
        path: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum InitCommand {
    /// Create a master: config, SQLite store, TLS CA and server certificate, schema set.
    Master {
        #[arg(long)]
        dir: PathBuf,
        /// Address of the HTTPS sync endpoint.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Address of the local entity API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: String,
        /// Use this schema set (default: copy the example set into DIR/schemas).
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// Storage URL (default: sqlite://data/hubsync.db inside DIR), or
        /// postgres://user@host/db for a PostgreSQL database that exists
        /// (its tables are created here).
        #[arg(long, env = "HUBSYNC_STORAGE__URL")]
        storage: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Create a client registered with `hubsync node add` on the master.
    Client {
        #[arg(long)]
        dir: PathBuf,
        /// The master's sync URL, https://HOST:PORT.
        #[arg(long)]
        master: String,
        /// The master's CA certificate (the master's tls/ca.pem).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The node id `hubsync node add` printed.
        #[arg(long)]
        node_id: Uuid,
        /// The token `hubsync node add` printed.
        #[arg(long, env = "HUBSYNC_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, default_value = "127.0.0.1:8081")]
        api: String,
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// Seconds between background syncs under `hubsync serve` (0 = on demand only).
        #[arg(long, default_value_t = 30)]
        sync_interval: u64,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Register a client node; prints its id and a token (shown once).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: Option<String>,
        /// Also issue a client certificate for mutual TLS from the master's
        /// CA (tls/ca.key), written to --cert-dir as <CODE>.pem and <CODE>.key.
        #[arg(long)]
        cert: bool,
        /// Where --cert writes the certificate and key (default: tls/clients
        /// next to the configuration).
        #[arg(long, requires = "cert")]
        cert_dir: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List client nodes with their sync state.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Revoke a node: its next request is refused.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        code: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Issue a new token for a node; the old one stops working.
    RotateToken {
        #[command(flatten)]
        config: ConfigArg,
        code: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show or change which rows a node receives (its routing scope).
    ///
    /// A scope is JSON: {"types": {"Site": "all", "DailyReport": {"brigade":
    /// ["<uuid>"]}}, "with_references": true}. A change takes effect with the
    /// node's next packet: it then receives what it newly covers and is told
    /// to drop what it no longer covers.
    Scope {
        #[command(flatten)]
        config: ConfigArg,
        code: String,
        /// The new scope: JSON text, or @FILE to read it from a file.
        #[arg(long, conflicts_with = "clear")]
        set: Option<String>,
        /// Remove the scope: the node receives everything again.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// List the deferred conflicts waiting for a person (oldest first).
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show one conflict: why it was deferred, the incoming version, the master's, the other stored versions.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The conflict's id (from `conflicts list`).
        id: Uuid,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Resolve a conflict; the version taken becomes an ordinary change that reaches every node.
    Resolve {
        #[command(flatten)]
        config: ConfigArg,
        /// The conflict's id (from `conflicts list`).
        id: Uuid,
        /// `local` (the master's version stands), `remote` (the deferred incoming version), or `version VERSION_ID` (a stored version, from `conflicts show`).
        #[arg(long, num_args = 1..=2, value_names = ["CHOICE", "VERSION_ID"], required_unless_present = "data", conflicts_with = "data")]
        take: Option<Vec<String>>,
        /// Take merged data instead: a JSON file with the entity's data (validated against its schema); `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// Who decided, for the audit record (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Validate a schema set; reports every problem at once.
    Check {
        dir: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
}

/// What a command prints: a JSON document, or text.
pub struct Output {
    pub json: serde_json::Value,
    pub text: String,
}

fn print(out: Output, json: JsonArg) {
    if json.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out.json).unwrap_or_default()
        );
    } else {
        print!("{}", out.text);
    }
}

fn load(config: &Path) -> Result<Config, HostError> {
    Ok(Config::load(config)?)
}

/// Runs a command.
pub async fn run(cli: Cli) -> Result<(), HostError> {
    match cli.command {
        Command::Demo { dir, json } => {
            let out = crate::demo::run(dir.as_deref(), !json.json).await?;
            print(out, json);
        }
        Command::Init(InitCommand::Master {
            dir,
            listen,
            api,
            schemas,
            storage,
            json,
        }) => {
            let o = crate::init::init_master(&crate::init::MasterInit {
                dir: &dir,
                listen: &listen,
                api: &api,
                schemas: schemas.as_deref(),
                storage: storage.as_deref(),
                code: "MASTER",
            })
            .await?;
            let cfg = o.config.display();
            let text = format!(
                "Created master {id} in {dir}\n  config:  {cfg}\n  store:   {store}\n  schemas: {schemas}\n  CA cert: {ca} (give it to every client)\n\nNext:\n  hubsync node add --config {cfg} --code DESKTOP-1   # register a client, prints its token once\n  hubsync serve --config {cfg}                        # run the master\n",
                id = o.node_id,
                dir = dir.display(),
                store = o.storage_url,
                schemas = o.schemas.display(),
                ca = o
                    .ca_cert
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            print(
                Output {
                    json: serde_json::to_value(&o).unwrap_or_default(),
                    text,
                },
                json,
            );
        }
        Command::Init(InitCommand::Client {
            dir,
            master,
            ca_cert,
            node_id,
            token,
            api,
            schemas,
            sync_interval,
            json,
        }) => {
            let o = crate::init::init_client(&crate::init::ClientInit {
                dir: &dir,
                master_url: &master,
                ca_cert: &ca_cert,
                node_id,
                token: &token,
                api: &api,
                schemas: schemas.as_deref(),
                sync_interval_secs: sync_interval,
            })
            .await?;
            let cfg = o.config.display();
            let text = format!(
                "Created client {id} in {dir}\n  config: {cfg}\n  store:  {store}\n\nNext:\n  hubsync serve --config {cfg}   # local API on {api}, background sync\n  hubsync sync --config {cfg}    # or sync once now\n",
                id = o.node_id,
                dir = dir.display(),
                store = o.storage_url,
            );
            print(
                Output {
                    json: serde_json::to_value(&o).unwrap_or_default(),
                    text,
                },
                json,
            );
        }
        Command::Node(cmd) => node_command(cmd).await?,
        Command::SecurityEvents(args) => crate::security_cli::run(args).await?,
        Command::Serve { config } => {
            let config = load(&config.config)?;
            let _lock = crate::serve::try_lock(&config)?.ok_or_else(|| {
                HostError::Other(format!(
                    "another hubsync process is already serving this node (lock {} is held); stop it first",
                    crate::serve::lock_path(&config).display()
                ))
            })?;
            let running = crate::serve::RunningNode::start(config).await?;
            eprintln!(
                "hubsync {} node {} running: local API http://{}{}; stop with Ctrl-C",
                running.node.config.mode,
                running.node.engine.identity().node_id,
                running.api_addr,
                running
                    .sync_addr
                    .map(|a| format!(", sync https://{a}"))
                    .unwrap_or_default()
            );
            crate::serve::shutdown_signal().await;
            eprintln!("stopping…");
            running.shutdown(Duration::from_secs(10)).await;
        }
        Command::Sync { config, json } => {
            let config = load(&config.config)?;
            let summary = sync_command(config, !json.json).await?;
            let waits = &summary["retry_after_waits"];
            let waited = match waits["count"].as_u64() {
                Some(n) if n > 0 => format!(
                    "; waited {n} time(s) as the master asked (Retry-After), {:.1} s in all",
                    waits["total_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
                ),
                _ => String::new(),
            };
            let text = format!(
                "sync done: {} changes sent, {} received, {} conflicts, {} rounds{waited}\n",
                summary["sent_changes"],
                summary["received_changes"],
                summary["conflicts"].as_array().map_or(0, |a| a.len()),
                summary["rounds"]
            );
            print(
                Output {
                    json: summary,
                    text,
                },
                json,
            );
        }
        Command::Export {
            config,
            out,
            node,
            json,
        } => {
            let config = load(&config.config)?;
            let (doc, text) =
                crate::file_exchange::export_command(config, &out, node.as_deref(), !json.json)
                    .await?;
            print(Output { json: doc, text }, json);
        }
        Command::Import {
            config,
            file,
            dry_run,
            json,
        } => {
            let config = load(&config.config)?;
            let (doc, text) =
                crate::file_exchange::import_command(config, &file, dry_run, !json.json).await?;
            print(Output { json: doc, text }, json);
        }
        Command::Status { config, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let s = node.engine.status().await?;
            let mut text = format!(
                "node {} ({}) mode {}\nschema set {}\npending changes {}\nheld changes {} (waiting for an entity they reference)\nlast sync in {}, out {}\npackets: received {}, sent (acknowledged) {}\n",
                s.node_id,
                s.code,
                s.mode,
                s.schema_version,
                s.pending_changes,
                s.held_changes,
                fmt_time(s.last_sync_in),
                fmt_time(s.last_sync_out),
                s.received_packet_no,
                s.sent_packet_no
            );
            if !s.nodes.is_empty() {
                text.push_str(&nodes_table(&s.nodes));
            }
            let mut doc = serde_json::to_value(&s).unwrap_or_default();
            if node.is_client() {
                let h = node.recorded_health().await?;
                text.push_str(&format!(
                    "last successful sync {}
",
                    h.last_success_at.as_deref().unwrap_or("never")
                ));
                if let Some(e) = &h.last_error {
                    text.push_str(&format!(
                        "last sync error ({} in a row, at {}): {e}
",
                        h.consecutive_failures,
                        h.last_error_at.as_deref().unwrap_or("?")
                    ));
                }
                if let Some(next) = &h.next_attempt_at {
                    text.push_str(&format!("next background attempt {next}\n"));
                }
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert("sync".into(), serde_json::to_value(&h).unwrap_or_default());
                }
            }
            node.engine.store().close().await;
            print(Output { json: doc, text }, json);
        }
        Command::History { config, uuid, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let h = node.engine.store().history(uuid).await?;
            let mut text = if h.is_empty() {
                format!("no stored versions of {uuid}\n")
            } else {
                format!("{} stored version(s) of {uuid}:\n", h.len())
            };
            for r in &h {
                text.push_str(&format!(
                    "- {} from node {} at {}: {}\n  {}\n",
                    r.id,
                    r.source_node_id
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into()),
                    hubsync_core::entity::format_ts(r.arrival_time),
                    r.conflict_resolution,
                    r.serialized_data
                ));
            }
            node.engine.store().close().await;
            print(
                Output {
                    json: serde_json::to_value(&h).unwrap_or_default(),
                    text,
                },
                json,
            );
        }
        Command::Conflicts(cmd) => conflicts_command(cmd).await?,
        Command::Plugin(PluginCommand::Check { path, json }) => plugin_check(&path, json)?,
        Command::Schema(SchemaCommand::Check { dir, json }) => {
            match hubsync_core::schema::EntityRegistry::load_dir(&dir) {
                Ok(reg) => {
                    let types = reg.type_names();
                    let text = format!(
                        "schema set {} is valid: version {}, {} entity types: {}\n",
                        dir.display(),
                        reg.version(),
                        types.len(),
                        types.join(", ")
                    );
                    print(
                        Output {
                            json: json!({"ok": true, "version": reg.version().to_string(), "types": types, "problems": []}),
                            text,
                        },
                        json,
                    );
                }
                Err(e) => {
                    if json.json {
                        let problems: Vec<_> = e.problems.iter().map(|p| json!({"file": p.file, "pointer": p.pointer, "message": p.message})).collect();
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &json!({"ok": false, "problems": problems})
                            )
                            .unwrap_or_default()
                        );
                    }
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// `hubsync plugin check PATH`: the same checks a master makes at start
/// (including that the name is not a built-in strategy's).
fn plugin_check(path: &Path, json: JsonArg) -> Result<(), HostError> {
    let taken: Vec<(String, String)> = crate::plugins::builtin_strategies()
        .iter()
        .map(|b| (b.manifest().name, "a built-in strategy".to_string()))
        .collect();
    match hubsync_resolver_host::load_all(&[path.to_path_buf()], &taken) {
        Ok(plugins) => {
            let Some(p) = plugins.first() else {
                return Err(HostError::Other(format!(
                    "cannot check {}: the loader returned nothing",
                    path.display()
                )));
            };
            let m = p.manifest();
            let mut text = format!(
                "{} is a hubsync resolver plugin (ABI version {})\n  name:        {}\n  version:     {}\n  description: {}\n  symmetric:   {}\n",
                path.display(),
                p.abi_version(),
                m.name,
                m.version,
                m.description,
                m.symmetric
            );
            for o in &m.options {
                text.push_str(&format!(
                    "  option {} (default {}): {}\n",
                    o.name, o.default, o.description
                ));
            }
            text.push_str(&format!(
                "Use it with [[plugins]] path = {:?} and name \"{}\" in [conflicts].\n",
                path.display().to_string(),
                m.name
            ));
            print(
                Output {
                    json: json!({
                        "ok": true,
                        "path": path.display().to_string(),
                        "name": m.name,
                        "version": m.version,
                        "abi_version": p.abi_version(),
                        "manifest": m,
                    }),
                    text,
                },
                json,
            );
            Ok(())
        }
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            if json.json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| json!({"kind": e.kind(), "message": e.to_string()}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"ok": false, "path": path.display().to_string(), "errors": list})
                    )
                    .unwrap_or_default()
                );
            }
            Err(HostError::Other(message))
        }
    }
}

async fn node_command(cmd: NodeCommand) -> Result<(), HostError> {
    match cmd {
        NodeCommand::Add {
            config,
            code,
            name,
            cert,
            cert_dir,
            json,
        } => {
            let cfg = load(&config.config)?;
            // --cert: the CA that signs is the one client certificates are
            // checked against ([listen].client_ca, tls/ca.pem by default).
            let cert_plan = if cert {
                let ca = cfg.listen.as_ref().map(|l| l.client_ca.clone()).ok_or_else(|| {
                    HostError::Other(
                        "--cert issues client certificates on a master; this configuration has no [listen] section".into(),
                    )
                })?;
                let tls_dir = ca.parent().map(Path::to_path_buf).unwrap_or_default();
                let ca_key = tls_dir.join(crate::tls::CA_KEY_FILE);
                if !ca_key.is_file() {
                    return Err(HostError::Other(format!(
                        "--cert needs the CA key {}, which `hubsync init master` wrote; run node add --cert on the master that holds it",
                        ca_key.display()
                    )));
                }
                let out = cert_dir.unwrap_or_else(|| cfg.config_dir().join("tls/clients"));
                Some((tls_dir, out))
            } else {
                None
            };
            let node = Node::open(cfg).await?;
            let master_id = node.engine.identity().node_id;
            let token = crate::auth::new_token(master_id)
                .map_err(|_| HostError::Other("the system random generator failed".into()))?;
            let rec = node
                .engine
                .add_node(
                    &code,
                    name.as_deref().unwrap_or(&code),
                    &crate::auth::token_hash(&token),
                )
                .await?;
            if node.config.routing.nodes.contains_key(&code) {
                crate::serve::apply_routing(&node).await?;
            }
            let store = node.engine.store();
            let issued = match &cert_plan {
                Some((tls_dir, out)) => {
                    let master_code = store
                        .get_node(master_id)
                        .await?
                        .map(|n| n.code)
                        .unwrap_or_default();
                    match crate::tls::issue_client_cert(tls_dir, &master_code, rec.id, &code, out) {
                        Ok(files) => Some(files),
                        Err(e) => {
                            store.close().await;
                            return Err(HostError::Other(format!(
                                "node {code} was registered (id {}), but its client certificate could not be issued: {e}; fix that, then run `hubsync node rotate-token {code}` for a token and issue the certificate again with a fresh `node add --cert` under another code, or revoke it",
                                rec.id
                            )));
                        }
                    }
                }
                None => None,
            };
            let detail = if issued.is_some() {
                "token and client certificate issued (node add --cert)"
            } else {
                "token issued (node add)"
            };
            crate::security_cli::record_admin_event(
                store.as_ref(),
                hubsync_core::security::SecurityEventKind::TokenIssued,
                &rec,
                detail,
            )
            .await;
            store.close().await;
            let mut text = format!(
                "Registered node {code}\n  node id: {id}\n  token:   {token}\n\nThe token is shown only this once; the master keeps only its hash.\nOn the client machine:\n  hubsync init client --dir DIR --master https://<this master's listen address> --ca-cert <master>/tls/ca.pem --node-id {id} --token {token}\n",
                id = rec.id
            );
            if let Some(files) = &issued {
                text.push_str(&format!(
                    "\nClient certificate (mutual TLS), copy both files to the client and set [master].client_cert and client_key:\n  cert: {}\n  key:  {} (secret)\n",
                    files.cert.display(),
                    files.key.display()
                ));
            }
            let mut out = json!({"node_id": rec.id, "code": rec.code, "token": token});
            if let Some(files) = &issued {
                out["client_cert"] = json!(files.cert.display().to_string());
                out["client_key"] = json!(files.key.display().to_string());
            }
            print(Output { json: out, text }, json);
        }
        NodeCommand::List { config, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let s = node.engine.status().await?;
            node.engine.store().close().await;
            let text = nodes_table(&s.nodes);
            print(
                Output {
                    json: serde_json::to_value(&s.nodes).unwrap_or_default(),
                    text,
                },
                json,
            );
        }
        NodeCommand::Revoke { config, code, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let rec = node.engine.update_node_access(&code, true, None).await?;
            crate::security_cli::record_admin_event(
                node.engine.store().as_ref(),
                hubsync_core::security::SecurityEventKind::TokenRevoked,
                &rec,
                "node revoked (node revoke)",
            )
            .await;
            node.engine.store().close().await;
            tracing::warn!(event = "token_revoked", node = %code, "node revoked");
            print(
                Output {
                    json: json!({"node_id": rec.id, "code": rec.code, "revoked": true}),
                    text: format!("node {code} revoked: its next request is refused\n"),
                },
                json,
            );
        }
        NodeCommand::Scope {
            config,
            code,
            set,
            clear,
            json,
        } => {
            let node = Node::open(load(&config.config)?).await?;
            let change = match (&set, clear) {
                (Some(text), _) => Some(Some(read_scope(text)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let result = match change {
                Some(scope) => node.engine.set_node_scope(&code, scope).await,
                None => node.engine.node_scope(&code).await,
            };
            node.engine.store().close().await;
            let record = result?;
            if node.config.routing.nodes.contains_key(&code) && (set.is_some() || clear) {
                eprintln!(
                    "note: [routing.nodes.{code}] in the configuration sets this node's scope again when the master starts"
                );
            }
            let describe = |v: &Option<serde_json::Value>| match v {
                Some(s) => serde_json::to_string(s).unwrap_or_default(),
                None => "everything (no scope)".to_string(),
            };
            let mut text = format!("node {code} receives: {}\n", describe(&record.scope));
            if let Some(next) = &record.pending {
                text.push_str(&format!("from its next packet: {}\n", describe(next)));
            }
            print(
                Output {
                    json: json!({
                        "code": code,
                        "scope": record.scope,
                        "pending": record.pending.as_ref().map(|p| json!({"scope": p})),
                    }),
                    text,
                },
                json,
            );
        }
        NodeCommand::RotateToken { config, code, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let token = crate::auth::new_token(node.engine.identity().node_id)
                .map_err(|_| HostError::Other("the system random generator failed".into()))?;
            let rec = node
                .engine
                .update_node_access(&code, false, Some(&crate::auth::token_hash(&token)))
                .await?;
            crate::security_cli::record_admin_event(
                node.engine.store().as_ref(),
                hubsync_core::security::SecurityEventKind::TokenRotated,
                &rec,
                "token rotated (node rotate-token); the old one no longer works",
            )
            .await;
            node.engine.store().close().await;
            tracing::warn!(event = "token_rotated", node = %code, "node token rotated");
            print(
                Output {
                    json: json!({"node_id": rec.id, "code": rec.code, "token": token}),
                    text: format!(
                        "new token for {code} (shown once; the old one no longer works):\n  {token}\n"
                    ),
                },
                json,
            );
        }
    }
    Ok(())
}

/// A scope given on the command line: JSON text, or @FILE.
fn read_scope(text: &str) -> Result<serde_json::Value, HostError> {
    let (source, body) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| HostError::Other(format!("reading the scope file {path}: {e}")))?,
        ),
        None => ("--set".to_string(), text.to_string()),
    };
    serde_json::from_str(&body).map_err(|e| {
        HostError::Other(format!(
            "the scope in {source} is not JSON ({e}); expected e.g. {{\"types\": {{\"Site\": \"all\", \"DailyReport\": {{\"brigade\": [\"<uuid>\"]}}}}}}"
        ))
    })
}

async fn conflicts_command(cmd: ConflictsCommand) -> Result<(), HostError> {
    match cmd {
        ConflictsCommand::List { config, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let pending = node.engine.pending_conflicts().await;
            node.engine.store().close().await;
            let pending = pending?;
            let text = conflicts_table(&pending);
            print(
                Output {
                    json: json!({ "pending": pending }),
                    text,
                },
                json,
            );
        }
        ConflictsCommand::Show { config, id, json } => {
            let node = Node::open(load(&config.config)?).await?;
            let view = node.engine.conflict(id).await;
            node.engine.store().close().await;
            let view = view?;
            let text = conflict_text(&view);
            print(
                Output {
                    json: serde_json::to_value(&view).unwrap_or_default(),
                    text,
                },
                json,
            );
        }
        ConflictsCommand::Resolve {
            config,
            id,
            take,
            data,
            by,
            json,
        } => {
            let choice = parse_choice(take.as_deref(), data.as_deref())?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "command line".into());
            let node = Node::open(load(&config.config)?).await?;
            let done = node.engine.resolve_conflict_manually(id, choice, &by).await;
            node.engine.store().close().await;
            let done = done?;
            let e = &done.entity;
            let text = format!(
                "conflict {id} resolved ({}): {} {} is now at revision {}, updated_at {}; every node receives it at its next sync\n",
                done.resolution
                    .detail
                    .split_once(": ")
                    .map_or("", |(_, how)| how),
                e.entity_type,
                e.uuid,
                e.rev.map(|r| r.to_string()).unwrap_or_default(),
                hubsync_core::entity::format_ts(e.updated_at),
            );
            print(
                Output {
                    json: json!({"entity": e.to_api_json(), "resolution": done.resolution}),
                    text,
                },
                json,
            );
        }
    }
    Ok(())
}

/// `--take local|remote|version ID` or `--data FILE`.
fn parse_choice(
    take: Option<&[String]>,
    data: Option<&Path>,
) -> Result<hubsync_core::engine::Choice, HostError> {
    use hubsync_core::engine::Choice;
    let usage = "use --take local, --take remote, --take version VERSION_ID or --data FILE";
    match (take, data) {
        (Some(t), None) => match t {
            [c] if c == "local" => Ok(Choice::TakeMaster),
            [c] if c == "remote" => Ok(Choice::TakeIncoming),
            [c, v] if c == "version" => Uuid::parse_str(v).map(Choice::TakeVersion).map_err(|_| {
                HostError::Other(format!(
                    "'{v}' is not a version id (a uuid); `hubsync conflicts show ID` lists the stored versions"
                ))
            }),
            [c] if c == "version" => Err(HostError::Other(format!(
                "--take version needs the id of a stored version (`hubsync conflicts show ID` lists them); {usage}"
            ))),
            other => Err(HostError::Other(format!(
                "cannot take '{}'; {usage}",
                other.join(" ")
            ))),
        },
        (None, Some(path)) => {
            let text = if path == Path::new("-") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| HostError::io("could not read merged data from", "stdin", e))?;
                s
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| HostError::io("could not read merged data from", path, e))?
            };
            serde_json::from_str(&text).map(Choice::Merged).map_err(|e| {
                HostError::Other(format!(
                    "the merged data in {} is not valid JSON: {e}; give the entity's data object",
                    path.display()
                ))
            })
        }
        _ => Err(HostError::Other(format!("give exactly one choice; {usage}"))),
    }
}

fn conflicts_table(pending: &[hubsync_core::engine::PendingConflict]) -> String {
    if pending.is_empty() {
        return "no conflicts wait for a person\n".into();
    }
    let mut s = format!(
        "{:<36} {:<14} {:<36} {:<14} {:<16} {:<40} {}\n",
        "ID", "TYPE", "UUID", "NODE", "STRATEGY", "REASON", "WHEN"
    );
    for p in pending {
        let reason: String = if p.reason.chars().count() > 40 {
            p.reason.chars().take(39).chain(['…']).collect()
        } else {
            p.reason.clone()
        };
        s.push_str(&format!(
            "{:<36} {:<14} {:<36} {:<14} {:<16} {:<40} {}\n",
            p.id,
            p.entity_type,
            p.uuid,
            p.node_code.as_deref().unwrap_or("?"),
            p.strategy,
            reason.replace('\n', " "),
            hubsync_core::entity::format_ts(p.at)
        ));
    }
    s.push_str(&format!(
        "{} pending; `hubsync conflicts show ID` for the versions\n",
        pending.len()
    ));
    s
}

fn conflict_text(v: &hubsync_core::engine::ConflictView) -> String {
    let c = &v.conflict;
    let mut s = format!(
        "conflict {} ({}): {} {}\n  deferred at {} by strategy {}: {}\n  change from node {} ({}), packet {}, based on revision {}; the master was at revision {}\n",
        c.id,
        match v.status {
            hubsync_core::engine::ConflictStatus::Pending => "pending",
            hubsync_core::engine::ConflictStatus::Resolved => "resolved",
        },
        c.entity_type,
        c.uuid,
        hubsync_core::entity::format_ts(c.at),
        c.strategy,
        c.reason,
        c.node_code.as_deref().unwrap_or("?"),
        c.node_id,
        c.packet_no,
        c.base_rev
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none".into()),
        c.master_rev
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none".into()),
    );
    if let Some(r) = &v.resolution {
        s.push_str(&format!(
            "  resolved at {}: {}\n",
            hubsync_core::entity::format_ts(r.at),
            r.detail
        ));
    }
    match &v.master {
        Some(m) => s.push_str(&format!("local (the master's current version):\n  {m}\n")),
        None => s.push_str("local: the master does not hold this entity\n"),
    }
    if v.incoming.is_empty() {
        s.push_str("remote: not kept (versioning was off)\n");
    }
    for h in &v.incoming {
        s.push_str(&format!(
            "remote (the deferred incoming version, history id {}):\n  {}\n",
            h.id, h.serialized_data
        ));
    }
    for h in &v.versions {
        s.push_str(&format!(
            "version {} from node {} at {} ({}):\n  {}\n",
            h.id,
            h.source_node_id
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            hubsync_core::entity::format_ts(h.arrival_time),
            h.conflict_resolution,
            h.serialized_data
        ));
    }
    if v.resolution.is_none() {
        s.push_str(&format!(
            "resolve with: hubsync conflicts resolve {} --take local|remote|version VERSION_ID (or --data FILE)\n",
            c.id
        ));
    }
    s
}

/// One sync session: run here while holding the node's lock, or — when a
/// `hubsync serve` of the same node holds it — ask that process to run it,
/// so two processes never sync one node at once.
async fn sync_command(config: Config, show_progress: bool) -> Result<serde_json::Value, HostError> {
    match crate::serve::try_lock(&config)? {
        Some(_lock) => {
            let node = Arc::new(Node::open(config).await?);
            let bar = crate::progress::TerminalProgress::new("sync", show_progress);
            let result = node.sync_now_reported(&bar).await;
            bar.finish();
            node.engine.store().close().await;
            Ok(serde_json::to_value(result?).unwrap_or_default())
        }
        None => crate::local_client::post_sync(config.api.addr, config.api.token.as_deref()).await,
    }
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(hubsync_core::entity::format_ts)
        .unwrap_or_else(|| "never".into())
}

fn nodes_table(nodes: &[hubsync_core::engine::PeerStatus]) -> String {
    let mut s = format!(
        "{:<20} {:<36} {:>8} {:>8} {:>6}  {:<27} {}\n",
        "CODE", "NODE ID", "RECV#", "SENT#", "LAG", "LAST SYNC IN", "STATE"
    );
    for n in nodes {
        s.push_str(&format!(
            "{:<20} {:<36} {:>8} {:>8} {:>6}  {:<27} {}\n",
            n.code,
            n.node_id,
            n.received_packet_no,
            n.sent_packet_no,
            n.lag,
            fmt_time(n.last_sync_in),
            if n.revoked { "revoked" } else { "active" }
        ));
    }
    s
}

#[allow(dead_code)]
fn _assert_progress_object_safe(_: &dyn Progress) {}

#[allow(dead_code)]
fn _no_progress() -> NoProgress {
    NoProgress
}
