//! The `envelope` and `gzip` targets: the packet codec as the master runs
//! it, without sockets or a store.

use std::sync::OnceLock;

use hubsync::config::LimitsConfig;
use hubsync::guard::json_depth_exceeds;
use hubsync_core::protocol::{self, CodecError, DecodeLimits, Envelope};
use hubsync_core::schema::EntityRegistry;

/// The decompression cap of the fuzz targets: small, so that a bomb costs
/// little time, and several times any seed.
pub const FUZZ_MAX_DECOMPRESSED: usize = 1 << 20;

/// The limits the fuzz targets decode under: the defaults, with a small
/// decompression cap.
pub fn fuzz_limits() -> LimitsConfig {
    LimitsConfig {
        max_decompressed_bytes: FUZZ_MAX_DECOMPRESSED,
        max_body_bytes: FUZZ_MAX_DECOMPRESSED,
        ..LimitsConfig::default()
    }
}

/// Why a packet was refused before the engine.
#[derive(Debug)]
pub enum Refused {
    /// 413: over a size, depth or count limit.
    TooLarge(String),
    /// 400: not gzip, not JSON, not an envelope.
    Corrupt(String),
}

/// Decodes a request body in the order and with the checks of the master's
/// exchange handler (`host/src/exchange.rs`, `read_envelope` and the entity
/// count): compressed size, decompression under the cap, the nesting scan
/// before any parser, the envelope parse, the entity count.
pub fn decode_packet(gz: &[u8], limits: &LimitsConfig) -> Result<Envelope, Refused> {
    if gz.len() > limits.max_body_bytes {
        return Err(Refused::TooLarge(format!("{} bytes compressed", gz.len())));
    }
    let json = protocol::gunzip(gz, limits.max_decompressed_bytes).map_err(|e| match e {
        CodecError::DecompressedTooLarge { limit } => {
            Refused::TooLarge(format!("over {limit} bytes decompressed"))
        }
        other => Refused::Corrupt(other.to_string()),
    })?;
    if json_depth_exceeds(&json, limits.max_json_depth) {
        return Err(Refused::TooLarge("nesting".into()));
    }
    let envelope: Envelope =
        serde_json::from_slice(&json).map_err(|e| Refused::Corrupt(e.to_string()))?;
    if envelope.body.entities.len() > limits.max_entities_per_packet {
        return Err(Refused::TooLarge("entities".into()));
    }
    Ok(envelope)
}

/// The example schema set, loaded once.
pub fn registry() -> &'static EntityRegistry {
    static REGISTRY: OnceLock<EntityRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        EntityRegistry::load_dir(&crate::schemas_dir())
            .unwrap_or_else(|e| panic!("the example schema set must load: {e}"))
    })
}

/// Target `envelope`: `json` gzipped, then decoded as the master does.
/// Invariants: never a panic; an accepted envelope re-encodes and decodes
/// to itself (Property 16); schema validation and the reference scan of
/// every entity return (valid or not) without panicking.
pub fn envelope(json: &[u8]) {
    let limits = fuzz_limits();
    let gz = match protocol::gzip(json) {
        Ok(gz) => gz,
        Err(e) => panic!("gzip of {} bytes in memory failed: {e}", json.len()),
    };
    let envelope = match decode_packet(&gz, &limits) {
        Ok(envelope) => envelope,
        Err(Refused::TooLarge(_) | Refused::Corrupt(_)) => return,
    };
    let again = protocol::encode_envelope(&envelope)
        .unwrap_or_else(|e| panic!("an accepted envelope must re-encode: {e}"));
    let back = protocol::decode_envelope(&again, DecodeLimits::default())
        .unwrap_or_else(|e| panic!("a re-encoded envelope must decode: {e}"));
    assert_eq!(back, envelope, "the envelope changed in a round trip");
    let registry = registry();
    for change in &envelope.body.entities {
        let _ = registry.validate(&change.entity_type, &change.data);
        if let Some(entity_type) = registry.get(&change.entity_type) {
            let _ = entity_type.reference_values(&change.data);
        }
    }
}

/// The caps the `gzip` target decodes under, picked by the first byte.
const CAPS: [usize; 6] = [0, 1, 64, 4096, 65_536, FUZZ_MAX_DECOMPRESSED];

/// Target `gzip`: the first byte picks a cap, the rest is the gzip input.
/// Invariants: never a panic; a result never exceeds its cap; decoding
/// under a cap agrees with decoding under the largest cap (a success is
/// the same bytes, "too large" means more than the cap, a corrupt stream
/// within the cap is corrupt under both); what `gzip` packs unpacks to
/// itself (Property 22).
pub fn gzip(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let cap = CAPS[usize::from(pick) % CAPS.len()];
    let capped = protocol::gunzip(input, cap);
    let full = protocol::gunzip(input, FUZZ_MAX_DECOMPRESSED);
    match (&capped, &full) {
        (Ok(out), _) => {
            assert!(out.len() <= cap, "{} bytes under a cap of {cap}", out.len());
            match &full {
                Ok(all) => assert_eq!(all, out, "a larger cap decoded other bytes"),
                Err(e) => panic!("decoded under a cap of {cap} but not under a larger one: {e}"),
            }
        }
        (Err(CodecError::DecompressedTooLarge { limit }), _) => {
            assert_eq!(*limit, cap);
            if let Ok(all) = &full {
                assert!(
                    all.len() > cap,
                    "too large for {cap} but only {}",
                    all.len()
                );
            }
        }
        (Err(CodecError::Gzip(_)), Ok(all)) => {
            panic!(
                "corrupt under a cap of {cap} but {} valid bytes under a larger one",
                all.len()
            )
        }
        (Err(CodecError::Gzip(_)), Err(_)) => {}
        (Err(other), _) => panic!("gunzip failed with an unexpected error: {other}"),
    }
    let packed =
        protocol::gzip(input).unwrap_or_else(|e| panic!("gzip in memory must not fail: {e}"));
    let unpacked = protocol::gunzip(&packed, input.len())
        .unwrap_or_else(|e| panic!("what gzip packed must unpack: {e}"));
    assert_eq!(unpacked, input, "gzip round trip");
}
