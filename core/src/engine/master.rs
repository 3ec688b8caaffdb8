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

use super::{Engine, EngineError};
use crate::conflict::{ConflictInput, Decision, Version};
use crate::entity::{Entity, Operation, format_ts, now_utc};
use crate::protocol::{
    Body, ChangeResult, Envelope, Eviction, Header, Outcome, PROTOCOL_VERSION, RESULTS_KEPT,
    WireChange,
};
use crate::schema::{Issue, SchemaVersion};
use crate::store::{AuditRecord, HistoryRecord, NodeRecord, NodeRole, StoreError, StoreTx};

use super::cached_tx::{CachedTx, OwnAppends};
use super::integrity::{FoundReferences, missing_reference, packet_keys};
use super::routing::Route;
use super::size::approx_size;

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

/// A scoped node's packet reads up to this many times `max_entities` log
/// rows to find the ones it carries (`StoreTx::scoped_revisions_after`):
/// a node that receives little of the log catches up in fewer exchanges,
/// and an exchange still reads a bounded part of it.
const SCOPED_SCAN_FACTOR: u32 = 8;

/// How far a reply counts the revisions still waiting for the node before
/// it gives the width of their range instead: ~0.5 ms of index entries.
const REMAINING_COUNT_CAP: i64 = 5_000;

/// What receiving a node's packet did.
struct Received {
    results: Vec<ChangeResult>,
    /// The node's packet that `results` answer: the last one received,
    /// or the one before it when that one came again.
    acked: i64,
    /// False when the packet was seen before (nothing applied again).
    new_packet: bool,
    /// False when the held changes are known to be none (none before the
    /// packet, none held by it): nothing can expire in this transaction.
    held_possible: bool,
    /// The packet's changes went into the log as the node's own versions
    /// only, under these revisions (the usual push).
    own_appends: Option<OwnAppends>,
}

/// Our next packet for a node.
struct Reply {
    packet_no: i64,
    entities: Vec<WireChange>,
    evict: Vec<Eviction>,
    more: bool,
    remaining: Option<u64>,
    /// The node is unscoped: a request that says it holds our last packet
    /// gets the one after it (`body.sends_ahead`).
    sends_ahead: bool,
}

/// What importing a packet file did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The node whose packet it was (master) or the master (client).
    pub from: String,
    pub packet_no: i64,
    /// False when the packet had been imported or received before: nothing
    /// was applied again.
    pub new_packet: bool,
    /// The packet acknowledged by this file.
    pub ack_packet_no: i64,
    /// Changes applied (master: without conflict; client: stored).
    pub applied: u64,
    /// Changes that met a conflict, by outcome.
    pub conflicts: Vec<ChangeResult>,
    /// Changes held until what they reference arrives.
    pub held: u64,
    /// Client only: incoming versions not stored because a local change of
    /// the same entity is still queued.
    pub kept_local: u64,
    pub dry_run: bool,
}

impl ImportReport {
    pub(crate) fn new(
        from: String,
        packet_no: i64,
        new_packet: bool,
        results: &[ChangeResult],
        ack_packet_no: i64,
        dry_run: bool,
    ) -> Self {
        let mut report = ImportReport {
            from,
            packet_no,
            new_packet,
            ack_packet_no,
            dry_run,
            ..ImportReport::default()
        };
        if new_packet {
            for r in results {
                match r.outcome {
                    Outcome::Applied => report.applied += 1,
                    Outcome::Held => report.held += 1,
                    _ => report.conflicts.push(r.clone()),
                }
            }
        }
        report
    }
}

/// The results the master answered `node`'s last packet with, for its
/// replay (a duplicate, or a packet file exported again).
fn stored_results(node: &NodeRecord) -> Result<Vec<ChangeResult>, StoreError> {
    parse_results(node, node.last_results.as_deref())
}

/// Results stored with `node` (`last_results` or `prev_results`).
fn parse_results(node: &NodeRecord, text: Option<&str>) -> Result<Vec<ChangeResult>, StoreError> {
    match text {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| StoreError::corrupt(format!("stored results of node {}: {e}", node.code))),
        None => Ok(Vec::new()),
    }
}

