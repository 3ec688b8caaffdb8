//! References between entities: where an entity type's data holds the uuid of
//! another entity (`x-hubsync-ref`) or of its hierarchical parent
//! (`x-hubsync-parent`), found once when the schema set loads.
//!
//! The sync engine uses these to apply referenced entities before what refers
//! to them and to check referential integrity (contract §7.8). This module
//! owns finding the locations in a schema and reading the uuids at those
//! locations in data; it must never decide what to do about a missing target.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;
use uuid::Uuid;

use super::SchemaProblem;
use super::documents::{Documents, for_each_subschema, push_token};

/// The framework keyword naming the referenced type.
pub(super) const REF_KEYWORD: &str = "x-hubsync-ref";
/// The framework keyword marking the hierarchical parent.
pub(super) const PARENT_KEYWORD: &str = "x-hubsync-parent";
/// The framework keyword on a reference property: what deleting the
/// referenced entity does to the entities that still refer to it.
pub(super) const ON_DELETE_KEYWORD: &str = "x-hubsync-on-delete";

/// What deleting a referenced entity does to its live referrers
/// (`x-hubsync-on-delete` on the reference property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDelete {
    /// The delete is refused while live entities refer to the target.
    #[default]
    Restrict,
    /// The referrers are soft-deleted with it, in the same transaction.
    Cascade,
    /// The reference is removed from each referrer (the property is
    /// dropped; the referrer must stay valid without it).
    Detach,
}

impl OnDelete {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Restrict => "restrict",
            OnDelete::Cascade => "cascade",
            OnDelete::Detach => "detach",
        }
    }
}

/// One step of a path into entity data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// An object member.
    Field(String),
    /// Every element of an array (a tabular part such as a report's `lines`).
    AnyIndex,
}

/// A property of an entity type that holds the uuid of another entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the uuid sits in the data, e.g. `[Field("lines"), AnyIndex, Field("employee")]`.
    pub path: Vec<PathSegment>,
    /// The same path for humans: `/lines/*/employee`.
    pub pointer: String,
    /// The referenced type's name. For `x-hubsync-parent` without
    /// `x-hubsync-ref`, the entity's own type.
    pub target: String,
    /// Whether this is the type's hierarchical parent.
    pub is_parent: bool,
    /// What deleting the referenced entity does to the referrer.
    pub on_delete: OnDelete,
}

impl Reference {
    /// Every uuid at this reference's location in `data`. Null or absent
    /// values and strings that are not uuids are skipped (validation reports
    /// the latter).
    pub fn values(&self, data: &Value) -> Vec<Uuid> {
        let mut leaves = Vec::new();
        collect_leaves(data, &self.path, &mut leaves);
        leaves
            .into_iter()
            .filter_map(Value::as_str)
            .filter_map(|s| Uuid::try_parse(s).ok())
            .collect()
    }
}

impl Reference {
    /// Every uuid at this reference's location in `data`, with the concrete
    /// JSON pointer where it sits (`/lines/2/employee`), for error messages.
    pub fn locate(&self, data: &Value) -> Vec<(String, Uuid)> {
        let mut out = Vec::new();
        locate_leaves(data, &self.path, String::new(), &mut out);
        out
    }
}

