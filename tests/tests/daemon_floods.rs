//! Floods against the real daemon (kernel sensor on, HTTP ingest on loopback, an EQL sequence rule
//! loaded) keep its resident memory under the configured ceiling, and the daemon says what it shed.
//!
//! The ceiling is the one the shipped deployment configures: the DaemonSet's memory limit (read from
//! `deploy/kubernetes/base/daemonset.yaml`), the point at which the kernel would kill the daemon. A
//! sampler thread reads `VmRSS` from `/proc/<pid>/status` every 50 ms for the whole run, so the peak
//! is checked, not only the end. One daemon takes, in turn:
//! 1. a distinct-field-name flood: records whose field names are all new and 100 kB long
//!    (shed: `sensor_field_overflow_total`);
//! 2. a sequence flood: thousands of partial matches of the loaded sequence rule, each holding a
//!    200 kB event (shed: `sensor_pending_shed`, within `[rules] max_pending_bytes`);
//! 3. pid churn: thousands of real short-lived processes (fork/exec); the kernel process table
//!    returns to the live processes (`processes`, `processes_swept` in `sensor status`);
//! 4. fake pids from a remote agent: process starts, each the child of the one before, with 100 kB
//!    command lines, through the whole shipped analytics set; all of them must get through the
//!    pipeline (`events_out` catching up with `events_in`) within a generous deadline (a sanity
//!    check of throughput, not a timing).
//!
//! Then, with 1,000 more such records just acknowledged, SIGTERM: the daemon must exit cleanly
//! within [`STOP_BOUND`], and a restarted daemon processes what the first one said it left in the
//! spool, until the store has acknowledged everything durable in it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tests::process::{api, wait_until, Process};
use tests::{free_port, post_ecs, require_root, rfc3339, sensor_bin, sha256_hex};

const TOKEN: &str = "floods-test-token";

