//! `hubsync plugin check PATH` and plugin refusals at start, driven through
//! the real binary as separate processes. The plugin libraries come from
//! the resolver testkit's bounded nested build
//! (`hubsync_resolver_testkit::cdylib`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hubsync_resolver_testkit::cdylib::test_plugin_path;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hubsync");
const DEADLINE: Duration = Duration::from_secs(30);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with a clean HUBSYNC_* environment, bounded.
fn hubsync(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUBSYNC_") {
            cmd.env_remove(&key);
        }
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = cmd
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run hubsync");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hubsync {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

fn lib(package: &str) -> String {
    test_plugin_path(package)
}

/// `plugin check PATH` must fail (non-zero, `words` on stderr) and say the
/// same with `--json` (`kind` on stdout).
fn check_refused(path: &str, kind: &str, words: &str) {
    let cwd = std::env::temp_dir();
    let r = hubsync(&cwd, &["plugin", "check", path]);
    assert_ne!(r.code, Some(0), "{path} was accepted: {}", r.stdout);
    assert!(r.stderr.contains(words), "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains(path),
        "the message names the file: {}",
        r.stderr
    );
    let r = hubsync(&cwd, &["plugin", "check", path, "--json"]);
    assert_ne!(r.code, Some(0));
    let v: Value = serde_json::from_str(&r.stdout).expect("one JSON document on stdout");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["kind"], kind, "{v}");
}

#[test]
fn check_prints_name_version_and_manifest() {
    let path = lib("hubsync-example-merge-report-lines");
    let cwd = std::env::temp_dir();
    let r = hubsync(&cwd, &["plugin", "check", &path]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("name:        merge-report-lines"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ABI version 1"), "{}", r.stdout);
    let r = hubsync(&cwd, &["plugin", "check", &path, "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["name"], "merge-report-lines");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["abi_version"], 1);
    assert_eq!(v["manifest"]["symmetric"], false);
}

#[test]
fn check_refuses_a_wrong_abi_library() {
    check_refused(
        &lib("hubsync-test-bad-abi-resolver"),
        "wrong_abi_version",
        "built for resolver ABI version 999, but this hubsync speaks version 1",
    );
}

#[test]
fn check_refuses_files_that_are_not_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("x.so");
    std::fs::write(&text, "not a library").expect("write");
    check_refused(
        &text.display().to_string(),
        "not_a_library",
        "not a loadable shared library",
    );
    // A real shared library without the entry symbol: the built-in crate as
    // the host's own build produces it (without its `export` feature).
    let plain = PathBuf::from(BIN)
        .parent()
        .expect("target/<profile>")
        .join("deps")
        .join(hubsync_resolver_testkit::cdylib::library_file_name(
            "hubsync-resolver-server-wins",
        ));
    if plain.exists() {
        check_refused(
            &plain.display().to_string(),
            "not_a_resolver",
            "does not export `hubsync_resolver_entry_v1`",
        );
    }
    check_refused("/nonexistent/libnothing.so", "missing", "does not exist");
}

#[test]
fn check_refuses_a_plugin_named_like_a_built_in() {
    check_refused(
        &lib("hubsync-resolver-server-wins"),
        "name_taken",
        "'server-wins' is already taken by a built-in strategy",
    );
}

#[test]
fn serve_refuses_to_start_with_a_bad_plugin_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("m");
    let node_s = node.display().to_string();
    let r = hubsync(
        dir.path(),
        &[
            "init",
            "master",
            "--dir",
            &node_s,
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let cfg = node.join("hubsync.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(&format!(
        "\n[[plugins]]\npath = {:?}\n",
        lib("hubsync-test-bad-abi-resolver")
    ));
    std::fs::write(&cfg, text).expect("write config");
    let r = hubsync(
        dir.path(),
        &["serve", "--config", &cfg.display().to_string()],
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("built for resolver ABI version 999"),
        "{}",
        r.stderr
    );
}
