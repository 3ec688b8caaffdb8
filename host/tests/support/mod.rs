//! Real `hubsync` processes for the crash-loop and memory tests: a master
//! and clients set up with the CLI as an operator does, served, written to
//! through their local APIs, killed with SIGKILL, and their SQLite files
//! inspected afterwards.
//!
//! Every wait is bounded; every child is killed when its handle drops;
//! everything listens on loopback.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hubsync");
/// A one-shot command must finish within this.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// A `hubsync serve` must answer /health within this.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// The binary with no inherited HUBSYNC_* variables, run from `cwd`.
pub fn hubsync(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUBSYNC_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HUBSYNC_LOG", "warn")
        .env("NO_COLOR", "1")
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A free loopback port (bind 0, read, release; a tiny race is accepted).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// Kills the child when dropped (a panicking test leaves no process behind).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `child` until it exits or `deadline` passes.
pub fn wait_for_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `cmd` (named `what` in panics) to completion within `deadline`,
/// killing it if it hangs. Both pipes are drained on threads, so a chatty
/// child never blocks on a full pipe. Returns the exit status, stdout and
/// stderr.
pub fn capture(mut cmd: Command, what: &str, deadline: Duration) -> (ExitStatus, String, String) {
    let mut child = Guard(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{what}`: {e}")),
    );
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.0.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.0.stderr.take().expect("stderr piped")));
    let status = wait_for_exit(&mut child.0, deadline)
        .unwrap_or_else(|| panic!("`{what}` did not finish within {deadline:?}"));
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Runs a command to completion (bounded) and returns its stdout; panics
/// with both outputs when it fails.
pub fn run(cwd: &Path, args: &[&str]) -> String {
    let what = format!("hubsync {}", args.join(" "));
    let (status, stdout, stderr) = capture(hubsync(cwd, args), &what, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "`{what}` failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

fn json(what: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{what}` printed no JSON ({e}):\n{text}"))
}

/// One node directory: its config, local API address and (master) sync
/// address.
#[derive(Clone, Debug)]
pub struct NodeDir {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api: SocketAddr,
    pub listen: Option<SocketAddr>,
    pub node_id: String,
}

impl NodeDir {
    /// The node's SQLite database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("data/hubsync.db")
    }
}

/// `hubsync init master` in `root/master`.
pub fn init_master(root: &Path) -> NodeDir {
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
    );
    let v = json("init master", &out);
    NodeDir {
        name: "master".into(),
        config: dir.join("hubsync.toml"),
        dir,
        api,
        listen: Some(listen),
        node_id: v["node_id"].as_str().expect("node_id").to_string(),
    }
}

/// Sets the master's per-node rate limit (`[limits]`).
pub fn set_master_limits(master: &NodeDir, per_minute: u32, burst: u32) {
    let text = std::fs::read_to_string(&master.config).expect("master config");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("rate_limit_per_minute") {
                found = true;
                format!("rate_limit_per_minute = {per_minute}")
            } else if l.trim_start().starts_with("rate_limit_burst") {
                format!("rate_limit_burst = {burst}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(format!(
            "[limits]\nrate_limit_per_minute = {per_minute}\nrate_limit_burst = {burst}"
        ));
    }
    std::fs::write(&master.config, out.join("\n") + "\n").expect("write master config");
}

/// `hubsync node add` on the master, then `hubsync init client` in
/// `root/<name>` with background sync off, and `extra_sync` lines added
/// to its `[sync]` section.
pub fn add_client(root: &Path, master: &NodeDir, name: &str, extra_sync: &str) -> NodeDir {
    let out = run(
        root,
        &[
            "node",
            "add",
            "--config",
            path_str(&master.config),
            "--code",
            &name.to_uppercase(),
            "--json",
        ],
    );
    let v = json("node add", &out);
    let node_id = v["node_id"].as_str().expect("node_id").to_string();
    let token = v["token"].as_str().expect("token").to_string();
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
            &format!("https://{}", master.listen.expect("master listens")),
            "--ca-cert",
            path_str(&master.dir.join("tls/ca.pem")),
            "--node-id",
            &node_id,
            "--token",
            &token,
            "--api",
            &api.to_string(),
            "--sync-interval",
            "0",
        ],
    );
    let config = dir.join("hubsync.toml");
    if !extra_sync.is_empty() {
        let text = std::fs::read_to_string(&config).expect("client config");
        let text = text.replacen("[sync]\n", &format!("[sync]\n{extra_sync}\n"), 1);
        std::fs::write(&config, text).expect("write client config");
    }
    NodeDir {
        name: name.into(),
        dir,
        config,
        api,
        listen: None,
        node_id,
    }
}

