#![no_main]
//! cargo-fuzz target `exchange`: see `hubsync_fuzz::Target::Exchange`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubsync_fuzz::Target::Exchange.run(data));
