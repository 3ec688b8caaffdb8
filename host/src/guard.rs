//! The sync endpoint's in-memory guards (issue 7 item 5): authentication
//! failure tracking with slow-down and lockout (per address and per node),
//! a per-node token-bucket rate limit, a per-node cap on exchanges served at
//! once, the once-a-minute recording of a node's 429 refusals, and a JSON
//! nesting-depth scan that runs before any parser.
//!
//! State is per process: with several master hosts behind a load balancer
//! each host enforces its own limits (an attacker spread over N hosts gets
//! N times the budget; the security events of every host land in the shared
//! store). Memory is bounded: at most [`MAX_TRACKED`] addresses and nodes
//! are tracked; past that, expired entries are dropped and, if none are,
//! new ones are not tracked (failures are still refused and logged).
//!
//! Must never: hold its lock across an await, or grow without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::LimitsConfig;

/// Most addresses (and, separately, nodes) whose failures are tracked.
pub const MAX_TRACKED: usize = 10_000;
/// Longest delay added to one authentication failure's answer.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(2);
/// A node's 429 refusals (rate limit, exchanges at once) are recorded as
/// security events at most once per this period, with the count of those
/// refused since: a node flooding the master costs it one row a minute,
/// not one write per refused request.
pub const REFUSAL_EVENT_PERIOD: Duration = Duration::from_secs(60);

/// Who failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Addr(IpAddr),
    Node(Uuid),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// What to do after an authentication failure was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureVerdict {
    /// Delay the refusal by this much (slows guessing).
    pub delay: Duration,
    /// This failure started a lockout (record a `lockout` event once).
    pub locked_now: bool,
}

