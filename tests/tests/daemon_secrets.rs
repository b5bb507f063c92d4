//! Secrets and files: the real `sensor` binary refuses token and key files that group or others may
//! access, duplicate agent tokens, and a webhook token over plain http to a non-loopback host, each
//! with a message naming the setting, the file and the fix; files it creates are private (umask 077).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{free_port, sensor_bin, sha256_hex};

/// Runs `sensor run` with `cfg` until it exits or its log says `until` (then it is stopped);
/// returns (exited by itself with success, the log).
fn run_daemon_until(dir: &Path, cfg: &str, until: &str) -> (bool, String) {
    let path = dir.join("sensor.toml");
    std::fs::write(&path, cfg).unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if !until.is_empty()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(until)
        {
            let _ = child.kill();
            let _ = child.wait();
            return (false, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon kept running with:\n{cfg}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        st.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// Runs `sensor run` with `cfg` and returns (success, stderr) once it exits (it must, within 60 s).
fn run_daemon(dir: &Path, cfg: &str) -> (bool, String) {
    run_daemon_until(dir, cfg, "")
}

fn base(dir: &Path) -> String {
    format!(
        "state_dir = \"{d}/state\"\n[privileges]\nuser = \"root\"\n[kernel]\nenabled = false\n[api]\nsocket = \"{d}/control.sock\"\n",
        d = dir.display()
    )
}

fn write_mode(p: &Path, text: &str, mode: u32) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_ingest_tls_key_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write_mode(&d.join("server.pem"), &cert.cert.pem(), 0o644);
    write_mode(&d.join("server.key"), &cert.key_pair.serialize_pem(), 0o644);
    let cfg = format!(
        "{}[ingest]\nenabled = true\n[ingest.http]\nlisten = \"127.0.0.1:{}\"\n[ingest.http.tls]\ncert = \"{p}/server.pem\"\nkey = \"{p}/server.key\"\n",
        base(d),
        free_port(),
        p = d.display()
    );
    // A refused source does not stop the daemon (it runs without it and says why).
    let (ok, log) = run_daemon_until(d, &cfg, "source refused");
    assert!(!ok, "{log}");
    let key = d.join("server.key");
    assert!(
        log.contains(&format!(
            "ingest TLS key {} is accessible to group or others (mode 0644)",
            key.display()
        )) && log.contains(&format!("chmod 600 {}", key.display())),
        "{log}"
    );
    // The same key, private: the daemon starts (then is stopped by the test).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = d.join("sensor.toml");
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.join("control.sock").exists() {
        assert!(child.try_wait().unwrap().is_none(), "refused a 0600 key");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn api_token_and_webhook_token_files_open_to_others_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_mode(&d.join("hook.token"), "t0ken\n", 0o640);
    let cfg = format!(
        "{}[outputs.webhook]\nurl = \"http://127.0.0.1:9/x\"\ntoken_file = \"{p}/hook.token\"\n",
        base(d),
        p = d.display()
    );
    let (ok, log) = run_daemon(d, &cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("[outputs.webhook] token_file")
            && log.contains("is accessible to group or others (mode 0640)"),
        "{log}"
    );

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write_mode(&d.join("api.crt"), &cert.cert.pem(), 0o644);
    write_mode(&d.join("api.key"), &cert.key_pair.serialize_pem(), 0o600);
    write_mode(&d.join("api.token"), "t0ken\n", 0o604);
    let cfg = format!(
        "{}[api.tcp]\nlisten = \"127.0.0.1:{}\"\ncert = \"{p}/api.crt\"\nkey = \"{p}/api.key\"\ntoken_file = \"{p}/api.token\"\n",
        base(d),
        free_port(),
        p = d.display()
    );
    let (ok, log) = run_daemon(d, &cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("[api.tcp] token_file")
            && log.contains("is accessible to group or others (mode 0604)"),
        "{log}"
    );
}

#[test]
fn a_webhook_token_is_never_sent_over_plain_http_to_another_host() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_mode(&d.join("hook.token"), "t0ken\n", 0o600);
    let cfg = format!(
        "{}[outputs.webhook]\nurl = \"http://192.0.2.10:8080/alerts\"\ntoken_file = \"{p}/hook.token\"\n",
        base(d),
        p = d.display()
    );
    let (ok, log) = run_daemon(d, &cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("a bearer token is never sent over plain http except to loopback; 192.0.2.10:8080 is not a loopback address"),
        "{log}"
    );
}

#[test]
fn two_agents_with_one_token_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sha = sha256_hex("shared-token");
    let cfg = format!(
        "{}[ingest]\nenabled = true\n[ingest.http]\nlisten = \"127.0.0.1:{}\"\nplaintext_loopback = true\n[[ingest.agents]]\nid = \"a\"\ntoken_sha256 = \"{sha}\"\n[[ingest.agents]]\nid = \"b\"\ntoken_sha256 = \"{}\"\n",
        base(d),
        free_port(),
        sha.to_uppercase()
    );
    let path = d.join("sensor.toml");
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(sensor_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`a` and `b` have the same token (token_sha256)"),
        "{err}"
    );
}

#[test]
fn files_the_daemon_creates_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = format!(
        "{}[outputs.file]\npath = \"{p}/out/alerts.ndjson\"\n",
        base(d),
        p = d.display()
    );
    let path = d.join("sensor.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.join("control.sock").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    for p in ["state", "state/alerts.db", "out", "out/alerts.ndjson"] {
        let p = d.join(p);
        if !p.exists() {
            continue;
        }
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:04o}", p.display());
    }
    let db = std::fs::metadata(d.join("state/alerts.db")).unwrap();
    assert_eq!(db.permissions().mode() & 0o077, 0);
}
