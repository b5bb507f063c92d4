//! Attacks on the network edges of the real daemon (`sensor run` as root dropping to `nobody`,
//! kernel sensor on, HTTPS ingest, the auditd listener and the control API over TCP with TLS), each
//! asserting its outcome from outside: what the client sees (closed, 413, 503, 200), the daemon's
//! counters (`sensor_listener_*` on its control socket), its CPU time and memory from /proc.
//!
//! Every case is its own test with its own daemon. They need root (the kernel sensor, the privilege
//! drop, binding privileged source ports); under `CI=true` a
//! skip is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tests::require_root;

mod edges_support;
use edges_support::*;

#[test]
fn the_process_holding_the_listeners_lacks_cap_sys_admin() {
    if !require_root("the_process_holding_the_listeners_lacks_cap_sys_admin") {
        return;
    }
    let d = start("", "");
    for port in [d.http, d.auditd, d.api] {
        let pid = listener_pid(port).expect("no process holds the listener");
        assert_eq!(pid, d.pid(), "port {port} is held by another process");
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
            let eff = u64::from_str_radix(status_field(&st, "CapEff:"), 16).unwrap();
            let prm = u64::from_str_radix(status_field(&st, "CapPrm:"), 16).unwrap();
            assert_eq!(eff & CAP_SYS_ADMIN, 0, "thread {name} has CAP_SYS_ADMIN");
            assert_eq!(
                (eff, prm),
                (0, 0),
                "thread {name}: CapEff {eff:x} CapPrm {prm:x}"
            );
            assert_eq!(
                status_field(&st, "Uid:").split_whitespace().next(),
                Some("65534")
            );
        }
        assert!(threads > 1, "{threads} threads");
    }
}

#[test]
fn five_thousand_idle_tls_connections_do_not_block_a_real_client() {
    if !require_root("five_thousand_idle_tls_connections_do_not_block_a_real_client") {
        return;
    }
    raise_nofile(12_000);
    // The default handshake timeout (10 s): the idle connections are all still there when the real
    // client comes.
    let d = start("", "");
    let attacker = SocketAddr::from(([127, 0, 0, 2], 0));
    let t0 = Instant::now();
    let idle = connect_from(attacker, d.http_addr(), 5_000);
    println!("5000 idle connections opened in {:?}", t0.elapsed());
    let t1 = Instant::now();
    let (status, resp) = d.post(TOKEN_A, "", ecs_lines(10).as_bytes());
    let took = t1.elapsed();
    assert_eq!(status, 200, "{resp}");
    assert!(
        took < Duration::from_secs(5),
        "the real client waited {took:?}"
    );
    println!("real client served in {took:?} beside 5000 idle connections");
    // The daemon holds at most its per-peer cap of them; the rest were closed at once, counted.
    let open = d.open_connections("ingest-http");
    let per_peer = d.refused("ingest-http", "max_connections_per_peer");
    let timed_out = d.refused("ingest-http", "handshake_timeout");
    assert!(open <= 257.0, "{open} connections open");
    // Every idle connection is either held now, was closed at once over the cap, or was cut at
    // the handshake timeout (when opening them all took longer than it).
    assert!(
        per_peer + timed_out + open >= 5_000.0,
        "held {open}, refused {per_peer}, timed out {timed_out}"
    );
    assert!(
        per_peer >= 4_000.0,
        "{per_peer} refused over the per-peer cap"
    );
    // Those it held are closed at the handshake timeout.
    let mut d = d;
    d.wait_for(
        "the idle connections' handshake timeout",
        Duration::from_secs(30),
        |d| {
            d.refused("ingest-http", "handshake_timeout") >= 250.0
                && d.open_connections("ingest-http") <= 1.0
        },
    );
    drop(idle);
}

