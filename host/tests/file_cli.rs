//! `hubsync export` / `hubsync import` through the real binary (contract
//! §2): a client with no network carries sealed files to its master and
//! back. Every wait is bounded, every child process is killed on every exit
//! path, everything listens on loopback only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{Guard, free_addr, hubsync, path_str as p, wait_for_exit};

const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
const READY_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(15);

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
            "`{}` failed ({}):\n{}\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Failed with one paragraph on stderr and nothing on stdout.
    fn refused(self) -> Self {
        assert!(
            !self.status.success(),
            "`{}` should have failed:\n{}",
            self.what,
            self.stdout
        );
        let msg = self.stderr.trim();
        assert!(
            !msg.is_empty() && !msg.contains("\n\n"),
            "`{}` should explain its failure in one paragraph:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print one JSON document ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }
}

fn run(cwd: &Path, args: &[&str]) -> Outcome {
    let what = format!("hubsync {}", args.join(" "));
    let (status, stdout, stderr) = support::capture(hubsync(cwd, args), &what, COMMAND_DEADLINE);
    Outcome {
        what,
        status,
        stdout,
        stderr,
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            hubsync::local_client::request(addr, method, path, body),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    })
}

/// A running `hubsync serve` of a client, stopped with SIGTERM.
struct Served {
    child: Guard,
}

