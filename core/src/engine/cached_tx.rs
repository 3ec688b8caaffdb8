//! [`CachedTx`]: a store transaction with an entity cache and batched
//! entity writes, for the paths that apply many changes in one transaction
//! (a received packet on the master and on a client, a local batch).
//!
//! Profiles of those paths showed the time going to statements, not to the
//! database: with SQLite each statement is a round trip to the connection's
//! worker thread, and a DailyReport took about sixteen of them on the
//! master (five reads to check its references, one to read its current
//! version, one to look for held changes, the revision, the entity, and a
//! DELETE and five INSERTs for its references index). Here:
//!
//! - entities are read in batches ([`CachedTx::prefetch`], one statement
//!   for a whole packet and everything it references) and kept, so that
//!   the reference checks and the conflict check of each change read
//!   memory;
//! - entity rows and reference rows are buffered and written with one
//!   multi-row statement per table ([`StoreTx::put_entities`],
//!   [`StoreTx::set_references_many`]);
//! - revisions (the master's change log) are numbered from a block reserved
//!   at once ([`StoreTx::reserve_revisions`]) and written in batches
//!   ([`StoreTx::append_revisions`]), so a received packet costs no
//!   statement per change for its revisions;
//! - the change queue of the entities at hand is read at once
//!   ([`CachedTx::prefetch_queue`], [`StoreTx::queued_rows`]); queue
//!   registrations of those entities are coalesced in memory, exactly as
//!   [`StoreTx::queue_change`] would one by one, and written in batches
//!   ([`StoreTx::write_queue`]).
//!
//! Correctness rests on two facts. Within one transaction nobody else
//! writes the rows this one has read (SQLite has a single writer; the
//! PostgreSQL backend takes its write lock on the first entity read, which
//! reaches the store because the cache starts empty). And every write of
//! `entities`, `entity_refs` or `sync_changes` inside the transaction goes
//! through this wrapper, which answers reads of what it buffered from
//! memory and writes its buffers before any call that reads those tables in
//! SQL ([`StoreTx::revisions_after`], [`StoreTx::referrers`],
//! [`StoreTx::unsent_changes`], …).
//!
//! The buffers must be written before the transaction commits: call
//! [`CachedTx::finish`] at the end of the wrapped work. A wrapper dropped
//! without it (an error path) loses its buffered writes, which is right
//! only because the transaction is then rolled back.
//!
//! Maintenance: a method added to [`StoreTx`] must be delegated here. If it
//! reads or writes `entities`, `entity_refs` or `sync_changes` in SQL, call
//! [`CachedTx::flush`] first (and, for a write, forget or update the cached
//! rows).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::entity::{Entity, Operation};
use crate::store::{
    AuditRecord, EntityRef, EntityStamp, HeldChange, HistoryRecord, Holding, NewRevision,
    NodeRecord, QueuedChange, Revision, ScopeFilter, ScopeRecord, ScopedPage, StoreError,
    StoreResult, StoreTx,
};

type Key = (String, Uuid);

/// Buffered rows written at once when this many are waiting.
const FLUSH_AT: usize = 1_000;
/// Cached entities kept at most (bounded memory); beyond it the cache
/// starts over.
const CACHE_MAX: usize = 20_000;
/// Revision numbers reserved at once beyond what the work at hand said it
/// needs (the block doubles while more are asked for). Unused ones are
/// gaps in the log: the expected count is reserved exactly, so that the
/// usual packet (one revision per change) leaves none.
const REVS_AT_ONCE: usize = 16;

/// New queue rows (entity, operation) and new operations of existing rows
/// (by id), for one node.
type QueueWrites = (Vec<(String, Uuid, Operation)>, Vec<(i64, Operation)>);

/// The queue rows of one entity for one node, as the store holds them, and
/// the operation its unsent row is to get (buffered).
#[derive(Default)]
struct QueueSlot {
    rows: Vec<QueuedChange>,
    pending: Option<Operation>,
}

impl QueueSlot {
    fn unsent(&self) -> Option<&QueuedChange> {
        self.rows.iter().find(|r| r.packet_no.is_none())
    }
}