/// When a node's last 429 was recorded, and how many were refused since.
#[derive(Debug, Clone, Copy)]
struct RefusalNote {
    recorded_at: Instant,
    since: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The guards of one sync endpoint.
#[derive(Debug)]
pub struct Guard {
    limits: LimitsConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: HashMap<Subject, Failures>,
    buckets: HashMap<Uuid, Bucket>,
    in_flight: HashMap<Uuid, u32>,
    refusals: HashMap<Uuid, RefusalNote>,
}

impl Guard {
    pub fn new(limits: LimitsConfig) -> Arc<Guard> {
        Arc::new(Guard {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants:
        // keep going with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.auth_failure_window_secs)
    }

    /// If `subject` is locked out now, for how much longer.
    pub fn locked_out(&self, subject: Subject) -> Option<Duration> {
        self.locked_out_at(subject, Instant::now())
    }

    fn locked_out_at(&self, subject: Subject, now: Instant) -> Option<Duration> {
        let state = self.state();
        let until = state.failures.get(&subject)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records one authentication failure of `subject`.
    pub fn record_failure(&self, subject: Subject) -> FailureVerdict {
        self.record_failure_at(subject, Instant::now())
    }

    fn record_failure_at(&self, subject: Subject, now: Instant) -> FailureVerdict {
        let window = self.window();
        let lockout = Duration::from_secs(self.limits.lockout_secs);
        let limit = self.limits.auth_failures_before_lockout;
        let mut state = self.state();
        if !state.failures.contains_key(&subject) && state.failures.len() >= MAX_TRACKED {
            state.failures.retain(|_, f| {
                f.locked_until.is_some_and(|u| u > now) || now - f.window_start < window
            });
        }
        let tracked = state.failures.len() < MAX_TRACKED || state.failures.contains_key(&subject);
        if !tracked {
            return FailureVerdict {
                delay: MAX_FAILURE_DELAY,
                locked_now: false,
            };
        }
        let f = state.failures.entry(subject).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if f.locked_until.is_some_and(|u| u <= now) || now - f.window_start >= window {
            // A lockout served or a quiet window: start over.
            *f = Failures {
                count: 0,
                window_start: now,
                locked_until: None,
            };
        }
        f.count = f.count.saturating_add(1);
        let locked_now = f.locked_until.is_none() && f.count >= limit;
        if locked_now {
            f.locked_until = Some(now + lockout);
        }
        let delay = Duration::from_millis(
            self.limits
                .auth_failure_delay_ms
                .saturating_mul(u64::from(f.count)),
        )
        .min(MAX_FAILURE_DELAY);
        FailureVerdict { delay, locked_now }
    }

    /// A successful authentication from `addr` clears its failures (not a
    /// lockout in force).
    pub fn record_success(&self, addr: IpAddr) {
        let mut state = self.state();
        if let Some(f) = state.failures.get(&Subject::Addr(addr))
            && f.locked_until.is_none()
        {
            state.failures.remove(&Subject::Addr(addr));
        }
    }

    /// Takes one request from `node`'s token bucket; `Err(wait)` when it is
    /// empty, with how long until the next request would be allowed.
    pub fn take_rate(&self, node: Uuid) -> Result<(), Duration> {
        self.take_rate_at(node, Instant::now())
    }

    fn take_rate_at(&self, node: Uuid, now: Instant) -> Result<(), Duration> {
        let per_sec = f64::from(self.limits.rate_limit_per_minute.max(1)) / 60.0;
        let burst = f64::from(self.limits.rate_limit_burst.max(1));
        let mut state = self.state();
        if state.buckets.len() >= MAX_TRACKED && !state.buckets.contains_key(&node) {
            // Full buckets carry no information: drop them.
            state
                .buckets
                .retain(|_, b| b.tokens + (now - b.at).as_secs_f64() * per_sec < burst);
        }
        let b = state.buckets.entry(node).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + (now - b.at).as_secs_f64() * per_sec).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    /// Notes one 429 refusal of `node`. `Some(n)` when it is to be
    /// recorded as a security event, `n` being the refusals of the node not
    /// recorded since the last event; `None` when one was recorded less than
    /// [`REFUSAL_EVENT_PERIOD`] ago (this refusal is counted into the next).
    pub fn note_refusal(&self, node: Uuid) -> Option<u64> {
        self.note_refusal_at(node, Instant::now())
    }

    fn note_refusal_at(&self, node: Uuid, now: Instant) -> Option<u64> {
        let mut state = self.state();
        if state.refusals.len() >= MAX_TRACKED && !state.refusals.contains_key(&node) {
            state
                .refusals
                .retain(|_, r| now - r.recorded_at < REFUSAL_EVENT_PERIOD);
            if state.refusals.len() >= MAX_TRACKED {
                // Not tracked: recorded every time (as before this existed).
                return Some(0);
            }
        }
        match state.refusals.get_mut(&node) {
            Some(r) if now - r.recorded_at < REFUSAL_EVENT_PERIOD => {
                r.since = r.since.saturating_add(1);
                None
            }
            Some(r) => {
                let since = r.since;
                *r = RefusalNote {
                    recorded_at: now,
                    since: 0,
                };
                Some(since)
            }
            None => {
                state.refusals.insert(
                    node,
                    RefusalNote {
                        recorded_at: now,
                        since: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Admits one more exchange of `node`, or `None` when it already has
    /// `max_concurrent_exchanges_per_node` in flight. The permit ends the
    /// exchange when dropped.
    pub fn admit(self: &Arc<Self>, node: Uuid) -> Option<ExchangePermit> {
        let mut state = self.state();
        let n = state.in_flight.entry(node).or_insert(0);
        if *n >= self.limits.max_concurrent_exchanges_per_node {
            return None;
        }
        *n += 1;
        Some(ExchangePermit {
            guard: self.clone(),
            node,
        })
    }
}

/// One admitted exchange; dropping it frees the slot.
#[derive(Debug)]
pub struct ExchangePermit {
    guard: Arc<Guard>,
    node: Uuid,
}

impl Drop for ExchangePermit {
    fn drop(&mut self) {
        let mut state = self.guard.state();
        if let Some(n) = state.in_flight.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_flight.remove(&self.node);
            }
        }
    }
}

/// The deepest nesting of arrays and objects in `json`, by a linear scan
/// that understands strings and escapes and never recurses; stops counting
/// (returns `limit + 1`) as soon as `limit` is exceeded. Not a validator:
/// malformed JSON is the parser's to refuse afterwards.
pub fn json_depth_exceeds(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            auth_failures_before_lockout: 3,
            auth_failure_window_secs: 60,
            lockout_secs: 600,
            auth_failure_delay_ms: 100,
            rate_limit_per_minute: 60,
            rate_limit_burst: 2,
            max_concurrent_exchanges_per_node: 2,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn failures_are_slowed_then_locked_out_then_forgiven() {
        let g = Guard::new(limits());
        let addr = Subject::Addr(IpAddr::from([127, 0, 0, 1]));
        let t0 = Instant::now();
        let v1 = g.record_failure_at(addr, t0);
        let v2 = g.record_failure_at(addr, t0);
        assert_eq!(v1.delay, Duration::from_millis(100));
        assert_eq!(v2.delay, Duration::from_millis(200), "each failure slower");
        assert!(!v2.locked_now);
        assert_eq!(g.locked_out_at(addr, t0), None);
        let v3 = g.record_failure_at(addr, t0);
        assert!(v3.locked_now, "the third failure locks out");
        assert_eq!(g.locked_out_at(addr, t0), Some(Duration::from_secs(600)));
        assert!(
            !g.record_failure_at(addr, t0).locked_now,
            "a lockout is announced once"
        );
        // Another address is not affected.
        let other = Subject::Addr(IpAddr::from([127, 0, 0, 2]));
        assert_eq!(g.locked_out_at(other, t0), None);
        // After the lockout: free again, counting from zero.
        let later = t0 + Duration::from_secs(601);
        assert_eq!(g.locked_out_at(addr, later), None);
        assert_eq!(
            g.record_failure_at(addr, later).delay,
            Duration::from_millis(100)
        );
        // Failures spread beyond the window never lock out.
        let node = Subject::Node(Uuid::from_u128(1));
        for i in 0..10 {
            let v = g.record_failure_at(node, t0 + Duration::from_secs(61 * i));
            assert!(!v.locked_now);
        }
    }

    #[test]
    fn the_delay_is_capped() {
        let g = Guard::new(LimitsConfig {
            auth_failure_delay_ms: 10_000,
            ..limits()
        });
        let v = g.record_failure(Subject::Addr(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(v.delay, MAX_FAILURE_DELAY);
    }

    #[test]
    fn a_success_clears_an_address_but_not_a_lockout() {
        let g = Guard::new(limits());
        let ip = IpAddr::from([127, 0, 0, 1]);
        let t0 = Instant::now();
        g.record_failure_at(Subject::Addr(ip), t0);
        g.record_failure_at(Subject::Addr(ip), t0);
        g.record_success(ip);
        assert_eq!(
            g.record_failure_at(Subject::Addr(ip), t0).delay,
            Duration::from_millis(100)
        );
        g.record_failure_at(Subject::Addr(ip), t0);
        g.record_failure_at(Subject::Addr(ip), t0);
        g.record_success(ip);
        assert!(g.locked_out_at(Subject::Addr(ip), t0).is_some());
    }

    #[test]
    fn the_rate_limit_is_a_token_bucket_per_node() {
        let g = Guard::new(limits());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        assert_eq!(g.take_rate_at(a, t0), Ok(()));
        assert_eq!(g.take_rate_at(a, t0), Ok(()), "the burst");
        let wait = g.take_rate_at(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(g.take_rate_at(b, t0), Ok(()), "another node has its own");
        assert_eq!(
            g.take_rate_at(a, t0 + Duration::from_secs(1)),
            Ok(()),
            "refilled at 1/s"
        );
    }

    #[test]
    fn refusal_events_are_recorded_once_a_period_per_node_with_the_count_since() {
        let g = Guard::new(limits());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        assert_eq!(g.note_refusal_at(a, t0), Some(0), "the first is recorded");
        for i in 1..=500 {
            assert_eq!(
                g.note_refusal_at(a, t0 + Duration::from_millis(i)),
                None,
                "a flood within the period is counted, not recorded"
            );
        }
        assert_eq!(
            g.note_refusal_at(b, t0),
            Some(0),
            "another node has its own"
        );
        assert_eq!(
            g.note_refusal_at(a, t0 + REFUSAL_EVENT_PERIOD),
            Some(500),
            "the next period's first says how many were refused since"
        );
        assert_eq!(g.note_refusal_at(a, t0 + REFUSAL_EVENT_PERIOD), None);
        assert_eq!(g.note_refusal_at(a, t0 + REFUSAL_EVENT_PERIOD * 3), Some(1));
    }

    #[test]
    fn concurrent_exchanges_are_capped_per_node_and_freed_on_drop() {
        let g = Guard::new(limits());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let p1 = g.admit(a).expect("first");
        let p2 = g.admit(a).expect("second");
        assert!(g.admit(a).is_none(), "a third is refused");
        let pb = g.admit(b).expect("another node is not affected");
        drop(p1);
        let p3 = g.admit(a).expect("a slot freed");
        drop((p2, p3, pb));
        assert!(g.state().in_flight.is_empty(), "nothing leaks");
    }

    #[test]
    fn json_depth_is_measured_without_recursion_and_strings_do_not_count() {
        assert!(!json_depth_exceeds(br#"{"a": [1, {"b": []}]}"#, 4));
        assert!(json_depth_exceeds(br#"{"a": [1, {"b": []}]}"#, 3));
        assert!(!json_depth_exceeds(br#"{"a": "[[[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(1_000_000);
        assert!(json_depth_exceeds(deep.as_bytes(), 64));
        assert!(!json_depth_exceeds(b"", 0));
    }
}
