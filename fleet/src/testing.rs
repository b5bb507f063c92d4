//! Test support (feature `test-servers`): real nats-server and PostgreSQL instances, each in its own
//! temporary directory on a free loopback port, stopped when dropped (also when a test panics). Both
//! are started with `PR_SET_PDEATHSIG`, so that even a test process killed outright takes them along.
//!
//! Needs Debian's `nats-server` and `postgresql` (15) packages (`cargo xtask setup`). PostgreSQL
//! refuses to run as root: when the tests run as root, `initdb` and `postgres` run as `nobody`
//! through `setpriv`. A failure here is a broken test machine and panics with what was missing.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}; its log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on 127.0.0.1:{port} within 30 s; its log {}:\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the child get SIGKILL when the thread that spawned it ends (the test process dies).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of the calling (child) process; it is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; the child is not yet reaped, so the pid is its.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Stops a child: `sig` first, SIGKILL after `grace`.
fn stop_child(child: &mut Child, sig: i32, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A nats-server with JetStream, storing in its own temporary directory.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    password: String,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with user/password authentication (`fleet` / a random
    /// password, see [`NatsServer::password_file`]).
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("fleet-nats-")
            .tempdir()
            .expect("creating a temporary directory");
        let password = format!(
            "pw-{:016x}",
            crate::partition::fnv1a64(dir.path().as_os_str().as_encoded_bytes())
        );
        let mut s = NatsServer {
            port: free_port(),
            user: "fleet".to_string(),
            password,
            dir,
            child: None,
        };
        std::fs::write(s.password_file(), &s.password).expect("writing the NATS password file");
        s.write_config();
        s.start_again();
        s
    }

    fn write_config(&self) {
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: \"fleet-test\"\njetstream {{\n  store_dir: \"{store}\"\n}}\nauthorization {{\n  user: \"{user}\"\n  password: \"{pw}\"\n}}\n",
            port = self.port,
            store = self.dir.path().join("js").display(),
            user = self.user,
            pw = self.password,
        );
        std::fs::write(self.dir.path().join("nats.conf"), conf).expect("writing nats.conf");
    }

    /// Starts the server again (same port, same store) after [`NatsServer::stop`] or [`NatsServer::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = self.dir.path().join("nats.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening nats.log");
        let mut cmd = Command::new("nats-server");
        cmd.arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("nats.log"))
            .stderr(logf);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .expect("starting nats-server (is Debian's nats-server installed? cargo xtask setup)");
        wait_for_port(self.port, &mut child, "nats-server", &log);
        self.child = Some(child);
    }

    /// Stops the server cleanly (SIGTERM), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGTERM, Duration::from_secs(10));
        }
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGKILL, Duration::from_secs(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("nats.password")
    }

    /// A `[fleet.nats]` section for this server.
    pub fn config(&self) -> crate::NatsConfig {
        crate::NatsConfig {
            urls: vec![self.url()],
            user: Some(self.user.clone()),
            password_file: Some(self.password_file()),
            ..crate::NatsConfig::default()
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL 15 cluster made by `initdb` in its own temporary directory, password authentication
/// (scram-sha-256) on 127.0.0.1 only, database `sensor` owned by user `sensor`.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_PASSWORD: &str = "fleet-test-password";

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("fleet-pg-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut s = PgServer {
            port: free_port(),
            dir,
            child: None,
        };
        let d = s.dir.path();
        let pwfile = d.join("superuser.pw");
        std::fs::write(&pwfile, PG_PASSWORD).expect("writing the password file");
        std::fs::write(d.join("sensor.pw"), format!("{PG_PASSWORD}\n"))
            .expect("writing the password file");
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(d)
                .status()
                .expect("running chown");
            assert!(chown.success(), "chown nobody {} failed", d.display());
        }
        let out = s
            .pg_command("initdb")
            .arg("-D")
            .arg(d.join("data"))
            .args(["-U", "postgres", "-A", "scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .expect("running initdb (is Debian's postgresql installed? cargo xtask setup)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        s.start_again();
        s.psql(
            "postgres",
            &format!(
                "CREATE USER sensor PASSWORD '{PG_PASSWORD}'; CREATE DATABASE sensor OWNER sensor;"
            ),
        );
        s
    }

    fn pg_command(&self, tool: &str) -> Command {
        let bin = Path::new(PG_BIN).join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--pdeathsig=KILL",
            ])
            .arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        cmd
    }

    /// Runs `postgres` in the foreground (our child, so that dropping this value stops it). Same
    /// data and port as before after [`PgServer::stop`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres is already running");
        let d = self.dir.path();
        let log = d.join("pg.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening pg.log");
        let mut cmd = self.pg_command("postgres");
        cmd.arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(d)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("pg.log"))
            .stderr(logf);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("starting postgres");
        wait_for_port(self.port, &mut child, "postgres", &log);
        // Listening comes before accepting: wait until a query answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .pg_command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Fast shutdown (SIGINT: abort transactions, disconnect clients, write a checkpoint).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGINT, Duration::from_secs(20));
        }
    }

    /// Runs SQL as the superuser in database `db` through psql, panicking on failure; returns its
    /// unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = self
            .pg_command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db])
            .env("PGPASSWORD", PG_PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running psql");
        child
            .stdin
            .take()
            .expect("psql stdin")
            .write_all(sql.as_bytes())
            .expect("writing to psql");
        let out = child.wait_with_output().expect("psql output");
        assert!(
            out.status.success(),
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `[fleet.postgres]` section for user `sensor` on database `sensor`.
    pub fn config(&self) -> crate::PostgresConfig {
        crate::PostgresConfig {
            url: format!("postgresql://sensor@127.0.0.1:{}/sensor", self.port),
            password_file: Some(self.dir.path().join("sensor.pw")),
            ..crate::PostgresConfig::default()
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Immediate shutdown: the data is thrown away with the directory.
            stop_child(&mut c, libc::SIGQUIT, Duration::from_secs(5));
        }
    }
}
