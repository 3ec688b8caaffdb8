//! Hostile and corrupt input at the master's exchange endpoint, over real
//! HTTPS (issue 6 item 4, issue 7): each is refused with the documented
//! status and code, and nothing of a refused packet is applied.

use std::time::Duration;

use bytes::Bytes;
use hubsync::https_client::{HttpResponse, HttpsClient};
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{self, Body, Envelope, Header, PROTOCOL_VERSION, WireChange};
use hubsync_tests::{Cluster, ClusterOptions, bounded};
use serde_json::{Value, json};
use uuid::Uuid;

struct Probe {
    client: HttpsClient,
    url: String,
    token: String,
    node: Uuid,
    master: Uuid,
}

impl Probe {
    fn new(c: &Cluster) -> Probe {
        let link = c.clients[0]
            .node
            .config
            .master
            .clone()
            .expect("client link");
        Probe {
            client: HttpsClient::new(
                hubsync::tls::client_config(&link.ca_cert).expect("ca"),
                Duration::from_secs(20),
                1 << 20,
            ),
            url: format!("{}/sync/v1/exchange", link.url),
            token: c.tokens[0].clone(),
            node: c.client(0).identity().node_id,
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
            body: Body {
                entities,
                results: vec![],
                more: false,
                remaining: None,
                evict: Vec::new(),
                results_kept: 0,
                holding: None,
                sends_ahead: false,
            },
        }
    }

    async fn post_raw(&self, headers: &[(&str, String)], body: Vec<u8>) -> HttpResponse {
        bounded(
            "exchange",
            self.client.post(&self.url, headers, Bytes::from(body)),
        )
        .await
        .expect("an HTTP answer")
    }

    async fn post_gzip(&self, body: Vec<u8>) -> HttpResponse {
        let headers = [
            ("authorization", format!("Bearer {}", self.token)),
            ("content-encoding", "gzip".to_string()),
            ("content-type", "application/json".to_string()),
        ];
        self.post_raw(&headers, body).await
    }

    async fn post_envelope(&self, env: &Envelope) -> HttpResponse {
        self.post_gzip(protocol::encode_envelope(env).expect("encode"))
            .await
    }
}

/// Asserts a refusal: status and `error.code`; returns the error object.
fn check(resp: &HttpResponse, status: u16, code: &str) -> Value {
    let raw = protocol::gunzip(&resp.body, 1 << 20).unwrap_or_else(|_| resp.body.to_vec());
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(resp.status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

fn brigade(name: Value) -> WireChange {
    WireChange {
        entity_type: "Brigade".into(),
        uuid: Uuid::now_v7(),
        operation: Operation::Insert,
        data: json!({"name": name}),
        updated_at: now_utc(),
        is_deleted: false,
        base_rev: None,
        rev: None,
        origin_node_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_hostile_packets_are_refused_and_nothing_is_applied() {
    let c = bounded("cluster", Cluster::start(2, ClusterOptions::default()))
        .await
        .unwrap();
    let p = Probe::new(&c);
    let good = protocol::encode_envelope(&p.envelope(1, 0, vec![brigade(json!("ok"))])).unwrap();

    // Authentication.
    let no_auth = p
        .post_raw(&[("content-encoding", "gzip".into())], good.clone())
        .await;
    check(&no_auth, 401, "unauthenticated");
    let wrong = [
        ("authorization", "Bearer hs1.nope".to_string()),
        ("content-encoding", "gzip".into()),
    ];
    check(
        &p.post_raw(&wrong, good.clone()).await,
        401,
        "unauthenticated",
    );

    // Encoding: not gzip, no Content-Encoding, truncated, bit-flipped, gzip of
    // something that is not JSON, JSON that is not an envelope.
    check(
        &p.post_gzip(b"{\"header\": {}}".to_vec()).await,
        400,
        "corrupt_packet",
    );
    let plain = [("authorization", format!("Bearer {}", p.token))];
    check(
        &p.post_raw(&plain, good.clone()).await,
        400,
        "corrupt_packet",
    );
    check(
        &p.post_gzip(good[..good.len() / 2].to_vec()).await,
        400,
        "corrupt_packet",
    );
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    check(&p.post_gzip(flipped).await, 400, "corrupt_packet");
    check(
        &p.post_gzip(protocol::gzip(b"not json at all").unwrap())
            .await,
        400,
        "corrupt_packet",
    );
    check(
        &p.post_gzip(protocol::gzip(br#"{"hello": "world"}"#).unwrap())
            .await,
        400,
        "corrupt_packet",
    );

    // A gzip bomb: tiny on the wire, refused at the decompression cap.
    let bomb = protocol::gzip(&vec![b' '; 80 << 20]).unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes on the wire", bomb.len());
    check(&p.post_gzip(bomb).await, 413, "too_large");

    // Identity: another node's id as sender, another master as recipient.
    let mut as_other = p.envelope(1, 0, vec![brigade(json!("x"))]);
    as_other.header.sender_node_id = c.client(1).identity().node_id;
    check(&p.post_envelope(&as_other).await, 403, "forbidden");
    let mut elsewhere = p.envelope(1, 0, vec![brigade(json!("x"))]);
    elsewhere.header.recipient_node_id = Uuid::now_v7();
    check(&p.post_envelope(&elsewhere).await, 403, "forbidden");

    // Impossible packet numbers.
    check(
        &p.post_envelope(&p.envelope(5, 0, vec![brigade(json!("x"))]))
            .await,
        409,
        "packet_out_of_sequence",
    );
    check(
        &p.post_envelope(&p.envelope(0, 3, vec![])).await,
        409,
        "packet_out_of_sequence",
    );
    check(
        &p.post_envelope(&p.envelope(-1, 0, vec![])).await,
        400,
        "corrupt_packet",
    );

    // Entities that fail their schema, or of an unknown type: 422 naming
    // the paths, and the valid entity beside them is not applied either.
    let mut unknown = brigade(json!("x"));
    unknown.entity_type = "Spaceship".into();
    let bad = p.envelope(
        1,
        0,
        vec![brigade(json!("fine")), brigade(json!(42)), unknown],
    );
    let err = check(&p.post_envelope(&bad).await, 422, "validation_failed");
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("/body/entities/1/data/name"), "{err}");
    assert!(detail.contains("/body/entities/2/type"), "{err}");

    // Schema set of another MAJOR.
    let mut major = p.envelope(1, 0, vec![brigade(json!("x"))]);
    major.header.schema_version = "2.0.0".into();
    let err = check(
        &p.post_envelope(&major).await,
        409,
        "schema_version_mismatch",
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2.0.0"),
        "{err}"
    );

    // Nothing of any refused packet was applied, and the node's packet
    // state is untouched: the client then syncs normally.
    assert!(c.master().replica_state().await.unwrap().is_empty());
    let row = c.master().store().get_node(p.node).await.unwrap().unwrap();
    assert_eq!((row.received_packet_no, row.out_packet_no), (0, 0));
    let ok = p
        .post_envelope(&p.envelope(1, 0, vec![brigade(json!("ok"))]))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(c.master().replica_state().await.unwrap().len(), 1);
    c.shutdown().await;
}
