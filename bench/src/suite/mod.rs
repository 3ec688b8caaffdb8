//! `suite`: the benchmark suite of issue #8. A real master and real clients
//! — separate `hubsync serve` processes (this binary re-executed as
//! `hubsync-bench node …`, i.e. the `hubsync` command line) talking HTTPS on
//! loopback, with SQLite files under `target/bench/work/` — and
//! DailyReport-shaped data (~500 bytes of JSON, three lines). Every figure
//! has a baseline measured in the same run; see [`crate::report`] for how
//! the ratio reads.
//!
//! Parts, in the order they run (`--only` picks some, see [`PARTS`]):
//! 1. `incremental`: incremental sync of `INCR` changes with almost nothing
//!    in sync (the baseline of 4);
//! 2. `local`: local writes with change registration through the client's
//!    local API, single (`POST /api/v1/entities/DailyReport`) and batched
//!    (`POST /api/v1/batch`, 500 per request) vs raw SQLite inserts, the
//!    batched ones also vs the rows the store itself gets, written raw into
//!    its own schema (`raw::Rows::Store`);
//! 3. `push`: full push of everything written (N + singles) client →
//!    SQLite master vs a raw insert of the same rows;
//! 4. `incremental`: incremental sync of `INCR` changes after N are in sync;
//! 5. `download`: initial download of everything into a fresh client vs a
//!    raw insert;
//! 6. `pg`: the same push to a PostgreSQL master (when a server is
//!    configured) vs a raw insert into that database, then the initial
//!    download from it into a fresh client vs a raw SQLite insert;
//! 7. `many`: many clients exchanging small packets with one master at once
//!    vs one client alone;
//! 8. `nodes`: a master write, and the master's status (every node's lag),
//!    with 10 and with many registered nodes;
//! 9. peak RSS (`VmHWM`) of the master and client processes vs just started
//!    (with the parts that move data), and of the bench process itself.
//!
//! A part that needs data another part would have written (the push needs N
//! queued reports, the download N reports on the master) writes and syncs
//! it untimed when that part is left out. The data is never held whole:
//! report `i` is [`daily_report`]`(i, refs)`, generated a request (or a
//! baseline transaction) at a time, so the bench's own memory does not grow
//! with N. Long steps print progress to stderr every [`PROGRESS_EVERY`].

mod many;
mod proc;
mod raw;

use std::cell::Cell;
use std::net::SocketAddr;
use std::ops::Range;
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
/// Incremental sessions timed in a row; the row reports their median (one
/// session is ~0.1 s, and a single one moved ±20 % between runs).
const INCR_REPEATS: usize = 5;
const CALL: Duration = Duration::from_secs(600);
/// GET /api/v1/status calls per master in the `nodes` part.
const STATUS_CALLS: usize = 20;
/// How often a long step (loading, a sync session, a baseline, registering
/// nodes) says on stderr how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The parts of the suite `--only` can name, in the order they run.
pub const PARTS: &[&str] = &[
    "incremental",
    "local",
    "push",
    "download",
    "pg",
    "many",
    "nodes",
];

/// Which parts run (`--only LIST`; all of them without it).
#[derive(Debug, Clone, Copy)]
struct Parts {
    incremental: bool,
    local: bool,
    push: bool,
    download: bool,
    pg: bool,
    many: bool,
    nodes: bool,
}

impl Parts {
    fn from(only: Option<&[String]>) -> anyhow::Result<Parts> {
        if let Some(only) = only {
            let unknown: Vec<&str> = only
                .iter()
                .map(String::as_str)
                .filter(|p| !PARTS.contains(p))
                .collect();
            anyhow::ensure!(
                unknown.is_empty(),
                "--only: no part named {}; the parts are {}",
                unknown.join(", "),
                PARTS.join(",")
            );
        }
        let has = |p: &str| only.is_none_or(|o| o.iter().any(|x| x == p));
        Ok(Parts {
            incremental: has("incremental"),
            local: has("local"),
            push: has("push"),
            download: has("download"),
            pg: has("pg"),
            many: has("many"),
            nodes: has("nodes"),
        })
    }

    /// The parts run on the SQLite master with client A.
    fn sqlite(&self) -> bool {
        self.incremental || self.local || self.push || self.download
    }

    /// Whether N reports must reach the SQLite master.
    fn needs_sync(&self) -> bool {
        self.push || self.incremental || self.download
    }

    fn names(&self) -> Vec<&'static str> {
        let on = [
            self.incremental,
            self.local,
            self.push,
            self.download,
            self.pg,
            self.many,
            self.nodes,
        ];
        PARTS
            .iter()
            .zip(on)
            .filter_map(|(p, on)| on.then_some(*p))
            .collect()
    }
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// Sizes of one run.
struct Plan {
    parts: Parts,
    n: usize,
    single: usize,
    clients: usize,
    rounds: usize,
    /// The interval between a client's exchanges in the paced run of
    /// `many` (a fleet syncing on a timer).
    pace: Duration,
    nodes: usize,
    master_writes: usize,
    /// Employees the reports reference ([`Refs::with_employees`]).
    targets: usize,
}

