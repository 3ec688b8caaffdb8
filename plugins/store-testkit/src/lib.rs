//! hubsync-store-testkit: ONE conformance suite for the
//! [`Store`](hubsync_core::store::Store) trait, run by every storage backend
//! in its own test target.
//!
//! Owns: the cases ([`cases`]), each a behaviour the engine relies on —
//! entities, the client queue, the master change log, nodes, history,
//! audit, metadata, transactional atomicity and concurrency — and the
//! [`store_conformance_suite!`] macro that turns them into one `#[tokio::test]`
//! per case.
//!
//! Must never: know a backend. A backend's test target supplies fresh
//! stores; what only one backend has (SQLite's WAL pragmas, PostgreSQL's
//! migration lock) is tested beside that backend.
//!
//! ```ignore
//! // plugins/store-foo/tests/conformance.rs
//! async fn fresh() -> Option<hubsync_store_testkit::Subject> { … }
//! hubsync_store_testkit::store_conformance_suite!(fresh());
//! ```
//!
//! A new case is added once, in `cases/` and in the list of
//! [`store_conformance_suite!`], and every backend runs it.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hubsync_core::store::Store;

pub mod cases;
mod fixtures;

pub use fixtures::*;

/// Opens another handle on a subject's database, as a second host would.
pub type Reopen =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// A fresh, empty, migrated store for one case, and how to open a second
/// handle on the same database.
pub struct Subject {
    pub store: Arc<dyn Store>,
    reopen: Reopen,
    /// Whatever keeps the database alive (a temp dir, a scratch database);
    /// dropped after the case.
    guard: Box<dyn Any + Send + Sync>,
}

impl Subject {
    pub fn new(store: Arc<dyn Store>, reopen: Reopen, guard: Box<dyn Any + Send + Sync>) -> Self {
        Subject {
            store,
            reopen,
            guard,
        }
    }

    /// Another handle on the same database (its own connections), as a
    /// second host would open it.
    pub async fn second_handle(&self) -> Arc<dyn Store> {
        (self.reopen)().await
    }

    /// Closes the store and releases the database.
    pub async fn finish(self) {
        self.store.close().await;
        drop(self.guard);
    }
}

/// Upper bound of one case: only a hang reaches it.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one case on `subject`, bounded by [`CASE_TIMEOUT`].
pub async fn run<F>(name: &str, subject: Subject, case: F)
where
    F: for<'s> FnOnce(&'s Subject) -> Pin<Box<dyn Future<Output = ()> + Send + 's>>,
{
    let outcome = tokio::time::timeout(CASE_TIMEOUT, case(&subject)).await;
    subject.finish().await;
    if outcome.is_err() {
        panic!("conformance case {name} did not finish within {CASE_TIMEOUT:?}");
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$open` is an
/// expression whose value is a future of `Option<Subject>`: a fresh store
/// per case, or `None` to skip (after saying why on stderr).
#[macro_export]
macro_rules! store_conformance_suite {
    ($open:expr) => {
        $crate::__conformance_cases! { $open;
            // entities
            an_entity_round_trips_exactly,
            json_numbers_and_text_round_trip,
            a_nul_character_is_stored_exactly_or_refused,
            put_entity_replaces_the_previous_version,
            listing_pages_by_uuid_with_an_exclusive_cursor,
            dump_orders_by_type_then_uuid_and_includes_deleted,
            past_versions_are_kept_by_revision_once,
            // client queue
            coalescing_keeps_the_row_and_its_place_and_applies_the_rule,
            a_sent_row_and_a_new_unsent_row_coexist_until_acknowledged,
            the_unsent_row_of_an_entity_is_found_and_sent_rows_are_not,
            acknowledging_a_packet_deletes_it_and_every_earlier_one_only,
            queues_of_different_targets_are_separate_and_ordered,
            assigning_rows_that_are_not_queued_for_the_node_is_refused,
            a_queue_row_must_target_a_known_node,
            // master change log
            revisions_increase_and_the_log_keeps_the_latest_per_entity,
            a_revision_carries_its_fields_and_the_entity_as_stored_now,
            a_targeted_revision_is_seen_only_by_its_node,
            a_revision_whose_entity_is_missing_is_corrupt,
            queue_rows_are_not_revisions,
            every_nodes_lag_in_one_read_is_its_own_count,
            // nodes, history, audit, meta
            a_node_row_round_trips_every_field,
            put_node_updates_by_id_and_refuses_a_duplicate_code,
            history_and_audit_round_trip_oldest_first,
            metadata_is_a_key_value_map,
            // referential integrity
            references_are_replaced_per_source_and_found_by_target,
            held_changes_are_kept_replaced_found_and_released,
            // routing
            scopes_round_trip_with_a_pending_change_and_default_to_none,
            holdings_are_per_node_and_referrers_count_only_while_held,
            holdings_and_referrers_read_in_one_go_match_the_single_reads,
            scoped_candidates_are_what_the_routing_would_not_skip,
            seeding_marks_every_entity_and_purge_removes_one,
            // security events
            security_events_are_recorded_filtered_newest_first_and_pruned,
            // transactions
            a_dropped_transaction_leaves_nothing_behind,
            a_committed_transaction_keeps_everything,
            a_failure_in_the_middle_then_drop_leaves_nothing_half_written,
            reads_see_committed_data_only_while_a_write_is_open,
            a_second_handle_sees_what_the_first_committed,
            // concurrency
            concurrent_writers_lose_nothing_and_revisions_appear_in_order,
            read_decide_write_transactions_never_lose_an_update,
            transactions_on_one_node_row_serialize,
            // batches
            batched_entity_reads_and_writes_match_the_one_row_methods,
            batched_references_replace_each_sources_references,
            reserved_revisions_come_after_everything_and_batches_keep_the_latest_per_key,
            writing_rows_at_once_is_the_three_batch_writes_in_order,
            writing_few_rows_at_once_is_the_three_batch_writes_in_order,
            batched_queue_reads_and_writes_match_queue_change,
            stamps_and_raised_revisions_leave_the_data_alone,
            revisions_can_be_read_without_the_data_of_the_nodes_own_versions,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($open:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(subject) = $open.await else { return };
                $crate::run(stringify!($case), subject, |s| {
                    Box::pin($crate::cases::$case(s))
                })
                .await;
            }
        )*
    };
}
