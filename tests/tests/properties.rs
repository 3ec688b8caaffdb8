//! Property tests of the sync engine over real SQLite stores and the real
//! packet codec (in-memory transport, no sockets).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use hubsync_core::EngineOptions;
use hubsync_core::entity::{Entity, Operation};
use hubsync_core::protocol::{
    self, Body, DecodeLimits, Envelope, Header, PROTOCOL_VERSION, WireChange,
};
use hubsync_core::transport::{Transport, TransportError};
use hubsync_tests::{EngineSet, block_on};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970..2100 with microsecond precision: what every backend stores.
    (0i64..4_102_444_800, 0u32..1_000_000)
        .prop_map(|(s, us)| Utc.timestamp_opt(s, us * 1000).single().unwrap_or_default())
}

fn entity() -> impl Strategy<Value = Entity> {
    (
        "[A-Z][a-zA-Z]{0,10}",
        any::<u128>(),
        timestamp(),
        any::<bool>(),
        prop::collection::vec(("[a-z_]{1,8}", json_value()), 0..5),
        proptest::option::of(1i64..i64::MAX),
        proptest::option::of(any::<u128>()),
    )
        .prop_map(|(ty, id, ts, del, kv, rev, origin)| Entity {
            entity_type: ty,
            uuid: Uuid::from_u128(id),
            updated_at: ts,
            is_deleted: del,
            data: Value::Object(kv.into_iter().collect()),
            rev,
            origin: origin.map(Uuid::from_u128),
        })
}

fn to_wire(e: &Entity) -> WireChange {
    WireChange {
        entity_type: e.entity_type.clone(),
        uuid: e.uuid,
        operation: Operation::Update,
        data: e.data.clone(),
        updated_at: e.updated_at,
        is_deleted: e.is_deleted,
        base_rev: e.rev,
        rev: e.rev,
        origin_node_id: e.origin,
    }
}

fn from_wire(w: &WireChange) -> Entity {
    Entity {
        entity_type: w.entity_type.clone(),
        uuid: w.uuid,
        updated_at: w.updated_at,
        is_deleted: w.is_deleted,
        data: w.data.clone(),
        rev: w.rev,
        origin: w.origin_node_id,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 16: For any entity, serializing then deserializing should produce an equivalent entity
    #[test]
    fn entities_round_trip_through_packets_and_storage(entities in prop::collection::vec(entity(), 1..8)) {
        // Through a gzip JSON packet.
        let env = Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: Uuid::from_u128(1),
                recipient_node_id: Uuid::from_u128(2),
                packet_no: 1,
                ack_packet_no: 0,
                schema_version: "1.0.0".into(),
                timestamp: entities[0].updated_at,
            },
            body: Body { entities: entities.iter().map(to_wire).collect(), results: vec![], more: false, remaining: None, evict: vec![], results_kept: 0, holding: None, sends_ahead: false },
        };
        let bytes = protocol::encode_envelope(&env).unwrap();
        let back = protocol::decode_envelope(&bytes, DecodeLimits::default()).unwrap();
        prop_assert_eq!(&back, &env);
        let decoded: Vec<Entity> = back.body.entities.iter().map(from_wire).collect();
        prop_assert_eq!(&decoded, &entities);

        // Through the SQLite store.
        let stored = block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = hubsync::storage::open_store(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap();
            let mut tx = store.begin().await.unwrap();
            for e in &entities {
                tx.put_entity(e).await.unwrap();
            }
            tx.commit().await.unwrap();
            let mut out = Vec::new();
            for e in &entities {
                out.push(store.get_entity(&e.entity_type, e.uuid).await.unwrap());
            }
            store.close().await;
            out
        });
        // The last write of a (type, uuid) wins in the store.
        let mut expected: BTreeMap<(String, Uuid), Entity> = BTreeMap::new();
        for e in &entities {
            expected.insert((e.entity_type.clone(), e.uuid), e.clone());
        }
        for (e, got) in entities.iter().zip(stored) {
            prop_assert_eq!(got.as_ref(), expected.get(&(e.entity_type.clone(), e.uuid)));
        }
    }
}

/// A local write on a client.
#[derive(Debug, Clone)]
enum Write {
    Put { slot: usize, name: String },
    Delete { slot: usize },
}

fn writes(slots: usize, max: usize) -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0..slots, "[A-Za-z ]{1,20}").prop_map(|(slot, name)| Write::Put { slot, name }),
            1 => (0..slots).prop_map(|slot| Write::Delete { slot }),
        ],
        1..max,
    )
}

