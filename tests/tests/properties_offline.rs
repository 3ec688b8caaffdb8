//! Property tests of offline work and identity (design Properties 1, 2, 8
//! and 13): every supported document type written while the master is
//! unreachable, then reconnected; uuids as the one global identifier. Bare
//! engines on SQLite files, the real packet codec, in-memory transport.

use std::collections::{BTreeMap, BTreeSet};

use hubsync_core::engine::NoProgress;
use hubsync_core::protocol::Envelope;
use hubsync_core::transport::{Transport, TransportError};
use hubsync_core::{Engine, EngineError, EngineOptions, PacketLimits};
use hubsync_tests::{EngineSet, block_on};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// The master is unreachable: every exchange fails as a refused
/// connection does.
struct Offline;

#[async_trait::async_trait]
impl Transport for Offline {
    async fn exchange(&self, _request: &Envelope) -> Result<Envelope, TransportError> {
        Err(TransportError::Unreachable {
            reason: "connection refused (test: offline)".into(),
            transient: true,
        })
    }
}

/// The document types of the example schema set.
const TYPES: [&str; 4] = ["Brigade", "Site", "Employee", "DailyReport"];

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Update,
    Delete,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Create), 2 => Just(Op::Update), 1 => Just(Op::Delete)]
}

/// An entity of `ty` on `engine` that is not deleted, chosen by `seed`.
async fn live(engine: &Engine, known: &[(String, Uuid)], ty: &str, seed: u64) -> Option<Uuid> {
    let mut live = Vec::new();
    for (t, u) in known.iter().filter(|(t, _)| t == ty) {
        if engine.get(t, *u).await.is_ok_and(|e| !e.is_deleted) {
            live.push(*u);
        }
    }
    (!live.is_empty()).then(|| live[(seed % live.len() as u64) as usize])
}

/// Valid data for `ty`, referencing live entities of the node; `None` when
/// a required reference has nothing to point at yet.
async fn data(engine: &Engine, known: &[(String, Uuid)], ty: &str, seed: u64) -> Option<Value> {
    let n = seed % 10_000;
    Some(match ty {
        "Brigade" => {
            json!({"name": format!("brigade {n}"), "foreman": format!("f{n}"), "active": n.is_multiple_of(2)})
        }
        "Site" => {
            let parent = if n.is_multiple_of(3) {
                live(engine, known, "Site", seed).await
            } else {
                None
            };
            json!({"name": format!("site {n}"), "address": format!("{n} Main St"), "parent": parent})
        }
        "Employee" => {
            let brigade = live(engine, known, "Brigade", seed).await;
            json!({"full_name": format!("worker {n}"), "brigade": brigade, "position": "mason", "hourly_rate": (n % 80) as f64})
        }
        _ => {
            let brigade = live(engine, known, "Brigade", seed).await?;
            let site = live(engine, known, "Site", seed / 7).await?;
            let lines: Vec<Value> = match live(engine, known, "Employee", seed / 3).await {
                Some(e) => vec![json!({"employee": e, "hours": (n % 9) as f64, "task": "walls"})],
                None => vec![],
            };
            let status = ["draft", "submitted", "approved"][(n % 3) as usize];
            json!({"date": format!("2024-05-{:02}", 1 + n % 28), "brigade": brigade, "site": site, "status": status, "lines": lines})
        }
    })
}

