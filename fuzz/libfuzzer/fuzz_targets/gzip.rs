#![no_main]
//! cargo-fuzz target `gzip`: see `hubsync_fuzz::Target::Gzip`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubsync_fuzz::Target::Gzip.run(data));
