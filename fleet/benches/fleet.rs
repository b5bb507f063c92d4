//! Fleet benchmarks, side by side in one run, against real nats-server and PostgreSQL started as the
//! tests start them (`fleet::testing`). CPU figures are thread CPU time (getrusage RUSAGE_THREAD:
//! user + system) of the thread that runs the measured side, so they hold on a busy machine; the
//! latency figure is wall clock and says the load it ran under.
//!
//! 1. Edge: CPU per event of appending events to the edge journal (the pipeline without
//!    publishing) and of the publisher draining them to JetStream (what publishing adds).
//! 2. Central: events per CPU-second of one correlator taking the events from the bus (fetch,
//!    decode, detectors, alerts and checkpoints in PostgreSQL, acks) against the same rules fed
//!    from a file of the same events.
//! 3. Split: the share of events each of two correlators carries, from the partition hash over
//!    realistic host counts and partition counts, and measured live in 4.
//! 4. Latency: event-to-alert p50/p99 (publish time to the alert row's creation in PostgreSQL) at a
//!    paced publish rate (default 50,000 events/s) with two correlators.
//!
//! Run: `cargo bench -p fleet --bench fleet` (FLEET_BENCH_EVENTS, FLEET_BENCH_RATE,
//! FLEET_BENCH_SECS, FLEET_BENCH_PARTITIONS change the sizes; FLEET_BENCH_ONLY=latency runs 4 alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use correlator::{parse_rule_file, Detector, Event, RuleSet, RunnerConfig};
use fleet::batch::BatchWriter;
use fleet::bus::{Bus, Kind};
use fleet::central::{self, CentralConfig, CentralStats, DetectorFactory};
use fleet::edge::{encode_record, EdgePublisher, Journal};
use fleet::partition::{partition_key, partition_of};
use fleet::testing::{NatsServer, PgServer};
use fleet::{FleetConfig, Role};

const LATENESS_NS: i64 = 2_000_000_000;
const RULES: &str = r#"
[[rule]]
id = "curl-then-c2"
name = "curl then C2 port"
query = 'sequence by host.name with maxspan=30s [process where process.name == "curl"] [network where destination.port == 4444]'
[[rule]]
id = "shell-from-web"
name = "shell from a web server"
query = 'sequence by host.name with maxspan=10s [process where process.name in ("nginx", "httpd")] [process where process.name in ("sh", "bash")]'
[[rule]]
id = "evil"
name = "evil process"
query = 'process where process.name == "evil"'
[[rule]]
id = "tmp-exec"
name = "execution from /tmp"
query = 'process where process.executable : "/tmp/*" and event.type == "start"'
[[rule]]
id = "ssh-key"
name = "ssh key read"
query = 'file where file.path : "*/.ssh/id_*" and process.name != "ssh"'
[[rule]]
id = "nc-listen"
name = "netcat"
query = 'process where process.name in ("nc", "ncat", "socat") and process.args : "-l*"'
"#;

fn thread_cpu_ns() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes into the struct we own (zeroed before).
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    // SAFETY: initialised by getrusage (zeroed before).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_usec).unwrap_or(0) * 1_000
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn env_or(name: &str, d: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn wall_ns() -> i64 {
    fleet::wall_ns()
}

/// A process-start event of a realistic size (~700 bytes of ECS JSON).
fn event(i: u64, hosts: u64, name: &str, sent_ns: i64) -> serde_json::Value {
    // An alerting event goes to a host of its own turn, so that alerts do not fold into one.
    let h = if name == "evil" {
        (i / 1_000) % hosts
    } else {
        i % hosts
    };
    let s = 1_000 + i / 1_000;
    serde_json::json!({
        "@timestamp": format!("2026-12-07T{:02}:{:02}:{:02}.{:03}Z", (s / 3600) % 24, (s / 60) % 60, s % 60, i % 1000),
        "host": {"name": format!("host-{h:05}"), "id": format!("{:032x}", h.wrapping_mul(0x9e37_79b9_7f4a_7c15)), "os": {"type": "linux"}},
        "agent": {"type": "sensor", "version": "0.0.0"},
        "event": {"category": ["process"], "type": ["start"], "kind": "event", "module": "sensor", "id": i.to_string()},
        "process": {"name": name, "pid": 1000 + (i % 30_000), "executable": format!("/usr/bin/{name}"),
                    "args": [name, "--flag", "value"], "command_line": format!("{name} --flag value"),
                    "parent": {"pid": 999, "name": "bash", "executable": "/usr/bin/bash"}},
        "user": {"name": format!("user{}", i % 50), "id": (1000 + i % 50).to_string()},
        "bench": {"sent_ns": sent_ns},
    })
}

fn rules() -> Vec<Box<dyn Detector>> {
    let mut set = RuleSet::new(RunnerConfig {
        lateness_ns: LATENESS_NS,
        ..RunnerConfig::default()
    });
    let rep = set.reload(parse_rule_file(RULES, "bench").expect("rules"));
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    vec![Box::new(set)]
}

fn names(i: u64) -> &'static str {
    // 1 in 1,000 alerts; some sequence starts; the rest ordinary.
    match i % 1_000 {
        0 => "evil",
        1..=20 => "curl",
        21..=40 => "nginx",
        _ => ["ls", "cat", "grep", "sed", "awk", "python3"][usize::try_from(i % 6).unwrap_or(0)],
    }
}

