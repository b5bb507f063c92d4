//! Fuzz target: the `windows` decoder never panics, and every reject names a line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ingest::{decode_reader, Format};

fuzz_target!(|data: &[u8]| {
    let format: Format = "windows".parse().unwrap_or(Format::Ecs);
    decode_reader(format, "fuzz", data, &mut |r| {
        if let Err(e) = r {
            assert!(e.line > 0 && !e.message.is_empty());
        }
    });
});
