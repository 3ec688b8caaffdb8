//! The entity registry: entity types defined at runtime by a directory of
//! JSON Schema (draft 2020-12) files (contract §6).
//!
//! This module owns loading and checking a schema set (`*.schema.json` entity
//! types, shared `*.json` definitions, `schema-set.json` with the set's
//! version), validating entity data against a type, finding the references
//! between entities (`x-hubsync-ref`, `x-hubsync-parent`), and the schema
//! version compatibility rule between a client and the master.
//!
//! It must never fetch a schema over the network or from outside the set's
//! directory, never touch entity storage, and never decide what happens to a
//! dangling reference or which resolver runs (the sync engine and the host
//! do; `EntityType::conflict` is only the name written in the schema).
//!
//! Layout: [`registry`] (loading and validation), [`references`] (reference
//! locations in schemas and data), [`version`] (`MAJOR.MINOR.PATCH` and
//! compatibility), [`problems`] (the error types), `documents` (offline `$ref`
//! resolution between the set's files).
//!
//! Errors: loading returns one [`SchemaSetError`] listing every
//! [`SchemaProblem`] (file + JSON pointer); [`EntityRegistry::validate`]
//! returns [`ValidateError`], either `UnknownType` or `Invalid` with every
//! [`Issue`] (JSON pointer into the data).

mod documents;
pub mod problems;
pub mod references;
pub mod registry;
pub mod version;

pub use problems::{Issue, SchemaProblem, SchemaSetError, ValidateError, ValidationError};
pub use references::{OnDelete, PathSegment, Reference};
pub use registry::{ENTITY_SUFFIX, EntityRegistry, EntityType, SCHEMA_SET_FILE};
pub use version::{SchemaMismatch, SchemaVersion, SchemaVersionParseError};
