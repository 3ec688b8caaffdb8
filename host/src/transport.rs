//! The engine's `Transport` over HTTPS: gzip JSON envelopes POSTed to the
//! master's `/sync/v1/exchange` with the node's bearer token.
//!
//! A master that refuses with 429 `rate_limited` (or 503) and `Retry-After`
//! is not failing: it asks the node to slow down. With a [`WaitPolicy`]
//! (what `Node` uses for `hubsync sync`, `POST /api/v1/sync` and the
//! background loop) the transport waits as asked and sends the same
//! envelope again — always safe: a refused packet was not applied, and a
//! packet is applied exactly once under its number anyway — for as long as
//! the session makes progress. Every wait is bounded (`max_wait`), and so
//! are the refusals in a row without an answered exchange between them
//! (`max_waits_in_a_row`); past either the session ends with the refusal,
//! saying what it waited and why it stopped. Without a policy (the
//! default of [`HttpsTransport::new`]) every refusal is returned at once.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use hubsync_core::protocol::{self, DecodeLimits, Envelope, ErrorBody, ErrorDetail};
use hubsync_core::transport::{Transport, TransportError};
use serde::Serialize;

use crate::https_client::HttpsClient;

/// The path of the exchange endpoint.
pub const EXCHANGE_PATH: &str = "/sync/v1/exchange";

/// The shortest wait before sending again, whatever `Retry-After` says (a
/// master asking for 0 s is not hammered).
pub const MIN_WAIT: Duration = Duration::from_millis(100);
/// The wait after a 429 that carries no (readable) `Retry-After`.
pub const DEFAULT_429_WAIT: Duration = Duration::from_secs(1);

/// How a session waits when the master asks it to (429, or 503 with
/// `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// The longest single wait accepted; a master asking for more (a
    /// lockout, say) ends the session at once.
    pub max_wait: Duration,
    /// Refusals waited out in a row, with no answered exchange between
    /// them; the next refusal ends the session. A token bucket answers the
    /// request sent after its `Retry-After`, so a session that is making
    /// progress never comes near this.
    pub max_waits_in_a_row: u32,
}

impl WaitPolicy {
    /// Refusals waited out in a row before a session gives up.
    pub const WAITS_IN_A_ROW: u32 = 3;

    /// Waits of at most `max_wait` each (`[sync].retry_max_secs`), at most
    /// [`WaitPolicy::WAITS_IN_A_ROW`] in a row.
    pub fn new(max_wait: Duration) -> Self {
        WaitPolicy {
            max_wait,
            max_waits_in_a_row: Self::WAITS_IN_A_ROW,
        }
    }
}

/// The waits the master asked for in the current (or last) session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryAfterWaits {
    /// Refusals waited out (each followed by the same request again).
    pub count: u32,
    /// Time spent waiting, in milliseconds.
    pub total_ms: u64,
    /// The longest single wait, in milliseconds.
    pub longest_ms: u64,
}

impl RetryAfterWaits {
    fn add(&mut self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.count = self.count.saturating_add(1);
        self.total_ms = self.total_ms.saturating_add(ms);
        self.longest_ms = self.longest_ms.max(ms);
    }
}

/// What to do with a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Not a request to wait: return the refusal.
    Return,
    /// Wait this long, then send the same request again.
    Wait(Duration),
    /// A request to wait past the policy's bounds: return the refusal,
    /// saying why the session stops.
    GiveUp(String),
}

/// Decides what a session does with a refusal of `status` asking for
/// `asked` (`Retry-After`), after `in_a_row` refusals waited out since the
/// last answered exchange.
fn next_step(policy: &WaitPolicy, in_a_row: u32, status: u16, asked: Option<Duration>) -> Step {
    let wait = match (status, asked) {
        (429 | 503, Some(asked)) => asked.max(MIN_WAIT),
        (429, None) => DEFAULT_429_WAIT,
        _ => return Step::Return,
    };
    if in_a_row >= policy.max_waits_in_a_row {
        return Step::GiveUp(format!(
            "{} refusals in a row without an answered exchange between them (at most {} are waited out)",
            in_a_row.saturating_add(1),
            policy.max_waits_in_a_row
        ));
    }
    if wait > policy.max_wait {
        return Step::GiveUp(format!(
            "it asked for {} s, longer than the {} s a session waits at a time ([sync].retry_max_secs)",
            secs_text(wait),
            secs_text(policy.max_wait)
        ));
    }
    Step::Wait(wait)
}

fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

#[derive(Debug, Default)]
struct WaitState {
    session: RetryAfterWaits,
    in_a_row: u32,
}

