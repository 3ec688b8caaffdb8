//! The entity registry: the schema set loaded from a directory, checked as a
//! whole, compiled once, and then used to validate entity data.
//!
//! Loading collects every problem of the set before failing (like a compiler
//! reporting all diagnostics), so `hubsync schema check` can list them in one
//! run. The registry is immutable after loading and cheap to clone (an `Arc`),
//! so every request handler and the sync engine share one. It reads files only
//! in [`EntityRegistry::load_dir`] and never fetches anything over a network.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Retrieve, Uri};
use serde_json::Value;
use uuid::Uuid;

use super::documents::{BASE_URI, Documents, RefError, for_each_subschema, push_token};
use super::references::{self, ON_DELETE_KEYWORD, PARENT_KEYWORD, REF_KEYWORD, Reference};
use super::{Issue, SchemaProblem, SchemaSetError, SchemaVersion, ValidateError, ValidationError};

/// The file holding the set's version.
pub const SCHEMA_SET_FILE: &str = "schema-set.json";
/// The suffix of an entity type's schema file: `<Title>.schema.json`.
pub const ENTITY_SUFFIX: &str = ".schema.json";
/// The only `$schema` accepted (with or without a trailing `#`).
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// The top-level framework keyword and the keys it may hold.
const TYPE_KEYWORD: &str = "x-hubsync";
const TYPE_KEYWORD_KEYS: &[&str] = &["conflict"];

/// The loaded schema set: entity types by name, and the set's version.
#[derive(Clone)]
pub struct EntityRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    version: SchemaVersion,
    types: BTreeMap<String, EntityType>,
}

/// One entity type: its schema, where its references are, its resolver.
pub struct EntityType {
    pub name: String,
    /// File name relative to the set's directory.
    pub file: PathBuf,
    /// The raw schema document.
    pub schema: Value,
    /// Every `x-hubsync-ref` / `x-hubsync-parent` property, including inside
    /// arrays of objects, in schema order.
    pub references: Vec<Reference>,
    /// From top-level `"x-hubsync": {"conflict": "..."}`; the resolver name is
    /// not checked here (resolvers are plugins, known only to the host).
    pub conflict: Option<String>,
    validator: jsonschema::Validator,
}

impl fmt::Debug for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityType")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("references", &self.references)
            .field("conflict", &self.conflict)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EntityRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRegistry")
            .field("version", &self.inner.version)
            .field("types", &self.type_names())
            .finish()
    }
}

impl EntityType {
    /// The `x-hubsync-parent` reference, if any.
    pub fn parent(&self) -> Option<&Reference> {
        self.references.iter().find(|r| r.is_parent)
    }

    /// Every uuid found at the reference locations in `data`, with the
    /// reference it belongs to. Null/absent values are skipped, and so are
    /// strings that are not uuids (validation reports those).
    pub fn reference_values(&self, data: &Value) -> Vec<(&Reference, Uuid)> {
        self.references
            .iter()
            .flat_map(|reference| {
                reference
                    .values(data)
                    .into_iter()
                    .map(move |id| (reference, id))
            })
            .collect()
    }

    /// Validates business data (without the framework fields) against this
    /// type's schema, formats included; collects every issue.
    pub fn validate(&self, data: &Value) -> Result<(), ValidationError> {
        let issues: Vec<Issue> = self
            .validator
            .iter_errors(data)
            .map(|error| Issue {
                path: error.instance_path().as_str().to_owned(),
                message: error.to_string(),
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                entity_type: self.name.clone(),
                issues,
            })
        }
    }
}

