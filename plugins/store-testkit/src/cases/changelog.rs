//! The master change log: increasing revisions, the latest per entity and
//! target, targeted rows visible to their node only.

use hubsync_core::entity::Operation::{Delete, Insert, Update};
use hubsync_core::store::{StoreError, StoreTx};
use serde_json::json;
use uuid::Uuid;

use crate::{Subject, add_node, entity, id};

/// (entity, rev) pairs `node` sees after `after`.
async fn visible(tx: &mut dyn StoreTx, node: Uuid, after: i64, limit: u32) -> Vec<(Uuid, i64)> {
    tx.revisions_after(node, after, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| (r.entity_uuid, r.rev))
        .collect()
}

pub async fn revisions_increase_and_the_log_keeps_the_latest_per_entity(s: &Subject) {
    let store = s.store.as_ref();
    let node = add_node(store, 100).await;
    let mut tx = store.begin().await.unwrap();
    for n in 1..=2 {
        tx.put_entity(&entity("Report", id(n), json!({"n": n as u64})))
            .await
            .unwrap();
    }

    let r1 = tx
        .append_revision(None, "Report", id(1), Insert, None)
        .await
        .unwrap();
    let r2 = tx
        .append_revision(None, "Report", id(2), Insert, Some(node))
        .await
        .unwrap();
    let r3 = tx
        .append_revision(None, "Report", id(1), Update, None)
        .await
        .unwrap();
    assert!(r1 < r2 && r2 < r3);
    assert_eq!(
        visible(&mut *tx, node, 0, 100).await,
        [(id(2), r2), (id(1), r3)]
    );
    assert_eq!(visible(&mut *tx, node, r2, 100).await, [(id(1), r3)]);
    assert_eq!(visible(&mut *tx, node, 0, 1).await, [(id(2), r2)]);

    // The replaced revision was the highest; its number is still not reused.
    let r4 = tx
        .append_revision(None, "Report", id(1), Delete, None)
        .await
        .unwrap();
    assert!(r4 > r3);
    tx.commit().await.unwrap();
    assert_eq!(store.count_revisions_after(0, node).await.unwrap(), 2);
    assert_eq!(store.count_revisions_after(r2, node).await.unwrap(), 1);
    assert_eq!(store.count_revisions_after(r4, node).await.unwrap(), 0);
    // Capped: exact below the cap, the cap at or above it.
    assert_eq!(
        store
            .count_revisions_after_capped(0, node, 5)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_revisions_after_capped(0, node, 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_revisions_after_capped(0, node, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_revisions_after_capped(r2, node, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_revisions_after_capped(r4, node, 1)
            .await
            .unwrap(),
        0
    );

    // Across transactions too.
    let mut tx = store.begin().await.unwrap();
    let r5 = tx
        .append_revision(None, "Report", id(2), Update, None)
        .await
        .unwrap();
    assert!(r5 > r4);
    tx.commit().await.unwrap();
}

pub async fn a_revision_carries_its_fields_and_the_entity_as_stored_now(s: &Subject) {
    let store = s.store.as_ref();
    let node = add_node(store, 100).await;
    let origin = add_node(store, 7).await;
    let mut tx = store.begin().await.unwrap();
    let mut stored = entity("Report", id(1), json!({"lines": [1, 2]}));
    stored.rev = Some(41);
    stored.origin = Some(origin);
    tx.put_entity(&stored).await.unwrap();
    let rev = tx
        .append_revision(None, "Report", id(1), Update, Some(origin))
        .await
        .unwrap();

    let page = tx.revisions_after(node, 0, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    let (revision, current) = &page[0];
    assert_eq!(
        (
            revision.rev,
            revision.target,
            revision.entity_type.as_str(),
            revision.entity_uuid
        ),
        (rev, None, "Report", id(1))
    );
    assert_eq!(
        (revision.operation, revision.origin),
        (Update, Some(origin))
    );
    assert_eq!(current, &stored);
}

pub async fn a_targeted_revision_is_seen_only_by_its_node(s: &Subject) {
    let store = s.store.as_ref();
    let a = add_node(store, 1).await;
    let b = add_node(store, 2).await;
    let mut tx = store.begin().await.unwrap();
    tx.put_entity(&entity("Report", id(9), json!({})))
        .await
        .unwrap();

    let everyone = tx
        .append_revision(None, "Report", id(9), Update, Some(b))
        .await
        .unwrap();
    let for_a = tx
        .append_revision(Some(a), "Report", id(9), Update, None)
        .await
        .unwrap();
    // Both kept: a targeted revision does not replace the general one.
    assert_eq!(
        visible(&mut *tx, a, 0, 10).await,
        [(id(9), everyone), (id(9), for_a)]
    );
    assert_eq!(visible(&mut *tx, b, 0, 10).await, [(id(9), everyone)]);
    let page = tx.revisions_after(a, everyone, 10).await.unwrap();
    assert_eq!(page[0].0.target, Some(a));

    // A newer revision for the same target replaces only that one.
    let for_a_again = tx
        .append_revision(Some(a), "Report", id(9), Delete, None)
        .await
        .unwrap();
    assert_eq!(
        visible(&mut *tx, a, 0, 10).await,
        [(id(9), everyone), (id(9), for_a_again)]
    );
    tx.commit().await.unwrap();
    assert_eq!(store.count_revisions_after(0, a).await.unwrap(), 2);
    assert_eq!(store.count_revisions_after(0, b).await.unwrap(), 1);
}

pub async fn a_revision_whose_entity_is_missing_is_corrupt(s: &Subject) {
    let store = s.store.as_ref();
    let node = add_node(store, 1).await;
    let mut tx = store.begin().await.unwrap();
    tx.append_revision(None, "Report", id(5), Insert, None)
        .await
        .unwrap();
    match tx.revisions_after(node, 0, 10).await {
        Err(StoreError::Corrupt { what }) => assert!(what.contains(&id(5).to_string()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

pub async fn queue_rows_are_not_revisions(s: &Subject) {
    let store = s.store.as_ref();
    let node = add_node(store, 1).await;
    let mut tx = store.begin().await.unwrap();
    tx.put_entity(&entity("Report", id(1), json!({})))
        .await
        .unwrap();
    tx.queue_change(node, "Report", id(1), Insert)
        .await
        .unwrap();
    let rev = tx
        .append_revision(Some(node), "Report", id(1), Insert, None)
        .await
        .unwrap();
    assert_eq!(visible(&mut *tx, node, 0, 10).await, [(id(1), rev)]);
    assert_eq!(tx.unsent_changes(node, 10).await.unwrap().len(), 1);
    tx.commit().await.unwrap();
    assert_eq!(store.count_queued(node).await.unwrap(), 1);
    assert_eq!(store.count_revisions_after(0, node).await.unwrap(), 1);
}

/// `node_lags` is `count_revisions_after` from each node's acknowledged
/// revision, for every node but the store's own: nodes at the same, the
/// lowest, the highest and no revision, rows for everyone and addressed
/// rows on both sides of a node's mark; a revoked node is left out.
pub async fn every_nodes_lag_in_one_read_is_its_own_count(s: &Subject) {
    use hubsync_core::store::{NodeRecord, NodeRole};
    let store = s.store.as_ref();
    let own = NodeRecord::new(id(1), "MASTER", "this store", NodeRole::Master, true);
    let mut tx = store.begin().await.unwrap();
    tx.put_node(&own).await.unwrap();
    tx.commit().await.unwrap();
    let nodes = [
        add_node(store, 10).await,
        add_node(store, 11).await,
        add_node(store, 12).await,
        add_node(store, 13).await,
        add_node(store, 14).await,
    ];
    // A revoked node is sent nothing more: it has no lag to count.
    let revoked = add_node(store, 15).await;
    let mut tx = store.begin().await.unwrap();
    let mut row = tx.get_node(revoked).await.unwrap().unwrap();
    row.revoked = true;
    tx.put_node(&row).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .node_lags()
            .await
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0)
    );

    // 12 revisions: every third addressed to one of the first three nodes.
    let mut tx = store.begin().await.unwrap();
    let mut revs = Vec::new();
    for n in 0..12u128 {
        tx.put_entity(&entity("Report", id(100 + n), json!({"n": n as u64})))
            .await
            .unwrap();
        let target = (n % 3 == 2).then(|| nodes[(n as usize / 3) % 3]);
        revs.push(
            tx.append_revision(target, "Report", id(100 + n), Insert, None)
                .await
                .unwrap(),
        );
    }
    // Marks: none, the same mid revision twice, a low one, the head.
    for (node, acked) in nodes.iter().zip([0, revs[5], revs[5], revs[1], revs[11]]) {
        let mut row = tx.get_node(*node).await.unwrap().unwrap();
        row.acked_rev = acked;
        tx.put_node(&row).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut lags = store.node_lags().await.unwrap();
    lags.sort();
    let mut want = Vec::new();
    for node in nodes {
        let acked = store.get_node(node).await.unwrap().unwrap().acked_rev;
        want.push((
            node,
            store.count_revisions_after(acked, node).await.unwrap(),
        ));
    }
    want.sort();
    assert_eq!(
        lags, want,
        "node_lags against one count per node, the revoked one left out"
    );
    // Spelled out: 8 rows for everyone, 4 addressed (revs 2 and 11 to node
    // 10, 5 to node 11, 8 to node 12); above revs[5], 4 for everyone (and
    // node 12's rev 8); above revs[1], 6 for everyone.
    let lag = |n: u128| want.iter().find(|(node, _)| *node == id(n)).unwrap().1;
    assert_eq!(
        [lag(10), lag(11), lag(12), lag(13), lag(14)],
        [10, 4, 5, 6, 0]
    );
}