pub struct HttpsTransport {
    client: HttpsClient,
    url: String,
    token: String,
    limits: DecodeLimits,
    /// What the master's last refusal asked for in `Retry-After` (a 429 or
    /// 503); cleared by the next answer without one.
    retry_after: Mutex<Option<Duration>>,
    /// None: every refusal is returned at once.
    policy: Option<WaitPolicy>,
    waits: Mutex<WaitState>,
}

impl std::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

impl HttpsTransport {
    /// A transport that returns every refusal at once (see
    /// [`HttpsTransport::waiting_on_retry_after`]).
    pub fn new(
        tls: std::sync::Arc<rustls::ClientConfig>,
        master_url: &str,
        token: String,
        timeout: Duration,
    ) -> Self {
        let limits = DecodeLimits::default();
        HttpsTransport {
            client: HttpsClient::new(tls, timeout, limits.max_compressed),
            url: format!("{}{EXCHANGE_PATH}", master_url.trim_end_matches('/')),
            token,
            limits,
            retry_after: Mutex::new(None),
            policy: None,
            waits: Mutex::new(WaitState::default()),
        }
    }

    /// Waits as the master asks (429, or 503 with `Retry-After`) within
    /// `policy`, then sends the same envelope again.
    pub fn waiting_on_retry_after(mut self, policy: WaitPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The wait the master asked for with `Retry-After` in its last answer,
    /// if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.lock().map(|g| *g).unwrap_or(None)
    }

    fn set_retry_after(&self, wait: Option<Duration>) {
        if let Ok(mut g) = self.retry_after.lock() {
            *g = wait;
        }
    }

    fn with_waits<T>(&self, f: impl FnOnce(&mut WaitState) -> T) -> T {
        // Counters only: a poisoned lock still holds usable numbers.
        let mut g = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Starts counting the waits of a new session.
    pub fn begin_session(&self) {
        self.with_waits(|w| *w = WaitState::default());
    }

    /// The waits since [`HttpsTransport::begin_session`].
    pub fn session_waits(&self) -> RetryAfterWaits {
        self.with_waits(|w| w.session)
    }

    /// One request: the master's envelope, or why there is none.
    async fn exchange_once(&self, body: Bytes) -> Result<Envelope, TransportError> {
        let headers = [
            ("authorization", format!("Bearer {}", self.token)),
            ("content-type", "application/json".to_string()),
            ("content-encoding", "gzip".to_string()),
            ("accept-encoding", "gzip".to_string()),
        ];
        let resp = self
            .client
            .post(&self.url, &headers, body)
            .await
            .map_err(|e| {
                self.set_retry_after(None);
                TransportError::Unreachable {
                    transient: e.is_transient(),
                    reason: e.to_string(),
                }
            })?;
        let asked_wait = (resp.status != 200)
            .then(|| crate::https_client::retry_after(&resp.headers, chrono::Utc::now()))
            .flatten();
        self.set_retry_after(asked_wait);
        let gzipped = resp
            .headers
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let raw = if gzipped {
            protocol::gunzip(&resp.body, self.limits.max_decompressed).map_err(|e| {
                TransportError::Unreachable {
                    reason: format!("the master's answer is corrupt: {e}"),
                    transient: true,
                }
            })?
        } else {
            resp.body.to_vec()
        };
        if resp.status == 200 {
            return serde_json::from_slice(&raw).map_err(|e| TransportError::Unreachable {
                reason: format!("the master's answer is not a valid envelope: {e}"),
                transient: true,
            });
        }
        let mut error = serde_json::from_slice::<ErrorBody>(&raw)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: format!("http_{}", resp.status),
                message: String::from_utf8_lossy(&raw).chars().take(300).collect(),
                detail: None,
                hint: None,
            });
        if let Some(wait) = asked_wait {
            // Shown in `hubsync status`: why the next attempt is that far off.
            let asked = format!(
                "the master asked to retry after {}s (Retry-After); the background loop waits at least that long, up to [sync].retry_max_secs",
                wait.as_secs()
            );
            error.hint = Some(match error.hint.take() {
                Some(h) => format!("{h}; {asked}"),
                None => asked,
            });
        }
        Err(TransportError::Refused {
            status: resp.status,
            error,
        })
    }
}