impl EntityRegistry {
    /// Loads every `*.schema.json` in `dir` (one entity type per file, named
    /// by `title`, file named `<Title>.schema.json`), every other `*.json`
    /// except `schema-set.json` as shared definitions for cross-file `$ref`,
    /// and `schema-set.json` (`{"version": "MAJOR.MINOR.PATCH"}`).
    /// Sub-directories and files with other extensions are ignored.
    ///
    /// Reports all problems at once, each with its file and JSON pointer.
    pub fn load_dir(dir: &Path) -> Result<EntityRegistry, SchemaSetError> {
        let dir_name = dir.display().to_string();
        let fail = |message: String| SchemaSetError {
            dir: dir_name.clone(),
            problems: vec![SchemaProblem::new("", "", message)],
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            fail(format!(
                "cannot list the schema directory: {e}; check the path (config `--schemas`) and its permissions"
            ))
        })?;
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(SchemaProblem::new(
                        "",
                        "",
                        format!("cannot list the schema directory: {e}"),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") || path.is_dir() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                problems.push(SchemaProblem::new(
                    path.display().to_string(),
                    "",
                    "file name is not valid UTF-8; rename the file",
                ));
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((name, text)),
                Err(e) => problems.push(SchemaProblem::new(
                    name,
                    "",
                    format!("cannot read the file: {e}; check that it is readable UTF-8 text"),
                )),
            }
        }
        let loader = Loader {
            problems,
            ..Loader::default()
        };
        loader.load(files).map_err(|mut e| {
            e.dir = dir_name;
            e
        })
    }

    /// Same as [`load_dir`](Self::load_dir), from in-memory files
    /// (file name -> contents).
    pub fn from_files(files: Vec<(String, String)>) -> Result<EntityRegistry, SchemaSetError> {
        Loader::default().load(files)
    }

    pub fn version(&self) -> SchemaVersion {
        self.inner.version
    }

    /// The entity type names, sorted.
    pub fn type_names(&self) -> Vec<String> {
        self.inner.types.keys().cloned().collect()
    }

    /// The entity types, sorted by name.
    pub fn types(&self) -> impl Iterator<Item = &EntityType> {
        self.inner.types.values()
    }

    pub fn get(&self, type_name: &str) -> Option<&EntityType> {
        self.inner.types.get(type_name)
    }

    pub fn contains(&self, type_name: &str) -> bool {
        self.inner.types.contains_key(type_name)
    }

    /// Validates `data` (the entity's business data, WITHOUT the framework
    /// fields uuid/updated_at/is_deleted) against the type's schema, formats
    /// included. Collects every issue.
    ///
    /// Returns [`ValidateError::UnknownType`] for a type not in the set (a
    /// 404, not a 422), listing the known types.
    pub fn validate(&self, type_name: &str, data: &Value) -> Result<(), ValidateError> {
        let entity_type = self
            .get(type_name)
            .ok_or_else(|| ValidateError::UnknownType {
                name: type_name.to_owned(),
                known: self.type_names(),
            })?;
        Ok(entity_type.validate(data)?)
    }
}

/// One loading run: accumulates problems instead of returning at the first.
#[derive(Default)]
struct Loader {
    problems: Vec<SchemaProblem>,
    /// Files whose meta-schema problems are already reported: compiling them
    /// would only repeat the first of those (jsonschema stops at one error).
    skip_compile: BTreeSet<String>,
    /// Files with a dangling `$ref` already reported: a reference error from
    /// compiling them is that same problem again.
    bad_refs: BTreeSet<String>,
}

/// What the first pass learned about an entity file.
struct EntityFile {
    file: String,
    title: Option<String>,
    conflict: Option<String>,
}

impl Loader {
    fn problem(&mut self, file: &str, pointer: &str, message: impl Into<String>) {
        self.problems
            .push(SchemaProblem::new(file, pointer, message));
    }