impl Served {
    fn start(config: &Path, api: SocketAddr) -> Served {
        let dir = config.parent().expect("dir");
        let child = Guard(
            hubsync(dir, &["serve", "--config", p(config)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start serve"),
        );
        let mut served = Served { child };
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = served.child.0.try_wait().expect("try_wait") {
                panic!("`hubsync serve` exited early ({status})");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let up = rt.block_on(async {
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        hubsync::local_client::request(api, "GET", "/health", None),
                    )
                    .await,
                    Ok(Ok((200, _)))
                )
            });
            if up {
                return served;
            }
            assert!(Instant::now() < until, "serve did not come up on {api}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(mut self) {
        let pid = self.child.0.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(kill.success());
        let status = wait_for_exit(&mut self.child.0, STOP_DEADLINE).expect("serve stops");
        assert!(status.success(), "serve stopped with {status}");
    }
}

struct Nodes {
    root: tempfile::TempDir,
    master: PathBuf,
    client: PathBuf,
    client_api: SocketAddr,
}

/// A master and a registered client that has never reached it.
fn nodes() -> Nodes {
    let root = tempfile::tempdir().expect("temp dir");
    let r = root.path();
    let master_dir = r.join("master");
    run(
        r,
        &[
            "init",
            "master",
            "--dir",
            p(&master_dir),
            "--listen",
            &free_addr().to_string(),
            "--api",
            &free_addr().to_string(),
        ],
    )
    .ok();
    let master = master_dir.join("hubsync.toml");
    let reg = run(
        r,
        &[
            "node",
            "add",
            "--config",
            p(&master),
            "--code",
            "FIELD-1",
            "--json",
        ],
    )
    .ok()
    .json();
    let client_dir = r.join("field");
    let client_api = free_addr();
    run(
        r,
        &[
            "init",
            "client",
            "--dir",
            p(&client_dir),
            // No master is listening there: this client has no network.
            "--master",
            &format!("https://{}", free_addr()),
            "--ca-cert",
            p(&master_dir.join("tls/ca.pem")),
            "--node-id",
            reg["node_id"].as_str().expect("node id"),
            "--token",
            reg["token"].as_str().expect("token"),
            "--api",
            &client_api.to_string(),
            "--sync-interval",
            "0",
        ],
    )
    .ok();
    Nodes {
        master,
        client: client_dir.join("hubsync.toml"),
        client_api,
        root,
    }
}

#[test]
fn a_client_without_network_syncs_by_carrying_sealed_files() {
    let n = nodes();
    let r = n.root.path();
    let up = r.join("to-master.hspkt");
    let down = r.join("to-field.hspkt");

    // Work offline through the local API; export is refused while serve
    // holds the node, and says what to do.
    let served = Served::start(&n.client, n.client_api);
    for name in ["North", "South"] {
        let (status, _) = http(
            n.client_api,
            "POST",
            "/api/v1/entities/Brigade",
            Some(&json!({"name": name})),
        );
        assert_eq!(status, 201);
    }
    let (_, st) = http(n.client_api, "GET", "/api/v1/status", None);
    assert!(st["progress"].is_null(), "idle: no progress: {st}");
    let busy = run(r, &["export", "--config", p(&n.client), "--out", p(&up)]).refused();
    assert!(busy.stderr.contains("hubsync serve"), "{}", busy.stderr);
    assert!(!up.exists(), "nothing written");
    served.terminate();

    // Client → file.
    run(
        r,
        &[
            "export",
            "--config",
            p(&n.client),
            "--out",
            p(&up),
            "--node",
            "X",
        ],
    )
    .refused();
    let out = run(
        r,
        &[
            "export",
            "--config",
            p(&n.client),
            "--out",
            p(&up),
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(out["packet_no"], 1, "{out}");
    assert_eq!(out["changes"], 2, "{out}");
    assert_eq!(out["by_type"]["Brigade"], 2, "{out}");
    let bytes = std::fs::read(&up).expect("file written");
    assert!(
        !bytes.windows(5).any(|w| w == b"North"),
        "the file is sealed, not plain"
    );

    // File → master: a dry run first, then for real, then once more.
    let dry = run(
        r,
        &[
            "import",
            "--config",
            p(&n.master),
            p(&up),
            "--dry-run",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(dry["report"]["dry_run"], true, "{dry}");
    assert_eq!(dry["report"]["applied"], 2, "{dry}");
    let text = run(r, &["import", "--config", p(&n.master), p(&up)]).ok();
    assert!(
        text.stdout.contains("applied 2 change(s)"),
        "{}",
        text.stdout
    );
    let again = run(r, &["import", "--config", p(&n.master), p(&up), "--json"])
        .ok()
        .json();
    assert_eq!(again["report"]["new_packet"], false, "{again}");
    assert_eq!(again["report"]["applied"], 0, "{again}");

    // Master → file → client. A master must name the node.
    run(r, &["export", "--config", p(&n.master), "--out", p(&down)]).refused();
    let out = run(
        r,
        &[
            "export",
            "--config",
            p(&n.master),
            "--out",
            p(&down),
            "--node",
            "FIELD-1",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(out["ack_packet_no"], 1, "{out}");

    // A truncated or altered copy is refused whole.
    let good = std::fs::read(&down).expect("read");
    let cut = r.join("cut.hspkt");
    std::fs::write(&cut, &good[..good.len() - 3]).expect("write");
    let refused = run(r, &["import", "--config", p(&n.client), p(&cut)]).refused();
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{}",
        refused.stderr
    );
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    std::fs::write(&cut, &flipped).expect("write");
    run(r, &["import", "--config", p(&n.client), p(&cut)]).refused();
    // The client's own file is not for it.
    run(r, &["import", "--config", p(&n.client), p(&up)]).refused();

    let got = run(r, &["import", "--config", p(&n.client), p(&down), "--json"])
        .ok()
        .json();
    assert_eq!(got["report"]["ack_packet_no"], 1, "{got}");
    let st = run(r, &["status", "--config", p(&n.client), "--json"])
        .ok()
        .json();
    assert_eq!(st["sent_packet_no"], 1, "the master acknowledged: {st}");
    assert_eq!(st["pending_changes"], 0, "{st}");
    // Nothing new: the next export only acknowledges.
    let out = run(
        r,
        &[
            "export",
            "--config",
            p(&n.client),
            "--out",
            p(&up),
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(out["changes"], 0, "{out}");
}

#[test]
fn export_and_import_have_help() {
    let root = tempfile::tempdir().expect("temp dir");
    for cmd in ["export", "import"] {
        let out = run(root.path(), &[cmd, "--help"]).ok();
        assert!(out.stdout.contains("--config"), "{}", out.stdout);
    }
    let out = run(root.path(), &["import", "--help"]).ok();
    assert!(out.stdout.contains("--dry-run"));
}