pub(crate) struct CachedTx<'a> {
    inner: &'a mut dyn StoreTx,
    /// What the store holds (or will once the buffers are written); `None`
    /// for an entity known to be absent.
    cache: HashMap<Key, Option<Entity>>,
    /// Entities written and not flushed yet, in order (their latest
    /// version is the cached one).
    puts: Vec<Key>,
    put_at: std::collections::HashSet<Key>,
    refs: Vec<(Key, Vec<EntityRef>)>,
    refs_at: HashMap<Key, usize>,
    /// Revisions appended, not written yet.
    revs: Vec<NewRevision>,
    /// Reserved revision numbers not used yet, and how many to reserve next.
    rev_pool: VecDeque<i64>,
    rev_block: usize,
    rev_expected: Option<usize>,
    /// Queue rows of the prefetched entities, per (node, entity).
    queue: HashMap<(Uuid, Key), QueueSlot>,
    /// Slots with a buffered operation.
    queue_dirty: Vec<(Uuid, Key)>,
    /// The revision numbers reserved here and what was appended with them.
    log: LogAppends,
}

/// What a finished [`CachedTx`] had cached (written already): dropping it
/// frees the entities.
pub(crate) struct Leftovers {
    _cache: HashMap<Key, Option<Entity>>,
    _queue: HashMap<(Uuid, Key), QueueSlot>,
}

/// The revision numbers a [`CachedTx`] reserved, and whose rows it
/// appended with them, for [`CachedTx::own_appends`].
#[derive(Default)]
struct LogAppends {
    /// The first and last number reserved (blocks follow each other).
    reserved: Option<(i64, i64)>,
    /// The origin of every appended row (None: no row appended yet).
    origin: Option<Option<Uuid>>,
    /// Set for good once a block left a gap after the one before, numbers
    /// were reserved or revisions appended past the wrapper (it cannot say
    /// whose they are), a row was addressed to one node, or two rows
    /// differed in origin.
    broken: bool,
}

impl LogAppends {
    fn note_reserved(&mut self, block: &[i64]) {
        let (Some(&first), Some(&last)) = (block.first(), block.last()) else {
            return;
        };
        if block.windows(2).any(|w| w[1] != w[0] + 1) {
            self.broken = true;
        }
        self.reserved = match self.reserved {
            None => Some((first, last)),
            Some((start, end)) => {
                if first != end + 1 {
                    self.broken = true;
                }
                Some((start, last))
            }
        };
    }

    fn own(&self, origin: Uuid) -> Option<OwnAppends> {
        let (first, last) = self.reserved?;
        (!self.broken && self.origin == Some(Some(origin))).then_some(OwnAppends {
            after: first - 1,
            through: last,
        })
    }

    fn note_appended(&mut self, target: Option<Uuid>, origin: Option<Uuid>) {
        if target.is_some() || self.origin.is_some_and(|o| o != origin) {
            self.broken = true;
        }
        self.origin = Some(origin);
    }
}

/// Every revision number in `(after, through]` was reserved by one
/// [`CachedTx`], and every row it appended with them is a revision for
/// every node (unaddressed) whose origin is the node asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnAppends {
    pub(crate) after: i64,
    pub(crate) through: i64,
}

impl<'a> CachedTx<'a> {
    pub(crate) fn new(inner: &'a mut dyn StoreTx) -> Self {
        CachedTx {
            inner,
            cache: HashMap::new(),
            puts: Vec::new(),
            put_at: std::collections::HashSet::new(),
            refs: Vec::new(),
            refs_at: HashMap::new(),
            revs: Vec::new(),
            rev_pool: VecDeque::new(),
            rev_block: REVS_AT_ONCE,
            rev_expected: None,
            queue: HashMap::new(),
            queue_dirty: Vec::new(),
            log: LogAppends::default(),
        }
    }

    /// Whether everything this wrapper put into the change log is `origin`'s
    /// own, unaddressed, under numbers it reserved in one unbroken range:
    /// then a log row above that range's start and up to its end can only
    /// be one of those (the write lock keeps everyone else out of the
    /// range). None when nothing was appended, or anything else was.
    pub(crate) fn own_appends(&self, origin: Uuid) -> Option<OwnAppends> {
        self.log.own(origin)
    }

