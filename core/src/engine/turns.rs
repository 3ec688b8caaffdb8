//! A master takes each node's packets in number order.
//!
//! A client may have two requests in flight (docs/protocol.md, "Two
//! requests in flight"): packet `N+2` can reach the master while `N+1` is
//! still being applied, over another connection, or even before it. Applied
//! in that order it would be refused as out of sequence, so a request that
//! carries packet `p` waits, before its transaction, until the node's
//! packet `p - 1` has been received — its parse and checks already done,
//! which is the point: they overlap the packet before it.
//!
//! The wait is bounded ([`TURN_WAIT`]). What the master knows of a node's
//! last received packet lives in memory, filled from the store the first
//! time and re-read from it whenever a wait times out a step, so that a
//! packet another process committed (several masters on one PostgreSQL
//! database) is seen too. When the packet before fails here, the one that
//! waits for it goes on at once; either way the transaction decides, and
//! refuses what is out of sequence as it always did.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// How long a packet waits for the one before it.
pub(crate) const TURN_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting packet looks at the store again.
const RECHECK: Duration = Duration::from_millis(50);

/// Per node: the last packet received, and the last one that failed here.
#[derive(Default, Clone, Copy)]
struct Known {
    received: i64,
    failed: i64,
}

#[derive(Default)]
pub(crate) struct Turns {
    known: Mutex<HashMap<Uuid, Known>>,
    changed: Notify,
}

impl Turns {
    /// Returns once packet `packet_no` of `node` may be applied: the packet
    /// before it was received (or failed here), or [`TURN_WAIT`] passed.
    pub(crate) async fn wait(
        &self,
        store: &dyn Store,
        node: Uuid,
        packet_no: i64,
    ) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        let mut from_store = !self.lock().contains_key(&node);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if from_store {
                let received = store
                    .get_node(node)
                    .await?
                    .map_or(0, |n| n.received_packet_no);
                self.record(node, |k| k.received = k.received.max(received));
            }
            let k = self.lock().get(&node).copied().unwrap_or_default();
            if packet_no <= k.received + 1 || packet_no <= k.failed + 1 {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let step = RECHECK.min(deadline - now);
            from_store = tokio::time::timeout(step, changed).await.is_err();
        }
    }

    /// Packet `packet_no` of `node` was received (committed).
    pub(crate) fn received(&self, node: Uuid, packet_no: i64) {
        self.record(node, |k| k.received = k.received.max(packet_no));
        self.changed.notify_waiters();
    }

    /// Packet `packet_no` of `node` failed here: the next one need not wait.
    pub(crate) fn failed(&self, node: Uuid, packet_no: i64) {
        self.record(node, |k| k.failed = k.failed.max(packet_no));
        self.changed.notify_waiters();
    }

    fn record(&self, node: Uuid, f: impl FnOnce(&mut Known)) {
        f(self.lock().entry(node).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Known>> {
        // A poisoned map still holds numbers that only grow.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}
