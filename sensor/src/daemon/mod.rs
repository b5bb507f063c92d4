//! `sensor run`: one tokio runtime holding the event sources, the correlator stage, the alert store,
//! the outputs and the control API.
//!
//! ```text
//! sources (kernel, ingest, [[sources.file]]) --Input--> correlator task --StoreMsg--> store thread
//!                                                        (detectors)                 (SQLite, dedup)
//!                                                                                        |
//!                                        control API <--- StoreHandle          broadcast AlertUpdate
//!                                                                                 -> outputs, `alerts tail`
//! ```
//!
//! Architecture Invariant: the daemon never decides what an event means; detectors do (through the
//! [`RuleProvider`] seam). The daemon only moves events, feeds watermarks, and keeps alerts.
//!
//! Architecture Invariant: shutdown is bounded and loses nothing acknowledged: sources stop first
//! (network ingest stops reading its spool at once: what it has not fed stays there), what they
//! already handed over goes through the detectors into the store for at most
//! [`correlate::SHUTDOWN_GRACE`], the store is checkpointed, and only then does `run` return. What
//! is still queued after the grace period is set aside and logged: a positioned or file source's
//! events are read again at the next start (their positions never move past them); only a plain
//! source's (the kernel sensor's, which has nothing to replay from) are dropped, and counted. A write
//! waiting for disk space gives up when the stop begins (its positions are not acknowledged).
//!
//! Architecture Invariant: a source's resume point moves only with what its events produced. File
//! offsets ride on each event; a positioned source ([`SourceEvents::Positioned`], network ingest)
//! sends [`SourceItem::Resume`] after the events it covers. The correlator commits alerts only up
//! to the last point where every positioned source is covered, in the same SQLite transaction as the
//! resume points ([`ResumePoint`]); a source hears that a resume point is durable
//! ([`StartedSource::acked`]) only after the store has made that transaction durable, and only then
//! may it drop the data behind it. A `kill -9` anywhere replays exactly the events whose alerts are
//! not stored.

mod correlate;
mod fleet;
mod housekeeping;
mod inflight;
pub mod live;
pub mod meta_helper;
pub mod privilege;
mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use correlator::Event;
pub use inflight::InFlightGuard;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::api::{Control, DaemonInfo, ReloadReport, Shared, SourceInfo};
use crate::config::{Config, RulesConfig};
use crate::metrics::Metrics;
use crate::rules::LoadedRule;
use crate::store::{AckFn, AlertUpdate, ResumePoint};

/// A boxed error from a seam (rule loader, source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Produces the detectors from the `[rules]` section. Called at start-up and on every reload.
///
/// INTEGRATION: the lead points this at the real rule loader (shipped analytics + EQL
/// `correlator::eql::RuleSet`). If the EQL RuleSet carries its own pending state across reloads, return it
/// as one `LoadedRule` with a stable version and let it reload itself.
pub trait RuleProvider: Send + Sync + 'static {
    fn load(&self, cfg: &RulesConfig) -> Result<Vec<LoadedRule>, BoxError>;
}

impl<F> RuleProvider for F
where
    F: Fn(&RulesConfig) -> Result<Vec<LoadedRule>, BoxError> + Send + Sync + 'static,
{
    fn load(&self, cfg: &RulesConfig) -> Result<Vec<LoadedRule>, BoxError> {
        self(cfg)
    }
}

