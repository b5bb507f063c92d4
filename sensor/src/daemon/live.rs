//! The two live event sources of `sensor run`: the kernel sensor and network ingest.
//!
//! Each is a [`SourceStarter`]: refused with a reason (logged, the daemon goes on without it) or
//! started as a stream of `correlator::Event`s with status and stop hooks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{SourceEvents, SourceItem, SourceStarter, StartedSource};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::ResumePoint;
use ingest::consumer::{drive, Consumer, Emitted, Position, Sink};
use ingest::Spool;
use sensor_kernel::KernelSensor;

/// Starts the kernel sensor when `[kernel] enabled`.
pub struct KernelStarter;

impl SourceStarter for KernelStarter {
    fn name(&self) -> String {
        "kernel".into()
    }

    fn start(
        self: Box<Self>,
        cfg: &Config,
        _metrics: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String> {
        if !cfg.kernel_enabled() {
            return Ok(None);
        }
        let kcfg = cfg.kernel_config()?;
        // The starter is called from the daemon's multi-threaded runtime; loading is a few
        // blocking syscalls, done in place.
        let handle = tokio::runtime::Handle::current();
        let (sensor, events) =
            tokio::task::block_in_place(|| handle.block_on(KernelSensor::start(&kcfg)))
                .map_err(|e| e.to_string())?;
        let st = sensor.status();
        let detail = format!(
            "{} programs attached{}",
            st.attached.len(),
            if st.refused.is_empty() {
                String::new()
            } else {
                format!(", {} refused", st.refused.len())
            }
        );
        for r in &st.refused {
            tracing::warn!(program = %r.program, reason = %r.reason, "kernel program refused");
        }
        let shared = Arc::new(Mutex::new(Some(sensor)));
        let for_status = shared.clone();
        Ok(Some(StartedSource {
            name: "kernel".into(),
            events: events.into(),
            detail,
            status: Some(Arc::new(move || {
                let guard = for_status.lock().unwrap_or_else(PoisonError::into_inner);
                guard
                    .as_ref()
                    .and_then(|s| serde_json::to_value(s.status()).ok())
                    .unwrap_or(serde_json::Value::Null)
            })),
            stop: Some(Box::new(move || {
                let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(sensor) = taken {
                    // Detaches the programs and closes the event stream; what is queued drains.
                    tokio::spawn(sensor.shutdown());
                }
            })),
            acked: None,
        }))
    }
}

/// Starts network ingest when `[ingest] enabled`: the listeners write to the durable spool; a
/// consumer thread decodes spooled records and hands the events to the correlator, each batch
/// followed by the consumer's [`Position`]. The store commits that position with the alerts of
/// the events before it; the daemon resumes from it, and the spool is committed (its segments
/// deleted) only up to a position the store has made durable.
#[derive(Default)]
pub struct IngestStarter {
    resume: Option<ResumePoint>,
}

impl IngestStarter {
    pub fn new() -> IngestStarter {
        IngestStarter::default()
    }
}

impl SourceStarter for IngestStarter {
    fn name(&self) -> String {
        "ingest".into()
    }

    fn resume_from(&mut self, point: ResumePoint) {
        self.resume = Some(point);
    }

    fn start(
        self: Box<Self>,
        cfg: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String> {
        if !cfg.ingest_enabled() {
            return Ok(None);
        }
        let sec = cfg.ingest_config()?;
        let spool = Arc::new(
            Spool::open(&sec.spool_dir, sec.spool.clone())
                .map_err(|e| format!("spool {}: {e}", sec.spool_dir.display()))?,
        );
        let start = resume_point(self.resume.as_ref(), &spool);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, events) = mpsc::channel(8192);
        let http = sec.listeners.http.as_ref().map(|h| h.listen.to_string());
        let auditd = sec.listeners.auditd.as_ref().map(|a| a.listen.to_string());
        // Bound here, while the daemon may still be privileged (a port below 1024, root-only key
        // files); connections are accepted only once the privileges are dropped.
        let handle = tokio::runtime::Handle::current();
        let bound = tokio::task::block_in_place(|| {
            handle.block_on(ingest::bind(sec.listeners.clone(), spool.clone()))
        })
        .map_err(|e| e.to_string())?;
        let serve_stop = stop_rx.clone();
        tokio::spawn(async move {
            crate::api::accepts_released().await;
            bound.serve(serve_stop).await;
        });
        let idle = Duration::from_secs(sec.group_idle_secs);
        let m = metrics.clone();
        let consumer_spool = spool.clone();
        let acked = Arc::new(AtomicU64::new(start.seq));
        let consumer_acked = acked.clone();
        let names = ingest::agents::AgentNames::from_config(&sec.listeners);
        std::thread::Builder::new()
            .name("ingest-consumer".into())
            .spawn(move || {
                consume(
                    &consumer_spool,
                    start,
                    &tx,
                    &consumer_acked,
                    idle,
                    &stop_rx,
                    &m,
                    names,
                )
            })
            .map_err(|e| format!("cannot start the ingest consumer thread: {e}"))?;
        let detail = format!(
            "http {}, auditd {}, spool {}",
            http.as_deref().unwrap_or("off"),
            auditd.as_deref().unwrap_or("off"),
            sec.spool_dir.display()
        );
        let for_status = spool;
        let status_acked = acked.clone();
        Ok(Some(StartedSource {
            name: "ingest".into(),
            events: SourceEvents::Positioned(events),
            detail,
            status: Some(Arc::new(
                // `store_acked`: records whose alerts are durable in the store; the spool keeps
                // everything after it.
                move || serde_json::json!({"spool_committed": for_status.committed(), "spool_durable": for_status.durable(), "store_acked": status_acked.load(Ordering::Acquire)}),
            )),
            stop: Some(Box::new(move || {
                let _ = stop_tx.send(true);
            })),
            acked: Some(Arc::new(move |p: &ResumePoint| {
                if let Some(seq) = p.spool_seq() {
                    acked.fetch_max(seq, Ordering::AcqRel);
                }
            })),
        }))
    }
}

/// Where the consumer starts: the position the store committed, when it belongs to this spool;
/// else the spool's own checkpoint (a first start, a store from before positions were kept, or one
/// whose position was unreadable: [`crate::store::Store::spool_resume_point`] logs that).
fn resume_point(stored: Option<&ResumePoint>, spool: &Spool) -> Position {
    let Some(v) = stored else {
        return Position {
            seq: spool.committed(),
            decoders: Vec::new(),
            contexts: Vec::new(),
        };
    };
    match v {
        ResumePoint::Spool(p) if p.seq <= spool.durable() && p.seq >= spool.committed() => {
            tracing::info!(
                seq = p.seq,
                decoders_ahead = p.decoders.len(),
                "network ingest resumes where the alert store says it stopped"
            );
            p.clone()
        }
        ResumePoint::Spool(p) => {
            // The spool was replaced or reset (its records do not go as far), or the store was
            // replaced by an older copy: the stored position does not describe this spool.
            tracing::warn!(stored = p.seq, spool_committed = spool.committed(), spool_durable = spool.durable(), "the alert store's ingest position does not match the spool; resuming from the spool's checkpoint");
            Position {
                seq: spool.committed(),
                decoders: Vec::new(),
                contexts: Vec::new(),
            }
        }
        ResumePoint::File { .. } => {
            tracing::warn!("the alert store holds a file offset, not a spool position, for network ingest; resuming from the spool's checkpoint");
            Position {
                seq: spool.committed(),
                decoders: Vec::new(),
                contexts: Vec::new(),
            }
        }
    }
}

/// Hands decoded events to the correlator stage, each batch followed by the position that covers
/// it; rejects are counted and logged.
struct ChannelSink<'a> {
    tx: &'a mpsc::Sender<SourceItem>,
    /// Bytes of events between here and the correlator (see `inflight.rs`).
    budget: Arc<super::inflight::InFlight>,
    stop: &'a watch::Receiver<bool>,
    metrics: &'a Metrics,
    /// The last position the store made durable.
    acked: &'a AtomicU64,
    sent: Position,
    closed: bool,
}

