//! The CLI and control API against a fleet: two central nodes (real correlators on a real
//! nats-server, alerts in a real PostgreSQL) each serve the control API over TCP+TLS
//! (`sensor::api::serve_central`), and the real `sensor` binary talks to them: `alerts list` with
//! `--host`/`--source`, an ack through one node seen through the other, `alerts tail`, and
//! `sensor status` with partitions, owners, consumer lag and the bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use correlator::{parse_rule_file, Detector, RuleSet, RunnerConfig};
use fleet::bus::{Bus, Kind};
use fleet::central::{self, CentralConfig, CentralStats, DetectorFactory};
use fleet::edge::{encode_record, EdgePublisher};
use fleet::partition::{partition_key, partition_of};
use fleet::pg::FleetAlerts;
use fleet::testing::{NatsServer, PgServer};
use fleet::{FleetConfig, Role};
use serde_json::Value;
use tokio::sync::watch;

const PARTITIONS: u32 = 4;
const RULES: &str = r#"
[[rule]]
id = "evil"
name = "evil process"
query = 'process where process.name == "evil"'
"#;

fn detectors() -> DetectorFactory {
    Arc::new(|| {
        let mut set = RuleSet::new(RunnerConfig {
            lateness_ns: 1_000_000_000,
            ..RunnerConfig::default()
        });
        let rep = set.reload(parse_rule_file(RULES, "test").unwrap_or_default());
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        vec![Box::new(set) as Box<dyn Detector>]
    })
}

/// An `evil` process on `host`, reported by `module`.
fn evil(host: &str, module: &str, s: u32) -> Vec<u8> {
    let e = serde_json::json!({
        "@timestamp": format!("2026-12-07T01:00:{s:02}Z"),
        "host": {"name": host},
        "event": {"category": ["process"], "type": ["start"], "module": module},
        "process": {"name": "evil", "pid": 4242},
    });
    encode_record(
        Kind::Event,
        partition_of(partition_key(&e), PARTITIONS),
        e.to_string().as_bytes(),
    )
}

/// A central node: correlators (`run_node`) and the control API on TCP with TLS and a token.
struct Node {
    port: u16,
    stop_correlators: watch::Sender<bool>,
    stop_api: watch::Sender<bool>,
    stats: Arc<CentralStats>,
}

async fn start_node(cfg: &FleetConfig, id: &str, dir: &Path) -> Result<Node> {
    let bus = Bus::connect(cfg, id).await?;
    let stats = Arc::new(CentralStats::default());
    let (stop_correlators, rx) = watch::channel(false);
    let mut c = CentralConfig::new(id);
    c.lease_ttl = Duration::from_secs(3);
    c.ack_wait = Duration::from_secs(4);
    c.lateness_ns = 1_000_000_000;
    let node = central::run_node(
        bus.clone(),
        c,
        cfg.postgres.clone(),
        detectors(),
        stats.clone(),
        rx,
    );
    let name = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = node.await {
            panic!("node {name}: {e}");
        }
    });
    let port = tests::free_port();
    let d = dir.display();
    let text = format!(
        "state_dir = \"{d}/{id}-state\"\n[api]\nsocket = \"{d}/{id}.sock\"\n[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{d}/api.crt\"\nkey = \"{d}/api.key\"\ntoken_file = \"{d}/api.token\"\n"
    );
    let config = sensor::config::Config::parse(&text, Path::new("test"))?;
    let store = FleetAlerts::connect(&cfg.postgres)
        .await?
        .with_poll_interval(Duration::from_millis(200));
    let (stop_api, api_rx) = watch::channel(false);
    let api = sensor::api::CentralApi {
        store,
        bus,
        lease_ttl: Duration::from_secs(3),
        node_id: id.to_string(),
        nats_urls: cfg.nats.urls.clone(),
        stats: Some(stats.clone()),
        metrics: sensor::metrics::Metrics::new(),
        config_path: None,
        rules: vec!["evil".into()],
    };
    let set = sensor::api::serve_central(&config, api, api_rx)
        .await
        .map_err(anyhow::Error::msg)?;
    // The listeners live as long as the test; dropping the set would abort them.
    std::mem::forget(set);
    Ok(Node {
        port,
        stop_correlators,
        stop_api,
        stats,
    })
}

