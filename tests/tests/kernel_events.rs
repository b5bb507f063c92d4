//! Privileged end-to-end tests of the kernel sensor: real syscalls from real processes, asserted on the
//! NDJSON that `sensor events` prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use kernel_support::{action, by, dump, get, start, workload};

fn my_pid() -> i64 {
    i64::from(std::process::id())
}

#[test]
fn unix_socket_created_and_connected_to_a_path() {
    if !tests::require_root("unix_socket_created_and_connected_to_a_path") {
        return;
    }
    let path = format!("/tmp/kernel-test-{}.sock", std::process::id());
    let cap = start(&[]);
    let pid = workload(&["unix-connect", &path]);
    let (events, _) = cap.stop();
    let ctx = || dump(&events, pid);
    let sockets = by(&events, pid, "socket_created");
    assert!(
        sockets.iter().any(|e| get(e, "socket.family") == "AF_UNIX" && get(e, "socket.type") == "SOCK_STREAM"),
        "no AF_UNIX socket_created from {pid}:\n{}",
        ctx()
    );
    let binds = by(&events, pid, "unix_bind");
    assert!(binds.iter().any(|e| get(e, "socket.path") == path.as_str() && get(e, "event.outcome") == "success"), "{}", ctx());
    let connects = by(&events, pid, "unix_connect");
    let c = connects
        .iter()
        .find(|e| get(e, "socket.path") == path.as_str())
        .unwrap_or_else(|| panic!("no unix_connect to {path}:\n{}", ctx()));
    assert_eq!(get(c, "event.outcome"), "success");
    assert_eq!(get(c, "socket.abstract"), false);
    assert_eq!(
        get(c, "process.parent.pid").as_i64(),
        Some(my_pid()),
        "parent of the workload is the test"
    );
    assert_eq!(get(c, "process.name"), "kernel-workload");
    assert_eq!(get(c, "host.os.type"), "linux");
    assert!(get(c, "process.entity_id")
        .as_str()
        .is_some_and(|s| s.len() == 32));
    assert!(get(c, "@timestamp")
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    assert_eq!(get(c, "user.id"), "0");
    assert_eq!(get(c, "user.name"), "root");
}

#[test]
fn inet_socket_is_not_reported_as_unix() {
    if !tests::require_root("inet_socket_is_not_reported_as_unix") {
        return;
    }
    let cap = start(&[]);
    let pid = workload(&["inet-socket"]);
    let (events, _) = cap.stop();
    let sockets = by(&events, pid, "socket_created");
    assert!(
        sockets
            .iter()
            .any(|e| get(e, "socket.family") == "AF_INET" && get(e, "socket.type") == "SOCK_DGRAM"),
        "{}",
        dump(&events, pid)
    );
    assert!(
        sockets.iter().all(|e| get(e, "socket.family") != "AF_UNIX"),
        "{}",
        dump(&events, pid)
    );
    assert!(
        by(&events, pid, "unix_connect").is_empty() && by(&events, pid, "unix_bind").is_empty()
    );
}

#[test]
fn fifo_in_dev_shm_created_written_and_read_by_two_processes() {
    if !tests::require_root("fifo_in_dev_shm_created_written_and_read_by_two_processes") {
        return;
    }
    let path = format!("/dev/shm/kernel-test-fifo-{}", std::process::id());
    let _ = std::fs::remove_file(&path);
    let cap = start(&[]);
    let maker = workload(&["mkfifo", &path]);
    // Writer and reader are separate real processes; each open blocks until the other end opens.
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo hello > {path}"))
        .spawn()
        .unwrap();
    let reader = std::process::Command::new("cat")
        .arg(&path)
        .output()
        .unwrap();
    let wst = writer.wait().unwrap();
    assert!(wst.success() && reader.status.success());
    assert_eq!(String::from_utf8_lossy(&reader.stdout), "hello\n");
    let writer_pid = writer.id();
    std::fs::remove_file(&path).unwrap();
    let (events, _) = cap.stop();

    let created = by(&events, maker, "fifo_create");
    let c = created
        .iter()
        .find(|e| get(e, "file.path") == path.as_str())
        .unwrap_or_else(|| panic!("no fifo_create:\n{}", dump(&events, maker)));
    assert_eq!(get(c, "file.type"), "fifo");
    assert_eq!(get(c, "file.mode"), "600");
    assert_eq!(get(c, "process.parent.pid").as_i64(), Some(my_pid()));

    let opens: Vec<_> = events
        .iter()
        .filter(|e| action(e) == "fifo_open" && get(e, "file.path") == path.as_str())
        .collect();
    let w = opens
        .iter()
        .find(|e| get(e, "file.access_mode") == "write")
        .unwrap_or_else(|| panic!("no write open: {opens:?}"));
    let r = opens
        .iter()
        .find(|e| get(e, "file.access_mode") == "read")
        .unwrap_or_else(|| panic!("no read open: {opens:?}"));
    // The shell opens for the redirection in its own process (the one we spawned).
    assert_eq!(get(w, "process.pid").as_i64(), Some(i64::from(writer_pid)));
    assert_eq!(get(w, "process.parent.pid").as_i64(), Some(my_pid()));
    assert_eq!(get(r, "process.name"), "cat");
    assert_eq!(get(r, "process.parent.pid").as_i64(), Some(my_pid()));
    assert_ne!(get(r, "process.pid"), get(w, "process.pid"));
    assert_eq!(get(r, "file.type"), "fifo");
}

#[test]
fn regular_file_in_tmp_is_not_reported_as_fifo() {
    if !tests::require_root("regular_file_in_tmp_is_not_reported_as_fifo") {
        return;
    }
    let path = format!("/tmp/kernel-test-regular-{}", std::process::id());
    let cap = start(&[]);
    let pid = workload(&["open-regular", &path]);
    let (events, _) = cap.stop();
    assert!(
        by(&events, pid, "exec").len() == 1,
        "the workload itself was seen:\n{}",
        dump(&events, pid)
    );
    let fifo: Vec<_> = events
        .iter()
        .filter(|e| get(e, "file.path") == path.as_str())
        .collect();
    assert!(fifo.is_empty(), "a regular file was reported: {fifo:?}");
}

#[test]
fn bin_true_exec_from_a_shell_with_argv() {
    if !tests::require_root("bin_true_exec_from_a_shell_with_argv") {
        return;
    }
    let cap = start(&[]);
    let mut sh = std::process::Command::new("sh")
        .arg("-c")
        .arg("/bin/true hello 'two words'; echo done >/dev/null")
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    assert!(sh.wait().unwrap().success());
    let long = "a".repeat(3000);
    let st = std::process::Command::new("/bin/true")
        .arg(&long)
        .status()
        .unwrap();
    assert!(st.success());
    let (events, _) = cap.stop();
    let execs: Vec<_> = events
        .iter()
        .filter(|e| {
            action(e) == "exec" && get(e, "process.parent.pid").as_i64() == Some(i64::from(sh_pid))
        })
        .collect();
    let e = execs
        .iter()
        .find(|e| get(e, "process.args")[0] == "/bin/true")
        .unwrap_or_else(|| panic!("no exec of /bin/true by {sh_pid}: {execs:?}"));
    assert_eq!(
        get(e, "process.args"),
        &serde_json::json!(["/bin/true", "hello", "two words"])
    );
    assert_eq!(get(e, "process.name"), "true");
    assert!(get(e, "process.executable")
        .as_str()
        .is_some_and(|x| x.ends_with("/true")));
    assert_eq!(get(e, "process.parent.name"), "sh");
    assert_eq!(get(e, "event.category"), &serde_json::json!(["process"]));
    assert_eq!(get(e, "event.type"), &serde_json::json!(["start"]));
    // The shell forked the child that exec'd: a fork event with the shell as parent, same entity id.
    let pid = get(e, "process.pid").as_i64().unwrap();
    let fork = events
        .iter()
        .find(|f| action(f) == "fork" && get(f, "process.pid").as_i64() == Some(pid))
        .unwrap_or_else(|| panic!("no fork of {pid}"));
    assert_eq!(
        get(fork, "process.parent.pid").as_i64(),
        Some(i64::from(sh_pid))
    );
    assert_eq!(get(fork, "process.entity_id"), get(e, "process.entity_id"));
    assert!(events
        .iter()
        .any(|x| action(x) == "exit" && get(x, "process.pid").as_i64() == Some(pid)));
    // Long argv: kept (truncated, flagged), not dropped.
    let t = events
        .iter()
        .find(|e| {
            action(e) == "exec"
                && get(e, "process.args_truncated") == true
                && get(e, "process.parent.pid").as_i64() == Some(my_pid())
        })
        .unwrap_or_else(|| panic!("no truncated exec"));
    assert_eq!(get(t, "process.args")[0], "/bin/true");
    assert!(get(t, "process.args")[1]
        .as_str()
        .unwrap()
        .starts_with("aaaa"));
    assert!(get(t, "process.args_total_bytes").as_i64().unwrap() > 3000);
}

#[test]
fn tcp_connection_to_a_loopback_listener_with_byte_counts() {
    if !tests::require_root("tcp_connection_to_a_loopback_listener_with_byte_counts") {
        return;
    }
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&[b'y'; 300]).unwrap();
        got.len()
    });
    let cap = start(&[]);
    let pid = workload(&["tcp-client", &port.to_string(), "1000"]);
    assert_eq!(server.join().unwrap(), 1000);
    let (events, _) = cap.stop();
    let ctx = || dump(&events, pid);
    let connect = by(&events, pid, "tcp_connect");
    let c = connect
        .first()
        .unwrap_or_else(|| panic!("no tcp_connect:\n{}", ctx()));
    assert_eq!(get(c, "destination.port").as_i64(), Some(i64::from(port)));
    assert_eq!(get(c, "destination.ip"), "127.0.0.1");
    assert_eq!(get(c, "network.direction"), "egress");
    assert_eq!(get(c, "process.parent.pid").as_i64(), Some(my_pid()));
    let connect_sport = get(c, "source.port").as_i64();
    assert!(
        connect_sport.is_some_and(|p| p > 0),
        "tcp_connect without its source port: {c}"
    );
    let close = by(&events, pid, "tcp_close");
    let c = close
        .iter()
        .find(|e| get(e, "network.direction") == "egress")
        .unwrap_or_else(|| panic!("no tcp_close:\n{}", ctx()));
    assert_eq!(get(c, "destination.port").as_i64(), Some(i64::from(port)));
    assert_eq!(get(c, "source.port").as_i64(), connect_sport);
    // bytes_sent/bytes_received count sequence space: the FIN may add one.
    let sent = get(c, "source.bytes").as_i64().unwrap();
    let recv = get(c, "destination.bytes").as_i64().unwrap();
    assert!((1000..=1001).contains(&sent), "source.bytes {sent}");
    assert!((300..=301).contains(&recv), "destination.bytes {recv}");
    assert!(get(c, "event.duration").as_i64().unwrap() > 0);
    assert_eq!(get(c, "network.transport"), "tcp");
    // The accepting side (this test process) is seen too, as ingress, with the same ports.
    let inbound: Vec<_> = events
        .iter()
        .filter(|e| {
            action(e) == "tcp_close"
                && get(e, "network.direction") == "ingress"
                && get(e, "destination.port").as_i64() == Some(i64::from(port))
        })
        .collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(get(inbound[0], "process.pid").as_i64(), Some(my_pid()));
    // ... and its start is reported by the accepting process, with both ends.
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| {
            action(e) == "tcp_accept"
                && get(e, "destination.port").as_i64() == Some(i64::from(port))
        })
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(get(accepted[0], "process.pid").as_i64(), Some(my_pid()));
    assert_eq!(get(accepted[0], "network.direction"), "ingress");
    assert_eq!(get(accepted[0], "source.port").as_i64(), connect_sport);
    assert_eq!(
        get(inbound[0], "destination.bytes")
            .as_i64()
            .map(|b| (300..=301).contains(&b)),
        Some(true)
    );
}

