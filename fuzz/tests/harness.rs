//! The fuzz harness is not vacuous: on a fresh master (this test binary is
//! its own process) the exchange seeds reach every stage of the handler —
//! authentication, decoding, limits, authorization, the engine — and get
//! the answers docs/protocol.md documents.

use hubsync_fuzz::Target;
use hubsync_fuzz::exchange::exchange_status;

#[test]
fn the_exchange_seeds_reach_every_stage_of_the_handler() {
    let corpus = Target::Exchange.corpus();
    let status = |name: &str| {
        let (_, bytes) = corpus
            .iter()
            .find(|(n, _)| n == &format!("seed-{name}"))
            .unwrap_or_else(|| panic!("seed-{name} is in fuzz/corpus/exchange"));
        exchange_status(bytes).expect("a status")
    };
    // In this order: each packet number follows the previous accepted one.
    for (seed, expected) in [
        ("poll", 200),
        ("forged-token", 401),
        ("no-token", 401),
        ("not-gzipped", 400),
        ("no-content-encoding", 400),
        ("deep-json", 413),
        ("as-other-node", 403),
        ("to-other-node", 403),
        ("invalid-data", 422),
        ("unknown-type", 422),
        ("other-schema-major", 409),
        ("impossible-ack", 409),
        ("insert-graph", 200),
        ("insert-graph", 200),
    ] {
        assert_eq!(status(seed), expected, "seed-{seed}");
    }
    let master = hubsync_fuzz::exchange::FuzzMaster::get();
    let entities = master
        .rt
        .block_on(master.node.engine.store().dump_entities())
        .expect("dump");
    assert_eq!(entities.len(), 5, "the graph was applied once");
}