#[test]
fn a_slow_handshake_flood_does_not_block_a_real_client_and_is_cut_at_the_timeout() {
    if !require_root(
        "a_slow_handshake_flood_does_not_block_a_real_client_and_is_cut_at_the_timeout",
    ) {
        return;
    }
    let d = start("handshake_timeout_secs = 2", "");
    let attacker = SocketAddr::from(([127, 0, 0, 3], 0));
    let mut slow = connect_from(attacker, d.http_addr(), 200);
    // A TLS record header announcing a 512-byte ClientHello, then one byte every 300 ms: never
    // idle, never done.
    for s in &mut slow {
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        s.set_nonblocking(true).unwrap();
    }
    let start_flood = Instant::now();
    let dripper = std::thread::spawn(move || {
        let mut closed_at: Vec<Option<Duration>> = vec![None; slow.len()];
        let mut buf = [0u8; 64];
        while start_flood.elapsed() < Duration::from_secs(8) {
            for (i, s) in slow.iter_mut().enumerate() {
                if closed_at[i].is_some() {
                    continue;
                }
                let gone = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                } || s.write(&[0x01]).is_err();
                if gone {
                    closed_at[i] = Some(start_flood.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        closed_at
    });
    std::thread::sleep(Duration::from_millis(500));
    let t1 = Instant::now();
    let (status, resp) = d.post(TOKEN_A, "", ecs_lines(5).as_bytes());
    assert_eq!(status, 200, "{resp}");
    let took = t1.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the real client waited {took:?}"
    );
    let closed_at = dripper.join().unwrap();
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} slow handshakes still open after 8 s");
    let latest = closed_at.iter().flatten().max().copied().unwrap();
    assert!(
        latest < Duration::from_secs(6),
        "a slow handshake lasted {latest:?} with a 2 s timeout"
    );
    assert!(d.refused("ingest-http", "handshake_timeout") >= 200.0);
    println!("real client served in {took:?}; 200 slow handshakes all cut by {latest:?}");
}

#[test]
fn beyond_max_connections_new_connections_are_closed_at_once_and_counted() {
    if !require_root("beyond_max_connections_new_connections_are_closed_at_once_and_counted") {
        return;
    }
    let d = start("max_connections = 30\nmax_connections_per_peer = 0", "");
    let held = connect_from(SocketAddr::from(([127, 0, 0, 4], 0)), d.http_addr(), 30);
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect_from(SocketAddr::from(([127, 0, 0, 5], 0)), d.http_addr(), 1);
    extra[0]
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let closed = closed_within(&mut extra[0], Duration::from_secs(3));
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(1)),
        "the 31st connection was not closed at once: {closed:?}"
    );
    assert!(d.refused("ingest-http", "max_connections") >= 1.0);
    assert!(d.open_connections("ingest-http") <= 30.0);
    // `sensor status` says it too.
    let status: serde_json::Value = serde_json::from_str(&d.text("/v1/status").unwrap()).unwrap();
    assert!(
        status["listeners"]["ingest-http"]["refused"]["max_connections"].as_u64() >= Some(1),
        "{}",
        status["listeners"]
    );
    let cli = std::process::Command::new(tests::sensor_bin())
        .args(["status", "--socket"])
        .arg(d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("listener ingest-http") && l.contains("max_connections ")),
        "{text}"
    );
    // Freed slots are used again.
    drop(held);
    let mut d = d;
    d.wait_for(
        "the held connections to be gone",
        Duration::from_secs(10),
        |d| d.open_connections("ingest-http") < 1.0,
    );
    let (status, resp) = d.post(TOKEN_A, "", ecs_lines(3).as_bytes());
    assert_eq!(status, 200, "{resp}");
}

#[test]
fn the_auditd_and_control_api_listeners_close_connections_beyond_their_caps() {
    if !require_root("the_auditd_and_control_api_listeners_close_connections_beyond_their_caps") {
        return;
    }
    let d = start_with("max_connections = 3", "", "max_connections = 3", None);
    let closed_at_once = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        closed_within(s, Duration::from_secs(3)).is_some_and(|t| t < Duration::from_secs(1))
    };
    // auditd: three listed peers' connections from privileged ports are held, the fourth is not.
    let dst = SocketAddr::from(([127, 0, 0, 1], d.auditd));
    let base = privileged_port().min(990);
    let mut held = Vec::new();
    for i in 0..3 {
        held.extend(connect_from(
            SocketAddr::from(([127, 0, 0, 1], base + i)),
            dst,
            1,
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect_from(SocketAddr::from(([127, 0, 0, 1], base + 3)), dst, 1).remove(0);
    assert!(
        closed_at_once(&mut fourth),
        "the 4th auditd connection was not closed at once"
    );
    assert!(d.refused("ingest-auditd", "max_connections") >= 1.0);
    assert_eq!(d.open_connections("ingest-auditd"), 3.0);
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a held auditd connection was closed"
        );
    }
    // [api.tcp]: three connections in their handshake are held, the fourth is not.
    let api = SocketAddr::from(([127, 0, 0, 1], d.api));
    let _api_held = connect_from(SocketAddr::from(([127, 0, 0, 7], 0)), api, 3);
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect_from(SocketAddr::from(([127, 0, 0, 8], 0)), api, 1).remove(0);
    assert!(
        closed_at_once(&mut fourth),
        "the 4th [api.tcp] connection was not closed at once"
    );
    assert!(d.refused("api-tcp", "max_connections") >= 1.0);
}

