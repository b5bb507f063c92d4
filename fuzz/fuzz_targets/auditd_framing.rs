//! Fuzz target: the auditd remote-protocol framing (managed 16-byte headers and ascii lines),
//! fed in arbitrary chunk sizes (as a connection's reads, discarding the rest of over-long lines),
//! never panics and never grows its buffer beyond one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ingest::server::{AuditdFrame, AuditdFraming};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut framing = AuditdFraming::default();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        framing.push(piece, 4096, &mut out);
        assert!(framing.buf.len() <= 4096 + 16 + 65535 + chunk);
    }
    for f in &out {
        if let AuditdFrame::Line(l) = f {
            assert!(l.len() <= 4096 && !l.contains(&b'\n'));
        }
    }
});
