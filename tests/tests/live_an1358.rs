//! AN1358 live, end to end: the real daemon (`sensor run`) with the kernel sensor attached, real
//! processes on this machine binding AF_UNIX sockets and making FIFOs, alerts read back through the
//! control socket with the CLI, triaged, and still there (with the learned baseline) after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, socket: &Path) -> Daemon {
        let log = dir.join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let child = Command::new(tests::sensor_bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            socket: socket.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            if text.contains("sensor running") {
                assert!(
                    text.contains("source=kernel") || text.contains("source attached"),
                    "kernel not attached:\n{text}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "daemon did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn stop(mut self) -> String {
        // SAFETY: kill with a valid pid of our child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "daemon exit {status}:\n{text}");
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
        let o = self.cli(&["alerts", "list", "--json"]);
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
                t0.elapsed() < Duration::from_secs(10),
                "no alert for {what} ({needle}) within 10 s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
