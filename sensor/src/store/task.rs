//! The store's own thread: it owns the SQLite connection, writes alert batches in one transaction each,
//! measures event-time-to-store latency, and publishes what it stored to outputs and `alerts tail`.

use std::sync::atomic::AtomicBool;
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
    /// Set when the daemon begins to stop: a write waiting for disk space gives up at once (its
    /// sources' positions are then not acknowledged, so nothing acknowledged is lost).
    stopping: Arc<AtomicBool>,
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

    /// The daemon is stopping: no write waits for disk space any more (see [`write_batch`]).
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    pub(crate) async fn shutdown(&self) -> Option<Result<StoreStats, StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(StoreMsg::Shutdown(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Most alerts folded into one transaction.
const BATCH: usize = 4096;
/// Most queued messages set aside while a write waits for disk space (queries behind them wait too).
const MAX_HELD: usize = 256;

pub(crate) fn spawn(
    store: Store,
    metrics: Arc<Metrics>,
    alerts: broadcast::Sender<Arc<AlertUpdate>>,
) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let stopping = Arc::new(AtomicBool::new(false));
    let thread_stopping = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("sensor-store".into())
        .spawn(move || store_loop(store, rx, &thread_stopping, &metrics, &alerts))
        .unwrap_or_else(|e| {
            // Without a thread there is no store; this only happens when the process is out of resources.
            tracing::error!(error = %e, "cannot start the alert store thread");
            std::process::exit(1)
        });
    (StoreHandle { tx, stopping }, thread)
}

fn store_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<StoreMsg>,
    stopping: &AtomicBool,
    metrics: &Metrics,
    bus: &broadcast::Sender<Arc<AlertUpdate>>,
) {
    // Messages taken off the queue but not handled yet (see `write_batch`), oldest first.
    let mut held: std::collections::VecDeque<StoreMsg> = std::collections::VecDeque::new();
    let mut ckpt = Checkpointer::new();
    // Positions committed but not yet known to be on disk, by source: with `synchronous=NORMAL` a
    // commit survives a crash of the process at once, a power loss only once the WAL is synced,
    // which every checkpoint does first. Sources hear of them after the next checkpoint.
    let mut unsynced: std::collections::BTreeMap<String, (ResumePoint, AckFn)> =
        std::collections::BTreeMap::new();
    // Sources some of whose alerts could not be stored (see `write_batch`).
    let mut dropped: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let Some(msg) = held.pop_front().or_else(|| rx.blocking_recv()) else {
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
                            held.push_back(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (points, acks): (Vec<(String, ResumePoint)>, Vec<Option<AckFn>>) = points
                    .into_iter()
                    .map(|(name, point, ack)| ((name, point), ack))
                    .unzip();
                let mut io = BatchIo {
                    store: &mut store,
                    rx: &mut rx,
                    held: &mut held,
                    stopping,
                };
                if write_batch(&mut io, alerts, &points, metrics, bus) {
                    for ((name, point), ack) in points.into_iter().zip(acks) {
                        if let Some(ack) = ack.filter(|_| !dropped.contains(&name)) {
                            unsynced.insert(name, (point, ack));
                        }
                    }
                } else {
                    // The alerts of these points are only in the log: their sources must replay
                    // them after a restart, so none of their later points is acknowledged.
                    for (name, _) in points {
                        if dropped.insert(name.clone()) {
                            tracing::error!(source = %name, "alerts of this source could not be stored: its resume point stays where it was until a restart, which replays them");
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
        let idle = held.is_empty() && rx.is_empty();
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

/// Whether a store error is the disk (or the user's quota) being full.
fn disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
        if f.code == rusqlite::ErrorCode::DiskFull)
}

/// What [`write_batch`] works with: the store, and the queue it serves while it waits.
struct BatchIo<'a> {
    store: &'a mut Store,
    rx: &'a mut mpsc::Receiver<StoreMsg>,
    held: &'a mut std::collections::VecDeque<StoreMsg>,
    stopping: &'a AtomicBool,
}

/// Writes one transaction; false when it could not be written (the alerts are logged). A full disk
/// is waited out (alerts are never dropped for it; everything behind them waits, up to the
/// sources, whose records stay in the kernel ring or the spool): queries are answered meanwhile, and
/// only a shutdown ends the wait (the daemon beginning to stop, or a shutdown queued behind the
/// batch): the batch is then logged and its sources' positions are not acknowledged, so they replay
/// it at the next start. Other errors are retried five times.
fn write_batch(
    io: &mut BatchIo<'_>,
    alerts: Vec<Alert>,
    points: &[(String, ResumePoint)],
    metrics: &Metrics,
    bus: &broadcast::Sender<Arc<AlertUpdate>>,
) -> bool {
    let mut attempt = 0;
    let mut full_for = 0u64;
    let recorded = loop {
        let err = match io.store.record_batch(&alerts, points, wall_ns()) {
            Ok(r) => {
                if full_for > 0 {
                    tracing::info!(
                        seconds = full_for / 4,
                        alerts = alerts.len(),
                        "alert store: space is back; the waiting alerts are stored"
                    );
                }
                break r;
            }
            Err(e) => e,
        };
        let stopping =
            io.stopping.load(Relaxed) || io.held.iter().any(|m| matches!(m, StoreMsg::Shutdown(_)));
        if disk_full(&err) && !stopping {
            if full_for.is_multiple_of(240) {
                metrics.store_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %err, alerts = alerts.len(), seconds = full_for / 4, "alert store: DISK FULL; alerts wait until space is freed (none is dropped)");
            }
            full_for += 1;
            // Queries are answered meanwhile (reading needs no space); later alert batches are
            // set aside, up to a bound, and written in order once space is back.
            while io.held.len() < MAX_HELD {
                match io.rx.try_recv() {
                    Ok(StoreMsg::Call(f)) => f(io.store),
                    Ok(other) => io.held.push_back(other),
                    Err(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        if attempt < 5 && !disk_full(&err) {
            attempt += 1;
            metrics.store_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %err, attempt, "alert store write failed; retrying");
            std::thread::sleep(Duration::from_millis(100 << attempt));
            continue;
        }
        metrics.store_errors.fetch_add(1, Relaxed);
        // Keep them somewhere an operator can find them: the log.
        for a in &alerts {
            tracing::error!(error = %err, alert = %serde_json::to_string(a).unwrap_or_default(), "alert could not be stored");
        }
        return false;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn alert(i: usize) -> Alert {
        Alert {
            rule_id: format!("r{i}"),
            rule_name: "Rule".into(),
            severity: correlator::Severity::High,
            risk_score: 73,
            attack: correlator::AttackRef::default(),
            timestamp_ns: wall_ns(),
            first_event_ns: wall_ns(),
            join_keys: vec![serde_json::json!(format!("k{i}"))],
            host: Some("h".into()),
            user: None,
            process: None,
            settings: serde_json::Map::new(),
            reason: "x".repeat(4096),
            evidence: vec![serde_json::json!({"message": "y".repeat(8192)})],
        }
    }

    /// A write that waits for disk space (SQLite's `max_page_count` stands in for a full disk)
    /// gives up once the daemon begins to stop, so the shutdown is not held up; its position is
    /// not acknowledged (the source replays it at the next start).
    #[test]
    fn a_write_waiting_for_space_gives_up_when_the_daemon_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&super::super::StoreConfig::new(dir.path().join("a.db"))).unwrap();
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let metrics = Metrics::new();
        let (bus, _) = broadcast::channel(16);
        let (handle, thread) = spawn(store, metrics.clone(), bus);
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        let ack: AckFn = Arc::new(move |_| {
            a.fetch_add(1, Relaxed);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let alerts = (0..64).map(alert).collect();
            let point = ResumePoint::File {
                offset: 1,
                inode: 1,
            };
            assert!(
                handle
                    .record(alerts, vec![("s".into(), point, Some(ack))])
                    .await
            );
            // It waits for space: counted, nothing acknowledged.
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(metrics.store_errors.load(Relaxed) >= 1, "no DISK FULL");
            assert_eq!(acked.load(Relaxed), 0);
            assert_eq!(metrics.store_errors.load(Relaxed), 1);
            // The stop begins: the write gives up (counted again) before any Shutdown message is
            // sent; in the daemon none would come while the correlator is blocked behind the store.
            handle.stopping();
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(
                metrics.store_errors.load(Relaxed),
                2,
                "still waiting for space"
            );
            let began = Instant::now();
            let stats = tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
                .await
                .expect("the store stopped while the disk was full");
            assert!(stats.is_some());
            assert!(began.elapsed() < Duration::from_secs(5));
        });
        thread.join().unwrap();
        assert_eq!(
            acked.load(Relaxed),
            0,
            "a position of unstored alerts was acknowledged"
        );
    }
}
