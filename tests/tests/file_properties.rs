//! Property tests of file exchange (Properties 35, 36, 37) and of sync
//! progress (Property 25), over real SQLite stores, the real codec and
//! real sealed files.

include!("../scenarios/file_world.rs");

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use hubsync::progress::{ProgressMeter, ProgressReport};
use hubsync_core::engine::{Progress, SyncProgress};
use hubsync_core::protocol::{self, DecodeLimits, Envelope};
use hubsync_tests::block_on;
use proptest::prelude::*;
use uuid::Uuid;
use world::{World, brigade, options};

/// Opens and decodes a sealed file with the client's token.
fn decode(bytes: &[u8], token: &str) -> Envelope {
    let key = hubsync::auth::token_hash(token);
    let (_, plain) = hubsync::sealed_file::open(bytes, |_| Some(key.clone())).expect("opens");
    protocol::decode_envelope(&plain, DecodeLimits::default()).expect("decodes")
}

/// A local write on a client, over a small pool of brigades.
#[derive(Debug, Clone)]
enum Write {
    Put(usize, String),
    Delete(usize),
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (0usize..6, "[A-Za-z]{1,8}").prop_map(|(s, n)| Write::Put(s, n)),
        1 => (0usize..6).prop_map(Write::Delete),
    ]
}

/// The client's own view of what it wrote: slot → (uuid, live name or
/// None when deleted).
type Model = BTreeMap<usize, (Uuid, Option<String>)>;

async fn apply_write(w: &World, i: usize, model: &mut Model, op: &Write) {
    let e = w.client(i);
    match op {
        Write::Put(slot, name) => match model.get(slot) {
            Some((uuid, _)) => {
                e.put("Brigade", *uuid, brigade(name)).await.expect("put");
                model.insert(*slot, (*uuid, Some(name.clone())));
            }
            None => {
                let uuid = e
                    .create("Brigade", None, brigade(name))
                    .await
                    .expect("create")
                    .uuid;
                model.insert(*slot, (uuid, Some(name.clone())));
            }
        },
        Write::Delete(slot) => {
            if let Some((uuid, Some(_))) = model.get(slot).cloned() {
                e.delete("Brigade", uuid).await.expect("delete");
                model.insert(*slot, (uuid, None));
            }
        }
    }
}

