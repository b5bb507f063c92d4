//! The harness of `daemon_edges.rs`: a real daemon under attack (root dropping to `nobody`, kernel
//! sensor, HTTPS ingest, auditd, `[api.tcp]`), its counters and /proc figures, and the raw clients
//! the attacks are made of.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{free_port, sensor_bin, sha256_hex};

pub(crate) const TOKEN_A: &str = "edges-agent-a-token";
pub(crate) const TOKEN_B: &str = "edges-agent-b-token";
pub(crate) const API_TOKEN: &str = "edges-api-token";
pub(crate) const CAP_SYS_ADMIN: u64 = 1 << 21;

/// One daemon under attack, with its TLS material and ports.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    socket: PathBuf,
    pub(crate) http: u16,
    pub(crate) auditd: u16,
    pub(crate) api: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon; `limits` goes into `[ingest.limits]`, `auditd` into `[ingest.auditd]`.
pub(crate) fn start(limits: &str, auditd: &str) -> Daemon {
    start_with(limits, auditd, "", None)
}

/// [`start`], with `api_extra` in `[api]` and the daemon's open-files limit (soft and hard) set to
/// `nofile` before exec.
pub(crate) fn start_with(
    limits: &str,
    auditd: &str,
    api_extra: &str,
    nofile: Option<u64>,
) -> Daemon {
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
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&mut Daemon) -> bool,
    ) {
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
    pub(crate) fn text(&self, path: &str) -> Option<String> {
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
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text = self.text("/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub(crate) fn refused(&self, listener: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "sensor_listener_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        ))
    }

    pub(crate) fn open_connections(&self, listener: &str) -> f64 {
        self.metric(&format!(
            "sensor_listener_connections{{listener=\"{listener}\"}}"
        ))
    }

    pub(crate) fn ingest_events(&self) -> f64 {
        self.metric("sensor_events_in_total{source=\"ingest\"}")
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    /// A TLS connection to `port` from 127.0.0.1, handshake done.
    pub(crate) fn tls(
        &self,
        port: u16,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
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
    pub(crate) fn post(&self, token: &str, headers: &str, body: &[u8]) -> (u16, String) {
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
    pub(crate) fn cpu_time(&self) -> Duration {
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

    pub(crate) fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

pub(crate) fn ecs_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("{{\"@timestamp\":\"2026-01-01T00:00:{:02}Z\",\"event\":{{\"action\":\"edge\"}},\"host\":{{\"name\":\"h\"}}}}\n", i % 60)
        })
        .collect()
}

/// Raises this test process's open-files limit to `n` (the hard limit if lower).
pub(crate) fn raise_nofile(n: u64) {
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
pub(crate) fn connect_from(src: SocketAddr, dst: SocketAddr, n: usize) -> Vec<TcpStream> {
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
pub(crate) fn closed_within(s: &mut impl Read, limit: Duration) -> Option<Duration> {
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

pub(crate) fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

/// The pid whose fds hold the TCP socket listening on `port` (from /proc/net/tcp and /proc/*/fd).
pub(crate) fn listener_pid(port: u16) -> Option<u32> {
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

/// A privileged source port for an auditd client (the test runs as root).
pub(crate) fn privileged_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    600 + u16::try_from(nanos % 400).unwrap()
}

pub(crate) fn audit_line(serial: u32, extra: &str) -> String {
    format!(
        "type=USER_AUTH msg=audit(1767225600.{serial:03}:{serial}): pid=4242 uid=0 auid=1000 ses=3 msg='op=PAM:authentication grantors=pam_unix acct=\"root\" exe=\"/usr/bin/su\" hostname=? addr=? terminal=pts/0 res=success{extra}'\n"
    )
}
