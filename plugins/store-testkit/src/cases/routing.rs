//! Routing state: node scopes, what scoped nodes hold, eviction on clients.

use hubsync_core::entity::Operation;
use hubsync_core::store::{EntityRef, Holding, ScopeFilter, ScopeRecord};
use serde_json::json;

use crate::{Subject, entity, id};

pub async fn scopes_round_trip_with_a_pending_change_and_default_to_none(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.get_scope(id(1)).await.unwrap(), ScopeRecord::default());
    let active = json!({"types": {"Site": "all"}});
    let cases = [
        ScopeRecord {
            scope: Some(active.clone()),
            pending: None,
            resend_own_to: 0,
        },
        ScopeRecord {
            scope: Some(active.clone()),
            pending: Some(None),
            resend_own_to: 7,
        },
        ScopeRecord {
            scope: None,
            pending: Some(Some(json!({"types": {"Brigade": {"uuid": ["x"]}}}))),
            resend_own_to: 9,
        },
    ];
    for want in cases {
        tx.put_scope(id(1), &want).await.unwrap();
        assert_eq!(tx.get_scope(id(1)).await.unwrap(), want);
    }
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.get_scope(id(1)).await.unwrap().resend_own_to, 9);
    assert_eq!(tx.get_scope(id(2)).await.unwrap(), ScopeRecord::default());
}

pub async fn holdings_are_per_node_and_referrers_count_only_while_held(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    let held = Holding {
        since_packet: 3,
        evicted_in: None,
    };
    assert_eq!(
        tx.holding(id(1), "DailyReport", id(10)).await.unwrap(),
        None
    );
    tx.put_holding(id(1), "DailyReport", id(10), held)
        .await
        .unwrap();
    assert_eq!(
        tx.holding(id(1), "DailyReport", id(10)).await.unwrap(),
        Some(held)
    );
    assert_eq!(
        tx.holding(id(2), "DailyReport", id(10)).await.unwrap(),
        None
    );
    assert_eq!(tx.holding(id(1), "Employee", id(10)).await.unwrap(), None);
    // Report 10 refers to employee 20.
    tx.set_references(
        "DailyReport",
        id(10),
        &[EntityRef {
            source_type: "DailyReport".into(),
            source_uuid: id(10),
            pointer: "/lines/*/employee".into(),
            target_type: "Employee".into(),
            target_uuid: id(20),
        }],
    )
    .await
    .unwrap();
    assert!(
        tx.referenced_by_holding(id(1), "Employee", id(20))
            .await
            .unwrap()
    );
    assert!(
        !tx.referenced_by_holding(id(2), "Employee", id(20))
            .await
            .unwrap()
    );
    // Evicted: it no longer keeps what it refers to.
    let evicted = Holding {
        since_packet: 3,
        evicted_in: Some(5),
    };
    tx.put_holding(id(1), "DailyReport", id(10), evicted)
        .await
        .unwrap();
    assert_eq!(
        tx.holding(id(1), "DailyReport", id(10)).await.unwrap(),
        Some(evicted)
    );
    assert!(
        !tx.referenced_by_holding(id(1), "Employee", id(20))
            .await
            .unwrap()
    );
    assert_eq!(tx.clear_holdings(id(1)).await.unwrap(), 1);
    assert_eq!(
        tx.holding(id(1), "DailyReport", id(10)).await.unwrap(),
        None
    );
    tx.commit().await.unwrap();
}

