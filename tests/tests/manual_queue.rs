//! The manual resolution queue end to end: a master whose DailyReport
//! conflicts are deferred to a person (the `manual` strategy, or a plugin
//! that panics or hangs), two clients over real HTTPS on loopback, the
//! queue read and resolved through the master's local API and its engine,
//! and every resolution reaching every node.

use hubsync::serve::RunningNode;
use hubsync_core::engine::{Choice, SyncSummary};
use hubsync_core::protocol::Outcome;
use hubsync_core::{Engine, EngineError};
use hubsync_resolver_testkit::cdylib::test_plugin_path;
use hubsync_tests::scenario::{converge, create, start_with, sync, update};
use hubsync_tests::{Cluster, bounded};
use serde_json::{Value, json};
use uuid::Uuid;

async fn start(master_toml: String) -> Cluster {
    start_with(2, master_toml).await
}

async fn notes_of(e: &Engine, uuid: Uuid) -> Value {
    e.get("DailyReport", uuid)
        .await
        .unwrap_or_else(|err| panic!("reading DailyReport {uuid}: {err}"))
        .data["notes"]
        .clone()
}

/// Every node (master and both clients) holds these notes on `uuid`.
async fn everyone_has(c: &Cluster, uuid: Uuid, notes: &str) {
    assert_eq!(notes_of(c.master(), uuid).await, json!(notes), "master");
    for i in 0..c.clients.len() {
        assert_eq!(
            notes_of(c.client(i), uuid).await,
            json!(notes),
            "client {i}"
        );
    }
}

