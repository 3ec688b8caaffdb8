//! Referential integrity across writes and sync (contract §7.8).
//!
//! - Every stored version of an entity records its references in the
//!   store's references index, so that a delete finds its live referrers
//!   without scanning data.
//! - Deleting an entity that live entities still refer to follows each
//!   reference's `x-hubsync-on-delete` policy: `restrict` (the default)
//!   refuses, `cascade` soft-deletes the referrers in the same transaction,
//!   `detach` removes the reference from them. The master applies the same
//!   policy to a delete that arrives by sync.
//! - A change received before an entity it references is held, not applied
//!   and not lost, and applied as soon as that entity arrives; it never
//!   blocks the rest of its packet.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::entity::Entity;
use crate::protocol::WireChange;
use crate::schema::{Issue, OnDelete, PathSegment, Reference, ValidationError};
use crate::store::{EntityRef, HeldChange, StoreTx};

/// Upper bound of entities one delete may cascade to or detach from.
const MAX_DELETE_CLOSURE: usize = 100_000;

/// The references a received change's data holds, found once per change
/// (its prefetch keys, the check that their targets exist and its entry in
/// the references index all come from them): None when its type declares
/// no references (or is unknown), empty for a deletion.
pub(super) type FoundReferences<'r> = Option<Vec<(&'r Reference, Uuid)>>;

/// What deleting an entity does, once its policies are evaluated.
#[derive(Debug, Default)]
pub(super) struct DeletePlan {
    /// Entities to soft-delete with it (cascade), in an order where
    /// dependants come first.
    pub cascade: Vec<(String, Uuid)>,
    /// References to remove from live referrers (detach).
    pub detach: Vec<EntityRef>,
    /// Live referrers whose reference forbids the delete (restrict).
    pub blocked: Vec<EntityRef>,
}

impl Engine {
    /// Stores an entity and records its references (none once it is
    /// deleted): `found`, the references of its data
    /// ([`Engine::found_references`] of the same data). The entity and its
    /// references are handed to `tx`, not copied (a transaction cache keeps
    /// them until it writes).
    pub(super) async fn put_indexed_found(
        &self,
        tx: &mut dyn StoreTx,
        entity: Entity,
        found: FoundReferences<'_>,
    ) -> Result<(), EngineError> {
        let refs = found.map(|found| index_entries(&entity, found));
        let (entity_type, uuid) = (entity.entity_type.clone(), entity.uuid);
        tx.put_entity_owned(entity).await?;
        if let Some(refs) = refs {
            tx.set_references_owned(&entity_type, uuid, refs).await?;
        }
        Ok(())
    }

