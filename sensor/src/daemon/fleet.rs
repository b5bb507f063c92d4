//! The fleet roles of `sensor run` (`[fleet] role`, docs/fleet.md):
//!
//! - `edge`: the daemon as always, plus an [`Edge`]: the correlator stage hands every normalised
//!   event and every alert to an [`EdgeTap`]; a journal thread appends them to the edge journal
//!   (an ingest spool in `<state_dir>/fleet-journal`, bounded by the spool's `max_bytes`), and
//!   [`fleet::edge::EdgePublisher`] drains the journal into JetStream (acknowledged, message ids).
//!   Every event is published (not a subset chosen from the central rules): central rules may
//!   change without the edges knowing, and the partition key must be computable for all of them.
//! - `gateway`: [`run_gateway`], the ingest listeners with [`fleet::gateway::BusSink`] instead of a
//!   spool; no store, no analytics, no kernel sensor.
//! - `central`: [`run_central`], `fleet::central` partition workers running the daemon's rules (the
//!   seed analytics and the `[rules]` EQL files) into PostgreSQL, plus the decoders of the gateways'
//!   records for the partitions this node owns.
//!
//! Architecture Invariant: the fleet taps never hold up local detection. The tap queue is bounded
//! and a full queue or a full journal drops what the fleet would have got (counted, logged),
//! never what the local store gets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use correlator::{Alert, Event};
use fleet::bus::{Bus, Kind};
use fleet::edge::{encode_record, EdgePublisher};
use fleet::partition::{partition_key_by, partition_of};
use tokio::sync::watch;

use super::{DaemonError, RuleProvider, RunSummary};
use crate::config::Config;

/// How many events and alerts may wait for the journal thread.
const TAP_QUEUE: usize = 65_536;

enum TapItem {
    Event(Event),
    Alert(Box<Alert>),
}

/// What the correlator stage hands the edge journal (see the module doc).
pub(crate) struct EdgeTap {
    tx: SyncSender<TapItem>,
    dropped: Arc<AtomicU64>,
}

impl EdgeTap {
    pub(crate) fn event(&self, ev: &Event) {
        self.send(TapItem::Event(ev.clone()));
    }

    pub(crate) fn alerts(&self, alerts: &[Alert]) {
        for a in alerts {
            self.send(TapItem::Alert(Box::new(a.clone())));
        }
    }

    fn send(&self, item: TapItem) {
        match self.tx.try_send(item) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!("fleet edge: the journal cannot keep up; events for the fleet are being dropped (counted in the status)");
                }
            }
        }
    }
}

