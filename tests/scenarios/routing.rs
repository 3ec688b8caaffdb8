// Routing scopes end to end over real HTTPS (issue 5 item 5), written once
// and run once per master storage backend: tests/tests/routing.rs and
// tests/tests/routing_postgres.rs each set `MASTER_BACKEND` and `include!`
// this file (no `//!` here: it is included, not a module). Each node
// receives only its scope, with what its rows reference; a row leaving a
// node's scope is evicted from it; a scope change sends what the node newly
// covers and evicts what it no longer covers; the master holds everything.

use std::collections::{BTreeMap, BTreeSet};

use hubsync_core::engine::{Engine, EngineError};
use hubsync_tests::scenario::{create, sync, update};
use hubsync_tests::{Cluster, ClusterOptions, bounded, dump, registry};

/// A cluster whose master runs on `MASTER_BACKEND`, or `None` when that
/// backend is not available here (the kit has said SKIPPED on stderr).
async fn start(clients: usize, opts: ClusterOptions) -> Option<Cluster> {
    hubsync_tests::start_on(MASTER_BACKEND, clients, opts).await
}
use serde_json::{Value, json};
use uuid::Uuid;

/// The master's rows, by uuid.
async fn rows(e: &Engine) -> BTreeMap<Uuid, (String, Value)> {
    dump(e)
        .await
        .expect("dump")
        .into_iter()
        .map(|(ty, uuid, _, _, data)| (uuid, (ty, data)))
        .collect()
}

/// What a node with `scope` must hold of `master`: the rows its rules
/// match and, transitively, everything they reference.
fn expected(master: &BTreeMap<Uuid, (String, Value)>, scope: &Value) -> BTreeSet<Uuid> {
    let reg = registry();
    let parsed = hubsync_core::engine::Scope::parse(scope, &reg).expect("scope");
    let mut out = BTreeSet::new();
    let mut work: Vec<Uuid> = master
        .iter()
        .filter(|(uuid, (ty, data))| {
            let e = hubsync_core::entity::Entity {
                entity_type: ty.clone(),
                uuid: **uuid,
                updated_at: hubsync_core::entity::now_utc(),
                is_deleted: false,
                data: data.clone(),
                rev: None,
                origin: None,
            };
            parsed.matches(&e)
        })
        .map(|(u, _)| *u)
        .collect();
    while let Some(u) = work.pop() {
        if !out.insert(u) {
            continue;
        }
        let Some((ty, data)) = master.get(&u) else {
            continue;
        };
        for r in &reg.get(ty).expect("type").references {
            work.extend(r.values(data));
        }
    }
    out
}

/// The client holds exactly what its scope says, each row as the master
/// has it, and every reference it holds resolves locally.
async fn check_scoped(c: &Cluster, i: usize, scope: &Value) {
    let master = rows(c.master()).await;
    let mine = rows(c.client(i)).await;
    let want = expected(&master, scope);
    let have: BTreeSet<Uuid> = mine.keys().copied().collect();
    let missing: Vec<_> = want.difference(&have).map(|u| &master[u].0).collect();
    let extra: Vec<_> = have.difference(&want).map(|u| &mine[u].0).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "client {i}: missing {missing:?}, extra {extra:?}"
    );
    let reg = registry();
    for (uuid, (ty, data)) in &mine {
        assert_eq!(
            master.get(uuid),
            Some(&(ty.clone(), data.clone())),
            "client {i}: {ty} {uuid} differs from the master"
        );
        for r in &reg.get(ty).expect("type").references {
            for target in r.values(data) {
                assert!(
                    mine.contains_key(&target),
                    "client {i}: {ty} {uuid} refers to {target}, which it does not hold"
                );
            }
        }
    }
}

fn scope_for(brigade: Uuid) -> Value {
    json!({"types": {
        "Site": "all",
        "Brigade": {"uuid": [brigade.to_string()]},
        "Employee": {"brigade": [brigade.to_string()]},
        "DailyReport": {"brigade": [brigade.to_string()]}
    }})
}