    /// The references a received change's data holds.
    pub(super) fn change_references(&self, change: &WireChange) -> FoundReferences<'_> {
        self.found_references(&change.entity_type, &change.data, change.is_deleted)
    }

    /// The references the data of an entity of `entity_type` holds (see
    /// [`FoundReferences`]).
    pub(super) fn found_references(
        &self,
        entity_type: &str,
        data: &Value,
        is_deleted: bool,
    ) -> FoundReferences<'_> {
        let ty = self.registry.get(entity_type)?;
        if ty.references.is_empty() {
            return None;
        }
        Some(if is_deleted {
            Vec::new()
        } else {
            ty.reference_values(data)
        })
    }

    /// The reference definition a recorded reference came from.
    fn reference_of(&self, r: &EntityRef) -> Option<&Reference> {
        self.registry
            .get(&r.source_type)?
            .references
            .iter()
            .find(|d| d.pointer == r.pointer && d.target == r.target_type)
    }

    /// Evaluates the delete policies of everything that refers, directly or
    /// through cascades, to `(entity_type, uuid)`.
    pub(super) async fn plan_delete(
        &self,
        tx: &mut dyn StoreTx,
        entity_type: &str,
        uuid: Uuid,
    ) -> Result<DeletePlan, EngineError> {
        let mut plan = DeletePlan::default();
        let mut doomed: HashSet<(String, Uuid)> = HashSet::new();
        doomed.insert((entity_type.to_string(), uuid));
        let mut work = vec![(entity_type.to_string(), uuid)];
        let mut soft: Vec<EntityRef> = Vec::new();
        while let Some((t, u)) = work.pop() {
            for r in tx.referrers(&t, u).await? {
                let key = (r.source_type.clone(), r.source_uuid);
                if doomed.contains(&key) {
                    continue;
                }
                let policy = self
                    .reference_of(&r)
                    .map(|d| d.on_delete)
                    .unwrap_or_default();
                if policy == OnDelete::Cascade {
                    if doomed.len() >= MAX_DELETE_CLOSURE {
                        return Err(EngineError::Sync(format!(
                            "deleting {entity_type} {uuid} would cascade to more than {MAX_DELETE_CLOSURE} entities; delete them in smaller steps"
                        )));
                    }
                    doomed.insert(key.clone());
                    plan.cascade.push(key.clone());
                    work.push(key);
                } else {
                    soft.push(r);
                }
            }
        }
        // Restrict and detach apply only to referrers that survive.
        for r in soft {
            if doomed.contains(&(r.source_type.clone(), r.source_uuid)) {
                continue;
            }
            match self.reference_of(&r).map(|d| d.on_delete) {
                Some(OnDelete::Detach) => plan.detach.push(r),
                _ => plan.blocked.push(r),
            }
        }
        // Dependants first: the deepest cascaded entity is deleted first.
        plan.cascade.reverse();
        Ok(plan)
    }

    /// The error for a delete that live referrers forbid.
    pub(super) fn still_referenced(
        entity_type: &str,
        uuid: Uuid,
        blocked: &[EntityRef],
    ) -> EngineError {
        let issues = blocked
            .iter()
            .take(50)
            .map(|r| Issue {
                path: r.pointer.clone(),
                message: format!(
                    "{} {} still refers to {entity_type} {uuid} here; change or delete it first, or declare \"x-hubsync-on-delete\": \"cascade\" or \"detach\" on that property",
                    r.source_type, r.source_uuid
                ),
            })
            .collect();
        EngineError::StillReferenced(ValidationError {
            entity_type: entity_type.to_string(),
            issues,
        })
    }

    /// Carries out a delete plan's cascades and detaches inside `tx` (the
    /// entity itself is deleted by the caller).
    pub(super) async fn carry_out(
        &self,
        tx: &mut dyn StoreTx,
        plan: &DeletePlan,
    ) -> Result<(), EngineError> {
        let mut detach: BTreeMap<(String, Uuid), Vec<&EntityRef>> = BTreeMap::new();
        for r in &plan.detach {
            detach
                .entry((r.source_type.clone(), r.source_uuid))
                .or_default()
                .push(r);
        }
        for ((t, u), refs) in detach {
            let Some(current) = tx.get_entity(&t, u).await? else {
                continue;
            };
            let mut data = current.data.clone();
            for r in refs {
                if let Some(def) = self.reference_of(r) {
                    remove_reference(&mut data, &def.path, r.target_uuid);
                }
            }
            self.validate(&t, &data).map_err(|e| {
                EngineError::Sync(format!(
                    "detaching {t} {u} from a deleted entity leaves it invalid ({e}); make the reference optional in the schema or use another x-hubsync-on-delete policy"
                ))
            })?;
            self.write_plain(tx, &t, u, Some(data), None).await?;
        }
        for (t, u) in &plan.cascade {
            if tx.get_entity(t, *u).await?.is_some_and(|e| !e.is_deleted) {
                self.write_plain(tx, t, *u, None, None).await?;
            }
        }
        Ok(())
    }

    /// Keeps `change` until `(waiting_type, waiting_for)` arrives.
    pub(super) async fn hold(
        &self,
        tx: &mut dyn StoreTx,
        source: Uuid,
        packet_no: i64,
        change: &WireChange,
        missing: (String, Uuid),
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), EngineError> {
        let value = serde_json::to_value(change).map_err(|e| {
            crate::store::StoreError::corrupt(format!("a change to hold could not be encoded: {e}"))
        })?;
        tracing::info!(entity_type = %change.entity_type, uuid = %change.uuid, waiting_type = %missing.0, waiting_for = %missing.1, "change held until what it references arrives");
        tx.hold_change(&HeldChange {
            id: 0,
            source_node: source,
            entity_type: change.entity_type.clone(),
            uuid: change.uuid,
            change: value,
            waiting_type: missing.0,
            waiting_for: missing.1,
            packet_no,
            held_at: now,
        })
        .await?;
        Ok(())
    }

    /// The held changes that `arrived` unblocks, decoded, each with the
    /// references found in it and the row removed from the held table. A
    /// change still missing another reference is held again for that one
    /// (and not returned).
    pub(super) async fn unblocked_by(
        &self,
        tx: &mut dyn StoreTx,
        arrived: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(HeldChange, WireChange, FoundReferences<'_>)>, EngineError> {
        let mut ready = Vec::new();
        for held in tx.held_waiting_for(arrived).await? {
            let change = match WireChange::deserialize(&held.change) {
                Ok(c) => c,
                Err(e) => {
                    return Err(crate::store::StoreError::corrupt(format!(
                        "held change {} cannot be decoded: {e}",
                        held.id
                    ))
                    .into());
                }
            };
            let found = self.change_references(&change);
            match missing_reference(tx, &change, found.as_deref()).await? {
                Some(missing) => {
                    self.hold(tx, held.source_node, held.packet_no, &change, missing, now)
                        .await?;
                }
                None => {
                    tx.release_held(held.id).await?;
                    ready.push((held, change, found));
                }
            }
        }
        Ok(ready)
    }
}

