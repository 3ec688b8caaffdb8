//! What a change weighs on the wire, computed without serializing it.
//!
//! Packets are bounded in bytes ([`PacketLimits::max_bytes`]) and progress
//! counts bytes, so every change sent or received is sized. Serializing
//! each one into a counter for that cost as much as serializing the packet
//! itself (6 % of a master's CPU during a download, docs/benchmarks.md,
//! session 20); walking the data tree and adding up lengths costs a
//! fraction of it.
//!
//! [`PacketLimits::max_bytes`]: super::PacketLimits::max_bytes

use std::sync::LazyLock;

use serde_json::Value;

use crate::protocol::WireChange;

/// The serialized size of `changes` (each followed by a comma), never less
/// than what `serde_json` writes for them: each change's data and type are
/// measured exactly, its other fields at their widest.
pub(crate) fn approx_size(changes: &[WireChange]) -> usize {
    changes
        .iter()
        .map(|c| *FIXED + str_len(&c.entity_type) + json_len(&c.data) + 1)
        .sum()
}

/// A change's bytes besides its type's text and its data: those of a change
/// with every optional field present and as wide as it gets, an empty type
/// and null data, less those two.
static FIXED: LazyLock<usize> = LazyLock::new(|| {
    use chrono::TimeZone;
    let widest = WireChange {
        entity_type: String::new(),
        uuid: uuid::Uuid::max(),
        operation: crate::entity::Operation::Insert,
        data: Value::Null,
        // Nanoseconds, the longest fraction chrono writes.
        updated_at: chrono::Utc
            .timestamp_opt(253_402_300_799, 999_999_999)
            .single()
            .unwrap_or_default(),
        is_deleted: false,
        base_rev: Some(i64::MIN),
        rev: Some(i64::MIN),
        origin_node_id: Some(uuid::Uuid::max()),
    };
    let mut n = Counter(0);
    // Cannot fail: string keys, and a writer that never does.
    let _ = serde_json::to_writer(&mut n, &widest);
    n.0.saturating_sub(str_len("") + json_len(&Value::Null))
});

/// Exactly what `serde_json::to_writer` (compact) writes for `value`.
pub(crate) fn json_len(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            let mut c = Counter(0);
            let _ = serde_json::to_writer(&mut c, n);
            c.0
        }
        Value::String(s) => str_len(s),
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(json_len).sum::<usize>()
        }
        Value::Object(map) => {
            2 + map.len().saturating_sub(1)
                + map
                    .iter()
                    .map(|(k, v)| str_len(k) + 1 + json_len(v))
                    .sum::<usize>()
        }
    }
}

/// A JSON string's length with its quotes and escapes, as serde_json
/// writes it: `"` and `\` and the five short control escapes take two
/// bytes, other control characters six (`\u00XX`), everything else itself.
/// Eight bytes at a time: most text has nothing to escape.
fn str_len(s: &str) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `x` is below `n` (n ≤ 128; exact).
    fn any_below(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0
    }
    fn any_is(x: u64, b: u8) -> bool {
        any_below(x ^ (ONES * u64::from(b)), 1)
    }
    fn extra(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum()
    }
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    let mut more = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if any_below(x, 0x20) || any_is(x, b'"') || any_is(x, b'\\') {
            more += extra(chunk);
        }
    }
    2 + bytes.len() + more + extra(chunks.remainder())
}

/// Counts the bytes written to it (no buffer is built).
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            // Control characters, quotes, backslashes and non-ASCII.
            "[\\x00-\\x1f\"\\\\a-z\u{e9}\u{4e2d}\u{1f600}\u{7f}]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-z\"\\\\\\x01]{0,6}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Feature: sync-system, Property 23: For any multiple changes, they should be transmitted in batches to optimize network utilization
        // (a packet's byte bound is only as good as the sizes it adds up:
        // the computed length of any data is what serde_json writes)
        #[test]
        fn json_len_is_the_serialized_length(v in any_json()) {
            let written = serde_json::to_vec(&v).expect("serialize");
            prop_assert_eq!(json_len(&v), written.len(), "{}", String::from_utf8_lossy(&written));
        }

        // Feature: sync-system, Property 23: For any multiple changes, they should be transmitted in batches to optimize network utilization
        // (a change is never sized below what it weighs on the wire, and
        // at most by its absent fields above it)
        #[test]
        fn a_change_is_sized_at_least_at_its_weight(
            data in any_json(),
            entity_type in "[A-Za-z\"]{1,20}",
            rev in proptest::option::of(any::<i64>()),
            base_rev in proptest::option::of(any::<i64>()),
            deleted in any::<bool>(),
            nanos in 0u32..1_000_000_000,
        ) {
            use chrono::TimeZone;
            let change = WireChange {
                entity_type,
                uuid: uuid::Uuid::from_u128(7),
                operation: crate::entity::Operation::Update,
                data,
                updated_at: chrono::Utc.timestamp_opt(1_790_000_000, nanos).single().expect("time"),
                is_deleted: deleted,
                base_rev,
                rev,
                origin_node_id: None,
            };
            let written = serde_json::to_vec(&change).expect("serialize").len() + 1;
            let sized = approx_size(std::slice::from_ref(&change));
            prop_assert!(sized >= written, "sized {} < written {}", sized, written);
            prop_assert!(sized <= written + 160, "sized {} far above written {}", sized, written);
        }
    }
}
