//! Least privilege of the real daemon (`sensor run`, kernel sensor on, HTTP ingest on loopback):
//! once it is up, the process that holds the ingest listener (found from /proc/net/tcp and the
//! process's fds) runs as the configured unprivileged user with no capability in any thread and
//! `no_new_privs`, and everything else still works after the drop: kernel events keep arriving,
//! ingested records reach the correlator, the root CLI talks to the control socket, SIGHUP reloads,
//! SIGTERM stops cleanly and removes the socket. Bad `[privileges]` settings fail with their name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{free_port, require_root, sensor_bin, sha256_hex};

const TOKEN: &str = "privileges-test-token";
/// Debian's `nobody`.
const NOBODY: u32 = 65534;

fn api(socket: &Path, path: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ep = sensor::client::Endpoint::Unix(socket.to_path_buf());
    let (status, bytes) = rt
        .block_on(sensor::client::call(&ep, "GET", path, None, None))
        .ok()?;
    (status == 200).then(|| serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let p = dir.join("sensor.toml");
    std::fs::write(
        &p,
        format!(
            r#"
state_dir = "{d}/state"
[kernel]
enabled = true
[api]
socket = "{d}/run/control.sock"
[ingest]
enabled = true
[ingest.http]
listen = "127.0.0.1:{port}"
plaintext_loopback = true
[[ingest.agents]]
id = "agent-a"
token_sha256 = "{sha}"
[outputs.file]
path = "{d}/log/alerts.ndjson"
{extra}
"#,
            d = dir.display(),
            sha = sha256_hex(TOKEN)
        ),
    )
    .unwrap();
    p
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("SENSOR_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The pid whose fds hold the TCP socket listening on `port` (from /proc/net/tcp and /proc/*/fd).
fn listener_pid(port: u16) -> Option<u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!(":{port:04X}");
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A").then(|| f[9].to_string())
    })?;
    let link = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link) {
                return Some(pid);
            }
        }
    }
    None
}

/// The daemon's child running `sensor container-meta-helper`.
fn helper_of(daemon: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_string_lossy().parse().ok()?;
        let st = std::fs::read_to_string(p.path().join("status")).ok()?;
        let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
        (status_field(&st, "PPid:") == daemon.to_string()
            && String::from_utf8_lossy(&cmd).contains("container-meta-helper"))
        .then_some(pid)
    })
}

/// Inodes of every TCP/UDP socket of the host (IPv4 and IPv6).
fn net_socket_inodes() -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for f in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{f}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            if let Some(i) = l.split_whitespace().nth(9) {
                out.insert(i.to_string());
            }
        }
    }
    out
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

fn kernel_events(socket: &Path) -> u64 {
    api(socket, "/v1/status")
        .and_then(|s| {
            s["sources"].as_array()?.iter().find_map(|x| {
                (x["name"] == "kernel").then(|| {
                    x["status"]["events"]
                        .as_object()
                        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
                })
            })
        })
        .unwrap_or(0)
}

