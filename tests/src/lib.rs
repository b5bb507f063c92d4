//! Helpers shared by the end-to-end tests in `tests/tests/`.
//!
//! The tests drive the real `sensor` binary (built by `cargo xtask test` before they run) and read
//! third-party data from `../shared/` beside the checkout.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), PathBuf::from)
}

/// `../shared/` beside the checkout (override with `SENSOR_SHARED_DIR`). Panics with a clear message
/// when it is missing: the corpora tests cannot mean anything without it.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SENSOR_SHARED_DIR")
        .map_or_else(|| workspace_root().join("..").join("shared"), PathBuf::from);
    assert!(
        dir.join("corpora").is_dir(),
        "shared data not found at {} (set SENSOR_SHARED_DIR)",
        dir.display()
    );
    dir
}

/// The `sensor` binary under test (override with `SENSOR_BIN`).
pub fn sensor_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SENSOR_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("sensor");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "sensor binary not found under {}: run `cargo build -p sensor` (cargo xtask test does)",
        target.display()
    );
}

/// True when running as root. When not root, prints a loud SKIPPED line; under `CI=true` a skip is a
/// failure, because CI runs as root and a privileged test that does not run proves nothing.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let msg = format!("SKIPPED (not root): privileged test `{test}` did not run");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; under CI=true this is a failure"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    root
}