fn report(brigade: Uuid, site: Uuid, employees: &[Uuid], n: usize) -> Value {
    json!({
        "date": "2026-11-24", "brigade": brigade, "site": site, "status": "draft",
        "notes": format!("report {n}"),
        "lines": employees.iter().map(|e| json!({"employee": e, "hours": 8, "task": "work"})).collect::<Vec<_>>()
    })
}

async fn reports_of(e: &Engine) -> BTreeSet<Uuid> {
    rows(e)
        .await
        .into_iter()
        .filter(|(_, (ty, _))| ty == "DailyReport")
        .map(|(u, _)| u)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_receive_only_their_scope_and_moves_travel_between_them() {
    let Some(c) = start(3, ClusterOptions::default()).await else {
        return;
    };
    // DESKTOP-3, the office, is unscoped: it enters the reference data and
    // reports of both brigades.
    let office = c.client(2);
    let root = create(office, "Site", json!({"name": "Region"})).await;
    let north_site = create(office, "Site", json!({"name": "North", "parent": root})).await;
    let south_site = create(office, "Site", json!({"name": "South", "parent": root})).await;
    let north = create(office, "Brigade", json!({"name": "North brigade"})).await;
    let south = create(office, "Brigade", json!({"name": "South brigade"})).await;
    let mut crew = BTreeMap::new();
    for (b, name) in [(north, "n"), (south, "s")] {
        let mut ids = Vec::new();
        for k in 0..3 {
            ids.push(
                create(
                    office,
                    "Employee",
                    json!({"full_name": format!("{name}{k}"), "brigade": b}),
                )
                .await,
            );
        }
        crew.insert(b, ids);
    }
    let mut north_reports = Vec::new();
    for n in 0..20 {
        north_reports.push(
            create(
                office,
                "DailyReport",
                report(north, north_site, &crew[&north], n),
            )
            .await,
        );
        create(
            office,
            "DailyReport",
            report(south, south_site, &crew[&south], n),
        )
        .await;
    }
    sync(&c, 2).await;

    // Scopes set before the field nodes' first sync; an invalid one is
    // refused with every problem named.
    let bad = c
        .master()
        .set_node_scope(
            "DESKTOP-1",
            Some(json!({"types": {"Nope": "all", "DailyReport": {"colour": ["red"]}}})),
        )
        .await;
    match bad {
        Err(EngineError::InvalidScope(msg)) => {
            assert!(
                msg.contains("Nope") && msg.contains("colour"),
                "the error names both problems: {msg}"
            );
        }
        other => panic!("an invalid scope must be refused: {other:?}"),
    }
    let scope_n = scope_for(north);
    let scope_s = scope_for(south);
    c.master()
        .set_node_scope("DESKTOP-1", Some(scope_n.clone()))
        .await
        .expect("scope north");
    c.master()
        .set_node_scope("DESKTOP-2", Some(scope_s.clone()))
        .await
        .expect("scope south");
    sync(&c, 0).await;
    sync(&c, 1).await;
    check_scoped(&c, 0, &scope_n).await;
    check_scoped(&c, 1, &scope_s).await;
    assert_eq!(reports_of(c.client(0)).await.len(), 20);
    assert_eq!(reports_of(c.client(1)).await.len(), 20);
    assert_eq!(reports_of(c.master()).await.len(), 40, "the master has all");

    // A field node writes in its scope: the master and the office get it,
    // the other field node does not.
    let mine = create(
        c.client(0),
        "DailyReport",
        report(north, north_site, &crew[&north][..1], 99),
    )
    .await;
    sync(&c, 0).await;
    sync(&c, 1).await;
    sync(&c, 2).await;
    assert!(reports_of(c.master()).await.contains(&mine));
    assert!(reports_of(c.client(2)).await.contains(&mine));
    assert!(!reports_of(c.client(1)).await.contains(&mine));

    // The office moves a north report to the south brigade (its lines still
    // name north employees, who travel with it).
    let moved = north_reports[0];
    let mut data = c
        .client(2)
        .get("DailyReport", moved)
        .await
        .expect("get")
        .data;
    data["brigade"] = json!(south);
    data["site"] = json!(south_site);
    update(c.client(2), "DailyReport", moved, data).await;
    sync(&c, 2).await;
    let s0 = sync(&c, 0).await;
    sync(&c, 1).await;
    assert_eq!(s0.evicted, 1, "the north node was told to drop the report");
    assert!(!reports_of(c.client(0)).await.contains(&moved));
    assert!(reports_of(c.client(1)).await.contains(&moved));
    check_scoped(&c, 0, &scope_n).await;
    check_scoped(&c, 1, &scope_s).await;

    // Widening a scope sends what it newly covers; narrowing it again
    // evicts it.
    let both = json!({"types": {
        "Site": "all", "Brigade": "all", "Employee": "all",
        "DailyReport": {"brigade": [north.to_string(), south.to_string()]}
    }});
    let pending = c
        .master()
        .set_node_scope("DESKTOP-2", Some(both.clone()))
        .await
        .expect("widen");
    assert!(
        pending.pending.is_some(),
        "takes effect with the next packet"
    );
    bounded("sync until quiet", c.sync_until_quiet(6))
        .await
        .expect("quiet");
    check_scoped(&c, 1, &both).await;
    assert_eq!(reports_of(c.client(1)).await.len(), 41);
    c.master()
        .set_node_scope("DESKTOP-2", Some(scope_s.clone()))
        .await
        .expect("narrow");
    bounded("sync until quiet", c.sync_until_quiet(6))
        .await
        .expect("quiet");
    check_scoped(&c, 1, &scope_s).await;

    // The unscoped office becomes scoped: what it held outside its new
    // scope is evicted (it had received everything before).
    c.master()
        .set_node_scope("DESKTOP-3", Some(scope_n.clone()))
        .await
        .expect("scope the office");
    bounded("sync until quiet", c.sync_until_quiet(6))
        .await
        .expect("quiet");
    check_scoped(&c, 2, &scope_n).await;
    // And cleared: everything again.
    c.master()
        .set_node_scope("DESKTOP-3", None)
        .await
        .expect("clear");
    bounded("sync until quiet", c.sync_until_quiet(6))
        .await
        .expect("quiet");
    assert_eq!(
        dump(c.client(2)).await.expect("dump"),
        dump(c.master()).await.expect("dump"),
        "an unscoped node holds everything again"
    );
    c.shutdown().await;
}

/// Runs sessions of client `i` through `transport` until one completes
/// (the front door loses some answers); bounded.
async fn sync_through(
    c: &Cluster,
    i: usize,
    transport: &hubsync::transport::HttpsTransport,
) -> u32 {
    let mut failures = 0;
    let mut errors = Vec::new();
    for _ in 0..50 {
        match bounded(
            "session",
            c.client(i)
                .sync_session(transport, &hubsync_core::engine::NoProgress),
        )
        .await
        {
            Ok(_) => return failures,
            Err(e) => {
                failures += 1;
                errors.push(e.to_string());
            }
        }
    }
    panic!("client {i} never completed a session in 50 tries: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_while_rows_move_and_scopes_change_leave_nodes_exactly_in_scope() {
    use hubsync_tests::front_door::{Fault, FrontDoor};
    // Lost answers make the field node retry at once, many times a second:
    // the per-node rate limit is not what this test is about.
    let Some(c) = start(
        2,
        ClusterOptions {
            master_toml:
                "\n[limits]\nrate_limit_per_minute = 1000000\nrate_limit_burst = 100000\n"
                    .into(),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let office = c.client(1);
    let site = create(office, "Site", json!({"name": "Site"})).await;
    let brigades = [
        create(office, "Brigade", json!({"name": "A"})).await,
        create(office, "Brigade", json!({"name": "B"})).await,
        create(office, "Brigade", json!({"name": "C"})).await,
    ];
    let mut reports = Vec::new();
    for n in 0..30 {
        reports.push(create(office, "DailyReport", report(brigades[n % 3], site, &[], n)).await);
    }
    sync(&c, 1).await;
    let mut scope = scope_for(brigades[0]);
    c.master()
        .set_node_scope("DESKTOP-1", Some(scope.clone()))
        .await
        .expect("scope");
    // About one request in three (seeded): the master commits, the answer
    // is lost; the packet is then built again and resent. (Not every other
    // request: a session of two requests would then never complete.)
    let mut state: u64 = 0x10_57;
    let door = FrontDoor::for_cluster(
        &c,
        Box::new(move |_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (state >> 33).is_multiple_of(3) {
                Fault::LoseAnswer
            } else {
                Fault::Forward
            }
        }),
    )
    .await
    .expect("front door");
    let link = c.clients[0].node.config.master.clone().expect("link");
    let transport = hubsync::transport::HttpsTransport::new(
        hubsync::tls::client_config(&link.ca_cert).expect("tls"),
        &door.url(),
        c.tokens[0].clone(),
        std::time::Duration::from_secs(60),
    );
    let mut seed: u64 = 0x5eed;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let mut lost = 0;
    for round in 0..12 {
        // The office moves a few reports between brigades…
        for _ in 0..4 {
            let r = reports[next(reports.len() as u64) as usize];
            let b = brigades[next(3) as usize];
            let mut data = office.get("DailyReport", r).await.expect("get").data;
            data["brigade"] = json!(b);
            update(office, "DailyReport", r, data).await;
        }
        sync(&c, 1).await;
        // …and now and then the field node's scope changes.
        if round % 4 == 3 {
            let mine: Vec<String> = brigades
                .iter()
                .filter(|_| next(2) == 0)
                .map(|b| b.to_string())
                .collect();
            scope = json!({"types": {
                "Site": "all",
                "Brigade": {"uuid": mine},
                "DailyReport": {"brigade": mine}
            }});
            c.master()
                .set_node_scope("DESKTOP-1", Some(scope.clone()))
                .await
                .expect("scope change");
        }
        lost += sync_through(&c, 0, &transport).await;
        lost += sync_through(&c, 0, &transport).await;
        check_scoped(&c, 0, &scope).await;
    }
    assert!(lost > 0, "the front door lost answers");
    assert!(door.traffic().forwarded > 0);
    door.shutdown().await;
    c.shutdown().await;
}

/// A scope that lists only reports: everything a report refers to reaches
/// the node with it, even when those rows were written just before the
/// report and so come earlier in the same packet (where, on their own,
/// they are out of scope and skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_written_just_before_a_scoped_row_travel_with_it() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let office = c.client(1);
    let root = create(office, "Site", json!({"name": "Region"})).await;
    let site = create(office, "Site", json!({"name": "Yard", "parent": root})).await;
    let brigade = create(office, "Brigade", json!({"name": "Only"})).await;
    let other = create(office, "Brigade", json!({"name": "Other"})).await;
    let mut crew = Vec::new();
    for k in 0..3 {
        crew.push(
            create(
                office,
                "Employee",
                json!({"full_name": format!("e{k}"), "brigade": brigade}),
            )
            .await,
        );
    }
    let unrelated = create(office, "Employee", json!({"full_name": "x", "brigade": other})).await;
    for n in 0..5 {
        create(office, "DailyReport", report(brigade, site, &crew, n)).await;
    }
    create(office, "DailyReport", report(other, site, &[unrelated], 9)).await;
    sync(&c, 1).await;
    let scope = json!({"types": {"DailyReport": {"brigade": [brigade.to_string()]}}});
    c.master()
        .set_node_scope("DESKTOP-1", Some(scope.clone()))
        .await
        .expect("scope");
    sync(&c, 0).await;
    check_scoped(&c, 0, &scope).await;
    assert_eq!(reports_of(c.client(0)).await.len(), 5);
    // More of the same after the first packet: a new site and employee,
    // then a report naming them, in one packet.
    let site2 = create(office, "Site", json!({"name": "Yard 2", "parent": root})).await;
    let newcomer = create(
        office,
        "Employee",
        json!({"full_name": "new", "brigade": brigade}),
    )
    .await;
    create(office, "DailyReport", report(brigade, site2, &[newcomer], 10)).await;
    sync(&c, 1).await;
    sync(&c, 0).await;
    check_scoped(&c, 0, &scope).await;
    assert_eq!(reports_of(c.client(0)).await.len(), 6);
    c.shutdown().await;
}

/// A scoped node that receives little of the log catches up in few
/// exchanges: a packet examines up to eight packets' worth of log rows and
/// carries only what concerns the node, whose position still moves past
/// everything examined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_node_skips_what_does_not_concern_it_a_window_at_a_time() {
    let Some(c) = start(
        2,
        ClusterOptions {
            max_packet_entities: Some(5),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let office = c.client(1);
    let mut mine = BTreeSet::new();
    for n in 0..200 {
        let foreman = if n % 50 == 7 { "Ann" } else { "Bob" };
        let b = create(
            office,
            "Brigade",
            json!({"name": format!("b{n}"), "foreman": foreman}),
        )
        .await;
        if foreman == "Ann" {
            mine.insert(b);
        }
    }
    sync(&c, 1).await;
    let scope = json!({"types": {"Brigade": {"foreman": ["Ann"]}}});
    c.master()
        .set_node_scope("DESKTOP-1", Some(scope.clone()))
        .await
        .expect("scope");
    let s = sync(&c, 0).await;
    check_scoped(&c, 0, &scope).await;
    let have: BTreeSet<Uuid> = rows(c.client(0)).await.into_keys().collect();
    assert_eq!(have, mine);
    // 200 rows in windows of 40: 5 packets (and the closing round), where
    // packets of 5 read row by row would take 40.
    assert!(
        s.rounds <= 7,
        "{} rounds for 200 log rows in windows of 40",
        s.rounds
    );
    // Later writes: only the node's own brigade reaches it.
    create(office, "Brigade", json!({"name": "late", "foreman": "Bob"})).await;
    let late = create(office, "Brigade", json!({"name": "late", "foreman": "Ann"})).await;
    sync(&c, 1).await;
    let s = sync(&c, 0).await;
    assert_eq!(s.received_changes, 1);
    assert!(rows(c.client(0)).await.contains_key(&late));
    c.shutdown().await;
}

/// A scoped node whose scope nothing new concerns polls in one exchange:
/// the master moves its position past the rows outside its scope without
/// an empty packet for it to acknowledge in a second exchange, and a scope
/// change made while it is idle still takes effect at its next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_node_with_nothing_in_scope_polls_in_one_exchange() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let office = c.client(1);
    let ann = create(office, "Brigade", json!({"name": "a", "foreman": "Ann"})).await;
    sync(&c, 1).await;
    rescope_first_client(&c, json!({"types": {"Brigade": {"foreman": ["Ann"]}}})).await;
    let packets_before = c.client(0).status().await.expect("status").received_packet_no;

    // Rows outside the scope: one exchange, nothing received, no packet.
    for n in 0..3 {
        create(office, "Brigade", json!({"name": format!("b{n}"), "foreman": "Bob"})).await;
        sync(&c, 1).await;
        let s = sync(&c, 0).await;
        assert_eq!(
            (s.rounds, s.received_changes),
            (1, 0),
            "poll {n} with only out-of-scope rows new"
        );
        let status = c.client(0).status().await.expect("status");
        assert_eq!(status.received_packet_no, packets_before, "no packet was sent");
        let lag = c
            .master()
            .status()
            .await
            .expect("master status")
            .nodes
            .into_iter()
            .find(|n| n.code == "DESKTOP-1")
            .expect("node")
            .lag;
        assert_eq!(lag, 0, "the master moved the node past them");
    }
    let have: BTreeSet<Uuid> = rows(c.client(0)).await.into_keys().collect();
    assert_eq!(have, BTreeSet::from([ann]));

    // A row in scope still comes, and a scope change made meanwhile takes
    // effect at the next sync.
    let ann2 = create(office, "Brigade", json!({"name": "a2", "foreman": "Ann"})).await;
    sync(&c, 1).await;
    let s = sync(&c, 0).await;
    assert_eq!(s.received_changes, 1);
    assert!(rows(c.client(0)).await.contains_key(&ann2));
    rescope_first_client(&c, json!({"types": {"Brigade": {"foreman": ["Bob"]}}})).await;
    c.shutdown().await;
}

/// Scopes client 0 (`DESKTOP-1`) to `scope`, syncs it and checks that it
/// holds exactly that scope.
async fn rescope_first_client(c: &Cluster, scope: Value) {
    c.master()
        .set_node_scope("DESKTOP-1", Some(scope.clone()))
        .await
        .expect("scope");
    sync(c, 0).await;
    check_scoped(c, 0, &scope).await;
}
