//! The `schema` target: a schema set from arbitrary bytes through
//! `EntityRegistry::from_files`, the loader `hubsync serve`, `schema check`
//! and `init` use.

use hubsync_core::schema::EntityRegistry;
use serde_json::{Value, json};

/// Splits fuzz input into schema files: NUL separates files, the first
/// line of each is its name, the rest its contents (invalid UTF-8 is
/// replaced, as a file read as text would be refused anyway).
pub fn split_files(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .split('\0')
        .map(|file| match file.split_once('\n') {
            Some((name, text)) => (name.to_string(), text.to_string()),
            None => (file.to_string(), String::new()),
        })
        .collect()
}

/// Joins schema files into one fuzz input (the inverse of [`split_files`]).
pub fn join_files(files: &[(String, String)]) -> Vec<u8> {
    files
        .iter()
        .map(|(name, text)| format!("{name}\n{text}"))
        .collect::<Vec<_>>()
        .join("\0")
        .into_bytes()
}

/// Target `schema`. Invariants: never a panic; a refusal lists at least
/// one problem and renders; an accepted set has a version and its types
/// validate any data (valid or not) without panicking.
pub fn schema(data: &[u8]) {
    match EntityRegistry::from_files(split_files(data)) {
        Ok(registry) => {
            let _ = registry.version().to_string();
            let samples = [
                json!({}),
                Value::Null,
                json!({"name": "x", "date": "2026-11-24", "full_name": "y", "lines": [{}]}),
                json!([1, "a", null, {"b": [true]}]),
            ];
            for entity_type in registry.types() {
                for sample in &samples {
                    let _ = entity_type.validate(sample);
                    let _ = entity_type.reference_values(sample);
                }
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            let _ = e.to_string();
        }
    }
}
