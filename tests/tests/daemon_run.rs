//! The daemon as a process: `daemon_harness` (the real `sensor::daemon::run` with small test detectors,
//! see tests/src/bin/daemon_harness.rs) fed by a real `[[sources.file]]`, driven by real signals, queried
//! through the real control socket and the `sensor` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tests::process::{api, wait_until, Process};

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_daemon_harness"))
}

struct Daemon {
    process: Process,
    socket: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path) -> Daemon {
        let log = dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(harness());
        cmd.arg("--config").arg(config);
        let mut process = Process::spawn(cmd, &log);
        let socket = dir.join("control.sock");
        process.wait_ready(Duration::from_secs(20), "the daemon to come up", || {
            api(&socket, "GET", "/healthz", None).is_some()
        });
        Daemon { process, socket }
    }

    fn log_text(&self) -> String {
        self.process.log()
    }

    fn signal(&self, sig: libc::c_int) {
        self.process.signal(sig);
    }

    /// SIGTERM and wait; returns the exit status and the log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let st = self
            .process
            .stop(Duration::from_secs(30))
            .expect("the daemon was running");
        (st, self.process.log())
    }

    fn status(&self) -> Value {
        api(&self.socket, "GET", "/v1/status", None).unwrap().1
    }

    fn wait_for(&self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        wait_until(
            Duration::from_secs(30),
            what,
            || {
                let s = self.status();
                f(&s).then_some(s)
            },
            || format!("status: {:#}\nlog:\n{}", self.status(), self.log_text()),
        )
    }
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("sensor.toml");
    let text = format!(
        r#"
state_dir = "{d}"
[kernel]
enabled = false
[api]
socket = "{d}/control.sock"
[store]
dedup_window = "1m"
[[sources.file]]
path = "{d}/events.ndjson"
name = "events"
{extra}
"#,
        d = dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn now_rfc3339() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secs = i64::try_from(ns / 1_000_000_000).unwrap();
    let (d, s) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ns % 1_000_000_000
    )
}

