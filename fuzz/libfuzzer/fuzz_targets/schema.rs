#![no_main]
//! cargo-fuzz target `schema`: see `hubsync_fuzz::Target::Schema`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubsync_fuzz::Target::Schema.run(data));
