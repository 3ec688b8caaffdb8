//! The background sync loop never gives up silently (issue 6): while the
//! master is down it retries with a growing, jittered wait, records the last
//! error and the next attempt for `hubsync status` and `/api/v1/status`, and
//! syncs by itself once the master is back. A master refusing with 429 or
//! 503 is retried, `Retry-After` honored; a packet refused as corrupt is
//! rebuilt and sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hubsync::serve::RunningNode;
use hubsync_tests::front_door::{Fault, FrontDoor};
use hubsync_tests::{Cluster, ClusterOptions, bounded};
use serde_json::json;

/// Polls `cond` every 50 ms for at most `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loop_retries_with_backoff_reports_the_error_and_recovers() {
    let cluster = bounded("cluster", Cluster::start(1, ClusterOptions::default()))
        .await
        .unwrap();
    let mut down = cluster.stop_master().await;
    // Restart the client with a short interval and fast retries.
    let client = down.clients.remove(0);
    let mut config = client.node.config.clone();
    client.shutdown(Duration::from_secs(5)).await;
    config.sync.interval_secs = 1;
    config.sync.retry_initial_ms = 100;
    config.sync.retry_max_secs = 1;
    let running = RunningNode::start(config).await.unwrap();
    let node = running.node.clone();
    let b = node
        .engine
        .create("Brigade", None, json!({"name": "offline"}))
        .await
        .unwrap();

    // While the master is down: failures pile up, each recorded with the
    // next attempt, and nothing is lost.
    eventually("two failed attempts", Duration::from_secs(20), || {
        let node = node.clone();
        async move {
            node.sync_state()
                .is_some_and(|s| s.consecutive_failures >= 2)
        }
    })
    .await;
    let health = node.recorded_health().await.unwrap();
    assert!(health.consecutive_failures >= 2, "{health:?}");
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("could not be reached")),
        "{health:?}"
    );
    assert!(health.next_attempt_at.is_some(), "{health:?}");
    let (status, body) =
        hubsync::local_client::request(running.api_addr, "GET", "/api/v1/status", None)
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(body["sync"]["last_error"].is_string(), "{body}");
    assert!(body["sync"]["next_attempt_at"].is_string(), "{body}");
    assert_eq!(body["pending_changes"], 1, "{body}");

    // The master comes back: the loop syncs by itself.
    down.clients.insert(0, running);
    let cluster = down.restart_master().await.unwrap();
    let master = cluster.master().clone();
    eventually(
        "the queued write reaches the master",
        Duration::from_secs(20),
        || {
            let master = master.clone();
            async move { master.get("Brigade", b.uuid).await.is_ok() }
        },
    )
    .await;
    let node = cluster.clients[0].node.clone();
    eventually("the error clears", Duration::from_secs(20), || {
        let node = node.clone();
        async move {
            node.sync_state()
                .is_some_and(|s| s.consecutive_failures == 0 && s.last_error.is_none())
        }
    })
    .await;
    // The store's record follows the in-memory state (the session publishes
    // its outcome, then records it), so it is waited for too.
    eventually("the recorded error clears", Duration::from_secs(20), || {
        let node = node.clone();
        async move {
            node.recorded_health()
                .await
                .is_ok_and(|h| h.consecutive_failures == 0)
        }
    })
    .await;
    let health = node.recorded_health().await.unwrap();
    assert_eq!(health.consecutive_failures, 0);
    assert!(
        health.last_error.is_none() && health.last_success_at.is_some(),
        "{health:?}"
    );
    cluster.shutdown().await;
}

