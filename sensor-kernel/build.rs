//! Embeds the eBPF object built by `cargo xtask build-ebpf`, or an empty one when it has not been
//! built, so that host `cargo check`/`clippy` never need the BPF toolchain. At run time an empty
//! object gives a clear error (`KernelError::NoObject`).
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let obj = manifest.join("../sensor-ebpf/target/bpfel-unknown-none/release/sensor-ebpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("sensor-ebpf.o");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rerun-if-changed=build.rs");
    let bytes = std::fs::read(&obj).unwrap_or_default();
    if bytes.is_empty() {
        println!("cargo:warning=eBPF object not built: embedding an empty one (run `cargo xtask build-ebpf`)");
    }
    if let Err(e) = std::fs::write(&out, &bytes) {
        panic!("writing {}: {e}", out.display());
    }
}
