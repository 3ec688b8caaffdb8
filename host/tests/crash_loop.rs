//! The crash loop (issue 6 item 6): real `hubsync serve` processes — a
//! master and two clients — are written to through the clients' local APIs
//! and synced, while one of them (seeded choice) is killed with SIGKILL at
//! a seeded random moment. After every kill: `PRAGMA integrity_check` on
//! the killed node's SQLite file, and the invariants over every client:
//! each write the local API acknowledged (2xx) is in the client's store
//! at that version or later, and each entity is either still queued or
//! already on the master at the client's version (no write without its
//! queue entry, nothing acknowledged lost). At the end everything restarts,
//! syncs to quiescence, and all three nodes must hold identical data, with
//! every acknowledged write on the master.
//!
//! `HUBSYNC_CRASH_KILLS` (default 200; 1,000 with `HUBSYNC_LONG=1`) and
//! `HUBSYNC_CRASH_SEED` (default 1) choose the run; the run prints both
//! and what it did.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{DbView, NodeDir, Rng, Served, env_u64, inspect, long, request};

const CLIENTS: usize = 2;

/// What a client's local API acknowledged: entity uuid → the highest
/// `seq` acknowledged for it.
type Acked = BTreeMap<String, u64>;

fn seq_of(data: &Value) -> Option<u64> {
    data["name"]
        .as_str()
        .and_then(|n| n.rsplit('-').next())
        .and_then(|s| s.parse().ok())
}

/// Writes to client `c` until `stop`: creates, and updates of its own
/// entities; records what was acknowledged. Returns how many requests it
/// sent and how many were acknowledged.
async fn write_load(
    c: usize,
    api: std::net::SocketAddr,
    mut seed: Rng,
    acked: Arc<std::sync::Mutex<Acked>>,
    next_seq: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut sent, mut ok) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let seq = next_seq.fetch_add(1, Ordering::SeqCst);
        let name = json!({"name": format!("c{c}-{seq}")});
        let known: Vec<String> = acked
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        let result = if known.is_empty() || seed.below(10) < 6 {
            request(api, "POST", "/api/v1/entities/Brigade", Some(&name)).await
        } else {
            let uuid = &known[seed.below(known.len() as u64) as usize];
            request(
                api,
                "PUT",
                &format!("/api/v1/entities/Brigade/{uuid}"),
                Some(&name),
            )
            .await
        };
        sent += 1;
        match result {
            Ok((status, body)) if (200..300).contains(&status) => {
                let uuid = body["uuid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a 2xx write answer without uuid: {body}"))
                    .to_string();
                let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
                let e = a.entry(uuid).or_insert(0);
                *e = (*e).max(seq);
                ok += 1;
            }
            Ok((status, body)) => panic!("a write to client {c} was refused {status}: {body}"),
            // The process is being killed: not acknowledged, no claim.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    (sent, ok)
}

