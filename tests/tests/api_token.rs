//! The local API with a token (issue 7 item 7): every route but `/health`
//! needs `Authorization: Bearer <token>`; `hubsync sync`'s hand-off to a
//! running node carries it.

use std::time::Duration;

use hubsync::local_client::{post_sync, request, request_with_token};
use hubsync::serve::RunningNode;
use hubsync_tests::{Cluster, ClusterOptions, bounded};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_api_with_a_token_refuses_requests_without_it() {
    let mut c = bounded("cluster", Cluster::start(1, ClusterOptions::default()))
        .await
        .unwrap();
    let client = c.clients.remove(0);
    let mut config = client.node.config.clone();
    client.shutdown(Duration::from_secs(5)).await;
    config.api.token = Some("s3cret-local-api-token".into());
    let node = RunningNode::start(config).await.unwrap();
    let api = node.api_addr;
    let brigades = "/api/v1/entities/Brigade";

    let (status, body) = request(api, "POST", brigades, Some(&json!({"name": "N"})))
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let wrong = request_with_token(api, "GET", brigades, None, Some("guess"))
        .await
        .unwrap();
    assert_eq!(wrong.0, 401);
    assert!(
        node.node.engine.replica_state().await.unwrap().is_empty(),
        "nothing written"
    );

    let token = Some("s3cret-local-api-token");
    let (status, _) = request_with_token(api, "POST", brigades, Some(&json!({"name": "N"})), token)
        .await
        .unwrap();
    assert_eq!(status, 201);
    assert_eq!(
        request(api, "GET", "/health", None).await.unwrap().0,
        200,
        "health stays open"
    );
    let summary = post_sync(api, token).await.unwrap();
    assert_eq!(summary["sent_changes"], 1, "{summary}");
    assert!(
        post_sync(api, None).await.is_err(),
        "the hand-off without the token is refused"
    );

    c.clients.insert(0, node);
    c.shutdown().await;
}