    fn load(mut self, mut files: Vec<(String, String)>) -> Result<EntityRegistry, SchemaSetError> {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut version = None;
        let mut saw_set_file = false;
        let mut docs = Documents::default();
        let mut entity_files = Vec::new();
        // Types named by their file, even when the file is broken: a broken
        // Brigade.schema.json should not also make every ref to Brigade "unknown".
        let mut known_types = BTreeSet::new();

        for (name, text) in &files {
            if name.contains(['/', '\\']) || !name.ends_with(".json") {
                self.problem(name, "", "not a schema set file name: expected <name>.json directly in the set's directory");
                continue;
            }
            if let Some(stem) = name.strip_suffix(ENTITY_SUFFIX) {
                known_types.insert(stem.to_owned());
            }
            let Some(doc) = self.parse(name, text) else {
                if name == SCHEMA_SET_FILE {
                    saw_set_file = true;
                }
                continue;
            };
            if name == SCHEMA_SET_FILE {
                saw_set_file = true;
                version = self.set_version(&doc);
                continue;
            }
            if !is_uri_safe(name) {
                self.problem(
                    name,
                    "",
                    "file name cannot be used in a $ref: use only letters, digits, '.', '_' and '-'; rename the file",
                );
                continue;
            }
            if !doc.is_object() {
                self.problem(
                    name,
                    "",
                    "a schema file must contain a JSON object; wrap the schema in { }",
                );
                continue;
            }
            self.check_document(name, &doc);
            if name.ends_with(ENTITY_SUFFIX) {
                let entity = self.check_entity_file(name, &doc);
                entity_files.push(entity);
            }
            docs.insert(name.clone(), doc);
        }
        if !saw_set_file {
            self.problem(
                SCHEMA_SET_FILE,
                "",
                format!(
                    "missing: every schema set declares its version in {SCHEMA_SET_FILE}; \
                     create it with {{\"version\": \"1.0.0\"}}"
                ),
            );
        }
        // Counted by file name: an entity file that fails to parse is already
        // reported, and the set is not "empty" because of it.
        if known_types.is_empty() {
            self.problem(
                "",
                "",
                format!(
                    "no entity types: add at least one <Type>{ENTITY_SUFFIX} file to the schema set"
                ),
            );
        }
        self.check_titles(&entity_files);
        for (name, doc) in docs.iter() {
            self.check_refs(&docs, name, doc);
        }

        let mut discovered = BTreeMap::new();
        for entity in &entity_files {
            if let Some(title) = &entity.title {
                let refs = references::discover(
                    &docs,
                    &entity.file,
                    title,
                    &known_types,
                    &mut self.problems,
                );
                discovered.insert(entity.file.clone(), refs);
            }
        }

        let mut validators = self.compile(&docs);

        let mut types = BTreeMap::new();
        for entity in entity_files {
            let (Some(title), Some(validator), Some(references), Some(schema)) = (
                entity.title,
                validators.remove(&entity.file),
                discovered.remove(&entity.file),
                docs.get(&entity.file),
            ) else {
                continue;
            };
            types.insert(
                title.clone(),
                EntityType {
                    name: title,
                    file: PathBuf::from(&entity.file),
                    schema: schema.clone(),
                    references,
                    conflict: entity.conflict,
                    validator,
                },
            );
        }

        // Group by file for the reader; within a file, keep the order found.
        self.problems.sort_by(|a, b| a.file.cmp(&b.file));
        match version {
            Some(version) if self.problems.is_empty() => Ok(EntityRegistry {
                inner: Arc::new(Inner { version, types }),
            }),
            _ => Err(SchemaSetError {
                dir: "<in-memory>".to_owned(),
                problems: self.problems,
            }),
        }
    }

    fn parse(&mut self, name: &str, text: &str) -> Option<Value> {
        match serde_json::from_str(text) {
            Ok(doc) => Some(doc),
            Err(e) => {
                // serde_json's message ends with " at line L column C"; say it our way.
                let detail = e.to_string();
                let detail = detail
                    .split(" at line ")
                    .next()
                    .unwrap_or(&detail)
                    .to_owned();
                self.problem(
                    name,
                    "",
                    format!(
                        "invalid JSON at line {}, column {}: {detail}; fix the syntax",
                        e.line(),
                        e.column()
                    ),
                );
                None
            }
        }
    }

