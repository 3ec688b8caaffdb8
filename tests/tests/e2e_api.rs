//! The local entity API (contract §4) over real HTTP, against running
//! nodes: status codes, response shapes, error bodies, paging, batches,
//! status, sync, history, health and metrics.

use std::net::SocketAddr;

use hubsync::local_client::request;
use hubsync_tests::{Cluster, ClusterOptions, bounded, raw_http};
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Vocabulary

async fn start(clients: usize) -> Cluster {
    bounded(
        "starting the cluster",
        Cluster::start(clients, ClusterOptions::default()),
    )
    .await
    .expect("the cluster starts")
}

/// One API call; returns the status and the JSON body.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    bounded(
        &format!("{method} {path}"),
        request(addr, method, path, body.as_ref()),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Asserts the status of an answer (showing the body when it differs) and
/// returns the body.
fn check(answer: (u16, Value), status: u16) -> Value {
    assert_eq!(answer.0, status, "unexpected status; body: {}", answer.1);
    answer.1
}

/// Asserts an error answer: status, `error.code`, and returns `error`.
fn check_error(answer: (u16, Value), status: u16, code: &str) -> Value {
    let body = check(answer, status);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error says what failed: {body}"
    );
    body["error"].clone()
}

fn entities(ty: &str) -> String {
    format!("/api/v1/entities/{ty}")
}

fn entity(ty: &str, uuid: impl std::fmt::Display) -> String {
    format!("/api/v1/entities/{ty}/{uuid}")
}

fn uuid_of(entity: &Value) -> Uuid {
    entity["uuid"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("no uuid in {entity}"))
}

/// Asserts the API's entity shape: framework fields and the data.
fn check_entity(e: &Value, ty: &str, data: &Value, deleted: bool) {
    assert_eq!(e["type"], ty, "{e}");
    uuid_of(e);
    let ts = e["updated_at"].as_str().unwrap_or_else(|| panic!("{e}"));
    assert!(
        ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "updated_at is RFC 3339 UTC: {ts}"
    );
    assert_eq!(e["is_deleted"], deleted, "{e}");
    assert_eq!(&e["data"], data, "{e}");
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "is_deleted", "type", "updated_at", "uuid"]);
}

fn brigade(name: &str) -> Value {
    json!({"name": name, "foreman": "Ivan Petrov", "active": true})
}

fn report_with_hours(hours: f64) -> Value {
    json!({
        "date": "2025-03-14",
        "brigade": Uuid::now_v7(),
        "site": Uuid::now_v7(),
        "lines": [{"employee": Uuid::now_v7(), "hours": hours, "task": "walls"}]
    })
}