    /// Says that about `n` revisions are coming (a packet's changes), so
    /// that their numbers are reserved in one go.
    pub(crate) fn expect_revisions(&mut self, n: usize) {
        self.rev_expected = Some(n.clamp(1, 10 * FLUSH_AT));
    }

    /// Reads the queue rows of `node` for the entities of `keys` that are
    /// not cached yet, in one batch; queue registrations and queue reads of
    /// those entities are then answered from memory.
    pub(crate) async fn prefetch_queue(&mut self, node: Uuid, keys: Vec<Key>) -> StoreResult<()> {
        let mut missing: Vec<Key> = keys
            .into_iter()
            .filter(|k| !self.queue.contains_key(&(node, k.clone())))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        if self.queue.len() + missing.len() > CACHE_MAX {
            self.flush_queue().await?;
            self.queue.clear();
        }
        for chunk in missing.chunks(FLUSH_AT) {
            let rows = self.inner.queued_rows(node, chunk).await?;
            for k in chunk {
                self.queue.entry((node, k.clone())).or_default();
            }
            for r in rows {
                let key = (node, (r.entity_type.clone(), r.entity_uuid));
                self.queue.entry(key).or_default().rows.push(r);
            }
        }
        Ok(())
    }

    /// Writes the buffered queue registrations. Their slots are forgotten
    /// (a new row's id is known only to the store).
    async fn flush_queue(&mut self) -> StoreResult<()> {
        if self.queue_dirty.is_empty() {
            return Ok(());
        }
        let mut per_node: HashMap<Uuid, QueueWrites> = HashMap::new();
        for key in std::mem::take(&mut self.queue_dirty) {
            let Some(slot) = self.queue.remove(&key) else {
                continue;
            };
            let Some(op) = slot.pending else { continue };
            let (node, (entity_type, uuid)) = key;
            let (inserts, updates) = per_node.entry(node).or_default();
            match slot.unsent() {
                Some(row) if row.operation != op => updates.push((row.id, op)),
                Some(_) => {}
                None => inserts.push((entity_type, uuid, op)),
            }
        }
        for (node, (inserts, updates)) in per_node {
            self.inner.write_queue(node, &inserts, &updates).await?;
        }
        Ok(())
    }

    /// Writes the buffered revisions.
    async fn flush_revisions(&mut self) -> StoreResult<()> {
        if !self.revs.is_empty() {
            self.inner.append_revisions(&self.revs).await?;
            self.revs.clear();
        }
        Ok(())
    }

    async fn next_rev(&mut self) -> StoreResult<i64> {
        if self.rev_pool.is_empty() {
            let n = match self.rev_expected.take() {
                Some(n) => n,
                None => {
                    let n = self.rev_block;
                    self.rev_block = (n * 2).min(10 * FLUSH_AT);
                    n
                }
            };
            let block = self.inner.reserve_revisions(n).await?;
            self.log.note_reserved(&block);
            self.rev_pool.extend(block);
        }
        self.rev_pool
            .pop_front()
            .ok_or_else(|| StoreError::corrupt("the store reserved no revision numbers"))
    }

