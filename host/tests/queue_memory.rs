//! Memory stays bounded whatever the queue size (issue 6 item 2): real
//! processes — a `hubsync serve` master and a client whose store holds N
//! queued changes — and a `hubsync sync --config <client>` child process
//! that drains the queue, its peak resident memory (VmHWM) sampled from
//! /proc while it runs. The same is done for N and 5 × N (each in a fresh
//! master and client), and the two peaks are compared: a drain that holds
//! the queue (or its packets) in memory would grow about 5×, a drain in
//! bounded packets stays flat. The master's peak (its VmHWM after the
//! drain) is printed too, and compared the same way. Besides the ratio,
//! the growth from N to 5 × N must stay under a quarter of what the 4 × N
//! extra changes weigh serialized (each carries ~2 KB): holding them would
//! cost at least all of it.
//!
//! The ratio is measured within one run, on the same machine and build: it
//! is not a timed assertion. `HUBSYNC_MEMORY_SMALL` (default 5,000; the
//! large run is 5 × it) chooses the sizes.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Guard, Served, env_u64, hubsync, inspect, path_str, peak_rss_kib, request};

/// Writes per `POST /api/v1/batch`.
const CHUNK: usize = 500;
/// The drain must finish within this.
const SYNC_DEADLINE: Duration = Duration::from_secs(240);
/// The peak may grow this much from N to 5 × N.
const MAX_RATIO: f64 = 1.6;
/// The padding in each entity's data.
const FOREMAN_BYTES: usize = 2000;
/// From N to 5 × N the peak may grow by at most this fraction of the
/// serialized data of the 4 × N extra entities: a drain that held the
/// queue in memory would grow by at least all of it.
const MAX_GROWTH_OF_EXTRA_DATA: f64 = 0.25;

/// What one drain measured.
struct Drain {
    queued: usize,
    /// Peak RSS of the `hubsync sync` process, KiB.
    sync_peak_kib: u64,
    /// VmHWM of the master before and after the drain, KiB.
    master_before_kib: u64,
    master_peak_kib: u64,
    samples: usize,
    write_secs: f64,
    sync_secs: f64,
    sync_json: Value,
}

