//! `hubsync conflicts list|show|resolve` through the real binary, on a
//! master directory made by `hubsync init master`. The deferred conflicts
//! are created in process first: the master's engine handles an exchange
//! from a registered node whose changes meet the `manual` strategy (the
//! same call `POST /sync/v1/exchange` makes), then the store is closed and
//! the binary takes over.
//!
//! Every command runs with a deadline and is killed if it hangs; nothing
//! listens on the network.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hubsync::config::Config;
use hubsync::node::Node;
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{Body, Envelope, Header, Outcome, PROTOCOL_VERSION, WireChange};
use serde_json::{Value, json};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_hubsync");
const DEADLINE: Duration = Duration::from_secs(30);

struct Run {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
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
    fn failed(self) -> Self {
        assert!(
            !self.status.success(),
            "`{}` should have failed:\n{}",
            self.what,
            self.stdout
        );
        self
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no single JSON document ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }
}

/// Runs the binary (no inherited HUBSYNC_* variables) within [`DEADLINE`].
fn hubsync(cwd: &Path, args: &[&str]) -> Run {
    let what = format!("hubsync {}", args.join(" "));
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUBSYNC_") {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd
        .env("HUBSYNC_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("USER", "tester")
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `{what}`: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let until = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Run {
        what,
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A master directory with Brigade conflicts deferred to a person: returns
/// its config path, the deferred Brigades and the node's code.
async fn master_with_deferred_conflicts(root: &Path, n: usize) -> (PathBuf, Vec<Uuid>) {
    let dir = root.join("master");
    let dir_text = dir.display().to_string();
    hubsync(
        root,
        &[
            "init",
            "master",
            "--dir",
            &dir_text,
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--json",
        ],
    )
    .ok();
    let config = dir.join("hubsync.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[conflicts.per_type]\nBrigade = \"manual\"\n");
    std::fs::write(&config, text).expect("config written");

    let node = Node::open(Config::load_with_env(&config, &[]).expect("config loads"))
        .await
        .expect("the master opens");
    let m = &node.engine;
    let client = m
        .add_node("DESKTOP-1", "desk", "not-a-real-token-hash")
        .await
        .expect("node added");
    let mut brigades = Vec::new();
    let mut changes = Vec::new();
    for i in 0..n {
        let b = m
            .create("Brigade", None, json!({"name": format!("Crew {i}")}))
            .await
            .expect("brigade");
        brigades.push(b.uuid);
        // The node never saw the master's version: no base revision.
        changes.push(WireChange {
            entity_type: "Brigade".into(),
            uuid: b.uuid,
            operation: Operation::Update,
            data: json!({"name": format!("Crew {i} from the desk")}),
            updated_at: now_utc(),
            is_deleted: false,
            base_rev: None,
            rev: None,
            origin_node_id: None,
        });
    }
    let answer = m
        .handle_exchange(
            client.id,
            Envelope {
                header: Header {
                    protocol: PROTOCOL_VERSION,
                    sender_node_id: client.id,
                    recipient_node_id: m.identity().node_id,
                    packet_no: 1,
                    ack_packet_no: 0,
                    schema_version: m.schema_version().to_string(),
                    timestamp: now_utc(),
                },
                body: Body {
                    entities: changes,
                    results: Vec::new(),
                    more: false,
                    remaining: None,
                    evict: Vec::new(),
                    results_kept: 0,
                    holding: None,
                    sends_ahead: false,
                },
            },
        )
        .await
        .expect("the exchange is handled");
    assert_eq!(answer.body.results.len(), n);
    assert!(
        answer
            .body
            .results
            .iter()
            .all(|r| r.outcome == Outcome::ConflictDeferred),
        "{:?}",
        answer.body.results
    );
    m.store().close().await;
    (config, brigades)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_list_show_and_resolve_through_the_binary() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let (config, brigades) = master_with_deferred_conflicts(root, 3).await;
    let cfg = config.display().to_string();

    // list --json: three pending, with the node's code and the strategy.
    let list = hubsync(root, &["conflicts", "list", "--config", &cfg, "--json"])
        .ok()
        .json();
    let pending = list["pending"].as_array().cloned().unwrap_or_default();
    assert_eq!(pending.len(), 3, "{list}");
    for p in &pending {
        assert_eq!(p["node_code"], "DESKTOP-1", "{p}");
        assert_eq!(p["strategy"], "manual", "{p}");
        assert_eq!(p["type"], "Brigade", "{p}");
    }
    let id_of = |uuid: Uuid| -> String {
        pending
            .iter()
            .find(|p| p["uuid"] == json!(uuid))
            .and_then(|p| p["id"].as_str())
            .unwrap_or_else(|| panic!("{uuid} not pending: {list}"))
            .to_string()
    };
    let (remote, merged, local) = (id_of(brigades[0]), id_of(brigades[1]), id_of(brigades[2]));

    // list as a table.
    let table = hubsync(root, &["conflicts", "list", "--config", &cfg])
        .ok()
        .stdout;
    for word in [
        "ID",
        "TYPE",
        "UUID",
        "NODE",
        "STRATEGY",
        "REASON",
        "WHEN",
        "DESKTOP-1",
        &remote,
    ] {
        assert!(table.contains(word), "no {word} in:\n{table}");
    }

    // show: the incoming version and the master's.
    let view = hubsync(
        root,
        &["conflicts", "show", &remote, "--config", &cfg, "--json"],
    )
    .ok()
    .json();
    assert_eq!(view["status"], "pending");
    assert_eq!(view["master"]["data"]["name"], "Crew 0");
    assert_eq!(
        view["incoming"][0]["serialized_data"]["data"]["name"],
        "Crew 0 from the desk"
    );
    let text = hubsync(root, &["conflicts", "show", &remote, "--config", &cfg])
        .ok()
        .stdout;
    assert!(
        text.contains("Crew 0 from the desk") && text.contains("resolve with"),
        "{text}"
    );

    // resolve --take remote.
    let done = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &remote,
            "--take",
            "remote",
            "--config",
            &cfg,
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        done["entity"]["data"]["name"], "Crew 0 from the desk",
        "{done}"
    );
    assert_eq!(done["resolution"]["outcome"], "manual_resolved");
    assert!(
        done["resolution"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tester")),
        "the person is recorded: {done}"
    );
    // Twice: refused, saying so.
    let again = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &remote,
            "--take",
            "local",
            "--config",
            &cfg,
        ],
    )
    .failed();
    assert!(
        again.stderr.contains("already resolved"),
        "{}",
        again.stderr
    );

    // --data FILE: invalid is refused with the pointer, valid is taken.
    let bad = root.join("bad.json");
    std::fs::write(&bad, r#"{"name": "Crew", "colour": "red"}"#).expect("write");
    let refused = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &merged,
            "--data",
            &bad.display().to_string(),
            "--config",
            &cfg,
        ],
    )
    .failed();
    assert!(refused.stderr.contains("colour"), "{}", refused.stderr);
    let good = root.join("good.json");
    std::fs::write(&good, r#"{"name": "Crew 1 (merged)", "foreman": "Ivan"}"#).expect("write");
    let done = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &merged,
            "--data",
            &good.display().to_string(),
            "--config",
            &cfg,
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(done["entity"]["data"]["name"], "Crew 1 (merged)");

    // --take version without an id, and an unknown conflict: clear errors.
    let r = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &local,
            "--take",
            "version",
            "--config",
            &cfg,
        ],
    )
    .failed();
    assert!(
        r.stderr.contains("VERSION_ID") || r.stderr.contains("version id"),
        "{}",
        r.stderr
    );
    let r = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &Uuid::now_v7().to_string(),
            "--take",
            "local",
            "--config",
            &cfg,
        ],
    )
    .failed();
    assert!(r.stderr.contains("no deferred conflict"), "{}", r.stderr);

    // --take local (text output), then the queue is empty.
    let out = hubsync(
        root,
        &[
            "conflicts",
            "resolve",
            &local,
            "--take",
            "local",
            "--config",
            &cfg,
        ],
    )
    .ok();
    assert!(out.stdout.contains("resolved"), "{}", out.stdout);
    let list = hubsync(root, &["conflicts", "list", "--config", &cfg, "--json"])
        .ok()
        .json();
    assert_eq!(list["pending"], json!([]), "{list}");
    let table = hubsync(root, &["conflicts", "list", "--config", &cfg])
        .ok()
        .stdout;
    assert!(table.contains("no conflicts"), "{table}");
}