/// Restarts client 0 of `cluster` pointed at `door`, with a 1 s interval
/// and fast retries capped at `retry_max_secs`.
async fn client_behind(
    cluster: &mut Cluster,
    door: &FrontDoor,
    retry_max_secs: u64,
) -> hubsync::serve::RunningNode {
    let client = cluster.clients.remove(0);
    let mut config = client.node.config.clone();
    client.shutdown(Duration::from_secs(5)).await;
    config.sync.interval_secs = 1;
    config.sync.retry_initial_ms = 50;
    config.sync.retry_max_secs = retry_max_secs;
    if let Some(link) = config.master.as_mut() {
        link.url = door.url();
    }
    RunningNode::start(config).await.unwrap()
}

/// A switch the test flips to change what the front door answers.
fn switchable(mode: Arc<AtomicU8>) -> hubsync_tests::front_door::Plan {
    Box::new(move |_| match mode.load(Ordering::SeqCst) {
        0 => Fault::Refuse {
            status: 429,
            retry_after: Some("3".into()),
        },
        1 => Fault::Refuse {
            status: 503,
            retry_after: None,
        },
        _ => Fault::Forward,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honored_and_shown_then_a_503_is_retried_and_the_client_recovers()
{
    let mut cluster = bounded("cluster", Cluster::start(1, ClusterOptions::default()))
        .await
        .unwrap();
    let mode = Arc::new(AtomicU8::new(0));
    let door = FrontDoor::for_cluster(&cluster, switchable(mode.clone()))
        .await
        .unwrap();
    let running = client_behind(&mut cluster, &door, 30).await;
    let node = running.node.clone();
    let b = node
        .engine
        .create("Brigade", None, json!({"name": "rate limited"}))
        .await
        .unwrap();

    // 429 with Retry-After: 3 → the next attempt is scheduled at least 3 s
    // after the failure although the backoff alone would say 50 ms.
    eventually(
        "a refusal with the next attempt scheduled",
        Duration::from_secs(20),
        || {
            let node = node.clone();
            async move {
                node.sync_state().is_some_and(|s| {
                    s.consecutive_failures >= 1
                        && s.next_attempt_at
                            .zip(s.last_error_at)
                            .is_some_and(|(next, err)| next > err)
                })
            }
        },
    )
    .await;
    let state = node.sync_state().unwrap();
    let error = state.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("429") && error.contains("rate_limited"),
        "{error}"
    );
    assert!(error.contains("Retry-After"), "{error}");
    assert_eq!(state.retry_after_secs, Some(3), "{state:?}");
    let scheduled = state.next_attempt_at.unwrap() - state.last_error_at.unwrap();
    assert!(
        scheduled >= chrono::Duration::milliseconds(2900),
        "the next attempt honors Retry-After: scheduled {scheduled:?} after the failure"
    );
    assert!(
        scheduled <= chrono::Duration::seconds(31),
        "and stays under retry_max_secs: {scheduled:?}"
    );
    let (status, body) =
        hubsync::local_client::request(running.api_addr, "GET", "/api/v1/status", None)
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        body["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("429")),
        "{body}"
    );
    assert!(body["sync"]["next_attempt_at"].is_string(), "{body}");
    assert_eq!(body["sync"]["retry_after_secs"], 3, "{body}");
    assert_eq!(body["pending_changes"], 1, "{body}");
    let health = node.recorded_health().await.unwrap();
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("429")),
        "hubsync status reads the same from the store: {health:?}"
    );
    assert!(health.next_attempt_at.is_some(), "{health:?}");

    // 503 without Retry-After: retried on the backoff.
    let failures_before = state.consecutive_failures;
    mode.store(1, Ordering::SeqCst);
    eventually("a 503 refusal", Duration::from_secs(30), || {
        let node = node.clone();
        async move {
            node.sync_state().is_some_and(|s| {
                s.consecutive_failures > failures_before
                    && s.last_error.as_deref().is_some_and(|e| e.contains("503"))
            })
        }
    })
    .await;
    let state = node.sync_state().unwrap();
    assert_eq!(state.retry_after_secs, None, "{state:?}");

    // The master is reachable again: the queued write arrives by itself.
    mode.store(2, Ordering::SeqCst);
    let master = cluster.master().clone();
    eventually(
        "the queued write reaches the master",
        Duration::from_secs(30),
        || {
            let master = master.clone();
            async move { master.get("Brigade", b.uuid).await.is_ok() }
        },
    )
    .await;
    eventually("the error clears", Duration::from_secs(20), || {
        let node = node.clone();
        async move {
            node.sync_state()
                .is_some_and(|s| s.consecutive_failures == 0 && s.last_error.is_none())
        }
    })
    .await;
    let traffic = door.traffic();
    assert!(traffic.refused >= 2, "{traffic:?}");
    running.shutdown(Duration::from_secs(5)).await;
    door.shutdown().await;
    cluster.shutdown().await;
}

