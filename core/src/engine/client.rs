//! The client side of a sync session.
//!
//! A session is a series of exchanges. Each one sends a packet of queued
//! changes (or resends the packet still in flight, unchanged in number),
//! acknowledges the master's last packet, and applies the master's answer:
//! its acknowledgement with the outcome of every change, and its next packet.
//! The session ends when nothing is left to send and the master has nothing
//! new, so that every packet of both sides ends acknowledged.
//!
//! While a packet travels and the master works on it, the session builds
//! the next one (`build_after`), so that client and master work at once
//! instead of in turn. When the master's answers hold nothing for this store
//! but the results of our packets (the usual push) and it keeps the results
//! of our last two packets (`push_only`), the next packet goes as soon as
//! it is built, while the one before is still at the master: two requests
//! in flight (`Window`), whose answers are applied in order while the other
//! travels. The master takes them in number order. An interrupted session
//! leaves up to two packets in flight, resent oldest first.
//!
//! Edits made while a session runs are safe: they only ever add unsent queue
//! rows, and an incoming master version never overwrites an entity that
//! still has a queued change (contract §7.7).

use std::collections::{HashSet, VecDeque};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde::Serialize;

use super::cached_tx::CachedTx;
use super::integrity::{FoundReferences, missing_reference, packet_keys};
use super::size::approx_size;
use super::{Engine, EngineError, ImportReport};
use crate::entity::{Entity, now_utc};
use crate::protocol::{
    Body, ChangeResult, Envelope, Header, Outcome, PROTOCOL_VERSION, WireChange,
};
use crate::store::{EntityStamp, NodeRole, QueuedChange, StoreError, StoreTx};
use crate::transport::Transport;

/// How far a session counts its queue after each round (see
/// `pending_after_round`): ~0.5 ms of index entries.
const PENDING_COUNT_CAP: i64 = 5_000;

/// Where a running session is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncProgress {
    pub round: u32,
    pub sent_changes: u64,
    pub received_changes: u64,
    pub bytes_sent: u64,
    /// Serialized size of the changes received so far.
    pub bytes_received: u64,
    /// Changes still queued for the master after this round.
    pub pending_changes: i64,
    /// Changes queued for the master when the session started (changes
    /// written during the session add to `pending_changes`).
    pub pending_at_start: i64,
    /// True when the master said more changes wait for this node.
    pub more_from_master: bool,
    /// About how many changes the master still has for this node, when it
    /// said (with `more_from_master`).
    pub remaining_from_master: Option<u64>,
}

impl SyncProgress {
    /// Changes to move in this session as far as known now: sent and
    /// received so far plus what is still queued on either side.
    pub fn total_changes(&self) -> u64 {
        self.sent_changes
            + self.received_changes
            + self.pending_changes.max(0) as u64
            + self.remaining_from_master.unwrap_or(0)
    }

    /// Changes moved so far.
    pub fn done_changes(&self) -> u64 {
        self.sent_changes + self.received_changes
    }
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
    /// Outcomes of sent changes that met a conflict or were refused.
    pub conflicts: Vec<ChangeResult>,
    /// Changes held (by the master for our packets, or here for the
    /// master's) until an entity they reference arrives.
    pub held: u64,
    /// Entities dropped because they left this node's routing scope.
    pub evicted: u64,
    pub acked_packet_no: i64,
    pub received_packet_no: i64,
}

