//! Local writes: the API's creates, updates, deletes and batches.
//!
//! Each write validates against the schema first, then stores the entity and
//! registers its change in the same transaction (Property 4; contract §7.1):
//! on a client the change is queued for the master; on the master it becomes
//! a new revision in the change log.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::cached_tx::CachedTx;
use super::integrity::FoundReferences;
use super::{Engine, EngineError};
use crate::entity::{Entity, Operation, next_updated_at};
use crate::schema::{Issue, Reference, ValidateError, ValidationError};
use crate::store::{NodeRole, StoreTx};

/// One operation of a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Put {
        entity_type: String,
        uuid: Uuid,
        data: Value,
    },
    Delete {
        entity_type: String,
        uuid: Uuid,
    },
}

impl BatchOp {
    /// The entity the operation writes.
    pub fn key(&self) -> (String, Uuid) {
        match self {
            BatchOp::Put {
                entity_type, uuid, ..
            }
            | BatchOp::Delete { entity_type, uuid } => (entity_type.clone(), *uuid),
        }
    }
}

/// Why one operation of a batch is invalid.
#[derive(Debug, Clone, Serialize)]
pub struct BatchItemError {
    pub index: usize,
    pub path: String,
    pub message: String,
}

/// Whether a put created the entity or updated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
}

impl Engine {
    /// Creates an entity; refuses a uuid that already exists.
    pub async fn create(
        &self,
        entity_type: &str,
        uuid: Option<Uuid>,
        data: Value,
    ) -> Result<Entity, EngineError> {
        self.validate(entity_type, &data)?;
        let uuid = uuid.unwrap_or_else(Uuid::now_v7);
        let mut tx = self.store.begin().await?;
        if tx.get_entity(entity_type, uuid).await?.is_some() {
            return Err(EngineError::AlreadyExists {
                entity_type: entity_type.to_string(),
                uuid,
            });
        }
        let (entity, _) = self
            .write_in(tx.as_mut(), entity_type, uuid, Some(data), None)
            .await?;
        tx.commit().await?;
        Ok(entity)
    }

    /// Creates or replaces an entity's data (an undelete when it was deleted).
    pub async fn put(
        &self,
        entity_type: &str,
        uuid: Uuid,
        data: Value,
    ) -> Result<(Entity, PutOutcome), EngineError> {
        self.validate(entity_type, &data)?;
        let mut tx = self.store.begin().await?;
        let written = self
            .write_in(tx.as_mut(), entity_type, uuid, Some(data), None)
            .await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Soft-deletes an entity: `is_deleted` becomes true, the data stays.
    pub async fn delete(&self, entity_type: &str, uuid: Uuid) -> Result<Entity, EngineError> {
        self.check_type(entity_type)?;
        let mut tx = self.store.begin().await?;
        let (entity, _) = self
            .write_in(tx.as_mut(), entity_type, uuid, None, None)
            .await?;
        tx.commit().await?;
        Ok(entity)
    }

    /// Applies every operation in one transaction, or none: all operations
    /// are validated first and every problem is reported.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<Entity>, EngineError> {
        let mut errors = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let (entity_type, data) = match op {
                BatchOp::Put {
                    entity_type, data, ..
                } => (entity_type, Some(data)),
                BatchOp::Delete { entity_type, .. } => (entity_type, None),
            };
            if let Err(e) = self.check_type(entity_type) {
                errors.push(BatchItemError {
                    index,
                    path: "/type".into(),
                    message: e.to_string(),
                });
                continue;
            }
            if let Some(data) = data
                && let Some(Err(e)) = self.registry.get(entity_type).map(|t| t.validate(data))
            {
                errors.extend(e.issues.into_iter().map(|i| BatchItemError {
                    index,
                    path: format!("/data{}", i.path),
                    message: i.message,
                }));
            }
        }
        if !errors.is_empty() {
            return Err(EngineError::Batch(errors));
        }
        let mut tx = self.store.begin().await?;
        // The batch's entities and what they reference read in one go, the
        // rows written in batches (cached_tx.rs).
        let mut cached = CachedTx::new(tx.as_mut());
        // Each put's references, found once (prefetch keys, the check of
        // their targets, the index entries).
        let found: Vec<FoundReferences<'_>> = ops
            .iter()
            .map(|op| match op {
                BatchOp::Put {
                    entity_type, data, ..
                } => self.found_references(entity_type, data, false),
                BatchOp::Delete { .. } => None,
            })
            .collect();
        cached.prefetch(batch_keys(&ops, &found)).await?;
        match self.identity.role {
            NodeRole::Client => {
                let keys = ops.iter().map(BatchOp::key).collect();
                cached.prefetch_queue(self.master_id()?, keys).await?;
            }
            NodeRole::Master => cached.expect_revisions(ops.len()),
        }
        let mut out = Vec::with_capacity(ops.len());
        for (index, (op, found)) in ops.into_iter().zip(found).enumerate() {
            let res = match op {
                BatchOp::Put {
                    entity_type,
                    uuid,
                    data,
                } => {
                    self.write_in(&mut cached, &entity_type, uuid, Some(data), Some(found))
                        .await
                }
                BatchOp::Delete { entity_type, uuid } => {
                    self.write_in(&mut cached, &entity_type, uuid, None, None)
                        .await
                }
            };
            match res {
                Ok((e, _)) => out.push(e),
                Err(EngineError::Invalid(v)) => {
                    // Dropping `tx` rolls back everything written so far.
                    return Err(EngineError::Batch(
                        v.issues
                            .into_iter()
                            .map(|i| BatchItemError {
                                index,
                                path: format!("/data{}", i.path),
                                message: i.message,
                            })
                            .collect(),
                    ));
                }
                Err(EngineError::NotFound { entity_type, uuid }) => {
                    // Dropping `tx` rolls back everything written so far.
                    return Err(EngineError::Batch(vec![BatchItemError {
                        index,
                        path: "/uuid".into(),
                        message: format!("{entity_type} {uuid} not found"),
                    }]));
                }
                Err(e) => return Err(e),
            }
        }
        cached.finish().await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(super) fn validate(&self, entity_type: &str, data: &Value) -> Result<(), EngineError> {
        match self.registry.validate(entity_type, data) {
            Ok(()) => Ok(()),
            Err(ValidateError::Invalid(e)) => Err(EngineError::Invalid(e)),
            Err(_) => self.check_type(entity_type),
        }
    }

