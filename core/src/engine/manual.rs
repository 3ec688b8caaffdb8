//! The manual resolution queue (master only): conflicts a strategy deferred
//! to a person — the `manual` strategy, or a plugin that erred, panicked,
//! timed out or merged invalid data — and their resolution.
//!
//! The queue is **derived from the audit log**; it has no table of its own
//! (a dedicated table with an index is the follow-up, see docs/plugins.md):
//!
//! - an item is an audit record with outcome `conflict_deferred`; its id is
//!   the item's id;
//! - its incoming version is the history record whose `audit_id` is that id
//!   (written by the exchange that deferred it, versioning on);
//! - it is resolved when an audit record with outcome [`MANUAL_RESOLVED`]
//!   (strategy `manual`) names it: that record's `detail` starts with
//!   `resolves conflict <id>:` — the canonical hyphenated uuid at a fixed
//!   place, written only here, so the lookup cannot mistake free text (the
//!   person's name, the choice) for a reference.
//!
//! Listing scans the whole audit log (`Store::audit(None, u32::MAX)`);
//! looking up one item scans it too (the store has no audit lookup by id),
//! then reads the entity's own audit records and history.
//!
//! A resolution that takes a version is an ordinary master write (the same
//! path as a local write: a new revision for every node, the node whose
//! version was deferred included), plus its audit record and, with
//! versioning on, the replaced version in history — all in one store
//! transaction. Inside that transaction the entity is read first: backends
//! serialize transactions that read an entity to decide a write, so two
//! resolutions of one item run one after the other and the second sees the
//! first's audit record (and is refused).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::master::master_snapshot;
use super::{Engine, EngineError};
use crate::entity::{Entity, format_ts, now_utc};
use crate::protocol::Outcome;
use crate::store::{AuditRecord, HistoryRecord, NodeRole, StoreError};

/// The audit outcome of a manual resolution.
pub const MANUAL_RESOLVED: &str = "manual_resolved";
/// The strategy named by a manual resolution's audit record.
const MANUAL_STRATEGY: &str = "manual";
/// How a resolution's `detail` starts; the deferred audit id follows.
const MARKER: &str = "resolves conflict ";
/// Length of a hyphenated uuid.
const UUID_LEN: usize = 36;

/// What a person decided for a deferred conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The master's current version stands (`--take local`): recorded only.
    TakeMaster,
    /// The deferred incoming version becomes the master's (`--take remote`).
    TakeIncoming,
    /// A stored version of the entity (an `object_version_history` id)
    /// becomes the master's (`--take version ID`).
    TakeVersion(Uuid),
    /// This data, validated against the entity's schema, becomes the
    /// master's.
    Merged(Value),
}

impl Choice {
    /// How the choice is named in audit records and messages.
    pub fn label(&self) -> String {
        match self {
            Choice::TakeMaster => "take local (the master's version stands)".into(),
            Choice::TakeIncoming => "take remote (the deferred incoming version)".into(),
            Choice::TakeVersion(v) => format!("take version {v}"),
            Choice::Merged(_) => "merged data".into(),
        }
    }
}

/// A deferred conflict, as the queue lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingConflict {
    /// The deferred audit record's id: the queue item's id.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub entity_type: String,
    pub uuid: Uuid,
    /// The node whose change was deferred.
    pub node_id: Uuid,
    /// Its code, when the node is still registered.
    pub node_code: Option<String>,
    /// The strategy that deferred it.
    pub strategy: String,
    /// Why it was deferred.
    pub reason: String,
    /// When it was deferred.
    pub at: DateTime<Utc>,
    pub packet_no: i64,
    pub master_rev: Option<i64>,
    pub base_rev: Option<i64>,
}

/// Whether a queue item still waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictStatus {
    Pending,
    Resolved,
}

/// Everything a person needs to decide one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictView {
    pub conflict: PendingConflict,
    pub status: ConflictStatus,
    /// The deferred audit record.
    pub deferred: AuditRecord,
    /// The audit record of its resolution, once resolved.
    pub resolution: Option<AuditRecord>,
    /// The deferred incoming version(s): history records of this conflict
    /// from the node whose change was deferred.
    pub incoming: Vec<HistoryRecord>,
    /// The master's current version (`type`, `uuid`, `updated_at`,
    /// `is_deleted`, `data`, `rev`), if the master holds the entity.
    pub master: Option<Value>,
    /// The entity's other stored versions (any can be taken).
    pub versions: Vec<HistoryRecord>,
}

/// What a resolution did.
#[derive(Debug, Clone, PartialEq)]
pub struct ManualResolution {
    /// The new audit record (outcome [`MANUAL_RESOLVED`]).
    pub resolution: AuditRecord,
    /// The master's version after the resolution.
    pub entity: Entity,
}

