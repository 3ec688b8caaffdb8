//! The security event log: recorded outside transactions, queried by time,
//! kind and node, newest first, and pruned by age.

use hubsync_core::security::{SecurityEvent, SecurityEventKind, SecurityEventQuery};

use crate::{Subject, id, ts};

pub async fn security_events_are_recorded_filtered_newest_first_and_pruned(s: &Subject) {
    let store = s.store.as_ref();
    let event = |secs: i64, kind, node: Option<u128>, detail: &str| SecurityEvent {
        at: ts(secs, 7),
        kind,
        node_id: node.map(id),
        node_code: node.map(|n| format!("NODE-{n}")),
        peer: if node.is_some() {
            Some("127.0.0.1:40000".into())
        } else {
            None
        },
        detail: detail.into(),
    };
    let events = [
        event(1, SecurityEventKind::TokenIssued, Some(1), "token issued"),
        event(
            2,
            SecurityEventKind::AuthFailed,
            None,
            "unknown token 0a1b2c3d — ü",
        ),
        event(3, SecurityEventKind::AuthFailed, Some(1), "node revoked"),
        event(3, SecurityEventKind::Lockout, Some(1), "5 failures in 60 s"),
        event(
            4,
            SecurityEventKind::AuthzDenied,
            Some(2),
            "sender mismatch",
        ),
    ];
    for e in &events {
        store.record_security_event(e).await.unwrap();
    }
    let [issued, unknown, revoked, lockout, denied] = events;

    let all = store
        .security_events(&SecurityEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            denied.clone(),
            lockout.clone(),
            revoked.clone(),
            unknown.clone(),
            issued.clone()
        ],
        "newest first; the same instant: last recorded first"
    );
    let q = |f: fn(&mut SecurityEventQuery)| {
        let mut q = SecurityEventQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        store
            .security_events(&q(|q| q.kind = Some(SecurityEventKind::AuthFailed)))
            .await
            .unwrap(),
        [revoked.clone(), unknown.clone()]
    );
    assert_eq!(
        store
            .security_events(&q(|q| q.node_id = Some(id(1))))
            .await
            .unwrap(),
        [lockout.clone(), revoked.clone(), issued.clone()]
    );
    assert_eq!(
        store
            .security_events(&q(|q| q.since = Some(ts(3, 7))))
            .await
            .unwrap(),
        [denied.clone(), lockout.clone(), revoked.clone()],
        "since is inclusive"
    );
    assert_eq!(
        store
            .security_events(&q(|q| {
                q.since = Some(ts(2, 0));
                q.kind = Some(SecurityEventKind::AuthFailed);
                q.node_id = Some(id(1));
            }))
            .await
            .unwrap(),
        std::slice::from_ref(&revoked),
        "filters combine"
    );
    assert_eq!(
        store.security_events(&q(|q| q.limit = 2)).await.unwrap(),
        [denied.clone(), lockout.clone()]
    );
    assert_eq!(
        store
            .security_events(&q(|q| q.node_id = Some(id(404))))
            .await
            .unwrap(),
        []
    );

    // Not part of any data transaction: a rolled-back one around it does
    // not take it away.
    let tx = store.begin().await.unwrap();
    drop(tx);
    let late = event(
        5,
        SecurityEventKind::LimitExceeded,
        Some(2),
        "body too large",
    );
    store.record_security_event(&late).await.unwrap();
    let tx = store.begin().await.unwrap();
    drop(tx);
    assert_eq!(
        store.security_events(&q(|q| q.limit = 1)).await.unwrap(),
        std::slice::from_ref(&late)
    );

    assert_eq!(store.prune_security_events(ts(3, 7)).await.unwrap(), 2);
    assert_eq!(
        store
            .security_events(&SecurityEventQuery::default())
            .await
            .unwrap(),
        [late, denied, lockout, revoked],
        "events before the cut are gone, the rest stay"
    );
}