#[test]
fn half_a_header_on_ingest_is_closed_after_the_header_timeout() {
    if !require_root("half_a_header_on_ingest_is_closed_after_the_header_timeout") {
        return;
    }
    let d = start("header_timeout_secs = 2", "");
    let mut s = d.tls(d.http);
    s.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(b"POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    s.flush().unwrap();
    let t = closed_within(&mut s, Duration::from_secs(12));
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1500) && t < Duration::from_secs(5)),
        "half a header: closed after {t:?} (header_timeout_secs = 2)"
    );
    assert!(d.refused("ingest-http", "header_timeout") >= 1.0);
    // A keep-alive connection left idle after a whole request is closed after it too.
    let mut s = d.tls(d.http);
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"}") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = closed_within(&mut s, Duration::from_secs(12));
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1500) && t < Duration::from_secs(5)),
        "an idle keep-alive connection: closed after {t:?} (header_timeout_secs = 2)"
    );
}

#[test]
fn half_a_header_on_the_control_api_is_closed_after_the_header_timeout() {
    if !require_root("half_a_header_on_the_control_api_is_closed_after_the_header_timeout") {
        return;
    }
    let d = start("", "");
    let mut s = d.tls(d.api);
    s.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthoriz")
        .unwrap();
    s.flush().unwrap();
    let t = closed_within(&mut s, Duration::from_secs(12));
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1500) && t < Duration::from_secs(5)),
        "half a header on [api.tcp]: closed after {t:?} (header_timeout = 2s)"
    );
    assert!(d.refused("api-tcp", "header_timeout") >= 1.0);
    // A whole request with the token is served.
    let mut s = d.tls(d.api);
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn a_live_alert_stream_outlives_the_header_timeout() {
    if !require_root("a_live_alert_stream_outlives_the_header_timeout") {
        return;
    }
    // The header timeout bounds reading a request, not a response: `sensor alerts tail` on the
    // control socket (header_timeout = 2s here) stays connected.
    let d = start("", "");
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    s.write_all(b"GET /v1/alerts/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(5));
    assert_eq!(closed, None, "the alert stream was closed after {closed:?}");
}

#[test]
fn a_stalled_tls_handshake_on_the_control_api_is_closed_after_the_handshake_timeout() {
    if !require_root(
        "a_stalled_tls_handshake_on_the_control_api_is_closed_after_the_handshake_timeout",
    ) {
        return;
    }
    let d = start("", "");
    let mut s = TcpStream::connect(("127.0.0.1", d.api)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = closed_within(&mut s, Duration::from_secs(12));
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1500) && t < Duration::from_secs(5)),
        "a silent client on [api.tcp]: closed after {t:?} (handshake_timeout = 2s)"
    );
    assert!(d.refused("api-tcp", "handshake_timeout") >= 1.0);
}

/// A body that inflates to 2 GiB: 2,048 gzip members of 1 MiB of zeros each.
fn gzip_bomb() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = gz.finish().unwrap();
    member.repeat(2048)
}

/// A zstd frame that inflates to 2 GiB of zeros.
fn zstd_bomb() -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..2048 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap()
}

fn bomb_gets_413(encoding: &str, bomb: &[u8]) {
    let d = start("", "");
    let before = d.rss();
    let t0 = Instant::now();
    let (status, resp) = d.post(TOKEN_A, &format!("Content-Encoding: {encoding}\r\n"), bomb);
    let took = t0.elapsed();
    assert_eq!(
        status,
        413,
        "{encoding} bomb of {} bytes: {resp}",
        bomb.len()
    );
    assert!(resp.contains("exceeds the limit"), "{resp}");
    let grew = d.rss().saturating_sub(before);
    assert!(
        grew < 128 << 20,
        "resident memory grew by {} MiB",
        grew >> 20
    );
    // And the daemon still serves.
    let (status, _) = d.post(TOKEN_A, "", ecs_lines(2).as_bytes());
    assert_eq!(status, 200);
    println!(
        "{encoding} bomb: {} bytes for 2 GiB -> 413 in {took:?}, RSS +{} MiB",
        bomb.len(),
        grew >> 20
    );
}

