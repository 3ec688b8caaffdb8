//! What only the PostgreSQL backend does: migrations under an advisory
//! lock (several hosts opening a fresh database at once), refusing a newer
//! database, the types of its schema, JSONB's treatment of JSON, and error
//! messages that never show a password. Needs HUBSYNC_TEST_POSTGRES_URL;
//! without it each test says SKIPPED on stderr and passes.

use hubsync_core::entity::Entity;
use hubsync_core::store::{PoolOptions, Store, StoreError};
use hubsync_store_postgres::scratch::{ScratchDatabase, test_url};
use hubsync_store_postgres::{PostgresStore, latest_version};
use serde_json::json;
use uuid::Uuid;

async fn scratch(what: &str) -> Option<ScratchDatabase> {
    let base = test_url(what)?;
    Some(
        ScratchDatabase::create(&base)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn open(url: &str) -> PostgresStore {
    PostgresStore::open(url, &PoolOptions::default())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

async fn applied(store: &PostgresStore) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT version, name FROM hubsync_schema_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .expect("read migrations")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_migrates_once_and_reopening_changes_nothing() {
    let Some(db) = scratch("open_migrates_once_and_reopening_changes_nothing").await else {
        return;
    };
    let store = open(&db.url).await;
    let first = applied(&store).await;
    let versions: Vec<i64> = first.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=latest_version()).collect::<Vec<_>>());
    assert_eq!(store.backend(), "postgres");
    store.close().await;

    let again = open(&db.url).await;
    assert_eq!(applied(&again).await, first);
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_opening_a_fresh_database_at_once_all_succeed() {
    let Some(db) = scratch("hosts_opening_a_fresh_database_at_once_all_succeed").await else {
        return;
    };
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, &PoolOptions::default()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(
            o.await
                .expect("task")
                .expect("every concurrent open succeeds"),
        );
    }
    assert_eq!(applied(&stores[0]).await.len() as i64, latest_version());
    for s in stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_hubsync_is_refused() {
    let Some(db) = scratch("a_database_from_a_newer_hubsync_is_refused").await else {
        return;
    };
    let store = open(&db.url).await;
    sqlx::query(
        "INSERT INTO hubsync_schema_migrations (version, name, applied_at) VALUES (999, 'later', now())",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;

    match PostgresStore::open(&db.url, &PoolOptions::default()).await {
        Err(e @ StoreError::TooNew { .. }) => {
            let StoreError::TooNew {
                found, supported, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*found, *supported), (999, latest_version()));
            assert!(e.to_string().contains("upgrade hubsync"), "{e}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_uses_postgres_types() {
    let Some(db) = scratch("the_schema_uses_postgres_types").await else {
        return;
    };
    let store = open(&db.url).await;
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND (table_name, column_name) IN (('entities', 'data'), ('entities', 'uuid'),
                ('entities', 'updated_at'), ('entities', 'rev'), ('sync_nodes', 'last_results'),
                ('sync_nodes', 'prev_results'), ('sync_nodes', 'prev_out_up_to_rev'),
                ('object_version_history', 'serialized_data'), ('sync_changes', 'id'))
         ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let expected = [
        ("entities.data", "jsonb"),
        ("entities.rev", "bigint"),
        ("entities.updated_at", "timestamp with time zone"),
        ("entities.uuid", "uuid"),
        ("object_version_history.serialized_data", "jsonb"),
        ("sync_changes.id", "bigint"),
        ("sync_nodes.last_results", "jsonb"),
        ("sync_nodes.prev_out_up_to_rev", "bigint"),
        ("sync_nodes.prev_results", "jsonb"),
    ];
    let found: Vec<(&str, &str)> = types
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(found, expected);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonb_reorders_keys_but_the_document_compares_equal() {
    let Some(db) = scratch("jsonb_reorders_keys_but_the_document_compares_equal").await else {
        return;
    };
    let store = open(&db.url).await;
    let e = Entity {
        entity_type: "Report".into(),
        uuid: Uuid::new_v4(),
        updated_at: hubsync_core::entity::now_utc(),
        is_deleted: false,
        data: json!({"zeta": 1, "alpha": {"long key": 2, "b": 3}}),
        rev: None,
        origin: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.put_entity(&e).await.unwrap();
    tx.commit().await.unwrap();
    let read = store.get_entity("Report", e.uuid).await.unwrap().unwrap();
    assert_ne!(
        read.data.to_string(),
        e.data.to_string(),
        "JSONB sorts keys"
    );
    assert_eq!(read, e, "serde_json map equality ignores key order");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_naming_where_it_is() {
    let Some(db) = scratch("a_nul_character_is_refused_naming_where_it_is").await else {
        return;
    };
    let store = open(&db.url).await;
    let e = Entity {
        entity_type: "Report".into(),
        uuid: Uuid::new_v4(),
        updated_at: hubsync_core::entity::now_utc(),
        is_deleted: false,
        data: json!({"lines": [{"note": "ok"}, {"note": "bad\u{0}"}]}),
        rev: None,
        origin: None,
    };
    let mut tx = store.begin().await.unwrap();
    let err = tx.put_entity(&e).await.unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("/lines/1/note"), "{text}");
    assert!(text.contains("U+0000"), "{text}");
    drop(tx);
    store.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_open_error_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let url = "postgres://hubsync:s3cret@127.0.0.1:1/hub";
    let options = PoolOptions {
        acquire_timeout: std::time::Duration::from_secs(3),
        ..PoolOptions::default()
    };
    let err = PostgresStore::open(url, &options).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("postgres://hubsync:***@127.0.0.1:1/hub"),
        "{text}"
    );
}

#[tokio::test]
async fn a_malformed_url_is_an_open_error() {
    let err = PostgresStore::open("postgres://[::1", &PoolOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}
