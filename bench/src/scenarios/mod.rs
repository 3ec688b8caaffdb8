//! One module per scenario.

pub mod pg_ingest;