    fn set_version(&mut self, doc: &Value) -> Option<SchemaVersion> {
        let hint =
            "write it as {\"version\": \"MAJOR.MINOR.PATCH\"}, e.g. {\"version\": \"1.0.0\"}";
        let Some(object) = doc.as_object() else {
            self.problem(
                SCHEMA_SET_FILE,
                "",
                format!("must be a JSON object; {hint}"),
            );
            return None;
        };
        for key in object.keys().filter(|k| *k != "version") {
            self.problem(
                SCHEMA_SET_FILE,
                &push_token("", key),
                format!("unknown key {key:?}; the only key is \"version\""),
            );
        }
        match object.get("version") {
            Some(Value::String(text)) => match text.parse() {
                Ok(version) => Some(version),
                Err(e) => {
                    self.problem(SCHEMA_SET_FILE, "/version", e.to_string());
                    None
                }
            },
            Some(other) => {
                self.problem(
                    SCHEMA_SET_FILE,
                    "/version",
                    format!("must be a string, found {other}; {hint}"),
                );
                None
            }
            None => {
                self.problem(SCHEMA_SET_FILE, "", format!("has no \"version\"; {hint}"));
                None
            }
        }
    }

    /// Checks every schema document (entity or shared): draft, meta-schema,
    /// `$id`, framework keyword names.
    fn check_document(&mut self, name: &str, doc: &Value) {
        match doc.get("$schema") {
            None => {}
            Some(Value::String(uri)) if uri.trim_end_matches('#') == DRAFT_2020_12 => {}
            Some(other) => self.problem(
                name,
                "/$schema",
                format!(
                    "schemas must be JSON Schema draft 2020-12, found {other}; \
                     set \"$schema\": \"{DRAFT_2020_12}\" or remove it"
                ),
            ),
        }
        let meta = jsonschema::draft202012::meta::validator();
        for error in meta.iter_errors(doc) {
            self.skip_compile.insert(name.to_owned());
            let pointer = error.instance_path().as_str();
            // The meta-schema's anyOf for "type" yields an unhelpful message.
            let detail = if pointer.ends_with("/type")
                && matches!(error.kind(), ValidationErrorKind::AnyOf { .. })
            {
                format!(
                    "{} is not a JSON Schema type; use one of array, boolean, integer, null, number, object, string \
                     (or an array of them)",
                    error.instance()
                )
            } else {
                error.to_string()
            };
            self.problem(
                name,
                pointer,
                format!("not a valid JSON Schema (draft 2020-12): {detail}"),
            );
        }
        let is_entity = name.ends_with(ENTITY_SUFFIX);
        let mut found = Vec::new();
        for_each_subschema(doc, "", &mut |node, pointer| {
            if node.contains_key("$id") {
                found.push((
                    push_token(pointer, "$id"),
                    "$id is not supported in a schema set: hubsync identifies every file by its file name, \
                     so that \"$ref\": \"common.json#/...\" works; remove $id"
                        .to_owned(),
                ));
            }
            for key in node.keys().filter(|k| k.starts_with("x-hubsync")) {
                let known = key == REF_KEYWORD
                    || key == PARENT_KEYWORD
                    || (key == ON_DELETE_KEYWORD && node.contains_key(REF_KEYWORD))
                    || (key == ON_DELETE_KEYWORD && node.contains_key(PARENT_KEYWORD))
                    || (key == TYPE_KEYWORD && pointer.is_empty());
                if known {
                    if key == TYPE_KEYWORD && !is_entity {
                        found.push((
                            push_token(pointer, key),
                            format!("{TYPE_KEYWORD} belongs at the top of an entity type file (<Type>{ENTITY_SUFFIX}), not in shared definitions"),
                        ));
                    }
                    continue;
                }
                let why = if key == TYPE_KEYWORD {
                    format!("{TYPE_KEYWORD} is only allowed at the top of an entity type's schema")
                } else {
                    format!("unknown framework keyword {key:?}")
                };
                found.push((
                    push_token(pointer, key),
                    format!(
                        "{why}; hubsync knows {REF_KEYWORD} and {PARENT_KEYWORD} (on properties), \
                         {ON_DELETE_KEYWORD} (beside one of them) and {TYPE_KEYWORD} (at the top); fix the spelling or remove it"
                    ),
                ));
            }
        });
        for (pointer, message) in found {
            self.problem(name, &pointer, message);
        }
    }

