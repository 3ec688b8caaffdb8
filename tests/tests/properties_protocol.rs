//! Property tests of what travels between a client and the master (design
//! Properties 5, 20, 22 and 23): bare engines on SQLite files, and a
//! transport that keeps the exact bytes of every request and answer as the
//! real codec produced them, and loses the answers a case says to lose
//! (after the master committed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::sync::Mutex;

use hubsync_core::engine::NoProgress;
use hubsync_core::protocol::{self, DecodeLimits, Envelope, PROTOCOL_VERSION};
use hubsync_core::transport::{Transport, TransportError};
use hubsync_core::{Engine, EngineOptions, PacketLimits};
use hubsync_tests::{EngineSet, block_on};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// One exchange as it travelled.
struct Exchange {
    request: Envelope,
    request_wire: Vec<u8>,
    /// The answer's bytes and envelope, also when it was then lost.
    answer_wire: Vec<u8>,
    answer: Envelope,
    /// Whether the answer reached the client.
    delivered: bool,
    /// The client's queue length when the request left.
    queued_before: i64,
    /// Local writes made before this exchange (cases write between
    /// sessions): consecutive exchanges of one epoch saw no local write.
    epoch: usize,
}

/// The wire between one client and the master.
struct Wire<'a> {
    client: &'a Engine,
    master: &'a Engine,
    node: Uuid,
    lose: Mutex<VecDeque<bool>>,
    epoch: Mutex<usize>,
    log: Mutex<Vec<Exchange>>,
}

impl<'a> Wire<'a> {
    fn new(set: &'a EngineSet, i: usize) -> Wire<'a> {
        Wire {
            client: &set.clients[i].0,
            master: &set.master,
            node: set.clients[i].1.node_id,
            lose: Mutex::new(VecDeque::new()),
            epoch: Mutex::new(0),
            log: Mutex::new(Vec::new()),
        }
    }
}

fn broken(reason: String) -> TransportError {
    TransportError::Unreachable {
        reason,
        transient: false,
    }
}

#[async_trait::async_trait]
impl Transport for Wire<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let master_id = self.master.identity().node_id;
        let queued_before = self
            .client
            .store()
            .count_queued(master_id)
            .await
            .map_err(|e| broken(e.to_string()))?;
        let request_wire = protocol::encode_envelope(request).map_err(|e| broken(e.to_string()))?;
        let decoded = protocol::decode_envelope(&request_wire, DecodeLimits::default())
            .map_err(|e| broken(e.to_string()))?;
        let answer = self
            .master
            .handle_exchange(self.node, decoded.clone())
            .await
            .map_err(|e| broken(format!("the master refused: {e}")))?;
        let answer_wire = protocol::encode_envelope(&answer).map_err(|e| broken(e.to_string()))?;
        let received = protocol::decode_envelope(&answer_wire, DecodeLimits::default())
            .map_err(|e| broken(e.to_string()))?;
        let lose = self
            .lose
            .lock()
            .map(|mut l| l.pop_front().unwrap_or(false))
            .unwrap_or(false);
        let epoch = self.epoch.lock().map(|e| *e).unwrap_or(0);
        if let Ok(mut log) = self.log.lock() {
            log.push(Exchange {
                request: decoded,
                request_wire,
                answer_wire,
                answer: received.clone(),
                delivered: !lose,
                queued_before,
                epoch,
            });
        }
        if lose {
            Err(TransportError::Unreachable {
                reason: "connection reset after the master committed (test)".into(),
                transient: true,
            })
        } else {
            Ok(received)
        }
    }
}

/// A local write on a node: put or delete of one of a few entities.
#[derive(Debug, Clone)]
enum Write {
    Put { slot: u8, name: String },
    Delete { slot: u8 },
}

fn writes(max: usize) -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u8..10, "[a-z]{1,12}").prop_map(|(slot, name)| Write::Put { slot, name }),
            1 => (0u8..10).prop_map(|slot| Write::Delete { slot }),
        ],
        0..max,
    )
}

async fn apply(engine: &Engine, ws: &[Write], side: u128) {
    for w in ws {
        match w {
            Write::Put { slot, name } => {
                let uuid = Uuid::from_u128((side << 64) + u128::from(*slot));
                engine
                    .put("Brigade", uuid, json!({"name": name}))
                    .await
                    .expect("put");
            }
            Write::Delete { slot } => {
                let uuid = Uuid::from_u128((side << 64) + u128::from(*slot));
                // Deleting what does not exist here is refused: no write.
                let _ = engine.delete("Brigade", uuid).await;
            }
        }
    }
}