fn locate_leaves(value: &Value, path: &[PathSegment], at: String, out: &mut Vec<(String, Uuid)>) {
    let Some((first, rest)) = path.split_first() else {
        if let Some(u) = value.as_str().and_then(|s| Uuid::try_parse(s).ok()) {
            out.push((at, u));
        }
        return;
    };
    match (first, value) {
        (PathSegment::Field(name), Value::Object(object)) => {
            if let Some(member) = object.get(name) {
                locate_leaves(member, rest, push_token(&at, name), out);
            }
        }
        (PathSegment::AnyIndex, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                locate_leaves(item, rest, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn collect_leaves<'d>(value: &'d Value, path: &[PathSegment], out: &mut Vec<&'d Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match (first, value) {
        (PathSegment::Field(name), Value::Object(object)) => {
            if let Some(member) = object.get(name) {
                collect_leaves(member, rest, out);
            }
        }
        (PathSegment::AnyIndex, Value::Array(items)) => {
            for item in items {
                collect_leaves(item, rest, out);
            }
        }
        _ => {}
    }
}

fn human_pointer(path: &[PathSegment]) -> String {
    path.iter()
        .fold(String::new(), |acc, segment| match segment {
            PathSegment::Field(name) => push_token(&acc, name),
            PathSegment::AnyIndex => format!("{acc}/*"),
        })
}

/// Finds every reference of the entity type in `file`, checking the
/// framework keywords on the way. Follows `properties`, array `items`, `$ref`
/// (also into shared files) and `allOf`/`anyOf`/`oneOf`, which is how data
/// nests; a recursive `$ref` is followed once.
pub(super) fn discover(
    docs: &Documents,
    file: &str,
    type_name: &str,
    known_types: &BTreeSet<String>,
    problems: &mut Vec<SchemaProblem>,
) -> Vec<Reference> {
    let Some(root) = docs.get(file) else {
        return Vec::new();
    };
    let mut finder = Finder {
        docs,
        type_name,
        known_types,
        problems,
        references: Vec::new(),
        stack: Vec::new(),
        seen_keywords: HashSet::new(),
        parent_at: None,
    };
    finder.walk(root, file, String::new(), Vec::new());
    let Finder {
        references,
        seen_keywords,
        ..
    } = finder;

    // A keyword the walk never reached would be silently ignored; say so.
    for_each_subschema(root, "", &mut |node, pointer| {
        let has_keyword = node.contains_key(REF_KEYWORD) || node.contains_key(PARENT_KEYWORD);
        if has_keyword && !seen_keywords.contains(&(file.to_owned(), pointer.to_owned())) {
            problems.push(SchemaProblem::new(
                file,
                pointer,
                format!(
                    "{REF_KEYWORD}/{PARENT_KEYWORD} here is not on a property of the entity's data \
                     (reachable from the top through properties, items, $ref, allOf/anyOf/oneOf), \
                     so hubsync would ignore it; move it onto the uuid property it describes"
                ),
            ));
        }
    });
    references
}

struct Finder<'a, 'p> {
    docs: &'a Documents,
    type_name: &'a str,
    known_types: &'a BTreeSet<String>,
    problems: &'p mut Vec<SchemaProblem>,
    references: Vec<Reference>,
    /// (file, pointer) of the schemas being walked, to stop at recursion.
    stack: Vec<(String, String)>,
    /// (file, pointer) of every schema whose framework keywords were read.
    seen_keywords: HashSet<(String, String)>,
    /// Where the first parent was declared, to name it if there is another.
    parent_at: Option<(String, String)>,
}

impl Finder<'_, '_> {
    fn walk(&mut self, node: &Value, file: &str, pointer: String, path: Vec<PathSegment>) {
        let Value::Object(object) = node else {
            return;
        };
        let here = (file.to_owned(), pointer.clone());
        if self.stack.contains(&here) {
            return;
        }
        self.stack.push(here.clone());

        if object.contains_key(REF_KEYWORD) || object.contains_key(PARENT_KEYWORD) {
            self.seen_keywords.insert(here);
            self.found(node, file, &pointer, &path);
        }
        if let Some(Value::String(reference)) = object.get("$ref")
            && let Ok(target) = self.docs.resolve(file, reference)
        {
            // Dangling refs are reported by the loader's $ref check.
            self.walk(target.node, target.file, target.pointer, path.clone());
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = object.get(keyword) {
                for (i, branch) in branches.iter().enumerate() {
                    self.walk(
                        branch,
                        file,
                        format!("{pointer}/{keyword}/{i}"),
                        path.clone(),
                    );
                }
            }
        }
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, property) in properties {
                let mut child = path.clone();
                child.push(PathSegment::Field(name.clone()));
                let at = push_token(&format!("{pointer}/properties"), name);
                self.walk(property, file, at, child);
            }
        }
        if let Some(items @ Value::Object(_)) = object.get("items") {
            let mut child = path.clone();
            child.push(PathSegment::AnyIndex);
            self.walk(items, file, format!("{pointer}/items"), child);
        }
        self.stack.pop();
    }

    /// Reads the framework keywords on the schema of the property at `path`.
    fn found(&mut self, node: &Value, file: &str, pointer: &str, path: &[PathSegment]) {
        let mut problem = |at: String, message: String| {
            self.problems.push(SchemaProblem::new(file, at, message));
        };
        if path.is_empty() {
            problem(
                pointer.to_owned(),
                format!(
                    "{REF_KEYWORD}/{PARENT_KEYWORD} is on the entity type itself; put it on the uuid property \
                     that holds the reference"
                ),
            );
            return;
        }
        let is_parent = match node.get(PARENT_KEYWORD) {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                problem(
                    push_token(pointer, PARENT_KEYWORD),
                    format!("{PARENT_KEYWORD} must be true or false, found {other}"),
                );
                false
            }
        };
        let target = match node.get(REF_KEYWORD) {
            Some(Value::String(name)) if self.known_types.contains(name) => name.clone(),
            Some(Value::String(name)) => {
                problem(
                    push_token(pointer, REF_KEYWORD),
                    format!(
                        "{REF_KEYWORD} names {name:?}, which is not an entity type of this set (known: {}); \
                         fix the name or add {name}.schema.json",
                        self.known_types
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return;
            }
            Some(other) => {
                problem(
                    push_token(pointer, REF_KEYWORD),
                    format!(
                        "{REF_KEYWORD} must be the name of an entity type (a string), found {other}"
                    ),
                );
                return;
            }
            None if is_parent => self.type_name.to_owned(),
            // `x-hubsync-parent: false` alone: nothing to record.
            None => return,
        };
        if !is_uuid_string(self.docs, file, node, 0) {
            problem(
                pointer.to_owned(),
                "a reference property must hold one uuid: declare \"type\": \"string\" (or [\"string\", \"null\"]) \
                 and \"format\": \"uuid\", directly or through $ref"
                    .to_owned(),
            );
        }
        if is_parent && path.contains(&PathSegment::AnyIndex) {
            problem(
                push_token(pointer, PARENT_KEYWORD),
                format!(
                    "{PARENT_KEYWORD} is inside an array, but an entity has at most one parent; \
                     use {REF_KEYWORD} alone for references in tabular parts"
                ),
            );
            return;
        }
        if is_parent {
            let location = (file.to_owned(), pointer.to_owned());
            match &self.parent_at {
                Some((first_file, first_pointer))
                    if (first_file, first_pointer) != (&location.0, &location.1) =>
                {
                    problem(
                        push_token(pointer, PARENT_KEYWORD),
                        format!(
                            "a second {PARENT_KEYWORD} in type {} (the first is at {first_file} {first_pointer}); \
                             an entity has at most one parent, keep one and use {REF_KEYWORD} alone for the others",
                            self.type_name
                        ),
                    );
                    return;
                }
                Some(_) => {}
                None => self.parent_at = Some(location),
            }
        }
        let on_delete = match node.get(ON_DELETE_KEYWORD) {
            None => OnDelete::Restrict,
            Some(Value::String(v)) if v == "restrict" => OnDelete::Restrict,
            Some(Value::String(v)) if v == "cascade" => OnDelete::Cascade,
            Some(Value::String(v)) if v == "detach" => OnDelete::Detach,
            Some(other) => {
                problem(
                    push_token(pointer, ON_DELETE_KEYWORD),
                    format!(
                        "{ON_DELETE_KEYWORD} must be \"restrict\", \"cascade\" or \"detach\", found {other}"
                    ),
                );
                OnDelete::Restrict
            }
        };
        let reference = Reference {
            on_delete,
            pointer: human_pointer(path),
            path: path.to_vec(),
            target,
            is_parent,
        };
        match self
            .references
            .iter()
            .find(|r| r.pointer == reference.pointer)
        {
            Some(existing) if *existing == reference => {}
            Some(existing) => {
                let message = format!(
                    "data path {} is declared as a reference to {} here and to {} elsewhere; declare it once",
                    reference.pointer, reference.target, existing.target
                );
                problem(pointer.to_owned(), message);
            }
            None => self.references.push(reference),
        }
    }
}

/// Whether the schema at `node` (following `$ref` for what it does not say
/// itself) is a uuid string, optionally nullable.
fn is_uuid_string(docs: &Documents, file: &str, node: &Value, depth: usize) -> bool {
    let mut declared_type = node.get("type");
    let mut format = node.get("format");
    let (mut file, mut node) = (file, node);
    // Bounded: a $ref chain longer than this is a cycle or not worth following.
    for _ in depth..16 {
        if declared_type.is_some() && format.is_some() {
            break;
        }
        let Some(Value::String(reference)) = node.get("$ref") else {
            break;
        };
        let Ok(target) = docs.resolve(file, reference) else {
            break;
        };
        (file, node) = (target.file, target.node);
        declared_type = declared_type.or_else(|| node.get("type"));
        format = format.or_else(|| node.get("format"));
    }
    let type_ok = match declared_type {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => {
            types.iter().any(|t| t == "string")
                && types.iter().all(|t| t == "string" || t == "null")
        }
        _ => false,
    };
    type_ok && format.and_then(Value::as_str) == Some("uuid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathSegment {
        PathSegment::Field(name.to_owned())
    }

    #[test]
    fn values_walk_fields_and_every_array_element() {
        let reference = Reference {
            path: vec![field("lines"), PathSegment::AnyIndex, field("employee")],
            pointer: "/lines/*/employee".into(),
            target: "Employee".into(),
            is_parent: false,
            on_delete: OnDelete::Restrict,
        };
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let data = json!({"lines": [
            {"employee": a.to_string()},
            {"employee": null},
            {},
            {"employee": "not-a-uuid"},
            {"employee": b.to_string()},
            "not an object"
        ]});
        assert_eq!(reference.values(&data), vec![a, b]);
        assert_eq!(reference.values(&json!({"lines": "x"})), Vec::<Uuid>::new());
        assert_eq!(reference.values(&json!(null)), Vec::<Uuid>::new());
    }

    #[test]
    fn human_pointer_escapes_and_marks_arrays() {
        assert_eq!(
            human_pointer(&[field("a/b"), PathSegment::AnyIndex, field("c~d")]),
            "/a~1b/*/c~0d"
        );
    }

    #[test]
    fn uuid_shape_follows_ref_for_what_the_property_does_not_say() {
        let mut docs = Documents::default();
        docs.insert(
            "common.json".into(),
            json!({"$defs": {
                "Uuid": {"type": "string", "format": "uuid"},
                "Text": {"type": "string"}
            }}),
        );
        let check = |node: Value, expected: bool| {
            assert_eq!(
                is_uuid_string(&docs, "A.schema.json", &node, 0),
                expected,
                "{node}"
            );
        };
        check(json!({"type": "string", "format": "uuid"}), true);
        check(json!({"type": ["string", "null"], "format": "uuid"}), true);
        check(json!({"$ref": "common.json#/$defs/Uuid"}), true);
        check(
            json!({"$ref": "common.json#/$defs/Text", "format": "uuid"}),
            true,
        );
        check(json!({"$ref": "common.json#/$defs/Text"}), false);
        check(json!({"type": "string"}), false);
        check(json!({"type": "integer", "format": "uuid"}), false);
        check(
            json!({"type": ["string", "integer"], "format": "uuid"}),
            false,
        );
        check(json!({"type": "null", "format": "uuid"}), false);
        check(json!({"$ref": "missing.json"}), false);
    }
}
