//! hubsync-store-postgres: the [`Store`](hubsync_core::store::Store) trait
//! on PostgreSQL, through a sqlx `PgPool`, for a master that outgrows one
//! machine — several `hubsync serve` hosts may share one database.
//!
//! Owns: the PostgreSQL schema and its versioned migrations, the
//! translation of every `Store`/`StoreTx` method to SQL, the locks that keep
//! several hosts on one database correct, and the decoding of rows back
//! into domain types (anything that does not decode is `StoreError::Corrupt`).
//!
//! Must never: decide *what* to write (that is the engine's job), keep
//! sync state in process memory (every host must see the same state), speak
//! HTTP, or panic on data read from the database.
//!
//! # Several hosts on one database
//!
//! Correctness is the database's job, never a process's:
//! * **Node rows** are read with `SELECT … FOR UPDATE` in a transaction
//!   (`StoreTx::get_node`): two exchanges of one node on two hosts
//!   serialize, and the second sees the packet numbers the first committed,
//!   so it replays the stored results instead of applying the packet again.
//! * **The write lock** (a transaction-scoped advisory lock, `locks.rs`)
//!   serializes transactions that write entities or allocate revisions:
//!   revisions become visible in revision order, and conflict decisions are
//!   taken on the latest committed version.
//! * **Unique constraints** as in SQLite: one unsent queue row per
//!   (target, entity), one log row per (entity, target), unique node codes
//!   and token hashes.
//!
//! Transactions run at READ COMMITTED (PostgreSQL's default), which those
//! locks rely on: a statement after a lock wait sees what the previous
//! holder committed.
//!
//! # JSON
//!
//! Entity data, stored versions and replayed results are JSONB. JSONB does
//! not keep object key order (documents compare equal, `serde_json` map
//! equality ignores order) and cannot hold U+0000: such a document is
//! refused with an error naming its JSON pointer ([`NulInJson`]).

mod codec;
mod locks;
mod migrations;
mod rows;
pub mod scratch;
mod store;
mod tx;

pub use codec::NulInJson;
pub use migrations::latest_version;
pub use store::PostgresStore;

/// `url` with its password (if any) replaced by `***`, for messages and
/// logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected, "{url}");
        check(
            "postgres://sync:s3cr%40t@db:5432/hub?sslmode=require",
            "postgres://sync:***@db:5432/hub?sslmode=require",
        );
        check("postgres://sync@db/hub", "postgres://sync@db/hub");
        check("postgres://db/hub", "postgres://db/hub");
        check("postgresql://a:b@h", "postgresql://a:***@h");
        check("not a url", "not a url");
    }
}