/// The deferred audit id a record resolves, if it is a manual resolution.
fn resolves(a: &AuditRecord) -> Option<Uuid> {
    if a.outcome != MANUAL_RESOLVED {
        return None;
    }
    let rest = a.detail.strip_prefix(MARKER)?;
    let (id, after) = (rest.get(..UUID_LEN)?, rest.get(UUID_LEN..)?);
    if !after.starts_with(':') {
        return None;
    }
    Uuid::try_parse(id).ok()
}

fn is_deferred(a: &AuditRecord) -> bool {
    a.outcome == Outcome::ConflictDeferred.as_str()
}

fn pending_of(a: &AuditRecord, codes: &HashMap<Uuid, String>) -> PendingConflict {
    PendingConflict {
        id: a.id,
        entity_type: a.entity_type.clone(),
        uuid: a.entity_uuid,
        node_id: a.node_id,
        node_code: codes.get(&a.node_id).cloned(),
        strategy: a.strategy.clone(),
        reason: a.detail.clone(),
        at: a.at,
        packet_no: a.packet_no,
        master_rev: a.master_rev,
        base_rev: a.base_rev,
    }
}

/// A stored version's content: its data and deletion flag.
fn version_content(h: &HistoryRecord) -> Result<(Value, bool), EngineError> {
    let data =
        h.serialized_data.get("data").cloned().ok_or_else(|| {
            StoreError::corrupt(format!("history record {} has no \"data\"", h.id))
        })?;
    let deleted = h
        .serialized_data
        .get("is_deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((data, deleted))
}

impl Engine {
    fn require_master_for(&self, what: &'static str) -> Result<(), EngineError> {
        if self.identity.role == NodeRole::Master {
            Ok(())
        } else {
            Err(EngineError::MasterOnly { what })
        }
    }

    async fn node_codes(&self) -> Result<HashMap<Uuid, String>, EngineError> {
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| (n.id, n.code))
            .collect())
    }

    /// The deferred conflicts no resolution names yet, oldest first.
    /// Scans the whole audit log.
    pub async fn pending_conflicts(&self) -> Result<Vec<PendingConflict>, EngineError> {
        self.require_master_for("the manual resolution queue")?;
        let all = self.store.audit(None, u32::MAX).await?;
        let resolved: HashSet<Uuid> = all.iter().filter_map(resolves).collect();
        let codes = self.node_codes().await?;
        Ok(all
            .iter()
            .filter(|a| is_deferred(a) && !resolved.contains(&a.id))
            .map(|a| pending_of(a, &codes))
            .collect())
    }

    /// The deferred audit record `id`.
    async fn deferred_record(&self, id: Uuid) -> Result<AuditRecord, EngineError> {
        self.store
            .audit(None, u32::MAX)
            .await?
            .into_iter()
            .find(|a| a.id == id && is_deferred(a))
            .ok_or(EngineError::ConflictNotFound { id })
    }

    /// The resolution of a deferred record, if any (committed data).
    async fn resolution_of(
        &self,
        deferred: &AuditRecord,
    ) -> Result<Option<AuditRecord>, EngineError> {
        Ok(self
            .store
            .audit(Some(deferred.entity_uuid), u32::MAX)
            .await?
            .into_iter()
            .find(|a| resolves(a) == Some(deferred.id)))
    }

    /// One queue item (pending or resolved) with its versions.
    pub async fn conflict(&self, id: Uuid) -> Result<ConflictView, EngineError> {
        self.require_master_for("the manual resolution queue")?;
        let deferred = self.deferred_record(id).await?;
        let resolution = self.resolution_of(&deferred).await?;
        let (incoming, versions): (Vec<_>, Vec<_>) = self
            .store
            .history(deferred.entity_uuid)
            .await?
            .into_iter()
            .filter(|h| h.entity_type == deferred.entity_type)
            .partition(|h| h.audit_id == Some(id) && h.source_node_id == Some(deferred.node_id));
        let master = self
            .store
            .get_entity(&deferred.entity_type, deferred.entity_uuid)
            .await?
            .map(|e| master_snapshot(&e));
        let codes = self.node_codes().await?;
        Ok(ConflictView {
            conflict: pending_of(&deferred, &codes),
            status: if resolution.is_some() {
                ConflictStatus::Resolved
            } else {
                ConflictStatus::Pending
            },
            deferred,
            resolution,
            incoming,
            master,
            versions,
        })
    }

    /// Resolves deferred conflict `id` as `choice`, on behalf of `who`.
    ///
    /// Taking a version (incoming, stored or merged) is an ordinary master
    /// write that reaches every node; `TakeMaster` records the decision
    /// only. Either way an audit record (outcome [`MANUAL_RESOLVED`]) names
    /// the person, the choice and the deferred id; with versioning on, the
    /// replaced version goes to history. One transaction.
    pub async fn resolve_conflict_manually(
        &self,
        id: Uuid,
        choice: Choice,
        who: &str,
    ) -> Result<ManualResolution, EngineError> {
        self.require_master_for("resolving a conflict")?;
        let deferred = self.deferred_record(id).await?;
        let (ty, uuid) = (deferred.entity_type.as_str(), deferred.entity_uuid);
        self.check_type(ty)?;
        // Refused early when already resolved (checked again under the lock).
        self.refuse_if_resolved(&deferred).await?;
        let target: Option<(Value, bool)> = match &choice {
            Choice::TakeMaster => None,
            Choice::TakeIncoming => {
                let history = self.store.history(uuid).await?;
                let incoming = history
                    .iter()
                    .rev()
                    .find(|h| h.audit_id == Some(id) && h.source_node_id == Some(deferred.node_id))
                    .ok_or(EngineError::IncomingVersionMissing { id })?;
                Some(version_content(incoming)?)
            }
            Choice::TakeVersion(v) => {
                let history = self.store.history(uuid).await?;
                let found = history
                    .iter()
                    .find(|h| h.id == *v && h.entity_type == ty)
                    .ok_or_else(|| EngineError::VersionNotFound {
                        version: *v,
                        entity_type: ty.to_string(),
                        uuid,
                    })?;
                Some(version_content(found)?)
            }
            Choice::Merged(data) => Some((data.clone(), false)),
        };
        if let Some((data, false)) = &target {
            self.validate(ty, data)?;
        }

        let who = match who.trim() {
            "" => "an unnamed operator",
            w => w,
        };
        let label = choice.label();
        let now = now_utc();
        let audit_id = Uuid::now_v7();
        let mut tx = self.store.begin().await?;
        // Read to decide: serializes concurrent resolutions of this entity.
        let current = tx.get_entity(ty, uuid).await?;
        self.refuse_if_resolved(&deferred).await?;
        let entity = match target {
            None => current.clone().ok_or_else(|| EngineError::NotFound {
                entity_type: ty.to_string(),
                uuid,
            })?,
            Some((data, deleted)) => {
                let (entity, _) = self
                    .write_in(tx.as_mut(), ty, uuid, (!deleted).then_some(data), None)
                    .await?;
                if self.options.versioning
                    && let Some(replaced) = &current
                {
                    tx.add_history(&HistoryRecord {
                        id: Uuid::now_v7(),
                        entity_uuid: uuid,
                        entity_type: ty.to_string(),
                        source_node_id: replaced.origin,
                        arrival_time: now,
                        serialized_data: master_snapshot(replaced),
                        conflict_resolution: format!("{MANUAL_STRATEGY}: {label} by {who}"),
                        audit_id: Some(audit_id),
                    })
                    .await?;
                }
                entity
            }
        };
        let resolution = AuditRecord {
            id: audit_id,
            at: now,
            entity_type: ty.to_string(),
            entity_uuid: uuid,
            node_id: deferred.node_id,
            packet_no: deferred.packet_no,
            strategy: MANUAL_STRATEGY.to_string(),
            outcome: MANUAL_RESOLVED.to_string(),
            master_rev: current.as_ref().and_then(|e| e.rev),
            base_rev: deferred.base_rev,
            result_rev: entity.rev,
            detail: format!("{MARKER}{id}: {label} by {who}"),
        };
        tx.add_audit(&resolution).await?;
        tx.commit().await?;
        tracing::info!(conflict = %id, entity_type = ty, uuid = %uuid, choice = %label, by = who, "deferred conflict resolved by a person");
        Ok(ManualResolution { resolution, entity })
    }

    async fn refuse_if_resolved(&self, deferred: &AuditRecord) -> Result<(), EngineError> {
        match self.resolution_of(deferred).await? {
            None => Ok(()),
            Some(r) => Err(EngineError::ConflictResolved {
                id: deferred.id,
                resolution: r.id,
                at: format_ts(r.at),
                how: r
                    .detail
                    .split_once(": ")
                    .map(|(_, how)| how.to_string())
                    .unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: &str, detail: &str) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            at: now_utc(),
            entity_type: "Brigade".into(),
            entity_uuid: Uuid::now_v7(),
            node_id: Uuid::now_v7(),
            packet_no: 1,
            strategy: "manual".into(),
            outcome: outcome.into(),
            master_rev: None,
            base_rev: None,
            result_rev: None,
            detail: detail.into(),
        }
    }

    #[test]
    fn only_a_well_formed_manual_resolution_names_a_deferred_id() {
        let id = Uuid::now_v7();
        let ok = record(MANUAL_RESOLVED, &format!("{MARKER}{id}: take local by ann"));
        assert_eq!(resolves(&ok), Some(id));
        // Same text under another outcome: not a resolution.
        let other = record("conflict_deferred", &format!("{MARKER}{id}: take local"));
        assert_eq!(resolves(&other), None);
        // A uuid elsewhere in the text, a truncated or malformed one: no.
        for detail in [
            format!("by {MARKER}{id}: x"),
            format!("{MARKER}{}", &id.to_string()[..30]),
            format!("{MARKER}{id}x"),
            format!("{MARKER}{}: x", id.simple()),
            String::new(),
        ] {
            assert_eq!(
                resolves(&record(MANUAL_RESOLVED, &detail)),
                None,
                "{detail}"
            );
        }
    }
}