/// A transport that corrupts the body of the first packet carrying changes
/// on its way (through the front door), and is the real one otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_refused_as_corrupt_is_rebuilt_from_current_state_and_sent_again() {
    let cluster = bounded("cluster", Cluster::start(1, ClusterOptions::default()))
        .await
        .unwrap();
    let door = FrontDoor::for_cluster(
        &cluster,
        Box::new(|n| {
            if n == 1 {
                Fault::CorruptBody
            } else {
                Fault::Forward
            }
        }),
    )
    .await
    .unwrap();
    let client = cluster.client(0);
    let link = cluster.clients[0].node.config.master.clone().unwrap();
    let transport = hubsync::transport::HttpsTransport::new(
        hubsync::tls::client_config(&link.ca_cert).unwrap(),
        &door.url(),
        cluster.tokens[0].clone(),
        Duration::from_secs(30),
    );
    let mut uuids = Vec::new();
    for i in 0..5 {
        let e = client
            .create("Brigade", None, json!({"name": format!("b{i}")}))
            .await
            .unwrap();
        uuids.push(e.uuid);
    }
    let err = bounded(
        "first session",
        client.sync_session(&transport, &hubsync_core::engine::NoProgress),
    )
    .await
    .expect_err("the corrupted packet is refused");
    let text = err.to_string();
    assert!(
        text.contains("corrupt_packet") && text.contains("400"),
        "{text}"
    );
    for u in &uuids {
        assert!(
            cluster.master().get("Brigade", *u).await.is_err(),
            "nothing of a refused packet is applied"
        );
    }
    assert_eq!(
        client
            .store()
            .count_queued(cluster.master().identity().node_id)
            .await
            .unwrap(),
        5,
        "the refused packet stays queued"
    );

    // Edited before the resend: the packet is rebuilt from current state.
    client
        .put("Brigade", uuids[0], json!({"name": "edited"}))
        .await
        .unwrap();
    let summary = bounded(
        "second session",
        client.sync_session(&transport, &hubsync_core::engine::NoProgress),
    )
    .await
    .expect("the resend is accepted");
    assert!(summary.sent_changes >= 5, "{summary:?}");
    for (i, u) in uuids.iter().enumerate() {
        let on_master = cluster.master().get("Brigade", *u).await.unwrap();
        let expected = if i == 0 {
            "edited".to_string()
        } else {
            format!("b{i}")
        };
        assert_eq!(on_master.data["name"], expected.as_str());
    }
    assert_eq!(
        client
            .store()
            .count_queued(cluster.master().identity().node_id)
            .await
            .unwrap(),
        0
    );
    let traffic = door.traffic();
    assert_eq!(traffic.bodies_corrupted, 1, "{traffic:?}");
    assert_eq!(
        traffic.packet_sends.get(&1),
        Some(&1),
        "packet 1 reached the master intact exactly once: {traffic:?}"
    );
    assert_eq!(traffic.master_statuses.get(&400), Some(&1), "{traffic:?}");
    door.shutdown().await;
    cluster.shutdown().await;
}