/// A source that `sensor run` starts from the config: the kernel sensor, network ingest, or a test's.
pub trait SourceStarter: Send {
    /// The name used in start-up messages when it is refused.
    fn name(&self) -> String;
    /// Called before [`SourceStarter::start`] with the last resume point of this source (by
    /// [`SourceStarter::name`]) that the store committed, if any: what a positioned source resumes from.
    fn resume_from(&mut self, _point: ResumePoint) {}
    /// `Ok(None)`: disabled by config. `Err(reason)`: refused (logged, the daemon goes on without it).
    fn start(
        self: Box<Self>,
        cfg: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String>;
}

/// What a positioned source sends, in order.
#[derive(Debug)]
pub enum SourceItem {
    /// An event, with the bytes it holds of its source's in-flight budget (see `inflight.rs`).
    Event(Event, Option<InFlightGuard>),
    /// Where the source stands once every event sent before this one is processed: committed with
    /// their alerts, and given back through [`SourceStarter::resume_from`] at the next start.
    Resume(ResumePoint),
}

/// A source's stream.
#[derive(Debug)]
pub enum SourceEvents {
    /// Events with nothing to resume from (the kernel sensor).
    Plain(mpsc::Receiver<Event>),
    /// Events and the positions that cover them.
    Positioned(mpsc::Receiver<SourceItem>),
}

impl From<mpsc::Receiver<Event>> for SourceEvents {
    fn from(rx: mpsc::Receiver<Event>) -> SourceEvents {
        SourceEvents::Plain(rx)
    }
}

/// A running source: a stream of events plus hooks for status and shutdown.
pub struct StartedSource {
    /// Also the key of its position in the store: the same as [`SourceStarter::name`].
    pub name: String,
    pub events: SourceEvents,
    /// A one-line description for start-up messages ("14 programs attached").
    pub detail: String,
    /// Extra status for `sensor status` (programs attached, ring buffer losses, clients).
    pub status: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// Called at shutdown; the source must then close `events` (what is already queued is drained).
    pub stop: Option<Box<dyn FnOnce() + Send>>,
    /// Positioned sources: told each position once it is durable in the store (with the alerts of
    /// the events before it); only then may the source drop what lies behind it.
    pub acked: Option<AckFn>,
}

/// What the daemon is made of besides its config.
pub struct Seams {
    pub rules: Arc<dyn RuleProvider>,
    pub sources: Vec<Box<dyn SourceStarter>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot load rules: {0}")]
    Rules(String),
    #[error(transparent)]
    Output(#[from] crate::outputs::OutputError),
    #[error("control API: {0}")]
    Api(String),
    #[error("the alert store thread stopped unexpectedly")]
    StoreGone,
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
    #[error("dropping privileges: {0}")]
    Privileges(String),
    #[error("fleet: {0}")]
    Fleet(String),
}

/// What a run did, logged at exit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub events_in: u64,
    pub events_out: u64,
    pub alerts_new: u64,
    pub alerts_repeated: u64,
}

/// One event (or a resume point) on its way from a source to the correlator.
pub(crate) struct Input {
    pub(crate) src: usize,
    pub(crate) event: Option<Event>,
    pub(crate) cover: Cover,
    /// Bytes of the source's in-flight budget the event holds, given back once it is processed.
    pub(crate) held: Option<InFlightGuard>,
}

/// Whether an [`Input`] is covered by a resume point of its source.
pub(crate) enum Cover {
    /// Nothing to resume (kernel events).
    None,
    /// An event of a positioned source: covered by a later [`Cover::Mark`].
    Uncovered,
    /// The source's resume point, covering its events up to this input (a file source's comes
    /// with each event: the offset after it; a positioned source's on its own, after its events).
    Mark(ResumePoint),
    /// A positioned source ended without a last resume point.
    Closed,
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP and `POST /v1/reload`.
pub async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    seams: Seams,
) -> Result<RunSummary, DaemonError> {
    run_with_metrics(cfg, config_path, seams, Metrics::new()).await
}

/// [`run`] with metrics the caller keeps (benchmarks and embedders read them while it runs).
pub async fn run_with_metrics(
    cfg: Config,
    config_path: Option<PathBuf>,
    seams: Seams,
    metrics: Arc<Metrics>,
) -> Result<RunSummary, DaemonError> {
    // A gateway or a central node is not this daemon (no SQLite store, no local sources).
    match cfg.fleet.role {
        ::fleet::Role::Gateway => return fleet::run_gateway(cfg, config_path.as_deref()).await,
        ::fleet::Role::Central => return fleet::run_central(cfg, config_path, seams.rules).await,
        ::fleet::Role::Standalone | ::fleet::Role::Edge => {}
    }
    // Decided before anything starts, so a bad `[privileges]` fails at once; listeners bound from
    // here on wait for the drop before accepting (see privilege.rs).
    let privilege_plan =
        privilege::plan(&cfg, config_path.as_deref()).map_err(DaemonError::Privileges)?;
    // Container runtimes' files and sockets are root-only: a helper process, started while still
    // root, reads them for the kernel sensor once the daemon has no capability (meta_helper.rs).
    if let Some(plan) = &privilege_plan {
        if cfg.kernel_enabled() {
            if let Ok(k) = cfg.kernel_config() {
                if k.containers.enabled {
                    meta_helper::start(&k.containers, plan.uid(), plan.gid());
                }
            }
        }
    }
    let store = crate::store::Store::open(&cfg.store_config())?;
    tracing::info!(path = %store.path().display(), "alert store open (SQLite, WAL, schema v{})", store.schema_version()?);

    // Rules first: a daemon with rules that do not load refuses to start rather than run blind.
    let rules = load_rules(seams.rules.as_ref(), &cfg.rules, &metrics)?;
    let rule_ids: Vec<String> = rules.iter().map(|r| r.detector.id().to_string()).collect();

    // Resume points (file offsets, source positions) are read before the store moves to its thread.
    let mut file_offsets = Vec::new();
    for f in &cfg.sources.file {
        file_offsets.push(store.file_resume_point(&f.source_name())?);
    }
    let mut starters = seams.sources;
    for starter in &mut starters {
        if let Some(p) = store.spool_resume_point(&starter.name())? {
            starter.resume_from(p);
        }
    }

    let (alerts_tx, _) = broadcast::channel::<Arc<AlertUpdate>>(4096);
    let output_tasks = crate::outputs::start(&cfg.outputs, &alerts_tx, &metrics)?;
    let (store_handle, store_thread) =
        crate::store::spawn(store, metrics.clone(), alerts_tx.clone());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (input_tx, input_rx) = mpsc::channel::<Input>(8192);
    let mut sources = Sources::default();
    for starter in starters {
        sources.start(starter, &cfg, &metrics, &input_tx, &shutdown_rx);
    }
    for (f, offset) in cfg.sources.file.iter().zip(file_offsets) {
        sources.attach_file(f, offset, &metrics, &input_tx, &shutdown_rx);
    }
    drop(input_tx);
    if sources.names.is_empty() {
        tracing::warn!(
            "no event source is running: nothing will be detected (see the messages above)"
        );
    }

    let info = Arc::new(DaemonInfo {
        started: Instant::now(),
        sources: std::mem::take(&mut sources.infos),
        source_status: std::mem::take(&mut sources.status),
        refused: std::mem::take(&mut sources.refused),
        rules: Mutex::new(rule_ids),
        rates: Mutex::new(BTreeMap::new()),
        config_path: config_path.clone(),
        privileges: Mutex::new(serde_json::Value::Null),
    });

    let mut edge = fleet::Edge::start(&cfg).await?;
    let (corr_ctl_tx, corr_ctl_rx) = mpsc::channel(4);
    let correlator = tokio::spawn(correlate::run(correlate::Setup {
        rules,
        lateness_ns: cfg.rules.lateness.as_nanos_i64(),
        sources: sources.names.clone(),
        acks: std::mem::take(&mut sources.acks),
        input: input_rx,
        control: corr_ctl_rx,
        store: store_handle.clone(),
        metrics: metrics.clone(),
        state_file: cfg.rules.state_file.clone(),
        tap: edge.as_mut().and_then(fleet::Edge::take_tap),
        shutdown: shutdown_rx.clone(),
    }));

    let (control_tx, control_rx) = mpsc::channel::<Control>(8);
    let shared = Shared {
        store: Arc::new(crate::store::LocalAlerts::new(
            store_handle.clone(),
            alerts_tx.downgrade(),
        )),
        metrics: metrics.clone(),
        control: control_tx,
        info: info.clone(),
        fleet: None,
    };
    let api = crate::api::serve(&cfg, shared.clone(), shutdown_rx.clone())
        .await
        .map_err(DaemonError::Api)?;
    // Everything privileged is done: programs attached, listeners bound, key files read.
    if let Some(plan) = &privilege_plan {
        let d = privilege::apply(plan).map_err(DaemonError::Privileges)?;
        tracing::info!(
            user = %d.user,
            uid = d.uid,
            gid = d.gid,
            threads = d.threads,
            "privileges dropped: no capabilities, no_new_privs; listeners now accept"
        );
        *info
            .privileges
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = serde_json::json!({"user": d.user, "uid": d.uid, "gid": d.gid, "capabilities": [], "no_new_privs": true});
    } else {
        *info
            .privileges
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = serde_json::json!({
            "uid": nix::unistd::Uid::effective().as_raw(),
            "dropped": false,
        });
    }
    privilege::release();
    let housekeeping = tokio::spawn(housekeeping::run(
        store_handle.clone(),
        metrics.clone(),
        info.clone(),
        cfg.store.retention_interval.0,
        shutdown_rx.clone(),
    ));

    let socket = cfg.api.socket.clone();
    serve_until_stopped(
        cfg,
        config_path.as_deref(),
        seams.rules.as_ref(),
        &corr_ctl_tx,
        control_rx,
        &info,
        &metrics,
    )
    .await?;

    Running {
        shutdown: shutdown_tx,
        sources,
        correlator_control: corr_ctl_tx,
        correlator,
        housekeeping,
        api,
        store: store_handle,
        store_thread,
        alerts: alerts_tx,
        shared,
        output_tasks,
        socket,
        edge,
    }
    .shutdown(&metrics)
    .await
}

/// Loads the rules through the provider, refusing to start without them.
fn load_rules(
    provider: &dyn RuleProvider,
    cfg: &RulesConfig,
    metrics: &Metrics,
) -> Result<Vec<LoadedRule>, DaemonError> {
    let rules = provider
        .load(cfg)
        .map_err(|e| DaemonError::Rules(e.to_string()))?;
    if rules.is_empty() {
        tracing::warn!("no detection rules loaded: events will be read but no alert can fire");
    } else {
        tracing::info!(count = rules.len(), "detection rules loaded");
    }
    metrics
        .rules_loaded
        .store(i64::try_from(rules.len()).unwrap_or(i64::MAX), Relaxed);
    Ok(rules)
}

/// The running sources, by input index, and what the daemon keeps of each.
#[derive(Default)]
struct Sources {
    names: Vec<String>,
    infos: Vec<SourceInfo>,
    refused: Vec<SourceInfo>,
    status: BTreeMap<String, Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    stops: Vec<Box<dyn FnOnce() + Send>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acks: Vec<Option<AckFn>>,
}

impl Sources {
    /// Starts one seam source; a refused one is logged and listed, the daemon goes on without it.
    fn start(
        &mut self,
        starter: Box<dyn SourceStarter>,
        cfg: &Config,
        metrics: &Arc<Metrics>,
        input: &mpsc::Sender<Input>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let name = starter.name();
        match starter.start(cfg, metrics) {
            Ok(None) => tracing::info!(source = %name, "source disabled by config"),
            Ok(Some(s)) => {
                tracing::info!(source = %s.name, detail = %s.detail, "source attached");
                let idx = self.names.len();
                self.names.push(s.name.clone());
                self.infos.push(SourceInfo {
                    name: s.name.clone(),
                    detail: s.detail.clone(),
                });
                if let Some(st) = s.status {
                    self.status.insert(s.name.clone(), st);
                }
                if let Some(stop) = s.stop {
                    self.stops.push(stop);
                }
                self.acks.push(s.acked);
                let counters = metrics.source(&s.name);
                self.tasks.push(tokio::spawn(sources::forward(
                    idx,
                    s.events,
                    input.clone(),
                    counters,
                    shutdown.clone(),
                )));
            }
            Err(reason) => {
                tracing::warn!(source = %name, %reason, "source refused; running without it");
                self.refused.push(SourceInfo {
                    name,
                    detail: reason,
                });
            }
        }
    }

