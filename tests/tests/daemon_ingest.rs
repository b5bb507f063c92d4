//! The daemon's network ingest under `kill -9`: `daemon_harness` (the real `sensor::daemon::run`, its
//! `action` detector raising one alert per `alert-me` event, keyed by `user.name`) with an HTTP
//! listener on loopback; a real HTTP/1.1 client streams numbered records; the daemon is killed with
//! SIGKILL five times mid-stream and restarted. Every record the listener acknowledged must end up as
//! exactly one alert (one row, count 1), and no alert may name a record that was never sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use tests::process::{wait_until, Process};
use tests::{free_port, sha256_hex};

const TOKEN: &str = "daemon-ingest-test-token";

/// A GET on the control socket: the JSON body of a 200, else None.
fn api(socket: &Path, path: &str) -> Option<Value> {
    match tests::process::api(socket, "GET", path, None)? {
        (200, v) => Some(v),
        _ => None,
    }
}

struct Daemon {
    process: Option<Process>,
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
            process: None,
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_daemon_harness"));
        cmd.arg("--config").arg(&self.config);
        let mut p = Process::spawn(cmd, &self.log);
        let (socket, port) = (self.socket.clone(), self.port);
        p.wait_ready(Duration::from_secs(30), "the daemon to come up", || {
            api(&socket, "/healthz").is_some() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.process = Some(p);
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let st = p.stop(Duration::from_secs(60));
            assert!(
                st.is_some_and(|s| s.success()),
                "daemon exit {st:?}:\n{}",
                self.log_text()
            );
        }
    }

    fn stored_alerts(&self) -> u64 {
        api(&self.socket, "/v1/status")
            .and_then(|s| s["store"]["alerts"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until the store holds more than `n` alerts.
    fn wait_alerts_above(&self, n: u64) {
        wait_until(
            Duration::from_secs(60),
            &format!("more than {n} alerts in the store"),
            || (self.stored_alerts() > n).then_some(()),
            || {
                format!(
                    "store at {} alerts:\n{}",
                    self.stored_alerts(),
                    self.log_text()
                )
            },
        );
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
    wait_until(
        Duration::from_secs(120),
        "the store to catch up with the spool (store_acked == spool_durable)",
        || {
            let st = api(&d.socket, "/v1/status")?;
            let ingest = st["sources"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "ingest")?
                .get("status")?
                .clone();
            let acked_seq = ingest["store_acked"].as_u64()?;
            (Some(acked_seq) == ingest["spool_durable"].as_u64()).then_some(())
        },
        || d.log_text(),
    );
    // `sensor status` lists the agent with its protocol, records and last-record time.
    let st = api(&d.socket, "/v1/status").unwrap();
    let row = st["ingest_agents"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["agent"] == "agent-a" && r["protocol"] == "http/ecs")
        })
        .unwrap_or_else(|| panic!("agent-a not in ingest_agents: {st}"));
    assert!(row["records_accepted"].as_u64().unwrap_or(0) > 0, "{row}");
    assert!(row["last_record_ms"].as_u64().is_some(), "{row}");
    assert!(st["ingest_clients"].as_u64().unwrap_or(0) >= 1, "{st}");
    let out = std::process::Command::new(tests::sensor_bin())
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("agent agent-a") && text.contains("http/ecs"),
        "sensor status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Raw Windows event log records (NXLog's Sysmon fields) posted as `ecs` are accepted, and the daemon
/// counts them (metric, `/v1/status`, `sensor status`) as records without an ECS `event.category`,
/// while a real ECS record is not counted.
#[test]
fn raw_sysmon_posted_as_ecs_is_reported_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::new(dir.path());
    d.spawn();
    let raw = r#"{"EventID":17,"SourceName":"Microsoft-Windows-Sysmon","Hostname":"WS1.corp.local","UtcTime":"2020-09-18 19:00:21.120","PipeName":"\\msagent_12","Image":"C:\\x.exe"}"#;
    let ecs = r#"{"@timestamp":"2020-09-18T19:00:22Z","event":{"category":["process"],"type":["start"]},"process":{"name":"a"}}"#;
    let body = format!("{raw}\n{raw}\n{raw}\n{ecs}\n");
    assert_eq!(post(d.port, &body), Some(4));
    // Three raw records counted (the ECS one is not): wait for exactly that count.
    let n = wait_until(
        Duration::from_secs(30),
        "three uncategorized records counted in /v1/status",
        || {
            let n = api(&d.socket, "/v1/status")?["ingest_ecs_uncategorized"].as_u64()?;
            (n >= 3).then_some(n)
        },
        || d.log_text(),
    );
    assert_eq!(n, 3, "{}", d.log_text());
    let out = Command::new(tests::sensor_bin())
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 records carry no ECS event.category; wrong format?"),
        "{text}"
    );
    let metrics = api(&d.socket, "/metrics").unwrap_or(Value::Null);
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("sensor_ingest_ecs_uncategorized_total 3"),
        "{metrics}"
    );
    d.stop();
}