/// A packet ready to send, and what it carries.
struct Outgoing {
    envelope: Envelope,
    /// Packet number of the changes carried (0 for a pure poll).
    carries_packet: Option<i64>,
    /// Serialized size of the changes carried.
    bytes: usize,
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
        let pending_at_start = self.store.count_queued(master).await?;
        let mut bytes_received = 0u64;
        let ctx = RoundCtx {
            master,
            pending_at_start,
            progress,
        };
        let mut window = Window::default();
        // The next packet, built while the ones before it travel.
        let mut ahead: Option<Outgoing> = None;
        // A second request may go while one travels: the master keeps the
        // results of our last two packets and its last answer brought us
        // nothing but results (the usual push; see `push_only`).
        let mut two = false;
        loop {
            if window.in_flight() == 0 {
                let out = match ahead.take() {
                    Some(out) => out,
                    None => self.build_outgoing().await?,
                };
                self.launch(&mut window, transport, out, &mut summary)?;
            }
            // The next packet is built while the requests travel: it follows
            // the newest in flight and stops before any entity whose answer
            // is not applied yet (its base revision is raised by that
            // answer).
            if ahead.is_none()
                && let Some(n) = window.newest
            {
                let stop = window.unapplied_keys();
                ahead = window.meanwhile(self.build_after(n, &stop)).await?;
            }
            if two
                && window.in_flight() == 1
                && let Some(out) = ahead.take()
            {
                self.launch(&mut window, transport, out, &mut summary)?;
            }
            let landed = window.next().await.ok_or_else(|| {
                EngineError::Sync("internal: a session waited with no request in flight".into())
            })?;
            let Landed { sent, response } = landed;
            let response = response?;
            summary.sent_changes += sent.count;
            two = push_only(&response, sent.ack);
            // Nothing else travels: the next packet goes before this answer
            // is applied (it brought no master packet to acknowledge).
            if two
                && window.in_flight() == 0
                && let Some(out) = ahead.take()
            {
                self.launch(&mut window, transport, out, &mut summary)?;
            }
            // A download: the answer is our next master packet and more
            // waits. The next request goes before it is applied, saying
            // that we hold it, so that the master builds the packet after
            // it meanwhile (docs/protocol.md, "Built ahead for a
            // download"). Only after a poll: an answer to a packet of ours
            // acknowledges it only once applied. A packet of ours to send
            // instead waits as usual.
            if window.in_flight() == 0
                && ahead.is_none()
                && sent.carries.is_none()
                && download_ahead(&response, sent.ack.max(summary.received_packet_no))
            {
                let mut out = self.build_outgoing().await?;
                if out.carries_packet.is_none() {
                    out.envelope.body.holding = Some(response.header.packet_no);
                    self.launch(&mut window, transport, out, &mut summary)?;
                } else {
                    ahead = Some(out);
                }
            }
            let more = response.body.more;
            // Applied while the other request, if any, travels.
            let (applied, pending) = window
                .meanwhile(self.finish_round(
                    &sent,
                    response,
                    &ctx,
                    &mut summary,
                    &mut bytes_received,
                ))
                .await?;
            window.unapplied.pop_front();
            // Done when nothing travels, the master had nothing more for
            // us and we have nothing left to send: either this round sent
            // nothing, or it sent our last queued changes and the answer
            // acknowledged them (`pending` counts the in-flight ones until
            // then). A round that only polls after that would move
            // nothing: the answer we just applied is the master's state
            // after our packet.
            // The last request must also have acknowledged every master
            // packet applied (one sent ahead of an answer did not).
            let master_drained =
                !applied.new_master_packet && !more && sent.ack >= summary.received_packet_no;
            if window.in_flight() == 0 && master_drained && (sent.count == 0 || pending == 0) {
                return Ok(summary);
            }
        }
    }

    /// Applies `response`, the answer to request `sent`, and reports the
    /// round's progress; returns what was applied and the changes still
    /// queued. `bytes_received`: the session's, counted on.
    async fn finish_round(
        &self,
        sent: &Sent,
        response: Envelope,
        ctx: &RoundCtx<'_>,
        summary: &mut SyncSummary,
        bytes_received: &mut u64,
    ) -> Result<(Applied, i64), EngineError> {
        let (more, remaining) = (response.body.more, response.body.remaining);
        let received_size = approx_size(&response.body.entities) as u64;
        // The answer is handed to the transaction that applies it (its
        // entities' data is moved into the store, not copied).
        let applied = self
            .apply_response(response, sent.carries, summary, false)
            .await?;
        if applied.new_master_packet {
            *bytes_received += received_size;
        }
        let pending = self
            .pending_after_round(ctx.master, ctx.pending_at_start, summary)
            .await?;
        ctx.progress.on_round(&SyncProgress {
            round: sent.round,
            sent_changes: summary.sent_changes,
            received_changes: summary.received_changes,
            bytes_sent: summary.bytes_sent,
            bytes_received: *bytes_received,
            pending_changes: pending,
            pending_at_start: ctx.pending_at_start,
            more_from_master: more,
            remaining_from_master: remaining,
        });
        Ok((applied, pending))
    }

    /// Changes still queued for the master after a round: exact up to
    /// [`PENDING_COUNT_CAP`] (which decides the end of the session), else
    /// what is left of the queue the session started with, if more. Counting
    /// a queue of a million rows at every round made a big push quadratic.
    async fn pending_after_round(
        &self,
        master: uuid::Uuid,
        pending_at_start: i64,
        summary: &SyncSummary,
    ) -> Result<i64, EngineError> {
        let counted = self
            .store
            .count_queued_capped(master, PENDING_COUNT_CAP)
            .await?;
        if counted < PENDING_COUNT_CAP {
            return Ok(counted);
        }
        let left = pending_at_start.saturating_sub(summary.sent_changes as i64);
        Ok(counted.max(left))
    }

    /// Exports the next packet to carry to the master as a file (contract
    /// §2, `hubsync export`): exactly what the next network request would
    /// be, the packet in flight again under its number if the master has
    /// not acknowledged it, else a new packet of unsent changes (which
    /// become in flight), else only an acknowledgement.
    pub async fn export_packet(&self) -> Result<Envelope, EngineError> {
        self.require(NodeRole::Client)?;
        Ok(self.build_outgoing().await?.envelope)
    }

    /// Imports a packet file from the master: its acknowledgement of our
    /// packets with their outcomes, and its changes, applied exactly once
    /// (a file imported twice changes nothing the second time). With
    /// `dry_run` the transaction is rolled back and the report says what
    /// would happen.
    pub async fn import_packet(
        &self,
        envelope: &Envelope,
        dry_run: bool,
    ) -> Result<ImportReport, EngineError> {
        self.require(NodeRole::Client)?;
        let theirs: crate::schema::SchemaVersion =
            envelope.header.schema_version.parse().map_err(|_| {
                EngineError::Sync(format!(
                    "the file carries schema set version '{}', which is not a version",
                    envelope.header.schema_version
                ))
            })?;
        let ours = self.registry.version();
        if ours.check_compatible(&theirs).is_err() {
            return Err(EngineError::Sync(format!(
                "schema version mismatch: this node has schema set {ours}, the file comes from a master with {theirs}; install a schema set with the same MAJOR version, then import again (nothing was applied)"
            )));
        }
        let mut summary = SyncSummary::default();
        let applied = self
            .apply_response(envelope.clone(), None, &mut summary, dry_run)
            .await?;
        Ok(ImportReport {
            from: "MASTER".into(),
            packet_no: envelope.header.packet_no,
            new_packet: applied.new_master_packet,
            ack_packet_no: envelope.header.ack_packet_no,
            applied: summary.received_changes,
            conflicts: summary.conflicts,
            held: summary.held,
            kept_local: summary.kept_local,
            dry_run,
        })
    }

    /// Builds the next request: the oldest packet in flight again if the
    /// master has not acknowledged it, else a new packet of unsent changes,
    /// else a poll.
    async fn build_outgoing(&self) -> Result<Outgoing, EngineError> {
        let master = self.master_id()?;
        let mut tx = self.store.begin().await?;
        let mut peer = master_row(tx.as_mut(), master).await?;
        // Up to two packets can be in flight (the one a session built ahead,
        // `build_ahead`): the master takes them in order, the oldest first.
        if peer.out_packet_no > peer.sent_packet_no {
            let n = peer.sent_packet_no + 1;
            let rows = tx.changes_in_packet(master, n).await?;
            let (entities, _, bytes) = self.wire_changes(tx.as_mut(), &rows, None).await?;
            tx.commit().await?;
            return Ok(self.outgoing(&peer, (entities, bytes), Some(n)));
        }
        let built = self.new_packet(tx.as_mut(), &mut peer, None).await?;
        tx.commit().await?;
        Ok(match built {
            Some((changes, n)) => self.outgoing(&peer, changes, Some(n)),
            None => self.outgoing(&peer, (Vec::new(), 0), None),
        })
    }

    /// Assigns the unsent changes at the head of the queue to the next
    /// packet number, in `tx` (up to the first change of an entity in
    /// `stop_before`): their wire form and size, and the number. None when
    /// there is nothing to send.
    async fn new_packet(
        &self,
        tx: &mut dyn StoreTx,
        peer: &mut crate::store::NodeRecord,
        stop_before: Option<&std::collections::HashSet<(&str, uuid::Uuid)>>,
    ) -> Result<Option<((Vec<WireChange>, usize), i64)>, EngineError> {
        let limits = self.options.limits;
        let mut rows = tx.unsent_changes(peer.id, limits.max_entities).await?;
        if let Some(stop) = stop_before.and_then(|keys| {
            rows.iter()
                .position(|r| keys.contains(&(r.entity_type.as_str(), r.entity_uuid)))
        }) {
            rows.truncate(stop);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let (entities, ids, bytes) = self.wire_changes(tx, &rows, Some(limits.max_bytes)).await?;
        let n = peer.out_packet_no + 1;
        tx.assign_packet(peer.id, &ids, n).await?;
        peer.out_packet_no = n;
        tx.put_node(peer).await?;
        Ok(Some(((entities, bytes), n)))
    }

    /// Sends `out` (its acknowledgement brought up to what the answers
    /// applied so far brought): one more request in flight.
    fn launch<'a>(
        &self,
        window: &mut Window<'a>,
        transport: &'a dyn Transport,
        mut out: Outgoing,
        summary: &mut SyncSummary,
    ) -> Result<(), EngineError> {
        if summary.rounds >= self.options.max_rounds {
            return Err(EngineError::Sync(format!(
                "the session did not drain in {} rounds; local writes may be arriving faster than they can be sent. Run sync again",
                self.options.max_rounds
            )));
        }
        summary.rounds += 1;
        summary.bytes_sent += out.bytes as u64;
        let h = &mut out.envelope.header;
        h.ack_packet_no = h.ack_packet_no.max(summary.received_packet_no);
        h.timestamp = now_utc();
        let sent = Sent {
            carries: out.carries_packet,
            count: out.envelope.body.entities.len() as u64,
            ack: h.ack_packet_no,
            round: summary.rounds,
        };
        window.unapplied.push_back(
            out.envelope
                .body
                .entities
                .iter()
                .map(|w| (w.entity_type.clone(), w.uuid))
                .collect(),
        );
        window.newest = out.carries_packet;
        window.flights.push_back(Box::pin(async move {
            let response = transport.exchange(&out.envelope).await;
            Landed { sent, response }
        }));
        Ok(())
    }

    /// Builds, while packet `n` travels (the newest in flight), the packet
    /// that follows it: the unsent changes from the head of the queue, up
    /// to the first one of an entity in `stop` (the entities of the packets
    /// whose answers are not applied yet: a change's base revision is
    /// raised only by that answer; sent before it, the change would meet
    /// our own earlier version as a conflict). The rows become in flight
    /// under the next number, exactly as if built after the answer. A
    /// session that stops in between sends every packet in flight again,
    /// oldest first. None when there is nothing to send or `n` is not the
    /// newest packet in flight.
    async fn build_after(
        &self,
        n: i64,
        stop: &HashSet<(String, uuid::Uuid)>,
    ) -> Result<Option<Outgoing>, EngineError> {
        let master = self.master_id()?;
        let mut tx = self.store.begin().await?;
        let mut peer = master_row(tx.as_mut(), master).await?;
        if peer.out_packet_no != n {
            return Ok(None);
        }
        let stop: HashSet<(&str, uuid::Uuid)> =
            stop.iter().map(|(t, u)| (t.as_str(), *u)).collect();
        let Some((changes, next)) = self.new_packet(tx.as_mut(), &mut peer, Some(&stop)).await?
        else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(self.outgoing(&peer, changes, Some(next))))
    }

    /// The wire form of queued `rows` (their entities read in one batch),
    /// ordered for the master to apply, with the ids of the rows carried
    /// (all of them, or with `max_bytes` as many as fit, at least one) and
    /// their serialized size.
    async fn wire_changes(
        &self,
        tx: &mut dyn StoreTx,
        rows: &[QueuedChange],
        max_bytes: Option<usize>,
    ) -> Result<(Vec<WireChange>, Vec<i64>, usize), EngineError> {
        let mut entities = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        // The rows' entities in one read (nothing is written here), each
        // moved into its change: the data is not copied.
        let keys: Vec<(String, uuid::Uuid)> = rows
            .iter()
            .map(|r| (r.entity_type.clone(), r.entity_uuid))
            .collect();
        let mut found: std::collections::HashMap<(String, uuid::Uuid), Entity> = tx
            .get_entities(&keys)
            .await?
            .into_iter()
            .map(|e| ((e.entity_type.clone(), e.uuid), e))
            .collect();
        for (row, key) in rows.iter().zip(&keys) {
            // A row's entity is taken once; another row of the same entity
            // (none is expected) reads it again.
            let current = match found.remove(key) {
                Some(e) => Some(e),
                None => tx.get_entity(&row.entity_type, row.entity_uuid).await?,
            };
            let change = wire_change(row, current)?;
            let size = approx_size(std::slice::from_ref(&change));
            if let Some(max) = max_bytes
                && !entities.is_empty()
                && bytes + size > max
            {
                break;
            }
            bytes += size;
            ids.push(row.id);
            entities.push(change);
        }
        super::order::order_for_apply(&self.registry, &mut entities);
        Ok((entities, ids, bytes))
    }

    /// A request to the master: `entities` (of serialized size `bytes`)
    /// under packet number `carries` (a poll when None), acknowledging what
    /// `peer` says we received.
    fn outgoing(
        &self,
        peer: &crate::store::NodeRecord,
        (entities, bytes): (Vec<WireChange>, usize),
        carries: Option<i64>,
    ) -> Outgoing {
        let header = Header {
            protocol: PROTOCOL_VERSION,
            sender_node_id: self.identity.node_id,
            recipient_node_id: peer.id,
            packet_no: carries.unwrap_or(peer.sent_packet_no),
            ack_packet_no: peer.received_packet_no,
            schema_version: self.registry.version().to_string(),
            timestamp: now_utc(),
        };
        Outgoing {
            envelope: Envelope {
                header,
                body: Body {
                    entities,
                    results: Vec::new(),
                    more: false,
                    remaining: None,
                    evict: Vec::new(),
                    results_kept: 0,
                    holding: None,
                    sends_ahead: false,
                },
            },
            carries_packet: carries,
            bytes,
        }
    }

    /// Applies the master's answer in one transaction: its acknowledgement
    /// of our packet and its own next packet (whose entities are moved into
    /// the store).
    async fn apply_response(
        &self,
        response: Envelope,
        carried: Option<i64>,
        summary: &mut SyncSummary,
        dry_run: bool,
    ) -> Result<Applied, EngineError> {
        let master = self.master_id()?;
        let Envelope { header, body } = response;
        let h = &header;
        if h.sender_node_id != master || h.recipient_node_id != self.identity.node_id {
            return Err(EngineError::Sync(format!(
                "the answer came from node {} for node {}, but this client is {} syncing with master {}; check [master].url",
                h.sender_node_id, h.recipient_node_id, self.identity.node_id, master
            )));
        }
        let mut tx = self.store.begin().await?;
        let mut peer = master_row(tx.as_mut(), master).await?;
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
        // The entities and queue rows at hand are read in batches and the
        // rows written in batches (cached_tx.rs).
        let mut cached = CachedTx::new(tx.as_mut());
        if h.ack_packet_no > peer.sent_packet_no {
            let keys: Vec<(String, uuid::Uuid)> = body
                .results
                .iter()
                .map(|r| (r.entity_type.clone(), r.uuid))
                .collect();
            // Only the stamps are read: the data stays where it is.
            let stamps: std::collections::HashMap<(String, uuid::Uuid), EntityStamp> = cached
                .entity_stamps(&keys)
                .await?
                .into_iter()
                .map(|s| ((s.entity_type.clone(), s.uuid), s))
                .collect();
            cached.prefetch_queue(master, keys).await?;
            let ctx: &mut dyn StoreTx = &mut cached;
            let mut redundant = Vec::new();
            let mut raise = Vec::new();
            for r in &body.results {
                let taken = r.outcome.client_version_taken();
                if let Some(e) = stamps.get(&(r.entity_type.clone(), r.uuid)) {
                    if taken && e.rev.is_none_or(|rev| rev < r.rev) {
                        // Our version is the master's at r.rev: later local
                        // edits are based on it (no false conflict, §7.4).
                        raise.push((r.entity_type.clone(), r.uuid, r.rev));
                    }
                    // A packet resent after an edit carried the edited state;
                    // if that is the version the master handled (took it,
                    // or decided a conflict, held or refused it), the
                    // edit's own queue row has nothing left to send
                    // (Property 24). Masters before `sent_updated_at` say
                    // it only of a version they took.
                    let handled = r.sent_updated_at.or(r.updated_at.filter(|_| taken));
                    if handled == Some(e.updated_at)
                        && let Some(row) = ctx
                            .unsent_change_for(master, &r.entity_type, r.uuid)
                            .await?
                    {
                        redundant.push(row.id);
                    }
                }
                if r.outcome == Outcome::Held {
                    summary.held += 1;
                } else if r.outcome.is_conflict() {
                    summary.conflicts.push(r.clone());
                }
            }
            ctx.raise_revs(&raise).await?;
            if !redundant.is_empty() {
                ctx.assign_packet(master, &redundant, h.ack_packet_no)
                    .await?;
            }
            ctx.delete_acknowledged(master, h.ack_packet_no).await?;
            peer.sent_packet_no = h.ack_packet_no;
            peer.last_sync_out = Some(now_utc());
        }
        let m = h.packet_no;
        let new_master_packet = m == peer.received_packet_no + 1;
        if new_master_packet {
            let now = now_utc();
            // The packet's entities, what they reference and their queue
            // rows, read in batches.
            // Each entity's references, found once.
            let found: Vec<FoundReferences<'_>> = body
                .entities
                .iter()
                .map(|w| self.change_references(w))
                .collect();
            cached.prefetch(packet_keys(&body.entities, &found)).await?;
            let mut own: Vec<(String, uuid::Uuid)> = body
                .entities
                .iter()
                .map(|w| (w.entity_type.clone(), w.uuid))
                .collect();
            own.extend(body.evict.iter().map(|e| (e.entity_type.clone(), e.uuid)));
            cached.prefetch_queue(master, own).await?;
            let ctx: &mut dyn StoreTx = &mut cached;
            // Held changes are looked for only when some may be waiting.
            let mut may_release = super::master::held_exists(ctx).await?;
            for (w, found) in body.entities.into_iter().zip(found) {
                // What it references has not arrived (it travels in a later
                // packet): hold it until it does.
                if let Some(missing) = missing_reference(ctx, &w, found.as_deref()).await? {
                    self.hold(ctx, master, m, &w, missing, now).await?;
                    may_release = true;
                    summary.held += 1;
                    continue;
                }
                let arrived = w.uuid;
                if self
                    .store_master_version(ctx, master, w, found, summary)
                    .await?
                    && may_release
                {
                    let mut work = vec![arrived];
                    while let Some(u) = work.pop() {
                        for (_, released, found) in self.unblocked_by(ctx, u, now).await? {
                            let uuid = released.uuid;
                            if self
                                .store_master_version(ctx, master, released, found, summary)
                                .await?
                            {
                                work.push(uuid);
                            }
                        }
                    }
                }
            }
            // Rows that left this node's routing scope. One with a local
            // change still queued stays: the change goes to the master.
            for ev in &body.evict {
                if ctx.has_queued(master, &ev.entity_type, ev.uuid).await? {
                    summary.kept_local += 1;
                } else if ctx.purge_entity(&ev.entity_type, ev.uuid).await? {
                    summary.evicted += 1;
                }
            }
            peer.received_packet_no = m;
            peer.last_sync_in = Some(now_utc());
        } else if m > peer.received_packet_no + 1 {
            return Err(EngineError::Sync(format!(
                "the master sent packet {m} but this client expected {}; the client store does not belong to this master (or was restored from a backup). Re-initialize the client",
                peer.received_packet_no + 1
            )));
        }
        let leftovers = cached.finish().await?;
        summary.acked_packet_no = peer.sent_packet_no;
        summary.received_packet_no = peer.received_packet_no;
        tx.put_node(&peer).await?;
        if !dry_run {
            // The packet's entities are freed while the COMMIT runs (its
            // first poll hands it to the store).
            let (committed, ()) =
                futures_util::future::join(tx.commit(), async move { drop(leftovers) }).await;
            committed?;
        }
        Ok(Applied { new_master_packet })
    }
}

