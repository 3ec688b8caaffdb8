//! The stable fuzz driver (CI): every checked-in corpus file through its
//! target, then random and mutated inputs per target, bounded by
//! `HUBSYNC_FUZZ_CASES` (default 256 per target; set it to 100000 or more
//! for a long run, ideally with `--release`). A failure prints the
//! shrunken input; save it as `fuzz/corpus/<target>/regression-<what>` so
//! that it is replayed on every run from then on.
//!
//! The long, coverage-guided run is cargo-fuzz in `fuzz/libfuzzer`
//! (docs/testing.md, "Fuzzing").

use hubsync_fuzz::{Target, mutate};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn cases() -> u32 {
    std::env::var("HUBSYNC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // Failures are kept as corpus files (by hand), not in a
        // proptest-regressions file beside the test.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// One input: random bytes, or a corpus file mutated at the byte level or
/// (for JSON inputs) the JSON level.
fn input(target: Target) -> impl Strategy<Value = Vec<u8>> {
    let corpus: Vec<Vec<u8>> = target.corpus().into_iter().map(|(_, b)| b).collect();
    assert!(!corpus.is_empty(), "{} has no corpus", target.name());
    let ops = prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..8);
    let json_body = matches!(target, Target::Envelope | Target::Exchange);
    let mutated = (0..corpus.len(), ops, any::<bool>()).prop_map(move |(i, ops, structural)| {
        let seed = &corpus[i];
        match target {
            // The control byte stays a control byte; the body is JSON.
            Target::Exchange if structural => {
                let (control, body) = seed.split_first().unwrap_or((&0, &[]));
                let mut out = vec![*control];
                out.extend(mutate::json(body, &ops));
                out
            }
            _ if structural && json_body => mutate::json(seed, &ops),
            _ => mutate::bytes(seed, &ops),
        }
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        4 => mutated,
    ]
}

#[test]
fn every_corpus_file_passes_its_target() {
    for target in Target::ALL {
        for (name, bytes) in target.corpus() {
            let result = std::panic::catch_unwind(|| target.run(&bytes));
            assert!(
                result.is_ok(),
                "fuzz/corpus/{}/{name} fails its target",
                target.name()
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    // Feature: sync-system, Property 16: Serialization round-trip consistency — any packet the master's decoding accepts (after the size, decompression, depth and entity-count checks) re-encodes and decodes to the same envelope; nothing it is given makes decoding or schema validation panic.
    #[test]
    fn envelope_decoding_never_panics_and_round_trips(data in input(Target::Envelope)) {
        Target::Envelope.run(&data);
    }

    // Feature: sync-system, Property 22: GZIP compression — decompression under any cap never exceeds it, agrees with decompression under a larger cap, and gzip round-trips any bytes.
    #[test]
    fn gzip_decoding_is_bounded_and_consistent(data in input(Target::Gzip)) {
        Target::Gzip.run(&data);
    }

    // Feature: sync-system, Property 26: Token-based authentication — whatever request arrives (any body, token, encoding), the exchange handler answers a documented status, never 5xx, applies nothing it refuses, and never touches another node's packet state.
    #[test]
    fn the_exchange_handler_answers_every_request_as_documented(data in input(Target::Exchange)) {
        Target::Exchange.run(&data);
    }

    // Feature: sync-system, Property 17: Schema version validation — loading any schema set either succeeds (and its types validate any data without panicking) or reports at least one problem.
    #[test]
    fn schema_loading_never_panics(data in input(Target::Schema)) {
        Target::Schema.run(&data);
    }
}

/// Rewrites the `seed-*` files of `fuzz/corpus/` from the protocol's own
/// types and the example schema set. Run by hand after a protocol change:
/// `cargo test -p hubsync-fuzz --test fuzz -- --ignored write_seed_corpus`.
#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_seed_corpus() {
    for target in Target::ALL {
        let dir = target.corpus_dir();
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(&path).expect("remove an old seed");
            }
        }
    }
    for (target, name, bytes) in hubsync_fuzz::seeds::all() {
        std::fs::write(target.corpus_dir().join(name), bytes).expect("write a seed");
    }
}
