//! One vocabulary across sources (`correlator::ecs`): an AF_UNIX bind seen by the kernel sensor (the
//! real `sensor events` around a real bind) and the same bind as auditd records it (decoded by the
//! real `sensor ingest --format auditd`) give the same `event.action`, `event.category`,
//! `event.type` and `socket.*` fields, and one rule replayed by `sensor replay` fires on both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use std::fmt::Write as _;
use std::process::Command;

use kernel_support::{by, dump, get, start, workload};
use serde_json::Value;

fn sensor(args: &[&str]) -> String {
    let out = Command::new(tests::sensor_bin())
        .args(args)
        .env("SENSOR_LOG", "warn")
        .output()
        .expect("running sensor");
    assert!(
        out.status.success(),
        "sensor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The records auditd writes for `bind(fd, {AF_UNIX, path}, len)` by `pid` on x86_64 (syscall 49):
/// SYSCALL (a0 is the fd, in hex), SOCKADDR (the `sockaddr_un` in hex, family little-endian),
/// PROCTITLE and EOE, one serial. The layout is audit-userspace's (`ausearch -r` shows the same).
fn auditd_bind_records(pid: i64, fd: i64, path: &str) -> String {
    let mut saddr = String::from("0100");
    for b in path.bytes().chain([0]) {
        let _ = write!(saddr, "{b:02X}");
    }
    let len = 2 + path.len() + 1;
    let m = "msg=audit(1765080000.250:4242):";
    format!(
        "type=SYSCALL {m} arch=c000003e syscall=49 success=yes exit=0 a0={fd:x} a1=7ffc1a2b3c40 \
         a2={len:x} a3=0 items=1 ppid=1 pid={pid} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 \
         sgid=0 fsgid=0 tty=(none) ses=4 comm=\"kernel-workload\" exe=\"/usr/bin/kernel-workload\" \
         key=(null)\n\
         type=SOCKADDR {m} saddr={saddr}\n\
         type=PROCTITLE {m} proctitle=6B65726E656C2D776F726B6C6F6164\n\
         type=EOE {m}\n"
    )
}

#[test]
fn af_unix_bind_from_the_kernel_and_from_auditd_is_one_behaviour() {
    if !tests::require_root("af_unix_bind_from_the_kernel_and_from_auditd_is_one_behaviour") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/tmp/ecs-vocabulary-{}.sock", std::process::id());

    // The kernel sensor's event of a real bind.
    let cap = start(&[]);
    let pid = workload(&["unix-connect", &path]);
    let (events, _) = cap.stop();
    let kernel = by(&events, pid, "unix_bind")
        .into_iter()
        .find(|e| get(e, "socket.path") == path.as_str())
        .unwrap_or_else(|| panic!("no unix_bind to {path}:\n{}", dump(&events, pid)))
        .clone();

    // auditd's records of the same bind, through the auditd decoder.
    let fd = get(&kernel, "socket.fd").as_i64().unwrap();
    let raw = dir.path().join("audit.log");
    std::fs::write(&raw, auditd_bind_records(i64::from(pid), fd, &path)).unwrap();
    let decoded = sensor(&[
        "ingest",
        "--strict",
        "--format",
        "auditd",
        "--agent-id",
        "lnx-01",
        "--input",
        raw.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = decoded.lines().collect();
    assert_eq!(lines.len(), 1, "one event from one group: {decoded}");
    let auditd: Value = serde_json::from_str(lines[0]).unwrap();

    for field in [
        "event.action",
        "event.category",
        "event.type",
        "event.outcome",
        "network.transport",
        "socket.family",
        "socket.path",
        "socket.abstract",
        "socket.fd",
    ] {
        assert!(
            !get(&kernel, field).is_null(),
            "kernel event lacks {field}: {kernel}"
        );
        assert_eq!(
            get(&kernel, field),
            get(&auditd, field),
            "{field} differs between the kernel sensor and auditd\nkernel: {kernel}\nauditd: {auditd}"
        );
    }
    assert_eq!(get(&auditd, "event.action"), "unix_bind");
    assert_eq!(
        get(&auditd, "event.category"),
        &serde_json::json!(["network"])
    );

    // One rule, both sources.
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nid = \"unix-bind\"\nname = \"AF_UNIX bind\"\nseverity = \"low\"\nquery = '''\n\
             network where event.action == \"unix_bind\" and socket.family == \"AF_UNIX\" and \
             network.transport == \"unix\" and socket.path == \"{path}\"\n'''\n"
        ),
    )
    .unwrap();
    let input = dir.path().join("both.ndjson");
    std::fs::write(&input, format!("{kernel}\n{auditd}\n")).unwrap();
    let out = sensor(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let alerts: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 2, "the rule fires once per source: {out}");
    let modules: Vec<&Value> = alerts
        .iter()
        .map(|a| &a["evidence"][0]["event"]["module"])
        .collect();
    assert!(
        modules.contains(&&serde_json::json!("sensor"))
            && modules.contains(&&serde_json::json!("auditd")),
        "one alert from each source: {out}"
    );
}
