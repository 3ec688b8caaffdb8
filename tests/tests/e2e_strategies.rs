//! Conflict strategies end to end: one master with a different strategy per
//! entity type (built-ins and a loaded plugin), two clients over real HTTPS;
//! and plugins that panic, hang, err or merge invalid data, which must cost
//! one deferred conflict each and nothing else.
//!
//! The plugin libraries are built by the resolver testkit
//! (`hubsync_test_plugins`: one bounded `cargo build` into
//! `target/hubsync-plugins`, see `hubsync_resolver_testkit::cdylib`).

use hubsync_core::Engine;
use hubsync_core::engine::SyncSummary;
use hubsync_core::protocol::Outcome;
use hubsync_core::store::AuditRecord;
use hubsync_resolver_testkit::cdylib::test_plugin_path;
use hubsync_tests::scenario::{converge, create, start_with, sync, update};
use hubsync_tests::{Cluster, ClusterOptions};
use serde_json::{Value, json};
use uuid::Uuid;

async fn start(master_toml: String) -> Cluster {
    start_with(2, master_toml).await
}

async fn data_of(e: &Engine, ty: &str, uuid: Uuid) -> Value {
    e.get(ty, uuid)
        .await
        .unwrap_or_else(|err| panic!("reading {ty} {uuid}: {err}"))
        .data
}

async fn audit_of(c: &Cluster, uuid: Uuid) -> Vec<AuditRecord> {
    c.master()
        .store()
        .audit(Some(uuid), 100)
        .await
        .expect("audit")
}

/// The outcome the master answered for `uuid` in a sync summary.
fn outcome(s: &SyncSummary, uuid: Uuid) -> Outcome {
    s.conflicts
        .iter()
        .find(|r| r.uuid == uuid)
        .unwrap_or_else(|| panic!("no conflict result for {uuid} in {:?}", s.conflicts))
        .outcome
}

