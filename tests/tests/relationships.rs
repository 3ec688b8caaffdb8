//! Relationships across sync (issue #5, contract §7.8, design Properties 3
//! and 15): a whole graph built offline arrives complete and resolvable;
//! a change that arrives before what it references is held, then applied;
//! delete policies (restrict, cascade, detach) hold locally and by sync; a
//! move that would make a hierarchy cyclic is refused by the master.

use std::collections::HashSet;

use hubsync_core::engine::SyncSummary;
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{Body, Envelope, Header, Outcome, PROTOCOL_VERSION, WireChange};
use hubsync_core::{Engine, EngineError, EngineOptions, PacketLimits};
use hubsync_tests::{EngineSet, block_on};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

async fn create(e: &Engine, ty: &str, data: Value) -> Uuid {
    e.create(ty, None, data).await.unwrap().uuid
}

async fn sync(set: &EngineSet, i: usize) -> SyncSummary {
    set.sync(i).await.unwrap()
}

fn small_packets(max_entities: u32) -> EngineOptions {
    EngineOptions {
        limits: PacketLimits {
            max_entities,
            ..PacketLimits::default()
        },
        ..EngineOptions::default()
    }
}

/// Every reference of every live entity on `e` names an entity `e` holds.
async fn assert_resolvable(e: &Engine) {
    let dump = e.store().dump_entities().await.unwrap();
    let present: HashSet<(String, Uuid)> = dump
        .iter()
        .map(|x| (x.entity_type.clone(), x.uuid))
        .collect();
    let mut checked = 0;
    for x in dump.iter().filter(|x| !x.is_deleted) {
        let ty = e.registry().get(&x.entity_type).unwrap();
        for (r, target) in ty.reference_values(&x.data) {
            assert!(
                present.contains(&(r.target.clone(), target)),
                "{} {} refers to {} {target} at {}, which this node does not hold",
                x.entity_type,
                x.uuid,
                r.target,
                r.pointer
            );
            checked += 1;
        }
    }
    assert!(checked > 0 || dump.is_empty());
}

fn report(brigade: Uuid, site: Uuid, employees: &[Uuid], i: usize) -> Value {
    json!({
        "date": "2026-11-24",
        "brigade": brigade,
        "site": site,
        "status": "draft",
        "notes": format!("report {i}"),
        "lines": employees.iter().enumerate().map(|(k, e)| json!({
            "employee": e, "hours": 1 + (k % 8), "task": format!("task {k}")
        })).collect::<Vec<_>>()
    })
}

// Feature: sync-system, Property 3: For any document with relationships,
// synchronization should preserve all referential integrity constraints
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_built_offline_with_1000_reports_arrives_complete_and_resolvable() {
    // Small packets, so that the graph spans many packets and the order
    // across packets matters too.
    let set = EngineSet::new(2, small_packets(97)).await.unwrap();
    let c = &set.clients[0].0;
    // A 3-level site tree, brigades, employees.
    let root = create(c, "Site", json!({"name": "District"})).await;
    let mut sites = Vec::new();
    for i in 0..3 {
        let b = create(
            c,
            "Site",
            json!({"name": format!("Block {i}"), "parent": root}),
        )
        .await;
        for j in 0..3 {
            sites.push(
                create(
                    c,
                    "Site",
                    json!({"name": format!("Building {i}.{j}"), "parent": b}),
                )
                .await,
            );
        }
    }
    let mut brigades = Vec::new();
    let mut employees = Vec::new();
    for i in 0..5 {
        let b = create(c, "Brigade", json!({"name": format!("Brigade {i}")})).await;
        brigades.push(b);
        for j in 0..6 {
            employees.push(
                create(
                    c,
                    "Employee",
                    json!({"full_name": format!("Worker {i}.{j}"), "brigade": b}),
                )
                .await,
            );
        }
    }
    // 1,000 reports with 3 lines each, written in batches.
    let mut reports = Vec::new();
    for chunk in 0..10 {
        let mut ops = Vec::new();
        for k in 0..100 {
            let i = chunk * 100 + k;
            let uuid = Uuid::now_v7();
            reports.push(uuid);
            let b = i % brigades.len();
            let lines: Vec<Uuid> = (0..3)
                .map(|l| employees[(b * 6 + l + i) % employees.len()])
                .collect();
            ops.push(hubsync_core::engine::BatchOp::Put {
                entity_type: "DailyReport".into(),
                uuid,
                data: report(brigades[b], sites[i % sites.len()], &lines, i),
            });
        }
        c.batch(ops).await.unwrap();
    }
    // Then the referenced entities change again, so that their queue rows
    // keep their early place but... and the root site gets a new name after
    // everything: in the log it is now the newest, after its children.
    for b in &brigades {
        c.put("Brigade", *b, json!({"name": "renamed"}))
            .await
            .unwrap();
    }
    c.put("Site", root, json!({"name": "District (renamed)"}))
        .await
        .unwrap();

    let summary = sync(&set, 0).await;
    assert_eq!(summary.conflicts.len(), 0, "{:?}", summary.conflicts);
    assert_eq!(
        summary.held, 0,
        "the client's packets are ordered: nothing is held"
    );
    // A fresh client downloads the graph in packets of 97 in the master's
    // revision order, in which the renamed root comes after its children:
    // what arrives early is held until its reference arrives.
    sync(&set, 1).await;
    assert_eq!(set.master.store().count_held().await.unwrap(), 0);
    assert_eq!(set.clients[1].0.store().count_held().await.unwrap(), 0);
    let m = set.master.replica_state().await.unwrap();
    assert_eq!(m.len(), 1 + 3 + 9 + 5 + 30 + 1000);
    assert_eq!(m, c.replica_state().await.unwrap());
    assert_eq!(m, set.clients[1].0.replica_state().await.unwrap());
    for e in [&set.master, c, &set.clients[1].0] {
        assert_resolvable(e).await;
    }
    set.close().await;
}

