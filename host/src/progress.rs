//! Progress of a running transfer (Property 25): what `hubsync sync`,
//! `export` and `import` draw on a terminal and what `GET /api/v1/status`
//! shows while a session runs.
//!
//! Owns: turning the engine's per-round [`SyncProgress`] into a report with
//! totals, a rate and an ETA ([`ProgressMeter`]), and the terminal bar
//! ([`TerminalProgress`]). Must never: write to stdout (that is for `--json`
//! documents), or let a drawing failure fail a transfer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubsync_core::engine::{Progress, SyncProgress};
use serde::Serialize;

/// Where a transfer is, as `/api/v1/status` shows it (`progress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProgressReport {
    /// Changes moved so far (sent and received).
    pub done: u64,
    /// Changes to move as far as known now (never below `done`).
    pub total: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Changes per second since the start (None before anything moved).
    pub rate: Option<f64>,
    /// Seconds left at `rate` (None while the rate is unknown).
    pub eta_secs: Option<u64>,
    pub started_at: DateTime<Utc>,
    /// Exchanges with the master so far.
    pub round: u32,
}

impl ProgressReport {
    /// A transfer started now that has moved nothing yet.
    pub fn starting() -> Self {
        ProgressReport {
            started_at: Utc::now(),
            ..ProgressReport::default()
        }
    }
}

/// Measures one transfer from its start.
#[derive(Debug)]
pub struct ProgressMeter {
    started: Instant,
    started_at: DateTime<Utc>,
    /// The largest `done` reported, so that a report never goes backwards.
    done_high: Mutex<u64>,
}

impl Default for ProgressMeter {
    fn default() -> Self {
        Self::start()
    }
}

impl ProgressMeter {
    /// A meter started now.
    pub fn start() -> Self {
        ProgressMeter {
            started: Instant::now(),
            started_at: Utc::now(),
            done_high: Mutex::new(0),
        }
    }

    /// When the transfer started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// The report for the engine's progress now.
    pub fn report(&self, p: &SyncProgress) -> ProgressReport {
        self.report_after(p, self.started.elapsed())
    }

    /// The report for `p` reached `elapsed` after the start.
    pub fn report_after(&self, p: &SyncProgress, elapsed: Duration) -> ProgressReport {
        let mut done = p.done_changes();
        if let Ok(mut high) = self.done_high.lock() {
            done = done.max(*high);
            *high = done;
        }
        let total = p.total_changes().max(done);
        let secs = elapsed.as_secs_f64();
        let rate = (done > 0 && secs > 0.0).then(|| done as f64 / secs);
        let eta_secs = rate.map(|r| ((total - done) as f64 / r).ceil() as u64);
        ProgressReport {
            done,
            total,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            rate,
            eta_secs,
            started_at: self.started_at,
            round: p.round,
        }
    }
}

/// A progress bar on stderr when it is a terminal (and asked for), nothing
/// otherwise: changes done of total, bytes moved, rate and ETA.
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
    meter: ProgressMeter,
}

impl TerminalProgress {
    /// A bar for `what` ("sync", "export", "import"), shown only when `show`
    /// and stderr is a terminal.
    pub fn new(what: &str, show: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            let template = format!(
                "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} changes · {{msg}} · ETA {{eta}}"
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        TerminalProgress {
            bar,
            meter: ProgressMeter::start(),
        }
    }

    /// Shows a report directly (file export and import, which move one
    /// packet and report before and after it).
    pub fn show(&self, r: &ProgressReport, note: &str) {
        if let Some(b) = &self.bar {
            b.set_length(r.total);
            b.set_position(r.done);
            b.set_message(format!(
                "{} sent, {} received{}{note}",
                human_bytes(r.bytes_sent),
                human_bytes(r.bytes_received),
                r.rate.map(|x| format!(", {x:.0}/s")).unwrap_or_default(),
            ));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for TerminalProgress {
    fn on_round(&self, p: &SyncProgress) {
        if self.bar.is_none() {
            return;
        }
        let r = self.meter.report(p);
        let note = format!(
            ", round {}{}",
            p.round,
            if p.more_from_master {
                ", more to come"
            } else {
                ""
            }
        );
        self.show(&r, &note);
    }
}

/// `1.2 MiB`, `532 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(sent: u64, received: u64, pending: i64, remaining: Option<u64>) -> SyncProgress {
        SyncProgress {
            round: 1,
            sent_changes: sent,
            received_changes: received,
            pending_changes: pending,
            remaining_from_master: remaining,
            more_from_master: remaining.is_some(),
            ..SyncProgress::default()
        }
    }

    #[test]
    fn rate_and_eta_follow_from_done_total_and_elapsed_time() {
        let m = ProgressMeter::start();
        let r = m.report_after(&progress(0, 0, 10, None), Duration::from_secs(1));
        assert_eq!((r.done, r.total, r.rate, r.eta_secs), (0, 10, None, None));
        let r = m.report_after(&progress(40, 10, 50, Some(100)), Duration::from_secs(10));
        assert_eq!((r.done, r.total), (50, 200));
        assert_eq!(r.rate, Some(5.0));
        assert_eq!(r.eta_secs, Some(30));
        let r = m.report_after(&progress(90, 110, 0, None), Duration::from_secs(20));
        assert_eq!((r.done, r.total, r.eta_secs), (200, 200, Some(0)));
    }

    #[test]
    fn a_report_never_goes_backwards_and_total_never_falls_below_done() {
        let m = ProgressMeter::start();
        m.report_after(&progress(30, 0, 0, None), Duration::from_secs(1));
        let r = m.report_after(&progress(10, 0, 0, None), Duration::from_secs(2));
        assert_eq!((r.done, r.total), (30, 30));
    }

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(532), "532 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