#[test]
fn refused_tcp_connection_is_reported_as_an_attempt() {
    if !tests::require_root("refused_tcp_connection_is_reported_as_an_attempt") {
        return;
    }
    // A port nothing listens on: bound and dropped at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cap = start(&[]);
    let pid = workload(&["tcp-refused", &port.to_string()]);
    let (events, _) = cap.stop();
    let ctx = || dump(&events, pid);
    let connect = by(&events, pid, "tcp_connect");
    let c = connect
        .iter()
        .find(|e| get(e, "destination.port").as_i64() == Some(i64::from(port)))
        .unwrap_or_else(|| panic!("no tcp_connect for the refused attempt:\n{}", ctx()));
    assert_eq!(get(c, "network.direction"), "egress");
    assert!(get(c, "source.port").as_i64().is_some_and(|p| p > 0), "{c}");
    let close = by(&events, pid, "tcp_close");
    let c = close
        .iter()
        .find(|e| get(e, "destination.port").as_i64() == Some(i64::from(port)))
        .unwrap_or_else(|| panic!("no tcp_close for the refused attempt:\n{}", ctx()));
    assert_eq!(get(c, "source.bytes").as_i64(), Some(0), "{c}");
}

/// Makes a FIFO at `path`, runs the workload `args` under a capture, removes the FIFO; returns the
/// events and the workload's pid.
fn with_fifo(path: &str, args: &[&str]) -> (Vec<serde_json::Value>, u32) {
    let _ = std::fs::remove_file(path);
    workload(&["mkfifo", path]);
    let cap = start(&[]);
    let pid = workload(args);
    std::fs::remove_file(path).unwrap();
    (cap.stop().0, pid)
}

