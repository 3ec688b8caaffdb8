//! The sync protocol endpoint (master): `POST /sync/v1/exchange`.
//!
//! In order, before the engine sees anything: the peer's lockout, the
//! bearer token (by hash), the node's lockout, the client certificate when
//! `[listen].require_client_cert` (it must name the token's node), the
//! node's rate limit and concurrent exchanges, then the body — read within
//! `[limits].body_read_timeout_secs` and `max_body_bytes`, decompressed
//! within `max_decompressed_bytes`, scanned for nesting deeper than
//! `max_json_depth`, parsed, its entity count checked — and only then
//! `Engine::handle_exchange`. Every refusal on the way is a security event
//! (`hubsync security-events`) and a `{"error": {…}}` answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use hubsync_core::protocol::{self, CodecError, Envelope, ErrorBody, ErrorDetail};
use hubsync_core::security::{SecurityEvent, SecurityEventKind, token_fingerprint};
use hubsync_core::store::NodeRecord;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::auth::token_hash;
use crate::config::LimitsConfig;
use crate::guard::{Guard, Subject, json_depth_exceeds};
use crate::listener::{PeerAddr, PeerCertificate};
use crate::node::Node;

/// The limits a master's sync endpoint enforces: `[limits]`, with the
/// deprecated `[listen].max_body_bytes` winning when set.
pub fn effective_limits(node: &Node) -> LimitsConfig {
    let mut limits = node.config.limits.clone();
    if let Some(max) = node.config.listen.as_ref().and_then(|l| l.max_body_bytes) {
        limits.max_body_bytes = max;
        limits.max_decompressed_bytes = limits.max_decompressed_bytes.max(max);
    }
    limits
}

/// The exchange route.
pub fn route(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let guard = Guard::new(effective_limits(&node));
    let require_cert = node
        .config
        .listen
        .as_ref()
        .is_some_and(|l| l.require_client_cert);
    warp::path!("sync" / "v1" / "exchange")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-encoding"))
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<PeerCertificate>())
        .and(warp::body::stream())
        .then(move |auth, encoding, peer, cert, body| {
            let request = Request {
                node: node.clone(),
                guard: guard.clone(),
                require_cert,
                peer,
            };
            async move { request.handle(auth, encoding, cert, body).await }
        })
}

struct Request {
    node: Arc<Node>,
    guard: Arc<Guard>,
    require_cert: bool,
    peer: Option<PeerAddr>,
}

/// A refusal to answer, with its security event (if any).
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    hint: Option<String>,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            hint: None,
            retry_after: None,
        }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    fn into_response(self) -> Response {
        let mut resp = refusal(self.status, self.code, self.message, None, self.hint);
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up, at least 1.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = warp::http::HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}