fn append(path: &Path, lines: &[Value]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for l in lines {
        buf.push_str(&l.to_string());
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn event(action: &str, host: &str, user: &str) -> Value {
    json!({"@timestamp": now_rfc3339(), "event": {"action": action}, "host": {"name": host}, "user": {"name": user},
           "process": {"executable": "/usr/bin/socat", "pid": 4242}})
}

fn stored_alerts(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
        .unwrap()
}

fn cli(args: &[&str]) -> Output {
    Command::new(tests::sensor_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sigterm_flushes_everything_read_and_a_restart_resumes_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let events = dir.path().join("events.ndjson");
    const N: usize = 20_000;
    // Distinct users: every event is its own alert (no dedup), so counts are exact.
    let lines: Vec<Value> = (0..N)
        .map(|i| event("alert-me", "web-1", &format!("u{i}")))
        .collect();
    append(&events, &lines);

    let d = Daemon::start(&cfg, dir.path());
    d.wait_for("the first alerts", |s| {
        s["alerts_new"].as_u64().unwrap_or(0) > 0
    });
    let (st, log) = d.stop();
    assert!(st.success(), "{log}");
    assert!(
        log.contains("alert store flushed and checkpointed"),
        "{log}"
    );
    let db = dir.path().join("alerts.db");
    let wal = dir.path().join("alerts.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "WAL checkpointed at shutdown"
    );
    let first = stored_alerts(&db);
    // Every event the daemon read before SIGTERM became an alert in the store.
    let read: i64 = log
        .lines()
        .find(|l| l.contains("alert store flushed"))
        .and_then(|l| l.split("events_out=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    assert_eq!(
        first, read,
        "alerts stored == events handed to the detectors before shutdown\n{log}"
    );
    eprintln!("first run stored {first} of {N} before SIGTERM");

    // Restart: it resumes after the last event whose alert is stored.
    let d = Daemon::start(&cfg, dir.path());
    let n = i64::try_from(N).unwrap();
    d.wait_for("all events", |s| s["store"]["alerts"].as_i64() == Some(n));
    let (st, log) = d.stop();
    assert!(st.success(), "{log}");
    assert_eq!(
        stored_alerts(&db),
        n,
        "no event lost, none read twice\n{log}"
    );
}

#[test]
fn reload_keeps_pending_sequences_of_unchanged_detectors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, "").unwrap();
    let d = Daemon::start(&cfg, dir.path());

    append(&events, &[event("stage1", "host-a", "root")]);
    d.wait_for("pending stage1", |s| s["pending"] == 1);

    // SIGHUP: same rules -> the pending stage1 survives and stage2 completes the sequence.
    d.signal(libc::SIGHUP);
    d.wait_for("reload", |_| d.log_text().contains("reloaded"));
    assert_eq!(d.status()["pending"], 1, "pending state kept across SIGHUP");
    append(&events, &[event("stage2", "host-a", "root")]);
    d.wait_for("sequence alert", |s| {
        s["alerts_new"] == 1 && s["pending"] == 0
    });

    // Reload over the API with the `seq` detector changed: its state starts empty (reported as such).
    append(&events, &[event("stage1", "host-b", "root")]);
    d.wait_for("pending stage1 on host-b", |s| s["pending"] == 1);
    config(dir.path(), "[rules.settings.seq]\nversion = 2\n");
    let (code, report) = api(&d.socket, "POST", "/v1/reload", None).unwrap();
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["kept"], json!(["action"]), "{report}");
    assert_eq!(report["loaded"], json!(["seq"]), "{report}");
    assert_eq!(d.status()["pending"], 0);
    append(&events, &[event("stage2", "host-b", "root")]);
    d.wait_for("stage2 read", |s| s["sources"][0]["events_out"] == 4);
    assert_eq!(
        d.status()["alerts_new"],
        1,
        "a changed detector does not complete an old sequence"
    );

    // A reload that fails (bad setting) keeps the previous rules and says why.
    config(dir.path(), "[rules.settings.seq]\nversion = \"two\"\n");
    let (code, report) = api(&d.socket, "POST", "/v1/reload", None).unwrap();
    assert_eq!(code, 422, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("version must be a non-negative integer"),
        "{report}"
    );
    assert_eq!(d.status()["rules_loaded"], 2);
    let (st, log) = d.stop();
    assert!(st.success(), "{log}");
}

#[test]
fn alerts_cli_lists_shows_triages_and_the_status_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let events = dir.path().join("events.ndjson");
    append(
        &events,
        &[
            event("alert-me", "web-1", "alice"),
            event("alert-me", "web-1", "alice"),
            event("noise", "web-1", "x"),
        ],
    );
    let d = Daemon::start(&cfg, dir.path());
    d.wait_for("alert", |s| {
        s["alerts_new"] == 1 && s["alerts_repeated"] == 1
    });
    let sock = d.socket.display().to_string();

    // `alerts tail` follows live: start it, then make a new alert.
    let mut tail = Command::new(tests::sensor_bin())
        .args(["alerts", "tail", "--json", "--socket", &sock])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(&events, &[event("alert-me", "web-2", "bob")]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tail.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = tail.kill();
    let _ = tail.wait();
    let tailed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(tailed["host"], "web-2", "{line}");

    let o = cli(&["alerts", "list", "--socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.starts_with("    ID  STATUS"), "{table}");
    assert!(
        table.contains("test rule action") && table.contains("web-1") && table.contains("web-2"),
        "{table}"
    );

    let o = cli(&[
        "alerts",
        "list",
        "--json",
        "--host",
        "web-1",
        "--severity",
        "high",
        "--since",
        "1h",
        "--socket",
        &sock,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["count"], 2);
    let id = rows[0]["id"].as_i64().unwrap().to_string();

    let o = cli(&[
        "alerts",
        "ack",
        &id,
        "--reason",
        "investigating",
        "--socket",
        &sock,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is now acknowledged"),
        "{}",
        text(&o)
    );
    let o = cli(&["alerts", "ack", &id, "--socket", &sock]);
    assert!(!o.status.success(), "a reason is required");
    let o = cli(&[
        "alerts", "close", "424242", "--reason", "x", "--socket", &sock,
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no alert with id 424242"),
        "{}",
        text(&o)
    );
    let o = cli(&["alerts", "list", "--status", "bogus", "--socket", &sock]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown alert status `bogus`"),
        "{}",
        text(&o)
    );

    let (st, log) = d.stop();
    assert!(st.success(), "{log}");

    // Restart: the alert, its count, its status and its history are still there.
    let d = Daemon::start(&cfg, dir.path());
    let o = cli(&["alerts", "show", &id, "--socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("[acknowledged]") && shown.contains("seen 2 time(s)"),
        "{shown}"
    );
    assert!(
        shown.contains("open -> acknowledged") && shown.contains("investigating"),
        "{shown}"
    );
    assert!(
        shown.contains("evidence (2 event(s))") && shown.contains("\"alert-me\""),
        "{shown}"
    );
    let o = cli(&["alerts", "show", &id, "--json", "--socket", &sock]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["history"][1]["to"], "acknowledged");
    assert!(
        v["history"][1]["actor"].as_str().unwrap().contains("uid 0"),
        "{v}"
    );
    assert_eq!(v["attack"]["techniques"], json!(["T1559"]));

    let o = cli(&["status", "--socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    let st = String::from_utf8_lossy(&o.stdout);
    assert!(
        st.contains("rules loaded:   2") && st.contains("events") && st.contains("alert store:"),
        "{st}"
    );
    drop(d);
}

#[test]
fn a_locked_or_corrupted_store_stops_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = dir.path().join("alerts.db");

    // Held by another process (this test holds it open).
    let held = sensor::store::Store::open(&sensor::store::StoreConfig::new(&db)).unwrap();
    let o = Command::new(harness())
        .arg("--config")
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "alert store {} is locked by another process",
            db.display()
        )),
        "{err}"
    );
    drop(held);

    // Garbage where the database should be, through the real `sensor run`.
    std::fs::write(&db, vec![0x42u8; 64 * 1024]).unwrap();
    let o = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("alert store {} is corrupted", db.display())),
        "{err}"
    );
}

#[test]
fn the_control_socket_refuses_callers_that_are_not_root() {
    if !tests::require_root("the_control_socket_refuses_callers_that_are_not_root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bin = tests::sensor_bin();
    let as_nobody = |sock: &Path| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(&bin)
            .args(["alerts", "list", "--socket"])
            .arg(sock)
            .output()
            .unwrap()
    };

    // Default mode 0600: the kernel refuses the connection, the CLI says why.
    let cfg = config(dir.path(), "");
    let d = Daemon::start(&cfg, dir.path());
    let o = as_nobody(&d.socket);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Permission denied") && err.contains("for root only"),
        "{}",
        text(&o)
    );
    let (st, _) = d.stop();
    assert!(st.success());

    // Socket opened to everyone: the daemon itself checks the caller's uid (SO_PEERCRED) and refuses.
    let cfg = config(dir.path(), "");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[api]\n", "[api]\nsocket_mode = \"0666\"\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let d = Daemon::start(&cfg, dir.path());
    let o = as_nobody(&d.socket);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("403") && err.contains("accepts only root") && err.contains("nobody"),
        "{}",
        text(&o)
    );
    assert!(d.log_text().contains("caller refused"), "{}", d.log_text());
    // Root still gets in.
    let o = cli(&["alerts", "list", "--socket", d.socket.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    drop(d);
}

#[test]
fn the_tcp_api_needs_tls_and_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("api.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("api.key"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("api.token"), "s3cret-token-for-tests\n").unwrap();
    std::fs::write(dir.path().join("wrong.token"), "not-the-token\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{d}/api.crt\"\nkey = \"{d}/api.key\"\ntoken_file = \"{d}/api.token\"\n"
        ),
    );
    let daemon = Daemon::start(&cfg, dir.path());
    let url = format!("https://localhost:{port}");
    let ca = format!("{d}/api.crt");
    let remote = |token: Option<&str>| {
        let mut args = vec!["status", "--url", &url, "--ca-file", &ca];
        if let Some(t) = token {
            args.extend(["--token-file", t]);
        }
        cli(&args)
    };
    let ok_token = format!("{d}/api.token");
    let o = remote(Some(&ok_token));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rules loaded:   2"),
        "{}",
        text(&o)
    );
    let wrong = format!("{d}/wrong.token");
    for o in [remote(Some(&wrong)), remote(None)] {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("401") && err.contains("missing or wrong API token"),
            "{}",
            text(&o)
        );
    }
    drop(daemon);
}