struct Applied {
    new_master_packet: bool,
}

/// What every round of a session reports against.
struct RoundCtx<'a> {
    master: uuid::Uuid,
    pending_at_start: i64,
    progress: &'a dyn Progress,
}

/// True when, after this answer (to a packet of ours acknowledging master
/// packet `sent_ack`), the next packet may go while another travels: the
/// master keeps the results of our last two packets (so a stop before an
/// answer is applied loses nothing: that packet is sent again and answered
/// with its own results), and the answer held nothing for this store but
/// results — no packet of the master's that a request already on its way
/// could not acknowledge, no evictions, nothing more waiting. The usual
/// push.
fn push_only(response: &Envelope, sent_ack: i64) -> bool {
    let b = &response.body;
    b.results_kept >= crate::protocol::RESULTS_KEPT
        && b.entities.is_empty()
        && b.evict.is_empty()
        && !b.more
        && response.header.packet_no <= sent_ack
}

/// Whether the next request goes before `response` is applied, saying it
/// holds the packet `response` brings: a master that builds ahead sent the
/// packet after `applied` (the last one applied: what the request it
/// answers acknowledged, or one applied in this session since), with
/// entities and more to come, and no evictions (an unscoped node).
fn download_ahead(response: &Envelope, applied: i64) -> bool {
    let b = &response.body;
    b.sends_ahead
        && b.more
        && !b.entities.is_empty()
        && b.evict.is_empty()
        && response.header.packet_no == applied + 1
}

