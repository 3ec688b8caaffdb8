//! Wire types of the sync protocol (see docs/protocol.md) and their codec.
//!
//! These types are the protocol, not the domain: they change only with
//! [`PROTOCOL_VERSION`]. Decoding is defensive: sizes are capped before and
//! after decompression and every refusal says what to do.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::Operation;

/// Version of the wire format. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// What this master says in `body.results_kept`: it answers a node's last
/// packet and the one before it again with their results.
pub const RESULTS_KEPT: u32 = 2;

/// One packet: a header and a body, the design's envelope extended with what
/// correct conflict detection and acknowledgement need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub header: Header,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Wire format version; absent means 1.
    #[serde(default = "default_protocol")]
    pub protocol: u32,
    pub sender_node_id: Uuid,
    pub recipient_node_id: Uuid,
    /// The sender's packet number to this recipient. A packet with no
    /// entities that does not advance the number is a pure poll.
    pub packet_no: i64,
    /// The last packet of the recipient that the sender has applied.
    pub ack_packet_no: i64,
    /// The sender's schema set version (MAJOR.MINOR.PATCH).
    pub schema_version: String,
    pub timestamp: DateTime<Utc>,
}

fn default_protocol() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Body {
    #[serde(default)]
    pub entities: Vec<WireChange>,
    /// Master to client only: the outcome of every change of the packet
    /// acknowledged by `ack_packet_no`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ChangeResult>,
    /// Master to client only: more changes are waiting after this packet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// Master to client, with `more`: about how many changes wait after
    /// this packet (for progress and its ETA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Master to client only: entities that left the node's routing scope;
    /// the client drops its copies (unless it has unsent changes of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evict: Vec<Eviction>,
    /// Master to client: how many of the client's latest packets the master
    /// answers again with their results when they come again (2: the last
    /// one and the one before; absent or 0: only the last, as masters
    /// before it did). A client sends its next packet before it has applied
    /// an answer only to a master that says 2 or more (docs/protocol.md).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub results_kept: u32,
    /// Client to master: a master packet the client has received and is
    /// applying, not acknowledged yet; the master may answer with the
    /// packet after it instead of sending this one again (docs/protocol.md,
    /// "Built ahead for a download").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<i64>,
    /// Master to client: the master builds its next packet for a request
    /// that says it is `holding` the last one. A client asks only a master
    /// that says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sends_ahead: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An entity a node no longer receives (it left the node's scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub uuid: Uuid,
}

/// One entity change as it travels: the complete state of the entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireChange {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub uuid: Uuid,
    pub operation: Operation,
    pub data: Value,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub is_deleted: bool,
    /// Client to master: the master revision the client's version is based
    /// on (`null`: the client never received this entity from the master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_rev: Option<i64>,
    /// Master to client: the master revision of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
    /// Master to client: the node whose write produced this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_node_id: Option<Uuid>,
}

/// What the master did with one change of a client packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No conflict: the client's version is now the master's at `rev`.
    Applied,
    /// Conflict, resolved in favour of the client's version, now at `rev`.
    ConflictIncomingWon,
    /// Conflict, resolved in favour of the master's version; the client
    /// receives the master's version in a later packet.
    ConflictMasterWon,
    /// Conflict, resolved by a merged version, sent to the client later.
    ConflictMerged,
    /// Conflict left to a person (manual queue); the master's version stands
    /// until then.
    ConflictDeferred,
    /// Not applied yet: it references an entity the master does not hold.
    /// The master keeps it and applies it when the reference arrives (the
    /// sender then receives the applied version with its revision), or
    /// hands it to the manual queue if it never does (contract §7.8).
    Held,
    /// Refused: applying it would break referential integrity (a delete of
    /// an entity live entities still reference under a `restrict` policy, or
    /// a move that makes a hierarchy cyclic). The master's version stands
    /// and reaches the sender; the refused version is kept in history.
    Rejected,
}

