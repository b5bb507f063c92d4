//! Helpers shared by the end-to-end tests in `tests/tests/`.
//!
//! The tests drive the real `sensor` binary (built by `cargo xtask test` before they run) and read
//! third-party data from `../shared/` beside the checkout.

use std::path::PathBuf;

pub mod process;

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

/// SHA-256 of `s` in hex, as an agent's `token_sha256` in an ingest config (via `sha256sum`).
/// Test support: a failure here is a broken test machine, reported by panicking.
#[allow(clippy::expect_used)]
pub fn sha256_hex(s: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum must be installed");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(s.as_bytes())
        .expect("writing to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A directory of this test process for `name`'s files: `$TMPDIR/sensor-tests-<pid>/<name>`,
/// created. The whole `sensor-tests-<pid>` directory is removed when the process exits (an
/// `atexit` handler: the test harness ends with `exit`), so runs leave nothing behind in /tmp.
#[allow(clippy::expect_used)]
pub fn scratch(name: &str) -> PathBuf {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_scratch() {
        let _ = std::fs::remove_dir_all(scratch_root());
    }
    CLEANUP.call_once(|| {
        // SAFETY: registers a plain function without arguments; it runs once, at exit.
        unsafe { libc::atexit(remove_scratch) };
    });
    let d = scratch_root().join(name);
    std::fs::create_dir_all(&d).expect("creating a scratch directory under $TMPDIR");
    d
}

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("sensor-tests-{}", std::process::id()))
}

/// A loopback TCP port that was free a moment ago.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// A loopback port below 1024 that was free a moment ago: the source port audisp-remote's
/// `local_port` names, as the auditd listener requires by default (auditd's `tcp_client_ports`).
/// Binding it needs root (CAP_NET_BIND_SERVICE), as the auditd tests are.
#[allow(clippy::expect_used)]
pub fn privileged_port() -> u16 {
    let start = 600 + std::process::id() % 400;
    (0..400)
        .map(|i| 600 + (start - 600 + i) % 400)
        .find_map(|p| {
            let p = u16::try_from(p).ok()?;
            std::net::TcpListener::bind(("127.0.0.1", p)).ok()?;
            Some(p)
        })
        .expect("no free loopback port between 600 and 999 (is the test root?)")
}

/// A TCP connection to the auditd listener on 127.0.0.1:`port` from a privileged source port, as
/// audisp-remote with `local_port` set makes it.
pub fn auditd_connect(port: u16) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = None;
    for _ in 0..20 {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], privileged_port()));
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        match s.bind(&local.into()).and_then(|()| s.connect(&to.into())) {
            Ok(()) => return Ok(s.into()),
            // Taken between the probe and this bind, or still in TIME_WAIT towards this peer.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no privileged source port")))
}

/// Posts one NDJSON body to `/v1/ingest/ecs` on 127.0.0.1:`port` with a bearer token, over a raw
/// HTTP/1.1 connection; `Some(accepted)` when the answer is 200, `None` on any failure (refused,
/// reset, timeout, another status): the caller treats the batch as not acknowledged.
pub fn post_ecs(port: u16, token: &str, body: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let req = format!(
        "POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    if !resp.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1)?).ok()?;
    json["accepted"].as_u64()
}

/// RFC 3339 (UTC, milliseconds) for `ms` milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Now plus `ahead_s` seconds, in milliseconds since the epoch.
#[allow(clippy::expect_used)]
pub fn now_ms(ahead_s: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX) + ahead_s * 1000
}
