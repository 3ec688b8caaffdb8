//! The engine's `Transport` over HTTPS: gzip JSON envelopes POSTed to the
//! master's `/sync/v1/exchange` with the node's bearer token.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use hubsync_core::protocol::{self, DecodeLimits, Envelope, ErrorBody, ErrorDetail};
use hubsync_core::transport::{Transport, TransportError};

use crate::https_client::HttpsClient;

/// The path of the exchange endpoint.
pub const EXCHANGE_PATH: &str = "/sync/v1/exchange";

pub struct HttpsTransport {
    client: HttpsClient,
    url: String,
    token: String,
    limits: DecodeLimits,
    /// What the master's last refusal asked for in `Retry-After` (a 429 or
    /// 503); cleared by the next answer without one.
    retry_after: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl HttpsTransport {
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
        }
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
}

#[async_trait::async_trait]
impl Transport for HttpsTransport {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let body = protocol::encode_envelope(request).map_err(|e| TransportError::Unreachable {
            reason: e.to_string(),
            transient: false,
        })?;
        let headers = [
            ("authorization", format!("Bearer {}", self.token)),
            ("content-type", "application/json".to_string()),
            ("content-encoding", "gzip".to_string()),
            ("accept-encoding", "gzip".to_string()),
        ];
        let resp = self
            .client
            .post(&self.url, &headers, Bytes::from(body))
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
