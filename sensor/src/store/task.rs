//! The store's own thread: it owns the SQLite connection, writes alert batches in one transaction each,
//! measures event-time-to-store latency, and publishes what it stored to outputs and `alerts tail`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use correlator::Alert;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    AlertUpdate, Recorded, ResumePoint, Status, Store, StoreError, StoreStats, StoredAlert,
};
use crate::clock::wall_ns;
use crate::metrics::Metrics;

/// Called with a source's resume point once the store has made it durable (the daemon's
/// `StartedSource::acked`).
pub type AckFn = Arc<dyn Fn(&ResumePoint) + Send + Sync>;

/// A source's resume point on its way to the store: the source's name, the point, and whom to tell
/// once it is durable.
pub(crate) type PointToCommit = (String, ResumePoint, Option<AckFn>);

type Call = Box<dyn FnOnce(&mut Store) + Send>;

pub(crate) enum StoreMsg {
    Alerts {
        alerts: Vec<Alert>,
        points: Vec<PointToCommit>,
    },
    Call(Call),
    Shutdown(oneshot::Sender<Result<StoreStats, StoreError>>),
}

/// A handle to the store thread (cheap to clone).
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreMsg>,
}

impl StoreHandle {
    /// Runs `f` on the store thread and returns its result (`None` if the store has stopped).
    pub async fn call<R, F>(&self, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.tx.send(StoreMsg::Call(call)).await.ok()?;
        rx.await.ok()
    }

    /// Queues alerts and the sources' resume points for the store, to be committed in one
    /// transaction (false if the store has stopped). Each point's ack is called once that
    /// transaction is durable.
    pub(crate) async fn record(&self, alerts: Vec<Alert>, points: Vec<PointToCommit>) -> bool {
        self.tx
            .send(StoreMsg::Alerts { alerts, points })
            .await
            .is_ok()
    }

