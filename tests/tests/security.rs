//! Security of the sync endpoint over real HTTPS (issue 7): tokens (wrong,
//! revoked, rotated, none), a node sending as or acknowledging for another,
//! resource limits (gzip bomb with memory measured, oversized body, deep
//! JSON, too many entities, a slow client, the rate limit, the lockout),
//! mutual TLS, the security event log, and no plaintext token in the
//! database. Extra master hosts on the cluster's store carry the limits a
//! case needs, so that one case never throttles another.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hubsync::config::Config;
use hubsync::https_client::{HttpResponse, HttpsClient};
use hubsync::serve::RunningNode;
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{self, Body, Envelope, Header, PROTOCOL_VERSION, WireChange};
use hubsync_core::security::{SecurityEvent, SecurityEventKind, SecurityEventQuery};
use hubsync_tests::{Cluster, ClusterOptions, bounded};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Posts raw requests to one master host as one node.
struct Probe {
    client: HttpsClient,
    url: String,
    token: String,
    node: Uuid,
    master: Uuid,
}

impl Probe {
    fn new(c: &Cluster, i: usize, sync_addr: std::net::SocketAddr) -> Probe {
        Probe::with_tls(c, i, sync_addr, ca_config(c))
    }

    fn with_tls(
        c: &Cluster,
        i: usize,
        sync_addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Probe {
        Probe {
            client: HttpsClient::new(tls, Duration::from_secs(20), 1 << 20),
            url: format!("https://{sync_addr}/sync/v1/exchange"),
            token: c.tokens[i].clone(),
            node: c.client(i).identity().node_id,
            master: c.master().identity().node_id,
        }
    }

    fn envelope(&self, packet_no: i64, ack: i64, entities: Vec<WireChange>) -> Envelope {
        Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: self.node,
                recipient_node_id: self.master,
                packet_no,
                ack_packet_no: ack,
                schema_version: "1.0.0".into(),
                timestamp: now_utc(),
            },
            body: Body::default(),
        }
        .with(entities)
    }

    async fn post(&self, token: &str, body: Vec<u8>) -> HttpResponse {
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("content-encoding", "gzip".to_string()),
            ("content-type", "application/json".to_string()),
        ];
        bounded(
            "exchange",
            self.client.post(&self.url, &headers, Bytes::from(body)),
        )
        .await
        .expect("an HTTP answer")
    }

    async fn send(&self, env: &Envelope) -> HttpResponse {
        self.post(&self.token, protocol::encode_envelope(env).expect("encode"))
            .await
    }

    async fn poll_with(&self, token: &str) -> HttpResponse {
        let env = self.envelope(0, 0, vec![]);
        self.post(token, protocol::encode_envelope(&env).expect("encode"))
            .await
    }
}

trait WithEntities {
    fn with(self, entities: Vec<WireChange>) -> Self;
}

impl WithEntities for Envelope {
    fn with(mut self, entities: Vec<WireChange>) -> Self {
        self.body.entities = entities;
        self
    }
}

fn ca_config(c: &Cluster) -> Arc<rustls::ClientConfig> {
    hubsync::tls::client_config(&c.dir.path().join("master/tls/ca.pem")).expect("ca")
}

