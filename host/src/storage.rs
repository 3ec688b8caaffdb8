//! Opens the storage backend a URL names. Backends are compiled in and
//! chosen by URL scheme; a scheme whose backend is not compiled in is refused
//! with what to do.

use std::sync::Arc;

use hubsync_core::store::{Store, StoreError};

/// Every backend hubsync knows, compiled in or not.
const BACKENDS: &[(&str, &[&str], bool, &str)] = &[
    ("sqlite", &["sqlite"], true, ""),
    (
        "postgres",
        &["postgres", "postgresql"],
        false,
        "the PostgreSQL backend is not available in this build yet; use a sqlite:// URL",
    ),
];

/// Opens (and migrates) the store at `url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let available = BACKENDS
        .iter()
        .filter(|b| b.2)
        .map(|b| b.0)
        .collect::<Vec<_>>()
        .join(", ");
    match BACKENDS.iter().find(|b| b.1.contains(&scheme.as_str())) {
        Some(("sqlite", ..)) => Ok(Arc::new(
            hubsync_store_sqlite::SqliteStore::open(url).await?,
        )),
        Some((_, _, _, hint)) => Err(StoreError::UnknownScheme {
            scheme,
            available,
            hint: hint.to_string(),
        }),
        None => Err(StoreError::UnknownScheme {
            scheme,
            available,
            hint: "use a URL such as sqlite://data/hubsync.db".into(),
        }),
    }
}
