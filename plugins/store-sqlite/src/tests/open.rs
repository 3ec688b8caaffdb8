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

/// Migrations 8 and 9 move the references of a database made before them
/// onto interned keys, then interned pointers: every reference is still
/// found from its target, with its source, pointer and target as they
/// were, and new ones are written next to them.
#[tokio::test]
async fn references_recorded_before_interned_keys_survive_the_migration() {
    use hubsync_core::store::EntityRef;
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v7.db");
    let mut conn = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal),
    )
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE hubsync_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for m in crate::migrations::MIGRATIONS
        .iter()
        .filter(|m| m.version <= 7)
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO hubsync_schema_migrations VALUES (?, 'then')")
            .bind(m.version)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (report, other, brigade, employee) =
        (super::id(1), super::id(2), super::id(10), super::id(11));
    let old = |s: uuid::Uuid, p: &str, tt: &str, t: uuid::Uuid| EntityRef {
        source_type: "Report".into(),
        source_uuid: s,
        pointer: p.into(),
        target_type: tt.into(),
        target_uuid: t,
    };
    let before = [
        old(report, "/brigade", "Brigade", brigade),
        old(report, "/lines/*/employee", "Employee", employee),
        old(other, "/brigade", "Brigade", brigade),
    ];
    for r in &before {
        sqlx::query(
            "INSERT INTO entity_refs (source_type, source_uuid, pointer, target_type, target_uuid)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&r.source_type)
        .bind(r.source_uuid.to_string())
        .bind(&r.pointer)
        .bind(&r.target_type)
        .bind(r.target_uuid.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let versions: Vec<i64> = applied_migrations(&store)
        .await
        .iter()
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(versions, (1..=latest_version()).collect::<Vec<_>>());
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.referrers("Brigade", brigade).await.unwrap(),
        vec![before[0].clone(), before[2].clone()]
    );
    assert_eq!(
        tx.referrers("Employee", employee).await.unwrap(),
        vec![before[1].clone()]
    );
    // Replacing one source's references leaves the other's.
    tx.set_references(
        "Report",
        report,
        &[old(report, "/site", "Site", super::id(12))],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.referrers("Brigade", brigade).await.unwrap(),
        vec![before[2].clone()]
    );
    assert!(tx.referrers("Employee", employee).await.unwrap().is_empty());
    assert_eq!(tx.referrers("Site", super::id(12)).await.unwrap().len(), 1);
    tx.commit().await.unwrap();
    store.close().await;
}