fn servers(partitions: u32) -> (NatsServer, PgServer, FleetConfig) {
    let nats = NatsServer::start();
    let pg = PgServer::start();
    let cfg = FleetConfig {
        role: Role::Central,
        partitions,
        nats: nats.config(),
        postgres: pg.config(),
        ..FleetConfig::default()
    };
    (nats, pg, cfg)
}

/// A runtime on a thread of its own, so that its thread CPU is the measured side's alone.
fn on_thread<T: Send + 'static>(
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        f(&rt)
    })
    .join()
    .expect("bench thread")
}

struct EdgeFigures {
    append_ns: f64,
    publish_ns: f64,
}

fn edge(cfg: &FleetConfig, n: u64, hosts: u64, window: usize) -> Result<EdgeFigures> {
    let dir = tempfile::tempdir()?;
    let spool = Arc::new(ingest::Spool::open(
        dir.path().join("journal"),
        ingest::SpoolLimits {
            max_bytes: 8 << 30,
            ..ingest::SpoolLimits::default()
        },
    )?);
    let evs: Vec<serde_json::Value> = (0..n).map(|i| event(i, hosts, names(i), 0)).collect();
    let parts = cfg.partitions;
    let s = spool.clone();
    // The pipeline without publishing: serialise each event and append it to the journal.
    let append_ns = std::thread::spawn(move || {
        let t0 = thread_cpu_ns();
        for chunk in evs.chunks(256) {
            let recs: Vec<Vec<u8>> = chunk
                .iter()
                .map(|e| {
                    encode_record(
                        Kind::Event,
                        partition_of(partition_key(e), parts),
                        e.to_string().as_bytes(),
                    )
                })
                .collect();
            s.append_batch(&recs).expect("append");
        }
        (thread_cpu_ns() - t0) as f64 / n as f64
    })
    .join()
    .expect("append thread");
    // What publishing adds: the publisher draining the journal (read, publish, acknowledgements,
    // commit), on its own thread with the NATS client's tasks.
    let cfg = cfg.clone();
    let id = fleet::edge::edge_id(dir.path())?;
    let publish_ns = on_thread(move |rt| {
        rt.block_on(async move {
            let bus = Bus::connect(&cfg, "bench-edge").await.expect("bus");
            bus.ensure_streams(&cfg.nats, 1).await.expect("streams");
            let publisher = EdgePublisher::new(bus, id, window);
            let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let t0 = thread_cpu_ns();
            let j = spool.clone();
            let task = tokio::spawn(async move { publisher.run(&*j, stop_rx).await });
            while Journal::committed(&*spool) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cpu = thread_cpu_ns() - t0;
            task.abort();
            cpu as f64 / n as f64
        })
    });
    drop(dir);
    Ok(EdgeFigures {
        append_ns,
        publish_ns,
    })
}

