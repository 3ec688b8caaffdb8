//! `suite`: the benchmark suite of issue #8. A real master and real clients
//! — separate `hubsync serve` processes (this binary re-executed as
//! `hubsync-bench node …`, i.e. the `hubsync` command line) talking HTTPS on
//! loopback, with SQLite files under `target/bench/work/` — and
//! DailyReport-shaped data (~500 bytes of JSON, three lines). Every figure
//! has a baseline measured in the same run; see [`crate::report`] for how
//! the ratio reads.
//!
//! Scenarios, in the order they run:
//! 1. incremental sync of `INCR` changes with almost nothing in sync (the
//!    baseline of 6);
//! 2. local writes with change registration through the client's local API,
//!    single (`POST /api/v1/entities/DailyReport`) and batched
//!    (`POST /api/v1/batch`, 500 per request) vs raw SQLite inserts;
//! 3. full push of everything written (N + singles) client → SQLite master
//!    vs a raw insert of the same rows;
//! 4. incremental sync of `INCR` changes after N are in sync;
//! 5. initial download of everything into a fresh client vs a raw insert;
//! 6. the same push to a PostgreSQL master (when a server is configured) vs
//!    a raw insert into that database;
//! 7. many clients exchanging small packets with one master at once vs one
//!    client alone;
//! 8. a master write with 10 and with many registered nodes;
//! 9. peak RSS (`VmHWM`) of the master and client processes vs just started.

mod many;
mod proc;
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hubsync::config::Config;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::data::{Refs, daily_report};
use crate::report::Row;
use crate::{Args, Outcome};
use proc::{NodeProc, Perf, free_addr};
use raw::CHUNK;

/// Changes in the incremental scenario.
const INCR: usize = 1_000;
const CALL: Duration = Duration::from_secs(600);

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// Sizes of one run.
struct Plan {
    n: usize,
    single: usize,
    clients: usize,
    rounds: usize,
    nodes: usize,
    master_writes: usize,
}

impl Plan {
    fn from(args: &Args) -> Plan {
        let q = args.quick;
        Plan {
            n: args.n.unwrap_or(if q { 2_000 } else { 100_000 }),
            single: if q { 100 } else { 1_000 },
            clients: args.clients.unwrap_or(if q { 50 } else { 500 }),
            rounds: if q { 3 } else { 4 },
            nodes: args.nodes.unwrap_or(if q { 1_000 } else { 10_000 }),
            master_writes: if q { 50 } else { 300 },
        }
    }
}

/// A master directory made by `hubsync init master`, not yet running.
struct MasterDir {
    dir: PathBuf,
    cfg: PathBuf,
    api: SocketAddr,
    sync: SocketAddr,
}

async fn make_master(root: &Path, name: &str, storage: Option<&str>) -> anyhow::Result<MasterDir> {
    let dir = root.join(name);
    let (api, sync) = (free_addr()?, free_addr()?);
    let out = hubsync::init::init_master(&hubsync::init::MasterInit {
        dir: &dir,
        listen: &sync.to_string(),
        api: &api.to_string(),
        schemas: Some(&schemas_dir()),
        storage,
        code: "MASTER",
    })
    .await
    .with_context(|| format!("init master {}", dir.display()))?;
    Ok(MasterDir {
        dir,
        cfg: out.config,
        api,
        sync,
    })
}