/// A request to a node's local API.
async fn api(node: &RunningNode, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    bounded(
        &format!("{method} {path}"),
        hubsync::local_client::request(node.api_addr, method, path, body.as_ref()),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn resolve(node: &RunningNode, id: Uuid, body: Value) -> (u16, Value) {
    api(
        node,
        "POST",
        &format!("/api/v1/conflicts/{id}/resolve"),
        Some(body),
    )
    .await
}

/// The pending queue item of `uuid` on the master (engine view).
async fn pending_id(c: &Cluster, uuid: Uuid) -> Uuid {
    let pending = c.master().pending_conflicts().await.expect("pending");
    pending
        .iter()
        .find(|p| p.uuid == uuid)
        .unwrap_or_else(|| panic!("{uuid} is not pending: {pending:?}"))
        .id
}

fn outcome(s: &SyncSummary, uuid: Uuid) -> Outcome {
    s.conflicts
        .iter()
        .find(|r| r.uuid == uuid)
        .unwrap_or_else(|| panic!("no conflict result for {uuid} in {:?}", s.conflicts))
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_conflicts_wait_in_the_queue_and_each_resolution_reaches_every_node() {
    let c = start("\n[conflicts.per_type]\nDailyReport = \"manual\"\n".into()).await;
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(c1, "Brigade", json!({"name": "Crew"})).await;
    let site = create(c1, "Site", json!({"name": "North"})).await;
    let report =
        |notes: &str| json!({"date": "2025-12-12", "brigade": crew, "site": site, "notes": notes});
    let mut reports = Vec::new();
    for _ in 0..4 {
        reports.push(create(c1, "DailyReport", report("first")).await);
    }
    let [remote, local, merged, version] = reports[..] else {
        unreachable!()
    };
    converge(&c).await;

    for r in &reports {
        update(c1, "DailyReport", *r, report("client 1")).await;
        update(c2, "DailyReport", *r, report("client 2")).await;
    }
    // The rest of client 2's packet: must be applied despite the conflicts.
    let other = create(c2, "Brigade", json!({"name": "Other"})).await;
    update(
        c2,
        "Site",
        site,
        json!({"name": "North", "address": "1 Road"}),
    )
    .await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(s.conflicts.len(), 4, "{:?}", s.conflicts);
    for r in &reports {
        assert_eq!(outcome(&s, *r), Outcome::ConflictDeferred);
    }
    let m = c.master();
    assert_eq!(
        m.get("Brigade", other).await.expect("other").data["name"],
        "Other"
    );
    assert_eq!(
        m.get("Site", site).await.expect("site").data["address"],
        "1 Road"
    );

    // The queue, from the engine and from the API.
    let pending = m.pending_conflicts().await.expect("pending");
    assert_eq!(pending.len(), 4, "{pending:?}");
    for p in &pending {
        assert_eq!(p.node_code.as_deref(), Some("DESKTOP-2"));
        assert_eq!(p.node_id, c2.identity().node_id);
        assert_eq!(p.strategy, "manual");
        assert_eq!(p.entity_type, "DailyReport");
    }
    let (st, list) = api(&c.master, "GET", "/api/v1/conflicts", None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["pending"].as_array().map(Vec::len), Some(4), "{list}");
    assert!(
        list["resolved"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["outcome"] == "conflict_deferred")),
        "the audit list is kept under \"resolved\": {list}"
    );

    // One item in full: the incoming version and the master's.
    let id_remote = pending_id(&c, remote).await;
    let (st, view) = api(
        &c.master,
        "GET",
        &format!("/api/v1/conflicts/{id_remote}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["status"], "pending");
    assert_eq!(view["conflict"]["uuid"], json!(remote));
    assert_eq!(view["conflict"]["node_code"], "DESKTOP-2");
    assert_eq!(
        view["incoming"][0]["serialized_data"]["data"]["notes"],
        "client 2"
    );
    assert_eq!(view["master"]["data"]["notes"], "client 1");

    // A client has no queue: a clear error, from its API and its engine.
    let (st, err) = resolve(&c.clients[1], id_remote, json!({"take": "remote"})).await;
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["code"], "wrong_mode");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("master"), "{message}");
    match c2
        .resolve_conflict_manually(id_remote, Choice::TakeIncoming, "x")
        .await
    {
        Err(EngineError::MasterOnly { .. }) => {}
        other => panic!("a client resolved a conflict: {other:?}"),
    }

    // take remote: client 2's version becomes everyone's.
    let (st, done) = resolve(&c.master, id_remote, json!({"take": "remote", "by": "ann"})).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["entity"]["data"]["notes"], "client 2");
    assert_eq!(done["resolution"]["outcome"], "manual_resolved");
    assert_eq!(done["resolution"]["strategy"], "manual");
    let detail = done["resolution"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&id_remote.to_string()) && detail.contains("ann"),
        "{detail}"
    );
    converge(&c).await;
    everyone_has(&c, remote, "client 2").await;
    let audit = m.store().audit(Some(remote), 100).await.expect("audit");
    let resolution = audit
        .iter()
        .find(|a| a.outcome == "manual_resolved")
        .unwrap_or_else(|| panic!("no audit record of the resolution: {audit:?}"));
    assert!(resolution.detail.contains(&id_remote.to_string()));
    let history = m.store().history(remote).await.expect("history");
    let replaced = history
        .iter()
        .find(|h| h.audit_id == Some(resolution.id))
        .unwrap_or_else(|| panic!("the replaced version is not in history: {history:?}"));
    assert_eq!(replaced.serialized_data["data"]["notes"], "client 1");
    let pending = m.pending_conflicts().await.expect("pending");
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert!(pending.iter().all(|p| p.uuid != remote));

    // Resolving twice: 409, nothing changed.
    let (st, err) = resolve(&c.master, id_remote, json!({"take": "local"})).await;
    assert_eq!(st, 409, "{err}");
    assert_eq!(err["error"]["code"], "conflict");
    assert_eq!(notes_of(m, remote).await, json!("client 2"));
    let (st, view) = api(
        &c.master,
        "GET",
        &format!("/api/v1/conflicts/{id_remote}"),
        None,
    )
    .await;
    assert_eq!((st, view["status"].clone()), (200, json!("resolved")));

    // take local: the master's version stands (a record only).
    let id_local = pending_id(&c, local).await;
    let before = m.get("DailyReport", local).await.expect("local");
    let (st, done) = resolve(&c.master, id_local, json!({"take": "local"})).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["entity"]["data"]["notes"], "client 1");
    assert_eq!(m.get("DailyReport", local).await.expect("local"), before);
    converge(&c).await;
    everyone_has(&c, local, "client 1").await;

    // Merged data: invalid → 422 with JSON pointers and nothing changed;
    // valid → everyone's.
    let id_merged = pending_id(&c, merged).await;
    let before = m.get("DailyReport", merged).await.expect("merged");
    let (st, err) = resolve(
        &c.master,
        id_merged,
        json!({"data": {"date": 5, "brigade": crew, "site": site, "bogus": true}}),
    )
    .await;
    assert_eq!(st, 422, "{err}");
    assert_eq!(err["error"]["code"], "validation_failed");
    let paths: Vec<&str> = err["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|i| i["path"].as_str()).collect())
        .unwrap_or_default();
    assert!(paths.contains(&"/date"), "{err}");
    assert_eq!(m.get("DailyReport", merged).await.expect("merged"), before);
    assert_eq!(pending_id(&c, merged).await, id_merged, "still pending");
    let (st, done) = resolve(
        &c.master,
        id_merged,
        json!({"data": report("client 1 + client 2"), "by": "bob"}),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    converge(&c).await;
    everyone_has(&c, merged, "client 1 + client 2").await;

    // take version: a version of another entity is refused (404); one of
    // this entity's (here its incoming one) is taken.
    let id_version = pending_id(&c, version).await;
    let (st, err) = resolve(
        &c.master,
        id_version,
        json!({"take": "version", "version": replaced.id}),
    )
    .await;
    assert_eq!(st, 404, "{err}");
    let (st, err) = resolve(&c.master, id_version, json!({"take": "version"})).await;
    assert_eq!(st, 400, "{err}");
    let view = m.conflict(id_version).await.expect("view");
    let stored = view.incoming[0].id;
    let (st, done) = resolve(
        &c.master,
        id_version,
        json!({"take": "version", "version": stored}),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    converge(&c).await;
    everyone_has(&c, version, "client 2").await;

    // Unknown and malformed requests.
    let (st, _) = resolve(&c.master, Uuid::now_v7(), json!({"take": "local"})).await;
    assert_eq!(st, 404);
    let (st, _) = resolve(&c.master, id_version, json!({"take": "sideways"})).await;
    assert_eq!(st, 400);
    let (st, _) = api(&c.master, "GET", "/api/v1/conflicts/not-a-uuid", None).await;
    assert_eq!(st, 400);

    // The queue is empty.
    assert!(m.pending_conflicts().await.expect("pending").is_empty());
    let (_, list) = api(&c.master, "GET", "/api/v1/conflicts", None).await;
    assert_eq!(list["pending"], json!([]), "{list}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_deferred_by_a_panicking_or_hanging_plugin_are_resolved_through_the_queue() {
    let misbehaving = test_plugin_path("hubsync-test-misbehaving-resolver");
    let c = start(format!(
        "\n[conflicts.per_type]\nDailyReport = \"misbehaving\"\n\n[[plugins]]\npath = {misbehaving:?}\n"
    ))
    .await;
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(c1, "Brigade", json!({"name": "Crew"})).await;
    let site = create(c1, "Site", json!({"name": "North"})).await;
    let report =
        |notes: &str| json!({"date": "2025-12-12", "brigade": crew, "site": site, "notes": notes});
    let panics = create(c1, "DailyReport", report("first")).await;
    let hangs = create(c1, "DailyReport", report("first")).await;
    converge(&c).await;
    for (uuid, behaviour) in [(panics, "panic"), (hangs, "hang")] {
        update(c1, "DailyReport", uuid, report("client 1")).await;
        update(c2, "DailyReport", uuid, report(behaviour)).await;
    }
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(outcome(&s, panics), Outcome::ConflictDeferred);
    assert_eq!(outcome(&s, hangs), Outcome::ConflictDeferred);

    let pending = c.master().pending_conflicts().await.expect("pending");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.iter().all(|p| p.strategy == "misbehaving"));
    let (st, done) = resolve(
        &c.master,
        pending_id(&c, panics).await,
        json!({"take": "remote"}),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    let (st, done) = resolve(
        &c.master,
        pending_id(&c, hangs).await,
        json!({"data": report("settled by hand")}),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    converge(&c).await;
    everyone_has(&c, panics, "panic").await;
    everyone_has(&c, hangs, "settled by hand").await;
    assert!(
        c.master()
            .pending_conflicts()
            .await
            .expect("pending")
            .is_empty()
    );
    c.shutdown().await;
}
