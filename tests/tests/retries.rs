//! The background sync loop never gives up silently (issue 6): while the
//! master is down it retries with a growing, jittered wait, records the last
//! error and the next attempt for `hubsync status` and `/api/v1/status`, and
//! syncs by itself once the master is back.

use std::time::{Duration, Instant};

use hubsync::serve::RunningNode;
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
    let health = node.recorded_health().await.unwrap();
    assert_eq!(health.consecutive_failures, 0);
    assert!(
        health.last_error.is_none() && health.last_success_at.is_some(),
        "{health:?}"
    );
    cluster.shutdown().await;
}
