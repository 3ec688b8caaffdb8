//! Query plans: the hot statements are index lookups or range scans, never
//! a full table scan or a sort.

use sqlx::Row;

use super::memory_store;
use crate::SqliteStore;
use crate::store::{COUNT_QUEUED, COUNT_REVISIONS_AFTER, LIST_ENTITIES, NODE_LAGS};
use crate::tx::{
    ASSIGN_PACKET, CHANGES_IN_PACKET, DELETE_ACKNOWLEDGED, HAS_QUEUED, LOG_DELETE_PREVIOUS,
    QUEUE_FIND_UNSENT, REVISIONS_AFTER, SCOPED_WINDOW, UNSENT_CHANGES, scoped_candidates,
};

async fn plan(store: &SqliteStore, sql: &str, params: usize) -> Vec<String> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
    for _ in 0..params {
        query = query.bind(0_i64);
    }
    let rows = query.fetch_all(&store.writer.pool).await.unwrap();
    rows.iter().map(|r| r.get::<String, _>("detail")).collect()
}

/// `sql`'s plan uses each of `expected` and neither scans a table nor
/// sorts (it may scan its own subquery, as a capped count does).
async fn check(store: &SqliteStore, name: &str, sql: &str, params: usize, expected: &[&str]) {
    let plan = plan(store, sql, params).await;
    println!("{name}: {plan:?}");
    for step in &plan {
        assert!(
            !step.starts_with("SCAN") || step.starts_with("SCAN (subquery"),
            "{name} scans a table: {plan:?}"
        );
        assert!(!step.contains("TEMP B-TREE"), "{name} sorts: {plan:?}");
    }
    for want in expected {
        assert!(
            plan.iter().any(|s| s.contains(want)),
            "{name} does not use {want}: {plan:?}"
        );
    }
}

#[tokio::test]
async fn hot_statements_use_indexes() {
    let s = memory_store().await;
    check(
        &s,
        "revisions_after",
        REVISIONS_AFTER,
        3,
        &[
            "SEARCH c USING INTEGER PRIMARY KEY (rowid>?)",
            "SEARCH e USING INDEX sqlite_autoindex_entities_1 (entity_type=? AND uuid=?)",
        ],
    )
    .await;
    check(
        &s,
        "count_revisions_after",
        COUNT_REVISIONS_AFTER,
        3,
        &["USING INTEGER PRIMARY KEY (rowid>?)"],
    )
    .await;
    check(
        &s,
        "append_revision (replace)",
        LOG_DELETE_PREVIOUS,
        3,
        &["sync_changes_log_entity"],
    )
    .await;
    check(
        &s,
        "queue_change (find unsent)",
        QUEUE_FIND_UNSENT,
        3,
        &["sync_changes_queue_unsent"],
    )
    .await;
    check(
        &s,
        "unsent_changes",
        UNSENT_CHANGES,
        2,
        &["sync_changes_queue_order (node_id=? AND packet_no=?)"],
    )
    .await;
    check(
        &s,
        "changes_in_packet",
        CHANGES_IN_PACKET,
        2,
        &["sync_changes_queue_order (node_id=? AND packet_no=?)"],
    )
    .await;
    check(
        &s,
        "delete_acknowledged",
        DELETE_ACKNOWLEDGED,
        2,
        &["sync_changes_queue_order (node_id=? AND packet_no>? AND packet_no<?)"],
    )
    .await;
    check(
        &s,
        "has_queued",
        HAS_QUEUED,
        3,
        &["USING COVERING INDEX sync_changes_queue_entity"],
    )
    .await;
    check(
        &s,
        "count_queued",
        COUNT_QUEUED,
        2,
        &["USING COVERING INDEX sync_changes_queue_"],
    )
    .await;
    check(
        &s,
        "list_entities",
        LIST_ENTITIES,
        4,
        &["sqlite_autoindex_entities_1 (entity_type=? AND uuid>?)"],
    )
    .await;
}

/// A scoped node's window is a range of the log's own b-tree, and its
/// candidates are tested with lookups only: the entity by primary key, the
/// node's holdings by primary key, referrers through `entity_keys`' unique
/// index, `entity_refs_target` and the source's key by id
/// (the scope's value lists are read once, not per row).
#[tokio::test]
async fn assigning_a_packet_looks_its_rows_up_by_id() {
    let s = memory_store().await;
    let plan = plan(&s, ASSIGN_PACKET, 3).await;
    assert!(
        plan.iter()
            .any(|p| p.contains("SEARCH sync_changes USING INTEGER PRIMARY KEY (rowid=?)")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|p| p.contains("sync_changes_queue_order")),
        "walks the node's whole queue: {plan:?}"
    );
}

