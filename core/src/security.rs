//! Security events: what the host records when it refuses, throttles or
//! locks out a request, and when an operator issues, rotates or revokes a
//! credential (contract §5, the security event log).
//!
//! Events live in the node's own store (`security_events`, store migration
//! 3) through [`Store::record_security_event`](crate::store::Store) and are
//! read back with [`Store::security_events`](crate::store::Store). They are
//! written outside data transactions: most of them happen before any data
//! is touched (an unknown token, a body too large).
//!
//! An event never carries a token, a key, a certificate or entity data: the
//! `detail` is written by the host from fixed phrases, numbers and at most a
//! short fingerprint of a token's SHA-256 hash (see [`token_fingerprint`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened. Stored as its [`as_str`](SecurityEventKind::as_str) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityEventKind {
    /// A request without a valid credential: no or malformed token, unknown
    /// token, revoked node, missing or mismatched client certificate.
    AuthFailed,
    /// Too many authentication failures from one address or for one node:
    /// further attempts are refused for a while.
    Lockout,
    /// An authenticated node asked for something that is not its own
    /// (another node's identity, queue or packets).
    AuthzDenied,
    /// A request broke a resource limit: body size, entities per packet,
    /// nesting depth, read timeout, concurrent exchanges, rate.
    LimitExceeded,
    /// `node add` issued a token (and possibly a client certificate).
    TokenIssued,
    /// `node rotate-token` replaced a node's token.
    TokenRotated,
    /// `node revoke` revoked a node.
    TokenRevoked,
}

impl SecurityEventKind {
    pub const ALL: [SecurityEventKind; 7] = [
        SecurityEventKind::AuthFailed,
        SecurityEventKind::Lockout,
        SecurityEventKind::AuthzDenied,
        SecurityEventKind::LimitExceeded,
        SecurityEventKind::TokenIssued,
        SecurityEventKind::TokenRotated,
        SecurityEventKind::TokenRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEventKind::AuthFailed => "auth_failed",
            SecurityEventKind::Lockout => "lockout",
            SecurityEventKind::AuthzDenied => "authz_denied",
            SecurityEventKind::LimitExceeded => "limit_exceeded",
            SecurityEventKind::TokenIssued => "token_issued",
            SecurityEventKind::TokenRotated => "token_rotated",
            SecurityEventKind::TokenRevoked => "token_revoked",
        }
    }

    pub fn parse(s: &str) -> Option<SecurityEventKind> {
        SecurityEventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Every kind's text, comma-separated (for error messages).
    pub fn names() -> String {
        SecurityEventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for SecurityEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One security event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// When it happened (UTC, microseconds).
    pub at: DateTime<Utc>,
    pub kind: SecurityEventKind,
    /// The node concerned, when known (the authenticated node, the node a
    /// token or certificate named, the node an operator acted on).
    pub node_id: Option<Uuid>,
    /// That node's code, when known.
    pub node_code: Option<String>,
    /// The remote address (`ip:port`), when the event comes from a request.
    pub peer: Option<String>,
    /// What happened, in words: never a token, key or entity data.
    pub detail: String,
}

impl SecurityEvent {
    /// An event of `kind` now, with no node and no peer.
    pub fn new(kind: SecurityEventKind, detail: impl Into<String>) -> Self {
        SecurityEvent {
            at: crate::entity::now_utc(),
            kind,
            node_id: None,
            node_code: None,
            peer: None,
            detail: detail.into(),
        }
    }

    pub fn node(mut self, id: Uuid, code: &str) -> Self {
        self.node_id = Some(id);
        self.node_code = Some(code.to_string());
        self
    }

    pub fn peer(mut self, peer: impl std::fmt::Display) -> Self {
        self.peer = Some(peer.to_string());
        self
    }
}

/// Which events [`Store::security_events`](crate::store::Store) returns:
/// those matching every filter set, the newest `limit`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEventQuery {
    /// Only events at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub kind: Option<SecurityEventKind>,
    /// Only events about this node.
    pub node_id: Option<Uuid>,
    pub limit: u32,
}

impl Default for SecurityEventQuery {
    fn default() -> Self {
        SecurityEventQuery {
            since: None,
            kind: None,
            node_id: None,
            limit: 100,
        }
    }
}

/// A short, non-reversible fingerprint of a token hash (its first 8 hex
/// digits), enough to tell two attempts with the same token apart in the
/// log. Never log more of a hash, and never the token itself.
pub fn token_fingerprint(token_hash_hex: &str) -> String {
    token_hash_hex.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_text() {
        for kind in SecurityEventKind::ALL {
            assert_eq!(SecurityEventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(SecurityEventKind::parse("nope"), None);
    }

    #[test]
    fn a_fingerprint_is_eight_hex_digits_at_most() {
        assert_eq!(token_fingerprint(&"ab".repeat(32)), "abababab");
        assert_eq!(token_fingerprint("abc"), "abc");
    }
}