/// Runs `ops` on `engine` (offline); returns every entity written. After
/// each operation: a create always succeeds, an update or delete either
/// succeeds or is refused for a reference reason with nothing changed, and
/// every entity written so far is queued exactly once.
async fn offline_work(
    engine: &Engine,
    master_id: Uuid,
    ops: &[(usize, Op, u64)],
) -> Result<Vec<(String, Uuid)>, TestCaseError> {
    let mut known: Vec<(String, Uuid)> = Vec::new();
    for (k, &(t, op, seed)) in ops.iter().enumerate() {
        let ty = TYPES[t % TYPES.len()];
        let target = live(engine, &known, ty, seed)
            .await
            .or_else(|| known.iter().find(|(x, _)| x == ty).map(|(_, u)| *u));
        let op = if target.is_none() { Op::Create } else { op };
        let before = engine.store().count_queued(master_id).await.expect("queue");
        let result: Result<Uuid, EngineError> = match (op, target) {
            (Op::Create, _) | (_, None) => {
                // A report needs a brigade and a site: write them first.
                if ty == "DailyReport" {
                    for dep in ["Brigade", "Site"] {
                        if live(engine, &known, dep, seed).await.is_none() {
                            let d = data(engine, &known, dep, seed)
                                .await
                                .expect("no reference needed");
                            let e = engine.create(dep, None, d).await.map_err(|e| {
                                TestCaseError::fail(format!("offline create of {dep}: {e}"))
                            })?;
                            known.push((dep.to_string(), e.uuid));
                        }
                    }
                }
                let d = data(engine, &known, ty, seed)
                    .await
                    .expect("references exist");
                let e = engine.create(ty, None, d).await.map_err(|e| {
                    TestCaseError::fail(format!("op {k}: offline create of {ty}: {e}"))
                })?;
                known.push((ty.to_string(), e.uuid));
                Ok(e.uuid)
            }
            (Op::Update, Some(u)) => match data(engine, &known, ty, seed.wrapping_add(1)).await {
                Some(d) => engine.put(ty, u, d).await.map(|_| u),
                None => continue,
            },
            (Op::Delete, Some(u)) => engine.delete(ty, u).await.map(|_| u),
        };
        let after = engine.store().count_queued(master_id).await.expect("queue");
        match result {
            Ok(_) => {}
            // A cycle of parents, or a delete of something still
            // referenced under `restrict`: refused, nothing written.
            Err(EngineError::Invalid(_) | EngineError::StillReferenced(_)) => {
                prop_assert_eq!(after, before, "op {}: a refused write changed the queue", k);
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "op {k}: offline {op:?} of {ty}: {e}"
                )));
            }
        }
        // Every entity was created offline: each is queued exactly once,
        // whatever happened to it since.
        prop_assert_eq!(
            after,
            known.len() as i64,
            "op {}: one queue entry per entity written",
            k
        );
    }
    let mut tx = engine.store().begin().await.expect("tx");
    let rows = tx
        .unsent_changes(master_id, 100_000)
        .await
        .expect("queue rows");
    drop(tx);
    let queued: BTreeSet<Uuid> = rows.iter().map(|r| r.entity_uuid).collect();
    let written: BTreeSet<Uuid> = known.iter().map(|(_, u)| *u).collect();
    // Rows already assigned to the packet in flight are not "unsent": the
    // count above covers them; here, nothing unknown is queued.
    prop_assert!(queued.is_subset(&written));
    Ok(known)
}

fn ops() -> impl Strategy<Value = Vec<(usize, Op, u64)>> {
    prop::collection::vec((0usize..4, op(), any::<u64>()), 1..14)
}