    /// Reads the entities of `keys` that are not cached yet, in one batch.
    pub(crate) async fn prefetch(&mut self, keys: Vec<Key>) -> StoreResult<()> {
        let mut missing: Vec<Key> = keys
            .into_iter()
            .filter(|k| !self.cache.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        if self.cache.len() + missing.len() > CACHE_MAX {
            self.forget_cached().await?;
        }
        for chunk in missing.chunks(FLUSH_AT) {
            for e in self.inner.get_entities(chunk).await? {
                self.cache.insert((e.entity_type.clone(), e.uuid), Some(e));
            }
            for k in chunk {
                self.cache.entry(k.clone()).or_insert(None);
            }
        }
        Ok(())
    }

    /// Writes the buffered rows.
    pub(crate) async fn flush(&mut self) -> StoreResult<()> {
        self.flush_queue().await?;
        if self.revs.is_empty() && self.puts.is_empty() && self.refs.is_empty() {
            return Ok(());
        }
        // Written from the cache, which holds the latest version of every
        // buffered entity (it is only cleared after a flush).
        let rows: Vec<&Entity> = self
            .puts
            .iter()
            .filter_map(|k| self.cache.get(k).and_then(Option::as_ref))
            .collect();
        if rows.len() != self.puts.len() {
            return Err(StoreError::corrupt(
                "an entity to write is no longer in the transaction's cache (engine bug)",
            ));
        }
        // One call, so that the store can overlap the three batches.
        self.inner.write_rows(&self.revs, &rows, &self.refs).await?;
        self.revs.clear();
        self.puts.clear();
        self.put_at.clear();
        self.refs.clear();
        self.refs_at.clear();
        Ok(())
    }

    /// Writes the buffered rows; the transaction may then be committed.
    /// Returns what the wrapper cached, for the caller to free while the
    /// commit runs (a packet's 500 entities take ~0.5 ms to free).
    pub(crate) async fn finish(mut self) -> StoreResult<Leftovers> {
        self.flush().await?;
        Ok(Leftovers {
            _cache: std::mem::take(&mut self.cache),
            _queue: std::mem::take(&mut self.queue),
        })
    }

    async fn forget_cached(&mut self) -> StoreResult<()> {
        self.flush().await?;
        self.cache.clear();
        Ok(())
    }

    async fn buffered(&mut self) -> StoreResult<()> {
        if self.puts.len() >= FLUSH_AT
            || self.refs.len() >= FLUSH_AT
            || self.revs.len() >= FLUSH_AT
            || self.queue_dirty.len() >= FLUSH_AT
        {
            self.flush().await?;
        }
        if self.cache.len() > CACHE_MAX {
            self.forget_cached().await?;
        }
        if self.queue.len() > CACHE_MAX {
            self.flush_queue().await?;
            self.queue.clear();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl StoreTx for CachedTx<'_> {
    async fn get_meta(&mut self, key: &str) -> StoreResult<Option<String>> {
        self.inner.get_meta(key).await
    }
    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.inner.set_meta(key, value).await
    }

    async fn get_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<Option<Entity>> {
        let key = (entity_type.to_string(), uuid);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        if self.cache.len() >= CACHE_MAX {
            self.forget_cached().await?;
        }
        let found = self.inner.get_entity(entity_type, uuid).await?;
        self.cache.insert(key, found.clone());
        Ok(found)
    }

    async fn put_entity(&mut self, entity: &Entity) -> StoreResult<()> {
        self.put_entity_owned(entity.clone()).await
    }

    async fn put_entity_owned(&mut self, entity: Entity) -> StoreResult<()> {
        let key = (entity.entity_type.clone(), entity.uuid);
        if self.put_at.insert(key.clone()) {
            self.puts.push(key.clone());
        }
        // Kept only here: the flush writes it from the cache.
        self.cache.insert(key, Some(entity));
        self.buffered().await
    }

    async fn put_version(&mut self, entity: &Entity) -> StoreResult<()> {
        self.inner.put_version(entity).await
    }
    async fn get_version(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        rev: i64,
    ) -> StoreResult<Option<Entity>> {
        self.inner.get_version(entity_type, uuid, rev).await
    }

    async fn queue_change(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
    ) -> StoreResult<()> {
        let key = (node, (entity_type.to_string(), uuid));
        let Some(slot) = self.queue.get_mut(&key) else {
            // Not prefetched: nothing of it is buffered.
            return self.inner.queue_change(node, entity_type, uuid, op).await;
        };
        let current = slot.pending.or(slot.unsent().map(|r| r.operation));
        let next = match current {
            Some(queued) => Operation::coalesce(queued, op),
            None => op,
        };
        if current != Some(next) {
            if slot.pending.is_none() {
                self.queue_dirty.push(key);
            }
            slot.pending = Some(next);
        }
        self.buffered().await
    }
    async fn has_queued(&mut self, node: Uuid, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        match self.queue.get(&(node, (entity_type.to_string(), uuid))) {
            Some(slot) => Ok(!slot.rows.is_empty() || slot.pending.is_some()),
            None => self.inner.has_queued(node, entity_type, uuid).await,
        }
    }
    async fn unsent_changes(&mut self, node: Uuid, limit: u32) -> StoreResult<Vec<QueuedChange>> {
        self.flush_queue().await?;
        self.inner.unsent_changes(node, limit).await
    }
    async fn unsent_change_for(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<QueuedChange>> {
        let key = (node, (entity_type.to_string(), uuid));
        if let Some(slot) = self.queue.get(&key) {
            if slot.pending.is_none() {
                return Ok(slot.unsent().cloned());
            }
            // Its row may not exist yet: written, then read back.
            self.flush_queue().await?;
        }
        self.inner.unsent_change_for(node, entity_type, uuid).await
    }
    async fn changes_in_packet(
        &mut self,
        node: Uuid,
        packet_no: i64,
    ) -> StoreResult<Vec<QueuedChange>> {
        self.flush_queue().await?;
        self.inner.changes_in_packet(node, packet_no).await
    }
    async fn assign_packet(&mut self, node: Uuid, ids: &[i64], packet_no: i64) -> StoreResult<()> {
        self.flush_queue().await?;
        self.inner.assign_packet(node, ids, packet_no).await?;
        let ids: std::collections::HashSet<i64> = ids.iter().copied().collect();
        for ((n, _), slot) in self.queue.iter_mut() {
            if *n == node {
                for r in slot.rows.iter_mut().filter(|r| ids.contains(&r.id)) {
                    r.packet_no = Some(packet_no);
                }
            }
        }
        Ok(())
    }
    async fn delete_acknowledged(&mut self, node: Uuid, packet_no: i64) -> StoreResult<u64> {
        self.flush_queue().await?;
        let gone = self.inner.delete_acknowledged(node, packet_no).await?;
        for ((n, _), slot) in self.queue.iter_mut() {
            if *n == node {
                slot.rows
                    .retain(|r| r.packet_no.is_none_or(|p| p > packet_no));
            }
        }
        Ok(gone)
    }

    async fn append_revision(
        &mut self,
        target: Option<Uuid>,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
        origin: Option<Uuid>,
    ) -> StoreResult<i64> {
        let rev = self.next_rev().await?;
        self.log.note_appended(target, origin);
        self.revs.push(NewRevision {
            rev,
            target,
            entity_type: entity_type.to_string(),
            entity_uuid: uuid,
            operation: op,
            origin,
        });
        self.buffered().await?;
        Ok(rev)
    }
    async fn revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        self.flush().await?;
        self.inner.revisions_after(node, after_rev, limit).await
    }
    async fn revisions_after_skipping_own(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        own_above: i64,
    ) -> StoreResult<Vec<(Revision, Entity)>> {
        self.flush().await?;
        self.inner
            .revisions_after_skipping_own(node, after_rev, limit, own_above)
            .await
    }

    async fn scoped_revisions_after(
        &mut self,
        node: Uuid,
        after_rev: i64,
        limit: u32,
        window: u32,
        filter: &ScopeFilter,
    ) -> StoreResult<ScopedPage> {
        self.flush().await?;
        self.inner
            .scoped_revisions_after(node, after_rev, limit, window, filter)
            .await
    }

    async fn set_references(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: &[EntityRef],
    ) -> StoreResult<()> {
        self.set_references_owned(entity_type, uuid, refs.to_vec())
            .await
    }

    async fn set_references_owned(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: Vec<EntityRef>,
    ) -> StoreResult<()> {
        let key = (entity_type.to_string(), uuid);
        match self.refs_at.get(&key) {
            Some(&i) => self.refs[i].1 = refs,
            None => {
                self.refs_at.insert(key.clone(), self.refs.len());
                self.refs.push((key, refs));
            }
        }
        self.buffered().await
    }
    async fn referrers(&mut self, target_type: &str, target: Uuid) -> StoreResult<Vec<EntityRef>> {
        self.flush().await?;
        self.inner.referrers(target_type, target).await
    }
    async fn hold_change(&mut self, held: &HeldChange) -> StoreResult<()> {
        self.inner.hold_change(held).await
    }
    async fn held_waiting_for(&mut self, target: Uuid) -> StoreResult<Vec<HeldChange>> {
        self.inner.held_waiting_for(target).await
    }
    async fn held_before(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<HeldChange>> {
        self.inner.held_before(before, limit).await
    }
    async fn release_held(&mut self, id: i64) -> StoreResult<()> {
        self.inner.release_held(id).await
    }

    async fn get_node(&mut self, id: Uuid) -> StoreResult<Option<NodeRecord>> {
        self.inner.get_node(id).await
    }
    async fn put_node(&mut self, node: &NodeRecord) -> StoreResult<()> {
        self.inner.put_node(node).await
    }
    async fn add_history(&mut self, record: &HistoryRecord) -> StoreResult<()> {
        self.inner.add_history(record).await
    }
    async fn add_audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        self.inner.add_audit(record).await
    }

    async fn get_scope(&mut self, node: Uuid) -> StoreResult<ScopeRecord> {
        self.flush().await?;
        self.inner.get_scope(node).await
    }
    async fn put_scope(&mut self, node: Uuid, scope: &ScopeRecord) -> StoreResult<()> {
        self.flush().await?;
        self.inner.put_scope(node, scope).await
    }
    async fn holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<Holding>> {
        self.flush().await?;
        self.inner.holding(node, entity_type, uuid).await
    }
    async fn put_holding(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
        holding: Holding,
    ) -> StoreResult<()> {
        self.flush().await?;
        self.inner
            .put_holding(node, entity_type, uuid, holding)
            .await
    }
    async fn referenced_by_holding(
        &mut self,
        node: Uuid,
        target_type: &str,
        target: Uuid,
    ) -> StoreResult<bool> {
        self.flush().await?;
        self.inner
            .referenced_by_holding(node, target_type, target)
            .await
    }
    async fn holdings(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<((String, Uuid), Holding)>> {
        self.flush().await?;
        self.inner.holdings(node, keys).await
    }
    async fn referenced_by_holdings(
        &mut self,
        node: Uuid,
        targets: &[(String, Uuid)],
    ) -> StoreResult<Vec<(String, Uuid)>> {
        self.flush().await?;
        self.inner.referenced_by_holdings(node, targets).await
    }
    async fn log_head(&mut self) -> StoreResult<i64> {
        self.flush().await?;
        self.inner.log_head().await
    }
    async fn seed_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        self.flush().await?;
        self.inner.seed_holdings(node).await
    }
    async fn clear_holdings(&mut self, node: Uuid) -> StoreResult<u64> {
        self.flush().await?;
        self.inner.clear_holdings(node).await
    }
    async fn purge_entity(&mut self, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        self.flush().await?;
        let gone = self.inner.purge_entity(entity_type, uuid).await?;
        let key = (entity_type.to_string(), uuid);
        self.queue.retain(|(_, k), _| *k != key);
        self.cache.insert(key, None);
        Ok(gone)
    }

    /// Not committed through the wrapper: [`CachedTx::finish`] it and
    /// commit the transaction it wraps.
    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        self.flush().await?;
        Err(StoreError::corrupt(
            "a cached transaction cannot commit by itself (engine bug: finish it and commit the transaction it wraps)",
        ))
    }

    async fn get_entities(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<Entity>> {
        self.prefetch(keys.to_vec()).await?;
        Ok(keys
            .iter()
            .filter_map(|k| self.cache.get(k).cloned().flatten())
            .collect())
    }
    // entity_exists: the trait's default, through entity_is_deleted below.
    async fn entity_is_deleted(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<bool>> {
        match self.cache.get(&(entity_type.to_string(), uuid)) {
            Some(hit) => Ok(hit.as_ref().map(|e| e.is_deleted)),
            None => Ok(self
                .get_entity(entity_type, uuid)
                .await?
                .map(|e| e.is_deleted)),
        }
    }
    // put_entities and set_references_many: the trait's defaults, which
    // buffer through put_entity and set_references above.

    /// Cached entities are answered from memory (they include every
    /// buffered write); the others have nothing buffered and are read.
    async fn entity_stamps(&mut self, keys: &[(String, Uuid)]) -> StoreResult<Vec<EntityStamp>> {
        let mut found = Vec::with_capacity(keys.len());
        let mut unknown = Vec::new();
        for k in keys {
            match self.cache.get(k) {
                Some(Some(e)) => found.push(EntityStamp::of(e)),
                Some(None) => {}
                None => unknown.push(k.clone()),
            }
        }
        if !unknown.is_empty() {
            found.extend(self.inner.entity_stamps(&unknown).await?);
        }
        Ok(found)
    }
    async fn raise_revs(&mut self, items: &[(String, Uuid, i64)]) -> StoreResult<()> {
        self.flush().await?;
        self.inner.raise_revs(items).await?;
        for (t, u, rev) in items {
            if let Some(Some(e)) = self.cache.get_mut(&(t.clone(), *u))
                && e.rev.is_none_or(|r| r < *rev)
            {
                e.rev = Some(*rev);
            }
        }
        Ok(())
    }
    async fn reserve_revisions(&mut self, n: usize) -> StoreResult<Vec<i64>> {
        self.log.broken = true;
        self.inner.reserve_revisions(n).await
    }
    async fn append_revisions(&mut self, revisions: &[NewRevision]) -> StoreResult<()> {
        self.log.broken = true;
        self.flush_revisions().await?;
        self.inner.append_revisions(revisions).await
    }
    async fn queued_rows(
        &mut self,
        node: Uuid,
        keys: &[(String, Uuid)],
    ) -> StoreResult<Vec<QueuedChange>> {
        self.flush_queue().await?;
        self.inner.queued_rows(node, keys).await
    }
    async fn write_queue(
        &mut self,
        node: Uuid,
        inserts: &[(String, Uuid, Operation)],
        updates: &[(i64, Operation)],
    ) -> StoreResult<()> {
        self.flush_queue().await?;
        self.inner.write_queue(node, inserts, updates).await?;
        self.queue.retain(|(n, _), _| *n != node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{LogAppends, OwnAppends};
    use uuid::Uuid;

    /// A step of a transaction's log work.
    enum Step {
        /// A block of revision numbers reserved through the cache.
        Reserve(&'static [i64]),
        /// A row appended with the next number: (addressed to, origin).
        Append(Option<u128>, u128),
        /// Numbers reserved or rows appended past the cache.
        Past,
    }
    use Step::*;

    fn node(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// What the cache would say for `origin` after `steps`.
    fn own(steps: &[Step], origin: u128) -> Option<(i64, i64)> {
        let mut log = LogAppends::default();
        for step in steps {
            match step {
                Reserve(block) => log.note_reserved(block),
                Append(target, from) => log.note_appended(target.map(node), Some(node(*from))),
                Past => log.broken = true,
            }
        }
        log.own(node(origin))
            .map(|OwnAppends { after, through }| (after, through))
    }

    #[test]
    fn one_node_own_rows_in_unbroken_blocks_are_its_own() {
        let steps = [
            Reserve(&[11, 12, 13]),
            Append(None, 1),
            Append(None, 1),
            Reserve(&[14, 15]),
            Append(None, 1),
        ];
        assert_eq!(own(&steps, 1), Some((10, 15)));
        assert_eq!(own(&steps, 2), None, "another node's view");
    }

    #[test]
    fn nothing_appended_is_not_a_push() {
        assert_eq!(own(&[], 1), None);
        assert_eq!(own(&[Reserve(&[11, 12])], 1), None);
    }

    #[test]
    fn an_addressed_row_another_origin_or_a_gap_breaks_it_for_good() {
        let cases: [(&str, &[Step]); 5] = [
            (
                "a row addressed to the node, then its own again",
                &[
                    Reserve(&[11, 12]),
                    Append(None, 1),
                    Append(Some(1), 1),
                    Reserve(&[13]),
                    Append(None, 1),
                ],
            ),
            (
                "another origin (a merge)",
                &[Reserve(&[11, 12]), Append(None, 1), Append(None, 9)],
            ),
            (
                "a gap between blocks",
                &[
                    Reserve(&[11, 12]),
                    Append(None, 1),
                    Reserve(&[20]),
                    Append(None, 1),
                ],
            ),
            (
                "a gap inside a block",
                &[Reserve(&[11, 13]), Append(None, 1)],
            ),
            (
                "work past the cache",
                &[Reserve(&[11]), Append(None, 1), Past],
            ),
        ];
        for (what, steps) in cases {
            assert_eq!(own(steps, 1), None, "{what}");
            assert_eq!(own(steps, 9), None, "{what}, the other origin");
        }
    }
}