#[tokio::test]
async fn scoped_candidates_use_indexes() {
    let s = memory_store().await;
    // The bounded subquery is read as a co-routine: no table is scanned.
    let window = plan(&s, SCOPED_WINDOW, 3).await;
    println!("scoped window: {window:?}");
    assert!(
        window
            .iter()
            .any(|s| s == "SEARCH sync_changes USING INTEGER PRIMARY KEY (rowid>?)"),
        "{window:?}"
    );
    assert!(
        window
            .iter()
            .all(|s| !s.starts_with("SCAN") || s.starts_with("SCAN (subquery")),
        "{window:?}"
    );
    let filter = hubsync_core::store::ScopeFilter {
        types: vec![
            (
                "Brigade".into(),
                Some(vec![
                    ("foreman".into(), vec!["f".into()]),
                    ("uuid".into(), vec!["u".into()]),
                ]),
            ),
            ("Site".into(), None),
        ],
        with_references: true,
    };
    let q = scoped_candidates("n", 0, 10, 500, &filter);
    let sql = q.sql().as_str().to_owned();
    let params = sql.matches('?').count();
    let plan = plan(&s, &sql, params).await;
    println!("scoped candidates: {plan:?}");
    for step in &plan {
        for table in ["c ", "e ", "h ", "r "] {
            assert!(
                !step.starts_with(&format!("SCAN {table}")),
                "scoped candidates scan {table}: {plan:?}"
            );
        }
        assert!(!step.contains("TEMP B-TREE"), "sorts: {plan:?}");
    }
    for want in [
        "SEARCH c USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        "sqlite_autoindex_entities_1 (entity_type=? AND uuid=?)",
        "sqlite_autoindex_entity_keys_1 (uuid=? AND entity_type=?)",
        "entity_refs_target (target_id=?)",
        "SEARCH sk USING INTEGER PRIMARY KEY (rowid=?)",
        "SEARCH h USING PRIMARY KEY (node_id=? AND entity_uuid=? AND entity_type=?)",
    ] {
        assert!(
            plan.iter().any(|s| s.contains(want)),
            "scoped candidates do not use {want}: {plan:?}"
        );
    }
}

/// Writing references (raw.rs, one prepared statement each) finds every
/// key by the unique index on `entity_keys`, every pointer by
/// `ref_pointers`' and a source's old rows by `entity_refs`' primary key:
/// no statement scans or sorts.
#[tokio::test]
async fn writing_references_looks_every_key_up() {
    use crate::raw::{ADD_KEY, ADD_POINTER, DELETE_REFS, FIND_KEY, FIND_POINTER, INSERT_REF};
    let s = memory_store().await;
    let expected: [((&str, &std::ffi::CStr), &[&str]); 6] = [
        (
            FIND_KEY,
            &[
                "SEARCH entity_keys USING COVERING INDEX sqlite_autoindex_entity_keys_1 (uuid=? AND entity_type=?)",
            ],
        ),
        (ADD_KEY, &[]),
        (
            FIND_POINTER,
            &[
                "SEARCH ref_pointers USING COVERING INDEX sqlite_autoindex_ref_pointers_1 (pointer=?)",
            ],
        ),
        (ADD_POINTER, &[]),
        (
            DELETE_REFS,
            &["SEARCH entity_refs USING PRIMARY KEY (source_id=?)"],
        ),
        (INSERT_REF, &[]),
    ];
    for ((what, sql), wanted) in expected {
        let sql = sql.to_str().unwrap();
        check(&s, what, sql, sql.matches('?').count(), wanted).await;
    }
}

/// The nodes' lags read the log by rowid range only (from the lowest
/// acknowledged revision up), never through the log's entity index, which
/// would visit every row of the log.
#[tokio::test]
async fn node_lags_read_the_log_by_revision_range() {
    let s = memory_store().await;
    let plan = plan(&s, NODE_LAGS, 0).await;
    println!("node lags: {plan:?}");
    let log_steps: Vec<&String> = plan
        .iter()
        .filter(|s| s.contains(" c ") || s.ends_with(" c"))
        .collect();
    assert_eq!(log_steps.len(), 2, "{plan:?}");
    for step in log_steps {
        assert!(
            step.starts_with("SEARCH c USING INTEGER PRIMARY KEY (rowid>?"),
            "node lags read the log otherwise than by revision range: {plan:?}"
        );
    }
}

/// No statement of this backend has a bare `LIMIT ?`: SQLite plans a bound
/// LIMIT that is a bare parameter as a constant and then compiles the
/// statement again after every new binding (every execution). `LIMIT ? + 0`
/// is an expression and keeps the prepared statement (see
/// `tx::REVISIONS_AFTER`).
#[test]
fn no_statement_has_a_bare_bound_limit() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut seen = 0;
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("plans.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("LIMIT ") {
                let rest = &text[at + "LIMIT ".len()..];
                let next = rest
                    .trim_start_matches(['?', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
                if rest.starts_with('?') {
                    seen += 1;
                    if !next.starts_with(" + 0") {
                        bad.push(format!(
                            "{}: LIMIT {}",
                            path.display(),
                            &rest[..rest.len().min(20)]
                        ));
                    }
                } else if rest.starts_with('"') {
                    // A QueryBuilder: `LIMIT ").push_bind(…).push(" + 0")`.
                    seen += 1;
                    if !rest[..rest.len().min(160)].contains("\" + 0\"") {
                        bad.push(format!(
                            "{}: LIMIT {}",
                            path.display(),
                            &rest[..rest.len().min(60)]
                        ));
                    }
                }
            }
        }
    }
    assert!(seen >= 9, "the scan found the bound limits ({seen})");
    assert!(bad.is_empty(), "bare bound LIMITs: {bad:#?}");
}