impl Engine {
    /// Handles one exchange from the authenticated node `node_id`: its
    /// packet received and our next packet built, in one transaction. The
    /// packet's entities are moved into the store, not copied.
    pub async fn handle_exchange(
        &self,
        node_id: Uuid,
        request: Envelope,
    ) -> Result<Envelope, ExchangeError> {
        if self.identity.role != NodeRole::Master {
            return Err(ExchangeError::NotMaster);
        }
        self.check_request(node_id, &request)?;
        // A node's packets are applied in number order: one that arrived
        // before the packet it follows committed waits for it (a client may
        // have two requests in flight). Polls do not wait.
        let carried = (!request.body.entities.is_empty()).then_some(request.header.packet_no);
        let answer = match carried {
            Some(n) => match self
                .turns
                .wait(node_id, n, || async {
                    Ok(self
                        .store
                        .get_node(node_id)
                        .await?
                        .map_or(0, |node| node.received_packet_no))
                })
                .await
            {
                Ok(()) => self.exchange_in_turn(node_id, request).await,
                Err(e) => Err(e.into()),
            },
            None => self.exchange_in_turn(node_id, request).await,
        };
        match (&answer, carried) {
            (Ok(a), _) => self.turns.received(node_id, a.header.ack_packet_no),
            (Err(_), Some(n)) => self.turns.failed(node_id, n),
            (Err(_), None) => {}
        }
        answer
    }

    /// [`Engine::handle_exchange`] once the packet's turn has come.
    async fn exchange_in_turn(
        &self,
        node_id: Uuid,
        request: Envelope,
    ) -> Result<Envelope, ExchangeError> {
        let now = now_utc();
        let mut tx = self.store.begin().await?;
        let mut node = self.exchange_node(tx.as_mut(), node_id).await?;
        let Envelope { header, body } = request;
        let received = self
            .receive_in(tx.as_mut(), &mut node, &header, body.entities, now)
            .await?;
        if received.held_possible {
            self.expire_held(tx.as_mut(), now).await?;
        }
        let reply = self
            .reply_in(
                tx.as_mut(),
                &mut node,
                received.own_appends,
                body.holding,
                now,
            )
            .await?;
        node.schema_version = Some(header.schema_version);
        tx.put_node(&node).await?;
        tx.commit().await?;
        Ok(self.reply_envelope(&node, reply, (received.acked, received.results), now))
    }

    /// Imports a packet file from a node (contract §2, `hubsync import`):
    /// the packet is received exactly as over the network (acknowledgement,
    /// exactly-once application, stored results) but nothing is answered;
    /// the answer goes into the next exported file. With `dry_run` the
    /// transaction is rolled back and the report says what would happen.
    pub async fn import_from_node(
        &self,
        request: &Envelope,
        dry_run: bool,
    ) -> Result<ImportReport, ExchangeError> {
        if self.identity.role != NodeRole::Master {
            return Err(ExchangeError::NotMaster);
        }
        let node_id = request.header.sender_node_id;
        self.check_request(node_id, request)?;
        let now = now_utc();
        let mut tx = self.store.begin().await?;
        let mut node = self.exchange_node(tx.as_mut(), node_id).await?;
        if node.revoked {
            return Err(ExchangeError::Forbidden {
                message: format!("node {} is revoked", node.code),
            });
        }
        let received = self
            .receive_in(
                tx.as_mut(),
                &mut node,
                &request.header,
                request.body.entities.clone(),
                now,
            )
            .await?;
        node.schema_version = Some(request.header.schema_version.clone());
        tx.put_node(&node).await?;
        if !dry_run {
            tx.commit().await?;
        }
        Ok(ImportReport::new(
            node.code,
            request.header.packet_no,
            received.new_packet,
            &received.results,
            request.header.ack_packet_no,
            dry_run,
        ))
    }

    /// Exports the next packet for a node to carry as a file: the master's
    /// acknowledgement of the node's last packet with its results, and the
    /// changes the node has not acknowledged yet. A packet exported before
    /// and not acknowledged is exported again under the same number over
    /// the same range (the same rule as the network).
    pub async fn export_for_node(&self, code: &str) -> Result<Envelope, EngineError> {
        self.require(NodeRole::Master)?;
        let found = self
            .store
            .get_node_by_code(code)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        let now = now_utc();
        let mut tx = self.store.begin().await?;
        let mut node = tx
            .get_node(found.id)
            .await?
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        let reply = self
            .reply_in(tx.as_mut(), &mut node, None, None, now)
            .await
            .map_err(|e| match e {
                ExchangeError::Store(s) => EngineError::Store(s),
                other => EngineError::Sync(other.to_string()),
            })?;
        tx.put_node(&node).await?;
        tx.commit().await?;
        let results = stored_results(&node)?;
        Ok(self.reply_envelope(&node, reply, (node.received_packet_no, results), now))
    }