    /// Starts one `[[sources.file]]`, resuming at its stored offset.
    fn attach_file(
        &mut self,
        f: &crate::config::FileSourceConfig,
        offset: Option<ResumePoint>,
        metrics: &Metrics,
        input: &mpsc::Sender<Input>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let name = f.source_name();
        let idx = self.names.len();
        self.names.push(name.clone());
        self.acks.push(None);
        let detail = format!(
            "{} ({})",
            f.path.display(),
            if f.follow { "following" } else { "to the end" }
        );
        tracing::info!(source = %name, %detail, resume_at = match &offset { Some(ResumePoint::File { offset, .. }) => *offset, _ => 0 }, "file source attached");
        self.infos.push(SourceInfo {
            name: name.clone(),
            detail,
        });
        let counters = metrics.source(&name);
        self.tasks.push(tokio::spawn(sources::file_source(
            f.clone(),
            idx,
            offset,
            input.clone(),
            counters,
            shutdown.clone(),
        )));
    }
}

/// The main loop: reloads on SIGHUP and `POST /v1/reload` until SIGTERM or SIGINT.
async fn serve_until_stopped(
    mut current: Config,
    config_path: Option<&std::path::Path>,
    rules: &dyn RuleProvider,
    correlator: &mpsc::Sender<correlate::Reload>,
    mut control: mpsc::Receiver<Control>,
    info: &DaemonInfo,
    metrics: &Metrics,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    tracing::info!(socket = %current.api.socket.display(), "sensor running");
    loop {
        let reply = tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); return Ok(()) }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); return Ok(()) }
            _ = sighup.recv() => { tracing::info!("SIGHUP: reloading"); None }
            Some(Control::Reload(reply)) = control.recv() => { tracing::info!("reload requested over the control API"); Some(reply) }
        };
        let result = reload(&mut current, config_path, rules, correlator, info).await;
        match &result {
            Ok(r) => {
                metrics.reloads.fetch_add(1, Relaxed);
                tracing::info!(
                    kept = r.kept.len(),
                    loaded = r.loaded.len(),
                    removed = r.removed.len(),
                    "reloaded"
                );
                for s in &r.restart_needed {
                    tracing::warn!(section = %s, "this section changed; it takes effect at the next restart");
                }
            }
            Err(e) => {
                metrics.reload_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "reload refused; the previous rules and settings stay in force");
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

/// Everything that runs, kept for the shutdown.
struct Running {
    shutdown: watch::Sender<bool>,
    sources: Sources,
    correlator_control: mpsc::Sender<correlate::Reload>,
    correlator: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinSet<()>,
    store: crate::store::StoreHandle,
    store_thread: std::thread::JoinHandle<()>,
    alerts: broadcast::Sender<Arc<AlertUpdate>>,
    shared: Shared,
    output_tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: PathBuf,
    edge: Option<fleet::Edge>,
}

impl Running {
    /// Shutdown, in dependency order: sources, correlator, store, outputs.
    async fn shutdown(mut self, metrics: &Metrics) -> Result<RunSummary, DaemonError> {
        let began = Instant::now();
        self.store.stopping();
        let _ = self.shutdown.send(true);
        for stop in self.sources.stops.drain(..) {
            stop();
        }
        for t in self.sources.tasks.drain(..) {
            let _ = t.await;
        }
        drop(self.correlator_control);
        let _ = self.correlator.await;
        if let Some(edge) = self.edge.take() {
            edge.shutdown().await;
        }
        self.housekeeping.abort();
        self.api.abort_all();
        let final_stats = self.store.shutdown().await;
        let store_thread = self.store_thread;
        let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
        drop(self.alerts);
        drop(self.shared);
        for t in self.output_tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        crate::api::remove_socket(&self.socket);
        let mut summary = RunSummary::default();
        for (_, c) in metrics.sources() {
            summary.events_in += c.events_in.load(Relaxed);
            summary.events_out += c.events_out.load(Relaxed);
        }
        summary.alerts_new = metrics.alerts_new.load(Relaxed);
        summary.alerts_repeated = metrics.alerts_repeated.load(Relaxed);
        match final_stats {
            Some(Ok(s)) => tracing::info!(
                events_in = summary.events_in,
                events_out = summary.events_out,
                alerts_new = summary.alerts_new,
                alerts_repeated = summary.alerts_repeated,
                stored_alerts = s.alerts,
                shutdown_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                "stopped; alert store flushed and checkpointed"
            ),
            Some(Err(e)) => {
                tracing::error!(error = %e, "stopped, but closing the alert store failed")
            }
            None => return Err(DaemonError::StoreGone),
        }
        Ok(summary)
    }
}

async fn reload(
    current: &mut Config,
    path: Option<&std::path::Path>,
    provider: &dyn RuleProvider,
    correlator: &mpsc::Sender<correlate::Reload>,
    info: &DaemonInfo,
) -> Result<ReloadReport, String> {
    let new = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => current.clone(),
    };
    let rules = provider
        .load(&new.rules)
        .map_err(|e| format!("cannot load rules: {e}"))?;
    let ids: Vec<String> = rules.iter().map(|r| r.detector.id().to_string()).collect();
    let (tx, rx) = oneshot::channel();
    correlator
        .send(correlate::Reload {
            rules,
            lateness_ns: new.rules.lateness.as_nanos_i64(),
            reply: tx,
        })
        .await
        .map_err(|_| "the correlator has stopped".to_string())?;
    let mut report = rx
        .await
        .map_err(|_| "the correlator has stopped".to_string())?;
    for (name, changed) in [
        ("state_dir", current.state_dir != new.state_dir),
        ("kernel", current.kernel != new.kernel),
        ("ingest", current.ingest != new.ingest),
        ("store", current.store != new.store),
        ("api", current.api != new.api),
        ("outputs", current.outputs != new.outputs),
        ("metrics", current.metrics != new.metrics),
        ("sources", current.sources != new.sources),
        ("privileges", current.privileges != new.privileges),
        ("fleet", current.fleet != new.fleet),
    ] {
        if changed {
            report.restart_needed.push(name.to_string());
        }
    }
    *info.rules.lock().unwrap_or_else(PoisonError::into_inner) = ids;
    *current = new;
    Ok(report)
}
