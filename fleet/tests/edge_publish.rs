//! The edge publisher against a real nats-server with JetStream: every record of the real ingest
//! spool arrives in the stream exactly once, across a bus outage in the middle of the stream and
//! across an edge that dies between publishing and committing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fleet::bus::{Bus, Kind};
use fleet::edge::{encode_record, EdgePublisher, Journal, PublishStats};
use fleet::partition::{partition_key, partition_of};
use fleet::testing::NatsServer;
use fleet::{FleetConfig, Role};
use ingest::{Spool, SpoolLimits};

mod common;
use common::SpoolJournal;

const PARTITIONS: u32 = 4;

fn event(i: u64) -> (Vec<u8>, u32) {
    let host = format!("host-{}", i % 10);
    let ev = serde_json::json!({
        "@timestamp": "2026-12-07T00:00:00Z",
        "host": {"name": host},
        "event": {"kind": "event", "category": ["process"]},
        "process": {"pid": i, "executable": "/bin/true"},
        "n": i,
    });
    let p = partition_of(partition_key(&ev), PARTITIONS);
    (encode_record(Kind::Event, p, ev.to_string().as_bytes()), p)
}

fn append(spool: &Spool, range: std::ops::Range<u64>) -> Result<()> {
    let recs: Vec<Vec<u8>> = range.map(|i| event(i).0).collect();
    for chunk in recs.chunks(50) {
        spool.append_batch(chunk)?;
    }
    Ok(())
}

fn config(nats: &NatsServer) -> FleetConfig {
    FleetConfig {
        role: Role::Edge,
        partitions: PARTITIONS,
        nats: fleet::NatsConfig {
            // A short ack timeout is not configurable here: the client's default (5 s) applies.
            ..nats.config()
        },
        ..FleetConfig::default()
    }
}

/// Reads the whole events stream as the central would: every frame of every batch, in order, and
/// of an edge's frames in a partition only those above its high-water mark there (a batch
/// republished with other boundaries repeats frames, which the central skips). Returns the kept
/// frames (fleet id, subject, payload `n`) and how many were skipped as replays.
async fn read_stream(bus: &Bus) -> Result<(Vec<(String, String, u64)>, usize)> {
    let mut stream = bus.js.get_stream(bus.names.stream(Kind::Event)).await?;
    let info = stream.info().await?.clone();
    let mut out = Vec::new();
    let mut hwm: std::collections::HashMap<(String, String), u64> = Default::default();
    let mut replayed = 0;
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let m = stream.get_raw_message(seq).await?;
        ensure!(
            m.headers
                .get(fleet::batch::VERSION_HEADER)
                .map(|v| v.as_str())
                == Some(fleet::batch::VERSION),
            "message {seq} without {}",
            fleet::batch::VERSION_HEADER
        );
        let source = m
            .headers
            .get(fleet::batch::SOURCE_HEADER)
            .map(|v| v.as_str().to_string())
            .context("message without Sensor-Source")?;
        for f in fleet::batch::frames(&m.payload, Some(&source)) {
            let f = f?;
            let fseq = f.seq.context("frame without a sequence")?;
            let mark = hwm
                .entry((m.subject.to_string(), source.clone()))
                .or_insert(0);
            if fseq <= *mark {
                replayed += 1;
                continue;
            }
            *mark = fseq;
            let v: serde_json::Value = serde_json::from_str(f.json)?;
            let n = v["n"].as_u64().context("payload without n")?;
            out.push((format!("{source}:{fseq}"), m.subject.to_string(), n));
        }
    }
    Ok((out, replayed))
}

