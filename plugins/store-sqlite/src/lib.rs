//! hubsync-store-sqlite: the [`Store`](hubsync_core::store::Store) trait on
//! an embedded SQLite database (WAL), through sqlx.
//!
//! Owns: the SQL schema and its versioned migrations, the translation of
//! every `Store`/`StoreTx` method to SQL, and the decoding of rows back into
//! domain types (anything that does not decode is `StoreError::Corrupt`).
//!
//! Must never: decide *what* to write (that is the engine's job in
//! hubsync-core), speak HTTP, or panic on data read from the database.
//!
//! Concurrency model: one writer connection (all [`StoreTx`]s are
//! serialized behind it; those that queue there are committed in groups,
//! one `BEGIN IMMEDIATE` … `COMMIT` for several, see `writer.rs`) and a small pool of
//! read-only connections for the `Store` read methods, which see the last
//! committed state (WAL snapshot isolation).
//!
//! [`StoreTx`]: hubsync_core::store::StoreTx

mod checkpoint;
mod codec;
mod migrations;
mod open;
mod queries;
mod raw;
mod store;
mod tx;
mod writer;

#[cfg(test)]
mod tests;

pub use store::SqliteStore;
