//! The client side of a sync session.
//!
//! A session is a series of exchanges. Each one sends a packet of queued
//! changes (or resends the packet still in flight, unchanged in number),
//! acknowledges the master's last packet, and applies the master's answer:
//! its acknowledgement with the outcome of every change, and its next packet.
//! The session ends when nothing is left to send and the master has nothing
//! new, so that every packet of both sides ends acknowledged.
//!
//! Edits made while a session runs are safe: they only ever add unsent queue
//! rows, and an incoming master version never overwrites an entity that
//! still has a queued change (contract §7.7).

use serde::Serialize;

use super::{Engine, EngineError};
use crate::entity::{Entity, now_utc};
use crate::protocol::{Body, ChangeResult, Envelope, Header, PROTOCOL_VERSION, WireChange};
use crate::store::{NodeRole, QueuedChange, StoreError, StoreTx};
use crate::transport::Transport;

/// Where a running session is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncProgress {
    pub round: u32,
    pub sent_changes: u64,
    pub received_changes: u64,
    pub bytes_sent: u64,
    /// Changes still queued for the master after this round.
    pub pending_changes: i64,
    /// True when the master said more changes wait for this node.
    pub more_from_master: bool,
}

/// Receives progress after every round of a session.
pub trait Progress: Send + Sync {
    fn on_round(&self, progress: &SyncProgress);
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {
    fn on_round(&self, _: &SyncProgress) {}
}

/// What one session did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSummary {
    pub rounds: u32,
    pub sent_changes: u64,
    pub received_changes: u64,
    /// Incoming master versions not applied because a local change of the
    /// same entity was still queued (the master decides that conflict).
    pub kept_local: u64,
    pub bytes_sent: u64,
    /// Outcomes of sent changes that met a conflict.
    pub conflicts: Vec<ChangeResult>,
    pub acked_packet_no: i64,
    pub received_packet_no: i64,
}

/// A packet ready to send, and what it carries.
struct Outgoing {
    envelope: Envelope,
    /// Packet number of the changes carried (0 for a pure poll).
    carries_packet: Option<i64>,
}

impl Engine {
    /// Runs one sync session with the master through `transport`.
    ///
    /// Callers must not run two sessions of the same node at once (the host
    /// holds a lock).
    pub async fn sync_session(
        &self,
        transport: &dyn Transport,
        progress: &dyn Progress,
    ) -> Result<SyncSummary, EngineError> {
        self.require(NodeRole::Client)?;
        let master = self.master_id()?;
        let mut summary = SyncSummary::default();
        loop {
            if summary.rounds >= self.options.max_rounds {
                return Err(EngineError::Sync(format!(
                    "the session did not drain in {} rounds; local writes may be arriving faster than they can be sent. Run sync again",
                    self.options.max_rounds
                )));
            }
            summary.rounds += 1;
            let out = self.build_outgoing().await?;
            let sent = out.envelope.body.entities.len() as u64;
            summary.bytes_sent += approx_size(&out.envelope.body.entities) as u64;
            let response = transport.exchange(&out.envelope).await?;
            let applied = self
                .apply_response(&response, out.carries_packet, &mut summary)
                .await?;
            summary.sent_changes += sent;
            let pending = self.store.count_queued(master).await?;
            progress.on_round(&SyncProgress {
                round: summary.rounds,
                sent_changes: summary.sent_changes,
                received_changes: summary.received_changes,
                bytes_sent: summary.bytes_sent,
                pending_changes: pending,
                more_from_master: response.body.more,
            });
            if sent == 0 && !applied.new_master_packet && !response.body.more {
                return Ok(summary);
            }
        }
    }

    /// Builds the next request: the packet in flight again if the master has
    /// not acknowledged it, else a new packet of unsent changes, else a poll.
    async fn build_outgoing(&self) -> Result<Outgoing, EngineError> {
        let master = self.master_id()?;
        let limits = self.options.limits;
        let mut tx = self.store.begin().await?;
        let mut peer = tx
            .get_node(master)
            .await?
            .ok_or_else(|| StoreError::corrupt("master node row missing"))?;
        let (packet_no, rows) = if peer.out_packet_no > peer.sent_packet_no {
            let n = peer.out_packet_no;
            (n, tx.changes_in_packet(master, n).await?)
        } else {
            let candidates = tx.unsent_changes(master, limits.max_entities).await?;
            (peer.out_packet_no + 1, candidates)
        };
        let resend = peer.out_packet_no > peer.sent_packet_no;
        let mut entities = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in &rows {
            let change = wire_change(tx.as_mut(), row).await?;
            let size = approx_size(std::slice::from_ref(&change));
            if !resend && !entities.is_empty() && bytes + size > limits.max_bytes {
                break;
            }
            bytes += size;
            ids.push(row.id);
            entities.push(change);
        }
        let carries_packet = if resend {
            Some(packet_no)
        } else if entities.is_empty() {
            None
        } else {
            tx.assign_packet(master, &ids, packet_no).await?;
            peer.out_packet_no = packet_no;
            tx.put_node(&peer).await?;
            Some(packet_no)
        };
        tx.commit().await?;
        let header = Header {
            protocol: PROTOCOL_VERSION,
            sender_node_id: self.identity.node_id,
            recipient_node_id: master,
            packet_no: carries_packet.unwrap_or(peer.sent_packet_no),
            ack_packet_no: peer.received_packet_no,
            schema_version: self.registry.version().to_string(),
            timestamp: now_utc(),
        };
        Ok(Outgoing {
            envelope: Envelope {
                header,
                body: Body {
                    entities,
                    results: Vec::new(),
                    more: false,
                },
            },
            carries_packet,
        })
    }

