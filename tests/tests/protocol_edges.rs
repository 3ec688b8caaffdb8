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

/// A master holding `count` brigades ("b0", "b1", …) and one client,
/// packets of at most `max_entities`.
async fn master_with_brigades(count: usize, max_entities: u32) -> EngineSet {
    let mut options = EngineOptions::default();
    options.limits.max_entities = max_entities;
    let set = EngineSet::new(1, options).await.unwrap();
    for n in 0..count {
        set.master
            .create("Brigade", None, json!({"name": format!("b{n}")}))
            .await
            .unwrap();
    }
    set
}

#[tokio::test]
async fn a_late_duplicate_request_does_not_widen_a_packet_the_client_already_holds() {
    let set = master_with_brigades(3, 2).await;
    let (client, link) = &set.clients[0];
    // The client receives master packets 1 (two revisions) and 2 (the
    // third), but the request acknowledging packet 2 never arrives.
    let script = Scripted {
        inner: link,
        fail_at: 3,
        sent: Mutex::new(Vec::new()),
    };
    assert!(client.sync_session(&script, &NoProgress).await.is_err());
    let (first_request, second_request) = {
        let sent = script.sent.lock().unwrap();
        (sent[0].clone(), sent[1].clone())
    };
    assert_eq!(first_request.header.ack_packet_no, 0);
    // The second request said it held packet 1 (docs/protocol.md, "Built
    // ahead for a download"), so packets 1 and 2 are both in flight.
    assert_eq!(second_request.body.holding, Some(1));
    // A new master write, then late copies of both requests arrive: the
    // master rebuilds packets 1 and 2, neither of which may grow to cover
    // the write (the client holds them already and will acknowledge them
    // as they are).
    let late = set
        .master
        .create("Brigade", None, json!({"name": "late"}))
        .await
        .unwrap();
    let stale = link.exchange(&first_request).await.unwrap();
    assert_eq!(stale.header.packet_no, 1);
    assert_eq!(stale.body.entities.len(), 2, "packet 1 changed");
    let stale = link.exchange(&second_request).await.unwrap();
    assert_eq!(stale.header.packet_no, 2);
    assert_eq!(stale.body.entities.len(), 1, "packet 2 changed");
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

/// A poll from `client` as it would send one now, acknowledging master
/// packet `ack` and saying it holds `holding` (docs/protocol.md, "Built
/// ahead for a download").
async fn poll(client: &hubsync_core::Engine, ack: i64, holding: Option<i64>) -> Envelope {
    let mut request = client.export_packet().await.unwrap();
    assert!(
        request.body.entities.is_empty(),
        "the client has nothing queued"
    );
    request.header.ack_packet_no = ack;
    request.body.holding = holding;
    request
}

/// The names of the brigades an answer carries, and its packet number.
fn carried(answer: &Envelope) -> (i64, Vec<String>) {
    let mut names: Vec<String> = answer
        .body
        .entities
        .iter()
        .map(|e| e.data["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    (answer.header.packet_no, names)
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_download_gets_the_next_packet_built_while_it_applies_one_and_every_packet_keeps_its_range()
 {
    let set = master_with_brigades(6, 2).await;
    let (client, link) = &set.clients[0];
    let node = client.identity().node_id;
    let row = || async { set.master.store().get_node(node).await.unwrap().unwrap() };

    // Packet 1, then, while the client applies it, packet 2 after it: the
    // master keeps the range of both.
    let one = link.exchange(&poll(client, 0, None).await).await.unwrap();
    assert_eq!(carried(&one), (1, names(&["b0", "b1"])));
    assert!(one.body.more && one.body.sends_ahead);
    let holding_one = poll(client, 0, Some(1)).await;
    let two = link.exchange(&holding_one).await.unwrap();
    assert_eq!(carried(&two), (2, names(&["b2", "b3"])));
    let r = row().await;
    assert_eq!((r.sent_packet_no, r.out_packet_no), (0, 2));
    let first_end = r.prev_out_up_to_rev.expect("the range of packet 1 is kept");
    assert!(first_end < r.out_up_to_rev);

    // The same request again gets packet 2 again; a request that does not
    // say it holds packet 1 (a late copy, or a client that failed to apply
    // it) gets packet 1 again. Neither moves anything.
    assert_eq!(
        carried(&link.exchange(&holding_one).await.unwrap()),
        carried(&two)
    );
    let again = link.exchange(&poll(client, 0, None).await).await.unwrap();
    assert_eq!(carried(&again), carried(&one));
    let counters = |r: &hubsync_core::store::NodeRecord| {
        (
            r.sent_packet_no,
            r.out_packet_no,
            r.acked_rev,
            r.out_up_to_rev,
            r.prev_out_up_to_rev,
        )
    };
    assert_eq!(counters(&row().await), counters(&r));

    // The client applies 1 and 2 (as files: the same code path). A new
    // master write, then the client acknowledges 1 while holding 2: packet
    // 3 follows 2, and packet 2 keeps its range.
    client.import_packet(&one, false).await.unwrap();
    client.import_packet(&two, false).await.unwrap();
    set.master
        .create("Brigade", None, json!({"name": "b6"}))
        .await
        .unwrap();
    let three = link
        .exchange(&poll(client, 1, Some(2)).await)
        .await
        .unwrap();
    assert_eq!(carried(&three), (3, names(&["b4", "b5"])));
    let r = row().await;
    assert_eq!((r.sent_packet_no, r.acked_rev), (1, first_end));
    assert_eq!(r.out_packet_no, 3);
    // Acknowledging 1 without holding 2 gets 2 again, exactly as built.
    let two_again = link.exchange(&poll(client, 1, None).await).await.unwrap();
    assert_eq!(carried(&two_again), carried(&two));
    // Acknowledging 3 closes both; the next packet is new.
    client.import_packet(&three, false).await.unwrap();
    let four = link.exchange(&poll(client, 3, None).await).await.unwrap();
    assert_eq!(carried(&four), (4, names(&["b6"])));
    assert!(!four.body.more);
    let r = row().await;
    assert_eq!(
        (r.sent_packet_no, r.out_packet_no, r.prev_out_up_to_rev),
        (3, 4, None)
    );
    client.import_packet(&four, false).await.unwrap();

    // A real session ends it: nothing is missing or twice.
    client.sync_session(link, &NoProgress).await.unwrap();
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    assert_eq!(row().await.sent_packet_no, 4);
    set.close().await;
}

/// Records every request and its answer.
struct Recording<'a> {
    inner: &'a hubsync_tests::MemoryTransport,
    seen: Mutex<Vec<(Envelope, Envelope)>>,
}

#[async_trait::async_trait]
impl Transport for Recording<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await?;
        self.seen
            .lock()
            .unwrap()
            .push((request.clone(), answer.clone()));
        Ok(answer)
    }
}

#[tokio::test]
async fn a_download_session_asks_for_the_next_packet_before_it_applies_one() {
    let set = master_with_brigades(11, 3).await;
    let (client, link) = &set.clients[0];
    let rec = Recording {
        inner: link,
        seen: Mutex::new(Vec::new()),
    };
    let s = client.sync_session(&rec, &NoProgress).await.unwrap();
    assert_eq!(s.received_changes, 11);
    let seen = rec.seen.lock().unwrap().clone();
    // Packets 1-4 (3, 3, 3, 2): the request after packet k's answer says
    // it holds k and gets k + 1, for k = 1, 2, 3; then one poll
    // acknowledges packet 4 and ends the session.
    let asked: Vec<(i64, Option<i64>, i64)> = seen
        .iter()
        .map(|(q, a)| (q.header.ack_packet_no, q.body.holding, a.header.packet_no))
        .collect();
    assert_eq!(
        asked,
        vec![
            (0, None, 1),
            (0, Some(1), 2),
            (1, Some(2), 3),
            (2, Some(3), 4),
            (4, None, 4)
        ]
    );
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}

#[tokio::test]
async fn an_edit_sent_in_a_resent_packet_and_decided_as_a_conflict_is_not_sent_again() {
    // Property 24. The client edits X (based on revision 1) while the
    // master has revision 2: a conflict. The packet carrying the edit is
    // lost before delivery, the client edits X again (a new queue row,
    // as the first is in flight), and the packet goes again rebuilt with
    // that second edit, which the master decides (server-wins: it loses).
    // The second edit's own queue row then has nothing left to send.
    let set = EngineSet::new(1, EngineOptions::default()).await.unwrap();
    let (client, link) = &set.clients[0];
    let x = set
        .master
        .create("Brigade", None, json!({"name": "x0"}))
        .await
        .unwrap();
    client.sync_session(link, &NoProgress).await.unwrap();
    set.master
        .put("Brigade", x.uuid, json!({"name": "master"}))
        .await
        .unwrap();
    client
        .put("Brigade", x.uuid, json!({"name": "x1"}))
        .await
        .unwrap();
    let lost = Scripted {
        inner: link,
        fail_at: 1,
        sent: Mutex::new(Vec::new()),
    };
    assert!(client.sync_session(&lost, &NoProgress).await.is_err());
    client
        .put("Brigade", x.uuid, json!({"name": "x2"}))
        .await
        .unwrap();

    let again = Scripted {
        inner: link,
        fail_at: 0,
        sent: Mutex::new(Vec::new()),
    };
    let s = client.sync_session(&again, &NoProgress).await.unwrap();
    let carried_x: Vec<(i64, serde_json::Value)> = again
        .sent
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.body
                .entities
                .iter()
                .filter(|e| e.uuid == x.uuid)
                .map(|e| (r.header.packet_no, e.data.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        carried_x,
        vec![(1, json!({"name": "x2"}))],
        "the second edit travelled once, in packet 1 sent again"
    );
    assert_eq!(
        s.conflicts.len(),
        1,
        "one conflict, decided once: {:?}",
        s.conflicts
    );
    assert_eq!(
        client
            .store()
            .count_queued(master_row(client).await.id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        client.get("Brigade", x.uuid).await.unwrap().data,
        json!({"name": "master"})
    );
    assert_eq!(
        client.replica_state().await.unwrap(),
        set.master.replica_state().await.unwrap()
    );
    set.close().await;
}

#[tokio::test]
async fn a_packet_sent_again_with_a_scope_change_waiting_does_not_say_the_next_is_built_ahead() {
    // A resent packet does not take a pending scope change, so the master
    // will not build the next one ahead: an answer that said it would
    // made the client poll holding that packet and get it once more.
    let set = master_with_brigades(6, 2).await;
    let (client, link) = &set.clients[0];
    let one = link.exchange(&poll(client, 0, None).await).await.unwrap();
    assert_eq!(carried(&one), (1, names(&["b0", "b1"])));
    assert!(one.body.sends_ahead, "unscoped, nothing waiting");

    set.master
        .set_node_scope("C0", Some(json!({"types": {"Brigade": "all"}})))
        .await
        .unwrap();
    let again = link.exchange(&poll(client, 0, None).await).await.unwrap();
    assert_eq!(carried(&again), carried(&one), "packet 1 sent again");
    assert!(
        !again.body.sends_ahead,
        "the scope change waits for the next new packet"
    );
    // Acknowledged, the next packet takes the scope: the node starts over.
    client.import_packet(&one, false).await.unwrap();
    let two = link.exchange(&poll(client, 1, None).await).await.unwrap();
    assert_eq!(two.header.packet_no, 2);
    assert!(!two.body.sends_ahead, "scoped");
    assert!(
        set.master.node_scope("C0").await.unwrap().pending.is_none(),
        "taken by packet 2"
    );
    set.close().await;
}