async fn wait_committed(journal: &SpoolJournal, upto: u64, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while journal.committed() < upto {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "journal committed {} of {upto} within {within:?}",
                journal.committed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn check_exactly_once(
    msgs: &[(String, String, u64)],
    edge: &str,
    n: u64,
    prefix: &str,
) -> Result<()> {
    ensure!(
        msgs.len() as u64 == n,
        "{} events in the stream past the high-water marks, expected {n}",
        msgs.len()
    );
    let ids: BTreeSet<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
    ensure!(
        ids.len() as u64 == n,
        "{} distinct fleet ids for {n} events",
        ids.len()
    );
    let ns: BTreeSet<u64> = msgs.iter().map(|m| m.2).collect();
    ensure!(
        ns == (0..n).collect::<BTreeSet<_>>(),
        "events missing or doubled"
    );
    for (id, subject, i) in msgs {
        // Journal sequence numbers start at 1: event i is record i + 1.
        ensure!(
            *id == format!("{edge}:{}", i + 1),
            "event {i} has fleet id {id}"
        );
        let (_, p) = event(*i);
        ensure!(
            *subject == format!("{prefix}.events.{p}"),
            "event {i} on {subject}, expected partition {p}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_across_a_bus_outage() -> Result<()> {
    let outage = std::env::var("FLEET_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let mut nats = NatsServer::start();
    let cfg = config(&nats);
    let bus = Bus::connect(&cfg, "edge-test").await?;
    bus.ensure_streams(&cfg.nats, 1).await?;
    let dir = tempfile::tempdir()?;
    let journal = Arc::new(SpoolJournal {
        spool: Spool::open(dir.path().join("spool"), SpoolLimits::default())?,
        commit_enabled: AtomicBool::new(true),
    });
    let edge = fleet::edge::edge_id(dir.path())?;
    let publisher = EdgePublisher::new(bus.clone(), edge.clone(), cfg.nats.publish_window);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let j = journal.clone();
    let task = tokio::spawn(async move { publisher.run(&*j, stop_rx).await });

    // Before: published as they come.
    append(&journal.spool, 0..1000)?;
    wait_committed(&journal, 1000, Duration::from_secs(30)).await?;
    // The bus goes away mid-stream; the edge keeps taking events into its journal.
    tokio::task::block_in_place(|| nats.stop());
    append(&journal.spool, 1000..1500)?;
    tokio::time::sleep(Duration::from_secs(outage / 2)).await;
    append(&journal.spool, 1500..2000)?;
    tokio::time::sleep(Duration::from_secs(outage - outage / 2)).await;
    ensure!(
        journal.committed() == 1000,
        "committed {} while the bus was down",
        journal.committed()
    );
    ensure!(journal.spool.durable() == 2000);
    // Back: the journal catches up, and new events follow.
    tokio::task::block_in_place(|| nats.start_again());
    append(&journal.spool, 2000..2500)?;
    wait_committed(&journal, 2500, Duration::from_secs(60)).await?;
    stop_tx.send(true)?;
    let stats: PublishStats = task.await??;
    eprintln!("publisher: {stats:?}");
    ensure!(
        stats.retries > 0,
        "no retry recorded across the outage: {stats:?}"
    );
    ensure!(stats.malformed == 0);
    let (msgs, replayed) = read_stream(&bus).await?;
    eprintln!("replayed frames in the stream (skipped centrally): {replayed}");
    check_exactly_once(&msgs, &edge, 2500, "sensor")
        .with_context(|| format!("nats log:\n{}", nats.log()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_journal_reaches_the_central_once() -> Result<()> {
    let nats = NatsServer::start();
    let cfg = config(&nats);
    let bus = Bus::connect(&cfg, "edge-test").await?;
    bus.ensure_streams(&cfg.nats, 1).await?;
    let dir = tempfile::tempdir()?;
    let journal = Arc::new(SpoolJournal {
        spool: Spool::open(dir.path().join("spool"), SpoolLimits::default())?,
        // The edge publishes and dies before its checkpoint moves.
        commit_enabled: AtomicBool::new(false),
    });
    let edge = fleet::edge::edge_id(dir.path())?;
    append(&journal.spool, 0..600)?;
    let run = |j: Arc<SpoolJournal>| {
        let publisher = EdgePublisher::new(bus.clone(), edge.clone(), 64);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { publisher.run(&*j, stop_rx).await });
        (stop_tx, task)
    };
    let (stop, task) = run(journal.clone());
    // All 600 acknowledged: the stream has them, the checkpoint has not moved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read_stream(&bus).await?.0.len() < 600 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "stream did not reach 600 events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true)?;
    let first = task.await??;
    ensure!(first.published == 600 && first.duplicates == 0, "{first:?}");
    ensure!(
        first.messages < 600 / 4,
        "600 events took {} messages: not batched",
        first.messages
    );
    ensure!(journal.committed() == 0);
    // The restarted edge publishes its whole journal again, now with 100 more records (so the
    // last round's batches have other boundaries), and commits.
    journal.commit_enabled.store(true, Ordering::SeqCst);
    append(&journal.spool, 600..700)?;
    let (stop, task) = run(journal.clone());
    wait_committed(&journal, 700, Duration::from_secs(30)).await?;
    stop.send(true)?;
    let second = task.await??;
    ensure!(
        second.duplicates > 0 && second.published + second.duplicates == 700,
        "{second:?}"
    );
    let (msgs, replayed) = read_stream(&bus).await?;
    ensure!(
        replayed as u64 == second.published - 100,
        "{replayed} replayed frames, {second:?}"
    );
    check_exactly_once(&msgs, &edge, 700, "sensor")?;
    Ok(())
}