/// A running edge: the journal thread and the publisher.
pub(crate) struct Edge {
    tap: Option<Arc<EdgeTap>>,
    journal: Option<std::thread::JoinHandle<()>>,
    publisher: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl Edge {
    /// Starts the edge side when `[fleet] role = "edge"` (else `None`).
    pub(crate) async fn start(cfg: &Config) -> Result<Option<Edge>, DaemonError> {
        if cfg.fleet.role != fleet::Role::Edge {
            return Ok(None);
        }
        let err = |e: String| DaemonError::Fleet(e);
        let dir = cfg.state_dir.join("fleet-journal");
        let spool = Arc::new(
            ingest::Spool::open(&dir, ingest::SpoolLimits::default())
                .map_err(|e| err(format!("edge journal {}: {e}", dir.display())))?,
        );
        let edge_id = fleet::edge::edge_id(&dir).map_err(|e| err(e.to_string()))?;
        let bus = Bus::connect(&cfg.fleet, &format!("sensor-edge-{edge_id}"))
            .await
            .map_err(|e| err(e.to_string()))?;
        let (tx, rx) = sync_channel(TAP_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let journal_dropped = Arc::new(AtomicU64::new(0));
        let (jspool, jdropped, by, parts) = (
            spool.clone(),
            journal_dropped.clone(),
            cfg.fleet.partition_by.clone(),
            cfg.fleet.partitions,
        );
        let journal = std::thread::Builder::new()
            .name("fleet-journal".into())
            .spawn(move || journal_loop(&rx, &jspool, &by, parts, &jdropped))
            .map_err(|e| err(format!("cannot start the fleet journal thread: {e}")))?;
        let (stop, stop_rx) = watch::channel(false);
        let publisher = EdgePublisher::new(bus, edge_id.clone(), cfg.fleet.nats.publish_window)
            .with_linger(std::time::Duration::from_millis(
                cfg.fleet.nats.publish_linger_ms,
            ));
        let pspool = spool.clone();
        let publisher = tokio::spawn(async move {
            match publisher.run(pspool.as_ref(), stop_rx).await {
                Ok(s) => tracing::info!(
                    published = s.published,
                    duplicates = s.duplicates,
                    retries = s.retries,
                    "fleet edge publisher stopped"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "fleet edge publisher stopped on a journal error; events stay in the journal")
                }
            }
        });
        tracing::info!(edge_id = %edge_id, journal = %dir.display(), urls = %cfg.fleet.nats.urls.join(","), "fleet edge: publishing events and alerts to the bus");
        let (sd, sj) = (dropped.clone(), journal_dropped);
        let status = Arc::new(move || {
            serde_json::json!({
                "role": "edge",
                "edge_id": edge_id,
                "journal_durable": spool.durable(),
                "journal_published": spool.committed(),
                "dropped_queue": sd.load(Relaxed),
                "dropped_journal_full": sj.load(Relaxed),
            })
        });
        Ok(Some(Edge {
            tap: Some(Arc::new(EdgeTap { tx, dropped })),
            journal: Some(journal),
            publisher,
            stop,
            status,
        }))
    }

    /// The tap for the correlator stage (taken once).
    pub(crate) fn take_tap(&mut self) -> Option<Arc<EdgeTap>> {
        self.tap.take()
    }

    /// After the correlator stage stopped (the tap is dropped): the journal thread writes what is
    /// queued, then the publisher stops. What it has not published stays in the journal for the
    /// next start.
    pub(crate) async fn shutdown(mut self) {
        drop(self.tap.take());
        if let Some(j) = self.journal.take() {
            let _ = tokio::task::spawn_blocking(move || j.join()).await;
        }
        // A moment to publish the last records when the bus is there.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let s = (self.status)();
                if s["journal_published"] == s["journal_durable"] {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let _ = self.stop.send(true);
        let _ = self.publisher.await;
    }
}

/// The journal thread: batches what the tap queued into the journal until the tap is dropped.
fn journal_loop(
    rx: &Receiver<TapItem>,
    spool: &ingest::Spool,
    partition_by: &[String],
    partitions: u32,
    dropped: &AtomicU64,
) {
    let mut full = false;
    while let Ok(first) = rx.recv() {
        let mut records = Vec::with_capacity(256);
        records.push(journal_record(first, partition_by, partitions));
        while records.len() < 1024 {
            match rx.try_recv() {
                Ok(item) => records.push(journal_record(item, partition_by, partitions)),
                Err(_) => break,
            }
        }
        match spool.append_batch(&records) {
            Ok(_) => {
                if full {
                    tracing::info!("fleet edge journal has room again");
                    full = false;
                }
            }
            Err(e) => {
                dropped.fetch_add(records.len() as u64, Relaxed);
                if !full {
                    tracing::error!(error = %e, "fleet edge journal refused records (bus unreachable too long?); they are dropped for the fleet (local detection goes on)");
                    full = true;
                }
            }
        }
    }
}

/// One journal record: tag, partition, ECS JSON (with `@timestamp` from the event time).
fn journal_record(item: TapItem, partition_by: &[String], partitions: u32) -> Vec<u8> {
    let (kind, doc) = match item {
        TapItem::Event(ev) => {
            let mut doc = ev.to_json();
            if let Some(o) = doc.as_object_mut() {
                o.entry("@timestamp")
                    .or_insert_with(|| serde_json::Value::String(rfc3339(ev.timestamp_ns)));
            }
            (Kind::Event, doc)
        }
        TapItem::Alert(a) => {
            let mut doc = serde_json::to_value(&*a).unwrap_or_default();
            if let Some(o) = doc.as_object_mut() {
                if let Some(h) = &a.host {
                    o.insert("host".into(), serde_json::json!({ "name": h }));
                }
            }
            (Kind::Alert, doc)
        }
    };
    let p = partition_of(&partition_key_by(&doc, partition_by), partitions);
    encode_record(kind, p, doc.to_string().as_bytes())
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn async_nats_state_connected() -> fleet::bus::ConnectionState {
    fleet::bus::ConnectionState::Connected
}

/// Waits for SIGTERM or SIGINT.
async fn until_signal() -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    Ok(())
}

/// `role = "gateway"`: the ingest listeners publishing to the bus, until SIGTERM/SIGINT.
pub(crate) async fn run_gateway(
    cfg: Config,
    config_path: Option<&std::path::Path>,
) -> Result<RunSummary, DaemonError> {
    let err = |e: String| DaemonError::Fleet(e);
    // As the daemon: bind (and read keys and the bus password) privileged, then drop, then accept.
    let privilege_plan =
        super::privilege::plan(&cfg, config_path).map_err(DaemonError::Privileges)?;
    let sec = cfg.ingest_config().map_err(err)?;
    if sec.listeners.http.is_none() && sec.listeners.auditd.is_none() {
        return Err(err(
            "role = \"gateway\" needs a listener: [ingest.http] or [ingest.auditd]".into(),
        ));
    }
    let bus = Bus::connect(&cfg.fleet, "sensor-gateway")
        .await
        .map_err(|e| err(e.to_string()))?;
    // Records are refused while the bus is not connected: wait for it (a while) before accepting,
    // so that agents are not turned away by a gateway that is merely starting.
    let t0 = std::time::Instant::now();
    while bus.client.connection_state() != async_nats_state_connected()
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if bus.client.connection_state() != async_nats_state_connected() {
        tracing::warn!(
            "fleet gateway: the bus is not reachable yet; agents are refused until it is"
        );
    }
    let names = ingest::agents::AgentNames::from_config(&sec.listeners);
    let sink = Arc::new(fleet::gateway::BusSink::new(bus, names));
    let bound = ingest::bind_sink(sec.listeners, sink)
        .await
        .map_err(|e| err(e.to_string()))?;
    if let Some(plan) = &privilege_plan {
        let d = super::privilege::apply(plan).map_err(DaemonError::Privileges)?;
        tracing::info!(user = %d.user, uid = d.uid, "privileges dropped: no capabilities, no_new_privs; listeners now accept");
    }
    let (stop, stop_rx) = watch::channel(false);
    let serve = tokio::spawn(bound.serve(stop_rx));
    tracing::info!(urls = %cfg.fleet.nats.urls.join(","), "sensor running (fleet gateway: records are acknowledged once JetStream has them)");
    until_signal().await?;
    let _ = stop.send(true);
    let _ = serve.await;
    Ok(RunSummary::default())
}

/// `role = "central"`: partition workers with the daemon's rules, recording into PostgreSQL, and
/// the decoders of the gateways' records, until SIGTERM/SIGINT.
pub(crate) async fn run_central(
    mut cfg: Config,
    config_path: Option<std::path::PathBuf>,
    rules: Arc<dyn RuleProvider>,
) -> Result<RunSummary, DaemonError> {
    let err = |e: String| DaemonError::Fleet(e);
    // Detectors are made per partition and per takeover: no shared baseline file.
    cfg.rules.state_file = None;
    let first = rules
        .load(&cfg.rules)
        .map_err(|e| DaemonError::Rules(e.to_string()))?;
    let ids: Vec<String> = first.iter().map(|r| r.detector.id().to_string()).collect();
    drop(first);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "central".into());
    // `SENSOR_FLEET_NODE_ID` (the pod name in the StatefulSet), else `<hostname>-<pid>`.
    let node = std::env::var("SENSOR_FLEET_NODE_ID")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let bus = Bus::connect(&cfg.fleet, &format!("sensor-central-{node}"))
        .await
        .map_err(|e| err(e.to_string()))?;
    bus.ensure_streams(&cfg.fleet.nats, 1)
        .await
        .map_err(|e| err(e.to_string()))?;
    fleet::gateway::ensure_record_stream(&bus, &cfg.fleet.nats)
        .await
        .map_err(|e| err(e.to_string()))?;
    // The schema is migrated once here, so that a bad URL or password fails the start.
    drop(
        fleet::pg::FleetStore::connect(&cfg.fleet.postgres)
            .await
            .map_err(|e| err(e.to_string()))?,
    );
    let rules_cfg = cfg.rules.clone();
    let factory: fleet::central::DetectorFactory = Arc::new(move || match rules.load(&rules_cfg) {
        Ok(r) => r.into_iter().map(|r| r.detector).collect(),
        Err(e) => {
            tracing::error!(error = %e, "central: rules failed to load for a partition; it runs without detectors");
            Vec::new()
        }
    });
    let mut ccfg = fleet::central::CentralConfig::new(node.clone());
    ccfg.lateness_ns = cfg.rules.lateness.as_nanos_i64();
    let lease_ttl = ccfg.lease_ttl;
    let stats = Arc::new(fleet::central::CentralStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let node_task = tokio::spawn(fleet::central::run_node(
        bus.clone(),
        ccfg,
        cfg.fleet.postgres.clone(),
        factory,
        stats.clone(),
        stop_rx.clone(),
    ));
    let bus_for_api = bus.clone();
    let stop_rx_api = stop_rx.clone();
    let decoders = tokio::spawn(run_decoders(
        bus,
        cfg.fleet.partition_by.clone(),
        stats.clone(),
        stop_rx,
    ));
    // The control API from the fleet store (the Unix socket, `[api.tcp]`), as on a host.
    let api_store = fleet::pg::FleetAlerts::connect(&cfg.fleet.postgres)
        .await
        .map_err(|e| err(e.to_string()))?;
    let api = crate::api::serve_central(
        &cfg,
        crate::api::CentralApi {
            store: api_store,
            bus: bus_for_api,
            lease_ttl,
            node_id: node.clone(),
            nats_urls: cfg.fleet.nats.urls.clone(),
            stats: Some(stats.clone()),
            metrics: crate::metrics::Metrics::new(),
            config_path,
            rules: ids.clone(),
        },
        stop_rx_api,
    )
    .await
    .map_err(DaemonError::Api)?;
    tracing::info!(node = %node, rules = ids.len(), partitions = cfg.fleet.partitions, "sensor running (fleet central)");
    // Progress in the log every 10 s (until `sensor status` shows it through the fleet API).
    let st = stats.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            let owned: Vec<u32> = st
                .owned
                .lock()
                .map(|o| o.iter().copied().collect())
                .unwrap_or_default();
            tracing::info!(
                events = st.events.load(Relaxed),
                alerts = st.alerts.load(Relaxed),
                bad_events = st.bad_events.load(Relaxed),
                ?owned,
                "central status"
            );
        }
    });
    until_signal().await?;
    progress.abort();
    let _ = stop.send(true);
    let mut api = api;
    api.abort_all();
    crate::api::remove_socket(&cfg.api.socket);
    let _ = decoders.await;
    match node_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "central node stopped with an error"),
        Err(e) => tracing::error!(error = %e, "central node task failed"),
        Ok(Ok(())) => {}
    }
    Ok(RunSummary {
        events_in: stats.events.load(Relaxed),
        events_out: stats.events.load(Relaxed),
        alerts_new: stats.alerts.load(Relaxed),
        alerts_repeated: 0,
    })
}

