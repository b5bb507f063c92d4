//! Memory bounds of the real daemon under a flood through real HTTP ingest: one authenticated agent
//! sends records whose field names are all distinct and 100 kB long. The daemon's resident memory
//! must stay under a ceiling (it grew by the names' size, ~220 kB a record, before the interner was
//! bounded in bytes), and it must say what it shed (`sensor_field_overflow_total`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{free_port, sensor_bin, sha256_hex};

const TOKEN: &str = "limits-test-token";

fn metric(socket: &Path, name: &str) -> u64 {
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
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// Posts `body` as ECS with `token`; the HTTP status.
fn post_status(port: u16, token: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn a_full_disk_answers_507_and_loses_nothing_acknowledged() {
    if !tests::require_root("a_full_disk_answers_507_and_loses_nothing_acknowledged") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    // A 1 MiB tmpfs for the spool: a disk that fills.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let port = free_port();
    let cfg = dir.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\n[privileges]\nuser = \"root\"\n[kernel]\nenabled = false\n[api]\nsocket = \"{d}/control.sock\"\n[ingest]\nenabled = true\nspool_dir = \"{s}\"\n[ingest.spool]\nsegment_bytes = 262144\n[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n[[ingest.agents]]\nid = \"a\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(TOKEN),
            d = dir.display(),
            s = spool.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body: String = (0..50)
        .map(|_| {
            format!(
                "{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"event\":{{\"action\":\"{}\"}}}}\n",
                "x".repeat(900)
            )
        })
        .collect();
    let (mut acked, mut full, mut other) = (0u64, 0, Vec::new());
    for _ in 0..40 {
        match post_status(port, TOKEN, &body) {
            200 => acked += 50,
            507 => full += 1,
            s => other.push(s),
        }
    }
    assert!(full > 0, "the 1 MiB spool never filled");
    assert!(other.is_empty(), "answers other than 200/507: {other:?}");
    // Every acknowledged record reaches the correlator.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&socket, "sensor_events_in_total{source=\"ingest\"} ") < acked {
        assert!(
            Instant::now() < deadline,
            "{} of {acked} acknowledged records arrived:\n{}",
            metric(&socket, "sensor_events_in_total{source=\"ingest\"} "),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = metric(&socket, "sensor_events_in_total{source=\"ingest\"} ");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(
        got, acked,
        "records arrived that were never acknowledged, or twice"
    );
}

#[test]
fn rejected_records_cost_rate_tokens_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let cfg = dir.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\n[privileges]\nuser = \"root\"\n[kernel]\nenabled = false\n[api]\nsocket = \"{d}/control.sock\"\n[ingest]\nenabled = true\n[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n[[ingest.agents]]\nid = \"a\"\ntoken_sha256 = \"{}\"\nrate_per_sec = 10\n",
            sha256_hex(TOKEN),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200)); // the bucket is full: 10 tokens
                                                     // 40 junk lines: all rejected (400), and they drain the bucket.
    let junk = "not json\n".repeat(40);
    let first = post_status(port, TOKEN, &junk);
    // One good record right after: refused for the rate the junk used up.
    let good = "{\"@timestamp\":\"2026-01-01T00:00:00Z\"}\n";
    let second = post_status(port, TOKEN, good);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(first, 400, "40 rejected lines");
    assert_eq!(second, 429, "the rejected lines did not cost rate tokens");
}

