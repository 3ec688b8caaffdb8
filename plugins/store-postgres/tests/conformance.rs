//! The Store conformance suite (hubsync-store-testkit) against PostgreSQL:
//! a fresh database (`CREATE DATABASE hubsync_t_…`) per case on the server
//! named by HUBSYNC_TEST_POSTGRES_URL, dropped afterwards. Without that
//! variable every case says SKIPPED on stderr and passes.

use std::sync::Arc;

use hubsync_core::store::{PoolOptions, Store};
use hubsync_store_postgres::PostgresStore;
use hubsync_store_postgres::scratch::{ScratchDatabase, test_url};
use hubsync_store_testkit::Subject;

async fn fresh() -> Option<Subject> {
    let base = test_url("PostgreSQL store conformance case")?;
    let db = ScratchDatabase::create(&base)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options = PoolOptions {
        max_connections: 8,
        ..PoolOptions::default()
    };
    let store = PostgresStore::open(&db.url, &options)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.url));
    let url = db.url.clone();
    Some(Subject::new(
        Arc::new(store),
        Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                let store: Arc<dyn Store> = Arc::new(
                    PostgresStore::open(&url, &options)
                        .await
                        .unwrap_or_else(|e| panic!("opening a second handle: {e}")),
                );
                store
            })
        }),
        Box::new(db),
    ))
}

hubsync_store_testkit::store_conformance_suite!(fresh());