fn options() -> EngineOptions {
    EngineOptions {
        limits: PacketLimits {
            max_entities: 4,
            max_bytes: 4 << 20,
        },
        ..EngineOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 1: For any supported document type and any valid operation, performing the operation while offline should succeed and queue the change for later synchronization
    #[test]
    fn offline_writes_of_every_type_succeed_and_are_queued(ops in ops(), attempts in 0usize..3) {
        block_on(async {
            let set = EngineSet::new(1, options()).await.expect("engine set");
            let client = &set.clients[0].0;
            let master_id = set.master.identity().node_id;
            // Sync attempts while offline fail, and lose nothing.
            for _ in 0..attempts {
                prop_assert!(client.sync_session(&Offline, &NoProgress).await.is_err());
            }
            let known = offline_work(client, master_id, &ops).await?;
            for _ in 0..attempts {
                let err = client.sync_session(&Offline, &NoProgress).await;
                let offline = matches!(err, Err(EngineError::Transport(TransportError::Unreachable { .. })));
                prop_assert!(offline, "an offline sync fails as unreachable");
                prop_assert_eq!(client.store().count_queued(master_id).await.expect("queue"), known.len() as i64);
            }
            // Nothing reached the master; every local read works.
            for (ty, u) in &known {
                prop_assert!(client.get(ty, *u).await.is_ok());
                prop_assert!(set.master.get(ty, *u).await.is_err());
            }
            set.close().await;
            Ok(())
        })?;
    }

    // Feature: sync-system, Property 2: For any set of offline changes, reconnecting to the server should result in all changes being transmitted and acknowledged
    // Feature: sync-system, Property 8: For any registered change, it should be delivered at least once to the target node
    #[test]
    fn reconnecting_transmits_every_offline_change_and_delivers_it_everywhere(
        work in prop::collection::vec(ops(), 2),
        attempts in 0usize..3,
    ) {
        block_on(async {
            let set = EngineSet::new(2, options()).await.expect("engine set");
            let master_id = set.master.identity().node_id;
            let mut written = Vec::new();
            for (i, ops) in work.iter().enumerate() {
                let client = &set.clients[i].0;
                for _ in 0..attempts {
                    prop_assert!(client.sync_session(&Offline, &NoProgress).await.is_err());
                }
                written.push(offline_work(client, master_id, ops).await?);
            }
            // Reconnect: one session each sends everything and gets it
            // acknowledged; a second round brings each the other's work.
            for round in 0..2 {
                for (i, ws) in written.iter().enumerate() {
                    let s = set.sync(i).await.map_err(|e| TestCaseError::fail(format!("round {round}, client {i}: {e}")))?;
                    if round == 0 {
                        prop_assert_eq!(s.sent_changes, ws.len() as u64, "client {} sent each change once", i);
                    }
                }
            }
            let master_state = set.master.replica_state().await.expect("master state");
            for i in 0..2 {
                let client = &set.clients[i].0;
                prop_assert_eq!(client.store().count_queued(master_id).await.expect("queue"), 0);
                let peer = client.store().get_node(master_id).await.expect("row").expect("master row");
                prop_assert_eq!(peer.sent_packet_no, peer.out_packet_no, "client {}: a packet was never acknowledged", i);
                let row = set.master.store().get_node(set.clients[i].1.node_id).await.expect("row").expect("node row");
                prop_assert_eq!(row.received_packet_no, peer.out_packet_no, "client {}: the master applied every packet", i);
                // Delivered to the master and, through it, to the other
                // client: the same version everywhere.
                for (ty, u) in written.iter().flatten() {
                    let here = client.get(ty, *u).await.expect("on every client");
                    let there = set.master.get(ty, *u).await.expect("on the master");
                    prop_assert_eq!((&here.data, here.is_deleted), (&there.data, there.is_deleted));
                }
                prop_assert_eq!(&client.replica_state().await.expect("client state"), &master_state);
            }
            // The writer's own last version is what everyone holds (no
            // conflicts here: the clients wrote disjoint entities).
            for (i, ws) in written.iter().enumerate() {
                for (ty, u) in ws {
                    let mine = set.clients[i].0.get(ty, *u).await.expect("mine");
                    let other = set.clients[1 - i].0.get(ty, *u).await.expect("theirs");
                    prop_assert_eq!(mine.data, other.data);
                }
            }
            set.close().await;
            Ok(())
        })?;
    }

    // Feature: sync-system, Property 13: For any synchronizable entity, it should have a valid UUID as its global identifier
    #[test]
    fn every_entity_is_known_everywhere_by_one_valid_uuid(
        creates in prop::collection::vec((0usize..3, any::<bool>(), any::<u128>()), 1..12),
    ) {
        block_on(async {
            let set = EngineSet::new(2, options()).await.expect("engine set");
            let nodes: Vec<&Engine> = vec![&set.master, &set.clients[0].0, &set.clients[1].0];
            let mut made: BTreeMap<Uuid, (usize, Value)> = BTreeMap::new();
            for (k, &(node, given, bits)) in creates.iter().enumerate() {
                let data = json!({"name": format!("brigade {k}")});
                // A uuid the caller chose (any valid one, version 4 here),
                // or one the node assigns.
                let chosen = given.then(|| uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid());
                let e = nodes[node].create("Brigade", chosen, data.clone()).await.expect("create");
                if let Some(c) = chosen {
                    prop_assert_eq!(e.uuid, c, "the chosen uuid is the identifier");
                } else {
                    prop_assert_eq!(e.uuid.get_version_num(), 7, "assigned uuids are version 7: {}", e.uuid);
                }
                prop_assert!(!e.uuid.is_nil());
                prop_assert_eq!(e.uuid.get_variant(), uuid::Variant::RFC4122);
                prop_assert!(made.insert(e.uuid, (node, data)).is_none(), "uuid {} given twice", e.uuid);
            }
            for _ in 0..2 {
                for i in 0..2 {
                    set.sync(i).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            // Every node holds every entity under the same uuid, with the
            // data its creator wrote.
            for (u, (_, data)) in &made {
                for n in &nodes {
                    let e = n.get("Brigade", *u).await.map_err(|e| TestCaseError::fail(format!("{u}: {e}")))?;
                    prop_assert_eq!(e.uuid, *u);
                    prop_assert_eq!(&e.data, data);
                }
            }
            // And nothing else: the uuids are the whole identity.
            for n in &nodes {
                let state = n.replica_state().await.expect("state");
                prop_assert_eq!(state.len(), made.len());
            }
            set.close().await;
            Ok(())
        })?;
    }
}
