//! Alert outputs over real files and sockets: NDJSON file with rotation, syslog RFC 5424 over UDP and a
//! Unix datagram socket, and a webhook (a real HTTP server on loopback) that fails before it succeeds.
//! Also the config file: the embedded default, unknown keys, `sensor config check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use correlator::{AttackRef, Severity};
use sensor::config::{
    Config, FileOutputConfig, OutputsConfig, SyslogOutputConfig, WebhookOutputConfig,
};
use sensor::metrics::Metrics;
use sensor::outputs::ecs_document;
use sensor::store::AlertUpdate;
use sensor::store::{Status, StoredAlert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

fn update(id: i64) -> Arc<AlertUpdate> {
    Arc::new(AlertUpdate {
        new: true,
        alert: StoredAlert {
            id,
            rule_id: "AN1358-fifo".into(),
            rule_name: "FIFO in /tmp used for execution".into(),
            severity: Severity::Critical,
            risk_score: 99,
            status: Status::Open,
            first_seen_ns: 1_780_000_000_000_000_000,
            last_seen_ns: 1_780_000_001_500_000_000,
            count: 1,
            host: Some("web-1".into()),
            user: Some("www-data".into()),
            process: Some("/usr/bin/mkfifo".into()),
            source: None,
            attack: AttackRef {
                techniques: vec!["T1559".into()],
                tactics: vec!["TA0002".into()],
                analytic: Some("AN1358".into()),
                strategy: Some("DET0493".into()),
            },
            reason: "fifo opened by an unexpected process".into(),
            settings: serde_json::Map::new(),
            join_keys: vec![],
            container: None,
            created_ns: 1_780_000_002_000_000_000,
            updated_ns: 1_780_000_002_000_000_000,
        },
        evidence: vec![serde_json::json!({"event": {"action": "mknod"}})],
    })
}

#[test]
fn alert_documents_are_ecs_shaped() {
    let doc = ecs_document(&update(7));
    assert_eq!(doc["@timestamp"], "2026-05-28T20:26:41.500000Z");
    assert_eq!(doc["event"]["kind"], "alert");
    assert_eq!(doc["event"]["id"], "7");
    assert_eq!(doc["rule"]["id"], "AN1358-fifo");
    assert_eq!(doc["threat"]["framework"], "MITRE ATT&CK");
    assert_eq!(doc["threat"]["technique"][0]["id"], "T1559");
    assert_eq!(doc["threat"]["tactic"][0]["id"], "TA0002");
    assert_eq!(doc["host"]["name"], "web-1");
    assert_eq!(doc["user"]["name"], "www-data");
    assert_eq!(doc["process"]["executable"], "/usr/bin/mkfifo");
    assert_eq!(doc["sensor"]["alert"]["analytic"], "AN1358");
    assert_eq!(
        doc["sensor"]["alert"]["evidence"][0]["event"]["action"],
        "mknod"
    );
    assert_eq!(doc["message"], "fifo opened by an unexpected process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_syslog_and_webhook_outputs_deliver() {
    let dir = tempfile::tempdir().unwrap();
    // Syslog receivers: UDP on loopback and a Unix datagram socket.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let unix_path = dir.path().join("log.sock");
    let unix = std::os::unix::net::UnixDatagram::bind(&unix_path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Webhook: answers 503 twice, then 200; records what it got.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = hook.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read headers and the body (Content-Length).
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            let n = h.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&buf).to_string();
            let resp: &[u8] = if n < 2 {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
            } else {
                got_tx.send(text).unwrap();
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            s.write_all(resp).await.unwrap();
            let _ = s.shutdown().await;
        }
    });
    std::fs::write(dir.path().join("hook.token"), "hook-token\n").unwrap();
    {
        // A token file must be private to its owner.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("hook.token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    let cfg = OutputsConfig {
        stdout: false,
        repeats: false,
        file: Some(FileOutputConfig {
            path: dir.path().join("out/alerts.ndjson"),
            max_size: sensor::config::ByteSize(3000),
            keep: 2,
        }),
        syslog: None,
        webhook: Some(WebhookOutputConfig {
            url: format!("http://{hook_addr}/ingest/alerts"),
            retries: 4,
            timeout: sensor::config::Duration(Duration::from_secs(5)),
            token_file: dir.path().join("hook.token"),
        }),
    };
    let metrics = Metrics::new();
    let (tx, _) = broadcast::channel(64);
    let mut tasks = sensor::outputs::start(&cfg, &tx, &metrics).unwrap();
    for target in [
        format!("udp:{}", udp.local_addr().unwrap()),
        format!("unix:{}", unix_path.display()),
    ] {
        let c = OutputsConfig {
            syslog: Some(SyslogOutputConfig {
                target,
                app_name: "sensor".into(),
                facility: "auth".into(),
            }),
            ..OutputsConfig::default()
        };
        tasks.extend(sensor::outputs::start(&c, &tx, &metrics).unwrap());
    }
    for id in 1..=6 {
        tx.send(update(id)).unwrap();
    }
    // A repeat is not sent again (repeats = false).
    let mut rep = (*update(1)).clone();
    rep.new = false;
    tx.send(Arc::new(rep)).unwrap();
    drop(tx);

    // Syslog: RFC 5424 header, auth facility (4) * 8 + critical (2) = 34.
    for recv in [
        Box::new(|b: &mut [u8]| udp.recv(b).unwrap()) as Box<dyn Fn(&mut [u8]) -> usize>,
        Box::new(|b: &mut [u8]| unix.recv(b).unwrap()),
    ] {
        let mut buf = vec![0u8; 65536];
        let n = recv(&mut buf);
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            msg.starts_with("<34>1 2026-05-28T20:26:41.500000Z "),
            "{msg}"
        );
        assert!(
            msg.contains(" sensor ")
                && msg.contains(" ALERT [sensor@32473 alert_id=\"1\" rule_id=\"AN1358-fifo\"] {"),
            "{msg}"
        );
        let json_start = msg.find("] {").unwrap() + 2;
        let doc: serde_json::Value = serde_json::from_str(&msg[json_start..]).unwrap();
        assert_eq!(doc["event"]["kind"], "alert");
    }

    // Webhook: the first alert arrives after two 503s, with the token.
    let first = tokio::time::timeout(Duration::from_secs(20), got_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with("POST /ingest/alerts HTTP/1.1"), "{first}");
    assert!(
        first.contains("authorization: Bearer hook-token"),
        "{first}"
    );
    assert!(first.contains("\"id\":\"1\""), "{first}");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2 + 6,
        "two refusals, then one delivery per new alert"
    );

    // File: 6 documents over the live file and its rotations, oldest in .2; the repeat was not written.
    let read =
        |p: &str| std::fs::read_to_string(dir.path().join("out").join(p)).unwrap_or_default();
    let all: Vec<serde_json::Value> = [
        read("alerts.ndjson.2"),
        read("alerts.ndjson.1"),
        read("alerts.ndjson"),
    ]
    .concat()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(!read("alerts.ndjson.1").is_empty(), "rotated");
    assert!(!dir.path().join("out/alerts.ndjson.3").exists(), "keep = 2");
    let ids: Vec<&str> = all
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.ends_with(&["5", "6"]), "{ids:?}");
    assert!(
        std::fs::metadata(dir.path().join("out/alerts.ndjson"))
            .unwrap()
            .len()
            <= 3000
    );
    assert_eq!(metrics.output_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn the_embedded_default_is_valid_and_documents_every_default() {
    let parsed = Config::parse(
        sensor::config::DEFAULT_TOML,
        std::path::Path::new("default.toml"),
    )
    .unwrap();
    assert_eq!(
        parsed,
        Config::default(),
        "default.toml and Config::default() must agree"
    );
    assert!(parsed.kernel_enabled());
    assert!(!parsed.ingest_enabled());
    assert!(parsed.rules.shipped);
    assert_eq!(
        parsed.store_path(),
        std::path::Path::new("/var/lib/sensor/alerts.db")
    );
    assert_eq!(
        parsed.api.socket,
        std::path::Path::new("/run/sensor/control.sock")
    );
    // Every commented-out example in it is valid too once uncommented.
    let uncommented: String = sensor::config::DEFAULT_TOML
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::parse(&uncommented, std::path::Path::new("uncommented.toml")).unwrap();
    assert!(c.api.tcp.is_some() && c.outputs.file.is_some() && c.outputs.webhook.is_some());
    assert_eq!(c.sources.file.len(), 1);
}

#[test]
fn config_check_names_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let o = std::process::Command::new(tests::sensor_bin())
            .args(["config", "check"])
            .arg(&p)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, err) = check("[store]\nretention = \"1d\"\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown field `retention`") && err.contains("c.toml"),
        "{err}"
    );
    let (code, err) = check("[store]\nmax_age = \"3 fortnights\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown duration unit `fortnights`"), "{err}");
    let (code, err) = check("[outputs.syslog]\ntarget = \"tcp:1.2.3.4\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("[outputs.syslog] target"), "{err}");
    let (code, err) =
        check("[store]\nmax_size = \"2GiB\"\n[[sources.file]]\npath = \"/var/log/x.ndjson\"\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("ok") && err.contains("1 file source"), "{err}");

    let o = std::process::Command::new(tests::sensor_bin())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        sensor::config::DEFAULT_TOML
    );
}

#[test]
fn long_work_shows_a_progress_bar_on_a_terminal_and_nothing_in_a_pipe() {
    let harness = env!("CARGO_BIN_EXE_daemon_harness");
    // In a pipe: no bar, no escape codes.
    let o = std::process::Command::new(harness)
        .arg("--progress-demo")
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim(), "progress visible: false", "{err:?}");
    // On a terminal (a pty from util-linux `script`): the bar is drawn.
    let o = std::process::Command::new("script")
        .args(["-qec", &format!("{harness} --progress-demo"), "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains("progress visible: true"), "{tty:?}");
    assert!(
        tty.contains("replay demo.ndjson") && tty.contains("KiB"),
        "{tty:?}"
    );
}
