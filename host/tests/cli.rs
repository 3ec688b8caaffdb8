//! The real `hubsync` binary, driven as separate processes exactly as an
//! operator would (contract §2): init a master and clients, register nodes,
//! serve, write through the local API, sync, inspect, stop with SIGTERM.
//!
//! Every wait is bounded; every child process is killed on every exit path
//! (see [`Served`]); everything listens on loopback only.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;
// The binary with a clean environment (no inherited HUBSYNC_* variables,
// run from a given directory), children killed on drop, free loopback ports.
use support::{Guard, free_addr, hubsync, path_str, wait_for_exit};

use serde_json::{Value, json};

/// A one-shot command (init, node add, sync, status…) must finish within this.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// A `hubsync serve` must answer /health within this.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// A `hubsync serve` must exit after SIGTERM within this.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// What a finished command left behind.
#[derive(Debug)]
struct Outcome {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(self) -> Self {
        assert!(
            !self.status.success(),
            "`{}` should have failed but exited 0:\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "`{}` failed without a message on stderr",
            self.what
        );
        self
    }

    /// stdout as exactly one JSON document (contract §2: `--json` prints
    /// one JSON document and nothing else on stdout).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print exactly one JSON document ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }
}

/// Runs a command to completion within `deadline`, killing it if it hangs.
fn run_within(cwd: &Path, args: &[&str], deadline: Duration) -> Outcome {
    let what = format!("hubsync {}", args.join(" "));
    let (status, stdout, stderr) = support::capture(hubsync(cwd, args), &what, deadline);
    Outcome {
        what,
        status,
        stdout,
        stderr,
    }
}

fn run(cwd: &Path, args: &[&str]) -> Outcome {
    run_within(cwd, args, COMMAND_DEADLINE)
}

/// A running `hubsync serve`, its stderr captured in a log file.
struct Served {
    name: &'static str,
    child: Guard,
    log: PathBuf,
}

impl Served {
    /// Starts `hubsync serve --config CONFIG` and waits until its local API
    /// answers `GET /health` with 200.
    fn start(name: &'static str, config: &Path, api: SocketAddr) -> Served {
        let dir = config.parent().expect("config dir");
        let log = dir.join(format!("serve-{name}.log"));
        let child = Guard(
            hubsync(dir, &["serve", "--config", path_str(config)])
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("serve log"))
                .spawn()
                .expect("start hubsync serve"),
        );
        let mut served = Served { name, child, log };
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = served.child.0.try_wait().expect("try_wait") {
                panic!(
                    "`hubsync serve` ({name}) exited early ({status}):\n{}",
                    served.log_text()
                );
            }
            if let Ok((200, _)) = try_http(api, "GET", "/health", None) {
                return served;
            }
            assert!(
                Instant::now() < until,
                "`hubsync serve` ({name}) did not answer GET /health on {api} within {READY_DEADLINE:?}:\n{}",
                served.log_text()
            );
            thread::sleep(POLL);
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns how the process exited (within the deadline).
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.0.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let status = wait_for_exit(&mut self.child.0, STOP_DEADLINE).unwrap_or_else(|| {
            panic!(
                "`hubsync serve` ({}) did not stop within {STOP_DEADLINE:?} of SIGTERM:\n{}",
                self.name,
                self.log_text()
            )
        });
        assert!(
            status.success(),
            "`hubsync serve` ({}) did not stop cleanly on SIGTERM ({status}):\n{}",
            self.name,
            self.log_text()
        );
        status
    }
}