fn slot_uuid(slot: usize) -> Uuid {
    Uuid::from_u128(0xB0B0_0000 + slot as u128)
}

/// Applies writes through the engine's local API; returns the expected op
/// queued per entity (coalesced) for the entities that exist afterwards.
async fn apply_writes(engine: &hubsync_core::Engine, ws: &[Write]) -> BTreeMap<Uuid, Operation> {
    let mut queued: BTreeMap<Uuid, Operation> = BTreeMap::new();
    for w in ws {
        match w {
            Write::Put { slot, name } => {
                let uuid = slot_uuid(*slot);
                let existed = engine.get("Brigade", uuid).await.is_ok();
                engine
                    .put("Brigade", uuid, json!({"name": name}))
                    .await
                    .unwrap();
                let op = if existed {
                    Operation::Update
                } else {
                    Operation::Insert
                };
                queued
                    .entry(uuid)
                    .and_modify(|q| *q = Operation::coalesce(*q, op))
                    .or_insert(op);
            }
            Write::Delete { slot } => {
                let uuid = slot_uuid(*slot);
                if engine.delete("Brigade", uuid).await.is_ok() {
                    queued
                        .entry(uuid)
                        .and_modify(|q| *q = Operation::coalesce(*q, Operation::Delete))
                        .or_insert(Operation::Delete);
                }
            }
        }
    }
    queued
}

fn options() -> EngineOptions {
    let mut o = EngineOptions::default();
    o.limits.max_entities = 4;
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 4: For any entity modification on any node, the change should be registered in the change tracking system
    #[test]
    fn every_local_write_registers_its_change(ws in writes(6, 20)) {
        block_on(async {
            let set = EngineSet::new(1, options()).await.unwrap();
            let client = &set.clients[0].0;
            let master_id = client.identity().master_id.unwrap();
            let expected = apply_writes(client, &ws).await;
            // One queued row per modified entity, in the same transaction as the write.
            assert_eq!(client.store().count_queued(master_id).await.unwrap(), expected.len() as i64);
            let mut tx = client.store().begin().await.unwrap();
            let rows = tx.unsent_changes(master_id, 1000).await.unwrap();
            drop(tx);
            let got: BTreeMap<Uuid, Operation> = rows.iter().map(|r| (r.entity_uuid, r.operation)).collect();
            assert_eq!(got, expected);
            // The master registers its own writes in its change log.
            let before = set.master.store().count_revisions_after(0, Uuid::nil()).await.unwrap();
            let m = apply_writes(&set.master, &ws).await;
            let after = set.master.store().count_revisions_after(0, Uuid::nil()).await.unwrap();
            assert_eq!(after - before, m.len() as i64);
            set.close().await;
        });
    }
}

/// Forwards to the master, but loses the answers the script says to lose
/// (the master has committed them), and records what travelled.
struct LossyTransport<'a> {
    inner: &'a hubsync_tests::MemoryTransport,
    lose: Mutex<Vec<bool>>,
    log: Mutex<Vec<(Envelope, Option<Envelope>)>>,
}