impl Outcome {
    /// True when the master now holds exactly the client's version, so the
    /// client's copy is based on `rev` from now on.
    pub fn client_version_taken(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::ConflictIncomingWon)
    }

    pub fn is_conflict(self) -> bool {
        !matches!(self, Outcome::Applied | Outcome::Held)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::ConflictIncomingWon => "conflict_incoming_won",
            Outcome::ConflictMasterWon => "conflict_master_won",
            Outcome::ConflictMerged => "conflict_merged",
            Outcome::ConflictDeferred => "conflict_deferred",
            Outcome::Held => "held",
            Outcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeResult {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub uuid: Uuid,
    pub outcome: Outcome,
    /// The master revision of the entity after the change was handled.
    pub rev: i64,
    /// The `updated_at` of the version the master now holds when it took
    /// the client's (`applied`, `conflict_incoming_won`). A client whose
    /// copy still has that `updated_at` knows the master holds exactly its
    /// state, even when the packet was a resend rebuilt after a later edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The `updated_at` of the client's version this result is about,
    /// whatever the outcome. A client whose copy still has it and still
    /// has it queued (an edit made while its packet travelled, the packet
    /// then sent again with it) has nothing left to send of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_updated_at: Option<DateTime<Utc>>,
}

/// A refusal, as the JSON body of a non-2xx protocol response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Why a packet could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("packet is {size} bytes compressed, over the limit of {limit}; send smaller packets")]
    CompressedTooLarge { size: usize, limit: usize },
    #[error(
        "packet decompresses to more than {limit} bytes; refused (send smaller packets, or raise the receiver's limit)"
    )]
    DecompressedTooLarge { limit: usize },
    #[error("packet is not valid gzip: {0}; the sender should rebuild and send it again")]
    Gzip(std::io::Error),
    #[error("packet is not a valid envelope: {0}; the sender should rebuild and send it again")]
    Json(serde_json::Error),
    #[error("could not encode the packet: {0}")]
    Encode(String),
}

/// Limits applied when decoding a packet.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_compressed: usize,
    pub max_decompressed: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_compressed: 16 << 20,
            max_decompressed: 64 << 20,
        }
    }
}

/// Serializes and gzip-compresses an envelope (Property 22).
pub fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    let json = serde_json::to_vec(env).map_err(|e| CodecError::Encode(e.to_string()))?;
    gzip(&json)
}

/// Gzip-compresses bytes at the level chosen for packets.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    // Level 1: on a packet of 500 reports it compresses in a tenth of level
    // 6's time (~2 µs an entity with free text, against ~25) for 1.35–1.5×
    // its bytes; the bytes saved repay the CPU only on links slower than
    // ~15 Mbit/s (level 6) or ~50 Mbit/s (level 3), and the master
    // compresses every node's answers (`hubsync-bench gzip`, docs/benchmarks.md).
    let mut enc = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::fast(),
    );
    enc.write_all(bytes)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    enc.finish().map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decompresses at most `limit` bytes; a gzip bomb stops at the limit with
/// memory bounded by it.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let mut dec = GzDecoder::new(bytes).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(CodecError::Gzip)?;
    if out.len() > limit {
        return Err(CodecError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Decompresses and parses a gzip JSON envelope within `limits`.
pub fn decode_envelope(bytes: &[u8], limits: DecodeLimits) -> Result<Envelope, CodecError> {
    if bytes.len() > limits.max_compressed {
        return Err(CodecError::CompressedTooLarge {
            size: bytes.len(),
            limit: limits.max_compressed,
        });
    }
    let json = gunzip(bytes, limits.max_decompressed)?;
    serde_json::from_slice(&json).map_err(CodecError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: Uuid::new_v4(),
                recipient_node_id: Uuid::new_v4(),
                packet_no: 105,
                ack_packet_no: 98,
                schema_version: "1.2.0".into(),
                timestamp: crate::entity::now_utc(),
            },
            body: Body {
                entities: vec![WireChange {
                    entity_type: "DailyReport".into(),
                    uuid: Uuid::new_v4(),
                    operation: Operation::Update,
                    data: serde_json::json!({"date": "2025-12-12", "lines": []}),
                    updated_at: crate::entity::now_utc(),
                    is_deleted: false,
                    base_rev: Some(7),
                    rev: None,
                    origin_node_id: None,
                }],
                results: vec![],
                more: false,
                remaining: None,
                evict: Vec::new(),
                results_kept: 0,
                holding: None,
                sends_ahead: false,
            },
        }
    }

    #[test]
    fn envelope_round_trips_through_gzip() {
        let env = sample();
        let bytes = encode_envelope(&env).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        assert_eq!(
            decode_envelope(&bytes, DecodeLimits::default()).unwrap(),
            env
        );
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 8 << 20]).unwrap();
        assert!(bomb.len() < 64 << 10);
        let err = gunzip(&bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, CodecError::DecompressedTooLarge { .. }));
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let bytes = encode_envelope(&sample()).unwrap();
        let err = decode_envelope(&bytes[..bytes.len() / 2], DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, CodecError::Gzip(_)), "{err}");
    }
}
