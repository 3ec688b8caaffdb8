//! `hubsync demo`: a self-contained tour on loopback. A master and two
//! clients (real HTTPS, real SQLite files in a temporary directory) edit
//! offline, sync, meet a conflict, and converge.

use std::path::Path;
use std::time::{Duration, Instant};

use hubsync_core::engine::NoProgress;
use serde_json::json;

use crate::cli::Output;
use crate::config::Config;
use crate::error::HostError;
use crate::serve::RunningNode;

struct Tour {
    verbose: bool,
    started: Instant,
    log: Vec<String>,
}

impl Tour {
    fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        if self.verbose {
            println!("[{:>5.2}s] {line}", self.started.elapsed().as_secs_f64());
        }
        self.log.push(line);
    }
}

fn load(path: &Path) -> Result<Config, HostError> {
    Ok(Config::load_with_env(path, &[])?)
}

/// Runs the tour in `dir` (a temporary directory when None).
pub async fn run(dir: Option<&Path>, verbose: bool) -> Result<Output, HostError> {
    let temp;
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                HostError::io(
                    "could not create a temporary directory in",
                    std::env::temp_dir(),
                    e,
                )
            })?;
            temp.path().to_path_buf()
        }
    };
    let mut t = Tour {
        verbose,
        started: Instant::now(),
        log: Vec::new(),
    };
    t.say(format!("hubsync demo in {}", root.display()));

    // A master on loopback, with a fresh CA and the example schema set.
    let master_dir = root.join("master");
    crate::init::init_master(&crate::init::MasterInit {
        dir: &master_dir,
        listen: "127.0.0.1:0",
        api: "127.0.0.1:0",
        schemas: None,
        storage: None,
        code: "MASTER",
    })
    .await?;
    let mut master_cfg = load(&master_dir.join("hubsync.toml"))?;
    let master = RunningNode::start(master_cfg.clone()).await?;
    let sync_addr = master
        .sync_addr
        .ok_or_else(|| HostError::Other("the master has no sync address".into()))?;
    t.say(format!(
        "master {} listening on https://{sync_addr} (TLS, own CA)",
        master.node.engine.identity().node_id
    ));
    if let Some(l) = master_cfg.listen.as_mut() {
        l.addr = sync_addr;
    }

    // Two clients registered with the master.
    let mut clients = Vec::new();
    for code in ["DESKTOP-A", "DESKTOP-B"] {
        let token = crate::auth::new_token(master.node.engine.identity().node_id)
            .map_err(|_| HostError::Other("the system random generator failed".into()))?;
        let rec = master
            .node
            .engine
            .add_node(code, code, &crate::auth::token_hash(&token))
            .await?;
        let dir = root.join(code.to_lowercase());
        crate::init::init_client(&crate::init::ClientInit {
            dir: &dir,
            master_url: &format!("https://{sync_addr}"),
            ca_cert: &master_dir.join("tls/ca.pem"),
            node_id: rec.id,
            token: &token,
            api: "127.0.0.1:0",
            schemas: None,
            sync_interval_secs: 0,
        })
        .await?;
        let running = RunningNode::start(load(&dir.join("hubsync.toml"))?).await?;
        t.say(format!(
            "client {code} registered as {} (local API http://{})",
            rec.id, running.api_addr
        ));
        clients.push(running);
    }
    let (a, b) = (clients[0].node.clone(), clients[1].node.clone());

    // The master goes away; the clients keep working.
    master.shutdown(Duration::from_secs(5)).await;
    t.say("master stopped: both clients are offline now");
    let brigade = a
        .engine
        .create(
            "Brigade",
            None,
            json!({"name": "North brigade", "foreman": "I. Petrov", "active": true}),
        )
        .await?;
    let site = a
        .engine
        .create(
            "Site",
            None,
            json!({"name": "Riverside", "address": "1 River St"}),
        )
        .await?;
    let block = a
        .engine
        .create(
            "Site",
            None,
            json!({"name": "Block A", "parent": site.uuid}),
        )
        .await?;
    let e1 = a
        .engine
        .create(
            "Employee",
            None,
            json!({"full_name": "Anna Smirnova", "brigade": brigade.uuid, "position": "mason"}),
        )
        .await?;
    let e2 = a
        .engine
        .create(
            "Employee",
            None,
            json!({"full_name": "Oleg Ivanov", "brigade": brigade.uuid, "position": "welder"}),
        )
        .await?;
    let report = a.engine.create("DailyReport", None, json!({
        "date": "2026-11-24", "brigade": brigade.uuid, "site": block.uuid, "status": "draft",
        "notes": "Foundation poured",
        "lines": [
            {"employee": e1.uuid, "hours": 8, "task": "formwork"},
            {"employee": e2.uuid, "hours": 6.5, "task": "rebar welding"}
        ]
    })).await?;
    let south = b
        .engine
        .create(
            "Brigade",
            None,
            json!({"name": "South brigade", "active": true}),
        )
        .await?;
    let pavel = b
        .engine
        .create(
            "Employee",
            None,
            json!({"full_name": "Pavel Orlov", "brigade": south.uuid}),
        )
        .await?;
    let pending_a = a.engine.status().await?.pending_changes;
    let pending_b = b.engine.status().await?.pending_changes;
    t.say(format!("offline edits: DESKTOP-A wrote a site tree, a brigade, 2 employees and a report with 2 lines ({pending_a} changes queued); DESKTOP-B wrote a brigade and an employee ({pending_b} queued)"));
    match a.sync_now(&NoProgress).await {
        Ok(_) => t.say("unexpected: sync succeeded with the master down"),
        Err(e) => t.say(format!(
            "sync while offline fails clearly and loses nothing: {e}"
        )),
    }

    // The master comes back on the same address.
    let master = RunningNode::start(master_cfg).await?;
    t.say("master restarted");
    let mut sessions = Vec::new();
    for (name, node) in [("DESKTOP-A", &a), ("DESKTOP-B", &b), ("DESKTOP-A", &a)] {
        let s = node.sync_now(&NoProgress).await?;
        t.say(format!(
            "{name} synced: {} sent, {} received, {} round trips",
            s.sent_changes, s.received_changes, s.rounds
        ));
        sessions.push(json!({"node": name, "sent": s.sent_changes, "received": s.received_changes, "rounds": s.rounds}));
    }

    // Both clients edit the same report before syncing.
    let mut data_a = report.data.clone();
    data_a["notes"] = json!("Foundation poured; inspection passed");
    a.engine.put("DailyReport", report.uuid, data_a).await?;
    let mut data_b = b.engine.get("DailyReport", report.uuid).await?.data;
    data_b["notes"] = json!("Foundation poured; rain delay 2h");
    data_b["status"] = json!("submitted");
    b.engine.put("DailyReport", report.uuid, data_b).await?;
    t.say("both clients edited the same report offline");
    a.sync_now(&NoProgress).await?;
    let sb = b.sync_now(&NoProgress).await?;
    let conflict = sb.conflicts.first().cloned();
    t.say(match &conflict {
        Some(c) => format!(
            "conflict on DailyReport {}: {} (server-wins, the default)",
            c.uuid,
            c.outcome.as_str()
        ),
        None => "no conflict was detected (unexpected)".into(),
    });
    a.sync_now(&NoProgress).await?;
    let history = master.node.engine.store().history(report.uuid).await?;
    for h in &history {
        t.say(format!(
            "history keeps the losing version from node {} (arrived {}): notes = {}",
            h.source_node_id.map(|n| n.to_string()).unwrap_or_default(),
            hubsync_core::entity::format_ts(h.arrival_time),
            h.serialized_data["data"]["notes"]
        ));
    }

    // Deleting an employee the report still names is refused (restrict, the
    // default policy); deleting an unreferenced one is a soft delete that travels.
    match b.engine.delete("Employee", e2.uuid).await {
        Ok(_) => t.say("unexpected: deleting a referenced employee was accepted"),
        Err(e) => t.say(format!(
            "deleting an employee the report still names is refused: {e}"
        )),
    }
    b.engine.delete("Employee", pavel.uuid).await?;
    b.sync_now(&NoProgress).await?;
    a.sync_now(&NoProgress).await?;
    t.say("DESKTOP-B soft-deleted an unreferenced employee; synced everywhere");

    let dm = master.node.engine.replica_state().await?;
    let da = a.engine.replica_state().await?;
    let db = b.engine.replica_state().await?;
    let converged = dm == da && dm == db;
    t.say(format!(
        "all three nodes hold {} entities; identical: {}",
        dm.len(),
        if converged { "yes" } else { "NO" }
    ));
    let final_notes = master
        .node
        .engine
        .get("DailyReport", report.uuid)
        .await?
        .data["notes"]
        .clone();
    let elapsed = t.started.elapsed();
    for c in clients {
        c.shutdown(Duration::from_secs(5)).await;
    }
    master.shutdown(Duration::from_secs(5)).await;
    t.say(format!("done in {:.2}s", elapsed.as_secs_f64()));
    if !converged {
        return Err(HostError::Other("the demo's nodes did not converge; this is a bug, please report it with the output above".into()));
    }
    let json = json!({
        "dir": root,
        "sync_sessions": sessions,
        "entities": dm.len(),
        "converged": converged,
        "conflict": conflict,
        "report_notes_after_conflict": final_notes,
        "history": history,
        "seconds": elapsed.as_secs_f64(),
        "log": t.log,
    });
    Ok(Output {
        json,
        text: String::new(),
    })
}