/// Removes every occurrence of `target` at `path` in `data` (the property
/// holding it is dropped from its object).
fn remove_reference(data: &mut Value, path: &[PathSegment], target: Uuid) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, data) {
        (PathSegment::Field(name), Value::Object(object)) => {
            if rest.is_empty() {
                let matches = object
                    .get(name)
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::try_parse(s).ok())
                    == Some(target);
                if matches {
                    object.remove(name);
                }
            } else if let Some(member) = object.get_mut(name) {
                remove_reference(member, rest, target);
            }
        }
        (PathSegment::AnyIndex, Value::Array(items)) => {
            for item in items {
                remove_reference(item, rest, target);
            }
        }
        _ => {}
    }
}

/// The index entries of `entity` for the references `found` in its data:
/// sorted and without repeats, as the store records them.
fn index_entries(entity: &Entity, found: Vec<(&Reference, Uuid)>) -> Vec<EntityRef> {
    let mut refs: Vec<EntityRef> = found
        .into_iter()
        .map(|(r, target)| EntityRef {
            source_type: entity.entity_type.clone(),
            source_uuid: entity.uuid,
            pointer: r.pointer.clone(),
            target_type: r.target.clone(),
            target_uuid: target,
        })
        .collect();
    refs.sort_unstable();
    refs.dedup();
    refs
}

/// The first reference of `change` whose target this store does not hold,
/// as (type, uuid); `found`: the references of its data
/// ([`Engine::change_references`]; none to check for a type without any).
pub(super) async fn missing_reference(
    tx: &mut dyn StoreTx,
    change: &WireChange,
    found: Option<&[(&Reference, Uuid)]>,
) -> Result<Option<(String, Uuid)>, EngineError> {
    if change.is_deleted {
        return Ok(None);
    }
    for (r, target) in found.unwrap_or_default() {
        if r.target == change.entity_type && *target == change.uuid {
            continue;
        }
        if !tx.entity_exists(&r.target, *target).await? {
            return Ok(Some((r.target.clone(), *target)));
        }
    }
    Ok(None)
}

/// The keys of a packet's entities and of what they reference (`found`:
/// each change's references, in the same order), for a prefetch.
pub(super) fn packet_keys(
    changes: &[WireChange],
    found: &[FoundReferences<'_>],
) -> Vec<(String, Uuid)> {
    let mut keys = Vec::with_capacity(changes.len() * 2);
    for (c, found) in changes.iter().zip(found) {
        keys.push((c.entity_type.clone(), c.uuid));
        for (r, target) in found.iter().flatten() {
            keys.push((r.target.clone(), *target));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detaching_drops_only_the_matching_references() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let mut data =
            json!({"lines": [{"employee": a.to_string(), "h": 1}, {"employee": b.to_string()}]});
        let path = vec![
            PathSegment::Field("lines".into()),
            PathSegment::AnyIndex,
            PathSegment::Field("employee".into()),
        ];
        remove_reference(&mut data, &path, a);
        assert_eq!(
            data,
            json!({"lines": [{"h": 1}, {"employee": b.to_string()}]})
        );
    }
}
