//! The master side of an exchange: the only place conflicts are decided.
//!
//! One exchange runs in one store transaction: the client's acknowledgement
//! of our last packet, its packet applied exactly once (a packet number seen
//! before is not applied again, but answered with the same results), and our
//! next packet. Nothing is answered before it is committed.
//!
//! A conflict is exactly "the entity changed on the master since the revision
//! the client's change was based on" (contract §7.4): an incoming change whose
//! `base_rev` equals the master's current revision, or whose content equals
//! the master's, is not a conflict.

use serde_json::Value;
use uuid::Uuid;

use super::Engine;
use crate::conflict::{ConflictInput, Decision, Version};
use crate::entity::{Entity, Operation, format_ts, now_utc};
use crate::protocol::{
    Body, ChangeResult, Envelope, Header, Outcome, PROTOCOL_VERSION, WireChange,
};
use crate::schema::{Issue, SchemaVersion};
use crate::store::{AuditRecord, HistoryRecord, NodeRecord, NodeRole, StoreError, StoreTx};

use super::client::approx_size;

/// Why the master refused an exchange. Nothing of a refused packet is
/// applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    #[error("{message}")]
    Forbidden { message: String },
    #[error("schema version mismatch: this node has schema set {client}, the master has {master}")]
    SchemaMismatch { client: String, master: String },
    #[error("corrupt packet: {0}")]
    Corrupt(String),
    #[error("packet out of sequence: {0}")]
    OutOfSequence(String),
    #[error("the packet has {count} entities, over the limit of {limit}")]
    TooLarge { count: usize, limit: usize },
    #[error("the packet carries invalid entities")]
    Invalid { issues: Vec<Issue> },
    #[error("this node is not a master")]
    NotMaster,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExchangeError {
    /// The protocol's error code (docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            ExchangeError::Forbidden { .. } => "forbidden",
            ExchangeError::SchemaMismatch { .. } => "schema_version_mismatch",
            ExchangeError::Corrupt(_) => "corrupt_packet",
            ExchangeError::OutOfSequence(_) => "packet_out_of_sequence",
            ExchangeError::TooLarge { .. } => "too_large",
            ExchangeError::Invalid { .. } => "validation_failed",
            ExchangeError::NotMaster => "not_master",
            ExchangeError::Store(_) => "internal",
        }
    }

    /// The HTTP status the host answers with.
    pub fn status(&self) -> u16 {
        match self {
            ExchangeError::Forbidden { .. } => 403,
            ExchangeError::SchemaMismatch { .. } | ExchangeError::OutOfSequence(_) => 409,
            ExchangeError::Corrupt(_) => 400,
            ExchangeError::TooLarge { .. } => 413,
            ExchangeError::Invalid { .. } => 422,
            ExchangeError::NotMaster => 404,
            ExchangeError::Store(_) => 500,
        }
    }

    /// More detail for the operator, when there is any.
    pub fn detail(&self) -> Option<String> {
        match self {
            ExchangeError::Invalid { issues } => Some(
                issues
                    .iter()
                    .map(|i| format!("{}: {}", i.path, i.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ExchangeError::SchemaMismatch { master, .. } => Some(format!(
                "install schema set {master} (same MAJOR version as the master) on this node, then sync again; no data was applied"
            )),
            ExchangeError::Corrupt(_) => Some("rebuild the packet and send it again".into()),
            ExchangeError::OutOfSequence(_) => Some(
                "the node and the master disagree on packet numbers: the node's store may belong to another master, or one side was restored from a backup; re-initialize the node".into(),
            ),
            ExchangeError::TooLarge { .. } => Some("send smaller packets".into()),
            ExchangeError::Invalid { .. } => Some(
                "the node's schema set accepts data the master's does not; align the schema sets".into(),
            ),
            ExchangeError::Store(_) => Some("retry later; the master's log has details".into()),
            _ => None,
        }
    }
}

impl Engine {
    /// Handles one exchange from the authenticated node `node_id`.
    pub async fn handle_exchange(
        &self,
        node_id: Uuid,
        request: &Envelope,
    ) -> Result<Envelope, ExchangeError> {
        if self.identity.role != NodeRole::Master {
            return Err(ExchangeError::NotMaster);
        }
        self.check_request(node_id, request)?;
        let h = &request.header;
        let now = now_utc();
        let mut tx = self.store.begin().await?;
        let mut node = tx
            .get_node(node_id)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| ExchangeError::Forbidden {
                message: format!("node {node_id} is not registered with this master"),
            })?;

        // 1. The node's acknowledgement of our last packet.
        if h.ack_packet_no > node.out_packet_no {
            return Err(ExchangeError::OutOfSequence(format!(
                "node {} acknowledges master packet {} but the master only sent up to {}",
                node.code, h.ack_packet_no, node.out_packet_no
            )));
        }
        if h.ack_packet_no == node.out_packet_no && h.ack_packet_no > node.sent_packet_no {
            node.sent_packet_no = h.ack_packet_no;
            node.acked_rev = node.out_up_to_rev;
        }

        // 2. The node's packet, applied exactly once.
        let carries = !request.body.entities.is_empty();
        let results = if h.packet_no == node.received_packet_no + 1 {
            let results = self
                .apply_packet(tx.as_mut(), &node, h.packet_no, &request.body.entities, now)
                .await?;
            node.received_packet_no = h.packet_no;
            node.last_results = Some(
                serde_json::to_value(&results)
                    .map_err(|e| StoreError::corrupt(format!("results: {e}")))?,
            );
            node.last_sync_in = Some(now);
            results
        } else if h.packet_no == node.received_packet_no && carries {
            // The node did not get our answer: the same results again.
            match &node.last_results {
                Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                    StoreError::corrupt(format!("stored results of node {}: {e}", node.code))
                })?,
                None => Vec::new(),
            }
        } else if h.packet_no <= node.received_packet_no {
            Vec::new()
        } else {
            return Err(ExchangeError::OutOfSequence(format!(
                "node {} sent packet {} but the master expected {}",
                node.code,
                h.packet_no,
                node.received_packet_no + 1
            )));
        };

        // 3. Our next packet. One built before and not acknowledged is built
        // again under the same number over exactly the same revision range:
        // the node may hold it already (a late or duplicated request cannot
        // tell us), and its acknowledgement will mean that range. Within
        // the range only rows replaced by newer revisions can be missing,
        // and those newer revisions lie beyond it.
        let limits = self.options.limits;
        let resend_to = (node.out_packet_no > node.sent_packet_no).then_some(node.out_up_to_rev);
        let rows = tx
            .revisions_after(node.id, node.acked_rev, limits.max_entities)
            .await?;
        let mut more = rows.len() >= limits.max_entities as usize;
        let mut entities = Vec::new();
        let mut up_to = node.acked_rev;
        let mut bytes = 0usize;
        for (rev, e) in rows {
            if resend_to.is_some_and(|end| rev.rev > end) {
                more = true;
                break;
            }
            // A node never gets back its own version, unless addressed to it.
            if rev.target.is_some() || e.origin != Some(node.id) {
                let change = WireChange {
                    entity_type: e.entity_type,
                    uuid: e.uuid,
                    operation: rev.operation,
                    data: e.data,
                    updated_at: e.updated_at,
                    is_deleted: e.is_deleted,
                    base_rev: None,
                    rev: e.rev,
                    origin_node_id: e.origin,
                };
                let size = approx_size(std::slice::from_ref(&change));
                if resend_to.is_none() && !entities.is_empty() && bytes + size > limits.max_bytes {
                    more = true;
                    break;
                }
                bytes += size;
                entities.push(change);
            }
            up_to = rev.rev;
        }
        let packet_no = match resend_to {
            Some(_) => {
                node.last_sync_out = Some(now);
                node.out_packet_no
            }
            None if up_to > node.acked_rev => {
                node.out_packet_no += 1;
                node.out_up_to_rev = up_to;
                node.last_sync_out = Some(now);
                node.out_packet_no
            }
            None => node.sent_packet_no,
        };
        node.schema_version = Some(h.schema_version.clone());
        tx.put_node(&node).await?;
        tx.commit().await?;

        Ok(Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: self.identity.node_id,
                recipient_node_id: node.id,
                packet_no,
                ack_packet_no: node.received_packet_no,
                schema_version: self.registry.version().to_string(),
                timestamp: now,
            },
            body: Body {
                entities,
                results,
                more,
            },
        })
    }

    /// Everything that can be checked before touching the store.
    fn check_request(&self, node_id: Uuid, request: &Envelope) -> Result<(), ExchangeError> {
        let h = &request.header;
        if h.sender_node_id != node_id {
            return Err(ExchangeError::Forbidden {
                message: format!(
                    "the packet says it is from node {} but the token belongs to node {node_id}",
                    h.sender_node_id
                ),
            });
        }
        if h.recipient_node_id != self.identity.node_id {
            return Err(ExchangeError::Forbidden {
                message: format!(
                    "the packet is addressed to node {}, not to this master ({})",
                    h.recipient_node_id, self.identity.node_id
                ),
            });
        }
        if h.protocol != PROTOCOL_VERSION {
            return Err(ExchangeError::Corrupt(format!(
                "protocol version {} is not supported (this master speaks {PROTOCOL_VERSION})",
                h.protocol
            )));
        }
        if h.packet_no < 0 || h.ack_packet_no < 0 {
            return Err(ExchangeError::Corrupt("negative packet number".into()));
        }
        let master_v = self.registry.version();
        let client_v: SchemaVersion =
            h.schema_version
                .parse()
                .map_err(|_| ExchangeError::SchemaMismatch {
                    client: h.schema_version.clone(),
                    master: master_v.to_string(),
                })?;
        if client_v.check_compatible(&master_v).is_err() {
            return Err(ExchangeError::SchemaMismatch {
                client: client_v.to_string(),
                master: master_v.to_string(),
            });
        }
        let limit = (self.options.limits.max_entities as usize).max(1) * 4;
        if request.body.entities.len() > limit {
            return Err(ExchangeError::TooLarge {
                count: request.body.entities.len(),
                limit,
            });
        }
        let mut issues = Vec::new();
        for (i, c) in request.body.entities.iter().enumerate() {
            let Some(ty) = self.registry.get(&c.entity_type) else {
                issues.push(Issue {
                    path: format!("/body/entities/{i}/type"),
                    message: format!("unknown entity type '{}'", c.entity_type),
                });
                continue;
            };
            if let Err(e) = ty.validate(&c.data) {
                issues.extend(e.issues.into_iter().map(|is| Issue {
                    path: format!("/body/entities/{i}/data{}", is.path),
                    message: is.message,
                }));
            }
        }
        if !issues.is_empty() {
            return Err(ExchangeError::Invalid { issues });
        }
        Ok(())
    }

    /// Applies one packet's changes in order; returns their outcomes.
    async fn apply_packet(
        &self,
        tx: &mut dyn StoreTx,
        node: &NodeRecord,
        packet_no: i64,
        changes: &[WireChange],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ChangeResult>, ExchangeError> {
        let mut results = Vec::with_capacity(changes.len());
        for c in changes {
            let current = tx.get_entity(&c.entity_type, c.uuid).await?;
            let result = match current {
                Some(m) if c.base_rev != m.rev && !m.same_content(&c.data, c.is_deleted) => {
                    self.resolve_conflict(tx, node, packet_no, c, m, now)
                        .await?
                }
                // No conflict: the base is current, the entity is new, or
                // the same content arrived by two paths. Applied as usual,
                // so the sender's copy (its updated_at included) becomes
                // the master's and reaches every other node.
                _ => {
                    let rev = self.store_incoming(tx, node.id, c, c.operation).await?;
                    ChangeResult {
                        entity_type: c.entity_type.clone(),
                        uuid: c.uuid,
                        outcome: Outcome::Applied,
                        rev,
                        updated_at: Some(c.updated_at),
                    }
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Stores a new master version of an entity, and keeps it as a past
    /// version when the type's resolver merges against bases.
    async fn put_master_version(
        &self,
        tx: &mut dyn StoreTx,
        entity: &Entity,
    ) -> Result<(), ExchangeError> {
        tx.put_entity(entity).await?;
        if self.policy.keeps_versions(&entity.entity_type) {
            tx.put_version(entity).await?;
        }
        Ok(())
    }

    /// Stores the incoming version as the master's new one.
    async fn store_incoming(
        &self,
        tx: &mut dyn StoreTx,
        origin: Uuid,
        c: &WireChange,
        op: Operation,
    ) -> Result<i64, ExchangeError> {
        let rev = tx
            .append_revision(None, &c.entity_type, c.uuid, op, Some(origin))
            .await?;
        let entity = Entity {
            entity_type: c.entity_type.clone(),
            uuid: c.uuid,
            updated_at: c.updated_at,
            is_deleted: c.is_deleted,
            data: c.data.clone(),
            rev: Some(rev),
            origin: Some(origin),
        };
        self.put_master_version(tx, &entity).await?;
        Ok(rev)
    }

    async fn resolve_conflict(
        &self,
        tx: &mut dyn StoreTx,
        node: &NodeRecord,
        packet_no: i64,
        c: &WireChange,
        master: Entity,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ChangeResult, ExchangeError> {
        let resolver = self.policy.resolver_for(&c.entity_type).clone();
        // The version both sides started from, when the master kept it.
        let base = match c.base_rev {
            Some(r) if resolver.uses_base() => tx.get_version(&c.entity_type, c.uuid, r).await?,
            _ => None,
        };
        let input = ConflictInput {
            entity_type: &c.entity_type,
            entity_uuid: c.uuid,
            master: Version {
                data: &master.data,
                is_deleted: master.is_deleted,
                updated_at: master.updated_at,
                node_id: master.origin,
            },
            incoming: Version {
                data: &c.data,
                is_deleted: c.is_deleted,
                updated_at: c.updated_at,
                node_id: Some(node.id),
            },
            base: base.as_ref().map(|b| Version {
                data: &b.data,
                is_deleted: b.is_deleted,
                updated_at: b.updated_at,
                node_id: b.origin,
            }),
            schema: self.registry.get(&c.entity_type).map(|t| &t.schema),
        };
        let decision = match resolver.resolve(&input).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(entity_type = %c.entity_type, uuid = %c.uuid, node = %node.code, error = %e, "conflict resolver failed; the conflict waits for a person");
                Decision::Defer {
                    reason: e.to_string(),
                }
            }
        };
        let decision = match decision {
            Decision::Merge(v) => match self.registry.validate(&c.entity_type, &v) {
                Ok(()) => Decision::Merge(v),
                Err(e) => Decision::Defer {
                    reason: format!("the merged version is invalid: {e}"),
                },
            },
            d => d,
        };
        let audit_id = Uuid::now_v7();
        let strategy = resolver.name().to_string();
        let resolution = format!("{strategy}: {}", decision.label());
        let incoming_json = incoming_snapshot(c);
        let master_json = master_snapshot(&master);
        let mut losers: Vec<(Value, Option<Uuid>)> = Vec::new();
        let (outcome, rev) = match &decision {
            Decision::KeepMaster | Decision::Defer { .. } => {
                losers.push((incoming_json, Some(node.id)));
                // The node holds the losing version and must receive the
                // master's. If the master's revision is above the node's
                // acknowledged cursor it is on its way already; otherwise
                // (the node received it before but kept its own pending
                // edit) address it to the node again.
                let on_its_way = master.rev.is_some_and(|r| r > node.acked_rev)
                    && master.origin != Some(node.id);
                if !on_its_way {
                    tx.append_revision(
                        Some(node.id),
                        &c.entity_type,
                        c.uuid,
                        Operation::Update,
                        master.origin,
                    )
                    .await?;
                }
                let outcome = if matches!(decision, Decision::Defer { .. }) {
                    Outcome::ConflictDeferred
                } else {
                    Outcome::ConflictMasterWon
                };
                (outcome, master.rev.unwrap_or(0))
            }
            Decision::TakeIncoming => {
                losers.push((master_json, master.origin));
                let rev = self
                    .store_incoming(tx, node.id, c, Operation::Update)
                    .await?;
                (Outcome::ConflictIncomingWon, rev)
            }
            Decision::Merge(v) => {
                losers.push((master_json, master.origin));
                losers.push((incoming_json, Some(node.id)));
                let rev = tx
                    .append_revision(
                        None,
                        &c.entity_type,
                        c.uuid,
                        Operation::Update,
                        Some(self.identity.node_id),
                    )
                    .await?;
                let merged = Entity {
                    entity_type: c.entity_type.clone(),
                    uuid: c.uuid,
                    updated_at: crate::entity::next_updated_at(Some(
                        master.updated_at.max(c.updated_at),
                    )),
                    is_deleted: master.is_deleted && c.is_deleted,
                    data: v.clone(),
                    rev: Some(rev),
                    origin: Some(self.identity.node_id),
                };
                self.put_master_version(tx, &merged).await?;
                (Outcome::ConflictMerged, rev)
            }
        };
        let detail = match &decision {
            Decision::Defer { reason } => reason.clone(),
            _ => format!(
                "node {} changed {} {} based on revision {}, but the master was at revision {}",
                node.code,
                c.entity_type,
                c.uuid,
                c.base_rev
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "none".into()),
                master.rev.map(|r| r.to_string()).unwrap_or_default()
            ),
        };
        tx.add_audit(&AuditRecord {
            id: audit_id,
            at: now,
            entity_type: c.entity_type.clone(),
            entity_uuid: c.uuid,
            node_id: node.id,
            packet_no,
            strategy: strategy.clone(),
            outcome: outcome.as_str().to_string(),
            master_rev: master.rev,
            base_rev: c.base_rev,
            result_rev: Some(rev),
            detail,
        })
        .await?;
        if self.options.versioning {
            for (data, source) in losers {
                tx.add_history(&HistoryRecord {
                    id: Uuid::now_v7(),
                    entity_uuid: c.uuid,
                    entity_type: c.entity_type.clone(),
                    source_node_id: source,
                    arrival_time: now,
                    serialized_data: data,
                    conflict_resolution: resolution.clone(),
                    audit_id: Some(audit_id),
                })
                .await?;
            }
        }
        tracing::info!(entity_type = %c.entity_type, uuid = %c.uuid, node = %node.code, strategy = %strategy, outcome = outcome.as_str(), "conflict resolved");
        Ok(ChangeResult {
            entity_type: c.entity_type.clone(),
            uuid: c.uuid,
            outcome,
            rev,
            updated_at: (outcome == Outcome::ConflictIncomingWon).then_some(c.updated_at),
        })
    }
}

/// The complete incoming version, as kept in history (Property 34).
fn incoming_snapshot(c: &WireChange) -> Value {
    serde_json::json!({
        "type": c.entity_type,
        "uuid": c.uuid,
        "updated_at": format_ts(c.updated_at),
        "is_deleted": c.is_deleted,
        "data": c.data,
        "operation": c.operation,
        "base_rev": c.base_rev,
    })
}

pub(super) fn master_snapshot(e: &Entity) -> Value {
    let mut v = e.to_api_json();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("rev".into(), serde_json::json!(e.rev));
    }
    v
}
