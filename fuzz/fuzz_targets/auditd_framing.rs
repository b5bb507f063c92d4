//! Fuzz target: the auditd remote-protocol framing (managed 16-byte headers and ascii lines),
//! fed in arbitrary chunk sizes, never panics and never grows its buffer beyond one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ingest::server::{parse_auditd_frames, AuditdFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        parse_auditd_frames(&mut buf, 4096, &mut out);
        assert!(buf.len() <= 4096 + 16 + 65535 + chunk);
    }
    for f in &out {
        if let AuditdFrame::Line(l) = f {
            assert!(l.len() <= 4096 && !l.contains(&b'\n'));
        }
    }
});
