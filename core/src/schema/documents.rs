//! The parsed JSON documents of one schema set and how `$ref` resolves between
//! them, as hubsync understands it.
//!
//! jsonschema does the real resolution for validation; this module exists so
//! the loader can (a) name a dangling `$ref` by file and pointer instead of
//! failing the whole set at the first one, and (b) follow `$ref` when looking
//! for `x-hubsync-*` keywords and a reference property's type. It must never
//! fetch anything: a schema set is exactly the files in its directory.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The base URI under which every file of the set is registered with
/// jsonschema (`<BASE_URI><file name>`), so that a relative `$ref` such as
/// `common.json#/$defs/Hours` resolves to a sibling file. The `.invalid` TLD
/// is reserved: nothing is ever fetched from it.
pub(super) const BASE_URI: &str = "https://schemas.hubsync.invalid/";

/// The schema documents of a set (entity files and shared definition files),
/// by file name.
#[derive(Debug, Default)]
pub(super) struct Documents {
    docs: BTreeMap<String, Value>,
}

/// Where a `$ref` leads.
pub(super) struct Target<'a> {
    pub file: &'a str,
    pub pointer: String,
    pub node: &'a Value,
}

/// Why a `$ref` does not lead to a known place.
pub(super) enum RefError {
    /// Absolute URI or a path outside the set's directory.
    Outside,
    /// A file name that is not in the set.
    MissingFile(String),
    /// The file exists but the JSON pointer fragment does not.
    MissingPointer { file: String, pointer: String },
    /// A plain-name fragment (`#anchor`); jsonschema resolves those, we do not.
    Anchor,
}

impl Documents {
    pub fn insert(&mut self, file: String, doc: Value) {
        self.docs.insert(file, doc);
    }

    pub fn get(&self, file: &str) -> Option<&Value> {
        self.docs.get(file)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.docs.iter()
    }

    pub fn file_names(&self) -> Vec<&str> {
        self.docs.keys().map(String::as_str).collect()
    }

    /// Resolves `reference` (a `$ref` value) written in `from_file`.
    pub fn resolve<'a>(
        &'a self,
        from_file: &'a str,
        reference: &str,
    ) -> Result<Target<'a>, RefError> {
        let (doc_part, fragment) = match reference.split_once('#') {
            Some((doc, fragment)) => (doc, fragment),
            None => (reference, ""),
        };
        let doc_part = doc_part.strip_prefix(BASE_URI).unwrap_or(doc_part);
        let doc_part = doc_part.trim_start_matches("./");
        let (file, doc) = if doc_part.is_empty() {
            let doc = self.docs.get(from_file).ok_or(RefError::Outside)?;
            (from_file, doc)
        } else {
            // A scheme, an absolute path or a sub-directory all leave the set.
            if doc_part.contains(':') || doc_part.contains('/') || doc_part.contains('\\') {
                return Err(RefError::Outside);
            }
            let name = percent_decode(doc_part);
            match self.docs.get_key_value(name.as_str()) {
                Some((file, doc)) => (file.as_str(), doc),
                None => return Err(RefError::MissingFile(name)),
            }
        };
        if fragment.is_empty() {
            return Ok(Target {
                file,
                pointer: String::new(),
                node: doc,
            });
        }
        if !fragment.starts_with('/') {
            return Err(RefError::Anchor);
        }
        let pointer = percent_decode(fragment);
        match doc.pointer(&pointer) {
            Some(node) => Ok(Target {
                file,
                pointer,
                node,
            }),
            None => Err(RefError::MissingPointer {
                file: file.to_owned(),
                pointer,
            }),
        }
    }
}