/// The bytes are a gzip stream whose content is the envelope's JSON, and
/// the codec refuses the same JSON sent uncompressed.
fn check_gzip(what: &str, wire: &[u8], env: &Envelope) -> Result<(), TestCaseError> {
    prop_assert!(
        wire.len() > 10 && wire[..3] == [0x1f, 0x8b, 0x08],
        "{}: not a gzip (deflate) stream: {:02x?}",
        what,
        &wire[..wire.len().min(3)]
    );
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(wire)
        .read_to_end(&mut json)
        .map_err(|e| TestCaseError::fail(format!("{what}: gunzip failed: {e}")))?;
    let value: Value = serde_json::from_slice(&json)
        .map_err(|e| TestCaseError::fail(format!("{what}: gzip content is not JSON: {e}")))?;
    prop_assert_eq!(
        value,
        serde_json::to_value(env).expect("envelope JSON"),
        "{}",
        what
    );
    prop_assert!(
        protocol::decode_envelope(&json, DecodeLimits::default()).is_err(),
        "{}: the codec accepted an uncompressed packet",
        what
    );
    Ok(())
}

fn options(max_entities: u32) -> EngineOptions {
    EngineOptions {
        limits: PacketLimits {
            max_entities,
            max_bytes: 4 << 20,
        },
        ..EngineOptions::default()
    }
}

