//! The daemon's network ingest under `kill -9`: `daemon_harness` (the real `sensor::daemon::run`, its
//! `action` detector raising one alert per `alert-me` event, keyed by `user.name`) with an HTTP
//! listener on loopback; a real HTTP/1.1 client streams numbered records; the daemon is killed with
//! SIGKILL five times mid-stream and restarted. Every record the listener acknowledged must end up as
//! exactly one alert (one row, count 1), and no alert may name a record that was never sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use tests::{free_port, sha256_hex};

const TOKEN: &str = "daemon-ingest-test-token";

/// One call on the control socket (None when it cannot connect).
fn api(socket: &Path, path: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ep = sensor::client::Endpoint::Unix(socket.to_path_buf());
    let (status, bytes) = rt
        .block_on(sensor::client::call(&ep, "GET", path, None, None))
        .ok()?;
    if status != 200 {
        return None;
    }
    Some(
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
    )
}

struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    fn new(dir: &Path) -> Daemon {
        let port = free_port();
        let config = dir.join("sensor.toml");
        std::fs::write(
            &config,
            format!(
                r#"
state_dir = "{d}"
[kernel]
enabled = false
[api]
socket = "{d}/control.sock"
[store]
dedup_window = "1h"
[ingest]
enabled = true
group_idle_secs = 1
[ingest.http]
listen = "127.0.0.1:{port}"
plaintext_loopback = true
[[ingest.agents]]
id = "agent-a"
token_sha256 = "{sha}"
"#,
                d = dir.display(),
                sha = sha256_hex(TOKEN)
            ),
        )
        .unwrap();
        Daemon {
            child: None,
            socket: dir.join("control.sock"),
            log: dir.join("daemon.log"),
            config,
            port,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the daemon and waits for its control socket and its HTTP listener.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_daemon_harness"))
            .arg("--config")
            .arg(&self.config)
            .env("SENSOR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while api(&self.socket, "/healthz").is_none()
            || TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon exited with {st} during start-up:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(i32::try_from(c.id()).unwrap(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(st) = c.try_wait().unwrap() {
                    assert!(st.success(), "daemon exit {st}:\n{}", self.log_text());
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "daemon did not stop on SIGTERM:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn stored_alerts(&self) -> u64 {
        api(&self.socket, "/v1/status")
            .and_then(|s| s["store"]["alerts"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until the store holds more than `n` alerts.
    fn wait_alerts_above(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.stored_alerts() <= n {
            assert!(
                Instant::now() < deadline,
                "the store stayed at {} alerts (waiting for more than {n}):\n{}",
                self.stored_alerts(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Posts one NDJSON batch with the test token; Some(accepted) on 200.
fn post(port: u16, body: &str) -> Option<u64> {
    tests::post_ecs(port, TOKEN, body)
}

/// (user name, count) of every stored alert of the `action` rule.
fn alerts_by_user(db: &Path) -> Vec<(String, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT user_name, count FROM alerts WHERE rule_id = 'action'")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn kill_9_while_a_client_streams_keeps_every_acknowledged_record_as_exactly_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::new(dir.path());
    d.spawn();
    let port = d.port;

    // The client: batches of 25 numbered records (ids unique over the whole run), each acknowledged
    // or not as a whole; it keeps going through the kills (refused connections are not acknowledged).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<u64> = (next..next + 25).collect();
                next += 25;
                sent.store(next, Ordering::Relaxed);
                let body: String = ids
                    .iter()
                    .map(|i| {
                        format!(
                            "{{\"event\":{{\"action\":\"alert-me\"}},\"host\":{{\"name\":\"web-1\"}},\"user\":{{\"name\":\"r{i}\"}}}}\n"
                        )
                    })
                    .collect();
                if post(port, &body) == Some(25) {
                    acked.extend(ids);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            acked
        })
    };

    // Five kills, each while alerts are flowing into the store (the more kills, the likelier one
    // lands between a batch's processing and its commit).
    let mut kills = 0;
    for _ in 0..5 {
        let before = d.stored_alerts();
        d.wait_alerts_above(before + 200);
        d.kill9();
        kills += 1;
        d.spawn();
    }
    d.wait_alerts_above(d.stored_alerts() + 200);
    stop.store(true, Ordering::Relaxed);
    let acked = client.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        acked.len() > 1000,
        "the client got only {} records acknowledged",
        acked.len()
    );

    // Everything acknowledged is in the spool; wait until the store has made the alerts of every
    // spooled record durable (`store_acked` reaches `spool_durable`), then stop.
    let want: BTreeSet<u64> = acked.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = api(&d.socket, "/v1/status").unwrap_or(Value::Null);
        let ingest = st["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "ingest"))
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null);
        let (acked_seq, durable) = (
            ingest["store_acked"].as_u64(),
            ingest["spool_durable"].as_u64(),
        );
        if acked_seq.is_some() && acked_seq == durable {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not catch up with the spool: {ingest}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop();

    let rows = alerts_by_user(&dir.path().join("alerts.db"));
    let mut per_id: BTreeMap<u64, (usize, i64)> = BTreeMap::new();
    let mut strangers = Vec::new();
    for (user, count) in &rows {
        match user.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()) {
            Some(id) if id < sent => {
                let e = per_id.entry(id).or_default();
                e.0 += 1;
                e.1 += count;
            }
            _ => strangers.push(user.clone()),
        }
    }
    let missing: Vec<u64> = want
        .iter()
        .copied()
        .filter(|i| !per_id.contains_key(i))
        .collect();
    let duplicated: Vec<(u64, (usize, i64))> = per_id
        .iter()
        .filter(|(_, (rows, count))| *rows != 1 || *count != 1)
        .map(|(i, c)| (*i, *c))
        .collect();
    let unacked_processed = per_id.keys().filter(|i| !want.contains(i)).count();
    println!(
        "daemon crash test: {kills} kill -9, {sent} records sent, {} acknowledged, {} alerts stored ({} of them for records whose batch was not acknowledged), {} acknowledged without an alert, {} processed twice",
        want.len(),
        rows.len(),
        unacked_processed,
        missing.len(),
        duplicated.len()
    );
    assert!(
        strangers.is_empty(),
        "alerts for records never sent: {strangers:?}"
    );
    assert!(
        missing.is_empty(),
        "acknowledged records without an alert (first 20): {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        duplicated.is_empty(),
        "records processed more than once, (rows, count) (first 20): {:?}",
        &duplicated[..duplicated.len().min(20)]
    );
}