/// Events per CPU-second of the rules fed from a file of `n` events (read, parse, decode, detect).
fn file_fed(n: u64, hosts: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..n {
        writeln!(f, "{}", event(i, hosts, names(i), 0))?;
    }
    f.flush()?;
    drop(f);
    let rate = std::thread::spawn(move || {
        let mut dets = rules();
        let mut alerts = Vec::new();
        let t0 = thread_cpu_ns();
        let file = std::io::BufReader::new(std::fs::File::open(&path).expect("events file"));
        let mut max_ts = i64::MIN;
        for (i, line) in file.lines().enumerate() {
            let line = line.expect("line");
            // The same decoder the central uses on a frame (the streaming fast path).
            let ev = Event::from_json_str(&line).expect("event");
            max_ts = max_ts.max(ev.timestamp_ns);
            for d in &mut dets {
                d.on_event(&ev, &mut alerts);
            }
            if i % 256 == 255 {
                for d in &mut dets {
                    d.on_watermark(max_ts - LATENESS_NS, &mut alerts);
                }
            }
        }
        n as f64 / ((thread_cpu_ns() - t0) as f64 / 1e9)
    })
    .join()
    .expect("file thread");
    Ok(rate)
}

fn factory() -> DetectorFactory {
    Arc::new(rules)
}

/// Events per CPU-second of one central node taking the `n` events already in the stream.
fn bus_fed(cfg: &FleetConfig, n: u64) -> (f64, u64, u64) {
    let cfg = cfg.clone();
    on_thread(move |rt| {
        rt.block_on(async move {
            let bus = Bus::connect(&cfg, "bench-central").await.expect("bus");
            let stats = Arc::new(CentralStats::default());
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let t0 = thread_cpu_ns();
            let s = stats.clone();
            let node = tokio::spawn(central::run_node(
                bus,
                CentralConfig {
                    lateness_ns: LATENESS_NS,
                    ..CentralConfig::new("bench-central")
                },
                cfg.postgres.clone(),
                factory(),
                s,
                stop_rx,
            ));
            while stats.events.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cpu = thread_cpu_ns() - t0;
            let _ = stop_tx.send(true);
            let _ = node.await;
            (
                n as f64 / (cpu as f64 / 1e9),
                stats.checkpoints.load(Ordering::Relaxed),
                stats.checkpoint_bytes.load(Ordering::Relaxed),
            )
        })
    })
}

/// CPU per event of only taking the `n` events' messages from the bus (pull consumer, fetches of
/// 256 messages, no decode, no acknowledgement): the floor under the central's bus-fed rate.
fn bus_receive_only(cfg: &FleetConfig, n: u64) -> f64 {
    use futures_util::StreamExt;
    let cfg = cfg.clone();
    on_thread(move |rt| {
        rt.block_on(async move {
            let bus = Bus::connect(&cfg, "bench-raw").await.expect("bus");
            let stream = bus
                .js
                .get_stream(bus.names.stream(Kind::Event))
                .await
                .expect("stream");
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    "bench-raw",
                    async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("bench-raw".into()),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                        ..Default::default()
                    },
                )
                .await
                .expect("consumer");
            let t0 = thread_cpu_ns();
            let mut got = 0u64;
            let mut bytes = 0usize;
            while got < n {
                let mut b = consumer
                    .fetch()
                    .max_messages(256)
                    .messages()
                    .await
                    .expect("fetch");
                while let Some(Ok(m)) = b.next().await {
                    bytes += m.payload.len();
                    got += m.payload.iter().filter(|c| **c == b'\n').count() as u64;
                }
            }
            std::hint::black_box(bytes);
            (thread_cpu_ns() - t0) as f64 / n as f64
        })
    })
}

/// Shares of events of two correlators splitting `p` partitions, over `hosts` hosts of equal
/// rate: (lowest-half split, worst over 200 other balanced assignments), as fractions for the first.
fn split(hosts: u64, p: u32) -> (f64, f64) {
    let mut per = vec![0u64; p as usize];
    for h in 0..hosts {
        let e = serde_json::json!({"host": {"id": format!("{:032x}", h.wrapping_mul(0x9e37_79b9_7f4a_7c15)), "name": format!("host-{h:05}")}});
        per[partition_of(partition_key(&e), p) as usize] += 1;
    }
    let share = |owned: &[bool]| {
        per.iter()
            .zip(owned)
            .filter(|(_, o)| **o)
            .map(|(c, _)| *c)
            .sum::<u64>() as f64
            / hosts as f64
    };
    let half: Vec<bool> = (0..p).map(|i| i < p / 2).collect();
    let mut worst: f64 = 0.5;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        let mut idx: Vec<u32> = (0..p).collect();
        for i in (1..idx.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            idx.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap_or(0));
        }
        let owned: Vec<bool> = (0..p)
            .map(|i| idx.iter().position(|j| *j == i).unwrap_or(0) < (p / 2) as usize)
            .collect();
        let s = share(&owned);
        if (s - 0.5).abs() > (worst - 0.5).abs() {
            worst = s;
        }
    }
    (share(&half), worst)
}

