//! Property-based: change registration over random edit sequences.

use std::collections::BTreeMap;

use hubsync_core::entity::Operation;
use hubsync_core::store::{Store, StoreTx};
use proptest::prelude::*;
use uuid::Uuid;

use super::{add_node, id, memory_store};

#[derive(Debug, Clone)]
enum Step {
    /// A local write of entity `n`.
    Change(u128, Operation),
    /// Everything unsent goes into the next packet.
    Send,
}

fn step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        Just(Operation::Insert),
        Just(Operation::Update),
        Just(Operation::Delete)
    ];
    prop_oneof![
        8 => (0u128..4, op).prop_map(|(n, op)| Step::Change(n, op)),
        1 => Just(Step::Send),
    ]
}

/// What the queue must hold: per entity, the coalesced unsent operation, in
/// order of the first unsent change; and how many rows each packet carries.
#[derive(Default)]
struct Model {
    unsent: Vec<(Uuid, Operation)>,
    packets: BTreeMap<i64, usize>,
}

impl Model {
    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Change(n, op) => match self.unsent.iter_mut().find(|(u, _)| *u == id(n)) {
                Some((_, queued)) => *queued = Operation::coalesce(*queued, op),
                None => self.unsent.push((id(n), op)),
            },
            Step::Send => {
                let next = self.packets.len() as i64 + 1;
                self.packets.insert(next, self.unsent.len());
                self.unsent.clear();
            }
        }
    }
}

async fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let store = memory_store().await;
    let master = add_node(&store, 100).await;
    let other = add_node(&store, 200).await;
    let mut model = Model::default();
    let mut packet = 0;
    for step in steps {
        // Each step its own transaction, as local writes are.
        let mut tx = store.begin().await.unwrap();
        match *step {
            Step::Change(n, op) => tx.queue_change(master, "Report", id(n), op).await.unwrap(),
            Step::Send => {
                packet += 1;
                let ids: Vec<i64> = tx
                    .unsent_changes(master, 1000)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.id)
                    .collect();
                tx.assign_packet(master, &ids, packet).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        model.apply(step);
    }

    let mut tx: Box<dyn StoreTx> = store.begin().await.unwrap();
    let unsent: Vec<(Uuid, Operation)> = tx
        .unsent_changes(master, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.entity_uuid, r.operation))
        .collect();
    prop_assert_eq!(&unsent, &model.unsent);
    for (packet, rows) in &model.packets {
        prop_assert_eq!(
            tx.changes_in_packet(master, *packet).await.unwrap().len(),
            *rows
        );
    }
    for n in 0..4 {
        let touched = steps
            .iter()
            .any(|s| matches!(s, Step::Change(m, _) if *m == n));
        prop_assert_eq!(
            tx.has_queued(master, "Report", id(n)).await.unwrap(),
            touched
        );
    }
    prop_assert!(tx.unsent_changes(other, 1000).await.unwrap().is_empty());
    drop(tx);
    let total: usize = model.unsent.len() + model.packets.values().sum::<usize>();
    prop_assert_eq!(store.count_queued(master).await.unwrap(), total as i64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 4: For any entity modification on any node, the change should be registered in the change tracking system
    #[test]
    fn every_change_is_registered_once_per_entity_with_the_coalesced_operation(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&steps))?;
    }
}

/// Strings a field may hold or a scope may list: plain ones (the text
/// prefilter applies), and ones with quotes, backslashes, control
/// characters, `/` and non-ASCII letters (JSON escapes or raw UTF-8).
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c]{1,3}",
        1 => prop::sample::select(vec![
            "a\"b", "a\\b", "a\tb", "a\u{1}b", "a/b", "\u{451}\u{43b}\u{43a}\u{430}",
            "\u{1f600}", "a b", "",
        ])
        .prop_map(String::from),
    ]
}

/// The field's value in each entity: a string, a number, or missing.
#[derive(Debug, Clone)]
enum Held {
    Text(String),
    Number(i64),
    Missing,
}

fn held() -> impl Strategy<Value = Held> {
    prop_oneof![
        6 => field_value().prop_map(Held::Text),
        1 => (0i64..3).prop_map(Held::Number),
        1 => Just(Held::Missing),
    ]
}

async fn scoped_match(holds: &[Held], listed: &[String], noise: &str) -> Result<(), TestCaseError> {
    use hubsync_core::store::ScopeFilter;
    use serde_json::json;

    let store = memory_store().await;
    let node = add_node(&store, 100).await;
    let other = add_node(&store, 101).await;
    let mut tx = store.begin().await.unwrap();
    for (i, h) in holds.iter().enumerate() {
        // The value may also appear elsewhere in the document (`noise`):
        // the prefilter then lets the row through to json_extract.
        let mut data = json!({"name": noise, "lines": [{"foreman": noise}]});
        match h {
            Held::Text(s) => data["foreman"] = json!(s),
            Held::Number(n) => data["foreman"] = json!(n),
            Held::Missing => {}
        }
        let mut e = super::entity("Brigade", id(i as u128 + 1), data);
        e.origin = Some(other);
        tx.put_entity(&e).await.unwrap();
        tx.append_revision(None, "Brigade", e.uuid, Operation::Insert, Some(other))
            .await
            .unwrap();
    }
    let filter = ScopeFilter {
        types: vec![(
            "Brigade".into(),
            Some(vec![("foreman".into(), listed.to_vec())]),
        )],
        with_references: false,
    };
    let page = tx
        .scoped_revisions_after(node, 0, 1000, 1000, &filter)
        .await
        .unwrap();
    let got: Vec<Uuid> = page.rows.iter().map(|(r, _)| r.entity_uuid).collect();
    let want: Vec<Uuid> = holds
        .iter()
        .enumerate()
        .filter(|(_, h)| matches!(h, Held::Text(s) if listed.contains(s)))
        .map(|(i, _)| id(i as u128 + 1))
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 2: For any set of offline changes, reconnecting to the server should result in all changes being transmitted and acknowledged
    // (for a scoped node: every row whose field holds a listed string is a
    // candidate, whether the SQLite text prefilter applies or not, and no
    // other row is)
    #[test]
    fn a_scoped_field_matches_exactly_the_rows_holding_a_listed_string(
        holds in prop::collection::vec(held(), 1..12),
        listed in prop::collection::vec(field_value(), 0..20),
        noise in field_value(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(scoped_match(&holds, &listed, &noise))?;
    }
}
