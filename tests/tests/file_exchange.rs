//! File (sneakernet) exchange end to end (issue 5 item 6, contract §2):
//! sealed packet files carried both ways give the same results as the
//! network, are received exactly once, are refused whole when truncated,
//! altered or meant for another node, and mix with the network under one
//! packet numbering.

include!("../scenarios/file_world.rs");

use hubsync_core::Engine;
use hubsync_core::protocol::Outcome;
use uuid::Uuid;
use world::{World, brigade, content, options};

/// Everything an import could change on a node: its data, its packet
/// numbers, its queue, and (master) every node's numbers and lag.
async fn fingerprint(e: &Engine) -> String {
    let s = e.status().await.expect("status");
    let nodes: Vec<_> = s
        .nodes
        .iter()
        .map(|n| {
            (
                n.code.clone(),
                n.received_packet_no,
                n.sent_packet_no,
                n.lag,
            )
        })
        .collect();
    format!(
        "{:?} recv={} sent={} pending={} nodes={nodes:?}",
        e.replica_state().await.expect("state"),
        s.received_packet_no,
        s.sent_packet_no,
        s.pending_changes
    )
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | n)
}

/// How a world moves packets in the scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Network,
    Files,
}

async fn settle(w: &World, path: Path, i: usize) {
    match path {
        Path::Network => {
            for _ in 0..4 {
                let s = w.sync(i).await;
                if s.sent_changes == 0 && s.received_changes == 0 {
                    break;
                }
            }
        }
        Path::Files => {
            w.files_until_quiet(i, 8).await;
        }
    }
}

/// The same script on a world: creates, a reference, concurrent edits
/// (a conflict resolved server-wins), deletes, and edits on the master,
/// over several rounds. Returns the conflicts the master reported.
async fn script(w: &World, path: Path) -> usize {
    let (c0, c1, m) = (w.client(0), w.client(1), &w.master);
    // Round 1: client 0 creates brigades and an employee referencing one;
    // the master creates a brigade of its own.
    for (n, name) in [(1, "North"), (2, "South"), (3, "East")] {
        c0.create("Brigade", Some(id(n)), brigade(name))
            .await
            .expect("create");
    }
    c0.create(
        "Employee",
        Some(id(10)),
        serde_json::json!({"full_name": "Ann", "brigade": id(1).to_string()}),
    )
    .await
    .expect("employee");
    m.create("Brigade", Some(id(4)), brigade("West"))
        .await
        .expect("master create");
    settle(w, path, 0).await;
    settle(w, path, 1).await;

    // Round 2: both clients edit North (client 1 reaches the master first,
    // so client 0's edit is a stale base: a conflict); client 0 deletes
    // South; the master edits East.
    c1.put("Brigade", id(1), brigade("North by C1"))
        .await
        .expect("c1 edit");
    c0.put("Brigade", id(1), brigade("North by C0"))
        .await
        .expect("c0 edit");
    c0.delete("Brigade", id(2)).await.expect("delete");
    m.put("Brigade", id(3), brigade("East by master"))
        .await
        .expect("master edit");
    settle(w, path, 1).await;
    let conflicts = match path {
        Path::Files => {
            let up = w.export_client(0).await;
            let at_master = w.import_master(&up.bytes, false).await.expect("import");
            let n = at_master.report.conflicts.len();
            let down = w.export_master(0).await;
            w.import_client(0, &down.bytes, false)
                .await
                .expect("client import");
            n
        }
        Path::Network => w.sync(0).await.conflicts.len(),
    };
    settle(w, path, 0).await;

    // Round 3: client 1 deletes the employee and edits West; client 0 adds
    // one more brigade; everyone settles twice.
    c1.delete("Employee", id(10))
        .await
        .expect("delete employee");
    c1.put("Brigade", id(4), brigade("West by C1"))
        .await
        .expect("c1 edit west");
    c0.create("Brigade", Some(id(5)), brigade("Central"))
        .await
        .expect("create central");
    for _ in 0..2 {
        settle(w, path, 1).await;
        settle(w, path, 0).await;
    }
    conflicts
}