fn ingest_events_in(socket: &Path) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ep = sensor::client::Endpoint::Unix(socket.to_path_buf());
    let Ok((200, body)) = rt.block_on(sensor::client::call(&ep, "GET", "/metrics", None, None))
    else {
        return 0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix("sensor_events_in_total{source=\"ingest\"} ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_process_parsing_network_input_has_no_capability_and_everything_still_works() {
    if !require_root("daemon_privileges") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The unprivileged user must be able to reach its directories under the test's one.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let cfg = config(dir, port, "[privileges]\nuser = \"nobody\"\n");
    let log = dir.join("daemon.log");
    let socket = dir.join("run/control.sock");
    let mut child = spawn(&cfg, &log);
    wait_for("the control socket and the ingest listener", &log, || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "daemon exited with {st}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        api(&socket, "/healthz").is_some()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // The listener's process: found from the kernel's socket table, not assumed.
    let pid = listener_pid(port).expect("no process holds the ingest listener");
    assert_eq!(
        pid,
        child.id(),
        "the ingest listener is held by another process"
    );
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(st) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        threads += 1;
        let name = status_field(&st, "Name:");
        let cap_eff = u64::from_str_radix(status_field(&st, "CapEff:"), 16).unwrap();
        let cap_prm = u64::from_str_radix(status_field(&st, "CapPrm:"), 16).unwrap();
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        assert_eq!(
            cap_eff & CAP_SYS_ADMIN,
            0,
            "thread {name} has CAP_SYS_ADMIN"
        );
        assert_eq!(
            cap_eff, 0,
            "thread {name} has effective capabilities {cap_eff:x}"
        );
        assert_eq!(
            cap_prm, 0,
            "thread {name} has permitted capabilities {cap_prm:x}"
        );
        for id in status_field(&st, "Uid:").split_whitespace() {
            assert_eq!(id, NOBODY.to_string(), "thread {name} uids {st}");
        }
        for id in status_field(&st, "Gid:").split_whitespace() {
            assert_ne!(id, "0", "thread {name} gids {st}");
        }
        assert_eq!(status_field(&st, "NoNewPrivs:"), "1", "thread {name}");
    }
    assert!(
        threads > 1,
        "expected a multi-threaded daemon, saw {threads} threads"
    );
    // The container metadata helper (started before the drop): a separate process as the same
    // user, holding CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH only (never CAP_SYS_ADMIN), and no
    // network socket: nothing it reads comes from the network.
    let helper = helper_of(pid).expect("no container metadata helper beside the daemon");
    let st = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    const DAC_ONLY: u64 = (1 << 1) | (1 << 2);
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let v = u64::from_str_radix(status_field(&st, key), 16).unwrap();
        assert_eq!(v, DAC_ONLY, "helper {key} {v:x}");
    }
    for id in status_field(&st, "Uid:").split_whitespace() {
        assert_eq!(id, NOBODY.to_string(), "helper uids {st}");
    }
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1", "helper");
    let net = net_socket_inodes();
    for fd in std::fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            assert!(
                !net.contains(inode),
                "the helper holds a network socket ({link})"
            );
        }
    }

    // What the daemon writes is its user's.
    for p in ["state", "state/alerts.db", "state/spool", "run", "log"] {
        let m = std::fs::metadata(dir.join(p)).unwrap();
        assert_eq!(m.uid(), NOBODY, "{p} is owned by uid {}", m.uid());
    }
    let status = api(&socket, "/v1/status").unwrap();
    assert_eq!(status["privileges"]["uid"], NOBODY, "{status}");

    // Kernel events keep arriving through the ring buffer opened before the drop.
    let before = kernel_events(&socket);
    wait_for("kernel events after the drop", &log, || {
        for _ in 0..20 {
            let _ = Command::new("true").status();
        }
        kernel_events(&socket) > before
    });
    // Ingested records are spooled (by the unprivileged process) and reach the correlator.
    let body: String = (0..10)
        .map(|i| {
            format!(
                "{{\"@timestamp\":\"2026-01-01T00:00:{i:02}Z\",\"event\":{{\"action\":\"x\"}},\"host\":{{\"name\":\"h\"}}}}\n"
            )
        })
        .collect();
    assert_eq!(tests::post_ecs(port, TOKEN, &body), Some(10));
    wait_for("ingested events at the correlator", &log, || {
        ingest_events_in(&socket) >= 10
    });

    // SIGHUP: the config is readable by the user, so the reload goes through.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGHUP) };
    wait_for("the reload", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reloaded")
    });

    // SIGTERM: clean stop (detach, store checkpointed) and the socket is removed.
    // SAFETY: as above.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "exit {st}:\n{text}");
    assert!(
        text.contains("privileges dropped") && text.contains("stopped; alert store flushed"),
        "{text}"
    );
    assert!(!socket.exists(), "the control socket was left behind");
}

/// Runs the daemon with `extra` config and expects it to refuse to start with `want` in its log.
fn refused(extra: &str, want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(dir, free_port(), extra);
    let log = dir.join("daemon.log");
    let mut child = spawn(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not refuse `{extra}`");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!st.success(), "started with `{extra}`:\n{text}");
    assert!(text.contains(want), "expected `{want}` in:\n{text}");
}

#[test]
fn bad_privilege_settings_are_refused_with_their_name() {
    if !require_root("daemon_privileges") {
        return;
    }
    refused(
        "[privileges]\nuser = \"no-such-user-for-sensor\"\n",
        "[privileges] user `no-such-user-for-sensor` does not exist",
    );
    refused(
        "[privileges]\nuser = \"nobody\"\ngroup = \"no-such-group-for-sensor\"\n",
        "[privileges] group `no-such-group-for-sensor` does not exist",
    );
}

#[test]
fn a_directory_the_user_cannot_reach_is_named() {
    if !require_root("daemon_privileges") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The test's directory is 0700 root: nobody cannot reach the state directory inside it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = config(dir, free_port(), "[privileges]\nuser = \"nobody\"\n");
    let log = dir.join("daemon.log");
    let mut child = spawn(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the daemon started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!st.success(), "{text}");
    assert!(
        text.contains("user `nobody` (uid 65534) could not reach")
            && text.contains(&format!("{} is mode 0700", dir.display())),
        "{text}"
    );
}