    /// Writes one entity and registers its change inside `tx`, with the
    /// checks of a local write: every reference resolvable (and no parent
    /// cycle), and for `data: None` (a soft delete) the delete policies of
    /// the entities that still refer to it (contract §7.8). `found`: the
    /// references of `data` when the caller already found them
    /// ([`Engine::found_references`]); None finds them here.
    pub(super) async fn write_in(
        &self,
        tx: &mut dyn StoreTx,
        entity_type: &str,
        uuid: Uuid,
        data: Option<Value>,
        found: Option<FoundReferences<'_>>,
    ) -> Result<(Entity, PutOutcome), EngineError> {
        let found = match &data {
            Some(d) => {
                let refs = found.unwrap_or_else(|| self.found_references(entity_type, d, false));
                self.check_references(tx, entity_type, uuid, d, refs.as_deref())
                    .await?;
                Some(refs)
            }
            None => {
                if tx
                    .get_entity(entity_type, uuid)
                    .await?
                    .is_some_and(|e| !e.is_deleted)
                {
                    let plan = self.plan_delete(tx, entity_type, uuid).await?;
                    if !plan.blocked.is_empty() {
                        return Err(Self::still_referenced(entity_type, uuid, &plan.blocked));
                    }
                    self.carry_out(tx, &plan).await?;
                }
                None
            }
        };
        self.write_plain(tx, entity_type, uuid, data, found).await
    }

    /// Writes one entity and registers its change inside `tx`, without
    /// integrity checks (the caller did them). `data: None` is a soft
    /// delete of an existing entity. `found`: as for [`Engine::write_in`].
    pub(super) async fn write_plain(
        &self,
        tx: &mut dyn StoreTx,
        entity_type: &str,
        uuid: Uuid,
        data: Option<Value>,
        found: Option<FoundReferences<'_>>,
    ) -> Result<(Entity, PutOutcome), EngineError> {
        let current = tx.get_entity(entity_type, uuid).await?;
        let (op, outcome) = match (&current, &data) {
            (None, None) => {
                return Err(EngineError::NotFound {
                    entity_type: entity_type.to_string(),
                    uuid,
                });
            }
            (None, Some(_)) => (Operation::Insert, PutOutcome::Created),
            (Some(_), None) => (Operation::Delete, PutOutcome::Updated),
            (Some(_), Some(_)) => (Operation::Update, PutOutcome::Updated),
        };
        let mut entity = match current {
            Some(mut e) => {
                e.updated_at = next_updated_at(Some(e.updated_at));
                match data {
                    Some(d) => {
                        e.data = d;
                        e.is_deleted = false;
                    }
                    None => e.is_deleted = true,
                }
                e
            }
            None => Entity {
                entity_type: entity_type.to_string(),
                uuid,
                updated_at: next_updated_at(None),
                is_deleted: false,
                data: data.unwrap_or(Value::Null),
                rev: None,
                origin: None,
            },
        };
        entity.origin = Some(self.identity.node_id);
        match self.identity.role {
            NodeRole::Client => {
                tx.queue_change(self.master_id()?, entity_type, uuid, op)
                    .await?;
            }
            NodeRole::Master => {
                let rev = tx
                    .append_revision(None, entity_type, uuid, op, Some(self.identity.node_id))
                    .await?;
                entity.rev = Some(rev);
            }
        }
        let found = match found {
            Some(found) if !entity.is_deleted => found,
            _ => self.found_references(entity_type, &entity.data, entity.is_deleted),
        };
        self.put_indexed_found(tx, entity.clone(), found).await?;
        if self.identity.role == NodeRole::Master && self.policy.keeps_versions(entity_type) {
            tx.put_version(&entity).await?;
        }
        Ok((entity, outcome))
    }