/// One request to a node's local API (plain HTTP on loopback), bounded.
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            hubsync::local_client::request(addr, method, path, body),
        )
        .await
        .map_err(|_| format!("{method} {path} on {addr} timed out"))?
        .map_err(|e| e.to_string())
    })
}

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(addr, method, path, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

// ---------------------------------------------------------------------------
// Setting up nodes as an operator does
// ---------------------------------------------------------------------------

struct Master {
    dir: PathBuf,
    config: PathBuf,
    node_id: String,
    listen: SocketAddr,
    api: SocketAddr,
}

fn init_master(root: &Path) -> Master {
    let dir = root.join("master");
    let (listen, api) = (free_addr(), free_addr());
    let out = run(
        root,
        &[
            "init",
            "master",
            "--dir",
            path_str(&dir),
            "--listen",
            &listen.to_string(),
            "--api",
            &api.to_string(),
            "--json",
        ],
    )
    .ok();
    let v = out.json();
    let node_id = v["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("init master --json has no node_id: {v}"))
        .to_string();
    let config = PathBuf::from(
        v["config"]
            .as_str()
            .unwrap_or_else(|| panic!("init master --json has no config path: {v}")),
    );
    assert_eq!(config, dir.join("hubsync.toml"));
    Master {
        dir,
        config,
        node_id,
        listen,
        api,
    }
}

struct Registered {
    node_id: String,
    token: String,
}

fn node_add(root: &Path, master: &Master, code: &str) -> Registered {
    let out = run(
        root,
        &[
            "node",
            "add",
            "--config",
            path_str(&master.config),
            "--code",
            code,
            "--json",
        ],
    )
    .ok();
    let v = out.json();
    assert_eq!(v["code"], code, "node add --json: {v}");
    let field = |k: &str| {
        v[k].as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("node add --json has no {k}: {v}"))
            .to_string()
    };
    Registered {
        node_id: field("node_id"),
        token: field("token"),
    }
}

struct Client {
    config: PathBuf,
    api: SocketAddr,
}

/// `hubsync init client` with background sync off (`--sync-interval 0`), so
/// that only the syncs the test asks for happen.
fn init_client(root: &Path, name: &str, master: &Master, reg: &Registered) -> Client {
    let dir = root.join(name);
    let api = free_addr();
    run(
        root,
        &[
            "init",
            "client",
            "--dir",
            path_str(&dir),
            "--master",
            &format!("https://{}", master.listen),
            "--ca-cert",
            path_str(&master.dir.join("tls/ca.pem")),
            "--node-id",
            &reg.node_id,
            "--token",
            &reg.token,
            "--api",
            &api.to_string(),
            "--sync-interval",
            "0",
        ],
    )
    .ok();
    Client {
        config: dir.join("hubsync.toml"),
        api,
    }
}

/// `hubsync sync --config F --json` → its summary.
fn sync(root: &Path, config: &Path) -> Value {
    run(root, &["sync", "--config", path_str(config), "--json"])
        .ok()
        .json()
}

/// Every byte of the SQLite database and its WAL / shared-memory files.
fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(data_dir).expect("read data dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("hubsync.db") {
            all.extend(std::fs::read(&path).expect("read database file"));
        }
    }
    assert!(
        !all.is_empty(),
        "no hubsync.db* under {}",
        data_dir.display()
    );
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A failure message is one paragraph: some text, no blank line inside.
fn assert_one_paragraph(out: &Outcome) {
    let msg = out.stderr.trim();
    assert!(
        !msg.is_empty() && !msg.contains("\n\n"),
        "`{}` should explain its failure in one paragraph, got:\n{}",
        out.what,
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// The specs
// ---------------------------------------------------------------------------

#[test]
fn operator_path_master_and_client_processes_sync_over_https() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();

    // init master creates everything a master needs.
    let master = init_master(root);
    for file in [
        "hubsync.toml",
        "tls/ca.pem",
        "tls/server.pem",
        "tls/server.key",
        "schemas/schema-set.json",
        "data/hubsync.db",
    ] {
        assert!(
            master.dir.join(file).is_file(),
            "init master did not create {file}"
        );
    }

    // node add prints the id and token once; node list shows the node.
    let desktop = node_add(root, &master, "DESKTOP-1");
    let list = run(
        root,
        &[
            "node",
            "list",
            "--config",
            path_str(&master.config),
            "--json",
        ],
    )
    .ok()
    .json();
    let listed = list
        .as_array()
        .unwrap_or_else(|| panic!("node list --json is not a list: {list}"));
    assert!(
        listed
            .iter()
            .any(|n| n["code"] == "DESKTOP-1" && n["node_id"] == desktop.node_id.as_str()),
        "node list does not show DESKTOP-1 ({}): {list}",
        desktop.node_id
    );

    // The master keeps only a hash of the token.
    let db = database_bytes(&master.dir.join("data"));
    assert!(
        !contains(&db, &desktop.token),
        "the master database holds the token in plaintext"
    );
    let secret = desktop.token.rsplit('.').next().expect("token secret");
    assert!(
        !contains(&db, secret),
        "the master database holds the token's secret in plaintext"
    );

    // init client with what node add printed.
    let client = init_client(root, "client", &master, &desktop);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&client.config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the client config holds the token: only its owner may read it (mode {mode:o})"
        );
    }

    // Both nodes served as separate processes.
    let master_serve = Served::start("master", &master.config, master.api);
    let client_serve = Served::start("client", &client.config, client.api);

    // An application writes through the client's local API.
    let (status, brigade) = http(
        client.api,
        "POST",
        "/api/v1/entities/Brigade",
        Some(&json!({"name": "North"})),
    );
    assert_eq!(status, 201, "POST Brigade: {brigade}");
    let uuid = brigade["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("created entity has no uuid: {brigade}"))
        .to_string();

    // `hubsync sync` while the client's serve runs delegates to that process
    // instead of racing it, and reports what was sent.
    let summary = sync(root, &client.config);
    assert_eq!(summary["sent_changes"], 1, "sync summary: {summary}");

    // The master has the Brigade.
    let (status, on_master) = http(
        master.api,
        "GET",
        &format!("/api/v1/entities/Brigade/{uuid}"),
        None,
    );
    assert_eq!(status, 200, "GET Brigade on the master: {on_master}");
    assert_eq!(on_master["data"]["name"], "North", "{on_master}");

    // status works beside a running serve (shared SQLite store).
    let st = run(
        root,
        &["status", "--config", path_str(&client.config), "--json"],
    )
    .ok()
    .json();
    assert_eq!(st["mode"], "client", "status: {st}");
    assert_eq!(st["pending_changes"], 0, "status: {st}");
    assert_eq!(st["node_id"], desktop.node_id.as_str(), "status: {st}");

    // A second serve of the same node is refused: one process per node.
    let out = run(root, &["serve", "--config", path_str(&client.config)]).failed();
    assert_one_paragraph(&out);
    assert!(
        out.stderr.contains("already serving"),
        "a second serve should say the node is already served:\n{}",
        out.stderr
    );

    // Revoking the node (beside the running master) stops it at once.
    let revoked = run(
        root,
        &[
            "node",
            "revoke",
            "--config",
            path_str(&master.config),
            "DESKTOP-1",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let out = run(root, &["sync", "--config", path_str(&client.config)]).failed();
    assert_one_paragraph(&out);
    // (The master answers a revoked node like an unknown token, on purpose:
    // it tells a caller nothing about which tokens once existed.)
    assert!(
        out.stderr.contains("unauthenticated") && out.stderr.contains("token"),
        "sync of a revoked node should say its token was refused:\n{}",
        out.stderr
    );

    // SIGTERM stops both cleanly.
    client_serve.terminate();
    master_serve.terminate();

    // With no master running, sync fails with one clear message.
    let out = run(root, &["sync", "--config", path_str(&client.config)]).failed();
    assert_one_paragraph(&out);
    let msg = out.stderr.to_lowercase();
    assert!(
        msg.contains(&master.listen.to_string()) && msg.contains("master"),
        "sync without a master should say the master at {} could not be reached:\n{}",
        master.listen,
        out.stderr
    );
    eprintln!(
        "operator_path_master_and_client_processes_sync_over_https: {:.1?} (master {})",
        started.elapsed(),
        master.node_id
    );
}

#[test]
fn history_shows_stored_versions() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let master = init_master(root);
    let reg_a = node_add(root, &master, "DESKTOP-A");
    let reg_b = node_add(root, &master, "DESKTOP-B");
    let a = init_client(root, "client-a", &master, &reg_a);
    let b = init_client(root, "client-b", &master, &reg_b);
    let master_serve = Served::start("master", &master.config, master.api);
    let a_serve = Served::start("client-a", &a.config, a.api);
    let b_serve = Served::start("client-b", &b.config, b.api);

    // A creates a Brigade; both clients get it.
    let (status, created) = http(
        a.api,
        "POST",
        "/api/v1/entities/Brigade",
        Some(&json!({"name": "North"})),
    );
    assert_eq!(status, 201, "{created}");
    let uuid = created["uuid"].as_str().expect("uuid").to_string();
    let path = format!("/api/v1/entities/Brigade/{uuid}");
    assert_eq!(sync(root, &a.config)["sent_changes"], 1);
    let got = sync(root, &b.config);
    assert!(got["received_changes"].as_u64() >= Some(1), "{got}");
    assert_eq!(http(b.api, "GET", &path, None).0, 200);

    // Both edit it offline; A syncs first, so B's edit meets a conflict.
    let edit = |api, name: &str| {
        let (status, body) = http(api, "PUT", &path, Some(&json!({"name": name})));
        assert!(
            status == 200 || status == 201,
            "PUT {name}: {status} {body}"
        );
    };
    edit(a.api, "North (A)");
    edit(b.api, "North (B)");
    assert_eq!(sync(root, &a.config)["sent_changes"], 1);
    let b_sync = sync(root, &b.config);
    assert_eq!(b_sync["sent_changes"], 1, "{b_sync}");
    assert!(
        b_sync["conflicts"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "B's stale edit should be reported as a conflict: {b_sync}"
    );

    // The master keeps the losing version, with where and when it came from.
    let out = run(
        root,
        &[
            "history",
            "--config",
            path_str(&master.config),
            &uuid,
            "--json",
        ],
    )
    .ok();
    let history = out.json();
    let versions = history
        .as_array()
        .unwrap_or_else(|| panic!("history --json is not a list: {history}"));
    assert!(!versions.is_empty(), "no stored versions of {uuid}");
    for v in versions {
        for key in [
            "source_node_id",
            "arrival_time",
            "conflict_resolution",
            "serialized_data",
        ] {
            assert!(v.get(key).is_some(), "history record lacks {key}: {v}");
        }
    }
    assert!(
        versions
            .iter()
            .any(|v| v["source_node_id"] == reg_b.node_id.as_str()
                && v["serialized_data"]["data"]["name"] == "North (B)"),
        "history should keep B's losing version: {history}"
    );
    // The human form says the same.
    let text = run(
        root,
        &["history", "--config", path_str(&master.config), &uuid],
    )
    .ok();
    assert!(text.stdout.contains(&reg_b.node_id), "{}", text.stdout);

    b_serve.terminate();
    a_serve.terminate();
    master_serve.terminate();
    eprintln!("history_shows_stored_versions: {:.1?}", started.elapsed());
}

#[test]
fn schema_check_reports_every_problem() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let repo_schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let repo_schemas = path_str(&repo_schemas);

    // The example set is valid.
    let out = run(root, &["schema", "check", repo_schemas]).ok();
    assert!(out.stdout.contains("1.0.0"), "{}", out.stdout);
    let v = run(root, &["schema", "check", repo_schemas, "--json"])
        .ok()
        .json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["version"], "1.0.0", "{v}");
    let mut types: Vec<&str> = v["types"]
        .as_array()
        .unwrap_or_else(|| panic!("no types: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["Brigade", "DailyReport", "Employee", "Site"]);

    // A broken set: invalid JSON, a reference to an unknown type, and no
    // schema-set.json. Every problem is reported at once.
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("Truck.schema.json"),
        r#"{ "title": "Truck", "type": "object", "#,
    )
    .unwrap();
    std::fs::write(
        broken.join("Crew.schema.json"),
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Crew",
  "type": "object",
  "properties": {
    "name": { "type": "string" },
    "vehicle": { "type": "string", "format": "uuid", "x-hubsync-ref": "Spaceship" }
  }
}"#,
    )
    .unwrap();
    let out = run(root, &["schema", "check", path_str(&broken)]).failed();
    for named in ["Truck.schema.json", "Crew.schema.json", "schema-set.json"] {
        assert!(
            out.stderr.contains(named),
            "schema check should name the problem in {named}:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("Spaceship"),
        "schema check should name the unknown type:\n{}",
        out.stderr
    );
    let out = run(root, &["schema", "check", path_str(&broken), "--json"]).failed();
    let v = out.json();
    assert_eq!(v["ok"], false, "{v}");
    let problems = v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list: {v}"));
    assert!(problems.len() >= 3, "expected ≥ 3 problems: {v}");
    eprintln!(
        "schema_check_reports_every_problem: {:.1?}",
        started.elapsed()
    );
}

#[test]
fn demo_runs_and_converges() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();

    let started = Instant::now();
    let out = run_within(root, &["demo", "--json"], Duration::from_secs(60)).ok();
    let elapsed = started.elapsed();
    let v = out.json();
    assert_eq!(v["converged"], true, "{v}");
    assert!(v["conflict"].is_object(), "demo shows no conflict: {v}");
    assert!(
        v["history"].as_array().is_some_and(|h| !h.is_empty()),
        "demo keeps no history: {v}"
    );
    eprintln!("demo --json elapsed: {elapsed:.2?}");

    let started = Instant::now();
    let out = run_within(root, &["demo"], Duration::from_secs(60)).ok();
    assert!(!out.stdout.trim().is_empty(), "plain demo printed nothing");
    assert!(
        serde_json::from_str::<Value>(&out.stdout).is_err(),
        "plain demo should print human lines, not JSON"
    );
    eprintln!("demo (text) elapsed: {:.2?}", started.elapsed());
}