/// A central node on its own runtime thread (for the latency run).
fn node(
    cfg: FleetConfig,
    id: &'static str,
) -> (
    Arc<CentralStats>,
    tokio::sync::watch::Sender<bool>,
    std::thread::JoinHandle<()>,
) {
    let stats = Arc::new(CentralStats::default());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let s = stats.clone();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let bus = Bus::connect(&cfg, id).await.expect("bus");
            let c = CentralConfig {
                lateness_ns: LATENESS_NS,
                ..CentralConfig::new(id)
            };
            central::run_node(bus, c, cfg.postgres.clone(), factory(), s, rx)
                .await
                .expect("node");
        });
    });
    (stats, tx, t)
}

fn latency(rate: u64, secs: u64, partitions: u32, hosts: u64) -> Result<()> {
    let (_nats, pg, cfg) = servers(partitions);
    // The streams exist before the nodes start (as on a deployed fleet): a worker whose stream is
    // missing fails and its partition waits for the next lease round.
    let c1 = cfg.clone();
    on_thread(move |rt| {
        rt.block_on(async move {
            let bus = Bus::connect(&c1, "bench-setup").await.expect("bus");
            bus.ensure_streams(&c1.nats, 1).await.expect("streams");
        });
    });
    let (sa, stop_a, ta) = node(cfg.clone(), "central-a");
    let (sb, stop_b, tb) = node(cfg.clone(), "central-b");
    let owned = |s: &CentralStats| s.owned.lock().map(|o| o.len()).unwrap_or(0);
    let t = Instant::now();
    while owned(&sa) + owned(&sb) < partitions as usize || owned(&sa) != owned(&sb) {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "nodes did not split the partitions"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let load0 = loadavg();
    let total = rate * secs;
    let c2 = cfg.clone();
    let (sent, publish_wall) = on_thread(move |rt| {
        rt.block_on(async move {
            let bus = Bus::connect(&c2, "bench-load").await.expect("bus");
            bus.ensure_streams(&c2.nats, 1).await.expect("streams");
            // Paced: one burst every 10 ms, packed as an edge packs its journal (one batch per
            // partition per burst, source "lat", sequence = event number; the edge's linger is
            // 10 ms too); an event's `bench.sent_ns` is when its burst left.
            let per_tick = rate / 100;
            let t0 = tokio::time::Instant::now();
            let mut acks = Vec::new();
            let mut i = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while i < total {
                tick.tick().await;
                let now = wall_ns();
                let mut parts: std::collections::BTreeMap<u32, (u64, BatchWriter)> =
                    std::collections::BTreeMap::new();
                for _ in 0..per_tick {
                    let e = event(i, hosts, names(i), now);
                    let p = partition_of(partition_key(&e), c2.partitions);
                    let (_, w) = parts.entry(p).or_insert_with(|| (i, BatchWriter::new()));
                    w.push_seq(i, e.to_string().as_bytes());
                    i += 1;
                }
                for (p, (first, w)) in parts {
                    let h = fleet::batch::headers(&format!("lat:{p}:{first}"), Some("lat"));
                    acks.push(
                        bus.js
                            .publish_with_headers(
                                bus.names.subject(Kind::Event, p),
                                h,
                                w.into_payload().into(),
                            )
                            .await
                            .expect("publish"),
                    );
                }
                if acks.len() >= 64 {
                    for a in acks.drain(..) {
                        a.await.expect("ack");
                    }
                }
            }
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
            (i, t0.elapsed())
        })
    });
    let t = Instant::now();
    let lag = |s: &CentralStats| s.events.load(Ordering::Relaxed);
    let behind_at_end = sent.saturating_sub(lag(&sa) + lag(&sb));
    while sa.events.load(Ordering::Relaxed) + sb.events.load(Ordering::Relaxed) < sent {
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "correlators did not take every event"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let drain = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load1 = loadavg();
    let out = pg.psql(
        "sensor",
        "SELECT a.created_ns - (e.event->'bench'->>'sent_ns')::bigint FROM alerts a JOIN evidence e ON e.alert_id = a.id AND e.seq = 0 WHERE a.rule_id = 'evil' ORDER BY (e.event->'bench'->>'sent_ns')::bigint",
    );
    let mut lat: Vec<i64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    // In send order: the median latency of the first and of the second half of the run (a
    // correlator falling behind shows as a growing latency).
    let median = |v: &[i64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / 1e6
    };
    let (h1, h2) = (median(&lat[..lat.len() / 2]), median(&lat[lat.len() / 2..]));
    lat.sort_unstable();
    ensure!(!lat.is_empty(), "no alerts");
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)] as f64 / 1e6;
    let (ea, eb) = (
        sa.events.load(Ordering::Relaxed),
        sb.events.load(Ordering::Relaxed),
    );
    println!(
        "\n4. event-to-alert latency, two correlators, {partitions} partitions, {hosts} hosts"
    );
    println!(
        "   published {sent} events in {:.2} s ({:.0} events/s offered, target rate {rate})",
        publish_wall.as_secs_f64(),
        sent as f64 / publish_wall.as_secs_f64()
    );
    println!(
        "   alerts {} ; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 250 ms)",
        lat.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    println!(
        "   when the publisher finished: {behind_at_end} events not yet taken, taken {:.2} s later",
        drain.as_secs_f64()
    );
    println!("   median latency of the alerts of the first / second half of the run: {h1:.1} / {h2:.1} ms");
    println!(
        "   live split: central-a {ea} events ({:.1}%), central-b {eb} ({:.1}%)",
        100.0 * ea as f64 / (ea + eb) as f64,
        100.0 * eb as f64 / (ea + eb) as f64
    );
    println!("   load average before/after: {load0} / {load1}");
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
    let _ = ta.join();
    let _ = tb.join();
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n = env_or("FLEET_BENCH_EVENTS", 200_000);
    let rate = env_or("FLEET_BENCH_RATE", 50_000);
    let secs = env_or("FLEET_BENCH_SECS", 10);
    let partitions = u32::try_from(env_or("FLEET_BENCH_PARTITIONS", 16)).unwrap_or(16);
    let hosts = 1_000;
    println!(
        "fleet bench: {n} events, {hosts} hosts, {partitions} partitions; load average {}",
        loadavg()
    );

    // FLEET_BENCH_LOG=<filter> (e.g. `fleet=info`): the nodes' logs on stderr (leases taken and
    // released, fetch failures), to see what a latency outlier was.
    if let Ok(filter) = std::env::var("FLEET_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if std::env::var("FLEET_BENCH_ONLY").as_deref() == Ok("latency") {
        latency(rate, secs, partitions, hosts)?;
        println!("\nload average at the end: {}", loadavg());
        return Ok(());
    }
    let (_nats, _pg, cfg) = servers(partitions);
    let e = edge(&cfg, n, hosts, cfg.nats.publish_window)?;
    println!("\n1. edge CPU per event (thread CPU time / events)");
    println!(
        "   journal append (the pipeline without publishing): {:.2} us",
        e.append_ns / 1e3
    );
    println!(
        "   publisher (what publishing adds), window {}: {:.2} us (target <= 1 us)",
        cfg.nats.publish_window,
        e.publish_ns / 1e3
    );

    let file = file_fed(n, hosts)?;
    let (bus, ckpts, ckpt_bytes) = bus_fed(&cfg, n);
    let raw = bus_receive_only(&cfg, n);
    println!("\n2. central correlator, events per CPU-second (same {n} events, same rules)");
    println!("   fed from a file: {file:.0} /s");
    println!("   taken from the bus (fetch, decode, detect, record, checkpoint, ack): {bus:.0} /s = {:.1}% of the file-fed rate (target >= 70%)", 100.0 * bus / file);
    println!("   checkpoints written {ckpts}, last state {ckpt_bytes} bytes");
    println!("   per event: file-fed {:.2} us, bus-fed {:.2} us; only receiving the messages (no decode, no ack): {:.2} us", 1e6 / file, 1e6 / bus, raw / 1e3);

    println!("\n3. share of events of the first of two correlators (hosts of equal rate)");
    println!("   hosts  partitions  lowest-half split  worst of 200 balanced splits");
    for h in [100u64, 1_000, 10_000] {
        for p in [2u32, 4, 16, 64, 256] {
            let (a, w) = split(h, p);
            println!(
                "   {h:>6} {p:>10} {:>17.1}% {:>27.1}%",
                100.0 * a,
                100.0 * w
            );
        }
    }
    drop(_nats);
    drop(_pg);
    latency(rate, secs, partitions, hosts)?;
    println!("\nload average at the end: {}", loadavg());
    Ok(())
}
