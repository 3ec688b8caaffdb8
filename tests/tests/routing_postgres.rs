//! Routing scopes end to end (tests/scenarios/routing.rs) with a
//! PostgreSQL master: a fresh database per cluster on the server named by
//! HUBSYNC_TEST_POSTGRES_URL, dropped afterwards. Without that variable
//! every test says SKIPPED on stderr and passes. Add scenarios to
//! tests/scenarios/routing.rs, not here.

const MASTER_BACKEND: hubsync_tests::MasterBackend = hubsync_tests::MasterBackend::Postgres;

include!("../scenarios/routing.rs");