    /// Checks what makes a file an entity type: title, file name, object type,
    /// the `x-hubsync` block.
    fn check_entity_file(&mut self, name: &str, doc: &Value) -> EntityFile {
        let stem = name.strip_suffix(ENTITY_SUFFIX).unwrap_or(name);
        let title = match doc.get("title") {
            None => {
                self.problem(
                    name,
                    "",
                    format!(
                        "has no \"title\"; the title names the entity type: add \"title\": {stem:?}"
                    ),
                );
                None
            }
            Some(Value::String(title)) if !is_type_name(title) => {
                self.problem(
                    name,
                    "/title",
                    format!(
                        "title {title:?} is not a valid entity type name: it must start with an upper-case \
                         letter followed by letters, digits or '_' (^[A-Z][A-Za-z0-9_]*$)"
                    ),
                );
                None
            }
            Some(Value::String(title)) if title != stem => {
                self.problem(
                    name,
                    "/title",
                    format!(
                        "title {title:?} does not match the file name: the file of type {title} must be named \
                         {title}{ENTITY_SUFFIX}; rename the file or change the title to {stem:?}"
                    ),
                );
                None
            }
            Some(Value::String(title)) => Some(title.clone()),
            Some(other) => {
                self.problem(
                    name,
                    "/title",
                    format!("title must be a string naming the type, found {other}"),
                );
                None
            }
        };
        if doc.get("type").and_then(Value::as_str) != Some("object") {
            let found = doc
                .get("type")
                .map_or("nothing".to_owned(), Value::to_string);
            self.problem(
                name,
                "/type",
                format!(
                    "an entity type's data is a JSON object: the top level must say \"type\": \"object\" (found {found})"
                ),
            );
        }
        let conflict = self.type_settings(name, doc);
        EntityFile {
            file: name.to_owned(),
            title,
            conflict,
        }
    }

    /// Reads top-level `"x-hubsync": {"conflict": "..."}`.
    fn type_settings(&mut self, name: &str, doc: &Value) -> Option<String> {
        let settings = doc.get(TYPE_KEYWORD)?;
        let pointer = push_token("", TYPE_KEYWORD);
        let Some(settings) = settings.as_object() else {
            self.problem(
                name,
                &pointer,
                format!("{TYPE_KEYWORD} must be an object such as {{\"conflict\": \"server-wins\"}}, found {settings}"),
            );
            return None;
        };
        for key in settings
            .keys()
            .filter(|k| !TYPE_KEYWORD_KEYS.contains(&k.as_str()))
        {
            self.problem(
                name,
                &push_token(&pointer, key),
                format!(
                    "unknown key {key:?} in {TYPE_KEYWORD}; known keys: {}",
                    TYPE_KEYWORD_KEYS.join(", ")
                ),
            );
        }
        match settings.get("conflict") {
            None => None,
            Some(Value::String(resolver)) if !resolver.trim().is_empty() => Some(resolver.clone()),
            Some(other) => {
                self.problem(
                    name,
                    &push_token(&pointer, "conflict"),
                    format!(
                        "conflict must name a resolver, e.g. \"last-writer-wins\", found {other}"
                    ),
                );
                None
            }
        }
    }

    fn check_titles(&mut self, entity_files: &[EntityFile]) {
        let mut first_file: BTreeMap<&str, &str> = BTreeMap::new();
        for entity in entity_files {
            let Some(title) = entity.title.as_deref() else {
                continue;
            };
            if let Some(first) = first_file.insert(title, &entity.file) {
                // Unreachable while titles must match file names, kept so the
                // rule holds if that check ever loosens.
                self.problem(
                    &entity.file,
                    "/title",
                    format!("type {title} is already defined by {first}; each type needs one file"),
                );
            }
        }
    }

