//! The order of changes inside a packet (contract §7.8): what is referenced
//! comes before what refers to it, and a deletion comes after the changes and
//! deletions of its dependants. A receiver applying a packet in order then
//! finds every reference that travels in the same packet already applied.
//!
//! Reference cycles (A refers to B and B to A, both new) cannot be ordered;
//! the cycle is broken at an arbitrary but deterministic point and the
//! receiver holds the change whose reference has not arrived yet until it
//! does (see `held`).

use std::collections::HashMap;

use uuid::Uuid;

use crate::protocol::WireChange;
use crate::schema::EntityRegistry;

/// Reorders `changes` in place: live versions in reference order
/// (referenced first), then deletions in reverse reference order
/// (dependants first). Changes without references between them keep their
/// relative order, so the order is deterministic.
pub(crate) fn order_for_apply(registry: &EntityRegistry, changes: &mut Vec<WireChange>) {
    if changes.len() < 2 {
        return;
    }
    let taken = std::mem::take(changes);
    let (live, deleted): (Vec<WireChange>, Vec<WireChange>) =
        taken.into_iter().partition(|c| !c.is_deleted);
    let mut ordered = topological(registry, live);
    let mut deletions = topological(registry, deleted);
    deletions.reverse();
    ordered.append(&mut deletions);
    *changes = ordered;
}

/// Referenced before referrer; stable otherwise; cycles broken.
fn topological(registry: &EntityRegistry, changes: Vec<WireChange>) -> Vec<WireChange> {
    if changes.len() < 2 {
        return changes;
    }
    let index: HashMap<(&str, Uuid), usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.entity_type.as_str(), c.uuid), i))
        .collect();
    // deps[i]: the changes of this packet that change i refers to.
    let deps: Vec<Vec<usize>> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let Some(ty) = registry.get(&c.entity_type) else {
                return Vec::new();
            };
            ty.reference_values(&c.data)
                .into_iter()
                .filter_map(|(r, target)| index.get(&(r.target.as_str(), target)).copied())
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    if deps.iter().all(Vec::is_empty) {
        return changes;
    }
    // Iterative depth-first post-order: no recursion, whatever the depth.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; changes.len()];
    let mut order = Vec::with_capacity(changes.len());
    for root in 0..changes.len() {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Open;
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            match deps[node].get(top.1).copied() {
                Some(dep) => {
                    top.1 += 1;
                    // An open dependency is a cycle: the edge is skipped
                    // (the cycle is broken here).
                    if mark[dep] == Mark::New {
                        mark[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                }
                None => {
                    mark[node] = Mark::Done;
                    order.push(node);
                    stack.pop();
                }
            }
        }
    }
    let mut slots: Vec<Option<WireChange>> = changes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::Operation;
    use serde_json::json;

    fn registry() -> EntityRegistry {
        EntityRegistry::from_files(vec![
            (
                "schema-set.json".into(),
                r#"{"version": "1.0.0"}"#.into(),
            ),
            (
                "Node.schema.json".into(),
                r#"{"title": "Node", "type": "object", "properties": {
                    "parent": {"type": ["string", "null"], "format": "uuid", "x-hubsync-parent": true},
                    "other": {"type": "string", "format": "uuid", "x-hubsync-ref": "Node"}
                }}"#
                .into(),
            ),
        ])
        .expect("test schema loads")
    }

    fn change(uuid: Uuid, parent: Option<Uuid>, deleted: bool) -> WireChange {
        WireChange {
            entity_type: "Node".into(),
            uuid,
            operation: if deleted {
                Operation::Delete
            } else {
                Operation::Insert
            },
            data: json!({ "parent": parent.map(|p| p.to_string()) }),
            updated_at: crate::entity::now_utc(),
            is_deleted: deleted,
            base_rev: None,
            rev: None,
            origin_node_id: None,
        }
    }

    #[test]
    fn a_deep_chain_written_leaf_first_is_sent_root_first() {
        let registry = registry();
        let ids: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
        // Leaf first: ids[i]'s parent is ids[i + 1].
        let mut changes: Vec<WireChange> = (0..ids.len())
            .map(|i| change(ids[i], ids.get(i + 1).copied(), false))
            .collect();
        order_for_apply(&registry, &mut changes);
        let got: Vec<Uuid> = changes.iter().map(|c| c.uuid).collect();
        let want: Vec<Uuid> = ids.iter().rev().copied().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn deletions_come_after_live_changes_and_dependants_first() {
        let registry = registry();
        let (root, child, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut changes = vec![
            change(root, None, true),
            change(child, Some(root), true),
            change(other, None, false),
        ];
        order_for_apply(&registry, &mut changes);
        let got: Vec<Uuid> = changes.iter().map(|c| c.uuid).collect();
        assert_eq!(got, vec![other, child, root]);
    }

    #[test]
    fn a_cycle_is_broken_and_nothing_is_lost() {
        let registry = registry();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut changes = vec![
            change(a, Some(b), false),
            change(b, Some(a), false),
            change(c, Some(a), false),
        ];
        order_for_apply(&registry, &mut changes);
        assert_eq!(changes.len(), 3);
        let pos = |u: Uuid| changes.iter().position(|x| x.uuid == u);
        assert!(pos(a) < pos(c), "c refers to a, so a comes first");
    }

    #[test]
    fn unrelated_changes_keep_their_order() {
        let registry = registry();
        let ids: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        let mut changes: Vec<WireChange> = ids.iter().map(|&u| change(u, None, false)).collect();
        order_for_apply(&registry, &mut changes);
        let got: Vec<Uuid> = changes.iter().map(|c| c.uuid).collect();
        assert_eq!(got, ids);
    }
}
