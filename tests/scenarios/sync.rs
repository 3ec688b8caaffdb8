// The end-to-end sync suite, written once and run once per master storage
// backend: tests/tests/e2e_sync_sqlite.rs and tests/tests/e2e_sync_postgres.rs
// each set `MASTER_BACKEND` and `include!` this file. ADD NEW END-TO-END SYNC
// SCENARIOS HERE (not in a target), so that both backends run them. No `//!`
// or `#![…]` in this file: it is included, not a module.
//
// End-to-end sync scenarios: a real master and clients, each an in-process
// node (clients on SQLite files, the master on MASTER_BACKEND), syncing
// over real HTTPS on loopback.
//
// Each test states one behaviour of the contract (§5 protocol, §7 sync
// semantics) in its name and checks it from the outside: entity state on
// every node, the master's change log revisions, its history and audit
// records, and the clients' change queues.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hubsync::error::HostError;
use hubsync_core::engine::{BatchOp, NoProgress, SyncSummary};
use hubsync_core::entity::now_utc;
use hubsync_core::protocol::{Envelope, Outcome};
use hubsync_core::store::NodeRecord;
use hubsync_core::transport::{Transport, TransportError};
use hubsync_core::{Engine, EngineError};
use hubsync_tests::{Cluster, ClusterOptions, Dump, bounded, dump, schemas_dir};
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Scenario vocabulary

/// A cluster whose master runs on `MASTER_BACKEND` (set by the including
/// target), or `None` when that backend is not available here (the kit
/// has said SKIPPED on stderr).
async fn start(clients: usize, opts: ClusterOptions) -> Option<Cluster> {
    hubsync_tests::start_on(MASTER_BACKEND, clients, opts).await
}

async fn sync(c: &Cluster, i: usize) -> SyncSummary {
    bounded(&format!("sync of client {i}"), c.sync(i))
        .await
        .unwrap_or_else(|e| panic!("sync of client {i} failed: {e:#}"))
}

/// Syncs everyone until a whole pass moves nothing, then checks that every
/// client holds exactly the master's state; returns that state.
async fn converge(c: &Cluster) -> Dump {
    bounded("syncing until quiet", c.sync_until_quiet(6))
        .await
        .expect("the cluster becomes quiet");
    let master = dump(c.master()).await.expect("master dump");
    for i in 0..c.clients.len() {
        let client = dump(c.client(i)).await.expect("client dump");
        assert_eq!(
            client,
            master,
            "client {} (index {i}) does not hold the master's state after syncing",
            i + 1
        );
    }
    master
}

async fn create(e: &Engine, ty: &str, data: Value) -> Uuid {
    e.create(ty, None, data)
        .await
        .unwrap_or_else(|err| panic!("creating a {ty}: {err}"))
        .uuid
}

/// Brigades "B00", "B01", … of foreman Ivan, `count` of them, made on `e`.
async fn brigades_on(e: &Engine, count: usize) -> Vec<Uuid> {
    let mut made = Vec::with_capacity(count);
    for n in 0..count {
        made.push(create(e, "Brigade", brigade(&format!("B{n:02}"), "Ivan")).await);
    }
    made
}

/// A cluster whose packets carry at most four entities.
fn packets_of_four() -> ClusterOptions {
    ClusterOptions {
        max_packet_entities: Some(4),
        ..ClusterOptions::default()
    }
}

async fn update(e: &Engine, ty: &str, uuid: Uuid, data: Value) {
    e.put(ty, uuid, data)
        .await
        .unwrap_or_else(|err| panic!("updating {ty} {uuid}: {err}"));
}

async fn delete(e: &Engine, ty: &str, uuid: Uuid) {
    e.delete(ty, uuid)
        .await
        .unwrap_or_else(|err| panic!("deleting {ty} {uuid}: {err}"));
}

async fn data_of(e: &Engine, ty: &str, uuid: Uuid) -> Value {
    e.get(ty, uuid)
        .await
        .unwrap_or_else(|err| panic!("reading {ty} {uuid}: {err}"))
        .data
}

async fn is_deleted(e: &Engine, ty: &str, uuid: Uuid) -> bool {
    e.get(ty, uuid)
        .await
        .unwrap_or_else(|err| panic!("reading {ty} {uuid}: {err}"))
        .is_deleted
}

/// The master's revision of an entity (its position in the change log).
async fn master_rev(c: &Cluster, ty: &str, uuid: Uuid) -> i64 {
    c.master()
        .get(ty, uuid)
        .await
        .unwrap_or_else(|err| panic!("reading {ty} {uuid} on the master: {err}"))
        .rev
        .expect("a master entity has a revision")
}

async fn queued(e: &Engine) -> i64 {
    let master = e.identity().master_id.expect("a client knows its master");
    e.store().count_queued(master).await.expect("count queued")
}

fn node_id(c: &Cluster, i: usize) -> Uuid {
    c.client(i).identity().node_id
}

/// The master's row for client `i` (packet numbers, acknowledgements).
async fn master_row_of(c: &Cluster, i: usize) -> NodeRecord {
    c.master()
        .store()
        .get_node(node_id(c, i))
        .await
        .expect("read node row")
        .expect("the client is registered on the master")
}

/// Every audit record the master holds.
async fn all_audit(c: &Cluster) -> Vec<hubsync_core::store::AuditRecord> {
    c.master().store().audit(None, 1000).await.expect("audit")
}

/// The engine error under a failed `Cluster::sync`.
fn engine_error(err: &anyhow::Error) -> &EngineError {
    match err.downcast_ref::<HostError>() {
        Some(HostError::Engine(e)) => e,
        _ => panic!("expected an engine error, got: {err:#}"),
    }
}

/// Asserts that a failed sync was a refusal by the master with `status` and
/// the protocol error `code`.
fn check_refused(err: &EngineError, status: u16, code: &str) {
    match err {
        EngineError::Transport(TransportError::Refused { status: s, error }) => {
            assert_eq!(*s, status, "HTTP status of the refusal: {err}");
            assert_eq!(error.code, code, "error code of the refusal: {err}");
        }
        other => panic!("expected a {status} {code} refusal, got: {other}"),
    }
}

// Example data that satisfies the schemas in /schemas.

