//! A full disk under the real daemon: its whole state directory (alert store and spool) on a small
//! tmpfs mounted by the test, filled by a ballast file and then by ingest (HTTP and the auditd remote
//! protocol). Checked: HTTP answers 507 (never 500, never a path of this host), the auditd listener
//! answers `DISKFULL` instead of ACK and says so in the log, the alert store waits for space instead
//! of dropping alerts or crashing, and once space is freed, and again after a restart, every
//! acknowledged record is in the store exactly once (the rule alerts on each; dedup folds them into
//! `count`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::process::{api, wait_until, Process};
use tests::{free_port, require_root, sensor_bin, sha256_hex};

const TOKEN: &str = "diskfull-test-token";
const RMW_MAGIC: u32 = 0xff00_00fe;
const RMW_ACK: u32 = 0x4000_0000;
const RMW_DISKFULL: u32 = 0x6000_0001;

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// POSTs one ECS body; (status, body).
fn post(port: u16, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

fn rmw(kind: u32, seq: u32, text: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + text.len());
    h.extend_from_slice(&RMW_MAGIC.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&kind.to_le_bytes());
    h.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    h.extend_from_slice(text);
    h
}

/// Sends one managed auditd message and reads the answer's type.
fn auditd_send(s: &mut std::net::TcpStream, seq: u32, text: &str) -> u32 {
    s.write_all(&rmw(0, seq, text.as_bytes())).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), seq);
    u32::from_le_bytes([h[6], h[7], h[8], h[9]])
}

