//! Fuzz targets for hubsync's hostile-input paths (issue 7 item 9): the
//! packet codec as the master's exchange handler runs it, gzip decoding
//! under its caps, the exchange handler itself on an in-process master
//! with a temporary SQLite store, and schema loading.
//!
//! A target is a plain function from bytes. It must return normally on
//! every input; it checks its invariants with `assert!`, so a panic is a
//! finding. Two drivers run the same functions:
//!
//! - `cargo test -p hubsync-fuzz` (stable, CI): every checked-in corpus
//!   file, then a bounded number of random and mutated inputs per target
//!   (`HUBSYNC_FUZZ_CASES`, default 256) — see `tests/fuzz.rs`.
//! - cargo-fuzz (`fuzz/libfuzzer`, nightly, long runs): one libFuzzer
//!   target per function, seeded from `fuzz/corpus/<target>/`.
//!
//! This crate is a test harness, not library code: failing to set up the
//! harness (a temporary directory, the in-process master) panics with what
//! failed.

pub mod codec;
pub mod exchange;
pub mod mutate;
pub mod schema;
pub mod seeds;

use std::path::PathBuf;

/// One fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// JSON bytes, gzipped, then decoded and validated exactly as the
    /// master's exchange handler does before the engine sees them.
    Envelope,
    /// Raw bytes through `protocol::gunzip` under several caps.
    Gzip,
    /// A whole request (a control byte, then the body) through the
    /// master's `/sync/v1/exchange` route.
    Exchange,
    /// A schema set (files separated by NUL, `name\ncontents`) through
    /// `EntityRegistry::from_files`.
    Schema,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Envelope,
        Target::Gzip,
        Target::Exchange,
        Target::Schema,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Envelope => "envelope",
            Target::Gzip => "gzip",
            Target::Exchange => "exchange",
            Target::Schema => "schema",
        }
    }

    /// Runs the target on one input; panics on a finding.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Envelope => codec::envelope(data),
            Target::Gzip => codec::gzip(data),
            Target::Exchange => exchange::exchange(data),
            Target::Schema => schema::schema(data),
        }
    }

    /// The checked-in corpus of this target: seeds from real packets and
    /// schema sets, and every input that once failed (`regression-*`).
    pub fn corpus_dir(self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(self.name())
    }

    /// The corpus files, sorted by name.
    pub fn corpus(self) -> Vec<(String, Vec<u8>)> {
        let dir = self.corpus_dir();
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list the corpus {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| {
                let path = e.path();
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        files.sort();
        files
    }
}

/// The repository's example schema set, which the fuzz master and the
/// envelope target validate against.
pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}
