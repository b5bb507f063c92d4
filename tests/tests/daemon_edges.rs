//! Attacks on the network edges of the real daemon (`sensor run` as root dropping to `nobody`,
//! kernel sensor on, HTTPS ingest, the auditd listener and the control API over TCP with TLS), each
//! asserting its outcome from outside: what the client sees (closed, 413, 503, 200), the daemon's
//! counters (`sensor_listener_*` on its control socket), its CPU time and memory from /proc.
//!
//! Every case is its own test with its own daemon. They need root (the kernel sensor, the privilege
//! drop, binding privileged source ports, lowering another process's file limit); under `CI=true` a
//! skip is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{free_port, require_root, sensor_bin, sha256_hex};

const TOKEN_A: &str = "edges-agent-a-token";
const TOKEN_B: &str = "edges-agent-b-token";
const API_TOKEN: &str = "edges-api-token";
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// One daemon under attack, with its TLS material and ports.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    socket: PathBuf,
    http: u16,
    auditd: u16,
    api: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon; `limits` goes into `[ingest.limits]`, `auditd` into `[ingest.auditd]`.
fn start(limits: &str, auditd: &str) -> Daemon {
    start_with(limits, auditd, "", None)
}

/// [`start`], with `api_extra` in `[api]` and the daemon's open-files limit (soft and hard) set to
/// `nofile` before exec.
fn start_with(limits: &str, auditd: &str, api_extra: &str, nofile: Option<u64>) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // `nobody` must reach its directories under the test's one.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls_dir = d.join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    for (name, text) in [
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
        ("api.token", API_TOKEN.to_string()),
    ] {
        std::fs::write(tls_dir.join(name), text).unwrap();
        std::fs::set_permissions(tls_dir.join(name), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let (http, auditd_port, api) = (free_port(), free_port(), free_port());
    let cfg = d.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
state_dir = "{d}/state"
[privileges]
user = "nobody"
[kernel]
enabled = true
[api]
socket = "{d}/run/control.sock"
header_timeout = "2s"
handshake_timeout = "2s"
{api_extra}
[api.tcp]
listen = "127.0.0.1:{api}"
cert = "{t}/server.pem"
key = "{t}/server.key"
token_file = "{t}/api.token"
[ingest]
enabled = true
group_idle_secs = 1
[ingest.http]
listen = "127.0.0.1:{http}"
[ingest.http.tls]
cert = "{t}/server.pem"
key = "{t}/server.key"
[ingest.auditd]
listen = "127.0.0.1:{auditd_port}"
peers = [{{ addr = "127.0.0.1", agent_id = "audit-host" }}]
{auditd}
[[ingest.agents]]
id = "agent-a"
token_sha256 = "{a}"
[[ingest.agents]]
id = "agent-b"
token_sha256 = "{b}"
[ingest.limits]
{limits}
"#,
            d = d.display(),
            t = tls_dir.display(),
            a = sha256_hex(TOKEN_A),
            b = sha256_hex(TOKEN_B),
        ),
    )
    .unwrap();
    let log = d.join("daemon.log");
    let mut cmd = Command::new(sensor_bin());
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("SENSOR_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit is async-signal-safe and only reads `lim`, copied into the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let child = cmd.spawn().unwrap();
    let mut daemon = Daemon {
        child,
        socket: d.join("run/control.sock"),
        _dir: dir,
        log,
        http,
        auditd: auditd_port,
        api,
        tls,
    };
    daemon.wait_for(
        "the daemon to serve its control socket",
        Duration::from_secs(90),
        |d| {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("the daemon exited with {st}:\n{}", d.log());
            }
            d.text("/healthz").is_some() && d.log().contains("privileges dropped")
        },
    );
    daemon
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, mut ok: impl FnMut(&mut Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` on the control socket: the body when 200.
    fn text(&self, path: &str) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ep = sensor::client::Endpoint::Unix(self.socket.clone());
        match rt.block_on(sensor::client::call(&ep, "GET", path, None, None)) {
            Ok((200, body)) => Some(String::from_utf8_lossy(&body).into_owned()),
            _ => None,
        }
    }

    /// One sample of `/metrics` (`name` with its labels, e.g. `x{listener="ingest-http"}`).
    fn metric(&self, name: &str) -> f64 {
        let text = self.text("/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn refused(&self, listener: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "sensor_listener_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        ))
    }

    fn open_connections(&self, listener: &str) -> f64 {
        self.metric(&format!(
            "sensor_listener_connections{{listener=\"{listener}\"}}"
        ))
    }

    fn ingest_events(&self) -> f64 {
        self.metric("sensor_events_in_total{source=\"ingest\"}")
    }

    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    /// A TLS connection to `port` from 127.0.0.1, handshake done.
    fn tls(&self, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let conn = rustls::ClientConnection::new(
            self.tls.clone(),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        s
    }

    /// POST over TLS to the ingest listener: (status, body).
    fn post(&self, token: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut s = self.tls(self.http);
        let head = format!(
            "POST /v1/ingest/ecs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) before the whole body is sent, and close.
        let _ = s.write_all(body);
        let _ = s.flush();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, resp)
    }

    /// CPU time (user + system) the daemon has used, from /proc/PID/stat.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        Duration::from_millis((f[11] + f[12]) * 1000 / hz)
    }

    fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

fn ecs_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("{{\"@timestamp\":\"2026-01-01T00:00:{:02}Z\",\"event\":{{\"action\":\"edge\"}},\"host\":{{\"name\":\"h\"}}}}\n", i % 60)
        })
        .collect()
}

/// Raises this test process's open-files limit to `n` (the hard limit if lower).
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on structs we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// `n` TCP connections to `dst` from `src` (any port, or the given one), handshake with the
/// kernel done, nothing sent.
fn connect_from(src: SocketAddr, dst: SocketAddr, n: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        // 64 at a time: fast, and never more at once than the listen backlog holds.
        for batch in (0..n).collect::<Vec<_>>().chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for _ in batch {
                set.spawn(async move {
                    let s = tokio::net::TcpSocket::new_v4().unwrap();
                    s.set_reuseaddr(true).unwrap();
                    s.bind(src).unwrap();
                    tokio::time::timeout(Duration::from_secs(10), s.connect(dst))
                        .await
                        .expect("connect timed out")
                        .unwrap()
                });
            }
            while let Some(t) = set.join_next().await {
                let std = t.unwrap().into_std().unwrap();
                std.set_nonblocking(false).unwrap();
                out.push(std);
            }
        }
        out
    })
}

/// How long until the server closes `s` (EOF or reset), reading and discarding what it sends;
/// `None` when it is still open after `limit`.
fn closed_within(s: &mut impl Read, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t0.elapsed()),
        }
        if t0.elapsed() > limit {
            return None;
        }
    }
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
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

/// A privileged source port for an auditd client (the test runs as root).
fn privileged_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    600 + u16::try_from(nanos % 400).unwrap()
}

fn audit_line(serial: u32, extra: &str) -> String {
    format!(
        "type=USER_AUTH msg=audit(1767225600.{serial:03}:{serial}): pid=4242 uid=0 auid=1000 ses=3 msg='op=PAM:authentication grantors=pam_unix acct=\"root\" exe=\"/usr/bin/su\" hostname=? addr=? terminal=pts/0 res=success{extra}'\n"
    )
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
    let long = audit_line(201, &"x".repeat(6000));
    let (head, tail) = long.split_at(6000);
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The rest of it carries what would pass for a record of its own, then the next real line.
    let forged = " type=USER_AUTH msg=audit(1767225600.300:300): pid=1 uid=0 res=success";
    s.write_all(format!("{}{forged}", tail.trim_end_matches('\n')).as_bytes())
        .unwrap();
    s.write_all(b"\n").unwrap();
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