/// Sum of `count` over the stored alerts of `rule`.
fn stored(socket: &Path, rule: &str) -> Option<u64> {
    let (200, v) = api(
        socket,
        "GET",
        &format!("/v1/alerts?rule={rule}&limit=1000"),
        None,
    )?
    else {
        return None;
    };
    let list = v
        .as_array()
        .or_else(|| v["alerts"].as_array())
        .cloned()
        .unwrap_or_default();
    Some(list.iter().filter_map(|a| a["count"].as_u64()).sum())
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

#[test]
fn a_full_state_disk_answers_507_and_diskfull_and_loses_no_acknowledged_record() {
    if !require_root("a_full_state_disk_answers_507_and_diskfull_and_loses_no_acknowledged_record")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _unmount = Unmount(state.clone());
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(
        d.join("rules/fill.toml"),
        "[[rule]]\nid = \"fill\"\nname = \"Fill\"\nseverity = \"low\"\nquery = '''\nany where event.action == \"fill\" or auditd.log.key == \"fill\"\n'''\n",
    )
    .unwrap();
    let port = free_port();
    let aport = free_port();
    let cfg = d.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{s}"
[privileges]
user = "root"
[kernel]
enabled = false
[api]
socket = "{d}/control.sock"
[rules]
shipped = false
paths = ["{d}/rules"]
[ingest]
enabled = true
[ingest.spool]
segment_bytes = 131072
[ingest.http]
listen = "127.0.0.1:{port}"
plaintext_loopback = true
[ingest.auditd]
listen = "127.0.0.1:{aport}"
peers = [{{ addr = "127.0.0.1", agent_id = "auditd-peer" }}]
[[ingest.agents]]
id = "http-agent"
token_sha256 = "{sha}"
"#,
            s = state.display(),
            d = d.display(),
            sha = sha256_hex(TOKEN)
        ),
    )
    .unwrap();
    let socket = d.join("control.sock");
    let start = |log: &str| {
        let mut cmd = Command::new(sensor_bin());
        cmd.args(["run", "--config"]).arg(&cfg);
        let mut p = Process::spawn(cmd, &d.join(log));
        p.wait_ready(Duration::from_secs(60), "the daemon's listeners", || {
            socket.exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", aport)).is_ok()
        });
        p
    };
    let mut daemon = start("daemon.log");

    // Fill the disk but for 1 MiB.
    let ballast = state.join("ballast");
    let room = free_bytes(&state).saturating_sub(1 << 20);
    std::fs::write(&ballast, vec![0u8; usize::try_from(room).unwrap()]).unwrap();

    // Stamped now: the store's retention (90 days) must not take them at the restart.
    let stamp = tests::rfc3339(tests::now_ms(0));
    let body: String = (0..50)
        .map(|_| {
            format!(
                "{{\"@timestamp\":\"{stamp}\",\"event\":{{\"action\":\"fill\"}},\"message\":\"{}\"}}\n",
                "x".repeat(900)
            )
        })
        .collect();
    let now_s = tests::now_ms(0) / 1000;
    let mut audit = tests::auditd_connect(aport).unwrap();
    audit
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (mut acked, mut audit_acked, mut full, mut audit_full) = (0u64, 0u64, 0, 0);
    let mut seq = 0u32;
    for round in 0..200 {
        let (status, resp) = post(port, &body);
        match status {
            200 => acked += 50,
            507 => {
                full += 1;
                assert!(
                    !resp.contains(&*state.to_string_lossy()) && !resp.contains(".wal"),
                    "the 507 names a file of the host: {resp}"
                );
            }
            s => panic!(
                "round {round}: answer {s}, not 200/507: {resp}\n{}",
                daemon.log()
            ),
        }
        seq += 1;
        let text = format!(
            "type=FILLER msg=audit({now_s}.{:03}:{seq}): key=\"fill\" pad=\"{}\"",
            seq % 1000,
            "y".repeat(900)
        );
        match auditd_send(&mut audit, seq, &text) {
            RMW_ACK => audit_acked += 1,
            RMW_DISKFULL => audit_full += 1,
            k => panic!("auditd answer {k:#x}\n{}", daemon.log()),
        }
        if full >= 3 && audit_full >= 1 {
            break;
        }
    }
    assert!(full >= 3, "the disk never filled for HTTP ({acked} acked)");
    assert!(audit_full >= 1, "auditd was never told DISKFULL");
    let log = daemon.log();
    assert!(
        log.contains("DISKFULL"),
        "the auditd side logged no DISKFULL:\n{log}"
    );
    // The daemon is alive and answers queries while the disk is full.
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(api(&sock, "GET", "/v1/alerts?limit=1", None));
    });
    let answer = rx.recv_timeout(Duration::from_secs(20));
    assert!(
        matches!(answer, Ok(Some((200, _)))),
        "no answer to a query while the disk is full: {answer:?}\n{}",
        daemon.log()
    );

    // Space comes back: every acknowledged record ends up in the store, once.
    std::fs::remove_file(&ballast).unwrap();
    let want = acked + audit_acked;
    eprintln!(
        "acknowledged: {acked} over HTTP ({full} answers 507), {audit_acked} over auditd ({audit_full} DISKFULL)"
    );
    wait_until(
        Duration::from_secs(120),
        "every acknowledged record to be in the store",
        || (stored(&socket, "fill")? >= want).then_some(()),
        || {
            format!(
                "stored {:?} of {want}\n{}",
                stored(&socket, "fill"),
                daemon.log()
            )
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stored(&socket, "fill"), Some(want), "stored twice");
    let st = daemon.stop(Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| s.success()),
        "stop: {st:?}\n{}",
        daemon.log()
    );

    // After a restart: the same, nothing replayed twice.
    let mut again = start("daemon2.log");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        stored(&socket, "fill"),
        Some(want),
        "after a restart\n{}",
        again.log()
    );

    // A stop while the disk is full: bounded, and what was acknowledged but not stored is stored
    // after the next start (once).
    let ballast2 = state.join("ballast2");
    let room = free_bytes(&state).saturating_sub(1 << 20);
    std::fs::write(&ballast2, vec![0u8; usize::try_from(room).unwrap()]).unwrap();
    let mut acked2 = 0u64;
    let mut full2 = 0;
    for _ in 0..200 {
        match post(port, &body).0 {
            200 => acked2 += 50,
            507 => full2 += 1,
            s => panic!("answer {s}, not 200/507\n{}", again.log()),
        }
        if full2 >= 3 {
            break;
        }
    }
    assert!(full2 >= 3, "the disk never filled again ({acked2} acked)");
    // Whether the store itself is waiting for space at the stop depends on how much its WAL had
    // grown before (it reuses its file): said, not required. The spool is full either way.
    std::thread::sleep(Duration::from_secs(3));
    let store_waiting = again.log().contains("alert store: DISK FULL");
    let stopping = std::time::Instant::now();
    let st = again.stop(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "stop while the disk is full: {st:?}\n{}",
        again.log()
    );
    eprintln!(
        "stopped in {:?} with the disk full (the alert store waiting for space: {store_waiting}); {acked2} more records acknowledged",
        stopping.elapsed()
    );
    std::fs::remove_file(&ballast2).unwrap();
    let mut third = start("daemon3.log");
    let want = want + acked2;
    wait_until(
        Duration::from_secs(120),
        "what was acknowledged before the stop to be stored after the restart",
        || (stored(&socket, "fill")? >= want).then_some(()),
        || {
            format!(
                "stored {:?} of {want}\n{}",
                stored(&socket, "fill"),
                third.log()
            )
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stored(&socket, "fill"), Some(want), "stored twice");
    third.stop(Duration::from_secs(60));
}