#[async_trait::async_trait]
impl Transport for LossyTransport<'_> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await?;
        let lose = self.lose.lock().unwrap().pop().unwrap_or(false);
        self.log
            .lock()
            .unwrap()
            .push((request.clone(), (!lose).then(|| answer.clone())));
        if lose {
            Err(TransportError::Unreachable {
                reason: "answer lost (test)".into(),
                transient: true,
            })
        } else {
            Ok(answer)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 6: For any sent packet, it should remain in the transmission queue until acknowledgment is received
    #[test]
    fn sent_changes_stay_queued_until_acknowledged(ws in writes(8, 24), losses in prop::collection::vec(any::<bool>(), 1..6)) {
        block_on(async {
            let set = EngineSet::new(1, options()).await.unwrap();
            let (client, mem) = &set.clients[0];
            let master_id = client.identity().master_id.unwrap();
            let expected = apply_writes(client, &ws).await;
            let queued = expected.len() as i64;
            for lose in &losses {
                let t = LossyTransport { inner: mem, lose: Mutex::new(vec![*lose]), log: Mutex::new(vec![]) };
                let result = client.sync_session(&t, &hubsync_core::engine::NoProgress).await;
                let first_lost = t.log.lock().unwrap().first().is_some_and(|(_, a)| a.is_none());
                if first_lost {
                    // The master applied the packet but no acknowledgement
                    // arrived: every change is still queued.
                    assert!(result.is_err());
                    assert_eq!(client.store().count_queued(master_id).await.unwrap(), queued);
                } else {
                    result.unwrap();
                    assert_eq!(client.store().count_queued(master_id).await.unwrap(), 0);
                    break;
                }
            }
            client.sync_session(mem, &hubsync_core::engine::NoProgress).await.unwrap();
            assert_eq!(client.store().count_queued(master_id).await.unwrap(), 0);
            for uuid in expected.keys() {
                let c = client.get("Brigade", *uuid).await.unwrap();
                let m = set.master.get("Brigade", *uuid).await.unwrap();
                assert_eq!((c.data, c.is_deleted, c.updated_at), (m.data, m.is_deleted, m.updated_at));
            }
            set.close().await;
        });
    }

    // Feature: sync-system, Property 24: For any acknowledged change, it should not be retransmitted
    #[test]
    fn acknowledged_changes_are_never_sent_again(
        rounds in prop::collection::vec((writes(6, 8), writes(6, 4), prop::collection::vec(any::<bool>(), 0..4)), 1..5)
    ) {
        block_on(async {
            let set = EngineSet::new(1, options()).await.unwrap();
            let (client, mem) = &set.clients[0];
            let t = LossyTransport { inner: mem, lose: Mutex::new(vec![]), log: Mutex::new(vec![]) };
            for (client_ws, master_ws, losses) in &rounds {
                apply_writes(client, client_ws).await;
                apply_writes(&set.master, master_ws).await;
                *t.lose.lock().unwrap() = losses.clone();
                for _ in 0..losses.len() + 1 {
                    if client.sync_session(&t, &hubsync_core::engine::NoProgress).await.is_ok() {
                        break;
                    }
                }
            }
            client.sync_session(mem, &hubsync_core::engine::NoProgress).await.unwrap();
            // Client → master: once the master acknowledged packet N (in an
            // answer that arrived), no later request carries a version
            // that packet N carried.
            let log = std::mem::take(&mut *t.log.lock().unwrap());
            let mut acked_up_to = 0i64;
            let mut by_packet: BTreeMap<i64, HashSet<(Uuid, String)>> = BTreeMap::new();
            // Master → client: once the client acknowledged master packet M,
            // no later answer carries a version that M carried.
            // A version the client received but did not apply, because it
            // had its own pending edit, is addressed to it again once the
            // conflict is decided: that is a new delivery, not a
            // retransmission, so entities that met a conflict are exempt.
            let mut client_acked = 0i64;
            let mut master_packets: BTreeMap<i64, HashSet<(Uuid, Option<i64>)>> = BTreeMap::new();
            let conflicted: HashSet<Uuid> = log.iter()
                .filter_map(|(_, a)| a.as_ref())
                .flat_map(|a| a.body.results.iter().filter(|r| r.outcome.is_conflict()).map(|r| r.uuid))
                .collect();
            for (req, answer) in log.iter() {
                let versions: HashSet<(Uuid, String)> = req.body.entities.iter()
                    .map(|c| (c.uuid, c.updated_at.to_rfc3339())).collect();
                for (n, sent) in by_packet.range(..=acked_up_to) {
                    assert!(sent.is_disjoint(&versions), "packet {} resent versions acknowledged with packet {n}", req.header.packet_no);
                }
                if !req.body.entities.is_empty() {
                    by_packet.entry(req.header.packet_no).or_default().extend(versions);
                }
                client_acked = client_acked.max(req.header.ack_packet_no);
                if let Some(a) = answer {
                    acked_up_to = acked_up_to.max(a.header.ack_packet_no);
                    let versions: HashSet<(Uuid, Option<i64>)> = a.body.entities.iter()
                        .filter(|c| !conflicted.contains(&c.uuid))
                        .map(|c| (c.uuid, c.rev)).collect();
                    for (m, sent) in master_packets.range(..=client_acked) {
                        assert!(sent.is_disjoint(&versions), "master packet {} resent versions acknowledged with packet {m}", a.header.packet_no);
                    }
                    if !a.body.entities.is_empty() {
                        master_packets.entry(a.header.packet_no).or_default().extend(versions);
                    }
                }
            }
            set.close().await;
        });
    }
}
