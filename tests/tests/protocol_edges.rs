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

/// The master's node row as the client holds it: its packet counters.
async fn master_row(client: &hubsync_core::Engine) -> hubsync_core::store::NodeRecord {
    client
        .store()
        .get_node_by_code("MASTER")
        .await
        .unwrap()
        .expect("the client knows its master")
}

/// Waits (at most 5 s) until the client has built packet `n` of changes:
/// the packet that follows the one travelling. False if it never does.
async fn built(client: &hubsync_core::Engine, n: i64) -> bool {
    for _ in 0..500 {
        if master_row(client).await.out_packet_no >= n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Before delivering packet `edit_in`, edits `edit` on the client (a
/// local write while its packet travels); on every packet of changes,
/// waits for the next to be built if more are queued, and records whether
/// it was; with `cut`, the `cut`-th exchange is lost (before delivery
/// unless `deliver`, then its answer).
struct Travelling<'a> {
    inner: &'a hubsync_tests::MemoryTransport,
    client: &'a hubsync_core::Engine,
    edit: Option<(i64, uuid::Uuid)>,
    cut: Option<(usize, bool)>,
    built_ahead: Mutex<Vec<(i64, bool)>>,
    sent: Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl Transport for Travelling<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let no = request.header.packet_no;
        let n = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(no);
            sent.len()
        };
        if let Some((edit_in, uuid)) = self.edit
            && edit_in == no
            && !request.body.entities.is_empty()
        {
            self.client
                .put("Brigade", uuid, json!({"name": "edited in flight"}))
                .await
                .unwrap();
        }
        if !request.body.entities.is_empty() {
            // Changes not in a packet yet (the queue also holds the packet
            // before this one until its answer is applied, which may be
            // while this one travels).
            let more = {
                let mut tx = self.client.store().begin().await.unwrap();
                !tx.unsent_changes(self.inner_master(), 1)
                    .await
                    .unwrap()
                    .is_empty()
            };
            if more {
                let ahead = built(self.client, no + 1).await;
                self.built_ahead.lock().unwrap().push((no, ahead));
            }
        }
        let lost = |deliver| self.cut == Some((n, deliver));
        if lost(false) {
            return Err(TransportError::Unreachable {
                reason: "cut before delivery (test)".into(),
                transient: true,
            });
        }
        let answer = self.inner.exchange(request).await;
        if lost(true) {
            return Err(TransportError::Unreachable {
                reason: "answer lost (test)".into(),
                transient: true,
            });
        }
        answer
    }
}

impl Travelling<'_> {
    fn new<'a>(
        inner: &'a hubsync_tests::MemoryTransport,
        client: &'a hubsync_core::Engine,
    ) -> Travelling<'a> {
        Travelling {
            inner,
            client,
            edit: None,
            cut: None,
            built_ahead: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        }
    }

    fn inner_master(&self) -> uuid::Uuid {
        self.inner.master.identity().node_id
    }
}

/// `count` Brigades written on client 0 of a set with packets of 10.
async fn queued_brigades(count: usize) -> (EngineSet, Vec<uuid::Uuid>) {
    let mut options = EngineOptions::default();
    options.limits.max_entities = 10;
    let set = EngineSet::new(1, options).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..count {
        let e = set.clients[0]
            .0
            .create("Brigade", None, json!({"name": format!("b{n:02}")}))
            .await
            .unwrap();
        ids.push(e.uuid);
    }
    (set, ids)
}

#[tokio::test]
async fn the_next_packet_is_built_while_one_travels() {
    let (set, _) = queued_brigades(35).await;
    let (client, link) = &set.clients[0];
    let t = Travelling::new(link, client);
    let s = client.sync_session(&t, &NoProgress).await.unwrap();
    assert_eq!(s.rounds, 4, "{s:?}");
    assert_eq!(*t.sent.lock().unwrap(), vec![1, 2, 3, 4]);
    // Packets 2, 3 and 4 were built while 1, 2 and 3 travelled.
    assert_eq!(
        *t.built_ahead.lock().unwrap(),
        vec![(1, true), (2, true), (3, true)]
    );
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}

