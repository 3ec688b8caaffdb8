//! The end-to-end sync suite (tests/scenarios/sync.rs) with a SQLite
//! master. Add scenarios to that file, not here.

const MASTER_BACKEND: hubsync_tests::MasterBackend = hubsync_tests::MasterBackend::Sqlite;

include!("../scenarios/sync.rs");
