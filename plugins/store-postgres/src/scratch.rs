//! Throw-away databases for tests and benchmarks: a fresh database per
//! test case on the server a base URL names, dropped afterwards.
//!
//! Not used by the store itself. Tests find the server through
//! [`TEST_URL_VAR`]; without it they skip, saying so loudly.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test` (`.ci/run` sets it).
pub const TEST_URL_VAR: &str = "HUBSYNC_TEST_POSTGRES_URL";

/// Every scratch database's name starts with this.
pub const PREFIX: &str = "hubsync_t_";

/// The test server's URL, or `None` after printing (stderr) that `what` is
/// SKIPPED and why.
pub fn test_url(what: &str) -> Option<String> {
    match std::env::var(TEST_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // Straight to the stderr handle, not `eprintln!`: the test
            // harness captures the macro's output of passing tests, and a
            // skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: {what}: {TEST_URL_VAR} is not set, so there is no PostgreSQL server to test against.\n*** Set it (e.g. {TEST_URL_VAR}=postgres://postgres@127.0.0.1:5432/test; .ci/run does) to run the PostgreSQL tests.\n"
            );
            None
        }
    }
}

/// A database created for one test, dropped (with `WITH (FORCE)`, best
/// effort) when this value is dropped — also when the test panics.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL of the new database (same server and user as the base URL).
    pub url: String,
    name: String,
    base: PgConnectOptions,
}

/// Why a scratch database could not be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not create a scratch database on the test server: {0}; check {TEST_URL_VAR} and that its user may CREATE DATABASE"
)]
pub struct ScratchError(String);

impl ScratchDatabase {
    /// Creates `hubsync_t_<unique>` on the server of `base_url`.
    pub async fn create(base_url: &str) -> Result<ScratchDatabase, ScratchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = PgConnectOptions::from_str(base_url).map_err(|e| ScratchError(e.to_string()))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{PREFIX}{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = base
            .connect()
            .await
            .map_err(|e| ScratchError(e.to_string()))?;
        // The name is ours (digits and underscores only): safe to splice.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(|e| ScratchError(e.to_string()))?;
        let _ = conn.close().await;
        let url = with_database(base_url, &name);
        Ok(ScratchDatabase { url, name, base })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `base_url` with its path (the database name) replaced by `name`; query
/// parameters are kept.
fn with_database(base_url: &str, name: &str) -> String {
    let (head, query) = match base_url.find('?') {
        Some(i) => (&base_url[..i], &base_url[i..]),
        None => (base_url, ""),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let root = match head[after_scheme..].find('/') {
        Some(i) => &head[..after_scheme + i],
        None => head,
    };
    format!("{root}/{name}{query}")
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let base = self.base.clone();
        let name = std::mem::take(&mut self.name);
        // Drop may run inside or outside a runtime: a thread with its own
        // runtime works in both. Bounded, and failures only logged.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let drop_it = async {
                    let mut conn = base.connect().await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    let _ = conn.close().await;
                    Ok::<_, sqlx::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(30), drop_it).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not drop scratch database {name}: {e}"),
                    Err(_) => eprintln!("dropping scratch database {name} timed out"),
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_parameters_kept() {
        let check = |base: &str, expected: &str| assert_eq!(with_database(base, "x"), expected);
        check("postgres://u@h:5432/test", "postgres://u@h:5432/x");
        check(
            "postgres://u@h/test?sslmode=disable",
            "postgres://u@h/x?sslmode=disable",
        );
        check("postgresql://u:p@h", "postgresql://u:p@h/x");
    }
}
