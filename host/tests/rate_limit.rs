//! The master's per-node rate limit slows a bulk sync down but never fails
//! it: real `hubsync serve` masters on loopback with a tiny limit, real
//! `hubsync sync` processes.
//!
//! - A client whose master allows 60 requests a minute (burst 2) pushes 30
//!   changes in 6 packets of 5, and a second client downloads them in 6
//!   packets of 5: each session is refused with 429 + `Retry-After` several
//!   times, waits as asked, goes on, completes, and reports its waits
//!   (`retry_after_waits` in `--json`, a log line per wait).
//! - A node that floods is still refused with 429 `rate_limited` and
//!   `Retry-After`; the flood costs the master one security event, not one
//!   per request; a session asked to wait longer than it waits at a time
//!   (`[sync].retry_max_secs`) stops at once and says why.
//!
//! Every wait is bounded.

mod support;

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use support::{NodeDir, Served, hubsync, path_str, request};

/// A `hubsync sync` must finish within this.
const SYNC_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `hubsync <args>` (bounded) with the hubsync crate's info logs on
/// stderr; returns the exit status, stdout and stderr.
fn run_logged(cwd: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = hubsync(cwd, args);
    cmd.env("HUBSYNC_LOG", "warn,hubsync=info");
    support::capture(cmd, &format!("hubsync {}", args.join(" ")), SYNC_DEADLINE)
}

