//! Entity data and conflict inputs for property tests: generated from an
//! entity type's JSON Schema (the subset schema sets use: `type`, `enum`,
//! `const`, `properties`/`required`, `items`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `format` date/date-time/uuid, `$ref` within the
//! set), or generic JSON objects.

use std::collections::HashMap;
use std::path::Path;

use hubsync_core::schema::EntityRegistry;
use hubsync_resolver_api::{ConflictInput, Version};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// An entity type to generate conflicts for, and the validator of its data.
#[derive(Clone)]
pub struct TypeSchema {
    name: String,
    schema: Option<Value>,
    /// Every document of the schema set by file name (for `$ref`).
    documents: HashMap<String, Value>,
    file: String,
    registry: Option<EntityRegistry>,
}

impl std::fmt::Debug for TypeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeSchema")
            .field("name", &self.name)
            .finish()
    }
}

impl TypeSchema {
    /// The type `type_name` of the schema set in `dir` (loaded by the same
    /// registry as the host: cross-file `$ref`, formats).
    pub fn from_dir(dir: &Path, type_name: &str) -> Result<TypeSchema, String> {
        let registry = EntityRegistry::load_dir(dir).map_err(|e| e.to_string())?;
        let ty = registry.get(type_name).ok_or_else(|| {
            format!(
                "the schema set {} has no type {type_name}; it has {}",
                dir.display(),
                registry.type_names().join(", ")
            )
        })?;
        let mut documents = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(doc) = serde_json::from_str::<Value>(&text)
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                documents.insert(name.to_string(), doc);
            }
        }
        Ok(TypeSchema {
            name: type_name.to_string(),
            schema: Some(ty.schema.clone()),
            file: ty.file.display().to_string(),
            documents,
            registry: Some(registry.clone()),
        })
    }

    /// A single self-contained schema (no cross-file `$ref`), named by its
    /// `title`.
    pub fn standalone(schema: Value) -> Result<TypeSchema, String> {
        let title = schema
            .get("title")
            .and_then(Value::as_str)
            .ok_or("the schema needs a \"title\": the entity type's name")?
            .to_string();
        let file = format!("{title}.schema.json");
        let registry = EntityRegistry::from_files(vec![
            (file.clone(), schema.to_string()),
            ("schema-set.json".into(), r#"{"version": "1.0.0"}"#.into()),
        ])
        .map_err(|e| e.to_string())?;
        Ok(TypeSchema {
            name: title,
            documents: [(file.clone(), schema.clone())].into(),
            schema: Some(schema),
            file,
            registry: Some(registry),
        })
    }

    /// Any JSON object, no validation: for resolvers that do not look at
    /// the data's shape.
    pub fn any_object() -> TypeSchema {
        TypeSchema {
            name: "AnyObject".into(),
            schema: None,
            documents: HashMap::new(),
            file: String::new(),
            registry: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }

    /// Validates business data against the type's schema.
    pub fn validate(&self, data: &Value) -> Result<(), String> {
        match &self.registry {
            Some(r) => r.validate(&self.name, data).map_err(|e| e.to_string()),
            None if data.is_object() => Ok(()),
            None => Err("not a JSON object".into()),
        }
    }

    /// Valid data of this type.
    pub fn data(&self) -> BoxedStrategy<Value> {
        match &self.schema {
            Some(schema) => {
                let this = self.clone();
                value(schema, &self.file, &self.documents, 0)
                    .prop_filter("valid for the schema", move |v| this.validate(v).is_ok())
                    .boxed()
            }
            None => any_object(),
        }
    }
}

/// Generic JSON objects over a few shared keys (so that two of them
/// overlap and differ in interesting ways).
pub fn any_object() -> BoxedStrategy<Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..10).prop_map(|n| json!(n)),
        "[a-c]{0,3}".prop_map(Value::String),
    ];
    let leaf = prop_oneof![
        3 => scalar.clone(),
        1 => prop::collection::vec(scalar, 0..3).prop_map(Value::Array),
    ];
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c", "d", "e"]),
        leaf,
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    .boxed()
}

const UUIDS: &[&str] = &[
    "0190a000-0000-7000-8000-000000000001",
    "0190a000-0000-7000-8000-000000000002",
    "0190a000-0000-7000-8000-000000000003",
];

/// Three node ids, so that ties and repeats happen.
pub const NODE_IDS: &[&str] = &[
    "0190b000-0000-7000-8000-00000000000a",
    "0190b000-0000-7000-8000-00000000000b",
    "0190b000-0000-7000-8000-00000000000c",
];