async fn pending(addr: SocketAddr) -> i64 {
    let status = check(call(addr, "GET", "/api/v1/status", None).await, 200);
    status["pending_changes"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pending_changes in {status}"))
}

// ---------------------------------------------------------------------------
// Writes and reads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_and_soft_delete_entities() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;

    // POST with the data alone: 201 and the entity with framework fields.
    let data = brigade("Masons");
    let created = check(
        call(api, "POST", &entities("Brigade"), Some(data.clone())).await,
        201,
    );
    check_entity(&created, "Brigade", &data, false);
    let id = uuid_of(&created);

    // POST with {"uuid", "data"}: the given uuid is used; again is a 409.
    let chosen = Uuid::now_v7();
    let body = json!({"uuid": chosen, "data": brigade("Roofers")});
    let created = check(
        call(api, "POST", &entities("Brigade"), Some(body.clone())).await,
        201,
    );
    assert_eq!(uuid_of(&created), chosen);
    check_entity(&created, "Brigade", &brigade("Roofers"), false);
    check_error(
        call(api, "POST", &entities("Brigade"), Some(body)).await,
        409,
        "conflict",
    );

    // GET: 200; unknown uuid and unknown type are 404 not_found.
    let got = check(call(api, "GET", &entity("Brigade", id), None).await, 200);
    assert_eq!(
        got,
        check(call(api, "GET", &entity("Brigade", id), None).await, 200)
    );
    check_entity(&got, "Brigade", &data, false);
    check_error(
        call(api, "GET", &entity("Brigade", Uuid::now_v7()), None).await,
        404,
        "not_found",
    );
    check_error(
        call(api, "GET", &entity("Spaceship", id), None).await,
        404,
        "not_found",
    );
    check_error(
        call(api, "GET", &entities("Spaceship"), None).await,
        404,
        "not_found",
    );
    check_error(
        call(
            api,
            "POST",
            &entities("Spaceship"),
            Some(json!({"name": "x"})),
        )
        .await,
        404,
        "not_found",
    );

    // PUT: 201 when it creates, 200 when it updates; updated_at moves on.
    let put_id = Uuid::now_v7();
    let site = json!({"name": "North district", "parent": null});
    let created = check(
        call(api, "PUT", &entity("Site", put_id), Some(site.clone())).await,
        201,
    );
    check_entity(&created, "Site", &site, false);
    let district = check(
        call(
            api,
            "POST",
            &entities("Site"),
            Some(json!({"name": "District"})),
        )
        .await,
        201,
    );
    let child = json!({"name": "Building 7", "address": "7 Main St", "parent": uuid_of(&district)});
    let updated = check(
        call(api, "PUT", &entity("Site", put_id), Some(child.clone())).await,
        200,
    );
    check_entity(&updated, "Site", &child, false);
    assert!(updated["updated_at"].as_str() > created["updated_at"].as_str());
    let got = check(call(api, "GET", &entity("Site", put_id), None).await, 200);
    assert_eq!(got, updated);

    // DELETE is a soft delete: the entity is still there, marked deleted.
    let deleted = check(call(api, "DELETE", &entity("Brigade", id), None).await, 200);
    check_entity(&deleted, "Brigade", &data, true);
    let got = check(call(api, "GET", &entity("Brigade", id), None).await, 200);
    check_entity(&got, "Brigade", &data, true);
    check_error(
        call(api, "DELETE", &entity("Brigade", Uuid::now_v7()), None).await,
        404,
        "not_found",
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_malformed_requests_are_refused_with_reasons() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;

    // Schema violations: 422 with the JSON path of each problem.
    let err = check_error(
        call(
            api,
            "POST",
            &entities("DailyReport"),
            Some(report_with_hours(25.0)),
        )
        .await,
        422,
        "validation_failed",
    );
    let details = err["details"].as_array().unwrap_or_else(|| panic!("{err}"));
    assert!(
        details.iter().any(|d| d["path"] == "/lines/0/hours"),
        "the path of the bad value is named: {err}"
    );
    let err = check_error(
        call(
            api,
            "POST",
            &entities("Brigade"),
            Some(json!({"name": "", "colour": "red"})),
        )
        .await,
        422,
        "validation_failed",
    );
    assert!(
        err["details"].as_array().is_some_and(|d| d.len() >= 2),
        "every problem is reported: {err}"
    );
    let put_id = Uuid::now_v7();
    check_error(
        call(
            api,
            "PUT",
            &entity("DailyReport", put_id),
            Some(report_with_hours(-1.0)),
        )
        .await,
        422,
        "validation_failed",
    );
    check_error(
        call(api, "GET", &entity("DailyReport", put_id), None).await,
        404,
        "not_found",
    );

    // Malformed: a body that is not JSON, a path uuid that is not a uuid.
    let (status, _, body) = raw_http(api, "POST", &entities("Brigade"), b"{\"name\": ")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).expect("errors are JSON");
    assert_eq!(body["error"]["code"], "malformed", "{body}");
    let (status, _, body) = raw_http(api, "PUT", &entity("Brigade", Uuid::now_v7()), b"not json")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    check_error(
        call(api, "GET", &entity("Brigade", "not-a-uuid"), None).await,
        400,
        "malformed",
    );

    // Nothing was written by any of these.
    let list = check(
        call(
            api,
            "GET",
            "/api/v1/entities/Brigade?include_deleted=true",
            None,
        )
        .await,
        200,
    );
    assert_eq!(list["items"], json!([]));
    assert_eq!(pending(api).await, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_limit_and_after_and_hide_deleted_unless_asked() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = check(
            call(
                api,
                "POST",
                &entities("Brigade"),
                Some(brigade(&format!("B{i}"))),
            )
            .await,
            201,
        );
        ids.push(uuid_of(&e));
    }
    ids.sort();
    check(
        call(api, "DELETE", &entity("Brigade", ids[1]), None).await,
        200,
    );

    // Walk the pages of two; `next` is the cursor, null on the last page.
    let walk = |include_deleted: bool| async move {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let mut path =
                format!("/api/v1/entities/Brigade?limit=2&include_deleted={include_deleted}");
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let page = check(call(api, "GET", &path, None).await, 200);
            let items = page["items"].as_array().unwrap_or_else(|| panic!("{page}"));
            assert!(items.len() <= 2, "{page}");
            seen.extend(items.iter().map(uuid_of));
            match &page["next"] {
                Value::Null => return seen,
                Value::String(s) => after = Some(s.clone()),
                other => panic!("next is a uuid or null, not {other}"),
            }
        }
        panic!("paging did not end within 10 pages");
    };
    assert_eq!(walk(true).await, ids, "every entity once, in order");
    let visible: Vec<Uuid> = ids.iter().copied().filter(|u| *u != ids[1]).collect();
    assert_eq!(
        walk(false).await,
        visible,
        "deleted entities are hidden by default"
    );

    let all = check(call(api, "GET", &entities("Brigade"), None).await, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert_eq!(all["next"], Value::Null);
    let deleted = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["is_deleted"] == true)
        .count();
    assert_eq!(deleted, 0);
    check_error(
        call(api, "GET", "/api/v1/entities/Brigade?limit=oops", None).await,
        400,
        "malformed",
    );
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// Batches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_nothing() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;
    let existing = uuid_of(&check(
        call(api, "POST", &entities("Brigade"), Some(brigade("Old"))).await,
        201,
    ));
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    // One invalid item (index 1): 422 naming it, and nothing written.
    let bad = json!({"operations": [
        {"op": "put", "type": "Brigade", "uuid": a, "data": brigade("A")},
        {"op": "put", "type": "DailyReport", "uuid": b, "data": report_with_hours(30.0)},
        {"op": "delete", "type": "Brigade", "uuid": existing},
    ]});
    let err = check_error(
        call(api, "POST", "/api/v1/batch", Some(bad)).await,
        422,
        "validation_failed",
    );
    let details = err["details"].as_array().unwrap_or_else(|| panic!("{err}"));
    assert!(
        !details.is_empty() && details.iter().all(|d| d["index"] == 1),
        "{err}"
    );
    assert!(
        details.iter().any(|d| d["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/lines/0/hours"))),
        "{err}"
    );

    // Valid items, but one refers to an entity that does not exist: the
    // items before it are rolled back.
    let missing = json!({"operations": [
        {"op": "put", "type": "Brigade", "uuid": a, "data": brigade("A")},
        {"op": "delete", "type": "Brigade", "uuid": Uuid::now_v7()},
    ]});
    let err = check_error(
        call(api, "POST", "/api/v1/batch", Some(missing)).await,
        422,
        "validation_failed",
    );
    assert!(
        err["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["index"] == 1)),
        "{err}"
    );

    check_error(
        call(api, "GET", &entity("Brigade", a), None).await,
        404,
        "not_found",
    );
    check_error(
        call(api, "GET", &entity("DailyReport", b), None).await,
        404,
        "not_found",
    );
    let old = check(
        call(api, "GET", &entity("Brigade", existing), None).await,
        200,
    );
    assert_eq!(old["is_deleted"], false);
    assert_eq!(pending(api).await, 1, "only the first POST is queued");

    // All valid: 200, one result per item, all written.
    let good = json!({"operations": [
        {"op": "put", "type": "Brigade", "uuid": a, "data": brigade("A")},
        {"op": "put", "type": "Site", "data": {"name": "No uuid given"}},
        {"op": "delete", "type": "Brigade", "uuid": existing},
    ]});
    let done = check(call(api, "POST", "/api/v1/batch", Some(good)).await, 200);
    let results = done["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{done}"));
    assert_eq!(results.len(), 3, "{done}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{done}");
    }
    check_entity(&results[0]["entity"], "Brigade", &brigade("A"), false);
    let site = uuid_of(&results[1]["entity"]);
    check(call(api, "GET", &entity("Brigade", a), None).await, 200);
    check(call(api, "GET", &entity("Site", site), None).await, 200);
    let old = check(
        call(api, "GET", &entity("Brigade", existing), None).await,
        200,
    );
    assert_eq!(old["is_deleted"], true);
    assert_eq!(pending(api).await, 3);

    check_error(
        call(api, "POST", "/api/v1/batch", Some(json!({"ops": []}))).await,
        400,
        "malformed",
    );
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// Node: schemas, status, sync, history, health, metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_lists_the_set_version_and_types() {
    let c = start(1).await;
    for api in [c.clients[0].api_addr, c.master.api_addr] {
        let s = check(call(api, "GET", "/api/v1/schemas", None).await, 200);
        assert_eq!(s["version"], "1.0.0");
        let mut types: Vec<&str> = s["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        types.sort_unstable();
        assert_eq!(types, ["Brigade", "DailyReport", "Employee", "Site"]);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_pending_changes_until_sync() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;
    let status = check(call(api, "GET", "/api/v1/status", None).await, 200);
    assert_eq!(status["mode"], "client");
    assert_eq!(status["node_id"], json!(c.client(0).identity().node_id));
    assert_eq!(status["schema_version"], "1.0.0");
    assert_eq!(status["pending_changes"], 0);
    assert_eq!(status["held_changes"], 0);

    let a = uuid_of(&check(
        call(api, "POST", &entities("Brigade"), Some(brigade("A"))).await,
        201,
    ));
    assert_eq!(pending(api).await, 1);
    check(
        call(api, "POST", &entities("Brigade"), Some(brigade("B"))).await,
        201,
    );
    assert_eq!(pending(api).await, 2);
    check(
        call(api, "PUT", &entity("Brigade", a), Some(brigade("A2"))).await,
        200,
    );
    assert_eq!(
        pending(api).await,
        2,
        "an unsent change of the same entity is updated, not added"
    );

    let summary = check(call(api, "POST", "/api/v1/sync", None).await, 200);
    assert_eq!(summary["sent_changes"], 2, "{summary}");
    assert_eq!(summary["conflicts"], json!([]), "{summary}");
    assert_eq!(pending(api).await, 0);
    let status = check(call(api, "GET", "/api/v1/status", None).await, 200);
    assert!(status["last_sync_out"].is_string(), "{status}");
    assert_eq!(status["sync"]["running"], false, "{status}");
    assert_eq!(
        status["sync"]["last_summary"]["sent_changes"], 2,
        "{status}"
    );

    // The master's status shows the node, and its copy of the data.
    let m = check(
        call(c.master.api_addr, "GET", "/api/v1/status", None).await,
        200,
    );
    assert_eq!(m["mode"], "master");
    assert_eq!(m["nodes"].as_array().map(Vec::len), Some(1), "{m}");
    let got = check(
        call(c.master.api_addr, "GET", &entity("Brigade", a), None).await,
        200,
    );
    assert_eq!(got["data"], brigade("A2"));
    // The master does not sync itself.
    let (status, _) = call(c.master.api_addr, "POST", "/api/v1/sync", None).await;
    assert_eq!(status, 400);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_master_lists_the_losing_version_of_a_conflict() {
    let c = start(2).await;
    let (api1, api2, master) = (
        c.clients[0].api_addr,
        c.clients[1].api_addr,
        c.master.api_addr,
    );
    let x = uuid_of(&check(
        call(
            master,
            "POST",
            &entities("Brigade"),
            Some(brigade("Shared")),
        )
        .await,
        201,
    ));
    for api in [api1, api2] {
        check(call(api, "POST", "/api/v1/sync", None).await, 200);
        check(call(api, "GET", &entity("Brigade", x), None).await, 200);
    }
    let path = format!("{}/history", entity("Brigade", x));
    assert_eq!(
        check(call(master, "GET", &path, None).await, 200),
        json!([])
    );

    let winner = brigade("Shared (client 1)");
    let loser = brigade("Shared (client 2)");
    check(
        call(api1, "PUT", &entity("Brigade", x), Some(winner.clone())).await,
        200,
    );
    check(
        call(api2, "PUT", &entity("Brigade", x), Some(loser.clone())).await,
        200,
    );
    check(call(api1, "POST", "/api/v1/sync", None).await, 200);
    let s = check(call(api2, "POST", "/api/v1/sync", None).await, 200);
    assert_eq!(s["conflicts"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["conflicts"][0]["outcome"], "conflict_master_won", "{s}");

    let history = check(call(master, "GET", &path, None).await, 200);
    let items = history.as_array().unwrap_or_else(|| panic!("{history}"));
    assert_eq!(items.len(), 1, "{history}");
    assert_eq!(
        items[0]["source_node_id"],
        json!(c.client(1).identity().node_id)
    );
    assert_eq!(items[0]["serialized_data"]["data"], loser);
    assert!(items[0]["arrival_time"].is_string(), "{history}");
    assert!(
        items[0]["conflict_resolution"]
            .as_str()
            .is_some_and(|r| r.contains("server-wins")),
        "{history}"
    );
    assert_eq!(
        check(call(api2, "GET", &entity("Brigade", x), None).await, 200)["data"],
        winner
    );
    check_error(
        call(
            master,
            "GET",
            &format!("{}/history", entity("Brigade", Uuid::now_v7())),
            None,
        )
        .await,
        404,
        "not_found",
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics_are_served() {
    let c = start(1).await;
    let api = c.clients[0].api_addr;
    for addr in [api, c.master.api_addr] {
        let health = check(call(addr, "GET", "/health", None).await, 200);
        assert_eq!(health["status"], "ok");
    }
    check(
        call(api, "POST", &entities("Brigade"), Some(brigade("A"))).await,
        201,
    );
    let (status, headers, text) = raw_http(api, "GET", "/metrics", b"").await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("content-type: text/plain")),
        "{headers:?}"
    );
    assert!(
        text.contains("# TYPE hubsync_pending_changes gauge"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "hubsync_pending_changes 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "hubsync_held_changes 0"),
        "{text}"
    );
    // The SQLite store's write counts: the brigade at least, committed.
    let count = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing or not a number: {text}"))
    };
    let (txs, commits) = (
        count("hubsync_store_write_transactions_total"),
        count("hubsync_store_commits_total"),
    );
    assert!(commits >= 1 && txs >= commits, "{txs} / {commits}: {text}");
    // A master's gauge is the sum of its nodes' lags, as in its status: a
    // row it wrote that the client has not acknowledged yet.
    let master = c.master.api_addr;
    check(
        call(master, "POST", &entities("Brigade"), Some(brigade("M"))).await,
        201,
    );
    let (status, _, text) = raw_http(master, "GET", "/metrics", b"").await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.lines().any(|l| l == "hubsync_pending_changes 1"),
        "{text}"
    );
    let st = check(call(master, "GET", "/api/v1/status", None).await, 200);
    assert_eq!(st["pending_changes"], 1, "{st}");
    assert_eq!(st["nodes"][0]["lag"], 1, "{st}");
    check_error(
        call(api, "GET", "/no/such/route", None).await,
        404,
        "not_found",
    );
    check_error(
        call(api, "DELETE", &entities("Brigade"), None).await,
        405,
        "method_not_allowed",
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_through_the_api_reports_an_unreachable_master() {
    let c = start(1).await;
    let down = bounded("stopping the master", c.stop_master()).await;
    let api = down.clients[0].api_addr;
    check(
        call(api, "POST", &entities("Brigade"), Some(brigade("A"))).await,
        201,
    );
    let err = check_error(
        call(api, "POST", "/api/v1/sync", None).await,
        502,
        "master_unreachable",
    );
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be reached")),
        "{err}"
    );
    let status = check(call(api, "GET", "/api/v1/status", None).await, 200);
    assert_eq!(status["pending_changes"], 1, "{status}");
    assert!(status["sync"]["last_error"].is_string(), "{status}");
    down.shutdown().await;
}