    /// Applies the master's answer in one transaction: its acknowledgement
    /// of our packet and its own next packet.
    async fn apply_response(
        &self,
        response: &Envelope,
        carried: Option<i64>,
        summary: &mut SyncSummary,
    ) -> Result<Applied, EngineError> {
        let master = self.master_id()?;
        let h = &response.header;
        if h.sender_node_id != master || h.recipient_node_id != self.identity.node_id {
            return Err(EngineError::Sync(format!(
                "the answer came from node {} for node {}, but this client is {} syncing with master {}; check [master].url",
                h.sender_node_id, h.recipient_node_id, self.identity.node_id, master
            )));
        }
        let mut tx = self.store.begin().await?;
        let mut peer = tx
            .get_node(master)
            .await?
            .ok_or_else(|| StoreError::corrupt("master node row missing"))?;
        if h.ack_packet_no > peer.out_packet_no {
            return Err(EngineError::Sync(format!(
                "the master acknowledges packet {} but this client only sent up to {}; the client store does not belong to this master (or was restored from a backup). Re-initialize the client",
                h.ack_packet_no, peer.out_packet_no
            )));
        }
        if let Some(n) = carried
            && h.ack_packet_no < n
        {
            return Err(EngineError::Sync(format!(
                "the master did not acknowledge packet {n} (it acknowledged {}); run sync again",
                h.ack_packet_no
            )));
        }
        if h.ack_packet_no > peer.sent_packet_no {
            let mut redundant = Vec::new();
            for r in &response.body.results {
                if r.outcome.client_version_taken()
                    && let Some(mut e) = tx.get_entity(&r.entity_type, r.uuid).await?
                {
                    if e.rev.is_none_or(|rev| rev < r.rev) {
                        // Our version is the master's at r.rev: later local
                        // edits are based on it (no false conflict, §7.4).
                        e.rev = Some(r.rev);
                        tx.put_entity(&e).await?;
                    }
                    // A packet resent after an edit carried the edited state;
                    // if that is what the master took, the edit's own queue
                    // row has nothing left to send (Property 24).
                    if r.updated_at == Some(e.updated_at)
                        && let Some(row) =
                            tx.unsent_change_for(master, &r.entity_type, r.uuid).await?
                    {
                        redundant.push(row.id);
                    }
                }
                if r.outcome.is_conflict() {
                    summary.conflicts.push(r.clone());
                }
            }
            if !redundant.is_empty() {
                tx.assign_packet(master, &redundant, h.ack_packet_no)
                    .await?;
            }
            tx.delete_acknowledged(master, h.ack_packet_no).await?;
            peer.sent_packet_no = h.ack_packet_no;
            peer.last_sync_out = Some(now_utc());
        }
        let m = h.packet_no;
        let new_master_packet = m == peer.received_packet_no + 1;
        if new_master_packet {
            for w in &response.body.entities {
                if tx.has_queued(master, &w.entity_type, w.uuid).await? {
                    summary.kept_local += 1;
                    continue;
                }
                tx.put_entity(&Entity {
                    entity_type: w.entity_type.clone(),
                    uuid: w.uuid,
                    updated_at: w.updated_at,
                    is_deleted: w.is_deleted,
                    data: w.data.clone(),
                    rev: w.rev,
                    origin: w.origin_node_id,
                })
                .await?;
                summary.received_changes += 1;
            }
            peer.received_packet_no = m;
            peer.last_sync_in = Some(now_utc());
        } else if m > peer.received_packet_no + 1 {
            return Err(EngineError::Sync(format!(
                "the master sent packet {m} but this client expected {}; the client store does not belong to this master (or was restored from a backup). Re-initialize the client",
                peer.received_packet_no + 1
            )));
        }
        summary.acked_packet_no = peer.sent_packet_no;
        summary.received_packet_no = peer.received_packet_no;
        tx.put_node(&peer).await?;
        tx.commit().await?;
        Ok(Applied { new_master_packet })
    }
}

struct Applied {
    new_master_packet: bool,
}

/// The wire form of a queued change: the entity's current state.
async fn wire_change(tx: &mut dyn StoreTx, row: &QueuedChange) -> Result<WireChange, EngineError> {
    let e = tx
        .get_entity(&row.entity_type, row.entity_uuid)
        .await?
        .ok_or_else(|| {
            StoreError::corrupt(format!(
                "queued change {} refers to missing entity {} {}",
                row.id, row.entity_type, row.entity_uuid
            ))
        })?;
    Ok(WireChange {
        entity_type: e.entity_type,
        uuid: e.uuid,
        operation: row.operation,
        data: e.data,
        updated_at: e.updated_at,
        is_deleted: e.is_deleted,
        base_rev: e.rev,
        rev: None,
        origin_node_id: None,
    })
}

/// Serialized size of changes, for packet bounds and progress.
pub(crate) fn approx_size(changes: &[WireChange]) -> usize {
    changes
        .iter()
        .map(|c| serde_json::to_vec(c).map(|v| v.len()).unwrap_or(0) + 1)
        .sum()
}