#[test]
fn distinct_100_kb_field_names_keep_memory_under_the_ceiling_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let cfg = dir.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\n[privileges]\nuser = \"root\"\n[kernel]\nenabled = false\n[api]\nsocket = \"{d}/control.sock\"\n[ingest]\nenabled = true\n[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n[[ingest.agents]]\nid = \"a\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(TOKEN),
            d = dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Warm up with ordinary records, then take the baseline.
    let ordinary: String = (0..100)
        .map(|i| {
            format!(
                "{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"event\":{{\"action\":\"w{i}\"}}}}\n"
            )
        })
        .collect();
    assert_eq!(tests::post_ecs(port, TOKEN, &ordinary), Some(100));
    std::thread::sleep(Duration::from_secs(1));
    let base = rss(child.id());
    let overflow0 = metric(&socket, "sensor_field_overflow_total ");

    const RECORDS: usize = 1_500;
    let key = "k".repeat(100_000);
    for batch in 0..RECORDS / 50 {
        let body: String = (0..50)
            .map(|i| {
                format!(
                    "{{\"@timestamp\":\"2026-01-01T00:00:01Z\",\"f{:05}{key}\":1}}\n",
                    batch * 50 + i
                )
            })
            .collect();
        assert_eq!(
            tests::post_ecs(port, TOKEN, &body),
            Some(50),
            "batch {batch}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(&socket, "sensor_events_in_total{source=\"ingest\"} ") < (RECORDS + 100) as u64 {
        assert!(
            Instant::now() < deadline,
            "the flood did not reach the correlator:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let grown = rss(child.id()).saturating_sub(base);
    let shed = metric(&socket, "sensor_field_overflow_total ") - overflow0;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    let _ = child.wait();
    eprintln!(
        "flood of {RECORDS} distinct 100 kB field names: RSS {} MiB -> +{} MiB, {shed} field names shed",
        base >> 20,
        grown >> 20
    );
    assert!(
        shed >= RECORDS as u64,
        "only {shed} overflowed field names counted"
    );
    // 150 MB of names were sent; the ceiling leaves room for buffers, not for keeping them.
    assert!(
        grown < 96 << 20,
        "resident memory grew by {} MiB over {} MiB",
        grown >> 20,
        base >> 20
    );
}

/// `[ingest.limits] max_record_bytes` counts the record as spooled (2 bytes + agent id + line), at
/// the edge: a line that fits alone but not with its envelope is rejected by name, the records
/// beside it are stored (before, the spool refused the whole batch: 500 / auditd DISKERROR).
#[test]
fn one_record_limit_counts_the_envelope_at_the_edge() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let aport = free_port();
    let cfg = dir.join("sensor.toml");
    // Agent id "a": envelope of 3 bytes; auditd peer "p": 3 bytes too.
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\n[privileges]\nuser = \"root\"\n[kernel]\nenabled = false\n[api]\nsocket = \"{d}/control.sock\"\n[ingest]\nenabled = true\n[ingest.limits]\nmax_record_bytes = 4096\n[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n[ingest.auditd]\nlisten = \"127.0.0.1:{aport}\"\npeers = [{{ addr = \"127.0.0.1\", agent_id = \"p\" }}]\n[[ingest.agents]]\nid = \"a\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(TOKEN),
            d = dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(sensor_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", aport)).is_err()
    {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An ECS record of exactly `len` bytes.
    let record = |len: usize| {
        let head = "{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"message\":\"";
        let r = format!("{head}{}\"}}", "x".repeat(len - head.len() - 2));
        assert_eq!(r.len(), len);
        r
    };
    let body = format!("{}\n{}\n", record(4093), record(4094));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    // auditd: a line of 4093 bytes fits with its envelope, one of 4094 does not.
    let line = |len: usize, serial: u32| {
        let head = format!("type=USER_CMD msg=audit(1767225600.000:{serial}): cmd=");
        format!("{head}{}\n", "a".repeat(len - head.len()))
    };
    let mut a = tests::auditd_connect(aport).unwrap();
    a.write_all(format!("{}{}{}", line(4093, 1), line(4094, 2), line(100, 3)).as_bytes())
        .unwrap();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    // One HTTP record, and the auditd events of serials 1 and 3.
    while metric(&socket, "sensor_events_in_total{source=\"ingest\"} ") < 3 {
        assert!(
            Instant::now() < deadline,
            "{} events in:\n{resp}\n{}",
            metric(&socket, "sensor_events_in_total{source=\"ingest\"} "),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let got = metric(&socket, "sensor_events_in_total{source=\"ingest\"} ");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    let _ = child.wait();
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\"accepted\":1")
            && resp.contains("\"line\":2")
            && resp.contains("exceeds the limit"),
        "{resp}"
    );
    assert_eq!(got, 3, "events in:\n{daemon_log}");
    assert!(
        daemon_log.contains("auditd line over the record limit discarded"),
        "{daemon_log}"
    );
    assert!(!daemon_log.contains("spool append failed"), "{daemon_log}");
}