/// Registers nodes on a master that is not running (in process, as
/// `hubsync node add` does); returns the master's id and the nodes.
async fn register(
    cfg: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<(Uuid, Vec<many::Peer>)> {
    let node = hubsync::node::Node::open(Config::load(cfg)?).await?;
    let master_id = node.engine.identity().node_id;
    let mut peers = Vec::with_capacity(count);
    for i in 0..count {
        let token = hubsync::auth::new_token(master_id)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let code = format!("{prefix}-{}", i + 1);
        let rec = node
            .engine
            .add_node(&code, &code, &hubsync::auth::token_hash(&token))
            .await?;
        peers.push(many::Peer {
            node_id: rec.id,
            token,
        });
    }
    node.engine.store().close().await;
    Ok((master_id, peers))
}

/// `hubsync init client` for a registered node; returns its config and API.
async fn make_client(
    root: &Path,
    name: &str,
    m: &MasterDir,
    peer: &many::Peer,
) -> anyhow::Result<(PathBuf, SocketAddr)> {
    let api = free_addr()?;
    let out = hubsync::init::init_client(&hubsync::init::ClientInit {
        dir: &root.join(name),
        master_url: &format!("https://{}", m.sync),
        ca_cert: &m.dir.join("tls/ca.pem"),
        node_id: peer.node_id,
        token: &peer.token,
        api: &api.to_string(),
        schemas: Some(&schemas_dir()),
        sync_interval_secs: 0,
    })
    .await
    .with_context(|| format!("init client {name}"))?;
    Ok((out.config, api))
}

/// Writes `rows` (DailyReports) through `POST /api/v1/batch`, 500 per
/// request; the time taken.
async fn batch_write(node: &NodeProc, ty: &str, rows: &[Value]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in rows.chunks(CHUNK) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|d| json!({"op": "put", "type": ty, "data": d}))
            .collect();
        node.call(
            "POST",
            "/api/v1/batch",
            Some(&json!({"operations": ops})),
            CALL,
        )
        .await?;
    }
    Ok(started.elapsed())
}

/// The reference entities through one batch (with their uuids).
async fn write_refs(node: &NodeProc, refs: &Refs) -> anyhow::Result<()> {
    let ops: Vec<Value> = refs
        .entities()
        .into_iter()
        .map(|(t, u, d)| json!({"op": "put", "type": t, "uuid": u, "data": d}))
        .collect();
    node.call(
        "POST",
        "/api/v1/batch",
        Some(&json!({"operations": ops})),
        CALL,
    )
    .await?;
    Ok(())
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or(0)
}

/// One sync session, timed; fails unless `expect_sent` changes were sent.
async fn timed_sync(
    node: &NodeProc,
    expect_sent: Option<u64>,
) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let s = node.sync().await?;
    let took = started.elapsed();
    if let Some(e) = expect_sent {
        anyhow::ensure!(
            count(&s, "sent_changes") == e,
            "{}: sync sent {} changes, expected {e}: {s}",
            node.name,
            count(&s, "sent_changes")
        );
    }
    Ok((took, s))
}

fn reports(from: usize, n: usize, refs: &Refs) -> Vec<Value> {
    (from..from + n).map(|i| daily_report(i, refs)).collect()
}