#[tokio::test]
async fn a_round_trip_by_files_only_gives_the_same_results_as_the_network() {
    let by_network = World::new(2, options(2)).await;
    let by_files = World::new(2, options(2)).await;
    let net_conflicts = script(&by_network, Path::Network).await;
    let file_conflicts = script(&by_files, Path::Files).await;
    assert_eq!(net_conflicts, 1, "the stale edit of North is a conflict");
    assert_eq!(file_conflicts, net_conflicts);

    by_network.assert_converged().await;
    by_files.assert_converged().await;
    let net = content(&by_network.master).await;
    assert_eq!(content(&by_files.master).await, net);
    for i in 0..2 {
        assert_eq!(content(by_files.client(i)).await, net, "client {i}");
    }
    let north = by_files.master.get("Brigade", id(1)).await.expect("north");
    assert_eq!(north.data["name"], "North by C1", "server-wins kept C1's");
    assert!(
        by_files
            .master
            .get("Brigade", id(2))
            .await
            .expect("south")
            .is_deleted
    );
    assert!(
        by_files
            .master
            .get("Employee", id(10))
            .await
            .expect("ann")
            .is_deleted
    );
    // Packet numbers agree on both sides of every pair.
    let master = by_files.master.status().await.expect("status");
    for i in 0..2 {
        let c = by_files.client(i).status().await.expect("status");
        let peer = master
            .nodes
            .iter()
            .find(|n| n.node_id == c.node_id)
            .expect("peer row");
        assert_eq!(c.sent_packet_no, peer.received_packet_no, "client {i}");
        assert_eq!(c.received_packet_no, peer.sent_packet_no, "client {i}");
        assert_eq!(c.pending_changes, 0);
        assert_eq!(peer.lag, 0);
    }
    by_network.close().await;
    by_files.close().await;
}

#[tokio::test]
async fn the_same_file_imported_twice_changes_nothing_the_second_time() {
    let w = World::new(1, options(50)).await;
    for n in 0..5 {
        w.client(0)
            .create("Brigade", None, brigade(&format!("B{n}")))
            .await
            .expect("create");
    }
    w.master
        .create("Brigade", None, brigade("from master"))
        .await
        .expect("create");
    let up = w.export_client(0).await;
    assert_eq!(up.summary.changes, 5);
    let first = w
        .import_master(&up.bytes, false)
        .await
        .expect("first import");
    assert!(first.report.new_packet);
    assert_eq!(first.report.applied, 5);
    let after_first = fingerprint(&w.master).await;
    let second = w
        .import_master(&up.bytes, false)
        .await
        .expect("second import");
    assert!(!second.report.new_packet);
    assert_eq!(second.report.applied, 0);
    assert_eq!(fingerprint(&w.master).await, after_first);

    let down = w.export_master(0).await;
    let first = w
        .import_client(0, &down.bytes, false)
        .await
        .expect("import");
    assert!(first.report.new_packet);
    assert_eq!(first.report.applied, 1);
    let after_first = fingerprint(w.client(0)).await;
    let second = w.import_client(0, &down.bytes, false).await.expect("again");
    assert!(!second.report.new_packet);
    assert_eq!(second.report.applied, 0);
    assert_eq!(fingerprint(w.client(0)).await, after_first);
    w.assert_converged().await;
    w.close().await;
}