/// The memory limit of the shipped DaemonSet, in bytes.
fn configured_ceiling() -> u64 {
    let path = tests::workspace_root().join("deploy/kubernetes/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let limits = text
        .split("limits:")
        .nth(1)
        .expect("the DaemonSet sets resource limits");
    let mem = limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("the DaemonSet limits memory")
        .trim()
        .trim_matches('"');
    let (n, unit) = mem.split_at(mem.find(|c: char| !c.is_ascii_digit()).unwrap_or(mem.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "Gi" => 1 << 30,
        "Mi" => 1 << 20,
        "" => 1,
        u => panic!("memory unit {u} in {}", path.display()),
    }
}

fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn metric(socket: &Path, name: &str) -> u64 {
    let Some((200, Value::String(text))) = api(socket, "GET", "/metrics", None) else {
        return 0;
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

fn kernel_status(socket: &Path) -> Value {
    api(socket, "GET", "/v1/status", None)
        .and_then(|(_, s)| {
            s["sources"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "kernel")
                .map(|x| x["status"].clone())
        })
        .unwrap_or(Value::Null)
}

/// Posts `records` in bodies of at most `per_body`, each must be accepted whole.
fn post_all(port: u16, records: impl Iterator<Item = String>, per_body: usize) -> u64 {
    let mut sent = 0;
    let mut body = String::new();
    let mut n = 0;
    let mut flush = |body: &mut String, n: &mut usize| {
        if *n > 0 {
            assert_eq!(post_ecs(port, TOKEN, body), Some(*n as u64), "a flood body");
            sent += *n as u64;
        }
        body.clear();
        *n = 0;
    };
    for r in records {
        body.push_str(&r);
        body.push('\n');
        n += 1;
        if n == per_body {
            flush(&mut body, &mut n);
        }
    }
    flush(&mut body, &mut n);
    sent
}

struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn floods_keep_resident_memory_under_the_configured_ceiling_and_say_what_was_shed() {
    if !require_root(
        "floods_keep_resident_memory_under_the_configured_ceiling_and_say_what_was_shed",
    ) {
        return;
    }
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339(1_796_608_000_123), "2026-12-07T01:46:40.123Z");
    let ceiling = configured_ceiling();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(
        d.join("rules/flood.toml"),
        "[[rule]]\nid = \"flood-seq\"\nname = \"Sequence flood\"\nseverity = \"low\"\nquery = '''\nsequence by host.name with maxspan=1h\n  [any where event.action == \"seq-open\"]\n  [any where event.action == \"seq-close\"]\n'''\n",
    )
    .unwrap();
    let port = free_port();
    let cfg = d.join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{d}/state"
[privileges]
user = "root"
[kernel]
enabled = true
[api]
socket = "{d}/control.sock"
[rules]
paths = ["{d}/rules"]
max_pending_bytes = "16MiB"
[ingest]
enabled = true
[ingest.http]
listen = "127.0.0.1:{port}"
plaintext_loopback = true
[[ingest.agents]]
id = "flooder"
token_sha256 = "{sha}"
"#,
            d = d.display(),
            sha = sha256_hex(TOKEN)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(sensor_bin());
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut daemon = Process::spawn(cmd, &d.join("daemon.log"));
    let socket = d.join("control.sock");
    daemon.wait_ready(Duration::from_secs(120), "the daemon's listeners", || {
        socket.exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && kernel_status(&socket)["attached"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    });
    let pid = daemon.pid().expect("the daemon runs");
    let sampler = Sampler::start(pid);
    let base = rss(pid).unwrap();
    let ingested = |socket: &Path| metric(socket, "sensor_events_in_total{source=\"ingest\"} ");
    let mut sent = 0u64;
    let wait_ingested = |sent: u64, what: &str| {
        wait_until(
            Duration::from_secs(300),
            what,
            || (ingested(&socket) >= sent).then_some(()),
            || daemon.log(),
        );
    };
    let mut report = vec![format!("baseline {} MiB", base >> 20)];

    // 1. Distinct field names, 100 kB each.
    let overflow0 = metric(&socket, "sensor_field_overflow_total ");
    let key = "k".repeat(100_000);
    sent += post_all(
        port,
        (0..1_500).map(|i| {
            format!("{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"event\":{{\"action\":\"fields\"}},\"f{i:05}{key}\":1}}")
        }),
        50,
    );
    wait_ingested(sent, "the field flood to reach the correlator");
    let overflowed = metric(&socket, "sensor_field_overflow_total ") - overflow0;
    report.push(format!(
        "fields: peak {} MiB, {overflowed} names shed",
        sampler.peak() >> 20
    ));
    assert!(
        overflowed >= 1_500,
        "only {overflowed} overflowed names counted"
    );

    // 2. Partial sequences, each holding a 200 kB event, one per host: 400 MB unbounded.
    let shed0 = metric(&socket, "sensor_pending_shed ");
    let big = "m".repeat(200_000);
    let t0 = tests::now_ms(120);
    sent += post_all(
        port,
        (0..2_000i64).map(|i| {
            format!(
                "{{\"@timestamp\":\"{}\",\"event\":{{\"action\":\"seq-open\"}},\"host\":{{\"name\":\"h{i}\"}},\"message\":\"{big}\"}}",
                rfc3339(t0 + i * 10)
            )
        }),
        40,
    );
    wait_ingested(sent, "the sequence flood to reach the correlator");
    let seq_shed = wait_until(
        Duration::from_secs(60),
        "the sequence rule to shed partials",
        || {
            let n = metric(&socket, "sensor_pending_shed ").saturating_sub(shed0);
            (n > 0).then_some(n)
        },
        || daemon.log(),
    );
    report.push(format!(
        "sequences: peak {} MiB, {seq_shed} partials shed",
        sampler.peak() >> 20
    ));

    // 3. Real pid churn: short-lived processes, forked and exec'd.
    let procs0 = kernel_status(&socket)["processes"].as_u64().unwrap_or(0);
    let execs0 = kernel_status(&socket)["events"]["exec"]
        .as_u64()
        .unwrap_or(0);
    for _ in 0..5_000 {
        let st = Command::new("/bin/true").status().unwrap();
        assert!(st.success());
    }
    wait_until(
        Duration::from_secs(120),
        "the kernel sensor to see the churn",
        || {
            let e = kernel_status(&socket)["events"]["exec"]
                .as_u64()
                .unwrap_or(0);
            (e >= execs0 + 5_000).then_some(())
        },
        || format!("{}\n{}", kernel_status(&socket), daemon.log()),
    );
    let k = kernel_status(&socket);
    let procs = k["processes"].as_u64().unwrap_or(u64::MAX);
    report.push(format!(
        "pid churn: peak {} MiB, process table {procs0} -> {procs} entries, {} swept",
        sampler.peak() >> 20,
        k["processes_swept"]
    ));
    assert!(
        procs < procs0 + 1_000,
        "the process table kept the churned processes: {procs0} -> {procs}"
    );

    // 4. Fake pids from a remote agent: process starts with 100 kB command lines, each the child
    // of the one before, through the whole shipped analytics set. All of them must get through
    // the pipeline (a throughput sanity check, not a timing of performance).
    let pid_in0 = ingested(&socket);
    let out0 = processed(&socket);
    let cmdline = "c".repeat(100_000);
    let t1 = tests::now_ms(0);
    let flood4 = std::time::Instant::now();
    let procs_sent = post_all(
        port,
        (0..PID_FLOOD).map(|i| process_start(i, t1 + i as i64, &cmdline)),
        40,
    );
    wait_until(
        Duration::from_secs(600),
        "the fake-pid flood to get through the pipeline (events_out catching up with events_in)",
        || {
            let (i, o) = (ingested(&socket), processed(&socket));
            (i >= pid_in0 + procs_sent && o >= out0 + procs_sent && o >= i).then_some(())
        },
        || {
            format!(
                "in {} out {}\n{}",
                ingested(&socket),
                processed(&socket),
                daemon.log()
            )
        },
    );
    report.push(format!(
        "fake pids: peak {} MiB, {procs_sent} process starts with 100 kB command lines through the pipeline in {:.0?}",
        sampler.peak() >> 20,
        flood4.elapsed()
    ));

    std::thread::sleep(Duration::from_secs(1));
    let peak = sampler.peak();
    eprintln!(
        "ceiling {} MiB (DaemonSet limit); {}",
        ceiling >> 20,
        report.join("; ")
    );
    assert!(
        peak < ceiling,
        "resident memory peaked at {} MiB, over the configured ceiling of {} MiB: {}",
        peak >> 20,
        ceiling >> 20,
        report.join("; ")
    );

    // 5. SIGTERM right after a flood, with a backlog in the spool: the daemon stops within a bound
    // (generous: a debug build on a loaded machine), and what it had not processed is replayed at
    // the next start, so every acknowledged record gets through.
    let backlog = post_all(
        port,
        (PID_FLOOD..PID_FLOOD + 1_000).map(|i| process_start(i, t1 + i as i64, &cmdline)),
        40,
    );
    let out_before = processed(&socket);
    let spool = ingest_status(&socket);
    let stopping = std::time::Instant::now();
    let st = daemon.stop(STOP_BOUND);
    let took = stopping.elapsed();
    drop(sampler);
    let log = daemon.log();
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM: {st:?} after {took:?}\n{log}"
    );
    assert!(took < STOP_BOUND);
    eprintln!("stopped in {took:?} after SIGTERM, {backlog} records just posted (spool {spool})");
    assert!(
        log.contains("stopped; alert store flushed and checkpointed"),
        "no clean stop in the log:\n{log}"
    );
    let mut again = Process::spawn(
        {
            let mut cmd = Command::new(sensor_bin());
            cmd.args(["run", "--config"]).arg(&cfg);
            cmd
        },
        &d.join("daemon2.log"),
    );
    again.wait_ready(Duration::from_secs(120), "the restarted daemon", || {
        socket.exists()
    });
    // Everything durable in the spool is processed after the restart, and the two runs together
    // processed at least every record of the last flood.
    wait_until(
        Duration::from_secs(300),
        "the restarted daemon to process what was left in the spool",
        || {
            let s = ingest_status(&socket);
            let (acked, durable) = (s["store_acked"].as_u64()?, s["spool_durable"].as_u64()?);
            (acked >= durable).then_some(())
        },
        || format!("{}\n{}", ingest_status(&socket), again.log()),
    );
    // What the first run said it left in the spool, the second processed.
    let left: u64 = log
        .split("left_in_spool=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the ingest consumer logs what it left in the spool");
    let replayed = processed(&socket);
    eprintln!("{left} records left in the spool at the stop; {replayed} processed after the restart ({out_before} before the stop)");
    assert!(
        replayed >= left,
        "records lost across the stop: {left} left in the spool, {replayed} processed after the restart"
    );
    let st = again.stop(STOP_BOUND);
    assert!(
        st.is_some_and(|s| s.success()),
        "second stop: {st:?}\n{}",
        again.log()
    );
}

/// How long a daemon may take to stop on SIGTERM, whatever it was doing.
const STOP_BOUND: Duration = Duration::from_secs(30);
/// Process starts in the fake-pid flood.
const PID_FLOOD: u64 = 3_000;

fn processed(socket: &Path) -> u64 {
    metric(socket, "sensor_events_out_total{source=\"ingest\"} ")
}

fn ingest_status(socket: &Path) -> Value {
    api(socket, "GET", "/v1/status", None)
        .and_then(|(_, s)| {
            s["sources"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "ingest")
                .map(|x| x["status"].clone())
        })
        .unwrap_or(Value::Null)
}

/// A process start from a remote agent: a fake pid, the child of the previous one, and a 100 kB
/// command line.
fn process_start(i: u64, ms: i64, cmdline: &str) -> String {
    let pid = 1_000_000 + i;
    format!(
        "{{\"@timestamp\":\"{}\",\"event\":{{\"kind\":\"event\",\"category\":[\"process\"],\"type\":[\"start\"]}},\"host\":{{\"name\":\"fake-host\",\"id\":\"fake-host\"}},\"process\":{{\"pid\":{pid},\"executable\":\"/tmp/p{i}\",\"name\":\"p{i}\",\"command_line\":\"{cmdline}\",\"parent\":{{\"pid\":{}}}}}}}",
        rfc3339(ms),
        pid - 1
    )
}