impl Sink for ChannelSink<'_> {
    fn emit(&mut self, e: Emitted) {
        match e.result {
            Ok(ev) => {
                if e.format == ingest::Format::Ecs && ingest::lacks_ecs_category(&ev) {
                    self.metrics
                        .ingest_ecs_uncategorized
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !self.closed {
                    // Waits while the events on their way to the correlator hold the budget.
                    let held = self
                        .budget
                        .acquire(correlator::eql::sequence::event_bytes(&ev), || {
                            *self.stop.borrow()
                        });
                    if self
                        .tx
                        .blocking_send(SourceItem::Event(ev, Some(held)))
                        .is_err()
                    {
                        self.closed = true;
                    }
                }
            }
            Err(err) => {
                self.metrics
                    .ingest_rejects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(seq = e.seq, format = e.format.as_str(), error = %err, "spooled record rejected by its decoder");
            }
        }
    }

    fn flush(&mut self, at: &Position) -> std::io::Result<()> {
        if self.closed || *at == self.sent {
            return Ok(());
        }
        if self
            .tx
            .blocking_send(SourceItem::Resume(ResumePoint::Spool(at.clone())))
            .is_err()
        {
            self.closed = true;
        } else {
            self.sent = at.clone();
        }
        Ok(())
    }

    /// The spool keeps everything the store has not made durable with its alerts.
    fn durable_upto(&mut self, safe: u64) -> u64 {
        self.acked.load(Ordering::Acquire).min(safe)
    }

    /// At shutdown the correlator may be far behind (a flood): what is spooled but not fed stays
    /// in the spool for the next start rather than holding the shutdown up.
    fn drain_on_stop(&self) -> bool {
        false
    }
}

/// Reads the spool after `start`, decodes, and forwards events and positions. The spool is
/// committed only up to what the store has acknowledged as durable.
// The consumer thread's whole context, handed over once at spawn.
#[allow(clippy::too_many_arguments)]
fn consume(
    spool: &Spool,
    start: Position,
    tx: &mpsc::Sender<SourceItem>,
    acked: &AtomicU64,
    idle: Duration,
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
    names: ingest::agents::AgentNames,
) {
    let mut consumer = Consumer::new();
    consumer.set_agent_names(names);
    consumer.resume_at(&start);
    let mut sink = ChannelSink {
        tx,
        budget: super::inflight::InFlight::new(super::inflight::INGEST_INFLIGHT_BYTES),
        stop,
        metrics,
        acked,
        sent: start.clone(),
        closed: false,
    };
    if let Err(e) = drive(&mut consumer, spool, start.seq, idle, stop, &mut sink) {
        tracing::error!(error = %e, "network ingest consumer stopped");
    }
}

/// The seams `sensor run` is built with: the kernel sensor and network ingest as sources, the rules
/// and analytics of [`crate::rules::daemon_rules`].
pub fn default_seams() -> super::Seams {
    super::Seams {
        rules: Arc::new(
            |cfg: &crate::config::RulesConfig| -> Result<_, super::BoxError> {
                Ok(crate::rules::daemon_rules(cfg)?)
            },
        ),
        sources: vec![Box::new(KernelStarter), Box::new(IngestStarter::new())],
    }
}
