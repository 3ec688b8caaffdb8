//! Opening: file creation, WAL, migrations, refusing newer databases.

use hubsync_core::store::{Store, StoreError};

use super::{memory_store, temp_store};
use crate::SqliteStore;
use crate::migrations::latest_version;

async fn applied_migrations(store: &SqliteStore) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT version, applied_at FROM hubsync_schema_migrations ORDER BY version")
        .fetch_all(&store.reader)
        .await
        .expect("read migrations")
}

#[tokio::test]
async fn open_creates_the_file_and_its_directories_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/hub.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url).await.unwrap();

    assert!(path.exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.reader)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.writer.pool)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous = FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&store.writer.pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    assert_eq!(store.backend(), "sqlite");
    store.close().await;
}

#[tokio::test]
async fn open_records_every_migration_and_reopening_changes_nothing() {
    let t = temp_store().await;
    let first = applied_migrations(&t.store).await;
    let versions: Vec<i64> = first.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=latest_version()).collect::<Vec<_>>());
    t.store.close().await;

    let again = SqliteStore::open(&t.url).await.unwrap();
    assert_eq!(applied_migrations(&again).await, first);
    again.close().await;
}

#[tokio::test]
async fn a_database_from_a_newer_hubsync_is_refused() {
    let t = temp_store().await;
    sqlx::query(
        "INSERT INTO hubsync_schema_migrations (version, applied_at) VALUES (999, 'later')",
    )
    .execute(&t.store.writer.pool)
    .await
    .unwrap();
    t.store.close().await;

    match SqliteStore::open(&t.url).await {
        Err(StoreError::TooNew {
            url,
            found,
            supported,
        }) => {
            assert_eq!((found, supported), (999, latest_version()));
            assert_eq!(url, t.url);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[tokio::test]
async fn relative_and_absolute_urls_name_the_same_kind_of_file() {
    let dir = tempfile::tempdir().unwrap();
    // sqlite:///abs/path.db: the third slash starts an absolute path.
    let abs = dir.path().join("abs.db");
    let url = format!("sqlite://{}", abs.display());
    assert!(url.starts_with("sqlite:///"));
    SqliteStore::open(&url).await.unwrap().close().await;
    assert!(abs.exists());
}

#[tokio::test]
async fn memory_stores_are_private_to_each_open() {
    let a = memory_store().await;
    let b = memory_store().await;
    let mut tx = a.begin().await.unwrap();
    tx.set_meta("k", "a").await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(a.get_meta("k").await.unwrap().as_deref(), Some("a"));
    assert_eq!(b.get_meta("k").await.unwrap(), None);
}

#[tokio::test]
async fn a_memory_store_leaves_no_file_behind() {
    let store = memory_store().await;
    let file = store
        .writer
        .pool
        .connect_options()
        .get_filename()
        .to_path_buf();
    assert!(file.exists());
    store.close().await;
    drop(store);
    assert!(!file.exists());
    assert!(!file.parent().unwrap().exists());
}