fn envelope(set: &EngineSet, i: usize, packet_no: i64, changes: Vec<WireChange>) -> Envelope {
    let node = set.clients[i].1.node_id;
    Envelope {
        header: Header {
            protocol: PROTOCOL_VERSION,
            sender_node_id: node,
            recipient_node_id: set.master.identity().node_id,
            packet_no,
            ack_packet_no: 0,
            schema_version: set.master.registry().version().to_string(),
            timestamp: now_utc(),
        },
        body: Body {
            entities: changes,
            ..Body::default()
        },
    }
}

fn wire(ty: &str, uuid: Uuid, data: Value) -> WireChange {
    WireChange {
        entity_type: ty.into(),
        uuid,
        operation: Operation::Insert,
        data,
        updated_at: now_utc(),
        is_deleted: false,
        base_rev: None,
        rev: None,
        origin_node_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_before_its_reference_is_held_then_applied_when_it_arrives() {
    let set = EngineSet::new(2, EngineOptions::default()).await.unwrap();
    let (brigade, site, employee) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let site_change = wire("Site", site, json!({"name": "S"}));
    let report_uuid = Uuid::now_v7();
    // Packet 1 carries a report whose brigade and employee are unknown, and
    // an unrelated site: the report is held, the site applied.
    let answer = set
        .master
        .handle_exchange(
            set.clients[0].1.node_id,
            envelope(
                &set,
                0,
                1,
                vec![
                    wire(
                        "DailyReport",
                        report_uuid,
                        report(brigade, site, &[employee], 0),
                    ),
                    site_change,
                ],
            ),
        )
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = answer.body.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Held, Outcome::Applied]);
    assert!(
        set.master
            .store()
            .get_entity("DailyReport", report_uuid)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        set.master
            .store()
            .get_entity("Site", site)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(set.master.store().count_held().await.unwrap(), 1);
    // Operators see it in the status (`hubsync status`, /api/v1/status).
    assert_eq!(set.master.status().await.unwrap().held_changes, 1);

    // Packet 2 brings the brigade: the report now waits for the employee.
    set.master
        .handle_exchange(
            set.clients[0].1.node_id,
            envelope(
                &set,
                0,
                2,
                vec![wire("Brigade", brigade, json!({"name": "B"}))],
            ),
        )
        .await
        .unwrap();
    assert!(
        set.master
            .store()
            .get_entity("DailyReport", report_uuid)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(set.master.store().count_held().await.unwrap(), 1);
    // Packet 3 brings the employee: the report is applied.
    set.master
        .handle_exchange(
            set.clients[0].1.node_id,
            envelope(
                &set,
                0,
                3,
                vec![wire(
                    "Employee",
                    employee,
                    json!({"full_name": "E", "brigade": brigade}),
                )],
            ),
        )
        .await
        .unwrap();
    assert_eq!(set.master.store().count_held().await.unwrap(), 0);
    assert_eq!(set.master.status().await.unwrap().held_changes, 0);
    let applied = set
        .master
        .store()
        .get_entity("DailyReport", report_uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied.origin, Some(set.clients[0].1.node_id));
    // Another client receives all of it, resolvable.
    sync(&set, 1).await;
    assert!(
        set.clients[1]
            .0
            .store()
            .get_entity("DailyReport", report_uuid)
            .await
            .unwrap()
            .is_some()
    );
    assert_resolvable(&set.clients[1].0).await;
    set.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_change_whose_reference_never_arrives_goes_to_the_manual_queue() {
    let options = EngineOptions {
        hold_timeout: std::time::Duration::ZERO,
        ..EngineOptions::default()
    };
    let set = EngineSet::new(1, options).await.unwrap();
    let report_uuid = Uuid::now_v7();
    let ghost = Uuid::now_v7();
    let site = Uuid::now_v7();
    set.master
        .handle_exchange(
            set.clients[0].1.node_id,
            envelope(
                &set,
                0,
                1,
                vec![
                    wire("Site", site, json!({"name": "S"})),
                    wire(
                        "DailyReport",
                        report_uuid,
                        json!({"date": "2026-11-24", "brigade": ghost, "site": site}),
                    ),
                ],
            ),
        )
        .await
        .unwrap();
    // The next exchange finds it past its (zero) hold time.
    set.master
        .handle_exchange(set.clients[0].1.node_id, envelope(&set, 0, 1, vec![]))
        .await
        .unwrap();
    assert_eq!(set.master.store().count_held().await.unwrap(), 0);
    let pending = set.master.pending_conflicts().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].uuid, report_uuid);
    assert!(
        pending[0].reason.contains(&ghost.to_string())
            && pending[0].reason.contains("never arrived"),
        "the reason names the missing reference: {}",
        pending[0].reason
    );
    set.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policies_hold_locally_and_by_sync() {
    let set = EngineSet::new(2, EngineOptions::default()).await.unwrap();
    let c = &set.clients[0].0;
    let root = create(c, "Site", json!({"name": "Root"})).await;
    let child = create(c, "Site", json!({"name": "Child", "parent": root})).await;
    let grandchild = create(c, "Site", json!({"name": "Grandchild", "parent": child})).await;
    let other = create(c, "Site", json!({"name": "Other"})).await;
    let brigade = create(c, "Brigade", json!({"name": "B"})).await;
    let worker = create(c, "Employee", json!({"full_name": "W", "brigade": brigade})).await;
    let report_uuid = create(c, "DailyReport", report(brigade, grandchild, &[worker], 0)).await;

    // restrict (DailyReport.brigade, the default): refused, naming the referrer.
    match c.delete("Brigade", brigade).await {
        Err(EngineError::StillReferenced(v)) => assert!(
            v.issues
                .iter()
                .any(|i| i.path == "/brigade" && i.message.contains(&report_uuid.to_string())),
            "{v}"
        ),
        other => panic!("expected a restrict refusal, got {other:?}"),
    }
    // cascade (Site.parent) stops at a restrict reference further down:
    // the report on the grandchild blocks deleting the root.
    assert!(matches!(
        c.delete("Site", root).await,
        Err(EngineError::StillReferenced(_))
    ));
    assert!(
        !c.get("Site", root).await.unwrap().is_deleted,
        "nothing of a refused delete stays"
    );
    // Move the report away: now the root's delete cascades to the subtree.
    let mut moved = report(brigade, other, &[worker], 0);
    moved["notes"] = json!("moved");
    c.put("DailyReport", report_uuid, moved).await.unwrap();
    c.delete("Site", root).await.unwrap();
    for s in [root, child, grandchild] {
        assert!(
            c.get("Site", s).await.unwrap().is_deleted,
            "cascaded to {s}"
        );
    }
    // detach (Employee.brigade): deleting the brigade (once no report needs
    // it) unassigns the worker.
    c.delete("DailyReport", report_uuid).await.unwrap();
    c.delete("Brigade", brigade).await.unwrap();
    let w = c.get("Employee", worker).await.unwrap();
    assert!(
        !w.is_deleted && w.data.get("brigade").is_none(),
        "{:?}",
        w.data
    );

    // All of it reaches the master and the other client identically.
    sync(&set, 0).await;
    sync(&set, 1).await;
    let m = set.master.replica_state().await.unwrap();
    assert_eq!(m, c.replica_state().await.unwrap());
    assert_eq!(m, set.clients[1].0.replica_state().await.unwrap());

    // By sync: client 1 deletes a brigade that client 0 meanwhile gave a
    // report (unknown to client 1): the master refuses the delete (restrict)
    // and client 1 gets the brigade back; the refused version is in history.
    let b2 = create(c, "Brigade", json!({"name": "B2"})).await;
    sync(&set, 0).await;
    sync(&set, 1).await;
    let r2 = create(c, "DailyReport", report(b2, other, &[], 1)).await;
    sync(&set, 0).await;
    let c1 = &set.clients[1].0;
    c1.delete("Brigade", b2).await.unwrap();
    let s1 = sync(&set, 1).await;
    assert!(
        s1.conflicts
            .iter()
            .any(|r| r.uuid == b2 && r.outcome == Outcome::Rejected),
        "{:?}",
        s1.conflicts
    );
    assert!(!set.master.get("Brigade", b2).await.unwrap().is_deleted);
    assert!(
        !c1.get("Brigade", b2).await.unwrap().is_deleted,
        "the master's version came back"
    );
    assert!(c1.get("DailyReport", r2).await.is_ok());
    let history = set.master.store().history(b2).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.conflict_resolution.contains("rejected")),
        "{history:?}"
    );
    set.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_that_would_make_a_cycle_are_refused_by_the_master() {
    let set = EngineSet::new(2, EngineOptions::default()).await.unwrap();
    let c0 = &set.clients[0].0;
    let a = create(c0, "Site", json!({"name": "A"})).await;
    let b = create(c0, "Site", json!({"name": "B"})).await;
    sync(&set, 0).await;
    sync(&set, 1).await;
    let c1 = &set.clients[1].0;
    // Offline, each client moves one under the other: each is valid alone.
    c0.put("Site", a, json!({"name": "A", "parent": b}))
        .await
        .unwrap();
    c1.put("Site", b, json!({"name": "B", "parent": a}))
        .await
        .unwrap();
    sync(&set, 0).await;
    let s1 = sync(&set, 1).await;
    assert!(
        s1.conflicts
            .iter()
            .any(|r| r.uuid == b && r.outcome == Outcome::Rejected),
        "{:?}",
        s1.conflicts
    );
    for _ in 0..2 {
        sync(&set, 0).await;
        sync(&set, 1).await;
    }
    let m = set.master.replica_state().await.unwrap();
    assert_eq!(m, c0.replica_state().await.unwrap());
    assert_eq!(m, c1.replica_state().await.unwrap());
    assert!(
        set.master
            .get("Site", b)
            .await
            .unwrap()
            .data
            .get("parent")
            .is_none()
    );
    set.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]

    // Feature: sync-system, Property 15: For any hierarchical entity
    // structure, parent-child relationships should be preserved during
    // synchronization
    #[test]
    fn any_site_forest_written_in_any_order_syncs_with_its_parents(
        parents in prop::collection::vec(prop::option::of(0usize..1000), 1..40),
        packet in 1u32..7,
        order_seed in any::<u64>(),
    ) {
        block_on(async {
            let set = EngineSet::new(2, small_packets(packet)).await.unwrap();
            let c = &set.clients[0].0;
            let n = parents.len();
            // Node i's parent is a node with a smaller index (a forest).
            let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
            let parent_of = |i: usize| parents[i].filter(|_| i > 0).map(|p| ids[p % i]);
            for (i, &id) in ids.iter().enumerate() {
                let mut data = json!({"name": format!("S{i}")});
                if let Some(p) = parent_of(i) {
                    data["parent"] = json!(p);
                }
                c.create("Site", Some(id), data).await.unwrap();
            }
            // Rename in a shuffled order, so that revisions (and packets)
            // put children before parents.
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = order_seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            sync(&set, 0).await;
            for &i in &order {
                let mut data = json!({"name": format!("S{i} renamed")});
                if let Some(p) = parent_of(i) {
                    data["parent"] = json!(p);
                }
                c.put("Site", ids[i], data).await.unwrap();
            }
            sync(&set, 0).await;
            sync(&set, 1).await;
            let fresh = &set.clients[1].0;
            prop_assert_eq!(fresh.store().count_held().await.unwrap(), 0);
            for (i, &id) in ids.iter().enumerate() {
                let got = fresh.get("Site", id).await.unwrap();
                let want = parent_of(i).map(|p| p.to_string());
                prop_assert_eq!(got.data.get("parent").and_then(Value::as_str).map(str::to_string), want);
            }
            prop_assert_eq!(set.master.replica_state().await.unwrap(), fresh.replica_state().await.unwrap());
            set.close().await;
            Ok(())
        })?;
    }
}