fn per_s(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn say(what: &str) {
    eprintln!("suite: {what} (load {})", crate::report::loadavg());
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let plan = Plan::from(&args);
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let root_dir = tempfile::tempdir_in(&work)?;
    let root = root_dir.path();
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();
    extra.insert("n".into(), json!(plan.n));
    extra.insert("work_dir".into(), json!(root.display().to_string()));
    let n = plan.n;

    // ---- SQLite master, client A (writer and pusher), client B (downloader)
    say("SQLite master and two clients");
    let m = make_master(root, "master", None).await?;
    let (_, peers) = register(&m.cfg, "CLIENT", 2).await?;
    let master = NodeProc::start("master", &m.cfg, m.api).await?;
    let master_idle = master.rss_mb();
    let (a_cfg, a_api) = make_client(root, "client-a", &m, &peers[0]).await?;
    let a = NodeProc::start("client-a", &a_cfg, a_api).await?;
    let client_idle = a.rss_mb();
    let refs = Refs::new();
    write_refs(&a, &refs).await?;
    timed_sync(&a, Some(5)).await?;
    let mut next = 0;

    // 1. incremental with (almost) nothing in sync: the baseline of 4.
    say("incremental sync, nothing in sync yet");
    batch_write(&a, "DailyReport", &reports(next, INCR, &refs)).await?;
    next += INCR;
    let (inc_small, _) = timed_sync(&a, Some(INCR as u64)).await?;

    // 2. local writes, single and batched.
    say(&format!("local writes: {} single", plan.single));
    let single = reports(next, plan.single, &refs);
    next += plan.single;
    let started = Instant::now();
    for d in &single {
        a.call("POST", "/api/v1/entities/DailyReport", Some(d), CALL)
            .await?;
    }
    let single_t = started.elapsed();
    let base = raw::sqlite_insert(
        &root.join("raw-single.db"),
        "DailyReport",
        single.len(),
        1,
        |i| single[i].clone(),
    )
    .await?;
    rows.push(Row::rate(
        "local write + registration, single",
        format!("{}", plan.single),
        "ent/s",
        per_s(plan.single, single_t),
        "raw SQLite INSERT, 1 row per tx",
        per_s(plan.single, base),
    )
    .note("POST /api/v1/entities/DailyReport on the client's local API, one request after the other"));

    say(&format!("local writes: {n} batched"));
    let big = reports(next, n, &refs);
    next += n;
    let batch_t = batch_write(&a, "DailyReport", &big).await?;
    let base = raw::sqlite_insert(
        &root.join("raw-batch.db"),
        "DailyReport",
        big.len(),
        CHUNK,
        |i| big[i].clone(),
    )
    .await?;
    rows.push(
        Row::rate(
            "local write + registration, batched",
            format!("N={n}"),
            "ent/s",
            per_s(n, batch_t),
            "raw SQLite multi-row INSERT, 500/tx",
            per_s(n, base),
        )
        .note("POST /api/v1/batch, 500 puts per request"),
    );

    // 3. push of everything queued.
    let queued = n + plan.single;
    say(&format!("push of {queued} to the SQLite master"));
    let perf = [
        Perf::start(&master, "push-master"),
        Perf::start(&a, "push-client"),
    ];
    let (push_t, s) = timed_sync(&a, Some(queued as u64)).await?;
    perf.into_iter().flatten().for_each(Perf::stop);
    let mut all = single.clone();
    all.extend(big.iter().cloned());
    drop(big);
    let base = raw::sqlite_insert(
        &m.dir.join("raw-push.db"),
        "DailyReport",
        all.len(),
        CHUNK,
        |i| all[i].clone(),
    )
    .await?;
    rows.push(
        Row::rate(
            "push client -> master (SQLite)",
            format!("N={queued}"),
            "ent/s",
            per_s(queued, push_t),
            "raw SQLite multi-row INSERT, 500/tx",
            per_s(queued, base),
        )
        .note(format!(
            "one sync session over HTTPS: {} rounds, {} bytes sent, {:.1} s",
            count(&s, "rounds"),
            count(&s, "bytes_sent"),
            push_t.as_secs_f64()
        )),
    );
    let a_peak_push = a.peak_rss_mb();
    let master_peak_push = master.peak_rss_mb();

    // 4. incremental after N.
    say("incremental sync after N");
    batch_write(&a, "DailyReport", &reports(next, INCR, &refs)).await?;
    let (inc_big, _) = timed_sync(&a, Some(INCR as u64)).await?;
    rows.push(
        Row::cost(
            "incremental sync, 1000 changes",
            format!("after N={queued}"),
            "ms",
            ms(inc_big),
            "same, with ~0 entities in sync",
            ms(inc_small),
        )
        .note(
            "whole session (POST /api/v1/sync): push of 1000 new reports and their acknowledgement",
        ),
    );

    // 5. initial download into a fresh client.
    say("initial download into a fresh client");
    let (b_cfg, b_api) = make_client(root, "client-b", &m, &peers[1]).await?;
    let b = NodeProc::start("client-b", &b_cfg, b_api).await?;
    let perf = [
        Perf::start(&master, "download-master"),
        Perf::start(&b, "download-client"),
    ];
    let (dl_t, s) = timed_sync(&b, Some(0)).await?;
    perf.into_iter().flatten().for_each(Perf::stop);
    let received = count(&s, "received_changes") as usize;
    anyhow::ensure!(
        received >= queued + 2 * INCR,
        "the fresh client received {received} changes, expected at least {}",
        queued + 2 * INCR
    );
    all.extend(reports(next, received.saturating_sub(all.len()), &refs));
    let base = raw::sqlite_insert(
        &root.join("client-b/raw-download.db"),
        "DailyReport",
        received.min(all.len()),
        CHUNK,
        |i| all[i].clone(),
    )
    .await?;
    rows.push(
        Row::rate(
            "initial download master -> client",
            format!("N={received}"),
            "ent/s",
            per_s(received, dl_t),
            "raw SQLite multi-row INSERT, 500/tx",
            per_s(received, base),
        )
        .note(format!(
            "one sync session over HTTPS: {} rounds, {:.1} s",
            count(&s, "rounds"),
            dl_t.as_secs_f64()
        )),
    );
    drop(all);
    let b_peak = b.peak_rss_mb();
    let master_peak = master.peak_rss_mb();
    rows.push(
        Row::cost(
            "peak RSS master (push+download)",
            format!("N={received}"),
            "MB",
            master_peak,
            "the master just started",
            master_idle,
        )
        .note(format!(
            "VmHWM of the master process; {master_peak_push:.1} MB after the push"
        )),
    );
    rows.push(
        Row::cost(
            "peak RSS client (push)",
            format!("N={queued}"),
            "MB",
            a_peak_push,
            "a client just started",
            client_idle,
        )
        .note("VmHWM of the pushing client process (includes the batched local writes)"),
    );
    rows.push(
        Row::cost(
            "peak RSS client (download)",
            format!("N={received}"),
            "MB",
            b_peak,
            "a client just started",
            client_idle,
        )
        .note("VmHWM of the downloading client process"),
    );
    a.stop();
    b.stop();
    master.stop();

    // 6. PostgreSQL master.
    match pg_url() {
        None => eprintln!(
            "suite: SKIPPED the PostgreSQL master: set HUBSYNC_BENCH_POSTGRES_URL or HUBSYNC_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
        ),
        Some(base_url) => {
            say(&format!("push of {n} to a PostgreSQL master"));
            let db = hubsync_store_postgres::scratch::ScratchDatabase::create(&base_url).await?;
            let pm = make_master(root, "master-pg", Some(&db.url)).await?;
            let (_, peers) = register(&pm.cfg, "CLIENT", 1).await?;
            let master = NodeProc::start("master-pg", &pm.cfg, pm.api).await?;
            let master_idle = master.rss_mb();
            let (c_cfg, c_api) = make_client(root, "client-pg", &pm, &peers[0]).await?;
            let c = NodeProc::start("client-pg", &c_cfg, c_api).await?;
            let refs = Refs::new();
            write_refs(&c, &refs).await?;
            let rows_pg = reports(0, n, &refs);
            batch_write(&c, "DailyReport", &rows_pg).await?;
            let (t, s) = timed_sync(&c, Some(n as u64 + 5)).await?;
            let base = raw::postgres_insert(&db.url, "DailyReport", rows_pg.len(), |i| {
                rows_pg[i].clone()
            })
            .await?;
            rows.push(
                Row::rate(
                    "push client -> master (PostgreSQL)",
                    format!("N={n}"),
                    "ent/s",
                    per_s(n + 5, t),
                    "raw PG multi-row INSERT, 500/tx",
                    per_s(n, base),
                )
                .note(format!(
                    "one sync session over HTTPS: {} rounds, {:.1} s",
                    count(&s, "rounds"),
                    t.as_secs_f64()
                )),
            );
            rows.push(Row::cost(
                "peak RSS master PG (push)",
                format!("N={n}"),
                "MB",
                master.peak_rss_mb(),
                "the master just started",
                master_idle,
            ));
            c.stop();
            master.stop();
            drop(db);
        }
    }

    // 7. many clients at once.
    say(&format!("{} clients at once", plan.clients));
    let mm = make_master(root, "master-many", None).await?;
    let (master_id, peers) = register(&mm.cfg, "MANY", plan.clients + 1).await?;
    let master = NodeProc::start("master-many", &mm.cfg, mm.api).await?;
    let target = many::Target {
        tls: hubsync::tls::client_config(&mm.dir.join("tls/ca.pem"))?,
        url: format!("https://{}", mm.sync),
        master_id,
        schema_version: hubsync_core::schema::EntityRegistry::load_dir(&schemas_dir())?
            .version()
            .to_string(),
    };
    let alone = many::run(&target, &peers[..1], 20).await;
    anyhow::ensure!(
        alone.errors == 0,
        "one client alone failed: {:?}",
        alone.first_error
    );
    let crowd = many::run(&target, &peers[1..], plan.rounds).await;
    let size = format!("{} clients", plan.clients);
    rows.push(
        Row::rate("many clients: throughput", size.clone(), "exch/s", crowd.per_s(), "one client alone", alone.per_s())
            .note(format!(
                "{} exchanges of one small entity each ({} per client), {} entities received back, {:.1} s",
                crowd.exchanges(),
                plan.rounds,
                crowd.received,
                crowd.wall.as_secs_f64()
            )),
    );
    rows.push(Row::cost(
        "many clients: p50 latency",
        size.clone(),
        "ms",
        crowd.quantile_ms(0.5),
        "one client alone, p50",
        alone.quantile_ms(0.5),
    ));
    rows.push(Row::cost(
        "many clients: p99 latency",
        size.clone(),
        "ms",
        crowd.quantile_ms(0.99),
        "one client alone, p99",
        alone.quantile_ms(0.99),
    ));
    rows.push(
        Row::plain("many clients: errors", size, "errors", crowd.errors as f64)
            .note(crowd.first_error.clone().unwrap_or_default()),
    );
    rows.push(Row::cost(
        "peak RSS master (many clients)",
        format!("{} clients", plan.clients),
        "MB",
        master.peak_rss_mb(),
        "the master just started",
        master_idle,
    ));
    master.stop();

    // 8. a master write with 10 and with many registered nodes.
    say(&format!("master writes with 10 and {} nodes", plan.nodes));
    let wm = make_master(root, "master-nodes", None).await?;
    register(&wm.cfg, "NODE", 10).await?;
    let refs = Refs::new();
    let few = master_writes(&wm, &refs, plan.master_writes, true).await?;
    let started = Instant::now();
    register(&wm.cfg, "MORE", plan.nodes - 10).await?;
    let reg_t = started.elapsed();
    let lots = master_writes(&wm, &refs, plan.master_writes, false).await?;
    rows.push(
        Row::cost(
            "master write, single",
            format!("{} nodes", plan.nodes),
            "ms",
            ms(lots) / plan.master_writes as f64,
            "the same with 10 nodes",
            ms(few) / plan.master_writes as f64,
        )
        .note(format!(
            "mean of {} POST /api/v1/entities/DailyReport on the master; registering {} nodes took {:.1} s",
            plan.master_writes,
            plan.nodes - 10,
            reg_t.as_secs_f64()
        )),
    );

    let mut extra = Value::Object(extra);
    extra["rss_idle_master_mb"] = json!(master_idle);
    extra["rss_idle_client_mb"] = json!(client_idle);
    Ok(Outcome::Rows { rows, extra })
}

/// Starts the master of `wm`, (first time) writes the references, times
/// `k` single DailyReport writes on its local API, stops it.
async fn master_writes(
    wm: &MasterDir,
    refs: &Refs,
    k: usize,
    first: bool,
) -> anyhow::Result<Duration> {
    let master = NodeProc::start("master-nodes", &wm.cfg, wm.api).await?;
    if first {
        write_refs(&master, refs).await?;
    }
    let data = reports(0, k, refs);
    let started = Instant::now();
    for d in &data {
        master
            .call("POST", "/api/v1/entities/DailyReport", Some(d), CALL)
            .await?;
    }
    let took = started.elapsed();
    master.stop();
    Ok(took)
}

fn pg_url() -> Option<String> {
    ["HUBSYNC_BENCH_POSTGRES_URL", "HUBSYNC_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
}
