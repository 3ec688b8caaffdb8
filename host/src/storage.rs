//! Opens the storage backend a URL names.
//!
//! Backends are library crates compiled in behind cargo features of this
//! crate (`sqlite`, `postgres`; both on by default) and chosen at run time
//! by the URL's scheme. [`Backend`] lists every backend hubsync knows, built
//! into this binary or not, so that a URL naming one that was left out is
//! refused with the feature that builds it.

use std::sync::Arc;

use hubsync_core::store::{PoolOptions, Store, StoreError};

/// Every storage backend hubsync knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Embedded, one file, one writer: every client and small masters.
    Sqlite,
    /// A PostgreSQL server: masters that outgrow one machine, several hosts
    /// on one database.
    Postgres,
}

impl Backend {
    pub const ALL: &'static [Backend] = &[Backend::Sqlite, Backend::Postgres];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The URL schemes that select this backend.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            Backend::Sqlite => &["sqlite"],
            Backend::Postgres => &["postgres", "postgresql"],
        }
    }

    /// The cargo feature of the `hubsync` crate that compiles it in.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// Whether this binary was built with it.
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Postgres => cfg!(feature = "postgres"),
        }
    }

    /// An example URL, for messages.
    pub fn example_url(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite://data/hubsync.db",
            Backend::Postgres => "postgres://hubsync@db.example.org/hubsync",
        }
    }

    /// The backend whose scheme `url` has (case-insensitive).
    pub fn for_url(url: &str) -> Option<Backend> {
        let scheme = scheme_of(url);
        Backend::ALL
            .iter()
            .copied()
            .find(|b| b.schemes().contains(&scheme.as_str()))
    }
}

/// The URL's scheme, lowercased ("" if none).
fn scheme_of(url: &str) -> String {
    url.split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The backends compiled into this binary, for messages.
fn available() -> String {
    let names: Vec<&str> = Backend::ALL
        .iter()
        .filter(|b| b.compiled_in())
        .map(|b| b.name())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `url` without a password, for messages and logs.
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}://{}:***{}", &authority[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

/// Opens (and migrates) the store at `url` with default pool settings.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, &PoolOptions::default()).await
}

/// Opens (and migrates) the store at `url`; `pool` sizes the connection
/// pool of backends that have one (SQLite ignores it: one writer
/// connection and a few readers).
pub async fn open_store_with(url: &str, pool: &PoolOptions) -> Result<Arc<dyn Store>, StoreError> {
    let _ = pool; // unused when no pooled backend is compiled in
    let Some(backend) = Backend::for_url(url) else {
        return Err(StoreError::UnknownScheme {
            scheme: scheme_of(url),
            available: available(),
            hint: format!(
                "use a URL such as {} or {}",
                Backend::Sqlite.example_url(),
                Backend::Postgres.example_url()
            ),
        });
    };
    match backend {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Ok(Arc::new(
            hubsync_store_sqlite::SqliteStore::open(url).await?,
        )),
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(Arc::new(
            hubsync_store_postgres::PostgresStore::open(url, pool).await?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(StoreError::UnknownScheme {
            scheme: scheme_of(url),
            available: available(),
            hint: format!(
                "the {} backend is not compiled into this hubsync; rebuild with `cargo build --features {}`",
                other.name(),
                other.feature()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_select_backends() {
        let check = |url: &str, expected: Option<Backend>| {
            assert_eq!(Backend::for_url(url), expected, "{url}")
        };
        check("sqlite://data/hub.db", Some(Backend::Sqlite));
        check("SQLite::memory:", Some(Backend::Sqlite));
        check("postgres://u@h/db", Some(Backend::Postgres));
        check("postgresql://u@h/db", Some(Backend::Postgres));
        check("mysql://u@h/db", None);
        check("data/hub.db", None);
    }

    #[test]
    fn every_backend_is_listed_with_its_feature() {
        for b in Backend::ALL {
            assert!(!b.schemes().is_empty());
            assert_eq!(b.feature(), b.name());
        }
        assert!(Backend::Sqlite.compiled_in() == cfg!(feature = "sqlite"));
        assert!(Backend::Postgres.compiled_in() == cfg!(feature = "postgres"));
    }

    #[tokio::test]
    async fn an_unknown_scheme_names_what_is_available() {
        let err = open_store("mysql://u@h/db").await.err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("'mysql'"), "{text}");
        assert!(text.contains("sqlite://"), "{text}");
    }

    #[test]
    fn passwords_are_not_displayed() {
        assert_eq!(
            display_url("postgres://sync:pw@db:5432/hub"),
            "postgres://sync:***@db:5432/hub"
        );
        assert_eq!(
            display_url("postgres://sync@db/hub"),
            "postgres://sync@db/hub"
        );
        assert_eq!(
            display_url("sqlite:///var/lib/hub.db"),
            "sqlite:///var/lib/hub.db"
        );
    }
}
