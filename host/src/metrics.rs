//! Counters exported at `GET /metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use hubsync_core::store::WriteStats;

#[derive(Debug, Default)]
pub struct Metrics {
    exchanges_ok: AtomicU64,
    exchanges_refused: AtomicU64,
    sessions_ok: AtomicU64,
    sessions_failed: AtomicU64,
    conflicts: AtomicU64,
    auth_failures: AtomicU64,
}

impl Metrics {
    pub fn record_exchange(&self, ok: bool) {
        let c = if ok {
            &self.exchanges_ok
        } else {
            &self.exchanges_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn record_session(&self, ok: bool) {
        let c = if ok {
            &self.sessions_ok
        } else {
            &self.sessions_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn record_conflicts(&self, n: u64) {
        self.conflicts.fetch_add(n, Ordering::Relaxed);
    }
    pub fn record_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition, with `pending` queued changes and the
    /// store's write counts when it keeps them.
    pub fn render(&self, pending: i64, held: i64, writes: Option<WriteStats>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "hubsync_exchanges_total",
            "Sync exchanges handled by this master.",
            "counter",
            &[
                ("{result=\"ok\"}", get(&self.exchanges_ok)),
                ("{result=\"refused\"}", get(&self.exchanges_refused)),
            ],
        );
        metric(
            "hubsync_sync_sessions_total",
            "Sync sessions run by this client.",
            "counter",
            &[
                ("{result=\"ok\"}", get(&self.sessions_ok)),
                ("{result=\"failed\"}", get(&self.sessions_failed)),
            ],
        );
        metric(
            "hubsync_conflicts_total",
            "Conflicts seen (master: resolved; client: reported back).",
            "counter",
            &[("", get(&self.conflicts))],
        );
        metric(
            "hubsync_auth_failures_total",
            "Sync requests refused for authentication.",
            "counter",
            &[("", get(&self.auth_failures))],
        );
        metric(
            "hubsync_pending_changes",
            "Changes not yet acknowledged (client: queued for the master; master: revisions not acknowledged, summed over nodes).",
            "gauge",
            &[("", pending.max(0) as u64)],
        );
        metric(
            "hubsync_held_changes",
            "Received changes held until an entity they reference arrives (on a master, after hold_timeout they go to the manual queue).",
            "gauge",
            &[("", held.max(0) as u64)],
        );
        if let Some(w) = writes {
            metric(
                "hubsync_store_write_transactions_total",
                "Write transactions committed by this node's store.",
                "counter",
                &[("", w.transactions)],
            );
            metric(
                "hubsync_store_commits_total",
                "Commits (each a sync to disk) that made them durable; SQLite commits transactions that queue for its one writer together, so fewer than the transactions under load.",
                "counter",
                &[("", w.commits)],
            );
        }
        out
    }
}
