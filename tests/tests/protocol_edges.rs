//! Protocol edge cases, each once found by the fault-injection suite and
//! kept here as a deterministic scenario (bare engines, real SQLite stores,
//! the real codec).

use hubsync_core::EngineOptions;
use hubsync_core::engine::NoProgress;
use std::sync::Mutex;

use hubsync_core::protocol::Envelope;
use hubsync_core::transport::{Transport, TransportError};
use hubsync_tests::EngineSet;
use serde_json::json;

/// Forwards to the master until the `fail_at`-th exchange (1-based),
/// which is refused before delivery; records every request.
struct Scripted<'a> {
    inner: &'a hubsync_tests::MemoryTransport,
    fail_at: usize,
    sent: Mutex<Vec<Envelope>>,
}

#[async_trait::async_trait]
impl Transport for Scripted<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let n = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(request.clone());
            sent.len()
        };
        if n == self.fail_at {
            return Err(TransportError::Unreachable {
                reason: "cut (test)".into(),
                transient: true,
            });
        }
        self.inner.exchange(request).await
    }
}

#[tokio::test]
async fn a_late_duplicate_request_does_not_widen_a_packet_the_client_already_holds() {
    let mut options = EngineOptions::default();
    options.limits.max_entities = 2;
    let set = EngineSet::new(1, options).await.unwrap();
    let (client, link) = &set.clients[0];
    for n in 0..3 {
        set.master
            .create("Brigade", None, json!({"name": format!("b{n}")}))
            .await
            .unwrap();
    }
    // The client receives master packets 1 (two revisions) and 2 (the
    // third), but the request acknowledging packet 2 never arrives.
    let script = Scripted {
        inner: link,
        fail_at: 3,
        sent: Mutex::new(Vec::new()),
    };
    assert!(client.sync_session(&script, &NoProgress).await.is_err());
    let first_request = script.sent.lock().unwrap()[0].clone();
    assert_eq!(first_request.header.ack_packet_no, 0);
    // A new master write, then a late copy of the first request arrives:
    // the master rebuilds packet 2, which must not grow to cover the write
    // (the client holds packet 2 already and will acknowledge it as is).
    let late = set
        .master
        .create("Brigade", None, json!({"name": "late"}))
        .await
        .unwrap();
    let stale = link.exchange(&first_request).await.unwrap();
    assert_eq!(stale.header.packet_no, 2);
    assert!(
        stale.body.entities.iter().all(|e| e.uuid != late.uuid),
        "packet 2 grew"
    );
    // The client acknowledges packet 2 and still receives the new write.
    client.sync_session(link, &NoProgress).await.unwrap();
    let got = client.get("Brigade", late.uuid).await.unwrap();
    assert_eq!(got.data, json!({"name": "late"}));
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}