    /// Every `$ref` must lead to a file of the set and, for a JSON pointer
    /// fragment, to something inside it.
    fn check_refs(&mut self, docs: &Documents, name: &str, doc: &Value) {
        let mut found = Vec::new();
        for_each_subschema(doc, "", &mut |node, pointer| {
            let Some(value) = node.get("$ref") else {
                return;
            };
            let at = push_token(pointer, "$ref");
            let Some(reference) = value.as_str() else {
                // The meta-schema check reports the type error.
                return;
            };
            let message = match docs.resolve(name, reference) {
                Ok(_) | Err(RefError::Anchor) => return,
                Err(RefError::Outside) => format!(
                    "$ref {reference:?} leaves the schema set; hubsync resolves only files of the set \
                     (nothing is fetched): copy the definition into a file of the set and refer to it by file name"
                ),
                Err(RefError::MissingFile(file)) => format!(
                    "$ref {reference:?} points to {file:?}, which is not in the schema set (files: {}); \
                     add the file or fix the reference",
                    docs.file_names().join(", ")
                ),
                Err(RefError::MissingPointer { file, pointer }) => format!(
                    "$ref {reference:?} points to {pointer} in {file}, which does not exist; \
                     fix the pointer or add the definition"
                ),
            };
            found.push((at, message));
        });
        if !found.is_empty() {
            self.bad_refs.insert(name.to_owned());
        }
        for (pointer, message) in found {
            self.problem(name, &pointer, message);
        }
    }

    /// Compiles every document with jsonschema, all files registered as
    /// resources so cross-file `$ref` works offline. Returns the validators of
    /// the documents that compiled (shared files are compiled too, only to
    /// find their problems).
    fn compile(&mut self, docs: &Documents) -> BTreeMap<String, jsonschema::Validator> {
        let mut validators = BTreeMap::new();
        let retriever = PlaceholderRetriever::default();
        let resources = docs
            .iter()
            .map(|(name, doc)| (format!("{BASE_URI}{name}"), doc));
        let registry = match jsonschema::Registry::new()
            .draft(Draft::Draft202012)
            .retrieve_known_draft_meta_schemas(false)
            .retriever(retriever.clone())
            .extend(resources)
            .and_then(|builder| builder.prepare())
        {
            Ok(registry) => registry,
            Err(e) => {
                let message = format!(
                    "the schema set's references cannot be resolved: {}",
                    strip_base(&e.to_string())
                );
                self.problem("", "", message);
                return validators;
            }
        };
        for (name, doc) in docs.iter() {
            if self.skip_compile.contains(name) {
                continue;
            }
            let built = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&registry)
                .with_retriever(retriever.clone())
                .with_base_uri(format!("{BASE_URI}{name}"))
                .should_validate_formats(true)
                .build(doc);
            match built {
                Ok(validator) => {
                    validators.insert(name.clone(), validator);
                }
                Err(e)
                    if self.bad_refs.contains(name)
                        && matches!(e.kind(), ValidationErrorKind::Referencing(_)) => {}
                Err(e) => {
                    let message =
                        format!("schema does not compile: {}", strip_base(&e.to_string()));
                    self.problem(name, e.instance_path().as_str(), message);
                }
            }
        }
        // Our own $ref check should have named every missing document; this
        // catches any way of referring to one that it does not understand.
        for uri in retriever.requested() {
            let shown = strip_base(&uri);
            if !self.problems.iter().any(|p| p.message.contains(&shown)) {
                self.problem(
                    "",
                    "",
                    format!("a $ref points to {shown:?}, which is not in the schema set; add it or fix the reference"),
                );
            }
        }
        validators
    }
}

/// Answers every retrieval with an empty schema and remembers the URI.
///
/// Without it, one dangling `$ref` would make jsonschema refuse the whole
/// registry and hide every other problem of the set. The loader reports the
/// dangling refs itself, and a set with problems is never returned, so the
/// placeholder never validates real data.
#[derive(Clone, Default)]
struct PlaceholderRetriever {
    requested: Arc<Mutex<BTreeSet<String>>>,
}

impl PlaceholderRetriever {
    fn requested(&self) -> BTreeSet<String> {
        self.requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Retrieve for PlaceholderRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.as_str().to_owned());
        Ok(Value::Object(Default::default()))
    }
}

/// jsonschema messages name files by their internal URI; show the file name.
fn strip_base(text: &str) -> String {
    text.replace(BASE_URI, "")
}

// The registry is shared by request handlers and the sync engine across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EntityRegistry>();
};

fn is_type_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_uri_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
