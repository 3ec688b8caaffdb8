//! One module per scenario.

pub mod gzip;
pub mod pg_ingest;