/// The `fifo_open` events of `pid` for `path`.
fn fifo_opens<'a>(
    events: &'a [serde_json::Value],
    pid: u32,
    path: &str,
) -> Vec<&'a serde_json::Value> {
    by(events, pid, "fifo_open")
        .into_iter()
        .filter(|e| get(e, "file.path") == path)
        .collect()
}

#[test]
fn fifo_opened_with_raw_open_and_openat2_is_seen() {
    if !tests::require_root("fifo_opened_with_raw_open_and_openat2_is_seen") {
        return;
    }
    let path = format!("/dev/shm/kernel-test-rawfifo-{}", std::process::id());
    let (events, pid) = with_fifo(&path, &["fifo-raw-opens", &path]);
    let opens = fifo_opens(&events, pid, &path);
    // One by open(2), one by openat2(2): evading the openat(2) probe with another open syscall
    // must not hide a FIFO open.
    assert_eq!(opens.len(), 2, "{}", dump(&events, pid));
    for o in &opens {
        assert_eq!(get(o, "file.type"), "fifo");
        assert_eq!(get(o, "process.parent.pid").as_i64(), Some(my_pid()));
    }
}

#[test]
fn socket_and_fifo_open_through_io_uring_are_seen() {
    if !tests::require_root("socket_and_fifo_open_through_io_uring_are_seen") {
        return;
    }
    let path = format!("/dev/shm/kernel-test-uringfifo-{}", std::process::id());
    let regular = format!("/tmp/kernel-test-uringregular-{}", std::process::id());
    let (events, pid) = with_fifo(&path, &["uring-ops", &path, &regular]);
    // io_uring operations make no syscall of their own: without the io_uring probes, these would
    // not be seen at all.
    let opens = fifo_opens(&events, pid, &path);
    assert_eq!(opens.len(), 1, "{}", dump(&events, pid));
    let o = opens[0];
    assert_eq!(get(o, "sensor.via"), "io_uring", "{o}");
    assert_eq!(get(o, "file.type"), "fifo");
    assert_eq!(get(o, "file.access_mode"), "read_write");
    assert_eq!(get(o, "process.parent.pid").as_i64(), Some(my_pid()));
    // The regular file opened the same way is not a FIFO open.
    assert!(
        by(&events, pid, "fifo_open")
            .iter()
            .all(|e| get(e, "file.path") != regular.as_str()),
        "{}",
        dump(&events, pid)
    );
    let sockets: Vec<_> = by(&events, pid, "socket_created")
        .into_iter()
        .filter(|e| get(e, "sensor.via") == "io_uring")
        .collect();
    assert_eq!(sockets.len(), 1, "{}", dump(&events, pid));
    assert_eq!(get(sockets[0], "socket.family"), "AF_UNIX");
    assert_eq!(get(sockets[0], "socket.type"), "SOCK_STREAM");
}

#[test]
fn unix_bind_and_connect_through_io_uring_are_seen() {
    if !tests::require_root("unix_bind_and_connect_through_io_uring_are_seen") {
        return;
    }
    let path = format!("/tmp/kernel-test-uring-unix-{}.sock", std::process::id());
    let cap = start(&[]);
    let pid = workload(&["uring-unix", &path]);
    let (events, _) = cap.stop();
    for act in ["unix_bind", "unix_connect"] {
        let seen: Vec<_> = by(&events, pid, act)
            .into_iter()
            .filter(|e| get(e, "socket.path") == path.as_str())
            .collect();
        assert_eq!(seen.len(), 1, "{act}: {}", dump(&events, pid));
        let e = seen[0];
        assert_eq!(get(e, "sensor.via"), "io_uring", "{e}");
        assert_eq!(get(e, "event.outcome"), "success", "{e}");
        assert_eq!(get(e, "socket.family"), "AF_UNIX", "{e}");
        assert!(
            get(e, "socket.fd").as_i64().is_some_and(|fd| fd >= 0),
            "{e}"
        );
    }
}
