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
//!   [`StoreTx::set_references_many`]).
//!
//! Correctness rests on two facts. Within one transaction nobody else
//! writes the rows this one has read (SQLite has a single writer; the
//! PostgreSQL backend takes its write lock on the first entity read, which
//! reaches the store because the cache starts empty). And every write of
//! `entities` or `entity_refs` inside the transaction goes through this
//! wrapper, which answers reads of what it buffered from memory and writes
//! its buffers before any call that reads those tables in SQL
//! ([`StoreTx::revisions_after`], [`StoreTx::referrers`], …).
//!
//! The buffers must be written before the transaction commits: call
//! [`CachedTx::finish`] at the end of the wrapped work. A wrapper dropped
//! without it (an error path) loses its buffered writes, which is right
//! only because the transaction is then rolled back.
//!
//! Maintenance: a method added to [`StoreTx`] must be delegated here. If it
//! reads or writes `entities` or `entity_refs` in SQL, call
//! [`CachedTx::flush`] first (and, for a write, forget the cached rows).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::entity::{Entity, Operation};
use crate::store::{
    AuditRecord, EntityRef, HeldChange, HistoryRecord, Holding, NodeRecord, QueuedChange, Revision,
    ScopeRecord, StoreError, StoreResult, StoreTx,
};

type Key = (String, Uuid);

/// Buffered rows written at once when this many are waiting.
const FLUSH_AT: usize = 1_000;
/// Cached entities kept at most (bounded memory); beyond it the cache
/// starts over.
const CACHE_MAX: usize = 20_000;

pub(crate) struct CachedTx<'a> {
    inner: &'a mut dyn StoreTx,
    /// What the store holds (or will once the buffers are written); `None`
    /// for an entity known to be absent.
    cache: HashMap<Key, Option<Entity>>,
    puts: Vec<Entity>,
    put_at: HashMap<Key, usize>,
    refs: Vec<(Key, Vec<EntityRef>)>,
    refs_at: HashMap<Key, usize>,
}

impl<'a> CachedTx<'a> {
    pub(crate) fn new(inner: &'a mut dyn StoreTx) -> Self {
        CachedTx {
            inner,
            cache: HashMap::new(),
            puts: Vec::new(),
            put_at: HashMap::new(),
            refs: Vec::new(),
            refs_at: HashMap::new(),
        }
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
        if !self.puts.is_empty() {
            self.inner.put_entities(&self.puts).await?;
            self.puts.clear();
            self.put_at.clear();
        }
        if !self.refs.is_empty() {
            self.inner.set_references_many(&self.refs).await?;
            self.refs.clear();
            self.refs_at.clear();
        }
        Ok(())
    }

    /// Writes the buffered rows; the transaction may then be committed.
    pub(crate) async fn finish(mut self) -> StoreResult<()> {
        self.flush().await
    }

    async fn forget_cached(&mut self) -> StoreResult<()> {
        self.flush().await?;
        self.cache.clear();
        Ok(())
    }

    fn remember(&mut self, e: &Entity) {
        self.cache
            .insert((e.entity_type.clone(), e.uuid), Some(e.clone()));
    }

    async fn buffered(&mut self) -> StoreResult<()> {
        if self.puts.len() >= FLUSH_AT || self.refs.len() >= FLUSH_AT {
            self.flush().await?;
        }
        if self.cache.len() > CACHE_MAX {
            self.forget_cached().await?;
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
        let key = (entity.entity_type.clone(), entity.uuid);
        match self.put_at.get(&key) {
            Some(&i) => self.puts[i] = entity.clone(),
            None => {
                self.put_at.insert(key, self.puts.len());
                self.puts.push(entity.clone());
            }
        }
        self.remember(entity);
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
        self.inner.queue_change(node, entity_type, uuid, op).await
    }
    async fn has_queued(&mut self, node: Uuid, entity_type: &str, uuid: Uuid) -> StoreResult<bool> {
        self.inner.has_queued(node, entity_type, uuid).await
    }
    async fn unsent_changes(&mut self, node: Uuid, limit: u32) -> StoreResult<Vec<QueuedChange>> {
        self.inner.unsent_changes(node, limit).await
    }
    async fn unsent_change_for(
        &mut self,
        node: Uuid,
        entity_type: &str,
        uuid: Uuid,
    ) -> StoreResult<Option<QueuedChange>> {
        self.inner.unsent_change_for(node, entity_type, uuid).await
    }
    async fn changes_in_packet(
        &mut self,
        node: Uuid,
        packet_no: i64,
    ) -> StoreResult<Vec<QueuedChange>> {
        self.inner.changes_in_packet(node, packet_no).await
    }
    async fn assign_packet(&mut self, node: Uuid, ids: &[i64], packet_no: i64) -> StoreResult<()> {
        self.inner.assign_packet(node, ids, packet_no).await
    }
    async fn delete_acknowledged(&mut self, node: Uuid, packet_no: i64) -> StoreResult<u64> {
        self.inner.delete_acknowledged(node, packet_no).await
    }

    async fn append_revision(
        &mut self,
        target: Option<Uuid>,
        entity_type: &str,
        uuid: Uuid,
        op: Operation,
        origin: Option<Uuid>,
    ) -> StoreResult<i64> {
        self.inner
            .append_revision(target, entity_type, uuid, op, origin)
            .await
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

    async fn set_references(
        &mut self,
        entity_type: &str,
        uuid: Uuid,
        refs: &[EntityRef],
    ) -> StoreResult<()> {
        let key = (entity_type.to_string(), uuid);
        match self.refs_at.get(&key) {
            Some(&i) => self.refs[i].1 = refs.to_vec(),
            None => {
                self.refs_at.insert(key.clone(), self.refs.len());
                self.refs.push((key, refs.to_vec()));
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
        self.cache.insert((entity_type.to_string(), uuid), None);
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
    async fn put_entities(&mut self, entities: &[Entity]) -> StoreResult<()> {
        for e in entities {
            self.put_entity(e).await?;
        }
        Ok(())
    }
    async fn set_references_many(
        &mut self,
        items: &[((String, Uuid), Vec<EntityRef>)],
    ) -> StoreResult<()> {
        for ((t, u), refs) in items {
            self.set_references(t, *u, refs).await?;
        }
        Ok(())
    }
}