/// A TCP relay on loopback in front of `upstream`: while `hang` is set it
/// accepts connections and reads them but never answers (a master that
/// stopped responding mid-request, so the client's request timeout fires);
/// otherwise it relays bytes both ways. TLS passes through untouched.
async fn relay(
    upstream: std::net::SocketAddr,
    hang: Arc<std::sync::atomic::AtomicBool>,
    hung: Arc<std::sync::atomic::AtomicU64>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (hang, hung) = (hang.clone(), hung.clone());
            tokio::spawn(async move {
                if hang.load(Ordering::SeqCst) {
                    hung.fetch_add(1, Ordering::SeqCst);
                    let mut sink = [0u8; 4096];
                    let read = async {
                        use tokio::io::AsyncReadExt;
                        while matches!(inbound.read(&mut sink).await, Ok(n) if n > 0) {}
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
                } else if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        tokio::io::copy_bidirectional(&mut inbound, &mut out),
                    )
                    .await;
                }
            });
        }
    });
    (addr, task)
}

// Feature: sync-system, Property 7: For any packet transmission that times out, the system should retry transmission
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmission_that_times_out_is_retried_until_it_goes_through_once() {
    let mut cluster = bounded("cluster", Cluster::start(1, ClusterOptions::default()))
        .await
        .unwrap();
    let client = cluster.clients.remove(0);
    let mut config = client.node.config.clone();
    client.shutdown(Duration::from_secs(5)).await;
    let link = config.master.clone().unwrap();
    let upstream: std::net::SocketAddr = link
        .url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hung = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (addr, relay_task) = relay(upstream, hang.clone(), hung.clone()).await;
    config.sync.interval_secs = 1;
    config.sync.retry_initial_ms = 50;
    config.sync.retry_max_secs = 1;
    config.sync.request_timeout_secs = 1;
    if let Some(l) = config.master.as_mut() {
        l.url = format!("https://{addr}");
    }
    let running = RunningNode::start(config).await.unwrap();
    let node = running.node.clone();
    let b = node
        .engine
        .create("Brigade", None, json!({"name": "sent into the void"}))
        .await
        .unwrap();

    // The master never answers: each attempt times out, is recorded, and
    // the loop tries again.
    eventually("three timed-out attempts", Duration::from_secs(60), || {
        let node = node.clone();
        async move {
            node.sync_state()
                .is_some_and(|s| s.consecutive_failures >= 3)
        }
    })
    .await;
    let state = node.sync_state().unwrap();
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no complete response")),
        "the error says it timed out: {state:?}"
    );
    assert!(
        hung.load(Ordering::SeqCst) >= 3,
        "every attempt reached the relay"
    );
    let master = cluster.master().clone();
    let master_id = master.identity().node_id;
    assert!(master.get("Brigade", b.uuid).await.is_err());
    let peer = node
        .engine
        .store()
        .get_node(master_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.out_packet_no, 1, "the change went out as packet 1");
    assert_eq!(peer.sent_packet_no, 0, "and was never acknowledged");

    // The master answers again: the next retry delivers packet 1, once.
    hang.store(false, Ordering::SeqCst);
    eventually(
        "the retried packet reaches the master",
        Duration::from_secs(30),
        || {
            let master = master.clone();
            async move { master.get("Brigade", b.uuid).await.is_ok() }
        },
    )
    .await;
    eventually(
        "the client sees the acknowledgement",
        Duration::from_secs(30),
        || {
            let node = node.clone();
            async move {
                node.engine
                    .store()
                    .get_node(master_id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|p| p.sent_packet_no == 1)
            }
        },
    )
    .await;
    let peer = node
        .engine
        .store()
        .get_node(master_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.out_packet_no, 1, "retried under the same number");
    let row = master
        .store()
        .get_node(node.engine.identity().node_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.received_packet_no, 1, "applied once");
    assert_eq!(
        node.engine.store().count_queued(master_id).await.unwrap(),
        0
    );
    cluster.clients.insert(0, running);
    cluster.shutdown().await;
    relay_task.abort();
}
