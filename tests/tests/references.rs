//! Referential integrity of local writes (contract §7.8, design Property 3
//! and 15): a write naming an entity the node does not hold, or a deleted
//! one, is refused with the field's JSON pointer and the missing uuid; a
//! parent chain can be any depth but never a cycle.

use hubsync_core::engine::BatchOp;
use hubsync_core::{Engine, EngineError, EngineOptions};
use hubsync_tests::EngineSet;
use serde_json::{Value, json};
use uuid::Uuid;

/// Asserts a refusal whose issues include `path` with a message containing
/// `needle`.
fn check_refused(result: Result<impl std::fmt::Debug, EngineError>, path: &str, needle: &str) {
    match result {
        Err(EngineError::Invalid(v)) => assert!(
            v.issues
                .iter()
                .any(|i| i.path == path && i.message.contains(needle)),
            "expected {path}: …{needle}… in {v}"
        ),
        Err(EngineError::Batch(items)) => assert!(
            items
                .iter()
                .any(|i| i.path == path && i.message.contains(needle)),
            "expected {path}: …{needle}… in {items:?}"
        ),
        other => panic!("expected a refusal at {path}, got {other:?}"),
    }
}

async fn create(e: &Engine, ty: &str, data: Value) -> Uuid {
    e.create(ty, None, data).await.unwrap().uuid
}

async fn client() -> (EngineSet, Engine) {
    let set = EngineSet::new(1, EngineOptions::default()).await.unwrap();
    let c = set.clients[0].0.clone();
    (set, c)
}

#[tokio::test]
async fn a_reference_to_an_unknown_entity_is_refused_naming_field_and_uuid() {
    let (set, c) = client().await;
    let ghost = Uuid::now_v7();
    check_refused(
        c.create(
            "Employee",
            None,
            json!({"full_name": "A", "brigade": ghost}),
        )
        .await,
        "/brigade",
        &ghost.to_string(),
    );
    // Inside a tabular part, the pointer names the line.
    let b = create(&c, "Brigade", json!({"name": "B"})).await;
    let s = create(&c, "Site", json!({"name": "S"})).await;
    let e = create(&c, "Employee", json!({"full_name": "E", "brigade": b})).await;
    let report = json!({"date": "2026-11-24", "brigade": b, "site": s, "lines": [
        {"employee": e, "hours": 8, "task": "a"},
        {"employee": ghost, "hours": 2, "task": "b"}
    ]});
    check_refused(
        c.create("DailyReport", None, report).await,
        "/lines/1/employee",
        "does not exist",
    );
    // Nothing was written by the refusals.
    assert_eq!(
        c.store()
            .count_queued(c.identity().master_id.unwrap())
            .await
            .unwrap(),
        3
    );
    set.close().await;
}

#[tokio::test]
async fn a_reference_to_a_deleted_entity_is_refused() {
    let (set, c) = client().await;
    let b = create(&c, "Brigade", json!({"name": "B"})).await;
    c.delete("Brigade", b).await.unwrap();
    check_refused(
        c.create("Employee", None, json!({"full_name": "A", "brigade": b}))
            .await,
        "/brigade",
        "deleted",
    );
    set.close().await;
}

#[tokio::test]
async fn a_batch_may_reference_what_it_creates_earlier_and_is_refused_whole_otherwise() {
    let (set, c) = client().await;
    let (b, e) = (Uuid::now_v7(), Uuid::now_v7());
    c.batch(vec![
        BatchOp::Put {
            entity_type: "Brigade".into(),
            uuid: b,
            data: json!({"name": "B"}),
        },
        BatchOp::Put {
            entity_type: "Employee".into(),
            uuid: e,
            data: json!({"full_name": "E", "brigade": b}),
        },
    ])
    .await
    .unwrap();
    let ghost = Uuid::now_v7();
    let x = Uuid::now_v7();
    check_refused(
        c.batch(vec![
            BatchOp::Put {
                entity_type: "Brigade".into(),
                uuid: x,
                data: json!({"name": "X"}),
            },
            BatchOp::Put {
                entity_type: "Employee".into(),
                uuid: Uuid::now_v7(),
                data: json!({"full_name": "F", "brigade": ghost}),
            },
        ])
        .await,
        "/data/brigade",
        &ghost.to_string(),
    );
    assert!(
        c.get("Brigade", x).await.is_err(),
        "the batch was rolled back whole"
    );
    set.close().await;
}

#[tokio::test]
async fn hierarchies_of_a_thousand_levels_move_freely_but_never_into_a_cycle() {
    let (set, c) = client().await;
    let root = create(&c, "Site", json!({"name": "level 0"})).await;
    let mut chain = vec![root];
    for level in 1..1000 {
        let parent = chain[level - 1];
        chain.push(
            create(
                &c,
                "Site",
                json!({"name": format!("level {level}"), "parent": parent}),
            )
            .await,
        );
    }
    let leaf = chain[999];
    // Its own parent: refused.
    check_refused(
        c.put("Site", leaf, json!({"name": "leaf", "parent": leaf}))
            .await,
        "/parent",
        "own parent",
    );
    // The root under the leaf, 999 levels down: a cycle, refused.
    check_refused(
        c.put("Site", root, json!({"name": "level 0", "parent": leaf}))
            .await,
        "/parent",
        "cycle",
    );
    // Moving the subtree at level 500 under a new root: fine.
    let other = create(&c, "Site", json!({"name": "other root"})).await;
    c.put(
        "Site",
        chain[500],
        json!({"name": "level 500", "parent": other}),
    )
    .await
    .unwrap();
    // And now the old root may go under the leaf: the chains are separate.
    c.put("Site", root, json!({"name": "level 0", "parent": leaf}))
        .await
        .unwrap();
    // The whole tree syncs to the master with every parent resolvable.
    set.sync(0).await.unwrap();
    for uuid in &chain {
        let s = set.master.get("Site", *uuid).await.unwrap();
        if let Some(p) = s.data.get("parent").and_then(Value::as_str) {
            set.master
                .get("Site", Uuid::parse_str(p).unwrap())
                .await
                .unwrap();
        }
    }
    set.close().await;
}