/// Runs `hubsync <args>` in `cwd` to completion (bounded by
/// [`SYNC_DEADLINE`]), sampling the child's VmHWM from /proc every ~20 ms;
/// returns its stdout, the highest VmHWM read and how many samples were
/// read. VmHWM is the kernel's own high-water mark of the resident set, so
/// the last sample before exit covers everything before it; only growth
/// within the last interval can be missed.
fn run_sampling_peak(cwd: &Path, args: &[&str]) -> (String, u64, usize) {
    let what = format!("hubsync {}", args.join(" "));
    let mut child = Guard(
        hubsync(cwd, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{what}`: {e}")),
    );
    let pid = child.0.id();
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.0.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.0.stderr.take().expect("stderr piped")));
    let until = Instant::now() + SYNC_DEADLINE;
    let (mut peak, mut samples) = (0u64, 0usize);
    let status = loop {
        // Read before try_wait: a process that has exited but is not yet
        // reaped is a zombie whose status has no Vm* lines (None here).
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
            samples += 1;
        }
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < until,
            "`{what}` did not finish within {SYNC_DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    assert!(
        status.success(),
        "`{what}` failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        samples > 0,
        "`{what}` exited before /proc/{pid}/status could be read"
    );
    (stdout, peak, samples)
}

/// A fresh master and client; `n` creates queued on the client through
/// its local API; the client's server stopped; then `hubsync sync` drains
/// the queue while its memory is sampled.
async fn drain(n: usize) -> Drain {
    let root = tempfile::tempdir().expect("temp dir");
    let master = support::init_master(root.path());
    // One session makes n / 500 exchanges back to back: no 429 pauses.
    support::set_master_limits(&master, 1_000_000, 100_000);
    let client = support::add_client(root.path(), &master, "client", "");
    let served_master = Served::start(&master).await;
    let served_client = Served::start(&client).await;

    // Each entity carries ~2 KB, so that holding the queue in memory would
    // show: 5 × N of them is tens of megabytes more than N.
    let foreman = "F".repeat(FOREMAN_BYTES);
    let started = Instant::now();
    let mut written = 0usize;
    while written < n {
        let take = CHUNK.min(n - written);
        let operations: Vec<Value> = (written..written + take)
            .map(|i| {
                json!({
                    "op": "put",
                    "type": "Brigade",
                    "data": {"name": format!("brigade-{i:06}"), "foreman": foreman, "active": i % 2 == 0},
                })
            })
            .collect();
        let (status, body) = request(
            client.api,
            "POST",
            "/api/v1/batch",
            Some(&json!({ "operations": operations })),
        )
        .await
        .unwrap_or_else(|e| panic!("batch at {written}: {e}"));
        assert_eq!(status, 200, "batch at {written}: {body}");
        written += take;
    }
    let write_secs = started.elapsed().as_secs_f64();
    // The queue lives in the client's SQLite file; the one-shot sync opens
    // the store itself once the server has let go of it.
    served_client.terminate();
    let before = inspect(&client.db())
        .await
        .expect("client before the drain");
    assert_eq!(
        before.queued.len(),
        n,
        "every write is queued before the drain"
    );
    let master_before_kib = peak_rss_kib(served_master.pid()).expect("master VmHWM");

    let started = Instant::now();
    let (stdout, sync_peak_kib, samples) = run_sampling_peak(
        &client.dir,
        &["sync", "--config", path_str(&client.config), "--json"],
    );
    let sync_secs = started.elapsed().as_secs_f64();
    let sync_json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`hubsync sync --json` printed no JSON ({e}):\n{stdout}"));
    assert_eq!(
        sync_json["sent_changes"].as_u64(),
        Some(n as u64),
        "the drain sent every queued change: {sync_json}"
    );
    let master_peak_kib = peak_rss_kib(served_master.pid()).expect("master VmHWM");
    served_master.terminate();

    let after = inspect(&client.db()).await.expect("client after the drain");
    assert!(
        after.queued.is_empty(),
        "{} changes still queued after the drain",
        after.queued.len()
    );
    let on_master = inspect(&master.db()).await.expect("master after the drain");
    assert_eq!(
        on_master.entities.len(),
        n,
        "every change reached the master"
    );
    Drain {
        queued: n,
        sync_peak_kib,
        master_before_kib,
        master_peak_kib,
        samples,
        write_secs,
        sync_secs,
        sync_json,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peak_memory_of_a_drain_does_not_grow_with_the_queue() {
    let small = env_u64("HUBSYNC_MEMORY_SMALL", 5_000).max(CHUNK as u64) as usize;
    let large = small * 5;
    let mut runs = Vec::new();
    for n in [small, large] {
        let d = drain(n).await;
        eprintln!(
            "queue_memory: {} queued changes: `hubsync sync` peak RSS {:.1} MiB ({} samples, drained in {:.1} s, {} rounds; writing the queue took {:.1} s); master VmHWM {:.1} MiB before the drain, {:.1} MiB after",
            d.queued,
            mib(d.sync_peak_kib),
            d.samples,
            d.sync_secs,
            d.sync_json["rounds"],
            d.write_secs,
            mib(d.master_before_kib),
            mib(d.master_peak_kib),
        );
        runs.push(d);
    }
    let (a, b) = (&runs[0], &runs[1]);
    // What 4 × N more entities weigh serialized (as a packet carries them).
    let one =
        json!({"name": "brigade-000000", "foreman": "F".repeat(FOREMAN_BYTES), "active": true});
    let extra_kib = ((b.queued - a.queued) * one.to_string().len()) as u64 / 1024;
    let allowed_growth_kib = (extra_kib as f64 * MAX_GROWTH_OF_EXTRA_DATA) as u64;
    let client_ratio = b.sync_peak_kib as f64 / a.sync_peak_kib as f64;
    let master_ratio = b.master_peak_kib as f64 / a.master_peak_kib as f64;
    eprintln!(
        "queue_memory: peak RSS of `hubsync sync` {:.1} MiB at {} vs {:.1} MiB at {}: ratio {client_ratio:.2} (limit {MAX_RATIO}); master {:.1} vs {:.1} MiB: ratio {master_ratio:.2}",
        mib(a.sync_peak_kib),
        a.queued,
        mib(b.sync_peak_kib),
        b.queued,
        mib(a.master_peak_kib),
        mib(b.master_peak_kib),
    );
    eprintln!(
        "queue_memory: the {} extra changes weigh {:.1} MiB serialized; the sync peak grew {:.1} MiB, the master's {:.1} MiB (each may grow at most {:.1} MiB)",
        b.queued - a.queued,
        mib(extra_kib),
        (b.sync_peak_kib as f64 - a.sync_peak_kib as f64) / 1024.0,
        (b.master_peak_kib as f64 - a.master_peak_kib as f64) / 1024.0,
        mib(allowed_growth_kib),
    );
    assert!(
        client_ratio < MAX_RATIO,
        "the drain's peak memory grows with the queue: {:.1} MiB for {} changes, {:.1} MiB for {} (ratio {client_ratio:.2}, limit {MAX_RATIO})",
        mib(a.sync_peak_kib),
        a.queued,
        mib(b.sync_peak_kib),
        b.queued
    );
    assert!(
        master_ratio < MAX_RATIO,
        "the master's peak memory grows with the queue it receives: {:.1} MiB for {} changes, {:.1} MiB for {} (ratio {master_ratio:.2}, limit {MAX_RATIO})",
        mib(a.master_peak_kib),
        a.queued,
        mib(b.master_peak_kib),
        b.queued
    );
    for (who, small_kib, large_kib) in [
        ("`hubsync sync`", a.sync_peak_kib, b.sync_peak_kib),
        ("the master", a.master_peak_kib, b.master_peak_kib),
    ] {
        let growth = large_kib.saturating_sub(small_kib);
        assert!(
            growth <= allowed_growth_kib,
            "{who}'s peak memory grew {:.1} MiB from {} to {} changes, more than {MAX_GROWTH_OF_EXTRA_DATA} of the {:.1} MiB those extra changes weigh: part of the queue is held in memory",
            mib(growth),
            a.queued,
            b.queued,
            mib(extra_kib)
        );
    }
}
