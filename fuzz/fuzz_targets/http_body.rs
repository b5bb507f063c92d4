//! Fuzz target: an HTTP ingest body (any format, any Content-Encoding) is decompressed within its
//! limit and split into accepted records and numbered rejects, without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ingest::server::{decode_record, decompress, encode_record, process_body};
use ingest::Format;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let format = Format::ALL[usize::from(sel & 0x0f) % Format::ALL.len()];
    let encoding = ["identity", "gzip", "zstd", "br"][usize::from(sel >> 6)];
    let Ok(body) = decompress(encoding, bytes::Bytes::copy_from_slice(body), 1 << 20) else { return };
    let out = process_body(format, "fuzz", &body, 64 << 10, &[]);
    for line in out.lines(&body) {
        let r = encode_record(format, "fuzz", line);
        let (f, agent, back) = decode_record(&r).expect("a framed record decodes");
        assert_eq!(f, format);
        assert_eq!(agent, "fuzz");
        assert_eq!(back, line);
    }
    for (line, msg) in &out.rejected {
        assert!(*line > 0 && !msg.is_empty());
    }
});
