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

use crate::store::StoreError;

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
    /// `stored` reads the node's last received packet from the store.
    pub(crate) async fn wait<F, Fut>(
        &self,
        node: Uuid,
        packet_no: i64,
        stored: F,
    ) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<i64, StoreError>>,
    {
        let start = tokio::time::Instant::now();
        let deadline = start + TURN_WAIT;
        let mut from_store = !self.lock().contains_key(&node);
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if from_store {
                let received = stored().await?;
                self.record(node, |k| k.received = k.received.max(received));
            }
            let k = self.lock().get(&node).copied().unwrap_or_default();
            if packet_no <= k.received + 1 || packet_no <= k.failed + 1 {
                if waited {
                    let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::debug!(%node, packet_no, waited_ms, "packet took its turn after the one before it");
                }
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(%node, packet_no, received = k.received, "the packet before this one did not arrive in time; the exchange goes on, and is refused if still out of sequence");
                return Ok(());
            }
            waited = true;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// A store whose node has received what `n` holds.
    fn stored(n: &Arc<AtomicI64>) -> impl Fn() -> std::future::Ready<Result<i64, StoreError>> {
        let n = Arc::clone(n);
        move || std::future::ready(Ok(n.load(Ordering::SeqCst)))
    }

    /// Packet 3 of `node` waiting, in a task, with packet 1 received.
    fn waiting_for_2(
        turns: &Arc<Turns>,
        node: Uuid,
        store: &Arc<AtomicI64>,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let (turns, store) = (Arc::clone(turns), Arc::clone(store));
        tokio::spawn(async move { turns.wait(node, 3, stored(&store)).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_in_order_goes_at_once() {
        let turns = Turns::default();
        let node = Uuid::now_v7();
        let store = Arc::new(AtomicI64::new(4));
        let t0 = tokio::time::Instant::now();
        turns.wait(node, 5, stored(&store)).await.unwrap();
        turns.wait(node, 3, stored(&store)).await.unwrap(); // a duplicate
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_that_overtook_the_one_before_waits_for_it() {
        let turns = Arc::new(Turns::default());
        let node = Uuid::now_v7();
        let store = Arc::new(AtomicI64::new(1));
        let waiter = waiting_for_2(&turns, node, &store);
        // Off the recheck steps' beat, so that only a notification wakes it.
        tokio::time::sleep(Duration::from_millis(2_025)).await;
        assert!(!waiter.is_finished(), "packet 3 went before packet 2");
        turns.received(node, 2);
        let t0 = tokio::time::Instant::now();
        waiter.await.unwrap().unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO, "woken, not found by polling");
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_one_before_fails_the_next_goes_on_at_once() {
        let turns = Arc::new(Turns::default());
        let node = Uuid::now_v7();
        let store = Arc::new(AtomicI64::new(1));
        let waiter = waiting_for_2(&turns, node, &store);
        tokio::time::sleep(Duration::from_millis(525)).await;
        assert!(!waiter.is_finished());
        turns.failed(node, 2);
        let t0 = tokio::time::Instant::now();
        waiter.await.unwrap().unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_another_process_received_is_seen_in_the_store() {
        // Several masters on one database: the packet before is committed
        // by another process, so no notification comes here.
        let turns = Arc::new(Turns::default());
        let node = Uuid::now_v7();
        let store = Arc::new(AtomicI64::new(1));
        let waiter = waiting_for_2(&turns, node, &store);
        tokio::time::sleep(Duration::from_millis(1_025)).await;
        assert!(!waiter.is_finished());
        store.store(2, Ordering::SeqCst);
        let t0 = tokio::time::Instant::now();
        waiter.await.unwrap().unwrap();
        assert!(t0.elapsed() <= RECHECK, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_packet_that_never_comes_is_bounded() {
        let turns = Turns::default();
        let node = Uuid::now_v7();
        let store = Arc::new(AtomicI64::new(1));
        let t0 = tokio::time::Instant::now();
        turns.wait(node, 3, stored(&store)).await.unwrap();
        assert_eq!(t0.elapsed(), TURN_WAIT);
    }
}