#[async_trait::async_trait]
impl Transport for HttpsTransport {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let body = Bytes::from(protocol::encode_envelope(request).map_err(|e| {
            TransportError::Unreachable {
                reason: e.to_string(),
                transient: false,
            }
        })?);
        loop {
            let (status, mut error) = match self.exchange_once(body.clone()).await {
                Ok(envelope) => {
                    self.with_waits(|w| w.in_a_row = 0);
                    return Ok(envelope);
                }
                Err(TransportError::Refused { status, error }) => (status, error),
                Err(other) => return Err(other),
            };
            let Some(policy) = self.policy else {
                return Err(TransportError::Refused { status, error });
            };
            let in_a_row = self.with_waits(|w| w.in_a_row);
            match next_step(&policy, in_a_row, status, self.retry_after()) {
                Step::Return => return Err(TransportError::Refused { status, error }),
                Step::GiveUp(why) => {
                    let waited = self.session_waits();
                    let waited_text = if waited.count == 0 {
                        String::new()
                    } else {
                        format!(
                            " waited {} time(s) as asked ({} s in all) and",
                            waited.count,
                            secs_text(Duration::from_millis(waited.total_ms))
                        )
                    };
                    let stop = format!(
                        "this session{waited_text} stops here: {why}. Nothing is lost: the changes stay queued and the next sync goes on from here"
                    );
                    tracing::warn!(status, code = %error.code, waits = waited.count, waited_ms = waited.total_ms, "the master refused; the session stops: {why}");
                    error.hint = Some(match error.hint.take() {
                        Some(h) => format!("{h}; {stop}"),
                        None => stop,
                    });
                    return Err(TransportError::Refused { status, error });
                }
                Step::Wait(wait) => {
                    let count = self.with_waits(|w| {
                        w.in_a_row += 1;
                        w.session.add(wait);
                        w.session.count
                    });
                    tracing::info!(
                        status,
                        code = %error.code,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        waits = count,
                        "the master asked this node to wait (Retry-After); sending the same request again after the wait"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> WaitPolicy {
        WaitPolicy::new(S(300))
    }

    #[test]
    fn a_429_or_503_with_retry_after_is_waited_out_as_asked() {
        assert_eq!(next_step(&policy(), 0, 429, Some(S(1))), Step::Wait(S(1)));
        assert_eq!(next_step(&policy(), 2, 429, Some(S(7))), Step::Wait(S(7)));
        assert_eq!(next_step(&policy(), 0, 503, Some(S(2))), Step::Wait(S(2)));
        assert_eq!(
            next_step(&policy(), 0, 429, Some(Duration::ZERO)),
            Step::Wait(MIN_WAIT),
            "never sent again at once"
        );
        assert_eq!(
            next_step(&policy(), 0, 429, None),
            Step::Wait(DEFAULT_429_WAIT),
            "a 429 without a readable Retry-After still waits"
        );
    }

    #[test]
    fn other_refusals_are_returned_at_once() {
        for status in [400, 401, 403, 409, 413, 422, 500] {
            assert_eq!(next_step(&policy(), 0, status, Some(S(1))), Step::Return);
        }
        assert_eq!(
            next_step(&policy(), 0, 503, None),
            Step::Return,
            "a 503 that names no wait is the background loop's to back off"
        );
    }

    #[test]
    fn waits_are_bounded_one_by_one_and_in_a_row() {
        let p = WaitPolicy::new(S(30));
        match next_step(&p, 0, 429, Some(S(900))) {
            Step::GiveUp(why) => {
                assert!(why.contains("900 s"), "{why}");
                assert!(why.contains("[sync].retry_max_secs"), "{why}");
            }
            other => panic!("a lockout's 900 s is not waited out: {other:?}"),
        }
        assert_eq!(next_step(&p, 0, 429, Some(S(30))), Step::Wait(S(30)));
        assert_eq!(
            next_step(&p, WaitPolicy::WAITS_IN_A_ROW - 1, 429, Some(S(1))),
            Step::Wait(S(1))
        );
        match next_step(&p, WaitPolicy::WAITS_IN_A_ROW, 429, Some(S(1))) {
            Step::GiveUp(why) => assert!(why.contains("4 refusals in a row"), "{why}"),
            other => panic!("the refusals in a row are bounded: {other:?}"),
        }
    }

    #[test]
    fn waits_add_up() {
        let mut w = RetryAfterWaits::default();
        w.add(S(1));
        w.add(Duration::from_millis(2500));
        assert_eq!(
            w,
            RetryAfterWaits {
                count: 2,
                total_ms: 3500,
                longest_ms: 2500
            }
        );
        assert_eq!(secs_text(Duration::from_millis(3500)), "3.5");
        assert_eq!(secs_text(S(900)), "900");
    }
}