fn line(employee: Uuid, task: &str) -> Value {
    json!({"employee": employee, "hours": 4, "task": task})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_type_gets_its_strategy_end_to_end_and_all_nodes_converge() {
    let merge_lines = test_plugin_path("hubsync-example-merge-report-lines");
    let c = start(format!(
        "\n[conflicts.per_type]\nBrigade = \"client-wins\"\nEmployee = \"last-writer-wins\"\nSite = \"field-merge\"\nDailyReport = \"merge-report-lines\"\n\n[[plugins]]\npath = {merge_lines:?}\n"
    ))
    .await;
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(c1, "Brigade", json!({"name": "Crew", "foreman": "Ivan"})).await;
    let ann = create(
        c1,
        "Employee",
        json!({"full_name": "Ann", "position": "mason"}),
    )
    .await;
    let bob = create(c1, "Employee", json!({"full_name": "Bob"})).await;
    let site = create(c1, "Site", json!({"name": "North", "address": "1 Road"})).await;
    let report = create(
        c1,
        "DailyReport",
        json!({"date": "2025-12-12", "brigade": crew, "site": site, "lines": [line(ann, "walls")]}),
    )
    .await;
    converge(&c).await;

    // Concurrent offline edits. Employee: client 2 edits first, client 1
    // later, so the master's version (client 1's) is the later one.
    update(
        c2,
        "Employee",
        ann,
        json!({"full_name": "Ann", "position": "foreman"}),
    )
    .await;
    update(
        c1,
        "Employee",
        ann,
        json!({"full_name": "Ann B.", "position": "mason"}),
    )
    .await;
    update(
        c1,
        "Brigade",
        crew,
        json!({"name": "Crew 1", "foreman": "Ivan"}),
    )
    .await;
    update(
        c2,
        "Brigade",
        crew,
        json!({"name": "Crew 2", "foreman": "Olga"}),
    )
    .await;
    update(
        c1,
        "Site",
        site,
        json!({"name": "North", "address": "2 Road"}),
    )
    .await;
    update(
        c2,
        "Site",
        site,
        json!({"name": "North site", "address": "1 Road"}),
    )
    .await;
    let base = json!({"date": "2025-12-12", "brigade": crew, "site": site});
    let mut r1 = base.clone();
    r1["lines"] = json!([line(ann, "walls"), line(bob, "roof")]);
    let mut r2 = base.clone();
    r2["lines"] = json!([line(ann, "walls"), line(ann, "floor")]);
    update(c1, "DailyReport", report, r1).await;
    update(c2, "DailyReport", report, r2).await;

    assert!(
        sync(&c, 0).await.conflicts.is_empty(),
        "client 1 syncs first: no conflict"
    );
    let s = sync(&c, 1).await;
    assert_eq!(s.conflicts.len(), 4, "{:?}", s.conflicts);
    assert_eq!(
        outcome(&s, crew),
        Outcome::ConflictIncomingWon,
        "client-wins"
    );
    assert_eq!(
        outcome(&s, ann),
        Outcome::ConflictMasterWon,
        "last-writer-wins: the master's is later"
    );
    assert_eq!(
        outcome(&s, site),
        Outcome::ConflictMerged,
        "field-merge against the kept base: each side changed another field"
    );
    assert_eq!(
        outcome(&s, report),
        Outcome::ConflictMerged,
        "merge-report-lines"
    );
    converge(&c).await;

    let m = c.master();
    assert_eq!(data_of(m, "Brigade", crew).await["name"], "Crew 2");
    assert_eq!(data_of(m, "Employee", ann).await["full_name"], "Ann B.");
    assert_eq!(
        data_of(m, "Site", site).await,
        json!({"name": "North site", "address": "2 Road"}),
        "three-way: client 2's name and client 1's address both survive"
    );
    assert_eq!(
        data_of(m, "DailyReport", report).await["lines"],
        json!([line(ann, "walls"), line(bob, "roof"), line(ann, "floor")]),
        "both sides' lines, deduplicated by employee and task"
    );
    for (uuid, strategy) in [
        (crew, "client-wins"),
        (ann, "last-writer-wins"),
        (site, "field-merge"),
        (report, "merge-report-lines"),
    ] {
        let a = audit_of(&c, uuid).await;
        assert_eq!(a.len(), 1, "one audit record per conflict: {a:?}");
        assert_eq!(a[0].strategy, strategy);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_hanging_and_failing_plugins_defer_their_conflicts_and_the_master_keeps_serving()
{
    let misbehaving = test_plugin_path("hubsync-test-misbehaving-resolver");
    let c = start(format!(
        "\n[conflicts.per_type]\nDailyReport = \"misbehaving\"\nBrigade = \"manual\"\n\n[[plugins]]\npath = {misbehaving:?}\n"
    ))
    .await;
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(c1, "Brigade", json!({"name": "Crew"})).await;
    let site = create(c1, "Site", json!({"name": "North"})).await;
    let report_data =
        |notes: &str| json!({"date": "2025-12-12", "brigade": crew, "site": site, "notes": notes});
    let mut reports = Vec::new();
    for behaviour in ["panic", "hang", "error", "invalid-merge"] {
        reports.push((
            behaviour,
            create(c1, "DailyReport", report_data("first")).await,
        ));
    }
    converge(&c).await;

    for (behaviour, uuid) in &reports {
        update(c1, "DailyReport", *uuid, report_data("client 1")).await;
        update(c2, "DailyReport", *uuid, report_data(behaviour)).await;
    }
    update(c1, "Brigade", crew, json!({"name": "Crew 1"})).await;
    update(c2, "Brigade", crew, json!({"name": "Crew 2"})).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(s.conflicts.len(), 5, "{:?}", s.conflicts);
    for (behaviour, uuid) in &reports {
        assert_eq!(outcome(&s, *uuid), Outcome::ConflictDeferred, "{behaviour}");
        let a = audit_of(&c, *uuid).await;
        assert_eq!(a.len(), 1, "{behaviour}: {a:?}");
        assert_eq!(a[0].outcome, "conflict_deferred", "{behaviour}");
        let expected_words = match *behaviour {
            "panic" => "panic requested by the test",
            "hang" => "plugin_timeout_ms",
            "error" => "error requested by the test",
            _ => "the merged version is invalid",
        };
        assert!(
            a[0].detail.contains(expected_words),
            "{behaviour}: {}",
            a[0].detail
        );
        // Nothing lost: the incoming version is in the history, complete.
        let h = c.master().store().history(*uuid).await.expect("history");
        assert!(
            h.iter()
                .any(|r| r.serialized_data["data"]["notes"] == json!(behaviour)
                    && r.source_node_id == Some(c2.identity().node_id)),
            "{behaviour}: the incoming version is kept in history: {h:?}"
        );
        assert_eq!(
            data_of(c.master(), "DailyReport", *uuid).await["notes"],
            "client 1"
        );
    }
    assert_eq!(outcome(&s, crew), Outcome::ConflictDeferred, "manual");

    // The master keeps serving: later exchanges succeed, and everyone converges.
    let later = create(c2, "Brigade", json!({"name": "Later"})).await;
    let s = sync(&c, 1).await;
    assert!(s.conflicts.is_empty());
    converge(&c).await;
    assert_eq!(data_of(c1, "Brigade", later).await["name"], "Later");
    c.shutdown().await;
}

#[tokio::test]
async fn a_wrong_abi_library_and_a_non_plugin_file_are_refused_at_start() {
    let bad_abi = test_plugin_path("hubsync-test-bad-abi-resolver");
    let dir = tempfile::tempdir().expect("tempdir");
    let text_file = dir.path().join("x.so");
    std::fs::write(&text_file, "not a library").expect("write");
    for (path, words) in [
        (bad_abi, "built for resolver ABI version 999"),
        (
            text_file.display().to_string(),
            "not a loadable shared library",
        ),
    ] {
        let err = match Cluster::start(
            0,
            ClusterOptions {
                master_toml: format!("\n[[plugins]]\npath = {path:?}\n"),
                ..ClusterOptions::default()
            },
        )
        .await
        {
            Ok(_) => panic!("a master with plugin {path} started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(words), "{err}");
        assert!(err.contains(&path), "the message names the file: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_merge_is_three_way_against_the_base_version_the_master_kept() {
    let c = start("\n[conflicts.per_type]\nBrigade = \"field-merge\"\n".to_string()).await;
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(
        c1,
        "Brigade",
        json!({"name": "Crew", "foreman": "Ivan", "active": true}),
    )
    .await;
    converge(&c).await;
    // Client 1 renames and deactivates; client 2 changes the foreman and
    // also deactivates (the same value on both sides is no conflict), then
    // both change the name differently (changed on both sides: the
    // declared rule, master's value by default).
    update(
        c1,
        "Brigade",
        crew,
        json!({"name": "Crew A", "foreman": "Ivan", "active": false}),
    )
    .await;
    update(
        c2,
        "Brigade",
        crew,
        json!({"name": "Crew B", "foreman": "Olga", "active": false}),
    )
    .await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(outcome(&s, crew), Outcome::ConflictMerged);
    converge(&c).await;
    assert_eq!(
        data_of(c.master(), "Brigade", crew).await,
        json!({"name": "Crew A", "foreman": "Olga", "active": false}),
        "foreman from client 2 (only it changed it), name by the rule (master's), active agreed"
    );
    // Both losing versions are kept, with the audit record.
    let history = c.master().store().history(crew).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(audit_of(&c, crew).await.len(), 1);
    c.shutdown().await;
}