#[tokio::test]
async fn an_entity_edited_while_its_packet_travels_waits_for_the_answer() {
    // The edit's queue row must not go in the packet built ahead: its base
    // revision is raised only by the answer to packet 1, and sent before
    // that it would meet our own first version as a conflict (server wins:
    // the edit would be lost).
    let (set, ids) = queued_brigades(15).await;
    let (client, link) = &set.clients[0];
    let mut t = Travelling::new(link, client);
    t.edit = Some((1, ids[0]));
    let s = client.sync_session(&t, &NoProgress).await.unwrap();
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    // Packet 2, built while packet 1 travelled, stops before the edit's
    // row (the last of the queue): the edit goes alone in packet 3.
    assert_eq!(*t.sent.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(s.sent_changes, 16, "{s:?}");
    let on_master = set.master.get("Brigade", ids[0]).await.unwrap();
    assert_eq!(on_master.data, json!({"name": "edited in flight"}));
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}

#[tokio::test]
async fn two_packets_in_flight_are_resent_in_order_after_an_interruption() {
    for deliver in [false, true] {
        let (set, _) = queued_brigades(35).await;
        let (client, link) = &set.clients[0];
        // Packet 2 is lost while packet 3 is already built.
        let mut t = Travelling::new(link, client);
        t.cut = Some((2, deliver));
        assert!(client.sync_session(&t, &NoProgress).await.is_err());
        let row = master_row(client).await;
        assert_eq!(
            (row.sent_packet_no, row.out_packet_no),
            (1, 3),
            "deliver {deliver}: packets 2 and 3 in flight"
        );
        let again = Travelling::new(link, client);
        let s = client.sync_session(&again, &NoProgress).await.unwrap();
        assert_eq!(
            *again.sent.lock().unwrap(),
            vec![2, 3, 4],
            "deliver {deliver}: the oldest first, then the next"
        );
        assert!(s.conflicts.is_empty(), "deliver {deliver}: {s:?}");
        assert_eq!(set.master.replica_state().await.unwrap().len(), 35);
        assert_eq!(
            client.replica_state().await.unwrap(),
            set.master.replica_state().await.unwrap()
        );
        set.close().await;
    }
}

/// Records the progress of every round.
#[derive(Default)]
struct Rounds(Mutex<Vec<hubsync_core::engine::SyncProgress>>);

impl hubsync_core::engine::Progress for Rounds {
    fn on_round(&self, progress: &hubsync_core::engine::SyncProgress) {
        self.0.lock().unwrap().push(progress.clone());
    }
}

#[tokio::test]
async fn a_queue_past_the_count_cap_reports_what_is_left_and_ends_when_empty() {
    // After each round the session counts its queue only up to 5,000 rows
    // (a full count of a big queue at every round made a push quadratic);
    // past that it reports what is left of the queue it started with.
    const N: usize = 6_000;
    let set = EngineSet::new(1, EngineOptions::default()).await.unwrap();
    let (client, link) = &set.clients[0];
    for chunk in 0..N / 1_000 {
        let ops = (0..1_000)
            .map(|i| hubsync_core::engine::BatchOp::Put {
                entity_type: "Brigade".into(),
                uuid: uuid::Uuid::now_v7(),
                data: json!({"name": format!("b{}", chunk * 1_000 + i)}),
            })
            .collect();
        client.batch(ops).await.unwrap();
    }
    let rounds = Rounds::default();
    let s = client.sync_session(link, &rounds).await.unwrap();
    assert_eq!(s.sent_changes, N as u64);
    let seen = rounds.0.into_inner().unwrap();
    let trace: Vec<_> = seen
        .iter()
        .map(|p| (p.sent_changes, p.pending_changes, p.received_changes))
        .collect();
    // The answer to the last full packet ends the session: the master's
    // page of the log ended at its head, so it says nothing more is coming.
    assert_eq!(
        seen.len(),
        N / 500,
        "packets of 500, no extra round: {trace:?}"
    );
    for p in &seen {
        assert_eq!(p.pending_at_start, N as i64);
        // Exact at every round: nothing was written during the session.
        assert_eq!(
            p.pending_changes,
            N as i64 - p.sent_changes as i64,
            "round {}: {p:?}",
            p.round
        );
    }
    assert_eq!(seen.last().map(|p| p.pending_changes), Some(0));
    assert_eq!(set.master.replica_state().await.unwrap().len(), N);
    set.close().await;
}

/// Holds packet 2 back until packet 3 has reached the master (at most
/// 5 s), so the master receives them out of order; records whether it
/// did.
struct HoldBack<'a> {
    inner: &'a hubsync_tests::MemoryTransport,
    three_arrived: tokio::sync::Notify,
    reordered: Mutex<bool>,
}

#[async_trait::async_trait]
impl Transport for HoldBack<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        match request.header.packet_no {
            2 if !request.body.entities.is_empty() => {
                let arrived = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    self.three_arrived.notified(),
                )
                .await
                .is_ok();
                // Packet 3 is at the master, waiting for its turn.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                *self.reordered.lock().unwrap() = arrived;
            }
            3 => self.three_arrived.notify_one(),
            _ => {}
        }
        self.inner.exchange(request).await
    }
}

#[tokio::test]
async fn a_push_has_two_requests_in_flight_and_the_master_takes_them_in_order() {
    // Once the master's answer shows it keeps the results of two packets
    // and brings nothing but results, the client sends the next packet
    // while the one before is still at the master. Packet 3 then reaches
    // the master before packet 2 here: it waits for 2's turn instead of
    // being refused as out of sequence.
    let (set, ids) = queued_brigades(45).await;
    let (client, link) = &set.clients[0];
    let t = HoldBack {
        inner: link,
        three_arrived: tokio::sync::Notify::new(),
        reordered: Mutex::new(false),
    };
    let s = client.sync_session(&t, &NoProgress).await.unwrap();
    assert!(
        *t.reordered.lock().unwrap(),
        "packet 3 went before packet 2 was answered"
    );
    assert_eq!(s.sent_changes, 45, "{s:?}");
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    let node = set
        .master
        .store()
        .get_node(client.identity().node_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.received_packet_no, 5, "every packet applied once");
    assert_eq!(master_row(client).await.sent_packet_no, 5);
    // Every copy is based on the master's revision: an edit is no conflict.
    client
        .put("Brigade", ids[25], json!({"name": "edited"}))
        .await
        .unwrap();
    let s = client.sync_session(link, &NoProgress).await.unwrap();
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}