/// One round of a case: writes on the client and on the master, then
/// sessions with these answers lost.
type Round = (Vec<Write>, Vec<Write>, Vec<bool>);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 5: For any synchronization transmission, the data should be packaged according to the packet format and require acknowledgment
    // Feature: sync-system, Property 20: For any synchronization message, schema version information should be included
    // Feature: sync-system, Property 22: For any transmitted data packet, it should be compressed using GZIP before transmission
    #[test]
    fn every_exchange_is_a_numbered_gzip_packet_with_the_schema_version_and_needs_an_ack(
        rounds in prop::collection::vec(
            (writes(12), writes(8), prop::collection::vec(any::<bool>(), 0..4)),
            1..4,
        ),
        max_entities in 1u32..5,
    ) {
        let rounds: Vec<Round> = rounds;
        block_on(async {
            let set = EngineSet::new(1, options(max_entities)).await.expect("engine set");
            let client = &set.clients[0].0;
            let master_id = set.master.identity().node_id;
            let wire = Wire::new(&set, 0);
            for (epoch, (client_ws, master_ws, losses)) in rounds.iter().enumerate() {
                apply(client, client_ws, 1).await;
                apply(&set.master, master_ws, 2).await;
                *wire.epoch.lock().expect("epoch") = epoch;
                *wire.lose.lock().expect("losses") = losses.iter().copied().collect();
                for _ in 0..losses.len() + 1 {
                    if client.sync_session(&wire, &NoProgress).await.is_ok() {
                        break;
                    }
                }
            }
            // Lossless until quiet.
            wire.lose.lock().expect("losses").clear();
            *wire.epoch.lock().expect("epoch") = rounds.len();
            client.sync_session(&wire, &NoProgress).await.expect("final session");
            let log = std::mem::take(&mut *wire.log.lock().expect("log"));
            let version = set.master.registry().version().to_string();

            // Property 22 and 20: every request and every answer, lost or
            // not, is gzip of the envelope's JSON and names the protocol and
            // schema set version.
            for (k, x) in log.iter().enumerate() {
                check_gzip(&format!("request {k}"), &x.request_wire, &x.request)?;
                check_gzip(&format!("answer {k}"), &x.answer_wire, &x.answer)?;
                for (what, env) in [("request", &x.request), ("answer", &x.answer)] {
                    prop_assert_eq!(env.header.protocol, PROTOCOL_VERSION, "{} {}", what, k);
                    prop_assert_eq!(&env.header.schema_version, &version, "{} {}", what, k);
                }
                prop_assert_eq!(x.request.header.sender_node_id, wire.node);
                prop_assert_eq!(x.request.header.recipient_node_id, master_id);
                prop_assert_eq!(x.answer.header.sender_node_id, master_id);
                prop_assert_eq!(x.answer.header.recipient_node_id, wire.node);
            }

            // Property 5, the packet format: changes travel in numbered
            // packets, 1, 2, 3… in order; a number is only ever reused to
            // send the same packet again, with the same entities, and
            // never more than the packet limit.
            let mut packets: BTreeMap<i64, BTreeSet<Uuid>> = BTreeMap::new();
            let mut last = 0i64;
            for x in log.iter().filter(|x| !x.request.body.entities.is_empty()) {
                let n = x.request.header.packet_no;
                let uuids: BTreeSet<Uuid> = x.request.body.entities.iter().map(|c| c.uuid).collect();
                prop_assert!(x.request.body.entities.len() <= max_entities as usize);
                if let Some(before) = packets.get(&n) {
                    prop_assert_eq!(n, last, "only the packet in flight is sent again");
                    prop_assert_eq!(before, &uuids, "packet {} sent again with other entities", n);
                } else {
                    prop_assert_eq!(n, last + 1, "packet numbers without gap");
                    packets.insert(n, uuids);
                    last = n;
                }
            }
            // The master's answers are numbered the same way (an answer
            // without changes may still open a number, e.g. the one closing
            // a `more` sequence): each answer carries a number already used
            // or the next one, never one below what the request
            // acknowledged. Below the highest so far only where the client
            // said it holds that one and the packet after it was built
            // ahead (docs/protocol.md, "Built ahead for a download"): an
            // answer with nothing after it carries the acknowledged number,
            // and one whose request did not hold it is sent again.
            let mut master_last = 0i64;
            for x in &log {
                let n = x.answer.header.packet_no;
                prop_assert!(n <= master_last + 1, "master packet {} after {}", n, master_last);
                prop_assert!(
                    n >= x.request.header.ack_packet_no,
                    "master packet {} answers a request that acknowledged {}",
                    n, x.request.header.ack_packet_no
                );
                master_last = master_last.max(n);
            }

            // Property 5, acknowledgment: the queue only shrinks after an
            // answer acknowledging the packet reached the client; a lost
            // answer leaves everything queued. An answer that brings the
            // client nothing but its results may be applied while the next
            // packet travels (docs/protocol.md, "Two requests in flight"):
            // a shrink between two requests is explained by an
            // acknowledging answer to the first of them, or to the one
            // before it if that answer brought no entities.
            let acks = |x: &Exchange| {
                x.delivered && x.answer.header.ack_packet_no >= x.request.header.packet_no
            };
            for (k, pair) in log.windows(2).enumerate() {
                let (a, b) = (&pair[0], &pair[1]);
                if a.epoch != b.epoch {
                    continue;
                }
                let waited = k
                    .checked_sub(1)
                    .map(|i| &log[i])
                    .filter(|w| w.epoch == a.epoch && acks(w) && w.answer.body.entities.is_empty());
                if b.queued_before < a.queued_before {
                    prop_assert!(
                        acks(a) || waited.is_some(),
                        "the queue shrank from {} to {} without an acknowledgement of packet {}",
                        a.queued_before, b.queued_before, a.request.header.packet_no
                    );
                }
                if !a.delivered && waited.is_none() {
                    prop_assert_eq!(b.queued_before, a.queued_before, "a lost answer dequeued changes");
                }
            }
            // And in the end every packet was acknowledged, every queue is
            // empty, and the client acknowledged every master packet.
            prop_assert_eq!(client.store().count_queued(master_id).await.expect("queue"), 0);
            let end = log.last().expect("at least the final session");
            prop_assert_eq!(end.answer.header.ack_packet_no, last);
            prop_assert_eq!(end.request.header.ack_packet_no, master_last);
            set.close().await;
            Ok(())
        })?;
    }

    // Feature: sync-system, Property 23: For any multiple changes, they should be transmitted in batches to optimize network utilization
    #[test]
    fn changes_travel_in_full_batches_both_ways(
        n in 1usize..40,
        m in 0usize..25,
        max_entities in 1u32..9,
    ) {
        block_on(async {
            let set = EngineSet::new(2, options(max_entities)).await.expect("engine set");
            let k = max_entities as usize;
            let (uploader, downloader) = (&set.clients[0].0, &set.clients[1].0);
            for i in 0..n {
                uploader.create("Brigade", None, json!({"name": format!("up {i}")})).await.expect("create");
            }
            for i in 0..m {
                set.master.create("Site", None, json!({"name": format!("site {i}")})).await.expect("create");
            }
            // Up: n queued changes leave in ⌈n/k⌉ packets, all full but
            // the last, one change never split or repeated.
            let up = Wire::new(&set, 0);
            uploader.sync_session(&up, &NoProgress).await.expect("upload");
            let sizes: Vec<usize> = up.log.lock().expect("log").iter()
                .map(|x| x.request.body.entities.len())
                .filter(|&s| s > 0)
                .collect();
            prop_assert_eq!(sizes.len(), n.div_ceil(k), "packets for {} changes by {}: {:?}", n, k, sizes);
            prop_assert_eq!(sizes.iter().sum::<usize>(), n);
            for s in &sizes[..sizes.len() - 1] {
                prop_assert_eq!(*s, k, "a packet left before it was full: {:?}", sizes);
            }
            // Down: a fresh client receives the n + m changes in batches
            // too, each within the limit and as few as the limit allows.
            let down = Wire::new(&set, 1);
            downloader.sync_session(&down, &NoProgress).await.expect("download");
            let sizes: Vec<usize> = down.log.lock().expect("log").iter()
                .map(|x| x.answer.body.entities.len())
                .filter(|&s| s > 0)
                .collect();
            prop_assert_eq!(sizes.len(), (n + m).div_ceil(k), "master packets for {} changes by {}: {:?}", n + m, k, sizes);
            prop_assert_eq!(sizes.iter().sum::<usize>(), n + m);
            prop_assert!(sizes.iter().all(|&s| s <= k));
            set.close().await;
            Ok(())
        })?;
    }
}