/// Decodes `%XX` escapes (URI fragments and file names in a `$ref` are URI
/// references); anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Appends one reference token to a JSON pointer (RFC 6901 escaping).
pub(super) fn push_token(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// Keywords whose value is one subschema.
const SCHEMA_KEYWORDS: &[&str] = &[
    "items",
    "additionalProperties",
    "additionalItems",
    "unevaluatedItems",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Calls `visit(object, pointer)` for `schema` and every subschema inside it,
/// by keyword, so that data inside `const`/`enum`/`default`/`examples` and
/// property *names* are never mistaken for schema keywords.
pub(super) fn for_each_subschema<'a>(
    schema: &'a Value,
    pointer: &str,
    visit: &mut dyn FnMut(&'a Map<String, Value>, &str),
) {
    let Value::Object(object) = schema else {
        return;
    };
    visit(object, pointer);
    for (keyword, value) in object {
        let here = push_token(pointer, keyword);
        if SCHEMA_KEYWORDS.contains(&keyword.as_str()) {
            for_each_subschema(value, &here, visit);
        } else if SCHEMA_ARRAY_KEYWORDS.contains(&keyword.as_str()) {
            if let Value::Array(items) = value {
                for (i, item) in items.iter().enumerate() {
                    for_each_subschema(item, &format!("{here}/{i}"), visit);
                }
            }
        } else if SCHEMA_MAP_KEYWORDS.contains(&keyword.as_str())
            && let Value::Object(map) = value
        {
            for (name, item) in map {
                for_each_subschema(item, &push_token(&here, name), visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs() -> Documents {
        let mut docs = Documents::default();
        docs.insert(
            "common.json".into(),
            json!({"$defs": {"Hours": {"type": "number"}, "a b": {"type": "string"}}}),
        );
        docs.insert(
            "A.schema.json".into(),
            json!({"$defs": {"X": {"type": "string"}}}),
        );
        docs
    }

    fn check(reference: &str, expected: Result<(&str, &str), &str>) {
        let docs = docs();
        let got = match docs.resolve("A.schema.json", reference) {
            Ok(t) => Ok((t.file, t.pointer)),
            Err(RefError::Outside) => Err("outside".to_owned()),
            Err(RefError::MissingFile(f)) => Err(format!("missing file {f}")),
            Err(RefError::MissingPointer { file, pointer }) => {
                Err(format!("missing {file}#{pointer}"))
            }
            Err(RefError::Anchor) => Err("anchor".to_owned()),
        };
        let expected = expected
            .map(|(f, p)| (f, p.to_owned()))
            .map_err(str::to_owned);
        assert_eq!(got, expected, "{reference}");
    }

    #[test]
    fn resolves_refs_within_the_set_only() {
        check("#/$defs/X", Ok(("A.schema.json", "/$defs/X")));
        check("#", Ok(("A.schema.json", "")));
        check(
            "common.json#/$defs/Hours",
            Ok(("common.json", "/$defs/Hours")),
        );
        check(
            "./common.json#/$defs/a%20b",
            Ok(("common.json", "/$defs/a b")),
        );
        check("common.json", Ok(("common.json", "")));
        check(
            "https://schemas.hubsync.invalid/common.json#/$defs/Hours",
            Ok(("common.json", "/$defs/Hours")),
        );
        check("#/$defs/Nope", Err("missing A.schema.json#/$defs/Nope"));
        check("other.json#/x", Err("missing file other.json"));
        check("https://example.com/s.json", Err("outside"));
        check("../elsewhere/common.json", Err("outside"));
        check("#anchor", Err("anchor"));
    }

    #[test]
    fn visits_subschemas_but_not_data_or_property_names() {
        let schema = json!({
            "properties": {
                "enum": {"type": "string", "x": 1},
                "a/b": {"items": {"$ref": "#/$defs/X"}}
            },
            "enum": [{"$ref": "not a schema"}],
            "allOf": [{"not": {}}],
            "$defs": {"X": {}}
        });
        let mut seen = Vec::new();
        for_each_subschema(&schema, "", &mut |_, p| seen.push(p.to_owned()));
        assert_eq!(
            seen,
            [
                "",
                "/properties/enum",
                "/properties/a~1b",
                "/properties/a~1b/items",
                "/allOf/0",
                "/allOf/0/not",
                "/$defs/X"
            ]
        );
    }
}
