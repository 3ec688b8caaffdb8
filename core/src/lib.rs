//! hubsync-core: the synchronisation engine.
//!
//! Owns the entity registry (JSON Schema files loaded at runtime), the generic
//! entity model, the change queue and packet logic, conflict detection and
//! resolution, and the [`store::Store`] trait that storage backends implement.
//!
//! Must never: speak HTTP, know an SQL dialect, or read configuration files.
//! The host translates HTTP to calls into this crate; a storage crate
//! translates the `Store` trait to SQL.

pub mod conflict;
pub mod engine;
pub mod entity;
pub mod protocol;
pub mod schema;
pub mod security;
pub mod store;
pub mod transport;

pub use engine::{Engine, EngineError, EngineOptions, InitParams, PacketLimits};
pub use entity::{Entity, Operation};
pub use store::{Store, StoreError, StoreTx};
