//! Runs the real `sensor events` binary around a workload and collects its NDJSON events.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) struct Capture {
    child: Child,
    /// Stdout, read as it comes (a sensor whose stdout pipe is full stops reading its ring
    /// buffer: a test that waits for the sensor to get somewhere must not hold its output).
    stdout: std::thread::JoinHandle<String>,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_rest: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `sensor events` with `extra` args and waits until its programs are attached.
pub(crate) fn start(extra: &[&str]) -> Capture {
    let mut child = Command::new(tests::sensor_bin())
        .args(["events", "--duration", "120s"])
        .args(extra)
        .env("SENSOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sensor events");
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        text
    });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let rest = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rest2 = rest.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            rest2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("attached") && line.starts_with("sensor events") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!(
                    "sensor events did not attach; stderr: {:?}; status {:?}",
                    rest.lock().unwrap(),
                    out.map(|o| o.status)
                );
            }
        }
    }
    Capture {
        child,
        stdout,
        stderr_lines: rx,
        stderr_rest: rest,
    }
}

impl Capture {
    /// Waits until a line of the sensor's stderr contains every one of `needles`; false after
    /// `timeout`.
    pub(crate) fn wait_stderr(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stderr_rest
                .lock()
                .unwrap()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The stderr lines so far.
    pub(crate) fn stderr_so_far(&self) -> Vec<String> {
        self.stderr_rest.lock().unwrap().clone()
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the whole sensor process: while it is stopped nothing
    /// reads the ring buffer, whatever the machine's load.
    pub(crate) fn freeze(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), sig) };
    }

    /// Lets the reader catch up, stops the sensor with SIGINT and returns (events, stderr lines).
    pub(crate) fn stop(mut self) -> (Vec<Value>, Vec<String>) {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGINT) };
        let out = self.stdout.join().unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let err = self.stderr_rest.lock().unwrap().clone();
        assert!(
            status.success(),
            "sensor events failed ({status}); stderr: {err:?}"
        );
        let events = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}"))
            })
            .collect();
        (events, err)
    }
}

/// Runs the workload binary and returns its pid.
pub(crate) fn workload(args: &[&str]) -> u32 {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-workload"))
        .args(args)
        .spawn()
        .expect("spawn workload");
    let pid = c.id();
    let st = c.wait().unwrap();
    assert!(st.success(), "workload {args:?} failed: {st}");
    pid
}

pub(crate) fn get<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

pub(crate) fn action(e: &Value) -> &str {
    get(e, "event.action").as_str().unwrap_or("")
}

pub(crate) fn pid_of(e: &Value) -> i64 {
    get(e, "process.pid").as_i64().unwrap_or(-1)
}

/// Events by `pid` with `action`.
pub(crate) fn by<'a>(events: &'a [Value], pid: u32, act: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| pid_of(e) == i64::from(pid) && action(e) == act)
        .collect()
}

pub(crate) fn dump(events: &[Value], pid: u32) -> String {
    events
        .iter()
        .filter(|e| pid_of(e) == i64::from(pid))
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