#[test]
fn a_gzip_bomb_gets_413() {
    if !require_root("a_gzip_bomb_gets_413") {
        return;
    }
    bomb_gets_413("gzip", &gzip_bomb());
}

#[test]
fn a_zstd_bomb_gets_413() {
    if !require_root("a_zstd_bomb_gets_413") {
        return;
    }
    bomb_gets_413("zstd", &zstd_bomb());
}

#[test]
fn one_agent_cannot_take_every_in_flight_slot() {
    if !require_root("one_agent_cannot_take_every_in_flight_slot") {
        return;
    }
    let d = start("max_inflight_per_agent = 4\nmax_inflight_requests = 32", "");
    // Agent A: four requests whose bodies never come, each holding an in-flight slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = d.tls(d.http);
        s.write_all(
            format!("POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: 1000\r\n\r\n{{")
                .as_bytes(),
        )
        .unwrap();
        s.flush().unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(800));
    let (status, resp) = d.post(TOKEN_A, "", ecs_lines(2).as_bytes());
    assert_eq!(status, 503, "{resp}");
    assert!(resp.contains("max_inflight_per_agent"), "{resp}");
    assert!(
        resp.contains("Retry-After") || resp.contains("retry-after"),
        "{resp}"
    );
    // Agent B is served meanwhile.
    let (status, resp) = d.post(TOKEN_B, "", ecs_lines(2).as_bytes());
    assert_eq!(status, 200, "{resp}");
    // Once A's requests end, A is served again.
    drop(held);
    let mut d = d;
    d.wait_for("agent A served again", Duration::from_secs(10), |d| {
        d.post(TOKEN_A, "", ecs_lines(1).as_bytes()).0 == 200
    });
}

#[test]
fn emfile_does_not_spin_a_core_and_the_daemon_recovers() {
    if !require_root("emfile_does_not_spin_a_core_and_the_daemon_recovers") {
        return;
    }
    raise_nofile(12_000);
    // 1,024 descriptors for the whole daemon (set before exec, soft and hard, so it cannot raise
    // them), no per-address cap, and handshakes that stay open: connections alone fill the table.
    const NOFILE: u64 = 1024;
    let d = start_with(
        "max_connections_per_peer = 0\nhandshake_timeout_secs = 60",
        "",
        "",
        Some(NOFILE),
    );
    let pid = d.pid();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    // Enough to take every free descriptor, plus 100 left waiting in the listen backlog.
    let n = usize::try_from(NOFILE - fds + 100).unwrap();
    let flood = Instant::now();
    let conns = connect_from(SocketAddr::from(([127, 0, 0, 6], 0)), d.http_addr(), n);
    std::thread::sleep(Duration::from_millis(500));
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    assert!(
        open_fds + 2 >= NOFILE,
        "the file table did not fill: {open_fds} fds of {NOFILE} ({fds} at start, {n} connections)"
    );
    let cpu0 = d.cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let cpu = d.cpu_time().saturating_sub(cpu0);
    let wall = t0.elapsed();
    assert!(
        cpu.as_secs_f64() < 0.35 * wall.as_secs_f64(),
        "the daemon used {cpu:?} of CPU in {wall:?} while accept failed with EMFILE"
    );
    // Recovery: the connections go, descriptors are free again, a real client is served.
    drop(conns);
    let mut d = d;
    d.wait_for(
        "a real client served after EMFILE",
        Duration::from_secs(30),
        |d| d.post(TOKEN_A, "", ecs_lines(1).as_bytes()).0 == 200,
    );
    let since = flood.elapsed();
    let errors = d.metric("sensor_listener_accept_errors_total{listener=\"ingest-http\"}");
    assert!(errors >= 1.0, "no accept error was counted");
    // A pause after each failed accept (50 ms): not hundreds of retries a second.
    assert!(
        errors < 100.0 * since.as_secs_f64(),
        "{errors} accept errors in {since:?}: retried without a pause"
    );
    assert!(
        d.log()
            .contains("accept failed; pausing before the next one"),
        "{}",
        d.log()
    );
    println!(
        "EMFILE: {fds} fds at start, {open_fds} with {n} connections; {cpu:?} CPU in {wall:?}; {errors} accept errors counted"
    );
    assert_eq!(d.child.try_wait().unwrap(), None, "the daemon died");
}