#[test]
fn every_command_has_help() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let commands: &[&[&str]] = &[
        &[],
        &["demo"],
        &["init", "master"],
        &["init", "client"],
        &["node", "add"],
        &["node", "list"],
        &["node", "revoke"],
        &["node", "rotate-token"],
        &["node", "scope"],
        &["serve"],
        &["sync"],
        &["status"],
        &["history"],
        &["schema", "check"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = run(tmp.path(), &args).ok();
        assert!(
            out.stdout.contains("Usage"),
            "`{}` printed no usage:\n{}",
            out.what,
            out.stdout
        );
    }
}

#[test]
fn errors_are_one_clear_paragraph() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();

    // A missing configuration file: the message names it.
    let out = run(root, &["status", "--config", "/nonexistent/hubsync.toml"]).failed();
    assert_one_paragraph(&out);
    assert!(
        out.stderr.contains("/nonexistent/hubsync.toml"),
        "the message should name the missing file:\n{}",
        out.stderr
    );

    // An unknown key: the message names it.
    let master = init_master(root);
    let text = std::fs::read_to_string(&master.config).unwrap();
    let bogus = master.dir.join("bogus.toml");
    std::fs::write(&bogus, format!("bogus = 1\n{text}")).unwrap();
    let out = run(root, &["status", "--config", path_str(&bogus)]).failed();
    assert_one_paragraph(&out);
    assert!(
        out.stderr.contains("bogus"),
        "the message should name the unknown key:\n{}",
        out.stderr
    );

    // A plain-HTTP master URL is refused: the sync protocol is HTTPS only.
    let reg = node_add(root, &master, "LAPTOP-1");
    let out = run(
        root,
        &[
            "init",
            "client",
            "--dir",
            path_str(&root.join("client")),
            "--master",
            &format!("http://{}", master.listen),
            "--ca-cert",
            path_str(&master.dir.join("tls/ca.pem")),
            "--node-id",
            &reg.node_id,
            "--token",
            &reg.token,
        ],
    )
    .failed();
    assert_one_paragraph(&out);
    assert!(
        out.stderr.to_lowercase().contains("https only"),
        "the message should say the master URL must be HTTPS:\n{}",
        out.stderr
    );
    assert!(
        !root.join("client/hubsync.toml").exists(),
        "a refused init must not leave a configuration behind"
    );
}