/// A request of the session, as it left.
struct Sent {
    /// The packet of ours it carries (None for a poll).
    carries: Option<i64>,
    /// Changes carried.
    count: u64,
    /// The master packet it acknowledged.
    ack: i64,
    round: u32,
}

/// A request and its answer (or why none came).
struct Landed {
    sent: Sent,
    response: Result<Envelope, crate::transport::TransportError>,
}

type Flight<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Landed> + Send + 'a>>;

/// The requests of a session in flight (at most two), oldest first.
#[derive(Default)]
struct Window<'a> {
    flights: FuturesOrdered<Flight<'a>>,
    /// Answers that came back while another was being applied, in order.
    early: VecDeque<Landed>,
    /// The entities of each request whose answer is not applied yet.
    unapplied: VecDeque<Vec<(String, uuid::Uuid)>>,
    /// The packet the newest request carries, while one is in flight.
    newest: Option<i64>,
}

impl<'a> Window<'a> {
    fn in_flight(&self) -> usize {
        self.flights.len() + self.early.len()
    }

    /// The entities no new packet may carry yet.
    fn unapplied_keys(&self) -> HashSet<(String, uuid::Uuid)> {
        self.unapplied.iter().flatten().cloned().collect()
    }

    /// The oldest answer, in the order the requests left.
    async fn next(&mut self) -> Option<Landed> {
        match self.early.pop_front() {
            Some(l) => Some(l),
            None => self.flights.next().await,
        }
    }