#[test]
fn an_auditd_connection_from_an_unprivileged_port_is_refused() {
    if !require_root("an_auditd_connection_from_an_unprivileged_port_is_refused") {
        return;
    }
    let mut d = start("", "");
    let dst = SocketAddr::from(([127, 0, 0, 1], d.auditd));
    let mut s = connect_from(SocketAddr::from(([127, 0, 0, 1], 0)), dst, 1).remove(0);
    assert!(s.local_addr().unwrap().port() >= 1024);
    let _ = s.write_all(audit_line(101, "").as_bytes());
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(3));
    assert!(
        closed.is_some(),
        "a connection from an unprivileged port stayed open"
    );
    assert!(d.refused("ingest-auditd", "unprivileged_port") >= 1.0);
    // The same record from a privileged port is accepted (the listener works; only the port differed).
    let mut ok = connect_from(
        SocketAddr::from(([127, 0, 0, 1], privileged_port())),
        dst,
        1,
    )
    .remove(0);
    ok.write_all(audit_line(102, "").as_bytes()).unwrap();
    d.wait_for(
        "the record from the privileged port",
        Duration::from_secs(20),
        |d| d.ingest_events() >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.ingest_events(),
        1.0,
        "the refused connection's record got in"
    );
}

#[test]
fn an_auditd_connection_from_an_unlisted_peer_is_refused() {
    if !require_root("an_auditd_connection_from_an_unlisted_peer_is_refused") {
        return;
    }
    let d = start("", "");
    let dst = SocketAddr::from(([127, 0, 0, 1], d.auditd));
    let src = SocketAddr::from((IpAddr::from([127, 0, 0, 9]), privileged_port()));
    let mut s = connect_from(src, dst, 1).remove(0);
    let _ = s.write_all(audit_line(103, "").as_bytes());
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(3));
    assert!(
        closed.is_some(),
        "a connection from an unlisted peer stayed open"
    );
    assert!(d.refused("ingest-auditd", "unknown_peer") >= 1.0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.ingest_events(), 0.0, "the unlisted peer's record got in");
}

#[test]
fn an_over_long_auditd_line_is_discarded_and_the_next_line_accepted() {
    if !require_root("an_over_long_auditd_line_is_discarded_and_the_next_line_accepted") {
        return;
    }
    let mut d = start("max_record_bytes = 4096", "");
    let dst = SocketAddr::from(([127, 0, 0, 1], d.auditd));
    let mut s = connect_from(
        SocketAddr::from(([127, 0, 0, 1], privileged_port())),
        dst,
        1,
    )
    .remove(0);
    // 6 KiB of a line without its end: past the limit before the newline arrives.
    let head = format!(
        "type=USER_AUTH msg=audit(1767225600.201:201): pid=4242 uid=0 msg='{}",
        "x".repeat(6000)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The rest of that line is a whole record of its own (what a framing that forgot where it was
    // would take as one), then its newline, then the next real line.
    s.write_all(audit_line(300, "").as_bytes()).unwrap();
    s.write_all(audit_line(202, "").as_bytes()).unwrap();
    s.flush().unwrap();
    d.wait_for(
        "the line after the over-long one",
        Duration::from_secs(20),
        |d| d.ingest_events() >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.ingest_events(), 1.0, "only the next line is an event");
    assert_eq!(
        d.metric("sensor_listener_lines_discarded_total{listener=\"ingest-auditd\"}"),
        1.0
    );
    assert!(
        d.log()
            .contains("auditd line over the record limit discarded up to its end"),
        "{}",
        d.log()
    );
    // The connection stays open for more.
    s.write_all(audit_line(203, "").as_bytes()).unwrap();
    d.wait_for("the line after that", Duration::from_secs(20), |d| {
        d.ingest_events() >= 2.0
    });
}