/// A running `hubsync serve`, its stderr appended to `serve.log`.
pub struct Served {
    pub node: NodeDir,
    child: Guard,
}

impl Served {
    /// Starts `hubsync serve` and waits until `/health` answers 200.
    pub async fn start(node: &NodeDir) -> Served {
        let log = File::options()
            .create(true)
            .append(true)
            .open(node.dir.join("serve.log"))
            .expect("serve log");
        let child = Guard(
            hubsync(&node.dir, &["serve", "--config", path_str(&node.config)])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start hubsync serve"),
        );
        let mut served = Served {
            node: node.clone(),
            child,
        };
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = served.child.0.try_wait().expect("try_wait") {
                panic!(
                    "`hubsync serve` ({}) exited early ({status}):\n{}",
                    node.name,
                    served.log_tail()
                );
            }
            if let Ok((200, _)) = request(node.api, "GET", "/health", None).await {
                return served;
            }
            assert!(
                Instant::now() < until,
                "`hubsync serve` ({}) did not answer /health within {READY_DEADLINE:?}:\n{}",
                node.name,
                served.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.node.dir.join("serve.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.floor_char_boundary(start)..].to_string()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill9(mut self) {
        let _ = self.child.0.kill();
        let _ = wait_for_exit(&mut self.child.0, Duration::from_secs(10));
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = wait_for_exit(&mut self.child.0, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("`hubsync serve` ({}) ignored SIGTERM", self.node.name));
        assert!(
            status.success(),
            "`hubsync serve` ({}) did not stop cleanly ({status}):\n{}",
            self.node.name,
            self.log_tail()
        );
    }
}

/// One request to a local API, bounded at 20 s.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    tokio::time::timeout(
        Duration::from_secs(20),
        hubsync::local_client::request(addr, method, path, body),
    )
    .await
    .map_err(|_| format!("{method} {path} on {addr} timed out"))?
    .map_err(|e| e.to_string())
}

/// What a node's SQLite file holds, read without hubsync: entities by
/// uuid (data, deleted) and the entity uuids with a queue row.
#[derive(Debug, Default)]
pub struct DbView {
    pub entities: BTreeMap<String, (Value, bool)>,
    pub queued: BTreeSet<String>,
}

/// Opens `db` read-only (the writer may be running, or dead mid-write),
/// runs `PRAGMA integrity_check`, and reads the entities and queue.
pub async fn inspect(db: &Path) -> Result<DbView, String> {
    use sqlx::ConnectOptions;
    use sqlx::Row;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("opening {}: {e}", db.display()))?;
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("integrity_check of {}: {e}", db.display()))?;
    if check != ["ok"] {
        return Err(format!(
            "PRAGMA integrity_check of {}: {check:?}",
            db.display()
        ));
    }
    let mut view = DbView::default();
    let rows = sqlx::query("SELECT uuid, data, is_deleted FROM entities")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("reading entities of {}: {e}", db.display()))?;
    for row in rows {
        let uuid: String = row.get(0);
        let data: String = row.get(1);
        let deleted: i64 = row.get(2);
        let data = serde_json::from_str(&data).map_err(|e| format!("entity {uuid}: {e}"))?;
        view.entities.insert(uuid, (data, deleted != 0));
    }
    let rows = sqlx::query("SELECT entity_uuid FROM sync_changes WHERE kind = 'queue'")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("reading the queue of {}: {e}", db.display()))?;
    for row in rows {
        view.queued.insert(row.get(0));
    }
    Ok(view)
}

/// Peak resident memory (VmHWM, KiB) of a live process, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A seeded splitmix64: the same seed draws the same choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `name` environment variable as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// True when `HUBSYNC_LONG` asks for the long versions.
pub fn long() -> bool {
    std::env::var_os("HUBSYNC_LONG").is_some_and(|v| v != "0")
}
