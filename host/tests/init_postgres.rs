//! The operator path to a PostgreSQL master, through the real binary:
//! `hubsync init master --storage postgres://…` (and the same through
//! `HUBSYNC_STORAGE__URL`) creates and migrates the store and records the
//! master's identity; `node add` and `status` then work against it; a
//! second `init` of another master on the same database is refused.
//! Needs HUBSYNC_TEST_POSTGRES_URL; without it each test says SKIPPED on
//! stderr and passes. Every command is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hubsync_store_postgres::scratch::{ScratchDatabase, test_url};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hubsync");
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the binary with a clean HUBSYNC_* environment plus `env`; returns
/// (success, stdout, stderr).
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUBSYNC_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HUBSYNC_LOG", "warn")
        .envs(env.iter().copied())
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn hubsync");
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("hubsync {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scratch(what: &str) -> Option<(tokio::runtime::Runtime, ScratchDatabase)> {
    let base = test_url(what)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt
        .block_on(ScratchDatabase::create(&base))
        .unwrap_or_else(|e| panic!("{e}"));
    Some((rt, db))
}

/// `postgres://user@host/db` with a password added, to check it never
/// shows (trust auth ignores it).
fn with_password(url: &str) -> String {
    url.replacen("://postgres@", "://postgres:hunter2@", 1)
}

#[test]
fn init_master_with_a_postgres_url_creates_the_store_and_the_identity() {
    let Some((_rt, db)) = scratch("init_master_with_a_postgres_url") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = with_password(&db.url);
    let (ok, out, err) = run(
        dir.path(),
        &[
            "init",
            "master",
            "--dir",
            "m",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--storage",
            &url,
            "--json",
        ],
        &[],
    );
    assert!(ok, "init failed: {err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
    let init: Value = serde_json::from_str(&out).expect("init --json");
    let node_id = init["node_id"].as_str().expect("node_id").to_string();
    let config = dir.path().join("m/hubsync.toml");
    let config = config.to_str().expect("utf-8 path");

    let (ok, out, err) = run(
        dir.path(),
        &[
            "node",
            "add",
            "--config",
            config,
            "--code",
            "DESKTOP-1",
            "--json",
        ],
        &[],
    );
    assert!(ok, "node add failed: {err}");
    assert!(out.contains("DESKTOP-1"), "{out}");

    let (ok, out, err) = run(dir.path(), &["status", "--config", config, "--json"], &[]);
    assert!(ok, "status failed: {err}");
    assert!(
        out.contains(&node_id),
        "status shows the master's id: {out}"
    );
    assert!(out.contains("DESKTOP-1"), "status lists the node: {out}");

    // Another master on the same database is refused, naming both ids.
    let (ok, _, err) = run(
        dir.path(),
        &[
            "init",
            "master",
            "--dir",
            "other",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--storage",
            &url,
        ],
        &[],
    );
    assert!(!ok, "a second master on one database must be refused");
    assert!(err.contains(&node_id), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn the_storage_url_can_come_from_the_environment() {
    let Some((_rt, db)) = scratch("the_storage_url_can_come_from_the_environment") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = run(
        dir.path(),
        &[
            "init",
            "master",
            "--dir",
            "m",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--json",
        ],
        &[("HUBSYNC_STORAGE__URL", &db.url)],
    );
    assert!(ok, "init failed: {err}");
    let init: Value = serde_json::from_str(&out).expect("init --json");
    assert!(
        init["storage_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("postgres://")),
        "{init}"
    );

    // At run time the environment overrides the file: point a copy of the
    // config at SQLite in the file, and at the database through the env.
    let config = dir.path().join("m/hubsync.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains(db.name()), "init wrote the URL it was given");
    let sqlite = text.replace(&db.url, "sqlite://data/elsewhere.db");
    std::fs::write(&config, sqlite).expect("rewrite");
    let config = config.to_str().expect("utf-8 path");
    let (ok, out, err) = run(
        dir.path(),
        &["status", "--config", config, "--json"],
        &[("HUBSYNC_STORAGE__URL", &db.url)],
    );
    assert!(ok, "status through the env URL failed: {err}");
    assert!(
        out.contains(init["node_id"].as_str().expect("id")),
        "the env URL reached the PostgreSQL store: {out}"
    );
}