#[tokio::test]
async fn truncated_altered_misaddressed_and_foreign_files_are_refused_whole() {
    let w = World::new(2, options(50)).await;
    let other = World::new(1, options(50)).await;
    w.client(0)
        .create("Brigade", None, brigade("queued"))
        .await
        .expect("create");
    w.master
        .create("Brigade", None, brigade("for the clients"))
        .await
        .expect("create");
    let up = w.export_client(0).await;
    let down_for_1 = w.export_master(1).await;
    let foreign = other.export_client(0).await;
    let master_before = fingerprint(&w.master).await;
    let client_before = fingerprint(w.client(0)).await;

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated header", up.bytes[..20].to_vec()),
        ("truncated body", up.bytes[..up.bytes.len() - 1].to_vec()),
        ("not a packet file", b"{\"header\": {}}".repeat(20)),
    ];
    for at in [9, 30, 45, 60, 90, up.bytes.len() / 2, up.bytes.len() - 1] {
        let mut b = up.bytes.clone();
        b[at] ^= 0x01;
        cases.push(("flipped byte", b));
    }
    cases.push(("another world's client", foreign.bytes.clone()));
    cases.push(("the master's file for client 1", down_for_1.bytes.clone()));
    for (what, bytes) in &cases {
        let err = w
            .import_master(bytes, false)
            .await
            .expect_err(&format!("{what}: refused by the master"));
        let msg = err.to_string();
        assert!(msg.contains("nothing was applied"), "{what}: {msg}");
    }
    assert_eq!(fingerprint(&w.master).await, master_before);

    // On client 0: a file meant for client 1, its own file, altered files.
    let mut client_cases: Vec<(&str, Vec<u8>)> = vec![
        ("the master's file for client 1", down_for_1.bytes.clone()),
        ("its own outgoing file", up.bytes.clone()),
    ];
    let down_for_0 = w.export_master(0).await;
    let mut flipped = down_for_0.bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    client_cases.push(("flipped tag", flipped));
    client_cases.push((
        "truncated",
        down_for_0.bytes[..down_for_0.bytes.len() - 5].to_vec(),
    ));
    for (what, bytes) in &client_cases {
        let err = w
            .import_client(0, bytes, false)
            .await
            .expect_err(&format!("{what}: refused by client 0"));
        assert!(
            err.to_string().contains("nothing was applied"),
            "{what}: {err}"
        );
    }
    assert_eq!(fingerprint(w.client(0)).await, client_before);

    // A rotated token invalidates files sealed before: the master refuses
    // the client's old file, and the client its master's old file.
    let new_token = hubsync::auth::new_token(w.master.identity().node_id).expect("token");
    w.master
        .update_node_access("C0", false, Some(&hubsync::auth::token_hash(&new_token)))
        .await
        .expect("rotate");
    let master_before = fingerprint(&w.master).await;
    let err = w
        .import_master(&up.bytes, false)
        .await
        .expect_err("old file refused after rotation");
    assert!(err.to_string().contains("another token"), "{err}");
    assert_eq!(fingerprint(&w.master).await, master_before);
    let err = w
        .import_client(0, &down_for_0.bytes, false)
        .await
        .expect("the file was sealed before the rotation, with the token the client still has")
        .report;
    assert!(err.new_packet);
    let resealed = w.export_master(0).await;
    w.import_client(0, &resealed.bytes, false)
        .await
        .expect_err("sealed with the new token: the client (old token) cannot open it");

    // A revoked node's files are refused.
    w.master
        .update_node_access("C1", true, None)
        .await
        .expect("revoke");
    w.client(1)
        .create("Brigade", None, brigade("revoked"))
        .await
        .expect("create");
    let from_revoked = w.export_client(1).await;
    let err = w
        .import_master(&from_revoked.bytes, false)
        .await
        .expect_err("revoked");
    assert!(err.to_string().contains("revoked"), "{err}");
    other.close().await;
    w.close().await;
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_says_what_would_conflict() {
    let w = World::new(2, options(50)).await;
    let shared = w
        .client(0)
        .create("Brigade", None, brigade("shared"))
        .await
        .expect("create")
        .uuid;
    w.files_until_quiet(0, 4).await;
    w.files_until_quiet(1, 4).await;
    // Client 1 edits first (by network); client 0's edit is then stale.
    w.client(1)
        .put("Brigade", shared, brigade("C1 was first"))
        .await
        .expect("edit");
    w.sync(1).await;
    w.client(0)
        .put("Brigade", shared, brigade("C0 too late"))
        .await
        .expect("edit");
    let fresh = w
        .client(0)
        .create("Brigade", None, brigade("new"))
        .await
        .expect("create")
        .uuid;
    let up = w.export_client(0).await;
    let before = fingerprint(&w.master).await;
    let dry = w.import_master(&up.bytes, true).await.expect("dry run");
    assert!(dry.report.dry_run);
    assert_eq!(dry.report.applied, 1, "the new brigade would be applied");
    assert_eq!(dry.report.conflicts.len(), 1);
    assert_eq!(dry.report.conflicts[0].uuid, shared);
    assert_eq!(dry.report.conflicts[0].outcome, Outcome::ConflictMasterWon);
    assert_eq!(fingerprint(&w.master).await, before, "nothing changed");
    assert!(w.master.get("Brigade", fresh).await.is_err());
    let text = hubsync::file_exchange::import_text(std::path::Path::new("up.hspkt"), &dry);
    assert!(text.starts_with("dry run, nothing changed"), "{text}");
    assert!(text.contains("conflict_master_won"), "{text}");

    let real = w.import_master(&up.bytes, false).await.expect("import");
    assert!(!real.report.dry_run);
    assert_eq!(real.report.applied, dry.report.applied);
    assert_eq!(real.report.conflicts, dry.report.conflicts);

    // A dry run on the client changes nothing either.
    let down = w.export_master(0).await;
    let before = fingerprint(w.client(0)).await;
    let dry = w
        .import_client(0, &down.bytes, true)
        .await
        .expect("dry run");
    assert!(dry.report.dry_run && dry.report.new_packet);
    assert_eq!(fingerprint(w.client(0)).await, before);
    w.import_client(0, &down.bytes, false)
        .await
        .expect("import");
    w.all_files_until_quiet(4).await;
    w.network_until_quiet(4).await;
    w.assert_converged().await;
    assert_eq!(
        w.master.get("Brigade", shared).await.expect("shared").data["name"],
        "C1 was first"
    );
    w.close().await;
}