    pub(crate) async fn shutdown(&self) -> Option<Result<StoreStats, StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(StoreMsg::Shutdown(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Most alerts folded into one transaction.
const BATCH: usize = 4096;

pub(crate) fn spawn(
    store: Store,
    metrics: Arc<Metrics>,
    alerts: broadcast::Sender<Arc<AlertUpdate>>,
) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let thread = std::thread::Builder::new()
        .name("sensor-store".into())
        .spawn(move || store_loop(store, rx, &metrics, &alerts))
        .unwrap_or_else(|e| {
            // Without a thread there is no store; this only happens when the process is out of resources.
            tracing::error!(error = %e, "cannot start the alert store thread");
            std::process::exit(1)
        });
    (StoreHandle { tx }, thread)
}

fn store_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<StoreMsg>,
    metrics: &Metrics,
    bus: &broadcast::Sender<Arc<AlertUpdate>>,
) {
    let mut held: Option<StoreMsg> = None;
    let mut ckpt = Checkpointer::new();
    // Positions committed but not yet known to be on disk, by source: with `synchronous=NORMAL` a
    // commit survives a crash of the process at once, a power loss only once the WAL is synced,
    // which every checkpoint does first. Sources hear of them after the next checkpoint.
    let mut unsynced: std::collections::BTreeMap<String, (ResumePoint, AckFn)> =
        std::collections::BTreeMap::new();
    loop {
        let Some(msg) = held.take().or_else(|| rx.blocking_recv()) else {
            break;
        };
        let started = Instant::now();
        let what = match &msg {
            StoreMsg::Alerts { .. } => "alert batch",
            StoreMsg::Call(_) => "query",
            StoreMsg::Shutdown(_) => "shutdown",
        };
        if !matches!(msg, StoreMsg::Shutdown(_)) {
            ckpt.dirty = true;
        }
        match msg {
            StoreMsg::Alerts {
                mut alerts,
                mut points,
            } => {
                // Fold whatever else is queued into the same transaction.
                while alerts.len() < BATCH {
                    match rx.try_recv() {
                        Ok(StoreMsg::Alerts {
                            alerts: a,
                            points: p,
                        }) => {
                            alerts.extend(a);
                            points.extend(p);
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (points, acks): (Vec<(String, ResumePoint)>, Vec<Option<AckFn>>) = points
                    .into_iter()
                    .map(|(name, point, ack)| ((name, point), ack))
                    .unzip();
                if write_batch(&mut store, alerts, &points, metrics, bus) {
                    for ((name, point), ack) in points.into_iter().zip(acks) {
                        if let Some(ack) = ack {
                            unsynced.insert(name, (point, ack));
                        }
                    }
                }
            }
            StoreMsg::Call(f) => f(&mut store),
            StoreMsg::Shutdown(reply) => {
                let stats = store.stats();
                let res = store.close().and(stats);
                if res.is_ok() {
                    ack_all(&mut unsynced);
                }
                let _ = reply.send(res);
                return;
            }
        }
        warn_if_slow(what, started);
        let idle = held.is_none() && rx.is_empty();
        if ckpt.maybe_run(&store, idle, metrics) {
            ack_all(&mut unsynced);
        }
    }
    if let Err(e) = store.close() {
        tracing::error!(error = %e, "closing the alert store failed");
    }
}

/// Tells each source the last position of it that is now durable.
fn ack_all(unsynced: &mut std::collections::BTreeMap<String, (ResumePoint, AckFn)>) {
    for (_, (p, ack)) in std::mem::take(unsynced) {
        ack(&p);
    }
}

/// A store operation slower than this is logged: alerts wait behind it.
const SLOW_OP: Duration = Duration::from_millis(100);

fn warn_if_slow(what: &str, started: Instant) {
    let took = started.elapsed();
    if took >= SLOW_OP {
        tracing::warn!(
            operation = what,
            ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "slow alert store operation"
        );
    }
}

/// When to move the WAL into the database file. SQLite's automatic checkpoint runs inside the
/// commit that crosses its threshold, so the alerts of that commit wait for the checkpoint's
/// fsync; here it runs between operations: when nothing is waiting (at most once a second), or
/// after [`Checkpointer::FORCE_AFTER`] of continuous writing, so the WAL stays bounded.
struct Checkpointer {
    last: Instant,
    dirty: bool,
}

impl Checkpointer {
    const IDLE_EVERY: Duration = Duration::from_secs(1);
    const FORCE_AFTER: Duration = Duration::from_secs(10);

    fn new() -> Checkpointer {
        Checkpointer {
            last: Instant::now(),
            dirty: false,
        }
    }

    /// Runs a checkpoint when due; true when one ran and succeeded (everything committed before
    /// it is then on disk).
    fn maybe_run(&mut self, store: &Store, idle: bool, metrics: &Metrics) -> bool {
        let since = self.last.elapsed();
        if !self.dirty || !(idle && since >= Self::IDLE_EVERY || since >= Self::FORCE_AFTER) {
            return false;
        }
        let started = Instant::now();
        let ok = match store.checkpoint_passive() {
            Ok(()) => true,
            Err(e) => {
                metrics.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "alert store checkpoint failed");
                false
            }
        };
        warn_if_slow("checkpoint", started);
        self.last = Instant::now();
        self.dirty = false;
        ok
    }
}

/// Writes one transaction; false when it could not be written (after retries; the alerts are logged).
fn write_batch(
    store: &mut Store,
    alerts: Vec<Alert>,
    points: &[(String, ResumePoint)],
    metrics: &Metrics,
    bus: &broadcast::Sender<Arc<AlertUpdate>>,
) -> bool {
    let mut attempt = 0;
    let recorded = loop {
        match store.record_batch(&alerts, points, wall_ns()) {
            Ok(r) => break r,
            Err(e) if attempt < 5 => {
                attempt += 1;
                metrics.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, attempt, "alert store write failed; retrying");
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            Err(e) => {
                metrics.store_errors.fetch_add(1, Relaxed);
                // Keep them somewhere an operator can find them: the log.
                for a in &alerts {
                    tracing::error!(error = %e, alert = %serde_json::to_string(a).unwrap_or_default(), "alert could not be stored");
                }
                return false;
            }
        }
    };
    let now = wall_ns();
    for (a, r) in alerts.into_iter().zip(recorded) {
        metrics
            .latency
            .observe_ns(now.saturating_sub(a.timestamp_ns).max(0));
        if r.new {
            metrics.alerts_new.fetch_add(1, Relaxed);
        } else {
            metrics.alerts_repeated.fetch_add(1, Relaxed);
        }
        if r.status == Status::Suppressed || bus.receiver_count() == 0 {
            continue;
        }
        let _ = bus.send(Arc::new(update(a, r, now)));
    }
    true
}

fn update(a: Alert, r: Recorded, now: i64) -> AlertUpdate {
    let container = crate::store::container_of(&a);
    let source = crate::store::source_of(&a);
    AlertUpdate {
        new: r.new,
        alert: StoredAlert {
            id: r.id,
            rule_id: a.rule_id,
            rule_name: a.rule_name,
            severity: a.severity,
            risk_score: a.risk_score,
            status: r.status,
            first_seen_ns: a.first_event_ns.min(a.timestamp_ns),
            last_seen_ns: a.timestamp_ns,
            count: r.count,
            host: a.host,
            user: a.user,
            process: a.process,
            source,
            attack: a.attack,
            reason: a.reason,
            settings: a.settings,
            join_keys: a.join_keys,
            container,
            created_ns: now,
            updated_ns: now,
        },
        evidence: a.evidence,
    }
}