impl Plan {
    fn from(args: &Args) -> anyhow::Result<Plan> {
        let q = args.quick;
        Ok(Plan {
            parts: Parts::from(args.only.as_deref())?,
            n: args.n.unwrap_or(if q { 2_000 } else { 100_000 }),
            single: if q { 100 } else { 1_000 },
            clients: args.clients.unwrap_or(if q { 50 } else { 500 }),
            rounds: if q { 3 } else { 4 },
            pace: Duration::from_millis(
                args.pace_ms.unwrap_or(if q { 2_000 } else { 5_000 }) as u64
            ),
            nodes: args.nodes.unwrap_or(if q { 1_000 } else { 10_000 }),
            master_writes: if q { 50 } else { 300 },
            targets: args.targets.unwrap_or(3),
        })
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
    // The master keeps its default configuration, rate limit included
    // (3000 requests a minute per node, burst 2000: a 1M push is about
    // 2,000 requests): what is measured is what an operator gets.
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
    let tick = Ticker::new(format!("registering {prefix} nodes"), count);
    for i in 0..count {
        tick.at(i);
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

/// Progress lines on stderr for a long step — rows done, seconds elapsed,
/// the bench's own RSS — at most one per [`PROGRESS_EVERY`]. Printing is
/// off the timed paths (rows are counted while they are generated).
struct Ticker {
    what: String,
    total: usize,
    started: Instant,
    last: Cell<Instant>,
}

impl Ticker {
    fn new(what: impl Into<String>, total: usize) -> Ticker {
        let now = Instant::now();
        Ticker {
            what: what.into(),
            total,
            started: now,
            last: Cell::new(now),
        }
    }

    /// `done` of the step's rows are through.
    fn at(&self, done: usize) {
        if self.last.get().elapsed() >= PROGRESS_EVERY {
            self.last.set(Instant::now());
            eprintln!(
                "suite:   {}: {done}/{} rows, {:.0} s (bench RSS {:.0} MB)",
                self.what,
                self.total,
                self.started.elapsed().as_secs_f64(),
                proc::self_rss_mb()
            );
        }
    }
}

/// Writes DailyReports number `rows` ([`daily_report`]) through
/// `POST /api/v1/batch`, [`CHUNK`] per request. Each request's rows are
/// generated just before it, so memory stays bounded for any count. Returns
/// the time spent in the requests (generating rows is not timed).
async fn batch_write(
    node: &NodeProc,
    refs: &Refs,
    rows: Range<usize>,
    what: &str,
) -> anyhow::Result<Duration> {
    let tick = Ticker::new(format!("{what} on {}", node.name), rows.len());
    let mut took = Duration::ZERO;
    for start in rows.clone().step_by(CHUNK) {
        let end = (start + CHUNK).min(rows.end);
        let ops: Vec<Value> = (start..end)
            .map(|i| json!({"op": "put", "type": "DailyReport", "data": daily_report(i, refs)}))
            .collect();
        let body = json!({ "operations": ops });
        let started = Instant::now();
        node.call("POST", "/api/v1/batch", Some(&body), CALL)
            .await?;
        took += started.elapsed();
        tick.at(end - rows.start);
    }
    Ok(took)
}

/// The reference entities through one batch (with their uuids).
async fn write_refs(node: &NodeProc, refs: &Refs) -> anyhow::Result<()> {
    let ops: Vec<Value> = refs
        .entities()
        .into_iter()
        .map(|(t, u, d)| json!({"op": "put", "type": t, "uuid": u, "data": d}))
        .collect();
    // In order, so that the brigade comes before the employees.
    for part in ops.chunks(CHUNK) {
        node.call(
            "POST",
            "/api/v1/batch",
            Some(&json!({"operations": part})),
            CALL,
        )
        .await?;
    }
    Ok(())
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or(0)
}

/// How long a session moving `changes` may take before the bench gives up:
/// an hour, plus 20 ms per change (50 changes/s at worst, e.g. a loaded
/// PostgreSQL master at 1M).
fn sync_timeout(changes: usize) -> Duration {
    Duration::from_secs(3600) + Duration::from_millis((changes as u64).saturating_mul(20))
}

/// One sync session, timed end to end (one `POST /api/v1/sync`); fails
/// unless `expect_sent` changes were sent. While it runs, a separate task
/// polls the node's `GET /api/v1/status` every [`PROGRESS_EVERY`] and
/// prints its `progress` (one small request per 10 s against a session of
/// minutes; the timed request is awaited on its own).
async fn timed_sync(
    node: &NodeProc,
    expect_sent: Option<u64>,
    changes: usize,
) -> anyhow::Result<(Duration, Value)> {
    let watch = tokio::spawn(watch_sync(node.name.clone(), node.api));
    let started = Instant::now();
    let s = node.sync(sync_timeout(changes)).await;
    let took = started.elapsed();
    watch.abort();
    let s = s?;
    if count(&s, "retry_after_waits") > 0 {
        eprintln!(
            "suite:   {}: the master's rate limit made this session wait {} times (429 Retry-After): the time includes the waits",
            node.name,
            count(&s, "retry_after_waits")
        );
    }
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

/// CPU time the master and a client spent during one step, per entity
/// moved: steadier than wall time on a shared VM, and it shows which side
/// a change made cheaper.
struct CpuMeter {
    master: f64,
    client: f64,
}

/// [`CpuMeter`]'s result, in µs of CPU per entity.
struct CpuPerEntity {
    master: f64,
    client: f64,
}

impl CpuMeter {
    fn start(master: &NodeProc, client: &NodeProc) -> CpuMeter {
        CpuMeter {
            master: master.cpu_secs(),
            client: client.cpu_secs(),
        }
    }

    fn per_entity_us(self, master: &NodeProc, client: &NodeProc, n: usize) -> CpuPerEntity {
        let per = |before: f64, after: f64| (after - before) * 1e6 / n.max(1) as f64;
        CpuPerEntity {
            master: per(self.master, master.cpu_secs()),
            client: per(self.client, client.cpu_secs()),
        }
    }
}

impl CpuPerEntity {
    fn text(&self) -> String {
        format!(
            "CPU per entity: master {:.1} µs, client {:.1} µs",
            self.master, self.client
        )
    }

    fn json(&self) -> Value {
        json!({"master": self.master, "client": self.client})
    }
}

/// The sessions of one incremental measurement.
struct Sessions {
    median: Duration,
    all: Vec<Duration>,
}

impl Sessions {
    /// "min–max ms" of the sessions.
    fn spread(&self) -> String {
        let lo = self.all.iter().min().copied().unwrap_or_default();
        let hi = self.all.iter().max().copied().unwrap_or_default();
        format!("{:.0}–{:.0} ms", ms(lo), ms(hi))
    }
}

/// [`INCR_REPEATS`] times: writes [`INCR`] new reports on `node` (untimed),
/// then times the sync session that pushes them.
async fn incremental(node: &NodeProc, refs: &Refs, next: &mut usize) -> anyhow::Result<Sessions> {
    let mut all = Vec::with_capacity(INCR_REPEATS);
    for _ in 0..INCR_REPEATS {
        batch_write(node, refs, *next..*next + INCR, "writing").await?;
        *next += INCR;
        let (t, _) = timed_sync(node, Some(INCR as u64), INCR).await?;
        all.push(t);
    }
    let mut sorted = all.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    Ok(Sessions { median, all })
}

/// Prints a running session's progress from the node's status, every
/// [`PROGRESS_EVERY`], until aborted.
async fn watch_sync(name: String, api: SocketAddr) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            hubsync::local_client::request(api, "GET", "/api/v1/status", None),
        )
        .await;
        let line = match status {
            Ok(Ok((200, v))) => match v.get("progress").filter(|p| !p.is_null()) {
                Some(p) => format!(
                    "{}/{} changes moved, {} rounds",
                    count(p, "done"),
                    count(p, "total"),
                    count(p, "round")
                ),
                None => "no progress reported yet".to_string(),
            },
            Ok(Ok((code, v))) => format!("status answered HTTP {code}: {v}"),
            Ok(Err(e)) => format!("status unreachable: {e}"),
            Err(_) => "status did not answer within 5 s".to_string(),
        };
        eprintln!(
            "suite:   sync on {name}: {line}, {:.0} s (bench RSS {:.0} MB)",
            started.elapsed().as_secs_f64(),
            proc::self_rss_mb()
        );
    }
}

fn per_s(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn say(what: &str) {
    eprintln!(
        "suite: {what} (load {}, bench RSS {:.0} MB)",
        crate::report::loadavg(),
        proc::self_rss_mb()
    );
}

/// A raw SQLite baseline of `count` reports numbered from `from`, with
/// progress.
async fn raw_sqlite(
    file: &Path,
    refs: &Refs,
    from: usize,
    count: usize,
    per_tx: usize,
    what: &str,
) -> anyhow::Result<Duration> {
    let tick = Ticker::new(format!("baseline: {what}"), count);
    raw::sqlite_insert(file, raw::Rows::Plain, "DailyReport", count, per_tx, |i| {
        tick.at(i);
        daily_report(from + i, refs)
    })
    .await
}

/// The work directory: removed at the end, or kept (`HUBSYNC_BENCH_KEEP`).
enum Keep {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Keep {
    fn path(&self) -> &Path {
        match self {
            Keep::Temp(t) => t.path(),
            Keep::Kept(p) => p,
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let plan = Plan::from(&args)?;
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let root_dir = tempfile::tempdir_in(&work)?;
    // HUBSYNC_BENCH_KEEP=1 keeps the SQLite files, configs and serve.log
    // of every node for inspection (statement logs with HUBSYNC_LOG, say).
    let root_dir = if std::env::var_os("HUBSYNC_BENCH_KEEP").is_some() {
        let kept = root_dir.keep();
        eprintln!(
            "suite: HUBSYNC_BENCH_KEEP: the work directory {} is kept",
            kept.display()
        );
        Keep::Kept(kept)
    } else {
        Keep::Temp(root_dir)
    };
    let root = root_dir.path();
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();
    extra.insert("n".into(), json!(plan.n));
    extra.insert("parts".into(), json!(plan.parts.names()));
    extra.insert("work_dir".into(), json!(root.display().to_string()));

    if plan.parts.sqlite() {
        sqlite_parts(&plan, root, &mut rows, &mut extra).await?;
    }
    if plan.parts.pg {
        pg_part(&plan, root, &mut rows).await?;
    }
    if plan.parts.many {
        many_part(&plan, root, &mut rows).await?;
    }
    if plan.parts.nodes {
        nodes_part(&plan, root, &mut rows).await?;
    }

    let bench_peak = proc::self_peak_rss_mb();
    extra.insert("bench_peak_rss_mb".into(), json!(bench_peak));
    rows.push(
        Row::plain(
            "peak RSS bench process",
            format!("N={}", plan.n),
            "MB",
            bench_peak,
        )
        .note("VmHWM of hubsync-bench itself: rows are generated a request or a transaction at a time, so it does not grow with N"),
    );
    Ok(Outcome::Rows {
        rows,
        extra: Value::Object(extra),
    })
}

/// Parts 1–5 and their RSS rows: the SQLite master, client A (writer and
/// pusher) and client B (downloader).
async fn sqlite_parts(
    plan: &Plan,
    root: &Path,
    rows: &mut Vec<Row>,
    extra: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let parts = plan.parts;
    let n = plan.n;
    say("SQLite master and two clients");
    let m = make_master(root, "master", None).await?;
    let (_, peers) = register(&m.cfg, "CLIENT", 2).await?;
    let master = NodeProc::start("master", &m.cfg, m.api).await?;
    let master_idle = master.rss_mb();
    let (a_cfg, a_api) = make_client(root, "client-a", &m, &peers[0]).await?;
    let a = NodeProc::start("client-a", &a_cfg, a_api).await?;
    let client_idle = a.rss_mb();
    extra.insert("rss_idle_master_mb".into(), json!(master_idle));
    extra.insert("rss_idle_client_mb".into(), json!(client_idle));
    let refs = Refs::with_employees(plan.targets);
    // The brigade, the site and the employees.
    let targets = refs.employees.len() + 2;
    extra.insert("targets".into(), json!(targets));
    write_refs(&a, &refs).await?;
    timed_sync(&a, Some(targets as u64), targets).await?;
    // Entities the master holds: what a fresh client downloads.
    let mut in_master = targets;
    // The number of the next report to write.
    let mut next = 0;

    // 1. incremental with (almost) nothing in sync: the baseline of 4.
    let mut inc_small = None;
    if parts.incremental {
        say("incremental sync, nothing in sync yet");
        let t = incremental(&a, &refs, &mut next).await?;
        in_master += INCR * INCR_REPEATS;
        inc_small = Some(t);
    }

    // 2. local writes, single and batched (or, without `local`, the N
    // reports the other parts need, written untimed).
    let push_from = next;
    if parts.local {
        say(&format!("local writes: {} single", plan.single));
        // plan.single (≤ 1,000) reports, made before the clock starts.
        let single: Vec<Value> = (next..next + plan.single)
            .map(|i| daily_report(i, &refs))
            .collect();
        let started = Instant::now();
        for d in &single {
            a.call("POST", "/api/v1/entities/DailyReport", Some(d), CALL)
                .await?;
        }
        let single_t = started.elapsed();
        drop(single);
        let base = raw_sqlite(
            &root.join("raw-single.db"),
            &refs,
            next,
            plan.single,
            1,
            "single inserts",
        )
        .await?;
        next += plan.single;
        rows.push(Row::rate(
            "local write + registration, single",
            format!("{}", plan.single),
            "ent/s",
            per_s(plan.single, single_t),
            "raw SQLite INSERT, 1 row per tx",
            per_s(plan.single, base),
        )
        .note("POST /api/v1/entities/DailyReport on the client's local API, one request after the other"));
    }
    let batch_from = next;
    next += n;
    if parts.local {
        say(&format!("local writes: {n} batched"));
        let perf = Perf::start(&a, "local-client");
        let batch_t = batch_write(&a, &refs, batch_from..next, "batched writes").await?;
        perf.into_iter().for_each(Perf::stop);
        let base = raw_sqlite(
            &root.join("raw-batch.db"),
            &refs,
            batch_from,
            n,
            CHUNK,
            "batched inserts",
        )
        .await?;
        let tick = Ticker::new("baseline: the store's rows".to_string(), n);
        let store_base = raw::sqlite_insert(
            &root.join("raw-store.db"),
            raw::Rows::Store {
                refs: &|i| refs.of_report(batch_from + i),
            },
            "DailyReport",
            n,
            CHUNK,
            |i| {
                tick.at(i);
                daily_report(batch_from + i, &refs)
            },
        )
        .await?;
        // One figure, two baselines: the plain table (the issue's) and the
        // rows the store's schema needs.
        for (scenario, baseline, took, note) in [
            (
                "local write + registration, batched",
                "raw SQLite multi-row INSERT, 500/tx",
                base,
                "POST /api/v1/batch, 500 puts per request (time in the requests)",
            ),
            (
                "local write + registration, batched, vs its rows",
                "raw INSERTs of the rows the store gets, 500/tx",
                store_base,
                "the same run against the rows a client's store gets for each report, in the store's own schema (every index, foreign keys): the entity, its 5 reference rows, its queue row; multi-row INSERTs, nothing else",
            ),
        ] {
            rows.push(
                Row::rate(
                    scenario,
                    format!("N={n}"),
                    "ent/s",
                    per_s(n, batch_t),
                    baseline,
                    per_s(n, took),
                )
                .note(note),
            );
        }
    } else if parts.needs_sync() {
        say(&format!(
            "loading {n} reports into client-a (untimed: `local` not selected)"
        ));
        let t = batch_write(&a, &refs, batch_from..next, "loading").await?;
        eprintln!(
            "suite:   loaded {n} reports in {:.1} s ({:.0} ent/s)",
            t.as_secs_f64(),
            per_s(n, t)
        );
    }
    let queued = next - push_from;

    // 3. push of everything queued (or, without `push`, the same session
    // untimed when a later part needs the data on the master).
    let mut a_peak_push = None;
    if parts.push {
        say(&format!("push of {queued} to the SQLite master"));
        let perf = [
            Perf::start(&master, "push-master"),
            Perf::start(&a, "push-client"),
        ];
        let cpu = CpuMeter::start(&master, &a);
        let (push_t, s) = timed_sync(&a, Some(queued as u64), queued).await?;
        let cpu = cpu.per_entity_us(&master, &a, queued);
        perf.into_iter().flatten().for_each(Perf::stop);
        eprintln!("suite:   push: {}", cpu.text());
        extra.insert("push_cpu_us_per_entity".into(), cpu.json());
        in_master += queued;
        let base = raw_sqlite(
            &m.dir.join("raw-push.db"),
            &refs,
            push_from,
            queued,
            CHUNK,
            "push rows",
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
                "one sync session over HTTPS: {} rounds, {} bytes sent, {:.1} s; {}",
                count(&s, "rounds"),
                count(&s, "bytes_sent"),
                push_t.as_secs_f64(),
                cpu.text()
            )),
        );
        a_peak_push = Some(a.peak_rss_mb());
    } else if parts.incremental || parts.download {
        say(&format!(
            "sync of {queued} to the SQLite master (untimed: `push` not selected)"
        ));
        let (t, _) = timed_sync(&a, Some(queued as u64), queued).await?;
        in_master += queued;
        eprintln!("suite:   synced {queued} in {:.1} s", t.as_secs_f64());
    }
    let master_peak_push = master.peak_rss_mb();

    // 4. incremental after N.
    if let Some(inc_small) = inc_small {
        say(&format!("incremental sync after N={queued}"));
        let inc_big = incremental(&a, &refs, &mut next).await?;
        in_master += INCR * INCR_REPEATS;
        rows.push(
            Row::cost(
                "incremental sync, 1000 changes",
                format!("after N={queued}"),
                "ms",
                ms(inc_big.median),
                "same, with ~0 entities in sync",
                ms(inc_small.median),
            )
            .note(format!(
                "whole session (POST /api/v1/sync): push of 1000 new reports and their acknowledgement; median of {INCR_REPEATS} sessions, {} (baseline {})",
                inc_big.spread(),
                inc_small.spread()
            )),
        );
    }
    extra.insert("reports_written".into(), json!(next));

    // 5. initial download into a fresh client.
    let mut download = None;
    if parts.download {
        say(&format!(
            "initial download of {in_master} into a fresh client"
        ));
        let d = fresh_download(root, "client-b", &m, &peers[1], &master, &refs, in_master).await?;
        eprintln!("suite:   download: {}", d.cpu.text());
        extra.insert("download_cpu_us_per_entity".into(), d.cpu.json());
        rows.push(d.row("initial download master -> client", ""));
        download = Some((d.received, d.peak_rss));
    }

    // Peak RSS of the processes that moved the data.
    let master_peak = master.peak_rss_mb();
    if let Some((received, _)) = download {
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
    } else if parts.push {
        rows.push(
            Row::cost(
                "peak RSS master (push)",
                format!("N={queued}"),
                "MB",
                master_peak,
                "the master just started",
                master_idle,
            )
            .note("VmHWM of the master process"),
        );
    }
    if let Some(a_peak) = a_peak_push {
        rows.push(
            Row::cost(
                "peak RSS client (push)",
                format!("N={queued}"),
                "MB",
                a_peak,
                "a client just started",
                client_idle,
            )
            .note("VmHWM of the pushing client process (includes the batched local writes)"),
        );
    }
    if let Some((received, b_peak)) = download {
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
    }
    a.stop();
    master.stop();
    Ok(())
}

/// An initial download: a fresh client `name` (registered as `peer`)
/// syncs until it holds the `expected` entities `master` has; then the raw
/// SQLite insert of as many reports, its baseline.
struct Download {
    received: usize,
    took: Duration,
    summary: Value,
    cpu: CpuPerEntity,
    peak_rss: f64,
    base: Duration,
}

impl Download {
    /// The suite's row: the rate against the raw insert's.
    fn row(&self, scenario: &str, into: &str) -> Row {
        Row::rate(
            scenario,
            format!("N={}", self.received),
            "ent/s",
            per_s(self.received, self.took),
            "raw SQLite multi-row INSERT, 500/tx",
            per_s(self.received, self.base),
        )
        .note(format!(
            "one sync session over HTTPS{into}: {} rounds, {:.1} s; {}",
            count(&self.summary, "rounds"),
            self.took.as_secs_f64(),
            self.cpu.text()
        ))
    }
}

async fn fresh_download(
    root: &Path,
    name: &str,
    m: &MasterDir,
    peer: &many::Peer,
    master: &NodeProc,
    refs: &Refs,
    expected: usize,
) -> anyhow::Result<Download> {
    let (b_cfg, b_api) = make_client(root, name, m, peer).await?;
    let b = NodeProc::start(name, &b_cfg, b_api).await?;
    // The SQLite part's profiles keep their names.
    let label = if name == "client-b" {
        String::new()
    } else {
        format!("-{name}")
    };
    let perf = [
        Perf::start(master, &format!("download-master{label}")),
        Perf::start(&b, &format!("download-client{label}")),
    ];
    let cpu = CpuMeter::start(master, &b);
    let (took, summary) = timed_sync(&b, Some(0), expected).await?;
    perf.into_iter().flatten().for_each(Perf::stop);
    let received = count(&summary, "received_changes") as usize;
    let cpu = cpu.per_entity_us(master, &b, received);
    anyhow::ensure!(
        received >= expected,
        "the fresh client {name} received {received} changes, expected at least {expected}"
    );
    let peak_rss = b.peak_rss_mb();
    b.stop();
    let base = raw_sqlite(
        &root.join(name).join("raw-download.db"),
        refs,
        0,
        received,
        CHUNK,
        "download rows",
    )
    .await?;
    Ok(Download {
        received,
        took,
        summary,
        cpu,
        peak_rss,
        base,
    })
}

/// Part 6: the push to a PostgreSQL master, then the initial download
/// from it into a fresh client.
async fn pg_part(plan: &Plan, root: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = plan.n;
    let Some(base_url) = pg_url() else {
        eprintln!(
            "suite: SKIPPED the PostgreSQL master: set HUBSYNC_BENCH_POSTGRES_URL or HUBSYNC_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return Ok(());
    };
    say(&format!("push of {n} to a PostgreSQL master"));
    let db = hubsync_store_postgres::scratch::ScratchDatabase::create(&base_url).await?;
    let pm = make_master(root, "master-pg", Some(&db.url)).await?;
    let (_, peers) = register(&pm.cfg, "CLIENT", 2).await?;
    let master = NodeProc::start("master-pg", &pm.cfg, pm.api).await?;
    let master_idle = master.rss_mb();
    let (c_cfg, c_api) = make_client(root, "client-pg", &pm, &peers[0]).await?;
    let c = NodeProc::start("client-pg", &c_cfg, c_api).await?;
    let refs = Refs::with_employees(plan.targets);
    write_refs(&c, &refs).await?;
    batch_write(&c, &refs, 0..n, "loading").await?;
    // The reports, the brigade, the site and the employees.
    let all = n + refs.employees.len() + 2;
    let (t, s) = timed_sync(&c, Some(all as u64), all).await?;
    let tick = Ticker::new("baseline: PostgreSQL inserts", n);
    let base = raw::postgres_insert(&db.url, "DailyReport", n, |i| {
        tick.at(i);
        daily_report(i, &refs)
    })
    .await?;
    rows.push(
        Row::rate(
            "push client -> master (PostgreSQL)",
            format!("N={n}"),
            "ent/s",
            per_s(all, t),
            "raw PG multi-row INSERT, 500/tx",
            per_s(n, base),
        )
        .note(format!(
            "one sync session over HTTPS: {} rounds, {:.1} s",
            count(&s, "rounds"),
            t.as_secs_f64()
        )),
    );
    let master_peak_push = master.peak_rss_mb();
    c.stop();

    // The initial download of what the master holds into a fresh client.
    say(&format!(
        "initial download of {} from the PostgreSQL master into a fresh client",
        all
    ));
    let d = fresh_download(root, "client-pg-b", &pm, &peers[1], &master, &refs, all).await?;
    eprintln!("suite:   download from PostgreSQL: {}", d.cpu.text());
    rows.push(d.row(
        "initial download PostgreSQL master -> client",
        " into a fresh SQLite client",
    ));
    rows.push(
        Row::cost(
            "peak RSS master PG (push+download)",
            format!("N={n}"),
            "MB",
            master.peak_rss_mb(),
            "the master just started",
            master_idle,
        )
        .note(format!(
            "VmHWM of the master process; {master_peak_push:.1} MB after the push"
        )),
    );
    master.stop();
    drop(db);
    Ok(())
}

/// Raises the open-file limit for `clients` simulated clients: each holds
/// one connection in this process and one in the master (which inherits
/// the limit), plus files and sockets of our own; says so when the hard
/// limit is too low.
#[cfg(unix)]
fn open_files_for(clients: usize) {
    let want = clients as libc::rlim_t * 2 + 256;
    match proc::raise_open_files(want) {
        Ok((soft, hard)) if soft < want => eprintln!(
            "suite: WARNING: open files are limited to {soft} (hard limit {hard}) and {clients} clients need about {want}: expect connection errors; raise the hard limit (ulimit -Hn) and run again"
        ),
        Ok((soft, _)) => {
            eprintln!("suite:   open-file limit {soft} (about {want} needed for {clients} clients)")
        }
        Err(e) => eprintln!(
            "suite: WARNING: could not read or raise the open-file limit ({e}); {clients} clients need about {want} open files"
        ),
    }
}

#[cfg(not(unix))]
fn open_files_for(_clients: usize) {}

/// Part 7: many clients at once against one SQLite master, twice: every
/// client receiving what all the others write (the fan-out worst case), and
/// each client scoped to its own foreman's brigades (small packets both
/// ways).
async fn many_part(plan: &Plan, root: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    open_files_for(plan.clients);
    many_run(plan, root, rows, false).await?;
    many_run(plan, root, rows, true).await
}

async fn many_run(
    plan: &Plan,
    root: &Path,
    rows: &mut Vec<Row>,
    scoped: bool,
) -> anyhow::Result<()> {
    let (name, label) = if scoped {
        ("master-scoped", "many clients, scoped")
    } else {
        ("master-many", "many clients")
    };
    say(&format!("{label}: {} clients at once", plan.clients));
    let mm = make_master(root, name, None).await?;
    let started = Instant::now();
    let (master_id, peers) = register(&mm.cfg, "MANY", plan.clients + 1).await?;
    if scoped {
        scope_each(&mm.cfg, "MANY", plan.clients + 1).await?;
    }
    let reg_t = started.elapsed();
    eprintln!(
        "suite:   registered {} nodes{} in {:.1} s",
        plan.clients + 1,
        if scoped { " with a scope each" } else { "" },
        reg_t.as_secs_f64()
    );
    let master = NodeProc::start(name, &mm.cfg, mm.api).await?;
    let master_idle = master.rss_mb();
    let target = many::Target {
        tls: hubsync::tls::client_config(&mm.dir.join("tls/ca.pem"))?,
        url: format!("https://{}", mm.sync),
        master_id,
        schema_version: hubsync_core::schema::EntityRegistry::load_dir(&schemas_dir())?
            .version()
            .to_string(),
        own_foreman: scoped,
    };
    let alone = many::run(&target, &peers[..1], 0, 20, many::Pace::Closed, None).await;
    anyhow::ensure!(
        alone.errors == 0,
        "one client alone failed ({} of 20 exchanges); the first error: {}",
        alone.errors,
        alone.first_error.as_deref().unwrap_or("")
    );
    let perf = Perf::start(&master, &format!("{name}-master"));
    let (cpu_before, switches_before) = (master.cpu_secs(), master.context_switches());
    let crowd = many::run(
        &target,
        &peers[1..],
        1,
        plan.rounds,
        many::Pace::Closed,
        None,
    )
    .await;
    let per_exchange = crowd.exchanges().max(1) as f64;
    let cpu_us = (master.cpu_secs() - cpu_before) * 1e6 / per_exchange;
    let switches = master.context_switches().saturating_sub(switches_before) as f64 / per_exchange;
    perf.into_iter().for_each(Perf::stop);
    eprintln!(
        "suite:   {} clients: {} exchanges in {:.1} s, {} errors; the master's CPU per exchange {:.0} µs, context switches per exchange {:.1}",
        plan.clients,
        crowd.exchanges(),
        crowd.wall.as_secs_f64(),
        crowd.errors,
        cpu_us,
        switches
    );
    if let Some(e) = &crowd.first_error {
        eprintln!("suite:   the first error: {e}");
    }
    let size = format!("{} clients", plan.clients);
    let what = if scoped {
        "each client scoped to its own foreman's brigades"
    } else {
        "every client receives what all the others write"
    };
    rows.push(
        Row::rate(&format!("{label}: throughput"), size.clone(), "exch/s", crowd.per_s(), "one client alone", alone.per_s())
            .note(format!(
                "{} exchanges of one small entity each ({} per client, closed loop; {what}), {} entities received back, {:.1} s; the master's CPU per exchange {:.0} µs, its context switches per exchange {:.1}; registering {} nodes took {:.1} s",
                crowd.exchanges(),
                plan.rounds,
                crowd.received,
                crowd.wall.as_secs_f64(),
                cpu_us,
                switches,
                plan.clients + 1,
                reg_t.as_secs_f64()
            )),
    );
    rows.push(Row::cost(
        &format!("{label}: p50 latency"),
        size.clone(),
        "ms",
        crowd.quantile_ms(0.5),
        "one client alone, p50",
        alone.quantile_ms(0.5),
    ));
    rows.push(Row::cost(
        &format!("{label}: p99 latency"),
        size.clone(),
        "ms",
        crowd.quantile_ms(0.99),
        "one client alone, p99",
        alone.quantile_ms(0.99),
    ));
    rows.push(
        Row::cost(
            &format!("{label}: p99 after round 1"),
            size.clone(),
            "ms",
            crowd.later_quantile_ms(0.99),
            "one client alone, p99",
            alone.quantile_ms(0.99),
        )
        .note("the exchanges after each client's first: without the start, when every client connects and sends at the same instant".to_string()),
    );
    rows.push(errors_row(&format!("{label}: errors"), size, &crowd));
    // The same clients again, each on a timer, as a fleet syncs: the
    // latency a client sees at an offered rate below the saturation above,
    // first at the fleet's pace, then at 50 % and 90 % of the closed loop's
    // throughput.
    let mut from = crowd.positions.clone();
    let mut paces = vec![(plan.pace, String::new())];
    for load in [0.5, 0.9] {
        let every = Duration::from_secs_f64(plan.clients as f64 / (crowd.per_s() * load).max(1.0));
        paces.push((every, format!(" at {:.0} % load", load * 100.0)));
    }
    for (every, what) in paces {
        from = paced(
            &target,
            &peers[1..],
            plan.rounds,
            every,
            &alone,
            crowd.per_s(),
            &from,
            label,
            &what,
            rows,
        )
        .await;
    }
    rows.push(Row::cost(
        &format!("peak RSS master ({label})"),
        format!("{} clients", plan.clients),
        "MB",
        master.peak_rss_mb(),
        "the master just started",
        master_idle,
    ));
    master.stop();
    Ok(())
}

/// One paced run of `many` (each client exchanging once every `every`,
/// from `from`): its p50, p99 and errors as rows labelled `label` and
/// `what`; returns where the clients' numbering stands.
#[allow(clippy::too_many_arguments)]
async fn paced(
    target: &many::Target,
    peers: &[many::Peer],
    rounds: usize,
    every: Duration,
    alone: &many::Outcome,
    closed_per_s: f64,
    from: &[many::Position],
    label: &str,
    what: &str,
    rows: &mut Vec<Row>,
) -> Vec<many::Position> {
    let offered = peers.len() as f64 / every.as_secs_f64();
    say(&format!(
        "{label}: {} clients, each exchanging once every {:.2} s (offered {offered:.0} exch/s)",
        peers.len(),
        every.as_secs_f64()
    ));
    let run = many::run(
        target,
        peers,
        1,
        rounds,
        many::Pace::Every(every),
        Some(from),
    )
    .await;
    eprintln!(
        "suite:   {} exchanges in {:.1} s ({:.0} exch/s), {} errors; p50 {:.1} ms, p99 {:.1} ms",
        run.exchanges(),
        run.wall.as_secs_f64(),
        run.per_s(),
        run.errors,
        run.quantile_ms(0.5),
        run.quantile_ms(0.99)
    );
    if let Some(e) = &run.first_error {
        eprintln!("suite:   the first error: {e}");
    }
    let note = format!(
        "each client exchanging once every {:.2} s, its first exchanges spread over the first interval: an offered {offered:.0} exch/s, {:.0} % of the closed-loop throughput above; {} exchanges ({} per client), {} entities received back; a latency counts from the exchange's scheduled instant",
        every.as_secs_f64(),
        100.0 * offered / closed_per_s.max(1e-9),
        run.exchanges(),
        rounds,
        run.received
    );
    let size = format!("{} clients", peers.len());
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(
            Row::cost(
                &format!("{label}: {name} latency, paced{what}"),
                size.clone(),
                "ms",
                run.quantile_ms(q),
                &format!("one client alone, {name}"),
                alone.quantile_ms(q),
            )
            .note(note.clone()),
        );
    }
    rows.push(errors_row(
        &format!("{label}: errors, paced{what}"),
        size,
        &run,
    ));
    run.positions
}

/// A run's error count, its first error in the note.
fn errors_row(scenario: &str, size: String, run: &many::Outcome) -> Row {
    Row::plain(scenario, size, "errors", run.errors as f64).note(
        run.first_error
            .as_ref()
            .map(|e| format!("the first error: {e}"))
            .unwrap_or_default(),
    )
}

/// Scopes node `<prefix>-<k + 1>` to the brigades of [`data::foreman`]`(k)`,
/// for `k` in `0..count`, on the (stopped) master of `cfg`.
async fn scope_each(cfg: &Path, prefix: &str, count: usize) -> anyhow::Result<()> {
    let node = hubsync::node::Node::open(Config::load(cfg)?).await?;
    for k in 0..count {
        let scope = json!({"types": {"Brigade": {"foreman": [crate::data::foreman(k)]}}});
        node.engine
            .set_node_scope(&format!("{prefix}-{}", k + 1), Some(scope))
            .await?;
    }
    node.engine.store().close().await;
    Ok(())
}

/// Part 8: a master write with 10 and with many registered nodes.
async fn nodes_part(plan: &Plan, root: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    say(&format!("master writes with 10 and {} nodes", plan.nodes));
    // Two masters, written to in turn: whatever drifts during the run (the
    // disk's fsync time above all, which is most of a single write) drifts
    // for both alike.
    let few = make_master(root, "master-nodes-10", None).await?;
    let lots = make_master(root, "master-nodes-many", None).await?;
    register(&few.cfg, "NODE", 10).await?;
    let started = Instant::now();
    register(&lots.cfg, "NODE", plan.nodes).await?;
    let reg_t = started.elapsed();
    let refs = Refs::new();
    let masters = [
        NodeProc::start("master-nodes-10", &few.cfg, few.api).await?,
        NodeProc::start("master-nodes-many", &lots.cfg, lots.api).await?,
    ];
    for m in &masters {
        write_refs(m, &refs).await?;
    }
    // k (≤ 300) reports, made before the clock starts.
    let data: Vec<Value> = (0..plan.master_writes)
        .map(|i| daily_report(i, &refs))
        .collect();
    let mut took: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for d in &data {
        for (m, t) in masters.iter().zip(took.iter_mut()) {
            let started = Instant::now();
            m.call("POST", "/api/v1/entities/DailyReport", Some(d), CALL)
                .await?;
            t.push(started.elapsed());
        }
    }
    // The masters' status, which counts every node's lag (each node is
    // behind by every revision written above), in turn too.
    let mut status: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..STATUS_CALLS {
        for (m, t) in masters.iter().zip(status.iter_mut()) {
            let started = Instant::now();
            m.call("GET", "/api/v1/status", None, CALL).await?;
            t.push(started.elapsed());
        }
    }
    for m in masters {
        m.stop();
    }
    let mean = |t: &[Duration]| ms(t.iter().sum::<Duration>()) / t.len().max(1) as f64;
    rows.push(
        Row::cost(
            "master status (every node's lag)",
            format!("{} nodes", plan.nodes),
            "ms",
            many::quantile_ms(&status[1], 0.5),
            "the same with 10 nodes",
            many::quantile_ms(&status[0], 0.5),
        )
        .note(format!(
            "median of {STATUS_CALLS} GET /api/v1/status on each master, in turn, after the writes above (each node {} revisions behind; means {:.2} / {:.2} ms)",
            plan.master_writes + refs.entities().len(),
            mean(&status[1]),
            mean(&status[0]),
        )),
    );
    rows.push(
        Row::cost(
            "master write, single",
            format!("{} nodes", plan.nodes),
            "ms",
            many::quantile_ms(&took[1], 0.5),
            "the same with 10 nodes",
            many::quantile_ms(&took[0], 0.5),
        )
        .note(format!(
            "median of {} POST /api/v1/entities/DailyReport on each of two masters, written to in turn (means {:.2} / {:.2} ms); registering {} nodes took {:.1} s",
            plan.master_writes,
            mean(&took[1]),
            mean(&took[0]),
            plan.nodes,
            reg_t.as_secs_f64()
        )),
    );
    Ok(())
}

fn pg_url() -> Option<String> {
    ["HUBSYNC_BENCH_POSTGRES_URL", "HUBSYNC_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_parts_and_refuses_unknown_names() {
        let all = Parts::from(None).expect("all parts");
        assert_eq!(all.names(), PARTS);
        let only =
            |l: &[&str]| Parts::from(Some(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        let p = only(&["download", "many"]).expect("known parts");
        assert_eq!(p.names(), ["download", "many"]);
        assert!(p.sqlite() && p.needs_sync() && !p.push && !p.local && !p.nodes);
        let p = only(&["local"]).expect("known part");
        assert!(p.sqlite() && !p.needs_sync());
        let e = only(&["push", "bogus"]).expect_err("unknown part refused");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn the_sync_timeout_grows_with_the_changes() {
        assert_eq!(sync_timeout(0), Duration::from_secs(3600));
        assert_eq!(sync_timeout(1_000_000), Duration::from_secs(3600 + 20_000));
    }
}
