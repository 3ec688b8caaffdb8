//! The sync protocol endpoint (master): `POST /sync/v1/exchange`.
//!
//! Authenticates the bearer token, decodes the gzip envelope within limits,
//! hands it to the engine, and answers with the engine's gzip envelope — or
//! with a refusal `{"error": {"code", "message", "detail", "hint"}}`.

use std::sync::Arc;

use bytes::Bytes;
use hubsync_core::protocol::{self, CodecError, DecodeLimits, ErrorBody, ErrorDetail};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::auth::token_hash;
use crate::listener::PeerAddr;
use crate::node::Node;

/// The exchange route.
pub fn route(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let limits = DecodeLimits {
        max_compressed: node
            .config
            .listen
            .as_ref()
            .map_or(16 << 20, |l| l.max_body_bytes),
        max_decompressed: node
            .config
            .listen
            .as_ref()
            .map_or(64 << 20, |l| l.max_body_bytes.saturating_mul(4)),
    };
    warp::path!("sync" / "v1" / "exchange")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-encoding"))
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::body::content_length_limit(
            limits.max_compressed as u64,
        ))
        .and(warp::body::bytes())
        .then(move |auth, encoding, peer, body| {
            let node = node.clone();
            async move { handle(node, limits, auth, encoding, peer, body).await }
        })
}

async fn handle(
    node: Arc<Node>,
    limits: DecodeLimits,
    auth: Option<String>,
    encoding: Option<String>,
    peer: Option<PeerAddr>,
    body: Bytes,
) -> Response {
    let peer = peer.map(|p| p.0.to_string()).unwrap_or_default();
    let token = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        node.metrics.record_auth_failure();
        tracing::warn!(event = "auth_failure", peer = %peer, reason = "no bearer token", "sync request refused");
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no bearer token".into(),
            None,
            Some(
                "send `Authorization: Bearer <token>` with the token `hubsync node add` printed"
                    .into(),
            ),
        );
    };
    let found = match node
        .engine
        .store()
        .get_node_by_token_hash(&token_hash(token))
        .await
    {
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
        other => {
            node.metrics.record_auth_failure();
            let reason = if other.is_some() {
                "node revoked"
            } else {
                "unknown token"
            };
            tracing::warn!(event = "auth_failure", peer = %peer, reason, node = other.as_ref().map(|n| n.code.as_str()).unwrap_or(""), "sync request refused");
            return refusal(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the token is not valid for this master".into(),
                None,
                Some("check [master].token; an operator can issue a new one with `hubsync node rotate-token`".into()),
            );
        }
    };
    if !encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
    {
        node.metrics.record_exchange(false);
        return refusal(
            StatusCode::BAD_REQUEST,
            "corrupt_packet",
            "the packet must be gzip-compressed JSON with `Content-Encoding: gzip`".into(),
            None,
            Some("rebuild the packet and send it again".into()),
        );
    }
    let envelope = match protocol::decode_envelope(&body, limits) {
        Ok(e) => e,
        Err(e) => {
            node.metrics.record_exchange(false);
            tracing::warn!(event = "corrupt_packet", node = %client.code, peer = %peer, bytes = body.len(), error = %e, "packet refused");
            let (status, code) = match e {
                CodecError::CompressedTooLarge { .. } | CodecError::DecompressedTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
                }
                _ => (StatusCode::BAD_REQUEST, "corrupt_packet"),
            };
            return refusal(status, code, e.to_string(), None, None);
        }
    };
    match node.engine.handle_exchange(client.id, &envelope).await {
        Ok(answer) => {
            node.metrics.record_exchange(true);
            tracing::debug!(node = %client.code, packet_no = envelope.header.packet_no, received = envelope.body.entities.len(), sent = answer.body.entities.len(), "exchange");
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
            node.metrics.record_exchange(false);
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(node = %client.code, error = %e, "exchange failed");
            } else {
                tracing::warn!(event = "exchange_refused", code = e.code(), node = %client.code, peer = %peer, error = %e, "exchange refused");
            }
            refusal(status, e.code(), e.to_string(), e.detail(), e.hint())
        }
    }
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