/// Every entity of the model holds, on `engine`, what the client last wrote.
async fn assert_holds(engine: &hubsync_core::Engine, model: &Model, who: &str) {
    for (uuid, name) in model.values() {
        let e = engine
            .get("Brigade", *uuid)
            .await
            .unwrap_or_else(|_| panic!("{who} lost {uuid}"));
        match name {
            Some(n) => {
                assert!(!e.is_deleted, "{who}: {uuid} deleted");
                assert_eq!(e.data["name"], n.as_str(), "{who}: {uuid}");
            }
            None => assert!(e.is_deleted, "{who}: {uuid} not deleted"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 35: For any selected pending changes, exporting to file should include all selected change data
    #[test]
    fn an_export_carries_every_pending_change(
        writes in prop::collection::vec(write(), 1..16),
        limit in 1u32..8,
    ) {
        block_on(async {
            let w = World::new(1, options(limit)).await;
            let mut model = Model::new();
            for op in &writes {
                apply_write(&w, 0, &mut model, op).await;
            }
            let touched: BTreeSet<Uuid> = model.values().map(|(u, _)| *u).collect();
            let mut carried = BTreeSet::new();
            for round in 0..40 {
                let file = w.export_client(0).await;
                let env = decode(&file.bytes, &w.clients[0].token);
                assert_eq!(file.summary.changes, env.body.entities.len() as u64);
                if round == 0 {
                    assert_eq!(
                        env.body.entities.len(),
                        touched.len().min(limit as usize),
                        "the first file is as full as the packet bound allows"
                    );
                }
                if env.body.entities.is_empty() {
                    break;
                }
                for c in &env.body.entities {
                    // The file carries the change's complete current state.
                    let here = w.client(0).get(&c.entity_type, c.uuid).await.expect("local");
                    assert_eq!(&c.data, &here.data);
                    assert_eq!(c.is_deleted, here.is_deleted);
                    assert_eq!(c.updated_at, here.updated_at);
                    carried.insert(c.uuid);
                }
                w.import_master(&file.bytes, false).await.expect("import");
                let down = w.export_master(0).await;
                w.import_client(0, &down.bytes, false).await.expect("import");
            }
            assert_eq!(carried, touched, "every pending change was exported");
            assert_eq!(w.client(0).status().await.expect("status").pending_changes, 0);
            assert_holds(&w.master, &model, "master").await;
            w.close().await;
        });
    }

    // Feature: sync-system, Property 36: For any valid change file, importing should correctly apply all changes from the file
    #[test]
    fn importing_a_valid_file_applies_all_its_changes(
        client_writes in prop::collection::vec(write(), 0..12),
        master_names in prop::collection::vec("[A-Za-z]{1,8}", 0..8),
    ) {
        block_on(async {
            let w = World::new(1, options(500)).await;
            let mut model = Model::new();
            for op in &client_writes {
                apply_write(&w, 0, &mut model, op).await;
            }
            let mut from_master = Vec::new();
            for n in &master_names {
                from_master.push(
                    w.master.create("Brigade", None, brigade(n)).await.expect("create").uuid,
                );
            }
            // Client → master.
            let up = w.export_client(0).await;
            let env = decode(&up.bytes, &w.clients[0].token);
            let got = w.import_master(&up.bytes, false).await.expect("import");
            assert_eq!(got.report.applied, env.body.entities.len() as u64);
            assert!(got.report.conflicts.is_empty());
            for c in &env.body.entities {
                let m = w.master.get(&c.entity_type, c.uuid).await.expect("applied");
                assert_eq!(&m.data, &c.data);
                assert_eq!(m.is_deleted, c.is_deleted);
            }
            assert_holds(&w.master, &model, "master").await;
            // Master → client.
            let down = w.export_master(0).await;
            let env = decode(&down.bytes, &w.clients[0].token);
            let got = w.import_client(0, &down.bytes, false).await.expect("import");
            assert_eq!(got.report.applied, env.body.entities.len() as u64);
            assert_eq!(got.report.applied, master_names.len() as u64);
            for c in &env.body.entities {
                let here = w.client(0).get(&c.entity_type, c.uuid).await.expect("applied");
                assert_eq!(&here.data, &c.data);
                assert_eq!(here.rev, c.rev);
            }
            for u in &from_master {
                w.client(0).get("Brigade", *u).await.expect("master's entity arrived");
            }
            w.assert_converged().await;
            w.close().await;
        });
    }
}

/// A step of the queue-integrity property.
#[derive(Debug, Clone)]
enum Step {
    Client(Write),
    Master(usize, String),
    ExportClient {
        lost: bool,
    },
    ExportMaster {
        lost: bool,
    },
    /// Import one of the client's files so far (by index; old ones again).
    ImportAtMaster(prop::sample::Index),
    ImportAtClient(prop::sample::Index),
    Network,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => write().prop_map(Step::Client),
        2 => (0usize..4, "[a-z]{1,6}").prop_map(|(s, n)| Step::Master(s, n)),
        3 => any::<bool>().prop_map(|lost| Step::ExportClient { lost }),
        3 => any::<bool>().prop_map(|lost| Step::ExportMaster { lost }),
        3 => any::<prop::sample::Index>().prop_map(Step::ImportAtMaster),
        3 => any::<prop::sample::Index>().prop_map(Step::ImportAtClient),
        1 => Just(Step::Network),
    ]
}

async fn numbers(w: &World) -> (i64, i64, i64, i64) {
    let c = w.client(0).status().await.expect("status");
    let m = w.master.status().await.expect("status");
    let peer = &m.nodes[0];
    (
        c.sent_packet_no,
        c.received_packet_no,
        peer.received_packet_no,
        peer.sent_packet_no,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 37: For any change queue management operation, data integrity should be maintained and corruption prevented
    #[test]
    fn the_queue_survives_any_mix_of_files_network_reimports_and_lost_files(
        steps in prop::collection::vec(step(), 1..30),
        limit in 1u32..5,
    ) {
        block_on(async {
            let w = World::new(1, options(limit)).await;
            let mut model = Model::new();
            let mut master_slots: BTreeMap<usize, Uuid> = BTreeMap::new();
            let mut up_files: Vec<Vec<u8>> = Vec::new();
            let mut down_files: Vec<Vec<u8>> = Vec::new();
            for s in &steps {
                let (c_sent, c_recv, m_recv, m_sent) = numbers(&w).await;
                match s {
                    Step::Client(op) => apply_write(&w, 0, &mut model, op).await,
                    Step::Master(slot, name) => match master_slots.get(slot) {
                        Some(u) => {
                            w.master.put("Brigade", *u, brigade(name)).await.expect("put");
                        }
                        None => {
                            let u = w.master.create("Brigade", None, brigade(name)).await.expect("create").uuid;
                            master_slots.insert(*slot, u);
                        }
                    },
                    Step::ExportClient { lost } => {
                        let f = w.export_client(0).await;
                        let n = f.summary.packet_no;
                        // At most one packet in flight, numbered right after
                        // the last acknowledged one; an acknowledged number
                        // is never sent again with changes.
                        assert!(n == c_sent || n == c_sent + 1, "client packet {n} after {c_sent}");
                        if n == c_sent {
                            assert_eq!(f.summary.changes, 0, "acknowledged packet {n} resent");
                        }
                        if !lost {
                            up_files.push(f.bytes);
                        }
                    }
                    Step::ExportMaster { lost } => {
                        let f = w.export_master(0).await;
                        let n = f.summary.packet_no;
                        assert!(n == m_sent || n == m_sent + 1, "master packet {n} after {m_sent}");
                        if n == m_sent {
                            assert_eq!(f.summary.changes, 0, "acknowledged packet {n} resent");
                        }
                        assert_eq!(f.summary.ack_packet_no, m_recv);
                        if !lost {
                            down_files.push(f.bytes);
                        }
                    }
                    Step::ImportAtMaster(ix) => {
                        if !up_files.is_empty() {
                            let f = &up_files[ix.index(up_files.len())];
                            let r = w.import_master(f, false).await.expect("a valid file imports");
                            assert!(
                                !r.report.new_packet || r.report.packet_no == m_recv + 1,
                                "applied packet {} after {m_recv}", r.report.packet_no
                            );
                        }
                    }
                    Step::ImportAtClient(ix) => {
                        if !down_files.is_empty() {
                            let f = &down_files[ix.index(down_files.len())];
                            let r = w.import_client(0, f, false).await.expect("a valid file imports");
                            assert!(
                                !r.report.new_packet || r.report.packet_no == c_recv + 1,
                                "applied packet {} after {c_recv}", r.report.packet_no
                            );
                        }
                    }
                    Step::Network => {
                        w.sync(0).await;
                    }
                }
                // Numbers only move forward, one at a time, and neither side
                // believes the other holds more than it does.
                let (c_sent2, c_recv2, m_recv2, m_sent2) = numbers(&w).await;
                assert!(c_sent2 >= c_sent && c_recv2 >= c_recv && m_recv2 >= m_recv && m_sent2 >= m_sent);
                assert!((c_recv2 - c_recv <= 1 && m_recv2 - m_recv <= 1) || matches!(s, Step::Network));
                assert!(c_sent2 <= m_recv2, "client counts packet {c_sent2} acknowledged, master received {m_recv2}");
                assert!(m_sent2 <= c_recv2, "master counts packet {m_sent2} acknowledged, client received {c_recv2}");
            }
            // Nothing lost: whatever happened, the network drains it all.
            w.network_until_quiet(20).await;
            w.assert_converged().await;
            assert_eq!(w.client(0).status().await.expect("status").pending_changes, 0);
            assert_holds(&w.master, &model, "master").await;
            assert_holds(w.client(0), &model, "client").await;
            let (c_sent, c_recv, m_recv, m_sent) = numbers(&w).await;
            assert_eq!((c_sent, c_recv), (m_recv, m_sent), "both sides agree at the end");
            w.close().await;
        });
    }
}

/// Records the progress report of every round.
struct Recorder {
    meter: ProgressMeter,
    seen: Mutex<Vec<ProgressReport>>,
}

impl Progress for Recorder {
    fn on_round(&self, p: &SyncProgress) {
        let r = self.meter.report(p);
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(r);
        }
    }
}

fn check_progress(seen: &[ProgressReport], moved: u64) {
    assert!(!seen.is_empty(), "progress was reported");
    let mut last_done = 0;
    for r in seen {
        assert!(r.done >= last_done, "done went back: {seen:?}");
        assert!(r.total >= r.done, "total below done: {r:?}");
        last_done = r.done;
    }
    let last = seen.last().expect("a report");
    assert_eq!(last.done, last.total, "the last report is complete");
    assert_eq!(last.done, moved);
    assert_eq!(last.eta_secs.unwrap_or(0), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 25: For any large dataset synchronization, progress information should be provided to users
    #[test]
    fn progress_is_reported_monotone_and_complete(
        up in 0usize..40,
        down in 0usize..40,
        limit in 1u32..10,
    ) {
        block_on(async {
            let w = World::new(1, options(limit)).await;
            for n in 0..up {
                w.client(0).create("Brigade", None, brigade(&format!("c{n}"))).await.expect("create");
            }
            for n in 0..down {
                w.master.create("Brigade", None, brigade(&format!("m{n}"))).await.expect("create");
            }
            let rec = Recorder { meter: ProgressMeter::start(), seen: Mutex::new(Vec::new()) };
            let s = w.sync_with(0, &rec).await;
            assert_eq!((s.sent_changes, s.received_changes), (up as u64, down as u64));
            let seen = rec.seen.lock().expect("lock").clone();
            check_progress(&seen, (up + down) as u64);
            // Before the last round the totals already counted what was left.
            if up + down > 0 {
                assert!(seen[0].total >= up as u64, "{:?}", seen[0]);
            }
            w.close().await;
        });
    }
}

#[tokio::test]
async fn a_large_sync_reports_progress_with_totals_from_the_start() {
    let w = World::new(1, options(100)).await;
    for n in 0..1_000 {
        w.client(0)
            .create("Brigade", None, brigade(&format!("c{n}")))
            .await
            .expect("create");
    }
    for n in 0..600 {
        w.master
            .create("Brigade", None, brigade(&format!("m{n}")))
            .await
            .expect("create");
    }
    let rec = Recorder {
        meter: ProgressMeter::start(),
        seen: Mutex::new(Vec::new()),
    };
    w.sync_with(0, &rec).await;
    let seen = rec.seen.lock().expect("lock").clone();
    check_progress(&seen, 1_600);
    assert!(seen.len() >= 10, "one report per round: {}", seen.len());
    // From the first round on, the total counts the whole queue and what
    // the master said it still has.
    assert!(seen[0].total >= 1_000 + 500, "{:?}", seen[0]);
    assert!(seen.iter().all(|r| r.bytes_sent + r.bytes_received > 0));
    w.close().await;
}
