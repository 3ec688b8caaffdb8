//! Mutations of seed inputs for the stable driver (cargo-fuzz brings its
//! own). Deterministic: the same seed and operations give the same input,
//! so that proptest can shrink a failure to a small list of operations.

use serde_json::{Value, json};

/// One mutation: what to do, where (an index taken modulo the input's
/// size) and with what (a byte, or an index into [`INTERESTING`]).
pub type Op = (u8, u32, u32);

/// Values that tend to break parsers and validators.
pub fn interesting(i: u32) -> Value {
    let long = "x".repeat(5000);
    let all = [
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(-0.0),
        json!(0.5),
        json!(""),
        json!(long),
        json!("\u{0000}\u{fffd}\u{1F600}"),
        json!("2026-02-30"),
        json!("2026-11-24T10:30:00Z"),
        json!("9999-12-31T23:59:60.999999999+23:59"),
        json!("00000000-0000-0000-0000-000000000000"),
        json!("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        json!("$SENDER"),
        json!("$OTHER"),
        json!("$MASTER"),
        json!("INSERT"),
        json!("UPDATE"),
        json!("DELETE"),
        json!("Brigade"),
        json!("DailyReport"),
        json!("#/$defs/Uuid"),
        json!("common.json#/$defs/Nope"),
        json!("^(a+)+$"),
        json!([]),
        json!({}),
        (0..40).fold(json!(1), |v, _| json!([v])),
        json!({"$ref": "#"}),
        json!({"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}}),
    ];
    all[i as usize % all.len()].clone()
}

/// Byte-level mutations: flip, set, insert, delete a range, duplicate a
/// range, truncate.
pub fn bytes(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(kind, at, with) in ops {
        let len = out.len();
        let pos = if len == 0 { 0 } else { at as usize % len };
        let byte = with as u8;
        match kind % 6 {
            0 if len > 0 => out[pos] ^= 1 << (with % 8),
            1 if len > 0 => out[pos] = byte,
            2 => out.insert(pos.min(len), byte),
            3 if len > 0 => {
                let end = (pos + 1 + with as usize % 16).min(len);
                out.drain(pos..end);
            }
            4 if len > 0 => {
                let end = (pos + 1 + with as usize % 64).min(len);
                let copy = out[pos..end].to_vec();
                out.splice(pos..pos, copy);
            }
            5 => out.truncate(pos),
            _ => {}
        }
    }
    out
}

/// JSON-level mutations of a seed that is JSON (the envelope and exchange
/// seeds): pick a node in document order and replace it with an
/// interesting value, remove it, or duplicate it. A seed that is not JSON
/// gets byte-level mutations instead.
pub fn json(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(seed) else {
        return bytes(seed, ops);
    };
    for &(kind, at, with) in ops {
        let count = count_nodes(&doc);
        let mut target = at as usize % count.max(1);
        edit_nth(&mut doc, &mut target, kind, with);
    }
    serde_json::to_vec(&doc).unwrap_or_else(|_| seed.to_vec())
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies one edit to the `n`th node (pre-order); returns true once done.
fn edit_nth(v: &mut Value, n: &mut usize, kind: u8, with: u32) -> bool {
    if *n == 0 {
        match kind % 4 {
            // Children are edited by their parent (remove, duplicate).
            0 | 1 => *v = interesting(with),
            2 => match v {
                Value::Array(items) if !items.is_empty() => {
                    let i = with as usize % items.len();
                    items.remove(i);
                }
                Value::Object(map) if !map.is_empty() => {
                    let key = map.keys().nth(with as usize % map.len()).cloned();
                    if let Some(key) = key {
                        map.shift_remove(&key);
                    }
                }
                _ => *v = Value::Null,
            },
            _ => match v {
                Value::Array(items) if !items.is_empty() => {
                    let i = with as usize % items.len();
                    let copy = items[i].clone();
                    items.insert(i, copy);
                }
                Value::Object(map) => {
                    map.insert(format!("k{}", with % 8), interesting(with / 8));
                }
                _ => *v = json!([v.clone(), v.clone()]),
            },
        }
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|item| edit_nth(item, n, kind, with)),
        Value::Object(map) => map.values_mut().any(|item| edit_nth(item, n, kind, with)),
        _ => false,
    }
}