    /// Runs `work` while the requests in flight go on (an answer that comes
    /// back meanwhile waits in `early`): a request is only sent, and its
    /// answer only read, while its future is polled.
    async fn meanwhile<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        let (flights, early) = (&mut self.flights, &mut self.early);
        std::future::poll_fn(|cx| {
            while let std::task::Poll::Ready(Some(landed)) = flights.poll_next_unpin(cx) {
                early.push_back(landed);
            }
            work.as_mut().poll(cx)
        })
        .await
    }
}

impl Engine {
    /// Stores a version received from the master, unless a local change of
    /// the entity is still queued (the master decides that conflict).
    /// Returns whether it was stored. `found`: the references of its data
    /// ([`Engine::change_references`]).
    async fn store_master_version(
        &self,
        tx: &mut dyn StoreTx,
        master: uuid::Uuid,
        w: WireChange,
        found: FoundReferences<'_>,
        summary: &mut SyncSummary,
    ) -> Result<bool, EngineError> {
        if tx.has_queued(master, &w.entity_type, w.uuid).await? {
            summary.kept_local += 1;
            return Ok(false);
        }
        self.put_indexed_found(
            tx,
            Entity {
                entity_type: w.entity_type,
                uuid: w.uuid,
                updated_at: w.updated_at,
                is_deleted: w.is_deleted,
                data: w.data,
                rev: w.rev,
                origin: w.origin_node_id,
            },
            found,
        )
        .await?;
        summary.received_changes += 1;
        Ok(true)
    }
}

/// The master's node row (its packet counters), read in `tx`.
async fn master_row(
    tx: &mut dyn StoreTx,
    master: uuid::Uuid,
) -> Result<crate::store::NodeRecord, EngineError> {
    Ok(tx
        .get_node(master)
        .await?
        .ok_or_else(|| StoreError::corrupt("master node row missing"))?)
}

/// The wire form of a queued change: its entity's current state.
fn wire_change(row: &QueuedChange, current: Option<Entity>) -> Result<WireChange, EngineError> {
    let e = current.ok_or_else(|| {
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