#[test]
fn node_scope_is_set_shown_refused_when_invalid_cleared_and_read_from_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let master = init_master(root);
    node_add(root, &master, "DESKTOP-1");
    let cfg = path_str(&master.config);
    let scope = r#"{"types": {"Site": "all", "DailyReport": {"brigade": ["0190a1b2-0000-7000-8000-000000000001"]}}}"#;

    let shown = run(
        root,
        &["node", "scope", "--config", cfg, "DESKTOP-1", "--json"],
    )
    .ok()
    .json();
    assert_eq!(shown["scope"], Value::Null, "no scope by default: {shown}");
    let set = run(
        root,
        &[
            "node",
            "scope",
            "--config",
            cfg,
            "DESKTOP-1",
            "--set",
            scope,
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        set["pending"]["scope"]["types"]["Site"], "all",
        "the change waits for the node's next packet: {set}"
    );
    // From a file, in text form.
    let file = root.join("scope.json");
    std::fs::write(&file, scope).expect("write scope");
    let text = run(
        root,
        &[
            "node",
            "scope",
            "--config",
            cfg,
            "DESKTOP-1",
            "--set",
            &format!("@{}", path_str(&file)),
        ],
    )
    .ok();
    assert!(
        text.stdout.contains("from its next packet"),
        "{}",
        text.stdout
    );

    // Invalid: every problem named, nothing changed.
    let bad = run(
        root,
        &[
            "node",
            "scope",
            "--config",
            cfg,
            "DESKTOP-1",
            "--set",
            r#"{"types": {"Nope": "all", "Site": {"colour": ["red"]}}}"#,
        ],
    )
    .failed();
    assert!(
        bad.stderr.contains("Nope") && bad.stderr.contains("colour"),
        "{}",
        bad.stderr
    );
    assert_one_paragraph(&bad);
    let not_json = run(
        root,
        &[
            "node",
            "scope",
            "--config",
            cfg,
            "DESKTOP-1",
            "--set",
            "{types",
        ],
    )
    .failed();
    assert!(not_json.stderr.contains("not JSON"), "{}", not_json.stderr);
    let unknown = run(root, &["node", "scope", "--config", cfg, "NOBODY"]).failed();
    assert!(unknown.stderr.contains("NOBODY"), "{}", unknown.stderr);
    let cleared = run(
        root,
        &[
            "node",
            "scope",
            "--config",
            cfg,
            "DESKTOP-1",
            "--clear",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(cleared["pending"]["scope"], Value::Null, "{cleared}");

    // Declared in the configuration: applied when the node is added.
    let mut toml = std::fs::read_to_string(&master.config).expect("config");
    toml.push_str("\n[routing.nodes.DESKTOP-2.types]\nSite = \"all\"\n");
    std::fs::write(&master.config, toml).expect("config");
    node_add(root, &master, "DESKTOP-2");
    let declared = run(
        root,
        &["node", "scope", "--config", cfg, "DESKTOP-2", "--json"],
    )
    .ok()
    .json();
    assert_eq!(
        declared["pending"]["scope"]["types"]["Site"], "all",
        "{declared}"
    );
}