fn brigade(name: &str, foreman: &str) -> Value {
    json!({"name": name, "foreman": foreman, "active": true})
}

fn employee(full_name: &str, brigade: Uuid, hourly_rate: f64) -> Value {
    json!({"full_name": full_name, "brigade": brigade, "position": "mason", "hourly_rate": hourly_rate})
}

fn site(name: &str, parent: Option<Uuid>) -> Value {
    json!({"name": name, "address": format!("{name}, 1 Main St"), "parent": parent})
}

fn report(
    date: &str,
    brigade: Uuid,
    site: Uuid,
    status: &str,
    lines: &[(Uuid, f64, &str)],
) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(employee, hours, task)| json!({"employee": employee, "hours": hours, "task": task}))
        .collect();
    json!({"date": date, "brigade": brigade, "site": site, "status": status, "lines": lines})
}

// ---------------------------------------------------------------------------
// Fault layers around a client's real HTTPS transport

/// Delivers the first request to the master (which applies and commits it)
/// but loses the master's answer: the client sees the master as unreachable.
struct LoseFirstAnswer<T> {
    inner: T,
    calls: AtomicUsize,
    /// The packet number of the request whose answer was lost.
    lost_packet_no: Mutex<Option<i64>>,
}

#[async_trait::async_trait]
impl<T: Transport> Transport for LoseFirstAnswer<T> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await;
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            return answer;
        }
        answer.expect("the master answers the first request");
        *self.lost_packet_no.lock().unwrap() = Some(request.header.packet_no);
        Err(TransportError::Unreachable {
            reason: "the connection dropped before the answer arrived (test fault)".into(),
            transient: true,
        })
    }
}

/// Damages the master's answer to the client's packet `packet_no` (the
/// first time it comes): it acknowledges only the packet before, so
/// applying it fails. The damaged answer is handed over only once the
/// next packet's exchange is over (at most 5 s), so that the master has
/// committed it when the client fails. Records the packet numbers of every
/// request.
struct DamageAnswerTo<T> {
    inner: T,
    packet_no: i64,
    damaged: AtomicUsize,
    sent: Mutex<Vec<i64>>,
    next_done: tokio::sync::Notify,
}

impl<T> DamageAnswerTo<T> {
    fn new(inner: T, packet_no: i64) -> Self {
        DamageAnswerTo {
            inner,
            packet_no,
            damaged: AtomicUsize::new(0),
            sent: Mutex::new(Vec::new()),
            next_done: tokio::sync::Notify::new(),
        }
    }
}

#[async_trait::async_trait]
impl<T: Transport> Transport for DamageAnswerTo<T> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let no = request.header.packet_no;
        self.sent.lock().unwrap().push(no);
        let damage = no == self.packet_no
            && !request.body.entities.is_empty()
            && self.damaged.fetch_add(1, Ordering::SeqCst) == 0;
        let next_done = self.next_done.notified();
        let answer = self.inner.exchange(request).await;
        if no == self.packet_no + 1 {
            self.next_done.notify_one();
        }
        let mut answer = answer?;
        if damage {
            answer.header.ack_packet_no = no - 1;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), next_done).await;
        }
        Ok(answer)
    }
}

/// On the first exchange, once the master has answered but before the
/// client engine sees the answer, makes local writes on the client: an
/// update of `edited` (which travels in that very packet) and a new entity.
struct EditWhileInFlight<T> {
    inner: T,
    client: Engine,
    edited: (&'static str, Uuid, Value),
    created: (&'static str, Uuid, Value),
    calls: AtomicUsize,
    /// Whether the first request, and the master's answer to it, carried
    /// `edited`.
    first_exchange_carried_edited: Mutex<Option<(bool, bool)>>,
}

#[async_trait::async_trait]
impl<T: Transport> Transport for EditWhileInFlight<T> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            let (ty, uuid, data) = &self.edited;
            let carries = |env: &Envelope| env.body.entities.iter().any(|c| c.uuid == *uuid);
            *self.first_exchange_carried_edited.lock().unwrap() =
                Some((carries(request), carries(&answer)));
            self.client
                .put(ty, *uuid, data.clone())
                .await
                .expect("edit while the sync is in flight");
            let (ty, uuid, data) = &self.created;
            self.client
                .create(ty, Some(*uuid), data.clone())
                .await
                .expect("create while the sync is in flight");
        }
        Ok(answer)
    }
}