fn resolve_ref<'a>(
    reference: &str,
    file: &str,
    documents: &'a HashMap<String, Value>,
) -> Option<(&'a Value, String)> {
    let (doc_name, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let doc_name = if doc_name.is_empty() { file } else { doc_name };
    let doc = documents.get(doc_name)?;
    let target = if pointer.is_empty() {
        doc
    } else {
        doc.pointer(pointer)?
    };
    Some((target, doc_name.to_string()))
}

fn value(
    schema: &Value,
    file: &str,
    documents: &HashMap<String, Value>,
    depth: u32,
) -> BoxedStrategy<Value> {
    if depth > 6 {
        return Just(Value::Null).boxed();
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return match resolve_ref(r, file, documents) {
            Some((target, doc)) => value(target, &doc, documents, depth + 1),
            None => Just(Value::Null).boxed(),
        };
    }
    if let Some(c) = schema.get("const") {
        return Just(c.clone()).boxed();
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.is_empty()
    {
        return prop::sample::select(options.clone()).boxed();
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ if schema.get("properties").is_some() => vec!["object".into()],
        _ => vec!["string".into(), "integer".into(), "boolean".into()],
    };
    let strategies: Vec<BoxedStrategy<Value>> = types
        .iter()
        .map(|t| typed(t, schema, file, documents, depth))
        .collect();
    prop::strategy::Union::new(strategies).boxed()
}

fn typed(
    ty: &str,
    schema: &Value,
    file: &str,
    documents: &HashMap<String, Value>,
    depth: u32,
) -> BoxedStrategy<Value> {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    match ty {
        "null" => Just(Value::Null).boxed(),
        "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
        "integer" => {
            let lo = num("minimum").unwrap_or(0.0) as i64;
            let hi = num("maximum").unwrap_or(100.0) as i64;
            (lo..=hi.max(lo)).prop_map(|n| json!(n)).boxed()
        }
        "number" => {
            // Halves within the bounds: exact in JSON, equal after a round trip.
            let lo = (num("minimum").unwrap_or(0.0) * 2.0).ceil() as i64;
            let hi = (num("maximum").unwrap_or(100.0) * 2.0).floor() as i64;
            (lo..=hi.max(lo))
                .prop_map(|n| json!(n as f64 / 2.0))
                .boxed()
        }
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("uuid") => prop::sample::select(UUIDS.to_vec())
                .prop_map(|s| json!(s))
                .boxed(),
            Some("date") => (1u32..=12, 1u32..=28)
                .prop_map(|(m, d)| json!(format!("2025-{m:02}-{d:02}")))
                .boxed(),
            Some("date-time") => (0u32..24, 0u32..60)
                .prop_map(|(h, m)| json!(format!("2025-06-01T{h:02}:{m:02}:00Z")))
                .boxed(),
            _ => {
                let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                let max = schema
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .unwrap_or(6)
                    .min(6)
                    .max(min);
                proptest::string::string_regex(&format!("[a-z]{{{min},{max}}}"))
                    .map(|s| s.prop_map(Value::String).boxed())
                    .unwrap_or_else(|_| Just(Value::String(String::new())).boxed())
            }
        },
        "array" => {
            let item = schema
                .get("items")
                .map(|i| value(i, file, documents, depth + 1))
                .unwrap_or_else(|| Just(Value::Null).boxed());
            prop::collection::vec(item, 0..4)
                .prop_map(Value::Array)
                .boxed()
        }
        "object" => {
            let required: Vec<String> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let props: Vec<(String, BoxedStrategy<Option<Value>>)> = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, s)| {
                            let v = value(s, file, documents, depth + 1);
                            let field = if required.contains(k) {
                                v.prop_map(Some).boxed()
                            } else {
                                prop::option::of(v).boxed()
                            };
                            (k.clone(), field)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (names, fields): (Vec<String>, Vec<_>) = props.into_iter().unzip();
            fields
                .prop_map(move |values| {
                    let mut m = Map::new();
                    for (k, v) in names.iter().zip(values) {
                        if let Some(v) = v {
                            m.insert(k.clone(), v);
                        }
                    }
                    Value::Object(m)
                })
                .boxed()
        }
        _ => Just(Value::Null).boxed(),
    }
}

/// One version of an entity: data, a timestamp from a narrow range (so
/// ties happen), one of [`NODE_IDS`] (or none), sometimes deleted.
pub fn version_with(data: BoxedStrategy<Value>) -> BoxedStrategy<Version> {
    (
        data,
        prop::bool::weighted(0.1),
        1_750_000_000_000_000i64..1_750_000_000_000_004,
        prop::option::weighted(0.9, prop::sample::select(NODE_IDS.to_vec())),
    )
        .prop_map(|(data, is_deleted, us, node)| Version {
            data,
            is_deleted,
            updated_at: format_us(us),
            updated_at_us: us,
            node_id: node.map(str::to_string),
        })
        .boxed()
}

/// `updated_at_us` as the host formats it (RFC 3339, microseconds, `Z`).
pub fn format_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Mixes two objects field by field: `pick[i]` takes field `i` from `b`.
fn mix(a: &Value, b: &Value, pick: &[bool]) -> Value {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a.clone();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for (i, k) in keys.into_iter().enumerate() {
        let from = if pick.get(i).copied().unwrap_or(false) {
            b
        } else {
            a
        };
        if let Some(v) = from.get(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Conflicts on `schema`'s type: a base version, and master and incoming
/// versions that each change some of the base's fields (so fields changed
/// on one side, on both, or on neither all occur). The base is passed half
/// of the time.
pub fn conflict_inputs(schema: &TypeSchema) -> BoxedStrategy<ConflictInput> {
    let name = schema.name().to_string();
    let raw = schema.schema().cloned();
    let valid = schema.clone();
    let data = schema.data();
    let picks = prop::collection::vec(any::<bool>(), 12);
    (
        version_with(data.clone()),
        version_with(data.clone()),
        version_with(data),
        picks.clone(),
        picks,
        any::<bool>(),
        prop::sample::select(UUIDS.to_vec()),
    )
        .prop_map(
            move |(base, mut master, mut incoming, pm, pi, with_base, uuid)| {
                // Keep the mixtures only if still valid (a schema may relate fields).
                let m = mix(&base.data, &master.data, &pm);
                if valid.validate(&m).is_ok() {
                    master.data = m;
                }
                let i = mix(&base.data, &incoming.data, &pi);
                if valid.validate(&i).is_ok() {
                    incoming.data = i;
                }
                ConflictInput {
                    entity_type: name.clone(),
                    entity_uuid: uuid.to_string(),
                    master,
                    incoming,
                    base: with_base.then_some(base),
                    schema: raw.clone(),
                    options: Map::new(),
                }
            },
        )
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_formatted_like_the_host() {
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_us(1_750_000_000_123_456),
            "2025-06-15T15:06:40.123456Z"
        );
    }
}
