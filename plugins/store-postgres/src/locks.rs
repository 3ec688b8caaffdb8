//! The advisory locks that make several hosts on one database correct.
//!
//! Advisory lock keys are per database, in the two-`int4` key space (which
//! does not overlap the single-`bigint` one other software may use), with
//! a class word spelling "hubs".
//!
//! * [`MIGRATION_LOCK`]: held by the one transaction that migrates the
//!   schema at open (see migrations.rs).
//! * [`WRITE_LOCK`]: the **write lock**. A transaction takes it (once, until
//!   it commits or rolls back) before it reads an entity to decide a write,
//!   writes an entity, queues a change or allocates a revision. Two
//!   consequences, both required by the `Store` contract:
//!   1. Revisions become visible in revision order. The identity sequence
//!      hands out numbers at INSERT time, but a transaction that got
//!      revision 9 may commit after one that got 10; a reader whose cursor
//!      passed 10 would then never see 9. Under the lock, allocation and
//!      commit happen in one serialized section, so the committed revisions
//!      are always a prefix of the allocated ones.
//!   2. A conflict decision (master) or a coalescing decision (client) is
//!      taken on the entity's latest committed version: without the lock two
//!      exchanges on two hosts could both read revision 5, both find "no
//!      conflict", and the second would silently overwrite the first.
//!
//! Lock order: a transaction locks its node row (`get_node`, `SELECT … FOR
//! UPDATE`) before it takes the write lock, never after, so the two cannot
//! deadlock. Exchanges that only poll or acknowledge never take the write
//! lock and run in parallel on every host.

/// "hubs": the class word of hubsync's advisory locks.
const CLASS: i32 = 0x6875_6273;

/// Held while the schema is migrated.
pub(crate) const MIGRATION_LOCK: (i32, i32) = (CLASS, 1);

/// Serializes entity-writing transactions (see the module docs).
pub(crate) const WRITE_LOCK: (i32, i32) = (CLASS, 2);
