//! The Store conformance suite (hubsync-store-testkit) against SQLite: a
//! fresh database file in its own temporary directory per case.

use std::sync::Arc;

use hubsync_core::store::Store;
use hubsync_store_sqlite::SqliteStore;
use hubsync_store_testkit::Subject;

async fn fresh() -> Option<Subject> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}/hub.db", dir.path().display());
    let store = SqliteStore::open(&url).await.expect("open a fresh store");
    let reopen_url = url.clone();
    Some(Subject::new(
        Arc::new(store),
        Box::new(move || {
            let url = reopen_url.clone();
            Box::pin(async move {
                let store: Arc<dyn Store> =
                    Arc::new(SqliteStore::open(&url).await.expect("open a second handle"));
                store
            })
        }),
        Box::new(dir),
    ))
}

hubsync_store_testkit::store_conformance_suite!(fresh());