/// Asks client `api` to sync, again and again, until `stop`; returns the
/// sessions asked for, those that completed, and the changes they sent.
async fn sync_load(api: std::net::SocketAddr, stop: Arc<AtomicBool>) -> [u64; 3] {
    let mut n = [0; 3];
    while !stop.load(Ordering::SeqCst) {
        match request(api, "POST", "/api/v1/sync", None).await {
            Ok((200, summary)) => {
                n[1] += 1;
                n[2] += summary["sent_changes"].as_u64().unwrap_or(0);
            }
            other => {
                if std::env::var_os("HUBSYNC_CRASH_DEBUG").is_some() {
                    eprintln!("sync: {other:?}")
                }
            }
        }
        n[0] += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n
}

/// The invariants over client `c`: read its store first, then the
/// master's (a queue row disappears only after the master committed).
fn check_client(c: usize, acked: &Acked, client: &DbView, master: &DbView) -> Result<(), String> {
    for (uuid, &seq) in acked {
        let Some((data, _)) = client.entities.get(uuid) else {
            return Err(format!(
                "client {c}: acknowledged write {uuid} (seq {seq}) is missing"
            ));
        };
        let have = seq_of(data).unwrap_or(0);
        if have < seq {
            return Err(format!(
                "client {c}: acknowledged write {uuid} seq {seq} lost: the store has seq {have}"
            ));
        }
    }
    let own = format!("c{c}-");
    for (uuid, (data, _)) in &client.entities {
        // Another client's entities arrive from the master and may lag it;
        // they are compared after the final sync.
        let written_here = data["name"].as_str().is_some_and(|n| n.starts_with(&own));
        if !written_here || client.queued.contains(uuid) {
            continue;
        }
        match master.entities.get(uuid) {
            Some((on_master, _)) if on_master == data => {}
            Some((on_master, _)) => {
                return Err(format!(
                    "client {c}: {uuid} is not queued but the master has {on_master}, the client {data}"
                ));
            }
            None => {
                return Err(format!(
                    "client {c}: {uuid} ({data}) has no queue entry and is not on the master"
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_loses_nothing_and_everything_converges() {
    let kills = env_u64("HUBSYNC_CRASH_KILLS", if long() { 1000 } else { 200 });
    let seed = env_u64("HUBSYNC_CRASH_SEED", 1);
    eprintln!("crash loop: {kills} kills, seed {seed} (HUBSYNC_CRASH_KILLS, HUBSYNC_CRASH_SEED)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    let master = support::init_master(root.path());
    // The clients ask to sync back to back: lift the per-node rate limit
    // so that sessions are in flight when the kills land (429s would only
    // slow the loop down).
    support::set_master_limits(&master, 1_000_000, 100_000);
    // Small packets so that a session spans several exchanges, and fast
    // request timeouts so that a session to a killed master ends soon.
    let clients: Vec<NodeDir> = (0..CLIENTS)
        .map(|i| {
            support::add_client(
                root.path(),
                &master,
                &format!("client{i}"),
                "max_packet_entities = 5\nrequest_timeout_secs = 5",
            )
        })
        .collect();
    let nodes: Vec<NodeDir> = std::iter::once(master.clone())
        .chain(clients.iter().cloned())
        .collect();
    let mut running: Vec<Option<Served>> = Vec::new();
    for n in &nodes {
        running.push(Some(Served::start(n).await));
    }
    let acked: Vec<Arc<std::sync::Mutex<Acked>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let seqs: Vec<Arc<std::sync::atomic::AtomicU64>> = (0..CLIENTS)
        .map(|_| Arc::new(std::sync::atomic::AtomicU64::new(1)))
        .collect();
    let (mut writes_sent, mut writes_acked, mut syncs, mut killed) =
        (0u64, 0u64, [0u64; 3], [0u64; 3]);

    for k in 0..kills {
        for (i, slot) in running.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(Served::start(&nodes[i]).await);
            }
        }
        let victim = rng.below(nodes.len() as u64) as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut syncers = Vec::new();
        for c in 0..CLIENTS {
            writers.push(tokio::spawn(write_load(
                c,
                clients[c].api,
                Rng(rng.next()),
                acked[c].clone(),
                seqs[c].clone(),
                stop.clone(),
            )));
            syncers.push(tokio::spawn(sync_load(clients[c].api, stop.clone())));
        }
        // The kill lands anywhere in a write, a commit or an exchange.
        tokio::time::sleep(Duration::from_millis(5 + rng.below(120))).await;
        if let Some(served) = running[victim].take() {
            served.kill9();
        }
        killed[victim] += 1;
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let (s, a) = tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("the writer stops")
                .expect("the writer does not panic");
            writes_sent += s;
            writes_acked += a;
        }
        for s in syncers {
            let n = tokio::time::timeout(Duration::from_secs(60), s)
                .await
                .expect("the syncer stops")
                .expect("the syncer does not panic");
            for (total, x) in syncs.iter_mut().zip(n) {
                *total += x;
            }
        }

        // After the kill: the killed node's file is intact, and no client
        // holds an acknowledged write the system could lose.
        let views: Vec<DbView> = {
            let mut v = Vec::new();
            for c in &clients {
                v.push(
                    inspect(&c.db())
                        .await
                        .unwrap_or_else(|e| panic!("kill {k}: {e}")),
                );
            }
            v
        };
        let master_view = inspect(&master.db())
            .await
            .unwrap_or_else(|e| panic!("kill {k}: {e}"));
        for (c, view) in views.iter().enumerate() {
            let a = acked[c].lock().map(|a| a.clone()).unwrap_or_default();
            if let Err(e) = check_client(c, &a, view, &master_view) {
                panic!("kill {k} (victim {}, seed {seed}): {e}", nodes[victim].name);
            }
        }
    }

    // Heal: everyone up, sync to quiescence.
    for (i, slot) in running.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(Served::start(&nodes[i]).await);
        }
    }
    let mut quiet = false;
    for _pass in 0..20 {
        let mut moved = false;
        for c in &clients {
            let (status, body) = request(c.api, "POST", "/api/v1/sync", None)
                .await
                .expect("final sync");
            assert_eq!(status, 200, "final sync of {}: {body}", c.name);
            moved |= body["sent_changes"].as_u64().unwrap_or(0) > 0
                || body["received_changes"].as_u64().unwrap_or(0) > 0;
        }
        if !moved {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "still moving changes after 20 sync passes");
    for slot in running.iter_mut() {
        if let Some(s) = slot.take() {
            s.terminate();
        }
    }
    let master_view = inspect(&master.db()).await.expect("master at the end");
    for (c, node) in clients.iter().enumerate() {
        let view = inspect(&node.db()).await.expect("client at the end");
        assert!(view.queued.is_empty(), "{}: queue not drained", node.name);
        assert_eq!(
            view.entities, master_view.entities,
            "{} and the master differ after the final sync",
            node.name
        );
        let a = acked[c].lock().map(|a| a.clone()).unwrap_or_default();
        check_client(c, &a, &view, &master_view).unwrap();
    }
    eprintln!(
        "crash loop: {kills} kills survived (master {}, client0 {}, client1 {}); {writes_sent} writes sent, {writes_acked} acknowledged, all on every node; {} sync sessions asked, {} completed sending {} changes; {} entities converged",
        killed[0],
        killed[1],
        killed[2],
        syncs[0],
        syncs[1],
        syncs[2],
        master_view.entities.len()
    );
}