    /// The node row of an exchange, locked for this transaction.
    async fn exchange_node(
        &self,
        tx: &mut dyn StoreTx,
        node_id: Uuid,
    ) -> Result<NodeRecord, ExchangeError> {
        tx.get_node(node_id)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| ExchangeError::Forbidden {
                message: format!("node {node_id} is not registered with this master"),
            })
    }

    /// The answer to `node`: our packet `reply`, and the acknowledgement of
    /// its packet `acked` with their `results`.
    fn reply_envelope(
        &self,
        node: &NodeRecord,
        reply: Reply,
        (acked, results): (i64, Vec<ChangeResult>),
        now: chrono::DateTime<chrono::Utc>,
    ) -> Envelope {
        Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: self.identity.node_id,
                recipient_node_id: node.id,
                packet_no: reply.packet_no,
                ack_packet_no: acked,
                schema_version: self.registry.version().to_string(),
                timestamp: now,
            },
            body: Body {
                entities: reply.entities,
                results,
                more: reply.more,
                remaining: reply.remaining,
                evict: reply.evict,
                results_kept: RESULTS_KEPT,
                holding: None,
                sends_ahead: reply.sends_ahead,
            },
        }
    }

    /// Receives a node's packet inside `tx`: its acknowledgement of our last
    /// packet, then its changes, applied exactly once.
    async fn receive_in(
        &self,
        tx: &mut dyn StoreTx,
        node: &mut NodeRecord,
        h: &crate::protocol::Header,
        entities: Vec<WireChange>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Received, ExchangeError> {
        // 1. The node's acknowledgement of our last packet.
        if h.ack_packet_no > node.out_packet_no {
            return Err(ExchangeError::OutOfSequence(format!(
                "node {} acknowledges master packet {} but the master only sent up to {}",
                node.code, h.ack_packet_no, node.out_packet_no
            )));
        }
        if h.ack_packet_no > node.sent_packet_no {
            if h.ack_packet_no == node.out_packet_no {
                node.sent_packet_no = h.ack_packet_no;
                node.acked_rev = node.out_up_to_rev;
                node.prev_out_up_to_rev = None;
            } else if h.ack_packet_no == node.out_packet_no - 1
                && let Some(first_end) = node.prev_out_up_to_rev
            {
                // The first of two packets in flight (the second was built
                // ahead while the node applied the first).
                node.sent_packet_no = h.ack_packet_no;
                node.acked_rev = first_end;
                node.prev_out_up_to_rev = None;
            }
        }

        // 2. The node's packet, applied exactly once.
        let carries = !entities.is_empty();
        if h.packet_no == node.received_packet_no + 1 {
            let (results, held_possible, own_appends) = self
                .apply_packet(tx, node, h.packet_no, entities, now)
                .await?;
            node.received_packet_no = h.packet_no;
            node.prev_results = node.last_results.take();
            node.last_results = Some(
                serde_json::to_string(&results)
                    .map_err(|e| StoreError::corrupt(format!("results: {e}")))?,
            );
            node.last_sync_in = Some(now);
            Ok(Received {
                results,
                acked: h.packet_no,
                new_packet: true,
                held_possible,
                own_appends,
            })
        } else if h.packet_no == node.received_packet_no && carries {
            // The node did not get our answer: the same results again.
            let results = stored_results(node)?;
            Ok(Received {
                results,
                acked: h.packet_no,
                new_packet: false,
                held_possible: true,
                own_appends: None,
            })
        } else if h.packet_no == node.received_packet_no - 1
            && carries
            && node.prev_results.is_some()
        {
            // The node sent its next packet before it applied our answer to
            // this one, and stopped in between: this one's results again,
            // acknowledging only it (the next one comes again after it).
            let results = parse_results(node, node.prev_results.as_deref())?;
            Ok(Received {
                results,
                acked: h.packet_no,
                new_packet: false,
                held_possible: true,
                own_appends: None,
            })
        } else if h.packet_no <= node.received_packet_no {
            Ok(Received {
                results: Vec::new(),
                acked: node.received_packet_no,
                new_packet: false,
                held_possible: true,
                own_appends: None,
            })
        } else {
            Err(ExchangeError::OutOfSequence(format!(
                "node {} sent packet {} but the master expected {}",
                node.code,
                h.packet_no,
                node.received_packet_no + 1
            )))
        }
    }

    /// Builds our next packet for `node` inside `tx`. One built before and
    /// not acknowledged is built again under the same number over exactly
    /// the same revision range: the node may hold it already (a late or
    /// duplicated request cannot tell us), and its acknowledgement will mean
    /// that range. Within the range only rows replaced by newer revisions
    /// can be missing, and those newer revisions lie beyond it.
    ///
    /// `own`: what this exchange appended to the log, when it was only the
    /// node's own versions (see below).
    async fn reply_in(
        &self,
        tx: &mut dyn StoreTx,
        node: &mut NodeRecord,
        own: Option<OwnAppends>,
        holding: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Reply, ExchangeError> {
        let limits = self.options.limits;
        // The node holds our packet in flight and is applying it (a
        // download): the next one is built after it, without waiting for
        // its acknowledgement, for an unscoped node with no scope change
        // waiting (a scoped packet records holdings and may restart).
        let scope = tx.get_scope(node.id).await?;
        let ahead = node.prev_out_up_to_rev.is_none()
            && node.out_packet_no > node.sent_packet_no
            && holding == Some(node.out_packet_no)
            && scope.scope.is_none()
            && scope.pending.is_none();
        let scope_pending = scope.pending.is_some();
        // A packet in flight is sent again, under its number, over exactly
        // the range it first covered. With two in flight (the second built
        // ahead), a node that says it holds the first gets the second; any
        // other request gets the first, the second kept as it is: a late
        // or duplicated request cannot tell what the node holds, and the
        // node acknowledges each packet as first built.
        // `(number, first revision after, last revision)`.
        let again = match node.prev_out_up_to_rev {
            Some(first_end) if holding == Some(node.out_packet_no - 1) => {
                Some((node.out_packet_no, first_end, node.out_up_to_rev))
            }
            Some(first_end) => Some((node.out_packet_no - 1, node.acked_rev, first_end)),
            None if node.out_packet_no > node.sent_packet_no && !ahead => {
                Some((node.out_packet_no, node.acked_rev, node.out_up_to_rev))
            }
            None => None,
        };
        let resend_to = again.map(|(_, _, to)| to);
        // The packet being built: the one in flight again, or the next.
        let building = match again {
            Some((no, _, _)) => no,
            None => node.out_packet_no + 1,
        };
        let (mut routing, restart, resend_own_to) = self
            .packet_routing(
                tx,
                node.id,
                scope,
                building,
                resend_to.is_none(),
                node.out_packet_no > 0,
            )
            .await
            .map_err(routing_error)?;
        if restart {
            // A new scope: the node's position in the log starts over, so
            // that it receives what it now covers and drops what it no
            // longer does.
            node.acked_rev = 0;
        }
        // Where the packet being built starts: after what the node has
        // acknowledged, after the packet it holds, or where the packet
        // sent again first started.
        let from = match again {
            Some((_, from, _)) => from,
            None if ahead => node.out_up_to_rev,
            None => node.acked_rev,
        };
        // Unscoped, the node's own versions are skipped below without
        // being looked at: they are read without their data. Scoped, the
        // store reads a window of the log and returns only the rows the
        // routing would not skip (the others are never parsed); a packet
        // sent again takes every candidate of its window, so that it covers
        // exactly its first range.
        //
        // A push: the node had everything up to its cursor, and all this
        // exchange appended after it is its own versions (unaddressed, their
        // entities written by it) under one unbroken range of revisions
        // that reaches the log's head. Every row past the cursor would be
        // read (without data) only to be skipped, so none is read: the
        // cursor moves to the head, as if the rows had been scanned.
        let own_up_to = match own {
            Some(own)
                if routing.is_none()
                    && resend_to.is_none()
                    && !ahead
                    && !restart
                    && own.after <= node.acked_rev
                    && resend_own_to <= node.acked_rev =>
            {
                let head = tx.log_head().await?;
                (head <= own.through).then_some(head)
            }
            _ => None,
        };
        let (rows, mut more, scanned_to) = match routing.as_ref() {
            None if own_up_to.is_some() => (Vec::new(), false, own_up_to),
            None => {
                let rows = tx
                    .revisions_after_skipping_own(node.id, from, limits.max_entities, resend_own_to)
                    .await?;
                let more = rows.len() >= limits.max_entities as usize;
                (rows, more, None)
            }
            Some(r) => {
                let window = limits
                    .max_entities
                    .max(1)
                    .saturating_mul(SCOPED_SCAN_FACTOR);
                let limit = match resend_to {
                    Some(_) => window,
                    None => limits.max_entities,
                };
                let page = tx
                    .scoped_revisions_after(node.id, from, limit, window, &r.scope.filter())
                    .await?;
                (page.rows, page.more, Some(page.scanned_to))
            }
        };
        if let Some(r) = routing.as_mut() {
            self.prefetch_routing(tx, r, &rows)
                .await
                .map_err(routing_error)?;
        }
        let mut entities = Vec::new();
        let mut evict = Vec::new();
        let mut up_to = from;
        let mut bytes = 0usize;
        let mut stopped = false;
        for (rev, e) in rows {
            if resend_to.is_some_and(|end| rev.rev > end) {
                more = true;
                stopped = true;
                break;
            }
            // A node never gets back its own version, unless addressed to it
            // (or, up to a scope change, because it may have dropped it).
            let addressed = rev.target.is_some();
            let own = !addressed && e.origin == Some(node.id) && rev.rev > resend_own_to;
            let route = match routing.as_mut() {
                None if own => Route::Skip,
                None => Route::Send,
                Some(_) if addressed => Route::Send,
                Some(r) => {
                    if r.seen.contains(&e.uuid) {
                        // Already in this packet (it rode along as a
                        // reference, at its current state).
                        up_to = rev.rev;
                        continue;
                    }
                    let route = self.route(tx, r, &e).await.map_err(routing_error)?;
                    // A row skipped is not in the packet: a row after it
                    // that refers to it must still bring it along.
                    if route != Route::Skip || own {
                        r.seen.insert(e.uuid);
                    }
                    match route {
                        Route::Send if own => Route::Skip,
                        // The node wrote it, so it has it, even where the
                        // master had evicted it before (a local change kept
                        // the row): out of scope, it goes.
                        Route::Skip if own => Route::Evict,
                        other => other,
                    }
                }
            };
            match route {
                Route::Skip => {}
                Route::Evict => {
                    if let Some(r) = routing.as_mut() {
                        for gone in self
                            .eviction_closure(tx, r, &e)
                            .await
                            .map_err(routing_error)?
                        {
                            evict.push(Eviction {
                                entity_type: gone.entity_type,
                                uuid: gone.uuid,
                            });
                        }
                    }
                    evict.push(Eviction {
                        entity_type: e.entity_type,
                        uuid: e.uuid,
                    });
                }
                Route::Send => {
                    let mut batch = Vec::new();
                    if let Some(r) = routing.as_mut() {
                        for found in self
                            .referenced_closure(tx, r, &e)
                            .await
                            .map_err(routing_error)?
                        {
                            batch.push(master_wire(found, Operation::Update));
                        }
                    }
                    batch.push(master_wire(e, rev.operation));
                    let size = approx_size(&batch);
                    if resend_to.is_none()
                        && !entities.is_empty()
                        && bytes + size > limits.max_bytes
                    {
                        more = true;
                        stopped = true;
                        break;
                    }
                    bytes += size;
                    entities.extend(batch);
                }
            }
            up_to = rev.rev;
        }
        // Every row of the scanned window was looked at: those the store
        // left out were not candidates, so the packet covers them too.
        if !stopped && let Some(scanned) = scanned_to {
            up_to = up_to.max(resend_to.map_or(scanned, |end| scanned.min(end)));
        }
        super::order::order_for_apply(&self.registry, &mut entities);
        let packet_no = match again {
            Some((no, _, _)) => {
                node.last_sync_out = Some(now);
                no
            }
            // Built ahead: the node acknowledges the packet it holds and
            // this one later, each meaning its own range. With nothing to
            // send, nothing is built, and rows skipped here are looked at
            // again after that acknowledgement.
            None if ahead => {
                if entities.is_empty() {
                    node.sent_packet_no
                } else {
                    node.prev_out_up_to_rev = Some(node.out_up_to_rev);
                    node.out_packet_no += 1;
                    node.out_up_to_rev = up_to;
                    node.last_sync_out = Some(now);
                    node.out_packet_no
                }
            }
            // Only rows the node need not be sent lay past its cursor: its
            // own versions (a push) or, scoped, rows outside its scope that
            // it does not hold. There is nothing to deliver nor to
            // acknowledge: the cursor moves past them now, without an empty
            // packet that would take the node one more exchange (and a write
            // on each side) to acknowledge. Scoped, nothing is lost by it: a
            // pending scope change is taken whenever a new packet is built,
            // sent or not (and then `restart` makes it one), and holdings
            // are recorded only for rows sent or evicted.
            None if up_to > node.acked_rev
                && entities.is_empty()
                && evict.is_empty()
                && !restart =>
            {
                node.acked_rev = up_to;
                node.sent_packet_no
            }
            None if up_to > node.acked_rev => {
                node.out_packet_no += 1;
                node.out_up_to_rev = up_to;
                node.last_sync_out = Some(now);
                node.out_packet_no
            }
            None => node.sent_packet_no,
        };
        // A page that ends at the log's head has nothing after it: a full
        // page only looked like more (a push whose last packet was full took
        // one more exchange to learn that).
        if more && tx.log_head().await? <= up_to {
            more = false;
        }
        // "About how many": counted exactly up to a bound, so that a node
        // downloading a million rows does not have them all counted at every
        // exchange; past the bound, the width of the revision range (which
        // also spans rows addressed to other nodes and replaced revisions).
        let remaining = if more {
            let left = self
                .store
                .count_revisions_after_capped(up_to, node.id, REMAINING_COUNT_CAP)
                .await?;
            let left = if left < REMAINING_COUNT_CAP {
                left
            } else {
                left.max(tx.log_head().await? - up_to)
            };
            Some(left.max(0) as u64)
        } else {
            None
        };
        Ok(Reply {
            packet_no,
            entities,
            evict,
            more,
            remaining,
            // A scope change still waiting (a packet sent again does not
            // take it) means the next packet is not built ahead: a node
            // told so would poll holding this packet and get it once more.
            sends_ahead: routing.is_none() && !(scope_pending && resend_to.is_some()),
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

    /// Applies one packet's changes in order; returns their outcomes,
    /// whether any change may be held now (false: none was held before the
    /// packet and none by it), and the revisions it appended when they are
    /// all the node's own versions ([`CachedTx::own_appends`]). A change
    /// whose reference has not arrived is held (and applied when it does,
    /// with everything it unblocks); it never blocks the rest.
    async fn apply_packet(
        &self,
        tx: &mut dyn StoreTx,
        node: &NodeRecord,
        packet_no: i64,
        changes: Vec<WireChange>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Vec<ChangeResult>, bool, Option<OwnAppends>), ExchangeError> {
        // The packet's entities and everything they reference, read in one
        // batch; the changes then read them from memory, and their rows are
        // written in batches (cached_tx.rs).
        let mut cached = CachedTx::new(tx);
        let found: Vec<FoundReferences<'_>> =
            changes.iter().map(|c| self.change_references(c)).collect();
        cached.prefetch(packet_keys(&changes, &found)).await?;
        cached.expect_revisions(changes.len());
        let tx: &mut dyn StoreTx = &mut cached;
        // Held changes are looked for only when some may be waiting: none
        // were held before this packet (read under the write lock taken by
        // the prefetch) and none was held by it, in the common case.
        let mut may_release = held_exists(tx).await?;
        let mut results = Vec::with_capacity(changes.len());
        for (c, found) in changes.into_iter().zip(found) {
            if let Some(missing) = missing_reference(tx, &c, found.as_deref())
                .await
                .map_err(engine_to_exchange)?
            {
                self.hold(tx, node.id, packet_no, &c, missing, now)
                    .await
                    .map_err(engine_to_exchange)?;
                may_release = true;
                results.push(ChangeResult {
                    entity_type: c.entity_type.clone(),
                    uuid: c.uuid,
                    outcome: Outcome::Held,
                    rev: 0,
                    updated_at: None,
                    sent_updated_at: Some(c.updated_at),
                });
                continue;
            }
            let (uuid, sent_updated_at) = (c.uuid, c.updated_at);
            let mut result = self
                .apply_change(tx, node, packet_no, c, found, now)
                .await?;
            result.sent_updated_at = Some(sent_updated_at);
            let applied = result.outcome != Outcome::Rejected;
            results.push(result);
            if applied && may_release {
                self.release_held(tx, uuid, now).await?;
            }
        }
        let own_appends = cached.own_appends(node.id);
        cached.finish().await?;
        Ok((results, may_release, own_appends))
    }

    /// Applies the held changes that the arrival of `arrived` unblocks, and
    /// in turn what those unblock. Each goes through the usual conflict
    /// check; its sender receives the applied version with its revision.
    async fn release_held(
        &self,
        tx: &mut dyn StoreTx,
        arrived: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ExchangeError> {
        let mut work = vec![arrived];
        let mut rounds = 0usize;
        while let Some(u) = work.pop() {
            rounds += 1;
            if rounds > 1_000_000 {
                break;
            }
            for (held, change, found) in self
                .unblocked_by(tx, u, now)
                .await
                .map_err(engine_to_exchange)?
            {
                let Some(source) = tx.get_node(held.source_node).await? else {
                    tracing::warn!(node = %held.source_node, "a held change's node is gone; dropped");
                    continue;
                };
                let (entity_type, uuid, operation) =
                    (change.entity_type.clone(), change.uuid, change.operation);
                let result = self
                    .apply_change(tx, &source, held.packet_no, change, found, now)
                    .await?;
                tracing::info!(%entity_type, %uuid, outcome = result.outcome.as_str(), "held change released");
                if result.outcome.client_version_taken() {
                    // The sender got `held` for it: address the applied
                    // version (with its revision) to it.
                    tx.append_revision(
                        Some(source.id),
                        &entity_type,
                        uuid,
                        operation,
                        Some(source.id),
                    )
                    .await?;
                }
                if result.outcome != Outcome::Rejected {
                    work.push(uuid);
                }
            }
        }
        Ok(())
    }

    /// Hands the changes held longer than `hold_timeout` to a person: each
    /// becomes a deferred conflict (manual queue) whose incoming version is
    /// kept in history, with the reason. Bounded work per call.
    async fn expire_held(
        &self,
        tx: &mut dyn StoreTx,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ExchangeError> {
        let Ok(timeout) = chrono::Duration::from_std(self.options.hold_timeout) else {
            return Ok(());
        };
        let Some(before) = now.checked_sub_signed(timeout) else {
            return Ok(());
        };
        for held in tx.held_before(before, 100).await? {
            tx.release_held(held.id).await?;
            let reason = format!(
                "held since {} waiting for {} {}, which never arrived; take the incoming version once the reference exists, or keep the master's",
                format_ts(held.held_at),
                held.waiting_type,
                held.waiting_for
            );
            let current = tx.get_entity(&held.entity_type, held.uuid).await?;
            let audit_id = Uuid::now_v7();
            tx.add_audit(&AuditRecord {
                id: audit_id,
                at: now,
                entity_type: held.entity_type.clone(),
                entity_uuid: held.uuid,
                node_id: held.source_node,
                packet_no: held.packet_no,
                strategy: "integrity".into(),
                outcome: Outcome::ConflictDeferred.as_str().to_string(),
                master_rev: current.as_ref().and_then(|m| m.rev),
                base_rev: held.change.get("base_rev").and_then(Value::as_i64),
                result_rev: current.as_ref().and_then(|m| m.rev),
                detail: reason.clone(),
            })
            .await?;
            let mut snapshot = held.change.clone();
            if let Some(obj) = snapshot.as_object_mut() {
                obj.remove("rev");
                obj.remove("origin_node_id");
            }
            tx.add_history(&HistoryRecord {
                id: Uuid::now_v7(),
                entity_uuid: held.uuid,
                entity_type: held.entity_type.clone(),
                source_node_id: Some(held.source_node),
                arrival_time: held.held_at,
                serialized_data: snapshot,
                conflict_resolution: format!("integrity: deferred ({reason})"),
                audit_id: Some(audit_id),
            })
            .await?;
            tracing::warn!(entity_type = %held.entity_type, uuid = %held.uuid, %reason, "held change handed to the manual queue");
        }
        Ok(())
    }

    /// Applies one change whose references are all known: a conflict
    /// decision when the master's version moved since the change's base,
    /// the delete policies for a delete, the hierarchy check for a move.
    async fn apply_change(
        &self,
        tx: &mut dyn StoreTx,
        node: &NodeRecord,
        packet_no: i64,
        c: WireChange,
        found: FoundReferences<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ChangeResult, ExchangeError> {
        let current = tx.get_entity(&c.entity_type, c.uuid).await?;
        if let Some(m) = &current
            && (c.base_rev == m.rev || m.same_content(&c.data, c.is_deleted))
        {
            if let Some(reason) = self.integrity_refusal(tx, &c, m).await? {
                return self
                    .reject_change(tx, node, packet_no, &c, m.clone(), reason, now)
                    .await;
            }
            if c.is_deleted && !m.is_deleted {
                let plan = self
                    .plan_delete(tx, &c.entity_type, c.uuid)
                    .await
                    .map_err(engine_to_exchange)?;
                self.carry_out(tx, &plan)
                    .await
                    .map_err(engine_to_exchange)?;
            }
        }
        let result = match current {
            Some(m) if c.base_rev != m.rev && !m.same_content(&c.data, c.is_deleted) => {
                self.resolve_conflict(tx, node, packet_no, &c, m, now)
                    .await?
            }
            // No conflict: the base is current, the entity is new, or
            // the same content arrived by two paths. Applied as usual,
            // so the sender's copy (its updated_at included) becomes
            // the master's and reaches every other node.
            _ => {
                let (entity_type, uuid, updated_at, op) =
                    (c.entity_type.clone(), c.uuid, c.updated_at, c.operation);
                let rev = self.store_incoming(tx, node.id, c, op, found).await?;
                ChangeResult {
                    entity_type,
                    uuid,
                    outcome: Outcome::Applied,
                    rev,
                    updated_at: Some(updated_at),
                    sent_updated_at: None,
                }
            }
        };
        Ok(result)
    }

    /// Why applying `c` over the master's `m` would break integrity: a
    /// delete that a `restrict` reference forbids, or a move that makes the
    /// hierarchy cyclic.
    async fn integrity_refusal(
        &self,
        tx: &mut dyn StoreTx,
        c: &WireChange,
        m: &Entity,
    ) -> Result<Option<String>, ExchangeError> {
        if c.is_deleted {
            if m.is_deleted {
                return Ok(None);
            }
            let plan = self
                .plan_delete(tx, &c.entity_type, c.uuid)
                .await
                .map_err(engine_to_exchange)?;
            if let Some(r) = plan.blocked.first() {
                return Ok(Some(format!(
                    "the delete is refused: {} {} still refers to it at {} (policy restrict), and {} other reference(s)",
                    r.source_type,
                    r.source_uuid,
                    r.pointer,
                    plan.blocked.len() - 1
                )));
            }
            return Ok(None);
        }
        if let Some(cycle) = self
            .move_cycle(tx, &c.entity_type, c.uuid, &c.data)
            .await
            .map_err(engine_to_exchange)?
        {
            return Ok(Some(format!(
                "the move is refused: it would make the hierarchy cyclic ({cycle})"
            )));
        }
        Ok(None)
    }

    /// Refuses a change that would break integrity: the master's version
    /// stands and is addressed to the sender; the refused version is kept in
    /// history and the decision in the audit log.
    #[allow(clippy::too_many_arguments)]
    async fn reject_change(
        &self,
        tx: &mut dyn StoreTx,
        node: &NodeRecord,
        packet_no: i64,
        c: &WireChange,
        master: Entity,
        reason: String,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ChangeResult, ExchangeError> {
        tx.append_revision(
            Some(node.id),
            &c.entity_type,
            c.uuid,
            Operation::Update,
            master.origin,
        )
        .await?;
        let audit_id = Uuid::now_v7();
        tx.add_audit(&AuditRecord {
            id: audit_id,
            at: now,
            entity_type: c.entity_type.clone(),
            entity_uuid: c.uuid,
            node_id: node.id,
            packet_no,
            strategy: "integrity".into(),
            outcome: Outcome::Rejected.as_str().to_string(),
            master_rev: master.rev,
            base_rev: c.base_rev,
            result_rev: master.rev,
            detail: reason.clone(),
        })
        .await?;
        if self.options.versioning {
            tx.add_history(&HistoryRecord {
                id: Uuid::now_v7(),
                entity_uuid: c.uuid,
                entity_type: c.entity_type.clone(),
                source_node_id: Some(node.id),
                arrival_time: now,
                serialized_data: incoming_snapshot(c),
                conflict_resolution: format!("integrity: rejected ({reason})"),
                audit_id: Some(audit_id),
            })
            .await?;
        }
        tracing::info!(entity_type = %c.entity_type, uuid = %c.uuid, node = %node.code, %reason, "change rejected");
        Ok(ChangeResult {
            entity_type: c.entity_type.clone(),
            uuid: c.uuid,
            outcome: Outcome::Rejected,
            rev: master.rev.unwrap_or(0),
            updated_at: None,
            sent_updated_at: None,
        })
    }

    /// Stores a new master version of an entity, and keeps it as a past
    /// version when the type's resolver merges against bases.
    async fn put_master_version(
        &self,
        tx: &mut dyn StoreTx,
        entity: Entity,
        found: FoundReferences<'_>,
    ) -> Result<(), ExchangeError> {
        if self.policy.keeps_versions(&entity.entity_type) {
            tx.put_version(&entity).await?;
        }
        self.put_indexed_found(tx, entity, found)
            .await
            .map_err(engine_to_exchange)
    }

    /// Stores the incoming version as the master's new one.
    async fn store_incoming(
        &self,
        tx: &mut dyn StoreTx,
        origin: Uuid,
        c: WireChange,
        op: Operation,
        found: FoundReferences<'_>,
    ) -> Result<i64, ExchangeError> {
        let rev = tx
            .append_revision(None, &c.entity_type, c.uuid, op, Some(origin))
            .await?;
        let entity = Entity {
            entity_type: c.entity_type,
            uuid: c.uuid,
            updated_at: c.updated_at,
            is_deleted: c.is_deleted,
            data: c.data,
            rev: Some(rev),
            origin: Some(origin),
        };
        self.put_master_version(tx, entity, found).await?;
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
                    .store_incoming(
                        tx,
                        node.id,
                        c.clone(),
                        Operation::Update,
                        self.change_references(c),
                    )
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
                let found =
                    self.found_references(&merged.entity_type, &merged.data, merged.is_deleted);
                self.put_master_version(tx, merged, found).await?;
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
            sent_updated_at: None,
        })
    }
}

/// Whether any change is held (waiting for a reference) in the store.
pub(super) async fn held_exists(tx: &mut dyn StoreTx) -> Result<bool, StoreError> {
    // A far but four-digit year: the SQLite backend compares timestamps
    // as text.
    let end = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_else(now_utc);
    Ok(!tx.held_before(end, 1).await?.is_empty())
}

/// An engine error met while applying a packet: storage errors stay
/// storage errors, the rest refuse the packet as invalid.
fn engine_to_exchange(e: EngineError) -> ExchangeError {
    match e {
        EngineError::Store(s) => ExchangeError::Store(s),
        other => ExchangeError::Invalid {
            issues: vec![Issue {
                path: String::new(),
                message: other.to_string(),
            }],
        },
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

/// The wire form of the master's current state of an entity.
fn master_wire(e: Entity, operation: Operation) -> WireChange {
    WireChange {
        entity_type: e.entity_type,
        uuid: e.uuid,
        operation,
        data: e.data,
        updated_at: e.updated_at,
        is_deleted: e.is_deleted,
        base_rev: None,
        rev: e.rev,
        origin_node_id: e.origin,
    }
}

/// An engine error met while building a packet, as an exchange error.
fn routing_error(e: EngineError) -> ExchangeError {
    match e {
        EngineError::Store(s) => ExchangeError::Store(s),
        other => ExchangeError::Store(StoreError::corrupt(format!(
            "{other}; set the node's scope again with `hubsync node scope`"
        ))),
    }
}