fn tls_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("api.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.join("api.token"), "fleet-api-token-for-tests\n").unwrap();
    for f in ["api.key", "api.token"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The `sensor` CLI against node `port` (`--api`, token and CA files), off the async workers.
async fn cli(dir: &Path, port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(args)
        .arg("--api")
        .arg(format!("https://localhost:{port}"))
        .arg("--token-file")
        .arg(dir.join("api.token"))
        .arg("--ca-file")
        .arg(dir.join("api.crt"))
        .env_remove("SENSOR_API_URL")
        .env_remove("SENSOR_CLIENT_CONFIG");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn ok(o: &Output) -> Result<String> {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(
        o.status.success(),
        "sensor failed ({}): {out}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(out)
}

fn json_lines(s: &str) -> Result<Vec<Value>> {
    s.lines()
        .map(|l| serde_json::from_str(l).context("a JSON line"))
        .collect()
}

async fn list(dir: &Path, port: u16, filters: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["alerts", "list", "--json"];
    args.extend_from_slice(filters);
    json_lines(&ok(&cli(dir, port, &args).await)?)
}

async fn wait_for_alerts(dir: &Path, port: u16, n: usize) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = list(dir, port, &[]).await?;
        if all.len() >= n {
            return Ok(all);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} alerts of {n} after 60 s: {all:?}", all.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn hosts_sources(alerts: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["host"].as_str().unwrap_or("-").to_string(),
                a["source"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

// One scenario in phases (list, triage, tail, status, lag, client config) over the same servers and
// nodes: starting nats-server, PostgreSQL and two nodes per phase would triple the test's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_against_two_central_nodes() -> Result<()> {
    let nats = NatsServer::start();
    let pg = PgServer::start();
    let cfg = FleetConfig {
        role: Role::Central,
        partitions: PARTITIONS,
        nats: nats.config(),
        postgres: pg.config(),
        ..FleetConfig::default()
    };
    let bus = Bus::connect(&cfg, "test-edge").await?;
    bus.ensure_streams(&cfg.nats, 1).await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    tls_files(dir);
    let a = start_node(&cfg, "central-a", dir).await?;
    let b = start_node(&cfg, "central-b", dir).await?;

    // An edge publishes from its real spool: three hosts, two sources.
    let spool = Arc::new(ingest::Spool::open(
        dir.join("edge-spool"),
        ingest::SpoolLimits::default(),
    )?);
    let publisher = EdgePublisher::new(bus.clone(), fleet::edge::edge_id(dir)?, 64);
    let (stop_edge, edge_rx) = watch::channel(false);
    let s = spool.clone();
    let edge = tokio::spawn(async move { publisher.run(&*s, edge_rx).await });
    spool.append_batch(&[
        evil("h1", "auditd", 1),
        evil("h2", "sensor", 2),
        evil("h3", "auditd", 3),
    ])?;

    // Listing through either node, with --host and --source.
    let all = wait_for_alerts(dir, a.port, 3).await?;
    ensure!(
        hosts_sources(&all)
            == [
                ("h1".into(), "auditd".into()),
                ("h2".into(), "sensor".into()),
                ("h3".into(), "auditd".into())
            ],
        "{all:?}"
    );
    let auditd = list(dir, b.port, &["--source", "auditd"]).await?;
    ensure!(
        hosts_sources(&auditd)
            == [
                ("h1".into(), "auditd".into()),
                ("h3".into(), "auditd".into())
            ],
        "{auditd:?}"
    );
    let h1 = list(dir, a.port, &["--host", "h1", "--source", "auditd"]).await?;
    ensure!(h1.len() == 1 && h1[0]["host"] == "h1", "{h1:?}");
    ensure!(list(dir, a.port, &["--host", "h2", "--source", "auditd"])
        .await?
        .is_empty());
    let table = ok(&cli(dir, b.port, &["alerts", "list", "--host", "h2"]).await)?;
    let row = table
        .lines()
        .find(|l| l.contains("evil process"))
        .context(table.clone())?;
    ensure!(
        table.lines().next().is_some_and(|h| h.contains("SOURCE")) && row.contains(" sensor "),
        "{table}"
    );

    // An ack through node a is the fleet's: node b shows it, with its history.
    let id = h1[0]["id"].as_i64().context("id")?.to_string();
    let acked = ok(&cli(dir, a.port, &["alerts", "ack", &id, "-r", "looking at it"]).await)?;
    ensure!(acked.contains("is now acknowledged"), "{acked}");
    let shown: Value =
        serde_json::from_str(&ok(
            &cli(dir, b.port, &["alerts", "show", &id, "--json"]).await
        )?)?;
    ensure!(shown["status"] == "acknowledged", "{shown}");
    let history = shown["history"].as_array().context("history")?;
    ensure!(
        history.len() == 2
            && history[1]["reason"] == "looking at it"
            && history[1]["actor"]
                .as_str()
                .unwrap_or("")
                .contains("token holder"),
        "{shown}"
    );
    ensure!(
        shown["evidence"][0]["event"]["module"] == "auditd",
        "{shown}"
    );
    let text = ok(&cli(dir, b.port, &["alerts", "show", &id]).await)?;
    ensure!(
        text.contains("source      auditd") && text.contains("[acknowledged]"),
        "{text}"
    );
    let acked_b = list(dir, b.port, &["--status", "acknowledged"]).await?;
    ensure!(
        acked_b.len() == 1 && acked_b[0]["id"] == h1[0]["id"],
        "{acked_b:?}"
    );
    for verb in ["close", "suppress"] {
        let o = cli(dir, b.port, &["alerts", verb, &id, "-r", verb]).await;
        ok(&o)?;
    }
    let shown: Value =
        serde_json::from_str(&ok(
            &cli(dir, a.port, &["alerts", "show", &id, "--json"]).await
        )?)?;
    ensure!(
        shown["status"] == "suppressed" && shown["history"].as_array().map(Vec::len) == Some(4),
        "{shown}"
    );
    let missing = cli(dir, a.port, &["alerts", "ack", "987654", "-r", "x"]).await;
    ensure!(
        !missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );

    // `alerts tail` through node b sees an alert recorded by whichever node owns h4's partition.
    let mut child = Command::new(tests::sensor_bin())
        .args(["alerts", "tail", "--api"])
        .arg(format!("https://localhost:{}", b.port))
        .arg("--token-file")
        .arg(dir.join("api.token"))
        .arg("--ca-file")
        .arg(dir.join("api.crt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let recv = |rx: std::sync::mpsc::Receiver<String>, secs: u64| {
        tokio::task::spawn_blocking(move || {
            let line = rx.recv_timeout(Duration::from_secs(secs));
            (rx, line)
        })
    };
    let (rx, header) = recv(rx, 20).await?;
    ensure!(
        header.as_deref().is_ok_and(|h| h.contains("SOURCE")),
        "{header:?}"
    );
    spool.append_batch(&[evil("h4", "windows", 4)])?;
    let (_rx, line) = recv(rx, 30).await?;
    let line = line.context("no alert from `alerts tail` within 30 s")?;
    ensure!(line.contains("h4") && line.contains("windows"), "{line}");
    child.kill()?;
    child.wait()?;

    // Status: the bus, both nodes, every partition with its owner and lag.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let v: Value = serde_json::from_str(&ok(&cli(dir, a.port, &["status", "--json"]).await)?)?;
        let f = &v["fleet"];
        // Settled: nothing pending, every partition owned, and split 2/2 (a node that starts
        // first takes all four and hands two back at its next lease round).
        let settled = f["pending"] == 0
            && f["partitions"].as_array().is_some_and(|p| {
                p.iter()
                    .all(|p| p["ack_pending"] == 0 && p["owner"].is_string())
                    && p.iter().filter(|p| p["owner"] == "central-a").count() == 2
            });
        if settled {
            break v;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "status never settled: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let f = &status["fleet"];
    ensure!(f["node"] == "central-a" && f["role"] == "central", "{f}");
    ensure!(
        f["bus"]["state"] == "connected" && f["bus"]["stream_messages"] == 4,
        "{f}"
    );
    ensure!(
        f["nodes"] == serde_json::json!(["central-a", "central-b"]),
        "{f}"
    );
    let parts = f["partitions"].as_array().context("partitions")?;
    ensure!(parts.len() == PARTITIONS as usize, "{f}");
    let owners: std::collections::BTreeMap<String, usize> =
        parts.iter().fold(Default::default(), |mut m, p| {
            *m.entry(p["owner"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
            m
        });
    ensure!(
        owners.get("central-a") == Some(&2) && owners.get("central-b") == Some(&2),
        "{owners:?}"
    );
    ensure!(
        parts
            .iter()
            .filter(|p| p["ack_floor"].as_u64().unwrap_or(0) > 0)
            .count()
            >= 1,
        "{f}"
    );
    ensure!(
        status["store"]["engine"] == "postgresql" && status["store"]["alerts"] == 4,
        "{status}"
    );
    let events = a.stats.events.load(std::sync::atomic::Ordering::Relaxed)
        + b.stats.events.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(events == 4, "{events} events taken by the two nodes");

    // Lag: with both nodes' correlators stopped (leases handed back), new events wait in their
    // partitions, and the status says where.
    a.stop_correlators.send(true)?;
    b.stop_correlators.send(true)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = serde_json::from_str(&ok(&cli(dir, b.port, &["status", "--json"]).await)?)?;
        let free = v["fleet"]["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["owner"].is_null()));
        if free && v["fleet"]["nodes"] == serde_json::json!([]) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes never stopped: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let batch: Vec<Vec<u8>> = (0..6)
        .map(|i| evil(&format!("late-{i}"), "sensor", 10 + i))
        .collect();
    let mut per_partition = [0u64; PARTITIONS as usize];
    for i in 0..6u32 {
        let e = serde_json::json!({"host": {"name": format!("late-{i}")}});
        per_partition[partition_of(partition_key(&e), PARTITIONS) as usize] += 1;
    }
    // The edge packs a partition's events of one journal read into one bus message (batch): the
    // lag is counted in messages, one per partition that got events.
    let per_partition = per_partition.map(|n| u64::from(n > 0));
    let messages: u64 = per_partition.iter().sum();
    spool.append_batch(&batch)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let f = loop {
        let v: Value = serde_json::from_str(&ok(&cli(dir, b.port, &["status", "--json"]).await)?)?;
        let f = v["fleet"].clone();
        if f["pending"] == messages {
            break f;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "lag never showed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for p in f["partitions"].as_array().context("partitions")? {
        let n = usize::try_from(p["partition"].as_u64().context("partition")?)?;
        ensure!(
            p["pending"] == per_partition[n],
            "partition {n}: {p} (expected {})",
            per_partition[n]
        );
    }
    let text = ok(&cli(dir, b.port, &["status"]).await)?;
    eprintln!("{text}");
    ensure!(
        text.contains("central node central-b; bus connected")
            && text.contains("alert store:    postgresql")
            && text.contains(&format!("{messages} message(s) pending"))
            && text.contains("(free)"),
        "{text}"
    );

    // A client config file names the node instead of the options.
    let client = dir.join("client.toml");
    std::fs::write(
        &client,
        format!(
            "api = \"https://localhost:{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
            a.port,
            dir.join("api.token").display(),
            dir.join("api.crt").display()
        ),
    )?;
    let o = tokio::task::spawn_blocking({
        let client = client.clone();
        move || {
            Command::new(tests::sensor_bin())
                .args([
                    "alerts",
                    "list",
                    "--json",
                    "--source",
                    "windows",
                    "--client-config",
                ])
                .arg(&client)
                .output()
                .unwrap()
        }
    })
    .await?;
    let w = json_lines(&ok(&o)?)?;
    ensure!(
        hosts_sources(&w) == [("h4".into(), "windows".into())],
        "{w:?}"
    );
    std::fs::write(&client, "api = \"https://localhost:1\"\nbogus = 1\n")?;
    let o = tokio::task::spawn_blocking(move || {
        Command::new(tests::sensor_bin())
            .args(["alerts", "list", "--client-config"])
            .arg(&client)
            .output()
            .unwrap()
    })
    .await?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains("client.toml") && err.contains("bogus"),
        "{err}"
    );

    a.stop_api.send(true)?;
    b.stop_api.send(true)?;
    stop_edge.send(true)?;
    edge.await??;
    Ok(())
}
