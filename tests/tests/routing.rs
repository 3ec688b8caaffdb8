//! Routing scopes end to end (tests/scenarios/routing.rs) with a SQLite
//! master. Add scenarios to tests/scenarios/routing.rs, not here.

const MASTER_BACKEND: hubsync_tests::MasterBackend = hubsync_tests::MasterBackend::Sqlite;

include!("../scenarios/routing.rs");