/// `hubsync sync --json` of `node`, which must succeed; its JSON, stderr
/// and how long it took.
fn sync_ok(node: &NodeDir) -> (Value, String, Duration) {
    let started = Instant::now();
    let (status, stdout, stderr) = run_logged(
        &node.dir,
        &["sync", "--config", path_str(&node.config), "--json"],
    );
    let took = started.elapsed();
    assert!(
        status.success(),
        "`hubsync sync` of {} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        node.name
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`hubsync sync --json` printed no JSON ({e}):\n{stdout}"));
    (v, stderr, took)
}

/// Appends `text` to a node's configuration file.
fn append_config(node: &NodeDir, text: &str) {
    let mut config = std::fs::read_to_string(&node.config).expect("config");
    config.push('\n');
    config.push_str(text);
    config.push('\n');
    std::fs::write(&node.config, config).expect("write config");
}

/// The log lines of the waits (transport.rs logs one per wait).
fn wait_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("the master asked this node to wait (Retry-After)"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_client_waits_as_asked_and_completes_a_multi_packet_sync() {
    let root = tempfile::tempdir().expect("temp dir");
    let master = support::init_master(root.path());
    // 1 request a second, 2 at once: a session of 7 exchanges is refused
    // about 5 times.
    support::set_master_limits(&master, 60, 2);
    // The master's packets to the clients: 5 entities each.
    append_config(&master, "[sync]\nmax_packet_entities = 5");
    let a = support::add_client(root.path(), &master, "a", "max_packet_entities = 5");
    let b = support::add_client(root.path(), &master, "b", "max_packet_entities = 5");
    let served_master = Served::start(&master).await;

    // 30 changes queued on client a, through its local API.
    let served_a = Served::start(&a).await;
    let operations: Vec<Value> = (0..30)
        .map(|i| json!({"op": "put", "type": "Brigade", "data": {"name": format!("b{i:02}")}}))
        .collect();
    let (status, body) = request(
        a.api,
        "POST",
        "/api/v1/batch",
        Some(&json!({ "operations": operations })),
    )
    .await
    .expect("batch");
    assert_eq!(status, 200, "{body}");
    served_a.terminate();

    // Push: 6 packets of 5, then the final poll.
    let (push, stderr, took) = sync_ok(&a);
    eprintln!("push of 30 in packets of 5 at 60/min burst 2: {took:?}, {push}");
    assert_eq!(push["sent_changes"], 30, "{push}");
    assert!(push["rounds"].as_u64().is_some_and(|r| r >= 6), "{push}");
    let waits = &push["retry_after_waits"];
    let count = waits["count"].as_u64().expect("retry_after_waits.count");
    assert!(count >= 3, "the session was refused and waited: {push}");
    assert!(
        waits["total_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 1000 * count),
        "each wait as long as asked (Retry-After: 1 at least): {push}"
    );
    assert_eq!(
        wait_lines(&stderr) as u64,
        count,
        "one log line per wait:\n{stderr}"
    );

    // Download on client b: 6 packets of 5 from the master.
    let (pull, stderr, took) = sync_ok(&b);
    eprintln!("download of 30 in packets of 5 at 60/min burst 2: {took:?}, {pull}");
    assert_eq!(pull["received_changes"], 30, "{pull}");
    assert!(pull["rounds"].as_u64().is_some_and(|r| r >= 6), "{pull}");
    let count = pull["retry_after_waits"]["count"].as_u64().unwrap_or(0);
    assert!(count >= 3, "the session was refused and waited: {pull}");
    assert_eq!(wait_lines(&stderr) as u64, count, "{stderr}");

    // Nothing left to move on either side.
    for node in [&a, &b] {
        let view = support::inspect(&node.db()).await.expect("client store");
        assert!(view.queued.is_empty(), "{} still queues changes", node.name);
        assert_eq!(view.entities.len(), 30, "{} holds every entity", node.name);
    }
    served_master.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_node_is_still_refused_and_a_wait_past_the_bound_ends_the_session_saying_why() {
    let root = tempfile::tempdir().expect("temp dir");
    let master = support::init_master(root.path());
    // 1 request a minute, 2 at once: every refusal asks for up to 60 s.
    support::set_master_limits(&master, 1, 2);
    let f = support::add_client(
        root.path(),
        &master,
        "flood",
        "retry_max_secs = 5\nrequest_timeout_secs = 10",
    );
    let served_master = Served::start(&master).await;

    // The flood: the node's own token, requests back to back.
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(&f.config).expect("client config"))
            .expect("client config is TOML");
    let token = config["master"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let client = hubsync::https_client::HttpsClient::from_ca_cert(
        &master.dir.join("tls/ca.pem"),
        Duration::from_secs(10),
        1 << 20,
    )
    .expect("https client");
    let url = format!(
        "https://{}{}",
        master.listen.expect("master listens"),
        hubsync::transport::EXCHANGE_PATH
    );
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("content-encoding", "gzip".to_string()),
    ];
    const FLOOD: usize = 40;
    let mut refused = 0;
    for i in 0..FLOOD {
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            client.post(&url, &headers, Bytes::from_static(b"not a packet")),
        )
        .await
        .expect("bounded")
        .expect("the master answers");
        if resp.status == 429 {
            refused += 1;
            let retry: u64 = resp
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("request {i}: a 429 without Retry-After"));
            assert!((1..=60).contains(&retry), "Retry-After: {retry}");
            let body = hubsync_core::protocol::gunzip(&resp.body, 1 << 20)
                .map(Bytes::from)
                .unwrap_or(resp.body.clone());
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("rate_limited"), "{text}");
        } else {
            assert!(i < 2, "request {i} passed the limit: {}", resp.status);
        }
    }
    assert_eq!(refused, FLOOD - 2, "everything past the burst is refused");

    // A session now is asked to wait ~60 s, more than its 5 s: it stops
    // at once, saying so, and exits non-zero.
    let started = Instant::now();
    let (status, stdout, stderr) = run_logged(&f.dir, &["sync", "--config", path_str(&f.config)]);
    let took = started.elapsed();
    assert!(!status.success(), "{stdout}\n{stderr}");
    for needle in [
        "429",
        "rate_limited",
        "Retry-After",
        "stops here",
        "[sync].retry_max_secs",
        "the changes stay queued",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?}:\n{stderr}");
    }
    assert!(
        took < Duration::from_secs(30),
        "not waited out: {took:?}\n{stderr}"
    );
    eprintln!("the refused session ended after {took:?}:\n{stderr}");

    // The flood and the refused session cost one security event.
    let out = support::run(
        root.path(),
        &[
            "security-events",
            "--config",
            path_str(&master.config),
            "--kind",
            "limit_exceeded",
            "--json",
        ],
    );
    let events: Value = serde_json::from_str(&out).expect("security events JSON");
    let events = events.as_array().expect("a list");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["node_code"], "FLOOD", "{events:#?}");
    assert!(
        events[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("rate_limited")),
        "{events:#?}"
    );
    served_master.terminate();
}
