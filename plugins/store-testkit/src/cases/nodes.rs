//! Node rows, entity history, the conflict audit and metadata.

use hubsync_core::store::{AuditRecord, HistoryRecord, NodeRecord, NodeRole, StoreError};
use serde_json::json;

use crate::{Subject, id, ts};

fn full_node() -> NodeRecord {
    NodeRecord {
        id: id(0xC11E),
        code: "DESKTOP-USER-1".into(),
        name: "Бригада 7".into(),
        role: NodeRole::Client,
        is_self: false,
        token_hash: Some("ab".repeat(32)),
        revoked: true,
        created_at: ts(1, 1),
        last_sync_in: Some(ts(2, 22)),
        last_sync_out: Some(ts(3, 333)),
        received_packet_no: 11,
        sent_packet_no: 12,
        out_packet_no: 13,
        acked_rev: 14,
        out_up_to_rev: 15,
        prev_out_up_to_rev: Some(13),
        // In the form PostgreSQL's JSONB prints (its key order and
        // spacing), which both backends then return unchanged.
        last_results: Some(r#"[{"rev": 7, "uuid": "x", "outcome": "applied"}]"#.into()),
        prev_results: Some(r#"[{"rev": 6, "uuid": "y", "outcome": "held"}]"#.into()),
        schema_version: Some("1.2.0".into()),
    }
}

/// `node` as listings and lookups by code or token return it: without the
/// results it stores for a replay.
fn listed(node: &NodeRecord) -> NodeRecord {
    NodeRecord {
        last_results: None,
        prev_results: None,
        ..node.clone()
    }
}

pub async fn a_node_row_round_trips_every_field(s: &Subject) {
    let store = s.store.as_ref();
    let node = full_node();
    let me = NodeRecord::new(id(1), "MASTER", "master", NodeRole::Master, true);
    let mut tx = store.begin().await.unwrap();
    tx.put_node(&node).await.unwrap();
    tx.put_node(&me).await.unwrap();
    assert_eq!(tx.get_node(node.id).await.unwrap().as_ref(), Some(&node));
    tx.commit().await.unwrap();

    assert_eq!(store.get_node(node.id).await.unwrap().as_ref(), Some(&node));
    assert_eq!(store.get_node(me.id).await.unwrap().as_ref(), Some(&me));
    // Lookups by code or token and the listing leave the stored results
    // out (only an exchange reads them, with the row it writes back).
    assert_eq!(
        store.get_node_by_code("DESKTOP-USER-1").await.unwrap(),
        Some(listed(&node))
    );
    assert_eq!(
        store
            .get_node_by_token_hash(&"ab".repeat(32))
            .await
            .unwrap(),
        Some(listed(&node))
    );
    assert_eq!(store.get_node_by_token_hash("cd").await.unwrap(), None);
    assert_eq!(store.get_node_by_code("NOPE").await.unwrap(), None);
    assert_eq!(store.get_node(id(404)).await.unwrap(), None);
    assert_eq!(
        store.list_nodes().await.unwrap(),
        [listed(&node), listed(&me)],
        "ordered by code"
    );
}

pub async fn put_node_updates_by_id_and_refuses_a_duplicate_code(s: &Subject) {
    let store = s.store.as_ref();
    let mut node = full_node();
    let mut tx = store.begin().await.unwrap();
    tx.put_node(&node).await.unwrap();
    node.sent_packet_no = 99;
    node.token_hash = None;
    node.last_results = None;
    node.prev_results = Some("[]".into());
    node.prev_out_up_to_rev = None;
    tx.put_node(&node).await.unwrap();
    assert_eq!(tx.get_node(node.id).await.unwrap().as_ref(), Some(&node));
    tx.commit().await.unwrap();

    let impostor = NodeRecord::new(id(2), &node.code, "other", NodeRole::Client, false);
    let mut tx = store.begin().await.unwrap();
    let err = tx.put_node(&impostor).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    drop(tx);
    assert_eq!(
        store.get_node(node.id).await.unwrap(),
        Some(node),
        "the original stays"
    );
    assert_eq!(store.get_node(id(2)).await.unwrap(), None);
}

pub async fn history_and_audit_round_trip_oldest_first(s: &Subject) {
    let store = s.store.as_ref();
    let audit = |n: u128, entity: u128, at| AuditRecord {
        id: id(n),
        at,
        entity_type: "Report".into(),
        entity_uuid: id(entity),
        node_id: id(7),
        packet_no: 3,
        strategy: "last_write_wins".into(),
        outcome: "master_kept".into(),
        master_rev: Some(10),
        base_rev: if n.is_multiple_of(2) { Some(8) } else { None },
        result_rev: Some(11),
        detail: "both edited \"title\"".into(),
    };
    let history = |n: u128, at| HistoryRecord {
        id: id(n),
        entity_uuid: id(1),
        entity_type: "Report".into(),
        source_node_id: if n.is_multiple_of(2) {
            Some(id(7))
        } else {
            None
        },
        arrival_time: at,
        serialized_data: json!({"uuid": id(1), "data": {"title": "é", "lines": [1]}}),
        conflict_resolution: "kept_as_version".into(),
        audit_id: Some(id(100 + n)),
    };
    // Inserted out of time order, and two at the same instant.
    let audits = [
        audit(100 + 2, 1, ts(5, 0)),
        audit(100 + 1, 1, ts(4, 0)),
        audit(100 + 3, 2, ts(6, 0)),
    ];
    let versions = [
        history(2, ts(9, 5)),
        history(1, ts(9, 1)),
        history(3, ts(9, 5)),
    ];
    let mut tx = store.begin().await.unwrap();
    for a in &audits {
        tx.add_audit(a).await.unwrap();
    }
    for h in &versions {
        tx.add_history(h).await.unwrap();
    }
    tx.commit().await.unwrap();

    let [a2, a1, a3] = audits;
    assert_eq!(
        store.audit(Some(id(1)), 10).await.unwrap(),
        [a1.clone(), a2.clone()]
    );
    assert_eq!(store.audit(None, 10).await.unwrap(), [a1.clone(), a2, a3]);
    assert_eq!(store.audit(None, 1).await.unwrap(), [a1]);
    assert_eq!(store.audit(Some(id(404)), 10).await.unwrap(), []);

    let [h2, h1, h3] = versions;
    assert_eq!(
        store.history(id(1)).await.unwrap(),
        [h1, h2, h3],
        "ties keep arrival order"
    );
    assert_eq!(store.history(id(2)).await.unwrap(), []);
}

pub async fn metadata_is_a_key_value_map(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.get_meta("node_id").await.unwrap(), None);
    tx.set_meta("node_id", "first").await.unwrap();
    tx.set_meta("node_id", "second").await.unwrap();
    tx.set_meta("other", "x").await.unwrap();
    assert_eq!(
        tx.get_meta("node_id").await.unwrap().as_deref(),
        Some("second")
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store.get_meta("node_id").await.unwrap().as_deref(),
        Some("second")
    );
    assert_eq!(store.get_meta("other").await.unwrap().as_deref(), Some("x"));
    assert_eq!(store.get_meta("missing").await.unwrap(), None);
}
