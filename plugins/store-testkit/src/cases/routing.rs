//! Routing state: node scopes, what scoped nodes hold, eviction on clients.

use hubsync_core::store::{EntityRef, Holding, ScopeRecord};
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