#[test]
fn metrics_expose_sources_rules_and_the_latency_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(
        dir.path(),
        &format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let events = dir.path().join("events.ndjson");
    append(
        &events,
        &[event("alert-me", "h", "a"), event("alert-me", "h", "b")],
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap()
        .write_all(b"{not json\n")
        .unwrap();
    let d = Daemon::start(&cfg, dir.path());
    d.wait_for("alerts", |s| s["alerts_new"] == 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ep = sensor::client::Endpoint::Http {
        authority: format!("127.0.0.1:{port}"),
    };
    let (code, body) = rt
        .block_on(sensor::client::call(&ep, "GET", "/metrics", None, None))
        .unwrap();
    assert_eq!(code, 200);
    let m = String::from_utf8_lossy(&body);
    for want in [
        "sensor_events_in_total{source=\"events\"} 2",
        "sensor_events_rejected_total{source=\"events\"} 1",
        "sensor_rule_matches_total{rule=\"action\"} 2",
        "sensor_alert_latency_seconds_count 2",
        "sensor_rules_loaded 2",
        "sensor_alert_latency_seconds_bucket{le=\"+Inf\"} 2",
    ] {
        assert!(m.contains(want), "missing `{want}` in\n{m}");
    }
    let (code, _) = rt
        .block_on(sensor::client::call(&ep, "GET", "/readyz", None, None))
        .unwrap();
    assert_eq!(code, 200);
    drop(d);
}
