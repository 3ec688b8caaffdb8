#![no_main]
//! cargo-fuzz target `envelope`: see `hubsync_fuzz::Target::Envelope`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubsync_fuzz::Target::Envelope.run(data));