#[tokio::test]
async fn network_and_files_mixed_keep_one_packet_numbering() {
    let w = World::new(1, options(3)).await;
    let c = w.client(0);
    for n in 0..5 {
        c.create("Brigade", None, brigade(&format!("B{n}")))
            .await
            .expect("create");
    }
    // A file is exported and lost: exporting again resends the same packet.
    let lost = w.export_client(0).await;
    assert_eq!(lost.summary.packet_no, 1);
    assert_eq!(lost.summary.changes, 3);
    let again = w.export_client(0).await;
    assert_eq!(again.summary.packet_no, 1, "the same packet, not a new one");
    assert_eq!(again.summary.by_type, lost.summary.by_type);
    // The network takes over the packet in flight, then sends the rest.
    let s = w.sync(0).await;
    assert_eq!(s.sent_changes, 5);
    let st = c.status().await.expect("status");
    assert_eq!(st.sent_packet_no, 2);
    // The lost file turns up late: received before, nothing applied again.
    let before = fingerprint(&w.master).await;
    let late = w
        .import_master(&lost.bytes, false)
        .await
        .expect("late file");
    assert!(!late.report.new_packet);
    assert_eq!(fingerprint(&w.master).await, before);

    // The master's packets: one by file, then the network continues.
    for n in 0..4 {
        w.master
            .create("Brigade", None, brigade(&format!("M{n}")))
            .await
            .expect("create");
    }
    let down = w.export_master(0).await;
    assert_eq!(down.summary.changes, 3, "bounded by the packet limit");
    assert!(down.summary.more);
    let down_no = down.summary.packet_no;
    w.import_client(0, &down.bytes, false)
        .await
        .expect("import");
    assert_eq!(
        c.status().await.expect("status").received_packet_no,
        down_no
    );
    let s = w.sync(0).await;
    assert_eq!(s.received_changes, 1, "only what the file did not carry");
    assert_eq!(
        c.status().await.expect("status").received_packet_no,
        down_no + 1,
        "no gap, no repeat"
    );
    // A client edit goes by file while the master's acknowledgement comes
    // back by network.
    let by_file = c
        .create("Brigade", None, brigade("by file"))
        .await
        .expect("create")
        .uuid;
    let up = w.export_client(0).await;
    assert_eq!(up.summary.packet_no, 3);
    let applied = w.import_master(&up.bytes, false).await.expect("import");
    assert_eq!(applied.report.applied, 1);
    let rev = w.master.get("Brigade", by_file).await.expect("applied").rev;
    // The client cannot know the file arrived: the network resends packet
    // 3 under its number, and the master answers from its stored results
    // without applying it again.
    let s = w.sync(0).await;
    assert_eq!(s.sent_changes, 1);
    assert_eq!(s.acked_packet_no, 3);
    assert_eq!(
        w.master.get("Brigade", by_file).await.expect("kept").rev,
        rev,
        "no new revision: applied once"
    );
    let s = w.sync(0).await;
    assert_eq!(
        s.sent_changes, 0,
        "an acknowledged packet is not sent again"
    );
    let st = c.status().await.expect("status");
    assert_eq!((st.sent_packet_no, st.pending_changes), (3, 0));
    w.assert_converged().await;
    w.close().await;
}