    /// Referential integrity of a local write (contract §7.8): every
    /// reference names an entity this node holds and that is not deleted,
    /// and a parent chain never leads back to the entity itself. Every
    /// problem is reported, with the JSON pointer of the field.
    async fn check_references(
        &self,
        tx: &mut dyn StoreTx,
        entity_type: &str,
        uuid: Uuid,
        data: &Value,
        found: Option<&[(&Reference, Uuid)]>,
    ) -> Result<(), EngineError> {
        let Some(ty) = self.registry.get(entity_type) else {
            return Ok(());
        };
        let mut issues = Vec::new();
        // `found` lists each reference's values in turn; `i` is a value's
        // place among its reference's.
        let mut previous: Option<&Reference> = None;
        let mut i = 0usize;
        for &(reference, target) in found.unwrap_or_default() {
            i = match previous {
                Some(p) if std::ptr::eq(p, reference) => i + 1,
                _ => 0,
            };
            previous = Some(reference);
            // The field's JSON pointer, found (again) only for a problem:
            // `locate` walks the data as `values` does, in the same order.
            let path = || {
                reference
                    .locate(data)
                    .into_iter()
                    .nth(i)
                    .map(|(path, _)| path)
                    .unwrap_or_default()
            };
            if reference.is_parent && target == uuid && reference.target == entity_type {
                issues.push(Issue {
                    path: path(),
                    message: format!("{entity_type} {uuid} cannot be its own parent"),
                });
                continue;
            }
            // Only a parent of the same type is read whole (its chain is
            // followed); for the others the store says whether it is
            // there and live, without a copy of its data.
            let same_type_parent = reference.is_parent && reference.target == entity_type;
            let deleted = if same_type_parent {
                match tx.get_entity(&reference.target, target).await? {
                    Some(t) if !t.is_deleted => {
                        if let Some(cycle) = self.parent_cycle(tx, ty, &t, uuid).await? {
                            issues.push(Issue {
                                path: path(),
                                message: format!(
                                    "making {target} the parent of {uuid} would create a cycle ({cycle}); move the subtree elsewhere first"
                                ),
                            });
                        }
                        continue;
                    }
                    t => t.map(|t| t.is_deleted),
                }
            } else {
                tx.entity_is_deleted(&reference.target, target).await?
            };
            match deleted {
                None => issues.push(Issue {
                    path: path(),
                    message: format!(
                        "references {} {target}, which does not exist on this node; create it first (or sync to receive it)",
                        reference.target
                    ),
                }),
                Some(true) => issues.push(Issue {
                    path: path(),
                    message: format!("references {} {target}, which is deleted", reference.target),
                }),
                Some(false) => {}
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Invalid(ValidationError {
                entity_type: entity_type.to_string(),
                issues,
            }))
        }
    }

    /// Whether giving `(entity_type, uuid)` the parent named in `data` would
    /// make its hierarchy cyclic; the cycle as text if so.
    pub(super) async fn move_cycle(
        &self,
        tx: &mut dyn StoreTx,
        entity_type: &str,
        uuid: Uuid,
        data: &Value,
    ) -> Result<Option<String>, EngineError> {
        let Some(ty) = self.registry.get(entity_type) else {
            return Ok(None);
        };
        let Some(parent_ref) = ty.parent() else {
            return Ok(None);
        };
        if parent_ref.target != entity_type {
            return Ok(None);
        }
        let Some(parent) = parent_ref.values(data).into_iter().next() else {
            return Ok(None);
        };
        if parent == uuid {
            return Ok(Some(format!("{uuid} → {uuid}")));
        }
        match tx.get_entity(entity_type, parent).await? {
            Some(p) => self.parent_cycle(tx, ty, &p, uuid).await,
            None => Ok(None),
        }
    }

    /// Walks up from `start`'s parent chain; returns the chain as text when
    /// it reaches `uuid` (the entity being moved), None at a root.
    async fn parent_cycle(
        &self,
        tx: &mut dyn StoreTx,
        ty: &crate::schema::EntityType,
        start: &Entity,
        uuid: Uuid,
    ) -> Result<Option<String>, EngineError> {
        let Some(parent_ref) = ty.parent() else {
            return Ok(None);
        };
        let mut chain = vec![start.uuid];
        let mut current = start.clone();
        // Bounded: a corrupt store with a cycle already must not hang us.
        for _ in 0..1_000_000 {
            if current.uuid == uuid {
                let text = chain
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(" → ");
                return Ok(Some(text));
            }
            let Some(next) = parent_ref.values(&current.data).into_iter().next() else {
                return Ok(None);
            };
            chain.push(next);
            match tx.get_entity(&parent_ref.target, next).await? {
                Some(e) => current = e,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// The keys of a batch's entities and of what its puts reference (`found`:
/// each operation's references, in the same order).
fn batch_keys(ops: &[BatchOp], found: &[FoundReferences<'_>]) -> Vec<(String, Uuid)> {
    let mut keys = Vec::with_capacity(ops.len() * 2);
    for (op, found) in ops.iter().zip(found) {
        keys.push(op.key());
        for (r, target) in found.iter().flatten() {
            keys.push((r.target.clone(), *target));
        }
    }
    keys
}