/// Runs a gateway-record decoder for each partition this node owns (following the leases).
async fn run_decoders(
    bus: Bus,
    partition_by: Vec<String>,
    stats: Arc<fleet::central::CentralStats>,
    mut stop: watch::Receiver<bool>,
) {
    type Running = (watch::Sender<bool>, tokio::task::JoinHandle<()>);
    let mut running: BTreeMap<u32, Running> = BTreeMap::new();
    loop {
        let owned: std::collections::BTreeSet<u32> =
            stats.owned.lock().map(|o| o.clone()).unwrap_or_default();
        let gone: Vec<u32> = running
            .keys()
            .filter(|p| !owned.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some((tx, task)) = running.remove(&p) {
                let _ = tx.send(true);
                let _ = task.await;
            }
        }
        for p in owned {
            if running.get(&p).is_some_and(|(_, t)| !t.is_finished()) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let (bus, by) = (bus.clone(), partition_by.clone());
            let task = tokio::spawn(async move {
                let idle = Duration::from_secs(2);
                if let Err(e) = fleet::gateway::decode_partition(bus, p, by, idle, rx).await {
                    tracing::warn!(partition = p, error = %e, "gateway record decoder stopped");
                }
            });
            running.insert(p, (tx, task));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    for (_, (tx, task)) in running {
        let _ = tx.send(true);
        let _ = task.await;
    }
}