/// Asks the client's local API for its status from inside a sync round (on
/// a thread of its own, so the session's runtime keeps serving).
struct StatusProbe {
    api: std::net::SocketAddr,
    seen: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl hubsync_core::engine::Progress for StatusProbe {
    fn on_round(&self, _: &hubsync_core::engine::SyncProgress) {
        let api = self.api;
        let got = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                tokio::time::timeout(
                    hubsync_tests::WAIT,
                    hubsync::local_client::request(api, "GET", "/api/v1/status", None),
                )
                .await
                .expect("status answered in time")
                .expect("status request")
            })
        })
        .join()
        .expect("probe thread");
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(got.1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_running_sync_progress_and_null_when_idle() {
    let cluster = hubsync_tests::bounded(
        "starting the cluster",
        hubsync_tests::Cluster::start(
            1,
            hubsync_tests::ClusterOptions {
                max_packet_entities: Some(20),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("cluster");
    for n in 0..100 {
        cluster
            .client(0)
            .create("Brigade", None, brigade(&format!("B{n}")))
            .await
            .expect("create");
    }
    let node = cluster.clients[0].node.clone();
    let probe = StatusProbe {
        api: cluster.clients[0].api_addr,
        seen: std::sync::Mutex::new(Vec::new()),
    };
    hubsync_tests::bounded("sync", node.sync_now(&probe))
        .await
        .expect("sync");
    let seen = probe.seen.lock().expect("lock").clone();
    assert!(seen.len() >= 5, "one probe per round: {}", seen.len());
    let mut last_done = 0;
    for s in &seen {
        let p = &s["progress"];
        assert!(p.is_object(), "progress while running: {s}");
        assert_eq!(s["sync"]["running"], true);
        let (done, total) = (
            p["done"].as_u64().expect("done"),
            p["total"].as_u64().expect("total"),
        );
        assert!(done >= last_done && total >= done, "{p}");
        assert!(total >= 100, "the whole queue counts from the start: {p}");
        for k in [
            "bytes_sent",
            "bytes_received",
            "rate",
            "eta_secs",
            "started_at",
        ] {
            assert!(p.get(k).is_some(), "progress has {k}: {p}");
        }
        last_done = done;
    }
    assert_eq!(last_done, 100);
    let (_, idle) =
        hubsync::local_client::request(cluster.clients[0].api_addr, "GET", "/api/v1/status", None)
            .await
            .expect("status");
    assert!(idle["progress"].is_null(), "idle: {idle}");
    assert_eq!(idle["sync"]["running"], false);
    cluster.shutdown().await;
}
