//! The WAL is checkpointed in the background, not by the writer.

use std::time::Duration;

use hubsync_core::store::Store;
use sqlx::Row;

use super::temp_store;
use crate::checkpoint::WRITER_BACKSTOP_PAGES;

/// Pages written by the test's one transaction: under SQLite's default
/// checkpoint threshold (1,000 pages) and far under the writer's backstop,
/// so only the background task can have copied them to the database file.
const PAGES: i64 = 600;

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
    let t = temp_store().await;
    let db = t._dir.path().join("hub.db");
    let backstop: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&t.store.writer.pool)
        .await
        .unwrap();
    assert_eq!(backstop, i64::from(WRITER_BACKSTOP_PAGES));

    let before = file_len(&db);
    let mut tx = t.store.writer.begin().await.unwrap();
    sqlx::raw_sql("CREATE TABLE filler (b BLOB NOT NULL)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO filler (b) SELECT randomblob(4000) FROM n",
    )
    .bind(PAGES)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The pages are in the WAL; the background checkpoint copies them
    // into the database file a moment later.
    let want = before + (PAGES as u64) * 4000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while file_len(&db) < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        file_len(&db) >= want,
        "the database file is {} bytes, {} expected once checkpointed",
        file_len(&db),
        want
    );
    // And the WAL is reused from its start by the next transaction: a
    // checkpoint that copied everything leaves nothing to copy again.
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&t.store.writer.pool)
        .await
        .unwrap();
    let (log, copied): (i64, i64) = (row.get(1), row.get(2));
    assert_eq!(log, copied, "every frame in the WAL is checkpointed");
    t.store.close().await;
}
