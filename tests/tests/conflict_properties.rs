//! Property tests of conflict resolution: two clients edit the same
//! entities concurrently (random edits, random order of edits and of
//! syncs), over bare engines on SQLite files and the real packet codec.
//! Checks detection, the strategy's result, the audit log and the version
//! history (Properties 10, 11, 12, 31, 32, 33, 34).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hubsync::plugins::{HostedResolver, builtin_strategies};
use hubsync_core::conflict::{ConflictPolicy, ConflictResolver};
use hubsync_core::entity::now_utc;
use hubsync_core::protocol::Outcome;
use hubsync_core::{Engine, EngineOptions};
use hubsync_tests::{EngineSet, block_on, registry};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Who edits one entity: only client 0, only client 1, or both (and then
/// which of the two edits first).
#[derive(Debug, Clone, Copy)]
enum Edit {
    Only(usize),
    Both { first: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..2).prop_map(Edit::Only),
        (0usize..2).prop_map(|first| Edit::Both { first }),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    edits: Vec<Edit>,
    /// Which client syncs first after the edits.
    first_sync: usize,
    /// The names the clients write (distinct per client, so a double edit
    /// always differs in content).
    names: Vec<(String, String)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..4).prop_flat_map(|n| {
        (
            prop::collection::vec(edit(), n),
            0usize..2,
            prop::collection::vec(("[a-z]{1,6}", "[a-z]{1,6}"), n),
        )
            .prop_map(|(edits, first_sync, names)| Scenario {
                edits,
                first_sync,
                names: names
                    .into_iter()
                    .map(|(a, b)| (format!("0-{a}"), format!("1-{b}")))
                    .collect(),
            })
    })
}

/// A version a client wrote, as it held it before syncing.
#[derive(Debug, Clone)]
struct Written {
    node: Uuid,
    data: Value,
    updated_at: DateTime<Utc>,
}

/// What one scenario produced.
struct Run {
    /// Per entity: its uuid and each client's written version (if any).
    entities: Vec<(Uuid, [Option<Written>; 2])>,
    first_sync: usize,
    /// Conflict results answered to each client.
    outcomes: BTreeMap<Uuid, Outcome>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    master_data: BTreeMap<Uuid, Value>,
    audit: Vec<hubsync_core::store::AuditRecord>,
    history: BTreeMap<Uuid, Vec<hubsync_core::store::HistoryRecord>>,
}

fn policy(name: &str) -> ConflictPolicy {
    let resolvers: Vec<Arc<dyn ConflictResolver>> = builtin_strategies()
        .into_iter()
        .map(|r| {
            Arc::new(HostedResolver::linked(r, Default::default())) as Arc<dyn ConflictResolver>
        })
        .collect();
    ConflictPolicy::build(resolvers, name, &[], &BTreeMap::new()).expect("a built-in strategy")
}

async fn run(s: &Scenario, strategy: &str) -> Run {
    let options = EngineOptions {
        versioning: true,
        ..EngineOptions::default()
    };
    let mut set = EngineSet::new(2, options.clone())
        .await
        .expect("engine set");
    // The master with the strategy under test, over the same store.
    let master = Engine::open(
        set.master.store().clone(),
        registry(),
        policy(strategy),
        options,
    )
    .await
    .expect("reopen the master");
    set.master = master.clone();
    for (_, t) in &mut set.clients {
        t.master = master.clone();
    }
    let c = |i: usize| &set.clients[i].0;
    let mut entities = Vec::new();
    for (k, _) in s.edits.iter().enumerate() {
        let e = c(0)
            .create("Brigade", None, json!({"name": format!("start-{k}")}))
            .await
            .expect("create");
        entities.push((e.uuid, [None, None]));
    }
    set.sync(0).await.expect("sync");
    set.sync(1).await.expect("sync");
    let started = now_utc();
    for (k, edit) in s.edits.iter().enumerate() {
        let order: Vec<usize> = match *edit {
            Edit::Only(i) => vec![i],
            Edit::Both { first } => vec![first, 1 - first],
        };
        for i in order {
            let name = if i == 0 { &s.names[k].0 } else { &s.names[k].1 };
            let (e, _) = c(i)
                .put("Brigade", entities[k].0, json!({"name": name}))
                .await
                .expect("edit");
            entities[k].1[i] = Some(Written {
                node: c(i).identity().node_id,
                data: e.data,
                updated_at: e.updated_at,
            });
        }
    }
    let mut outcomes = BTreeMap::new();
    for i in [s.first_sync, 1 - s.first_sync] {
        let summary = set.sync(i).await.expect("sync");
        for r in summary.conflicts {
            outcomes.insert(r.uuid, r.outcome);
        }
    }
    let finished = now_utc();
    let mut master_data = BTreeMap::new();
    let mut history = BTreeMap::new();
    for (uuid, _) in &entities {
        master_data.insert(*uuid, master.get("Brigade", *uuid).await.expect("get").data);
        history.insert(*uuid, master.store().history(*uuid).await.expect("history"));
    }
    let audit = master.store().audit(None, 1000).await.expect("audit");
    set.close().await;
    Run {
        entities,
        first_sync: s.first_sync,
        outcomes,
        started,
        finished,
        master_data,
        audit,
        history,
    }
}

