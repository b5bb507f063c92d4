//! The two live event sources of `sensor run`: the kernel sensor and network ingest.
//!
//! Each is a [`SourceStarter`]: refused with a reason (logged, the daemon goes on without it) or
//! started as a stream of `correlator::Event`s with status and stop hooks.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{SourceStarter, StartedSource};
use crate::config::Config;
use crate::ingest::consumer::{drive, Consumer, Emitted, Sink};
use crate::ingest::Spool;
use crate::kernel::KernelSensor;
use crate::metrics::Metrics;

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
            events,
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
        }))
    }
}

/// Starts network ingest when `[ingest] enabled`: the listeners write to the durable spool; a
/// consumer thread decodes spooled records and hands the events to the correlator.
pub struct IngestStarter;

impl SourceStarter for IngestStarter {
    fn name(&self) -> String {
        "ingest".into()
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, events) = mpsc::channel(8192);
        let http = sec.listeners.http.as_ref().map(|h| h.listen.to_string());
        let auditd = sec.listeners.auditd.as_ref().map(|a| a.listen.to_string());
        let server = tokio::spawn(crate::ingest::serve(
            sec.listeners.clone(),
            spool.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(async move {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "network ingest stopped"),
                Err(e) => tracing::error!(error = %e, "network ingest task failed"),
            }
        });
        let idle = Duration::from_secs(sec.group_idle_secs);
        let m = metrics.clone();
        let consumer_spool = spool.clone();
        std::thread::Builder::new()
            .name("ingest-consumer".into())
            .spawn(move || consume(&consumer_spool, &tx, idle, &stop_rx, &m))
            .map_err(|e| format!("cannot start the ingest consumer thread: {e}"))?;
        let detail = format!(
            "http {}, auditd {}, spool {}",
            http.as_deref().unwrap_or("off"),
            auditd.as_deref().unwrap_or("off"),
            sec.spool_dir.display()
        );
        let for_status = spool;
        Ok(Some(StartedSource {
            name: "ingest".into(),
            events,
            detail,
            status: Some(Arc::new(
                move || serde_json::json!({"spool_committed": for_status.committed(), "spool_durable": for_status.durable()}),
            )),
            stop: Some(Box::new(move || {
                let _ = stop_tx.send(true);
            })),
        }))
    }
}

/// Hands decoded events to the correlator stage; rejects are counted and logged.
struct ChannelSink<'a> {
    tx: &'a mpsc::Sender<correlator::Event>,
    metrics: &'a Metrics,
    closed: bool,
}

impl Sink for ChannelSink<'_> {
    fn emit(&mut self, e: Emitted) {
        match e.result {
            Ok(ev) => {
                if !self.closed && self.tx.blocking_send(ev).is_err() {
                    self.closed = true;
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

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the spool from its checkpoint, decodes, and forwards events. The checkpoint is committed
/// once the events of a batch are handed to the correlator (see ARCHITECTURE.md for the window this
/// leaves on a crash of the whole daemon).
fn consume(
    spool: &Spool,
    tx: &mpsc::Sender<correlator::Event>,
    idle: Duration,
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
) {
    let mut sink = ChannelSink {
        tx,
        metrics,
        closed: false,
    };
    if let Err(e) = drive(&mut Consumer::new(), spool, idle, stop, &mut sink) {
        tracing::error!(error = %e, "network ingest consumer stopped");
    }
}