/// Asserts a refusal's status and `error.code`; returns the error object.
fn check(resp: &HttpResponse, status: u16, code: &str) -> Value {
    if status == 200 {
        assert_eq!(
            resp.status,
            200,
            "{:?}",
            protocol::gunzip(&resp.body, 1 << 20).map(|b| String::from_utf8_lossy(&b).into_owned())
        );
        return Value::Null;
    }
    let raw = protocol::gunzip(&resp.body, 1 << 20).unwrap_or_else(|_| resp.body.to_vec());
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(resp.status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"].clone()
}

fn brigade(name: &str) -> WireChange {
    WireChange {
        entity_type: "Brigade".into(),
        uuid: Uuid::now_v7(),
        operation: Operation::Insert,
        data: json!({ "name": name }),
        updated_at: now_utc(),
        is_deleted: false,
        base_rev: None,
        rev: None,
        origin_node_id: None,
    }
}

async fn events(c: &Cluster, kind: SecurityEventKind) -> Vec<SecurityEvent> {
    c.master()
        .store()
        .security_events(&SecurityEventQuery {
            kind: Some(kind),
            limit: 1000,
            ..SecurityEventQuery::default()
        })
        .await
        .expect("events")
}

/// Another master host on the cluster's store, with `edit` applied to its
/// configuration (limits, mutual TLS).
async fn host_with(c: &Cluster, edit: impl FnOnce(&mut Config)) -> RunningNode {
    let mut config = c.master.node.config.clone();
    if let Some(listen) = config.listen.as_mut() {
        listen.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    config.api.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    edit(&mut config);
    bounded("starting a master host", RunningNode::start(config))
        .await
        .expect("host starts")
}

/// A cluster whose master answers authentication failures at once and
/// never locks out (cases that send many bad tokens on purpose).
async fn cluster() -> Cluster {
    bounded(
        "cluster",
        Cluster::start(
            2,
            ClusterOptions {
                ..ClusterOptions::default()
            },
        ),
    )
    .await
    .expect("cluster")
}

fn no_slowdown(config: &mut Config) {
    config.limits.auth_failure_delay_ms = 0;
    config.limits.auth_failures_before_lockout = 1_000_000;
    config.limits.rate_limit_per_minute = 1_000_000;
    config.limits.rate_limit_burst = 1_000_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_revoked_rotated_and_missing_tokens_are_refused_logged_and_never_stored() {
    let c = cluster().await;
    let host = host_with(&c, no_slowdown).await;
    let addr = host.sync_addr.expect("sync addr");
    let p0 = Probe::new(&c, 0, addr);
    let p1 = Probe::new(&c, 1, addr);
    check(&p0.poll_with(&p0.token).await, 200, "");

    // Wrong: a well-formed token this master never issued.
    let forged = hubsync::auth::new_token(p0.master).expect("rng");
    check(&p0.poll_with(&forged).await, 401, "unauthenticated");
    // Missing.
    let resp = bounded(
        "no token",
        p0.client.post(
            &p0.url,
            &[("content-encoding", "gzip".into())],
            Bytes::from(protocol::encode_envelope(&p0.envelope(0, 0, vec![])).expect("encode")),
        ),
    )
    .await
    .expect("answer");
    check(&resp, 401, "unauthenticated");

    // Revoked: the next request is refused, and the event names the node.
    c.master()
        .update_node_access("DESKTOP-2", true, None)
        .await
        .expect("revoke");
    check(&p1.poll_with(&p1.token).await, 401, "unauthenticated");

    // Rotated: the old token stops, the new one works at once.
    let fresh = hubsync::auth::new_token(p0.master).expect("rng");
    c.master()
        .update_node_access("DESKTOP-1", false, Some(&hubsync::auth::token_hash(&fresh)))
        .await
        .expect("rotate");
    check(&p0.poll_with(&p0.token).await, 401, "unauthenticated");
    check(&p0.poll_with(&fresh).await, 200, "");

    let failed = events(&c, SecurityEventKind::AuthFailed).await;
    assert_eq!(failed.len(), 4, "{failed:#?}");
    assert!(failed.iter().any(|e| e.detail.contains("no bearer token")));
    assert!(
        failed
            .iter()
            .any(|e| e.node_code.as_deref() == Some("DESKTOP-2") && e.detail.contains("revoked")),
        "{failed:#?}"
    );
    assert!(failed.iter().all(|e| e.peer.is_some()));
    for secret in [&forged, &fresh, &c.tokens[0], &c.tokens[1]] {
        let secret_part = &secret[secret.len() - 64..];
        let hash = hubsync::auth::token_hash(secret);
        for e in &failed {
            assert!(!e.detail.contains(secret_part), "{e:?}");
            assert!(
                !e.detail.contains(&hash),
                "a whole hash is never logged: {e:?}"
            );
        }
    }

    // The database holds no token in clear (file and WAL, byte scan).
    let url = c.master.node.config.storage_url_resolved();
    let db = std::path::PathBuf::from(url.trim_start_matches("sqlite://"));
    let mut bytes = std::fs::read(&db).expect("db file");
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    for secret in [&fresh, &c.tokens[0], &c.tokens[1]] {
        let secret_part = &secret.as_bytes()[secret.len() - 64..];
        assert!(
            !bytes.windows(64).any(|w| w == secret_part),
            "a token's secret is in the database"
        );
    }
    host.shutdown(Duration::from_secs(5)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_send_as_another_nor_acknowledge_another_nodes_queue() {
    let c = cluster().await;
    let addr = c.master.sync_addr.expect("sync addr");
    let p0 = Probe::new(&c, 0, addr);
    let victim = c.client(1).identity().node_id;
    // Something queued for node 2 on the master, in flight to it.
    bounded("sync 2", c.sync(1)).await.expect("sync");
    let before = c
        .master()
        .store()
        .get_node(victim)
        .await
        .expect("read")
        .expect("node");

    // Sending as node 2 with node 1's token, with data and an ack.
    let mut env = p0.envelope(1, 1, vec![brigade("impostor")]);
    env.header.sender_node_id = victim;
    check(&p0.send(&env).await, 403, "forbidden");
    // Acknowledging node 2's packets under its own name changes nothing.
    let mut ack = p0.envelope(0, before.out_packet_no + 5, vec![]);
    ack.header.sender_node_id = victim;
    check(&p0.send(&ack).await, 403, "forbidden");
    // Addressed to another master.
    let mut elsewhere = p0.envelope(0, 0, vec![]);
    elsewhere.header.recipient_node_id = Uuid::now_v7();
    check(&p0.send(&elsewhere).await, 403, "forbidden");
    // Its own queue: an acknowledgement of packets never sent is refused.
    check(
        &p0.send(&p0.envelope(0, 999, vec![])).await,
        409,
        "packet_out_of_sequence",
    );

    let after = c
        .master()
        .store()
        .get_node(victim)
        .await
        .expect("read")
        .expect("node");
    assert_eq!(before, after, "node 2's packet state is untouched");
    let denied = events(&c, SecurityEventKind::AuthzDenied).await;
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|e| e.node_code.as_deref() == Some("DESKTOP-1")),
        "the event names the authenticated node: {denied:#?}"
    );
    assert!(denied.iter().any(|e| e.detail.contains("sender mismatch")));
    assert!(
        c.master()
            .store()
            .get_entity("Brigade", env.body.entities[0].uuid)
            .await
            .expect("read")
            .is_none(),
        "nothing of a refused packet is applied"
    );
    c.shutdown().await;
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A gzip member that expands to `size` bytes of spaces, built in 1 MiB
/// steps so that the test itself never holds the expansion.
fn gzip_bomb(size: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..size / chunk.len() {
        enc.write_all(&chunk).expect("gzip");
    }
    enc.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_bomb_oversize_deep_json_entities_slow_client_are_refused_with_events() {
    let c = cluster().await;
    let host = host_with(&c, |cfg| {
        cfg.limits.max_body_bytes = 256 << 10;
        cfg.limits.max_decompressed_bytes = 1 << 20;
        cfg.limits.max_json_depth = 32;
        cfg.limits.max_entities_per_packet = 5;
        cfg.limits.body_read_timeout_secs = 1;
    })
    .await;
    let addr = host.sync_addr.expect("sync addr");
    let p = Probe::new(&c, 0, addr);

    // A gzip bomb: 200 MiB of spaces in ~200 KiB. Refused with 413, and the
    // process's peak memory grows by far less than the expansion.
    let bomb = gzip_bomb(200 << 20);
    assert!(bomb.len() < 256 << 10, "{}", bomb.len());
    let peak_before = peak_rss();
    let err = check(&p.post(&p.token, bomb).await, 413, "too_large");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("decompresses"),
        "{err}"
    );
    if let (Some(before), Some(after)) = (peak_before, peak_rss()) {
        let grew = after.saturating_sub(before);
        assert!(
            grew < 64 << 20,
            "peak memory grew by {} MiB for a 200 MiB bomb",
            grew >> 20
        );
        eprintln!("gzip bomb: peak RSS grew by {} KiB", grew >> 10);
    }

    // Oversized as sent.
    let big: Vec<u8> = (0..(300u32 << 10))
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    check(&p.post(&p.token, big).await, 413, "too_large");

    // Deep JSON: refused before any parser recursion.
    let deep = format!(
        r#"{{"header": {}, "body": {{"entities": [{{"data": {}1{}}}]}}}}"#,
        serde_json::to_string(&p.envelope(0, 0, vec![]).header).expect("json"),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = check(
        &p.post(&p.token, protocol::gzip(deep.as_bytes()).expect("gzip"))
            .await,
        413,
        "too_large",
    );
    assert!(
        err["message"].as_str().unwrap_or("").contains("deeper"),
        "{err}"
    );

    // Too many entities.
    let many = p.envelope(1, 0, (0..6).map(|i| brigade(&format!("b{i}"))).collect());
    check(&p.send(&many).await, 413, "too_large");

    // A slow client: headers, then part of the body, then nothing.
    let slow = slow_client(&c, addr, &p.token).await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");

    let limits = events(&c, SecurityEventKind::LimitExceeded).await;
    assert_eq!(limits.len(), 5, "{limits:#?}");
    assert!(limits.iter().any(|e| e.detail.contains("timeout")));
    assert!(
        limits
            .iter()
            .all(|e| e.node_code.as_deref() == Some("DESKTOP-1"))
    );
    // Nothing of the refused packets was applied.
    assert!(
        c.master()
            .store()
            .get_entity("Brigade", many.body.entities[0].uuid)
            .await
            .expect("read")
            .is_none()
    );
    host.shutdown(Duration::from_secs(5)).await;
    c.shutdown().await;
}

/// Sends headers promising 1000 bytes of body, then 10 bytes, then waits;
/// returns what the server answered (bounded).
async fn slow_client(c: &Cluster, addr: std::net::SocketAddr, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(ca_config(c));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
            .map_err(std::io::Error::other)?
            .to_owned();
        let mut tls = connector.connect(name, tcp).await?;
        let head = format!(
            "POST /sync/v1/exchange HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-encoding: gzip\r\ncontent-length: 1000\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]).await?;
        tls.flush().await?;
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        std::io::Result::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    bounded("a slow client is cut", exchange)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after_and_lockouts_stop_guessing() {
    let c = cluster().await;
    let host = host_with(&c, |cfg| {
        cfg.limits.rate_limit_per_minute = 1;
        cfg.limits.rate_limit_burst = 2;
        cfg.limits.auth_failures_before_lockout = 3;
        cfg.limits.auth_failure_delay_ms = 1;
    })
    .await;
    let addr = host.sync_addr.expect("sync addr");
    let p0 = Probe::new(&c, 0, addr);
    let p1 = Probe::new(&c, 1, addr);

    check(&p0.poll_with(&p0.token).await, 200, "");
    check(&p0.poll_with(&p0.token).await, 200, "");
    let limited = p0.poll_with(&p0.token).await;
    check(&limited, 429, "rate_limited");
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another node has its own budget.
    check(&p1.poll_with(&p1.token).await, 200, "");

    // Three failures from this address: locked out, even with a good token.
    let forged = hubsync::auth::new_token(p0.master).expect("rng");
    for _ in 0..3 {
        check(&p1.poll_with(&forged).await, 401, "unauthenticated");
    }
    let locked = p1.poll_with(&p1.token).await;
    check(&locked, 429, "rate_limited");
    assert!(locked.headers.get("retry-after").is_some());

    let lockouts = events(&c, SecurityEventKind::Lockout).await;
    assert_eq!(lockouts.len(), 1, "announced once: {lockouts:#?}");
    assert!(lockouts[0].detail.contains("locked out"));
    let limits = events(&c, SecurityEventKind::LimitExceeded).await;
    assert!(
        limits
            .iter()
            .any(|e| e.detail.contains("rate_limited")
                && e.node_code.as_deref() == Some("DESKTOP-1")),
        "{limits:#?}"
    );
    host.shutdown(Duration::from_secs(5)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_certificate_naming_the_tokens_node() {
    let c = cluster().await;
    let tls_dir = c.dir.path().join("master/tls");
    let out = c.dir.path().join("client-certs");
    let issue = |i: usize, code: &str| {
        hubsync::tls::issue_client_cert(
            &tls_dir,
            "MASTER",
            c.client(i).identity().node_id,
            code,
            &out,
        )
        .expect("issue")
    };
    let cert0 = issue(0, "DESKTOP-1");
    let cert1 = issue(1, "DESKTOP-2");
    let host = host_with(&c, |cfg| {
        if let Some(l) = cfg.listen.as_mut() {
            l.require_client_cert = true;
        }
        no_slowdown(cfg);
    })
    .await;
    let addr = host.sync_addr.expect("sync addr");
    let ca = c.dir.path().join("master/tls/ca.pem");
    let with_cert = |files: &hubsync::tls::ClientCertFiles| {
        hubsync::tls::client_config_with_identity(&ca, Some((&files.cert, &files.key)))
            .expect("identity")
    };

    // Token alone: refused.
    let bare = Probe::new(&c, 0, addr);
    check(&bare.poll_with(&bare.token).await, 401, "unauthenticated");
    // Token of node 1 with node 2's certificate: refused.
    let crossed = Probe::with_tls(&c, 0, addr, with_cert(&cert1));
    check(
        &crossed.poll_with(&crossed.token).await,
        401,
        "unauthenticated",
    );
    // Both, naming the same node: served.
    let good = Probe::with_tls(&c, 0, addr, with_cert(&cert0));
    check(&good.poll_with(&good.token).await, 200, "");
    // A certificate from another CA never gets past the handshake.
    let other = tempfile::tempdir().expect("tempdir");
    hubsync::tls::generate_ca_and_server(other.path(), "MASTER", &[]).expect("other ca");
    let foreign = hubsync::tls::issue_client_cert(
        other.path(),
        "MASTER",
        c.client(0).identity().node_id,
        "DESKTOP-1",
        &other.path().join("c"),
    )
    .expect("issue");
    let impostor = HttpsClient::new(with_cert(&foreign), Duration::from_secs(20), 1 << 20);
    let result = bounded(
        "foreign certificate",
        impostor.post(
            &good.url,
            &[("authorization", format!("Bearer {}", good.token))],
            Bytes::new(),
        ),
    )
    .await;
    assert!(
        result.is_err(),
        "a foreign certificate must fail the handshake"
    );
    // The plain master (no mTLS) still serves the token alone.
    let plain = Probe::new(&c, 0, c.master.sync_addr.expect("addr"));
    check(&plain.poll_with(&plain.token).await, 200, "");

    let failed = events(&c, SecurityEventKind::AuthFailed).await;
    assert!(
        failed
            .iter()
            .any(|e| e.detail.contains("no client certificate")),
        "{failed:#?}"
    );
    assert!(
        failed.iter().any(|e| e.detail.contains("another node")),
        "{failed:#?}"
    );
    host.shutdown(Duration::from_secs(5)).await;
    c.shutdown().await;
}

/// Events recorded `days_ago` days back (the log as a long-running master
/// would have it).
async fn record_aged(c: &Cluster, days_ago: i64, detail: &str) {
    let mut event = SecurityEvent::new(SecurityEventKind::AuthFailed, detail);
    event.at -= chrono::Duration::days(days_ago);
    c.master()
        .store()
        .record_security_event(&event)
        .await
        .expect("record an event");
}

async fn details(c: &Cluster) -> Vec<String> {
    let mut all: Vec<String> = events(c, SecurityEventKind::AuthFailed)
        .await
        .into_iter()
        .map(|e| e.detail)
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_prunes_security_events_past_the_retention_and_keeps_the_rest() {
    // The cluster's own master keeps everything, so that only the hosts
    // started below prune.
    let c = bounded(
        "cluster",
        Cluster::start(
            1,
            ClusterOptions {
                master_toml: "\n[security]\nevents_retention_days = 0\n".into(),
                ..ClusterOptions::default()
            },
        ),
    )
    .await
    .expect("cluster");
    record_aged(&c, 400, "old-400").await;
    record_aged(&c, 91, "old-91").await;
    record_aged(&c, 89, "recent-89").await;
    record_aged(&c, 10, "recent-10").await;
    record_aged(&c, 0, "today").await;

    // Retention 0 keeps everything, however old.
    let forever = host_with(&c, |cfg| cfg.security.events_retention_days = 0).await;
    forever.shutdown(Duration::from_secs(5)).await;
    assert_eq!(details(&c).await.len(), 5);

    // The default (90 days) prunes at start-up what is older.
    assert_eq!(
        hubsync::config::SecurityConfig::default().events_retention_days,
        90
    );
    let host = host_with(&c, |cfg| cfg.security = Default::default()).await;
    let expected = ["recent-10", "recent-89", "today"];
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = details(&c).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, expected, "events older than 90 days are pruned");
    host.shutdown(Duration::from_secs(5)).await;

    // A shorter retention from the configuration file.
    let dir = c.dir.path().join("master");
    let text = std::fs::read_to_string(dir.join("hubsync.toml")).expect("read config");
    let file = dir.join("short-retention.toml");
    std::fs::write(
        &file,
        text.replace("events_retention_days = 0", "events_retention_days = 30"),
    )
    .expect("write config");
    let mut short = Config::load_with_env(&file, &[]).expect("config loads");
    assert_eq!(short.security.events_retention_days, 30);
    if let Some(listen) = short.listen.as_mut() {
        listen.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    short.api.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let host = bounded("a master host", RunningNode::start(short))
        .await
        .expect("host starts");
    let expected = ["recent-10", "today"];
    for _ in 0..100 {
        seen = details(&c).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, expected);
    host.shutdown(Duration::from_secs(5)).await;
    c.shutdown().await;
}

#[test]
fn the_local_api_on_a_public_address_without_a_token_is_refused_at_start() {
    // Only the configuration check: nothing listens on 0.0.0.0.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hubsync.toml");
    std::fs::write(
        &path,
        "mode = \"master\"\n[listen]\naddr = \"127.0.0.1:0\"\n[api]\naddr = \"0.0.0.0:8080\"\n",
    )
    .expect("write");
    let err = Config::load_with_env(&path, &[]).expect_err("refused");
    assert!(err.to_string().contains("api.addr"), "{err}");
    let ok = Config::load_with_env(
        &path,
        &[("HUBSYNC_API__TOKEN".into(), "a-long-random-secret".into())],
    );
    assert!(ok.is_ok(), "{ok:?}");
}

// ---- properties --------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn token_properties_over_https() {
    let rt = runtime();
    let (c, host) = rt.block_on(async {
        let c = cluster().await;
        let host = host_with(&c, no_slowdown).await;
        (c, host)
    });
    let addr = host.sync_addr.expect("sync addr");
    let p = Probe::new(&c, 0, addr);
    let master = p.master;
    let mut config = ProptestConfig::with_cases(100);
    config.failure_persistence = None;

    // Feature: sync-system, Property 26: Token-based authentication — any token other than the node's current one (random text, a forged token of the right shape, the real one altered in one character) is refused with 401; the real one is accepted.
    // Feature: sync-system, Property 28: Authentication failure handling — every refused attempt adds exactly one auth_failed security event, which contains no part of the token.
    proptest!(config.clone(), |(
        kind in 0u8..3,
        junk in "[ -~]{1,80}",
        at in 0usize..64,
        digit in "[0-9a-f]",
    )| {
        let token = match kind {
            0 => junk.clone(),
            1 => hubsync::auth::new_token(master).expect("rng"),
            _ => {
                let mut t = p.token.clone();
                let i = t.len() - 64 + at;
                if t[i..i + 1] == digit { return Ok(()); }
                t.replace_range(i..i + 1, &digit);
                t
            }
        };
        rt.block_on(async {
            let before = events(&c, SecurityEventKind::AuthFailed).await.len();
            let resp = p.poll_with(&token).await;
            prop_assert_eq!(resp.status, 401);
            let after = events(&c, SecurityEventKind::AuthFailed).await;
            prop_assert_eq!(after.len(), before + 1);
            let tail = &token[token.len().saturating_sub(16)..];
            prop_assert!(tail.len() < 8 || !after[0].detail.contains(tail));
            let ok = p.poll_with(&p.token).await;
            prop_assert_eq!(ok.status, 200);
            Ok(())
        })?;
    });

    // Feature: sync-system, Property 29: Per-session validation — the token is checked on every request: after any sequence of rotations and revocations, exactly the current token of a non-revoked node is accepted, from the very next request.
    // A rotation also reinstates a revoked node (`update_node_access`).
    let current = std::cell::RefCell::new(p.token.clone());
    let revoked = std::cell::Cell::new(false);
    proptest!(config, |(op in 0u8..3)| {
        rt.block_on(async {
            let master_engine = c.master();
            match op {
                0 => {
                    let fresh = hubsync::auth::new_token(master).expect("rng");
                    master_engine
                        .update_node_access("DESKTOP-1", false, Some(&hubsync::auth::token_hash(&fresh)))
                        .await
                        .expect("rotate");
                    let old = current.replace(fresh);
                    revoked.set(false);
                    prop_assert_eq!(p.poll_with(&old).await.status, 401);
                }
                1 => {
                    master_engine
                        .update_node_access("DESKTOP-1", true, None)
                        .await
                        .expect("revoke");
                    revoked.set(true);
                }
                _ => {}
            }
            let token = current.borrow().clone();
            let status = p.poll_with(&token).await.status;
            prop_assert_eq!(status, if revoked.get() { 401 } else { 200 });
            Ok(())
        })?;
    });

    rt.block_on(async {
        host.shutdown(Duration::from_secs(5)).await;
        c.shutdown().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    // Feature: sync-system, Property 27: HTTPS-only transmission — a client configuration whose master URL is not https:// (any host, port, path, scheme letter case) is refused before anything is sent.
    #[test]
    fn a_non_https_master_url_is_refused(
        scheme in prop::sample::select(vec!["http", "HTTP", "Http", "ws", "ftp", ""]),
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6})?",
        port in 1u16..,
        path in "(/[a-z]{0,8}){0,3}",
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hubsync.toml");
        let url = if scheme.is_empty() { format!("{host}:{port}{path}") } else { format!("{scheme}://{host}:{port}{path}") };
        std::fs::write(&file, format!(
            "mode = \"client\"\n[master]\nurl = \"{url}\"\nnode_id = \"{}\"\ntoken = \"hs1.x\"\n",
            Uuid::now_v7()
        )).expect("write");
        let err = Config::load_with_env(&file, &[]).expect_err("refused");
        prop_assert!(err.problems().iter().any(|p| p.key == "master.url"), "{}", err);
    }
}