/// Properties 12, 31–34, which hold whatever the strategy: one audit record
/// per conflict; every losing version in history with its source node, an
/// arrival time within the run, and exactly the data the loser held.
fn check_records(
    r: &Run,
    winner_of: impl Fn(&Written, &Written) -> usize,
) -> Result<(), TestCaseError> {
    let conflicts: Vec<Uuid> = r
        .entities
        .iter()
        .filter(|(_, w)| w[0].is_some() && w[1].is_some())
        .map(|(u, _)| *u)
        .collect();
    prop_assert_eq!(
        r.outcomes.keys().copied().collect::<Vec<_>>(),
        {
            let mut c = conflicts.clone();
            c.sort();
            c
        },
        "exactly the entities edited on both clients conflict"
    );
    prop_assert_eq!(
        r.audit.len(),
        conflicts.len(),
        "one audit record per conflict"
    );
    for (uuid, written) in &r.entities {
        let h = &r.history[uuid];
        let (Some(w0), Some(w1)) = (&written[0], &written[1]) else {
            prop_assert!(h.is_empty(), "no conflict, no history");
            continue;
        };
        prop_assert_eq!(r.audit.iter().filter(|a| a.entity_uuid == *uuid).count(), 1);
        let (first, second) = if r.first_sync == 0 {
            (w0, w1)
        } else {
            (w1, w0)
        };
        // The second syncer's change met the first's on the master.
        let winner = winner_of(first, second);
        let loser = if winner == 0 { second } else { first };
        let expected_master = if winner == 0 {
            &first.data
        } else {
            &second.data
        };
        prop_assert_eq!(&r.master_data[uuid], expected_master);
        prop_assert_eq!(h.len(), 1, "one losing version: {:?}", h);
        let rec = &h[0];
        prop_assert_eq!(rec.source_node_id, Some(loser.node));
        prop_assert!(
            rec.arrival_time >= r.started && rec.arrival_time <= r.finished,
            "arrival {} not within {}..{}",
            rec.arrival_time,
            r.started,
            r.finished
        );
        prop_assert_eq!(&rec.serialized_data["data"], &loser.data);
        let loser_ts = hubsync_core::entity::format_ts(loser.updated_at);
        prop_assert_eq!(
            rec.serialized_data["updated_at"].as_str(),
            Some(loser_ts.as_str())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 9: For any entity modified simultaneously on multiple nodes, conflicts should be detected during synchronization
    // Feature: sync-system, Property 10: For any detected conflict, the server version should be preserved by default
    // Feature: sync-system, Property 12: For any resolved conflict, an audit log entry should be created documenting the resolution decision
    // Feature: sync-system, Property 31: For any conflict when versioning is enabled, conflicting object versions should be preserved in ObjectVersionHistory
    // Feature: sync-system, Property 32: For any stored conflicting version, the source node identifier should be recorded
    // Feature: sync-system, Property 33: For any stored conflicting version, the arrival timestamp should be recorded
    // Feature: sync-system, Property 34: For any conflicting object serialization, all original field values should be preserved
    #[test]
    fn server_wins_keeps_the_master_version_and_records_the_loser(s in scenario()) {
        let r = block_on(run(&s, "server-wins"));
        for (uuid, outcome) in &r.outcomes {
            prop_assert_eq!(*outcome, Outcome::ConflictMasterWon, "{}", uuid);
        }
        // The first syncer's version is the master's when the second arrives.
        check_records(&r, |_, _| 0)?;
    }

    // Feature: sync-system, Property 9: For any entity modified simultaneously on multiple nodes, conflicts should be detected during synchronization
    // Feature: sync-system, Property 11: For any conflict resolution using timestamps, the change with the most recent UTC timestamp should be selected
    // Feature: sync-system, Property 12: For any resolved conflict, an audit log entry should be created documenting the resolution decision
    // Feature: sync-system, Property 31: For any conflict when versioning is enabled, conflicting object versions should be preserved in ObjectVersionHistory
    #[test]
    fn last_writer_wins_selects_the_most_recent_timestamp(s in scenario()) {
        let r = block_on(run(&s, "last-writer-wins"));
        check_records(&r, |master, incoming| {
            if (incoming.updated_at, incoming.node) > (master.updated_at, master.node) { 1 } else { 0 }
        })?;
        for (uuid, outcome) in &r.outcomes {
            prop_assert!(
                matches!(outcome, Outcome::ConflictMasterWon | Outcome::ConflictIncomingWon),
                "{}: {:?}", uuid, outcome
            );
        }
    }
}