// ---------------------------------------------------------------------------
// 1. Convergence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_after_offline_edits() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let (c1, c2, m) = (c.client(0), c.client(1), c.master());

    // Client 1, offline: a brigade, its people, a site with a sub-site and
    // a daily report with lines; then updates and a soft delete.
    let masons = create(c1, "Brigade", brigade("Masons", "Ivan Petrov")).await;
    let ivan = create(c1, "Employee", employee("Ivan Petrov", masons, 21.5)).await;
    let oleg = create(c1, "Employee", employee("Oleg Sidorov", masons, 18.0)).await;
    let leaver = create(c1, "Employee", employee("Short Stay", masons, 15.0)).await;
    let district = create(c1, "Site", site("North district", None)).await;
    let building = create(c1, "Site", site("Building 7", Some(district))).await;
    let report1 = create(
        c1,
        "DailyReport",
        report(
            "2025-03-14",
            masons,
            building,
            "draft",
            &[(ivan, 8.0, "walls")],
        ),
    )
    .await;
    let ivan_final = employee("Ivan Petrov", masons, 24.0);
    update(c1, "Employee", ivan, ivan_final.clone()).await;
    let report1_final = report(
        "2025-03-14",
        masons,
        building,
        "submitted",
        &[
            (ivan, 8.0, "walls"),
            (oleg, 6.5, "mortar"),
            (ivan, 1.5, "cleanup"),
        ],
    );
    update(c1, "DailyReport", report1, report1_final.clone()).await;
    delete(c1, "Employee", leaver).await;

    // Client 2, offline: its own brigade, people, sites and report.
    let roofers = create(c2, "Brigade", brigade("Roofers", "Anna Orlova")).await;
    let anna = create(c2, "Employee", employee("Anna Orlova", roofers, 30.0)).await;
    let temp = create(c2, "Employee", employee("Temp Worker", roofers, 12.0)).await;
    let campus = create(c2, "Site", site("South campus", None)).await;
    let hall = create(c2, "Site", site("Hall A", Some(campus))).await;
    let hall_final = json!({"name": "Hall A", "address": "2 Campus Rd", "parent": campus});
    update(c2, "Site", hall, hall_final.clone()).await;
    let report2_final = report(
        "2025-03-15",
        roofers,
        hall,
        "draft",
        &[(anna, 7.25, "roof")],
    );
    let report2 = create(c2, "DailyReport", report2_final.clone()).await;
    delete(c2, "Employee", temp).await;
    let roofers_final = json!({"name": "Roofers", "foreman": "Anna Orlova", "active": false});
    update(c2, "Brigade", roofers, roofers_final.clone()).await;

    // The master writes through its own engine too.
    let hq = create(m, "Site", site("Head office", None)).await;
    let electricians = create(m, "Brigade", brigade("Electricians", "Petr Ivanov")).await;
    let electricians_final = brigade("Electricians", "Maria Ivanova");
    update(m, "Brigade", electricians, electricians_final.clone()).await;
    let ghost = create(m, "Employee", employee("Never Started", electricians, 10.0)).await;
    delete(m, "Employee", ghost).await;

    // Nothing has travelled yet.
    assert!(c1.store().get_entity("Site", hq).await.unwrap().is_none());
    assert!(
        m.store()
            .get_entity("Brigade", masons)
            .await
            .unwrap()
            .is_none()
    );

    let state = converge(&c).await;
    let all = [
        ("Brigade", masons),
        ("Brigade", roofers),
        ("Brigade", electricians),
        ("Employee", ivan),
        ("Employee", oleg),
        ("Employee", leaver),
        ("Employee", anna),
        ("Employee", temp),
        ("Employee", ghost),
        ("Site", district),
        ("Site", building),
        ("Site", campus),
        ("Site", hall),
        ("Site", hq),
        ("DailyReport", report1),
        ("DailyReport", report2),
    ];
    assert_eq!(
        state.len(),
        all.len(),
        "every node holds exactly the entities written"
    );
    for (ty, uuid) in all {
        assert!(
            state.iter().any(|(t, u, ..)| t == ty && *u == uuid),
            "{ty} {uuid} is missing after convergence"
        );
    }
    // Final data, read on nodes other than the one that wrote it.
    assert_eq!(data_of(c2, "DailyReport", report1).await, report1_final);
    assert_eq!(
        data_of(m, "DailyReport", report1).await["lines"][1]["hours"],
        json!(6.5)
    );
    assert_eq!(data_of(c1, "DailyReport", report2).await, report2_final);
    assert_eq!(data_of(m, "Employee", ivan).await, ivan_final);
    assert_eq!(data_of(c1, "Site", hall).await, hall_final);
    assert_eq!(
        data_of(c2, "Site", building).await["parent"],
        json!(district)
    );
    assert_eq!(data_of(c1, "Brigade", roofers).await, roofers_final);
    assert_eq!(
        data_of(c2, "Brigade", electricians).await,
        electricians_final
    );
    for node in [m, c1, c2] {
        assert!(is_deleted(node, "Employee", leaver).await);
        assert!(is_deleted(node, "Employee", temp).await);
        assert!(is_deleted(node, "Employee", ghost).await);
        assert!(!is_deleted(node, "Employee", ivan).await);
    }
    // A deleted entity keeps its data (soft delete).
    assert_eq!(
        data_of(c2, "Employee", leaver).await["full_name"],
        "Short Stay"
    );
    assert!(all_audit(&c).await.is_empty(), "no conflicts were involved");

    // Round two: each node edits and deletes what it received from others.
    let oleg_final = employee("Oleg Sidorov", roofers, 19.0);
    update(c2, "Employee", oleg, oleg_final.clone()).await;
    delete(c1, "Site", hq).await;
    let campus_final = json!({"name": "South campus (closed)", "parent": null});
    update(m, "Site", campus, campus_final.clone()).await;
    converge(&c).await;
    for node in [m, c1, c2] {
        assert_eq!(data_of(node, "Employee", oleg).await, oleg_final);
        assert!(is_deleted(node, "Site", hq).await);
        assert_eq!(data_of(node, "Site", campus).await, campus_final);
    }
    assert!(all_audit(&c).await.is_empty(), "no conflicts were involved");
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2–3. Conflict detection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edit_is_detected_and_server_wins_with_history_and_audit() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let x = create(c.client(0), "Brigade", brigade("Carpenters", "Anna")).await;
    converge(&c).await;

    let first = json!({"name": "Carpenters", "foreman": "Boris", "active": true});
    let second = json!({"name": "Carpenters (night)", "foreman": "Vera", "active": false});
    update(c.client(0), "Brigade", x, first.clone()).await;
    update(c.client(1), "Brigade", x, second.clone()).await;

    let before = now_utc();
    let s1 = sync(&c, 0).await;
    assert!(
        s1.conflicts.is_empty(),
        "the first to sync meets no conflict"
    );
    let s2 = sync(&c, 1).await;
    let after = now_utc();
    assert_eq!(s2.conflicts.len(), 1, "{:?}", s2.conflicts);
    assert_eq!(s2.conflicts[0].uuid, x);
    assert_eq!(s2.conflicts[0].outcome, Outcome::ConflictMasterWon);
    assert_eq!(data_of(c.master(), "Brigade", x).await, first);

    // The losing version is kept, complete, with where and when it came from.
    let history = c.master().store().history(x).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let h = &history[0];
    assert_eq!(h.source_node_id, Some(node_id(&c, 1)));
    assert!(
        (before..=after).contains(&h.arrival_time),
        "arrival {} is outside the sync window {before}..{after}",
        h.arrival_time
    );
    assert_eq!(h.serialized_data["data"], second);
    assert_eq!(h.serialized_data["uuid"], json!(x));
    assert!(
        h.conflict_resolution.contains("server-wins"),
        "{}",
        h.conflict_resolution
    );

    let audit = c.master().store().audit(Some(x), 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].node_id, node_id(&c, 1));
    assert_eq!(audit[0].strategy, "server-wins");
    assert_eq!(audit[0].outcome, Outcome::ConflictMasterWon.as_str());
    assert_eq!(h.audit_id, Some(audit[0].id));

    converge(&c).await;
    for i in 0..2 {
        assert_eq!(data_of(c.client(i), "Brigade", x).await, first);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_after_receiving_latest_version_is_not_a_conflict() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let x = create(c.master(), "Site", site("Depot", None)).await;
    converge(&c).await;

    let by_client1 = site("Depot (east gate)", None);
    update(c.client(0), "Site", x, by_client1.clone()).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(s.received_changes, 1, "client 2 receives client 1's edit");
    assert_eq!(data_of(c.client(1), "Site", x).await, by_client1);

    let by_client2 = site("Depot (west gate)", None);
    update(c.client(1), "Site", x, by_client2.clone()).await;
    let s = sync(&c, 1).await;
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert_eq!(data_of(c.master(), "Site", x).await, by_client2);
    assert!(c.master().store().history(x).await.unwrap().is_empty());
    assert!(all_audit(&c).await.is_empty());
    converge(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_ones_own_previous_version_is_never_a_conflict() {
    let Some(c) = start(1, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(0);
    let x = create(e, "Brigade", brigade("Painters", "Ivan")).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    for round in 1..=3 {
        let data = brigade("Painters", &format!("foreman #{round}"));
        update(e, "Brigade", x, data.clone()).await;
        // Two edits between syncs travel as one change.
        update(e, "Brigade", x, data.clone()).await;
        let s = sync(&c, 0).await;
        assert!(s.conflicts.is_empty(), "round {round}: {:?}", s.conflicts);
        assert_eq!(data_of(c.master(), "Brigade", x).await, data);
    }
    delete(e, "Brigade", x).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    assert!(is_deleted(c.master(), "Brigade", x).await);
    assert!(all_audit(&c).await.is_empty());
    assert!(c.master().store().history(x).await.unwrap().is_empty());
    converge(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_of_an_older_version_is_a_conflict() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let x = create(c.master(), "Site", site("Depot", None)).await;
    let y = create(c.master(), "Site", site("Quarry", None)).await;
    converge(&c).await;

    // Client 1 moves the master on; client 2 edits (x) and deletes (y)
    // the versions it still has, without having received client 1's.
    let newer_x = site("Depot (renamed)", None);
    let newer_y = site("Quarry (reopened)", None);
    update(c.client(0), "Site", x, newer_x.clone()).await;
    update(c.client(0), "Site", y, newer_y.clone()).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let stale_x = site("Depot (stale edit)", None);
    update(c.client(1), "Site", x, stale_x.clone()).await;
    delete(c.client(1), "Site", y).await;

    let s = sync(&c, 1).await;
    let mut outcomes: Vec<(Uuid, Outcome)> =
        s.conflicts.iter().map(|r| (r.uuid, r.outcome)).collect();
    outcomes.sort_by_key(|(u, _)| *u);
    let mut expected = vec![
        (x, Outcome::ConflictMasterWon),
        (y, Outcome::ConflictMasterWon),
    ];
    expected.sort_by_key(|(u, _)| *u);
    assert_eq!(outcomes, expected);
    assert_eq!(data_of(c.master(), "Site", x).await, newer_x);
    assert!(
        !is_deleted(c.master(), "Site", y).await,
        "the stale delete lost"
    );
    let hy = c.master().store().history(y).await.unwrap();
    assert_eq!(hy.len(), 1);
    assert_eq!(hy[0].serialized_data["is_deleted"], json!(true));
    assert_eq!(
        c.master().store().history(x).await.unwrap()[0].serialized_data["data"],
        stale_x
    );
    assert_eq!(all_audit(&c).await.len(), 2);

    converge(&c).await;
    assert_eq!(data_of(c.client(1), "Site", x).await, newer_x);
    assert!(!is_deleted(c.client(1), "Site", y).await);
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4–5. Delivery: lost answers and edits during a session

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_response_is_resent_and_applied_once() {
    let Some(c) = start(1, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(0);
    let a = create(e, "Brigade", brigade("Welders", "Ivan")).await;
    sync(&c, 0).await;
    update(e, "Brigade", a, brigade("Welders", "Oleg")).await;
    let b = create(e, "Site", site("Plant", None)).await;
    let d = create(e, "Employee", employee("Ivan Petrov", a, 20.0)).await;
    let entities = [("Brigade", a), ("Site", b), ("Employee", d)];

    let lossy = LoseFirstAnswer {
        inner: c.transport(0).unwrap(),
        calls: AtomicUsize::new(0),
        lost_packet_no: Mutex::new(None),
    };
    let err = bounded("the lossy session", e.sync_session(&lossy, &NoProgress))
        .await
        .expect_err("a session whose answer is lost fails");
    assert!(err.to_string().contains("could not be reached"), "{err}");
    let lost = lossy
        .lost_packet_no
        .lock()
        .unwrap()
        .expect("a packet was lost");
    assert_eq!(
        queued(e).await,
        3,
        "nothing is acknowledged without an answer"
    );

    // The master applied the packet before the answer was lost.
    let master_state = dump(c.master()).await.unwrap();
    let row = master_row_of(&c, 0).await;
    assert_eq!(row.received_packet_no, lost);
    let mut revs = Vec::new();
    for (ty, uuid) in entities {
        revs.push(master_rev(&c, ty, uuid).await);
    }

    // The client resends the same packet; the master answers it again
    // without applying it again.
    let s = sync(&c, 0).await;
    assert_eq!(
        s.sent_changes, 3,
        "the unacknowledged changes are sent again"
    );
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert_eq!(queued(e).await, 0, "the resent packet is acknowledged");
    assert_eq!(master_row_of(&c, 0).await.received_packet_no, lost);
    assert_eq!(dump(c.master()).await.unwrap(), master_state);
    for ((ty, uuid), rev) in entities.into_iter().zip(revs) {
        assert_eq!(master_rev(&c, ty, uuid).await, rev, "{ty} applied twice");
        assert!(c.master().store().history(uuid).await.unwrap().is_empty());
    }
    assert!(all_audit(&c).await.is_empty());

    // The replayed results based the client's copies on the master's
    // revisions: the next edit is not a conflict.
    update(e, "Site", b, site("Plant 2", None)).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    assert!(all_audit(&c).await.is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_applied_after_the_next_packet_went_survives_a_failure_in_between() {
    // A push's answers bring the client nothing but the results of its
    // packet, so the client has its next packet on the way before it
    // applies one (docs/protocol.md, "Two requests in flight"). If it stops
    // in between, the master has the next packet while the client has not
    // applied the results of the one before: it sends that one again, and
    // the master must answer it with its own results (it keeps the last
    // two), or the client would never base its copies on their revisions
    // and its next edit of one would be a conflict against itself.
    let Some(c) = start(1, packets_of_four()).await else {
        return;
    };
    let e = c.client(0);
    let brigades = brigades_on(e, 14).await;
    // Packets 1-4 of 4, 4, 4 and 2. The answer to packet 2 is damaged, so
    // applying it fails: by then packet 3 went (and was applied).
    let damaged = DamageAnswerTo::new(c.transport(0).unwrap(), 2);
    let err = bounded("the session with a damaged answer", e.sync_session(&damaged, &NoProgress))
        .await
        .expect_err("applying the damaged answer fails");
    assert!(err.to_string().contains("did not acknowledge packet 2"), "{err}");
    assert_eq!(*damaged.sent.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(
        master_row_of(&c, 0).await.received_packet_no,
        3,
        "packet 3 went before the answer to 2 was applied"
    );
    let mine = e.store().get_node_by_code("MASTER").await.unwrap().unwrap();
    assert_eq!((mine.sent_packet_no, mine.out_packet_no), (1, 3));
    assert_eq!(queued(e).await, 10, "packets 2 and 3 wait for their answers");
    let mut revs = Vec::new();
    for &b in &brigades[..12] {
        revs.push(master_rev(&c, "Brigade", b).await);
    }

    // The next session sends 2 and 3 again, then 4. The master applies
    // neither again and answers each with its own results.
    let again = DamageAnswerTo::new(c.transport(0).unwrap(), 0);
    let s = bounded("the session after", e.sync_session(&again, &NoProgress))
        .await
        .unwrap();
    assert_eq!(*again.sent.lock().unwrap(), vec![2, 3, 4]);
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert_eq!(queued(e).await, 0);
    for (&b, rev) in brigades[..12].iter().zip(revs) {
        assert_eq!(
            master_rev(&c, "Brigade", b).await,
            rev,
            "a resent packet was applied again"
        );
    }

    // Every copy is based on the master's revision: an edit of one from
    // packet 2 and one from packet 3 is no conflict.
    update(e, "Brigade", brigades[5], brigade("B05", "Oleg")).await;
    update(e, "Brigade", brigades[9], brigade("B09", "Oleg")).await;
    let s = sync(&c, 0).await;
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert!(all_audit(&c).await.is_empty());
    assert_eq!(
        data_of(c.master(), "Brigade", brigades[5]).await,
        brigade("B05", "Oleg")
    );
    converge(&c).await;
    c.shutdown().await;
}

/// Loses the answer to the first request that says it holds a master
/// packet, after the master has committed it; records every request's
/// acknowledgement, held packet and answer number.
struct LoseAnswerBuiltAhead<T> {
    inner: T,
    lost: AtomicUsize,
    seen: Mutex<Vec<(i64, Option<i64>, i64)>>,
}

impl<T> LoseAnswerBuiltAhead<T> {
    fn new(inner: T, lose: bool) -> Self {
        LoseAnswerBuiltAhead {
            inner,
            lost: AtomicUsize::new(if lose { 0 } else { 1 }),
            seen: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl<T: Transport> Transport for LoseAnswerBuiltAhead<T> {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await?;
        self.seen.lock().unwrap().push((
            request.header.ack_packet_no,
            request.body.holding,
            answer.header.packet_no,
        ));
        if request.body.holding.is_some() && self.lost.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(TransportError::Unreachable {
                reason: "the answer was lost (test)".into(),
                transient: true,
            });
        }
        Ok(answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_resumes_with_the_packet_built_ahead_when_its_answer_was_lost() {
    // A downloading client asks for master packet k + 1 before it applies
    // packet k (docs/protocol.md, "Built ahead for a download"), so the
    // master has two packets in flight. Here the answer carrying k + 1 is
    // lost after the master committed it, while k is applied: the next
    // session acknowledges k and gets k + 1 again over exactly its range,
    // and nothing is missing or received twice.
    let Some(c) = start(1, packets_of_four()).await else {
        return;
    };
    let e = c.client(0);
    let brigades = brigades_on(c.master(), 14).await;
    let lossy = LoseAnswerBuiltAhead::new(c.transport(0).unwrap(), true);
    let err = bounded("the session that loses an answer", e.sync_session(&lossy, &NoProgress))
        .await
        .expect_err("the lost answer fails the session");
    assert!(err.to_string().contains("lost (test)"), "{err}");
    assert_eq!(*lossy.seen.lock().unwrap(), vec![(0, None, 1), (0, Some(1), 2)]);
    let mine = e.store().get_node_by_code("MASTER").await.unwrap().unwrap();
    assert_eq!(mine.received_packet_no, 1, "packet 1 was applied");
    let theirs = master_row_of(&c, 0).await;
    assert_eq!((theirs.sent_packet_no, theirs.out_packet_no), (0, 2));
    assert!(theirs.prev_out_up_to_rev.is_some(), "{theirs:?}");

    // Packets 2 (again), 3 and 4 (4, 4, 2): each asked for while the one
    // before is applied, then a poll acknowledges 4.
    let again = LoseAnswerBuiltAhead::new(c.transport(0).unwrap(), false);
    let s = bounded("the session after", e.sync_session(&again, &NoProgress))
        .await
        .unwrap();
    assert_eq!(
        *again.seen.lock().unwrap(),
        vec![(1, None, 2), (1, Some(2), 3), (2, Some(3), 4), (4, None, 4)]
    );
    assert_eq!(s.received_changes, 10);
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    let theirs = master_row_of(&c, 0).await;
    assert_eq!(
        (theirs.sent_packet_no, theirs.out_packet_no, theirs.prev_out_up_to_rev),
        (4, 4, None)
    );
    for &b in &brigades {
        assert_eq!(master_rev(&c, "Brigade", b).await, e.get("Brigade", b).await.unwrap().rev.unwrap());
    }
    converge(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_during_sync_is_not_lost() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(0);
    let crew = create(e, "Brigade", brigade("Crew", "Ivan")).await;
    let yard = create(e, "Site", site("Yard", None)).await;
    let worker = create(e, "Employee", employee("Ivan Petrov", crew, 20.0)).await;
    let x = create(
        e,
        "DailyReport",
        report("2025-04-01", crew, yard, "draft", &[]),
    )
    .await;
    converge(&c).await;
    let sent = report("2025-04-01", crew, yard, "submitted", &[]);
    update(e, "DailyReport", x, sent.clone()).await;
    let during = report(
        "2025-04-01",
        crew,
        yard,
        "approved",
        &[(worker, 3.0, "typed during sync")],
    );
    let new_uuid = Uuid::now_v7();
    let new_data = brigade("Typed during sync", "Nina");
    let faulty = EditWhileInFlight {
        inner: c.transport(0).unwrap(),
        client: e.clone(),
        edited: ("DailyReport", x, during.clone()),
        created: ("Brigade", new_uuid, new_data.clone()),
        calls: AtomicUsize::new(0),
        first_exchange_carried_edited: Mutex::new(None),
    };
    let s = bounded(
        "the session with an edit in flight",
        e.sync_session(&faulty, &NoProgress),
    )
    .await
    .expect("the session succeeds");
    assert_eq!(
        *faulty.first_exchange_carried_edited.lock().unwrap(),
        Some((true, false)),
        "precondition: the edited report was in flight"
    );
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    // The client never lost its edit to the version it had sent.
    assert_eq!(data_of(e, "DailyReport", x).await, during);

    let s = sync(&c, 0).await;
    assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
    assert_eq!(queued(e).await, 0);
    assert_eq!(data_of(e, "DailyReport", x).await, during);
    assert_eq!(data_of(c.master(), "DailyReport", x).await, during);
    assert_eq!(data_of(c.master(), "Brigade", new_uuid).await, new_data);
    assert!(all_audit(&c).await.is_empty(), "no conflict was recorded");
    converge(&c).await;
    assert_eq!(data_of(c.client(1), "DailyReport", x).await, during);
    c.shutdown().await;
}

/// The other window: the master's answer carries a newer version of an
/// entity, and the user edits that entity on the client before the answer
/// is applied. The edit was made on an older version, so it is a conflict
/// the master decides (server-wins here) — visibly: the session reports it
/// and the edit is kept in history. It is neither lost nor silently
/// overwritten by the arriving version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_during_sync_of_an_arriving_entity_is_decided_by_the_master_with_a_trace() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let z = create(c.master(), "Site", site("Depot", None)).await;
    converge(&c).await;
    let newer = site("Depot (client 2)", None);
    update(c.client(1), "Site", z, newer.clone()).await;
    sync(&c, 1).await;

    let e = c.client(0);
    let typed = site("Depot (typed on client 1 during sync)", None);
    let new_uuid = Uuid::now_v7();
    let faulty = EditWhileInFlight {
        inner: c.transport(0).unwrap(),
        client: e.clone(),
        edited: ("Site", z, typed.clone()),
        created: ("Brigade", new_uuid, brigade("Typed during sync", "Nina")),
        calls: AtomicUsize::new(0),
        first_exchange_carried_edited: Mutex::new(None),
    };
    let s = bounded(
        "the session with an edit in flight",
        e.sync_session(&faulty, &NoProgress),
    )
    .await
    .expect("the session succeeds");
    assert_eq!(
        *faulty.first_exchange_carried_edited.lock().unwrap(),
        Some((false, true)),
        "precondition: the master's answer carried the entity"
    );
    assert_eq!(
        s.kept_local, 1,
        "the arriving version did not overwrite the edit"
    );
    assert_eq!(outcome_of(&s, z), Some(Outcome::ConflictMasterWon));
    let h = c.master().store().history(z).await.unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].serialized_data["data"], typed);
    assert_eq!(h[0].source_node_id, Some(node_id(&c, 0)));
    assert!(
        c.master().get("Brigade", new_uuid).await.is_ok(),
        "the new entity arrived"
    );
    converge(&c).await;
    assert_eq!(data_of(e, "Site", z).await, newer);
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Schema compatibility

/// A copy of the example schema set with another version number.
fn schemas_with_version(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("schema-set.json"),
        json!({"version": version}).to_string(),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_with_other_schema_major_is_refused_before_anything_is_applied() {
    let schemas = schemas_with_version("2.0.0");
    let Some(c) = start(
        1,
        ClusterOptions {
            client_schemas: Some(schemas.path().to_path_buf()),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    create(c.client(0), "Brigade", brigade("Future", "Zoe")).await;

    let err = bounded("sync", c.sync(0))
        .await
        .expect_err("the master refuses");
    let text = format!("{err:#}");
    check_refused(engine_error(&err), 409, "schema_version_mismatch");
    assert!(
        text.contains("2.0.0") && text.contains("1.0.0"),
        "both versions named: {text}"
    );
    assert!(
        dump(c.master()).await.unwrap().is_empty(),
        "nothing was applied"
    );
    assert_eq!(master_row_of(&c, 0).await.received_packet_no, 0);
    assert_eq!(
        queued(c.client(0)).await,
        1,
        "the change waits for a compatible schema set"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_with_same_schema_major_and_newer_minor_syncs() {
    let schemas = schemas_with_version("1.3.1");
    let Some(c) = start(
        1,
        ClusterOptions {
            client_schemas: Some(schemas.path().to_path_buf()),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let x = create(c.client(0), "Brigade", brigade("Compatible", "Zoe")).await;
    sync(&c, 0).await;
    assert_eq!(queued(c.client(0)).await, 0);
    assert_eq!(
        data_of(c.master(), "Brigade", x).await["name"],
        "Compatible"
    );
    assert_eq!(
        master_row_of(&c, 0).await.schema_version.as_deref(),
        Some("1.3.1")
    );
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. Conflict strategy per type

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_type_last_writer_wins_from_config() {
    let Some(c) = start(
        2,
        ClusterOptions {
            master_toml: "\n[conflicts.per_type]\nDailyReport = \"last-writer-wins\"\n".into(),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let (c1, c2) = (c.client(0), c.client(1));
    let crew = create(c.master(), "Brigade", brigade("Crew", "Ivan")).await;
    let place = create(c.master(), "Site", site("Yard", None)).await;
    let r1 = create(
        c.master(),
        "DailyReport",
        report("2025-05-01", crew, place, "draft", &[]),
    )
    .await;
    let r2 = create(
        c.master(),
        "DailyReport",
        report("2025-05-02", crew, place, "draft", &[]),
    )
    .await;
    converge(&c).await;

    // Phase A: the earlier edit (client 1) reaches the master first; the
    // later one (client 2) then wins the conflict. Brigades keep the
    // default: the later brigade edit loses all the same.
    let early_r1 = report("2025-05-01", crew, place, "submitted", &[]);
    let late_r1 = report("2025-05-01", crew, place, "approved", &[]);
    let early_crew = brigade("Crew", "early foreman");
    update(c1, "DailyReport", r1, early_r1.clone()).await;
    update(c1, "Brigade", crew, early_crew.clone()).await;
    update(c2, "DailyReport", r1, late_r1.clone()).await;
    update(c2, "Brigade", crew, brigade("Crew", "late foreman")).await;
    check_later(c1, c2, "DailyReport", r1).await;
    check_later(c1, c2, "Brigade", crew).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    let s = sync(&c, 1).await;
    assert_eq!(
        outcome_of(&s, r1),
        Some(Outcome::ConflictIncomingWon),
        "the later report edit wins"
    );
    assert_eq!(
        outcome_of(&s, crew),
        Some(Outcome::ConflictMasterWon),
        "brigades stay server-wins"
    );

    // Phase B: the later edit (client 2) reaches the master first; the
    // earlier one (client 1) then loses.
    let early_r2 = report("2025-05-02", crew, place, "submitted", &[]);
    let late_r2 = report("2025-05-02", crew, place, "approved", &[]);
    update(c1, "DailyReport", r2, early_r2.clone()).await;
    update(c2, "DailyReport", r2, late_r2.clone()).await;
    check_later(c1, c2, "DailyReport", r2).await;
    assert!(sync(&c, 1).await.conflicts.is_empty());
    let s = sync(&c, 0).await;
    assert_eq!(
        outcome_of(&s, r2),
        Some(Outcome::ConflictMasterWon),
        "the earlier report edit loses"
    );

    // Whatever the order, the later report edit stands and the loser is in
    // history; the brigade kept the master's (first-arrived) version.
    assert_eq!(data_of(c.master(), "DailyReport", r1).await, late_r1);
    assert_eq!(data_of(c.master(), "DailyReport", r2).await, late_r2);
    assert_eq!(data_of(c.master(), "Brigade", crew).await, early_crew);
    for (r, lost) in [(r1, &early_r1), (r2, &early_r2)] {
        let h = c.master().store().history(r).await.unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].source_node_id, Some(node_id(&c, 0)));
        assert_eq!(&h[0].serialized_data["data"], lost);
        assert!(
            h[0].conflict_resolution.contains("last-writer-wins"),
            "{}",
            h[0].conflict_resolution
        );
        let a = c.master().store().audit(Some(r), 10).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].strategy, "last-writer-wins");
    }
    let a = c.master().store().audit(Some(crew), 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].strategy, "server-wins");
    assert_eq!(a[0].node_id, node_id(&c, 1));

    converge(&c).await;
    for i in 0..2 {
        assert_eq!(data_of(c.client(i), "DailyReport", r1).await, late_r1);
        assert_eq!(data_of(c.client(i), "DailyReport", r2).await, late_r2);
    }
    c.shutdown().await;
}

/// Precondition of a last-writer-wins scenario: client 2's version of the
/// entity is the later one.
async fn check_later(c1: &Engine, c2: &Engine, ty: &str, uuid: Uuid) {
    let t1 = c1.get(ty, uuid).await.unwrap().updated_at;
    let t2 = c2.get(ty, uuid).await.unwrap().updated_at;
    assert!(
        t2 > t1,
        "precondition: client 2's edit of {ty} {uuid} is the later one"
    );
}

fn outcome_of(s: &SyncSummary, uuid: Uuid) -> Option<Outcome> {
    s.conflicts
        .iter()
        .find(|r| r.uuid == uuid)
        .map(|r| r.outcome)
}

// ---------------------------------------------------------------------------
// 8. Packet bounds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_queue_drains_in_bounded_packets() {
    let Some(c) = start(
        2,
        ClusterOptions {
            max_packet_entities: Some(10),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let ops: Vec<BatchOp> = (0..95)
        .map(|i| BatchOp::Put {
            entity_type: "Brigade".into(),
            uuid: Uuid::now_v7(),
            data: brigade(&format!("Brigade {i:02}"), "Ivan"),
        })
        .collect();
    c.client(0).batch(ops).await.expect("batch of 95");
    assert_eq!(queued(c.client(0)).await, 95);

    let s = sync(&c, 0).await;
    // The answer to the last packet ends the session: the master had
    // nothing for us and the queue is empty, so no round only polls.
    assert_eq!(
        s.rounds, 10,
        "95 changes in packets of 10 take 10 rounds, no more: {s:?}"
    );
    assert_eq!(s.sent_changes, 95);
    assert_eq!(queued(c.client(0)).await, 0);
    assert_eq!(dump(c.master()).await.unwrap().len(), 95);
    // The master's log past the client's cursor held only the client's own
    // versions: the cursor moved past them at once, with no master packet
    // for the client to acknowledge, and the client shows no lag.
    let row = master_row_of(&c, 0).await;
    assert_eq!(row.out_packet_no, 0, "{row:?}");
    let behind = c
        .master()
        .store()
        .count_revisions_after(row.acked_rev, row.id)
        .await
        .unwrap();
    assert_eq!(behind, 0, "{row:?}");

    // Client 2 has 25 changes of its own to send while it receives the 95.
    for i in 0..25 {
        create(c.client(1), "Site", site(&format!("Site {i:02}"), None)).await;
    }
    let s = sync(&c, 1).await;
    assert!(
        s.rounds >= 10,
        "95 changes in packets of 10 need 10 rounds: {s:?}"
    );
    assert_eq!(s.received_changes, 95);
    assert_eq!(s.sent_changes, 25);
    assert_eq!(queued(c.client(1)).await, 0);
    converge(&c).await;
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 9. Authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_401() {
    let Some(c) = start(1, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(0);
    create(e, "Brigade", brigade("Intruders", "Mallory")).await;
    let master_id = c.master().identity().node_id;
    let forged = format!("hs1.{}.{}", master_id.simple(), "0".repeat(64));
    let transport = c.transport_with_token(0, &forged).unwrap();
    let err = bounded(
        "sync with a wrong token",
        e.sync_session(&transport, &NoProgress),
    )
    .await
    .expect_err("a wrong token is refused");
    check_refused(&err, 401, "unauthenticated");
    assert!(dump(c.master()).await.unwrap().is_empty());
    assert_eq!(queued(e).await, 1);
    // The right token still works.
    sync(&c, 0).await;
    assert_eq!(queued(e).await, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_node_is_refused() {
    let Some(c) = start(1, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(0);
    create(e, "Brigade", brigade("Before", "Ivan")).await;
    sync(&c, 0).await;

    c.master()
        .update_node_access("DESKTOP-1", true, None)
        .await
        .expect("revoke");
    let x = create(e, "Brigade", brigade("After", "Ivan")).await;
    let err = bounded("sync of a revoked node", c.sync(0))
        .await
        .expect_err("a revoked node is refused");
    check_refused(engine_error(&err), 401, "unauthenticated");
    assert!(
        c.master()
            .store()
            .get_entity("Brigade", x)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(queued(e).await, 1);

    // A rotated token lets the node back in; the old one stays refused.
    let master_id = c.master().identity().node_id;
    let fresh = hubsync::auth::new_token(master_id).expect("token");
    c.master()
        .update_node_access("DESKTOP-1", false, Some(&hubsync::auth::token_hash(&fresh)))
        .await
        .expect("rotate");
    let err = bounded("sync with the old token", c.sync(0))
        .await
        .expect_err("the old token is refused");
    check_refused(engine_error(&err), 401, "unauthenticated");
    let transport = c.transport_with_token(0, &fresh).unwrap();
    bounded(
        "sync with the new token",
        e.sync_session(&transport, &NoProgress),
    )
    .await
    .expect("the new token works");
    assert_eq!(queued(e).await, 0);
    assert!(
        c.master()
            .store()
            .get_entity("Brigade", x)
            .await
            .unwrap()
            .is_some()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_another_node_is_forbidden_403() {
    let Some(c) = start(2, ClusterOptions::default()).await else {
        return;
    };
    let e = c.client(1);
    create(e, "Brigade", brigade("Impostor", "Mallory")).await;
    // Client 2 presents client 1's (valid) token.
    let transport = c.transport_with_token(1, &c.tokens[0]).unwrap();
    let err = bounded(
        "sync with another node's token",
        e.sync_session(&transport, &NoProgress),
    )
    .await
    .expect_err("the sender must match the token");
    check_refused(&err, 403, "forbidden");
    assert!(dump(c.master()).await.unwrap().is_empty());
    assert_eq!(master_row_of(&c, 0).await.received_packet_no, 0);
    assert_eq!(queued(e).await, 1);
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// 10. Master unreachable

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_master_down_fails_clearly_and_keeps_changes() {
    let Some(c) = start(1, ClusterOptions::default()).await else {
        return;
    };
    let x = create(c.client(0), "Brigade", brigade("Night crew", "Ivan")).await;
    sync(&c, 0).await;

    let down = bounded("stopping the master", c.stop_master()).await;
    let e = down.client(0);
    update(e, "Brigade", x, brigade("Night crew", "Oleg")).await;
    let y = create(e, "Site", site("Offline site", None)).await;
    let err = bounded("sync with the master down", down.sync(0))
        .await
        .expect_err("no master, no sync");
    let text = format!("{err:#}");
    assert!(text.contains("could not be reached"), "{text}");
    assert!(
        matches!(
            engine_error(&err),
            EngineError::Transport(TransportError::Unreachable { .. })
        ),
        "{text}"
    );
    assert_eq!(queued(e).await, 2, "the changes stay queued");

    // The master comes back on the same address; the changes go through.
    let c = bounded("restarting the master", down.restart_master())
        .await
        .expect("the master restarts");
    let s = sync(&c, 0).await;
    assert_eq!(s.sent_changes, 2);
    assert_eq!(queued(c.client(0)).await, 0);
    assert_eq!(data_of(c.master(), "Brigade", x).await["foreman"], "Oleg");
    assert_eq!(data_of(c.master(), "Site", y).await["name"], "Offline site");
    assert!(all_audit(&c).await.is_empty());
    c.shutdown().await;
}

// ---------------------------------------------------------------------------
// Identical edits that meet on the master

/// Two clients make the same edit. The second client's change reaches the
/// master after the master already sent it the first client's version,
/// which the client could not apply then (its own change was still queued,
/// in a later packet). Same content is not a conflict — but the second
/// client must still end up with the master's version (its `updated_at`
/// and revision), like every other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_edits_are_no_conflict_and_converge() {
    let Some(c) = start(
        2,
        ClusterOptions {
            max_packet_entities: Some(2),
            ..ClusterOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let x = create(c.master(), "Brigade", brigade("Pavers", "Ivan")).await;
    converge(&c).await;

    let same = brigade("Pavers", "Oleg");
    update(c.client(0), "Brigade", x, same.clone()).await;
    assert!(sync(&c, 0).await.conflicts.is_empty());
    // Client 2: two other changes first, so that its edit of x travels in
    // the second packet, after the master's packet with client 1's version.
    create(c.client(1), "Site", site("Lot 1", None)).await;
    create(c.client(1), "Site", site("Lot 2", None)).await;
    update(c.client(1), "Brigade", x, same.clone()).await;
    let s = sync(&c, 1).await;
    assert!(
        s.conflicts.is_empty(),
        "same content is no conflict: {:?}",
        s.conflicts
    );
    assert_eq!(
        s.kept_local, 1,
        "precondition: the master's version met a queued change"
    );
    assert!(all_audit(&c).await.is_empty());

    let state = converge(&c).await;
    assert!(
        state
            .iter()
            .any(|(t, u, _, _, d)| t == "Brigade" && *u == x && *d == same)
    );
    c.shutdown().await;
}