/// The batched reads answer exactly what the one-at-a-time reads answer:
/// holdings of one node only, any mix of types, absent keys left out; a
/// target counts while a live holding refers to it, once however many do.
pub async fn holdings_and_referrers_read_in_one_go_match_the_single_reads(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    let live = |p| Holding {
        since_packet: p,
        evicted_in: None,
    };
    let gone = Holding {
        since_packet: 2,
        evicted_in: Some(4),
    };
    tx.put_holding(id(1), "DailyReport", id(10), live(1))
        .await
        .unwrap();
    tx.put_holding(id(1), "DailyReport", id(11), gone)
        .await
        .unwrap();
    tx.put_holding(id(1), "Employee", id(20), live(3))
        .await
        .unwrap();
    tx.put_holding(id(2), "DailyReport", id(12), live(1))
        .await
        .unwrap();
    // Reports 10 and 12 refer to employee 20 (twice for 10), report 11
    // (evicted) to employee 21, report 12 (another node's) to 22.
    let r = |src: u128, ptr: &str, target: u128| EntityRef {
        source_type: "DailyReport".into(),
        source_uuid: id(src),
        pointer: ptr.into(),
        target_type: "Employee".into(),
        target_uuid: id(target),
    };
    tx.set_references(
        "DailyReport",
        id(10),
        &[
            r(10, "/lines/0/employee", 20),
            r(10, "/lines/1/employee", 20),
        ],
    )
    .await
    .unwrap();
    tx.set_references("DailyReport", id(11), &[r(11, "/lines/0/employee", 21)])
        .await
        .unwrap();
    tx.set_references("DailyReport", id(12), &[r(12, "/lines/0/employee", 22)])
        .await
        .unwrap();
    let keys: Vec<(String, uuid::Uuid)> = [
        ("DailyReport", 10),
        ("DailyReport", 11),
        ("DailyReport", 12),
        ("Employee", 20),
        ("Employee", 10),
        ("Site", 99),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), id(n)))
    .collect();
    let mut got = tx.holdings(id(1), &keys).await.unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = Vec::new();
    for (t, u) in &keys {
        if let Some(h) = tx.holding(id(1), t, *u).await.unwrap() {
            want.push(((t.clone(), *u), h));
        }
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(tx.holdings(id(1), &[]).await.unwrap().is_empty());

    let targets: Vec<(String, uuid::Uuid)> = [20, 21, 22, 23]
        .into_iter()
        .map(|n| ("Employee".to_string(), id(n)))
        .chain([("Site".to_string(), id(20))])
        .collect();
    for node in [1, 2, 3] {
        let mut got = tx.referenced_by_holdings(id(node), &targets).await.unwrap();
        got.sort();
        let mut want = Vec::new();
        for (t, u) in &targets {
            if tx.referenced_by_holding(id(node), t, *u).await.unwrap() {
                want.push((t.clone(), *u));
            }
        }
        want.sort();
        assert_eq!(got, want, "node {node}");
    }
    assert_eq!(
        tx.referenced_by_holdings(id(1), &targets).await.unwrap(),
        vec![("Employee".to_string(), id(20))]
    );
    assert!(
        tx.referenced_by_holdings(id(1), &[])
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
}

pub async fn seeding_marks_every_entity_and_purge_removes_one(s: &Subject) {
    let store = s.store.as_ref();
    let mut tx = store.begin().await.unwrap();
    for n in [10, 11] {
        tx.put_entity(&entity("Site", id(n), json!({"name": n})))
            .await
            .unwrap();
    }
    tx.set_references(
        "Site",
        id(11),
        &[EntityRef {
            source_type: "Site".into(),
            source_uuid: id(11),
            pointer: "/parent".into(),
            target_type: "Site".into(),
            target_uuid: id(10),
        }],
    )
    .await
    .unwrap();
    // An earlier holding is kept as it is.
    let kept = Holding {
        since_packet: 4,
        evicted_in: None,
    };
    tx.put_holding(id(1), "Site", id(10), kept).await.unwrap();
    assert_eq!(tx.seed_holdings(id(1)).await.unwrap(), 1);
    assert_eq!(tx.holding(id(1), "Site", id(10)).await.unwrap(), Some(kept));
    assert_eq!(
        tx.holding(id(1), "Site", id(11)).await.unwrap(),
        Some(Holding {
            since_packet: 0,
            evicted_in: None
        })
    );
    assert!(tx.purge_entity("Site", id(11)).await.unwrap());
    assert!(!tx.purge_entity("Site", id(11)).await.unwrap());
    assert!(tx.get_entity("Site", id(11)).await.unwrap().is_none());
    assert!(tx.referrers("Site", id(10)).await.unwrap().is_empty());
    assert!(tx.get_entity("Site", id(10)).await.unwrap().is_some());
    tx.commit().await.unwrap();
}

/// A scoped node's candidate rows: exactly those addressed to it, written
/// by it, covered by the filter (every row of a type, or string fields and
/// the own id among listed values), held by it (evicted or not), or
/// referred to by a live holding; never more than `limit`, and the window
/// bounds how much of the log one call examines (`scanned_to`, `more`).
pub async fn scoped_candidates_are_what_the_routing_would_not_skip(s: &Subject) {
    let store = s.store.as_ref();
    let node = crate::add_node(store, 100).await;
    let other = crate::add_node(store, 101).await;
    let mut tx = store.begin().await.unwrap();
    let live = Holding {
        since_packet: 1,
        evicted_in: None,
    };
    let gone = Holding {
        since_packet: 1,
        evicted_in: Some(2),
    };
    // (uuid, type, data, origin, addressed to the node, candidate)
    let rows = [
        (1, "Brigade", json!({"foreman": "f1"}), other, false, true),
        (2, "Brigade", json!({"foreman": "f2"}), other, false, false),
        (3, "Brigade", json!({"foreman": 5}), other, false, false),
        (
            4,
            "Brigade",
            json!({"foreman": "\u{fc} \"q\""}),
            other,
            false,
            true,
        ),
        (
            5,
            "Brigade",
            json!({"name": "no foreman"}),
            other,
            false,
            false,
        ),
        (10, "Site", json!({}), other, false, false),
        (11, "Site", json!({}), node, false, true),
        (12, "Site", json!({}), other, true, true),
        (13, "Site", json!({}), other, false, true),
        (14, "Site", json!({}), other, false, true),
        (15, "Site", json!({}), other, false, false),
        (20, "Employee", json!({"foreman": "f1"}), other, false, true),
        (
            21,
            "Employee",
            json!({"foreman": "f1"}),
            other,
            false,
            false,
        ),
        (30, "DailyReport", json!({"site": 14}), other, false, true),
        (31, "DailyReport", json!({"site": 15}), other, false, true),
    ];
    // Addressed to another node: never this node's.
    tx.append_revision(Some(other), "Site", id(10), Operation::Update, None)
        .await
        .unwrap();
    for (n, ty, data, origin, addressed, _) in &rows {
        let mut e = entity(ty, id(*n), data.clone());
        e.origin = Some(*origin);
        tx.put_entity(&e).await.unwrap();
        tx.append_revision(
            addressed.then_some(node),
            ty,
            id(*n),
            Operation::Insert,
            Some(*origin),
        )
        .await
        .unwrap();
    }
    // Site 13 was sent and evicted; report 30 (held) refers to site 14,
    // report 31 (evicted) to site 15.
    tx.put_holding(node, "Site", id(13), gone).await.unwrap();
    tx.put_holding(node, "DailyReport", id(30), live)
        .await
        .unwrap();
    tx.put_holding(node, "DailyReport", id(31), gone)
        .await
        .unwrap();
    for (src, target) in [(30, 14), (31, 15)] {
        tx.set_references(
            "DailyReport",
            id(src),
            &[EntityRef {
                source_type: "DailyReport".into(),
                source_uuid: id(src),
                pointer: "/site".into(),
                target_type: "Site".into(),
                target_uuid: id(target),
            }],
        )
        .await
        .unwrap();
    }
    let filter = ScopeFilter {
        types: vec![
            (
                "Brigade".into(),
                Some(vec![(
                    "foreman".into(),
                    vec!["f1".into(), "5".into(), "\u{fc} \"q\"".into()],
                )]),
            ),
            (
                "Employee".into(),
                Some(vec![("uuid".into(), vec![id(20).to_string()])]),
            ),
            ("DailyReport".into(), None),
        ],
        with_references: true,
    };
    let want: Vec<uuid::Uuid> = rows.iter().filter(|r| r.5).map(|r| id(r.0)).collect();
    let head = tx.log_head().await.unwrap();
    let page = tx
        .scoped_revisions_after(node, 0, 100, 100, &filter)
        .await
        .unwrap();
    let got: Vec<uuid::Uuid> = page.rows.iter().map(|(r, _)| r.entity_uuid).collect();
    assert_eq!(got, want, "candidates in revision order");
    assert_eq!(page.scanned_to, head, "the whole log was examined");
    assert!(!page.more);
    let (r, e) = &page.rows[0];
    assert_eq!((r.target, e.data.clone()), (None, json!({"foreman": "f1"})));
    assert_eq!(page.rows[3].0.target, Some(node), "site 12 is addressed");
    // Without references, site 14 is no longer a candidate.
    let no_refs = ScopeFilter {
        with_references: false,
        ..filter.clone()
    };
    let page = tx
        .scoped_revisions_after(node, 0, 100, 100, &no_refs)
        .await
        .unwrap();
    assert!(!page.rows.iter().any(|(r, _)| r.entity_uuid == id(14)));
    assert_eq!(page.rows.len(), want.len() - 1);

    // At most `limit`: the page ends at its last candidate.
    let page = tx
        .scoped_revisions_after(node, 0, 2, 100, &filter)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 2);
    assert_eq!(page.scanned_to, page.rows[1].0.rev);
    assert!(page.more);
    // A window of three log rows holds one candidate (brigade 1).
    let page = tx
        .scoped_revisions_after(node, 0, 100, 3, &filter)
        .await
        .unwrap();
    let firsts = tx.revisions_after(node, 0, 3).await.unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.scanned_to, firsts[2].0.rev);
    assert!(page.more);
    // The next window starts there.
    let page = tx
        .scoped_revisions_after(node, firsts[2].0.rev, 100, 3, &filter)
        .await
        .unwrap();
    assert_eq!(page.rows[0].0.entity_uuid, id(4));
    // Past the head: nothing, and nothing more.
    let page = tx
        .scoped_revisions_after(node, head, 100, 100, &filter)
        .await
        .unwrap();
    assert!(page.rows.is_empty() && !page.more);
    assert_eq!(page.scanned_to, head);
    tx.commit().await.unwrap();
}
