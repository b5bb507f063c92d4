//! The one process harness of the end-to-end tests: spawn a binary with its log in a file, wait until
//! it is ready, call its control API, `kill -9` it, stop it with SIGTERM, read its log; and
//! [`wait_until`], the one "poll until a deadline" loop, whose failure names what was awaited and
//! shows the process log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `f` every 50 ms until it gives `Some`, for at most `timeout`; on timeout panics naming
/// `what` with `context()` (a log, a status) appended.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process under test: stdout discarded, stderr (its tracing log) appended to a file.
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with `SENSOR_LOG=info` (unless set), `NO_COLOR=1`, stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Process {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        if std::env::var_os("SENSOR_LOG").is_none() {
            cmd.env("SENSOR_LOG", "info");
        }
        let child = cmd
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Process {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Waits until `ready()` holds; fails at once if the process exits meanwhile.
    pub fn wait_ready(&mut self, timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_until(
            timeout,
            what,
            || {
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        panic!(
                            "process exited with {st} while waiting for {what}:\n{}",
                            read_log(&log)
                        );
                    }
                }
                ready().then_some(())
            },
            || format!("log:\n{}", read_log(&log)),
        );
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            let pid = i32::try_from(c.id()).unwrap_or(i32::MAX);
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait at most `timeout` for the exit; returns the exit status (`None` if it
    /// was not running).
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                // Never leave it running behind a failed test.
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "timed out after {timeout:?} waiting for the process to stop on SIGTERM (killed)\nlog:\n{}",
                    read_log(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One call on a daemon's control socket: (HTTP status, JSON body, or the text as a JSON string);
/// `None` when it cannot connect.
pub fn api(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let ep = sensor::client::Endpoint::Unix(socket.to_path_buf());
    let (status, bytes) = rt
        .block_on(sensor::client::call(&ep, method, path, body, None))
        .ok()?;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Some((status, v))
}