impl Request {
    fn peer_text(&self) -> String {
        self.peer.map(|p| p.0.to_string()).unwrap_or_default()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.0.ip())
    }

    /// Records a security event; a failure to record is logged, never
    /// turned into a different answer.
    async fn event(&self, kind: SecurityEventKind, node: Option<&NodeRecord>, detail: String) {
        let mut event = SecurityEvent::new(kind, detail);
        if let Some(n) = node {
            event = event.node(n.id, &n.code);
        }
        if let Some(p) = self.peer {
            event = event.peer(p.0);
        }
        tracing::warn!(event = kind.as_str(), peer = %self.peer_text(), node = node.map(|n| n.code.as_str()).unwrap_or(""), detail = %event.detail, "security event");
        if let Err(e) = self.node.engine.store().record_security_event(&event).await {
            tracing::error!(error = %e, "could not record a security event");
        }
    }

    /// An authentication failure: counted for the address (and the node
    /// when known), slowed, possibly a lockout; always a 401.
    async fn auth_failure(&self, node: Option<&NodeRecord>, detail: String) -> Response {
        self.node.metrics.record_auth_failure();
        self.event(SecurityEventKind::AuthFailed, node, detail)
            .await;
        let mut delay = Duration::ZERO;
        let mut subjects = Vec::new();
        if let Some(ip) = self.peer_ip() {
            subjects.push(Subject::Addr(ip));
        }
        if let Some(n) = node {
            subjects.push(Subject::Node(n.id));
        }
        for subject in subjects {
            let verdict = self.guard.record_failure(subject);
            delay = delay.max(verdict.delay);
            if verdict.locked_now {
                let limits = self.guard.limits();
                let whom = match subject {
                    Subject::Addr(ip) => format!("address {ip}"),
                    Subject::Node(_) => "this node".to_string(),
                };
                self.event(
                    SecurityEventKind::Lockout,
                    node,
                    format!(
                        "{whom} locked out for {} s after {} authentication failures within {} s",
                        limits.lockout_secs,
                        limits.auth_failures_before_lockout,
                        limits.auth_failure_window_secs
                    ),
                )
                .await;
            }
        }
        // Slows guessing; bounded by guard::MAX_FAILURE_DELAY.
        tokio::time::sleep(delay).await;
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the credentials are not valid for this master",
        )
        .hint("check [master].token (and the client certificate, if the master requires one); an operator can issue a new token with `hubsync node rotate-token`")
        .into_response()
    }

    fn locked(&self, wait: Duration, whom: &str) -> Response {
        tracing::debug!(peer = %self.peer_text(), "request refused during a lockout");
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{whom} is locked out after repeated authentication failures"),
        )
        .hint("wait for the lockout to end and check the token; an operator can see `hubsync security-events --kind lockout`")
        .retry_after(wait)
        .into_response()
    }

    /// A refusal for exceeding a limit, recorded as a security event. A
    /// 429 is recorded at most once a minute per node, with the refusals
    /// since (guard.rs, `note_refusal`): only 429s escape the token bucket,
    /// so a flood would otherwise cost the store one write per request.
    async fn limit(&self, node: &NodeRecord, refusal: Refusal) -> Response {
        let record = if refusal.status == StatusCode::TOO_MANY_REQUESTS {
            self.guard.note_refusal(node.id)
        } else {
            Some(0)
        };
        if let Some(since) = record {
            let more = if since > 0 {
                format!(" ({since} more 429s of this node since the last such event)")
            } else {
                String::new()
            };
            self.event(
                SecurityEventKind::LimitExceeded,
                Some(node),
                format!("{}: {}{more}", refusal.code, refusal.message),
            )
            .await;
        }
        refusal.into_response()
    }

    async fn handle<S, B>(
        self,
        auth: Option<String>,
        encoding: Option<String>,
        cert: Option<PeerCertificate>,
        body: S,
    ) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
        B: Buf,
    {
        if let Some(ip) = self.peer_ip()
            && let Some(wait) = self.guard.locked_out(Subject::Addr(ip))
        {
            return self.locked(wait, "this address");
        }
        let token = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return self.auth_failure(None, "no bearer token".into()).await;
        };
        let hash = token_hash(token);
        let found = match self.node.engine.store().get_node_by_token_hash(&hash).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "token lookup failed");
                return refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the master could not check the token".into(),
                    None,
                    Some("retry later".into()),
                );
            }
        };
        let client = match found {
            Some(n) if !n.revoked && !n.is_self => n,
            Some(n) if n.revoked => {
                return self
                    .auth_failure(Some(&n), "token of a revoked node".into())
                    .await;
            }
            _ => {
                return self
                    .auth_failure(
                        None,
                        format!("unknown token (hash {}…)", token_fingerprint(&hash)),
                    )
                    .await;
            }
        };
        if let Some(wait) = self.guard.locked_out(Subject::Node(client.id)) {
            return self.locked(wait, "this node");
        }
        if self.require_cert {
            match &cert {
                None => {
                    return self
                        .auth_failure(
                            Some(&client),
                            "no client certificate (mutual TLS is required)".into(),
                        )
                        .await;
                }
                Some(c) if !crate::tls::cert_names_node(&c.0, client.id) => {
                    return self
                        .auth_failure(
                            Some(&client),
                            "the client certificate names another node than the token".into(),
                        )
                        .await;
                }
                Some(_) => {}
            }
        }
        if let Some(ip) = self.peer_ip() {
            self.guard.record_success(ip);
        }
        if let Err(wait) = self.guard.take_rate(client.id) {
            let limits = self.guard.limits();
            return self
                .limit(
                    &client,
                    Refusal::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "more than {} requests per minute (burst {}) from this node",
                            limits.rate_limit_per_minute, limits.rate_limit_burst
                        ),
                    )
                    .hint("wait for Retry-After seconds, then sync again")
                    .retry_after(wait),
                )
                .await;
        }
        let Some(_permit) = self.guard.admit(client.id) else {
            let limits = self.guard.limits();
            return self
                .limit(
                    &client,
                    Refusal::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "this node already has {} exchanges in progress",
                            limits.max_concurrent_exchanges_per_node
                        ),
                    )
                    .hint("sync from one process at a time; retry after the running exchange")
                    .retry_after(Duration::from_secs(1)),
                )
                .await;
        };
        if !encoding
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
        {
            self.node.metrics.record_exchange(false);
            return refusal(
                StatusCode::BAD_REQUEST,
                "corrupt_packet",
                "the packet must be gzip-compressed JSON with `Content-Encoding: gzip`".into(),
                None,
                Some("rebuild the packet and send it again".into()),
            );
        }
        let envelope = match self.read_envelope(body).await {
            Ok(env) => env,
            Err(Rejected::Limit(r)) => {
                self.node.metrics.record_exchange(false);
                return self.limit(&client, r).await;
            }
            Err(Rejected::Corrupt(e)) => {
                self.node.metrics.record_exchange(false);
                tracing::warn!(event = "corrupt_packet", node = %client.code, peer = %self.peer_text(), error = %e, "packet refused");
                return refusal(StatusCode::BAD_REQUEST, "corrupt_packet", e, None, None);
            }
        };
        let limit = self.guard.limits().max_entities_per_packet;
        if envelope.body.entities.len() > limit {
            self.node.metrics.record_exchange(false);
            return self
                .limit(
                    &client,
                    Refusal::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!(
                            "the packet carries {} entities, over the limit of {limit}",
                            envelope.body.entities.len()
                        ),
                    )
                    .hint("send smaller packets ([sync].max_packet_entities on the client)"),
                )
                .await;
        }
        let h = &envelope.header;
        if h.sender_node_id != client.id
            || h.recipient_node_id != self.node.engine.identity().node_id
        {
            let what = if h.sender_node_id != client.id {
                format!(
                    "sender mismatch: the packet claims node {}",
                    h.sender_node_id
                )
            } else {
                format!(
                    "recipient mismatch: the packet is addressed to {}",
                    h.recipient_node_id
                )
            };
            self.event(SecurityEventKind::AuthzDenied, Some(&client), what)
                .await;
            // The engine refuses it with 403 and says why (below).
        }
        let (packet_no, received) = (envelope.header.packet_no, envelope.body.entities.len());
        match self.node.engine.handle_exchange(client.id, envelope).await {
            Ok(answer) => {
                self.node.metrics.record_exchange(true);
                tracing::debug!(node = %client.code, packet_no, received, sent = answer.body.entities.len(), "exchange");
                match protocol::encode_envelope(&answer) {
                    Ok(bytes) => gzip_response(StatusCode::OK, bytes),
                    Err(e) => refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        e.to_string(),
                        None,
                        None,
                    ),
                }
            }
            Err(e) => {
                self.node.metrics.record_exchange(false);
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error() {
                    tracing::error!(node = %client.code, error = %e, "exchange failed");
                } else {
                    tracing::warn!(event = "exchange_refused", code = e.code(), node = %client.code, peer = %self.peer_text(), error = %e, "exchange refused");
                }
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    self.event(
                        SecurityEventKind::LimitExceeded,
                        Some(&client),
                        format!("too_large: {e}"),
                    )
                    .await;
                }
                refusal(status, e.code(), e.to_string(), e.detail(), e.hint())
            }
        }
    }

    /// Reads, decompresses, depth-checks and parses the body within the
    /// limits.
    async fn read_envelope<S, B>(&self, mut body: S) -> Result<Envelope, Rejected>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
        B: Buf,
    {
        let limits = self.guard.limits();
        let max = limits.max_body_bytes;
        let read = async {
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk.map_err(|e| {
                    Rejected::Corrupt(format!("the request body could not be read: {e}"))
                })?;
                if buf.len() + chunk.remaining() > max {
                    return Err(Rejected::Limit(
                        Refusal::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_large",
                            format!("the request body is over the limit of {max} bytes"),
                        )
                        .hint("send smaller packets"),
                    ));
                }
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    let n = part.len();
                    buf.extend_from_slice(part);
                    chunk.advance(n);
                }
            }
            Ok(buf.freeze())
        };
        let bytes = match tokio::time::timeout(limits.body_read_timeout(), read).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Rejected::Limit(
                    Refusal::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        format!(
                            "the request body did not arrive within {} s",
                            limits.body_read_timeout_secs
                        ),
                    )
                    .hint("check the connection; send smaller packets on a slow link"),
                ));
            }
        };
        let json =
            protocol::gunzip(&bytes, limits.max_decompressed_bytes).map_err(|e| match e {
                CodecError::DecompressedTooLarge { limit } => Rejected::Limit(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the packet decompresses to more than {limit} bytes"),
                )),
                other => Rejected::Corrupt(other.to_string()),
            })?;
        if json_depth_exceeds(&json, limits.max_json_depth) {
            return Err(Rejected::Limit(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the packet nests arrays/objects deeper than {} levels",
                    limits.max_json_depth
                ),
            )));
        }
        serde_json::from_slice(&json)
            .map_err(|e| Rejected::Corrupt(CodecError::Json(e).to_string()))
    }
}

enum Rejected {
    Limit(Refusal),
    Corrupt(String),
}

fn gzip_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "content-encoding",
        warp::http::HeaderValue::from_static("gzip"),
    );
    resp
}

/// A protocol refusal, gzip JSON like every protocol answer.
pub fn refusal(
    status: StatusCode,
    code: &str,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
            detail,
            hint,
        },
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    match protocol::gzip(&json) {
        Ok(bytes) => gzip_response(status, bytes),
        Err(_) => {
            let mut resp = Response::new(json.into());
            *resp.status_mut() = status;
            resp
        }
    }
}
