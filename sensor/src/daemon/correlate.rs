//! The correlator stage: events from every source go through every detector; alerts go to the store.
//!
//! Watermarks: event time advances with the newest event seen, minus the configured lateness. While the
//! sources are idle, event time is taken to advance with the wall clock since the last event arrived, so
//! windows close and absence rules fire on a quiet host too (and a replay of old data is not expired by
//! the wall clock while it is flowing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use correlator::Alert;
use tokio::sync::{mpsc, oneshot};

use super::{Cover, Input};
use crate::api::ReloadReport;
use crate::clock::wall_ns;
use crate::metrics::{Metrics, SourceCounters};
use crate::rules::LoadedRule;
use crate::store::{AckFn, ResumePoint, StoreHandle};

/// The main loop's request to the correlator stage: swap in new rules (the API's and SIGHUP's
/// [`crate::api::Control::Reload`] ends here).
pub(crate) struct Reload {
    pub(crate) rules: Vec<LoadedRule>,
    pub(crate) lateness_ns: i64,
    pub(crate) reply: oneshot::Sender<ReloadReport>,
}

pub(crate) struct Setup {
    pub(crate) rules: Vec<LoadedRule>,
    pub(crate) lateness_ns: i64,
    pub(crate) sources: Vec<String>,
    /// Per source: told once a position it sent is durable in the store.
    pub(crate) acks: Vec<Option<AckFn>>,
    pub(crate) input: mpsc::Receiver<Input>,
    pub(crate) control: mpsc::Receiver<Reload>,
    pub(crate) store: StoreHandle,
    pub(crate) metrics: Arc<Metrics>,
    /// Where detector state (learned baselines) is saved: every [`STATE_EVERY`] and at shutdown.
    pub(crate) state_file: Option<std::path::PathBuf>,
    /// `[fleet] role = "edge"`: every event and alert also goes to the edge journal.
    pub(crate) tap: Option<Arc<super::fleet::EdgeTap>>,
    /// Turns true at shutdown: from then on the stage processes what is queued for at most
    /// [`SHUTDOWN_GRACE`] (see [`Stopping`]).
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

/// How long the stage goes on processing queued events once shutdown has begun. After it, what is
/// still queued is set aside unprocessed: a positioned or file source's events are read again at
/// the next start (their positions do not move past them); a plain source's (the kernel sensor's,
/// which has nothing to replay from) are counted as dropped. A flood can queue tens of thousands of
/// events behind slow detectors: processing them all made a stop take minutes.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the stage did with its queue once shutdown began.
#[derive(Default)]
struct Stopping {
    /// When queued events stop being processed.
    deadline: Option<Instant>,
    /// Events of positioned and file sources set aside: replayed at the next start.
    left: u64,
    /// Events of plain sources set aside: lost.
    dropped: u64,
}

/// How often detector state (baselines) is written to the state file while running.
const STATE_EVERY: Duration = Duration::from_secs(30);

/// Event time moves the watermark at least this far before detectors are told (batching).
const WATERMARK_STEP_NS: i64 = 100_000_000;
/// Source positions are committed at least this often while events flow without alerts.
const OFFSET_EVERY: Duration = Duration::from_secs(1);

struct Stage {
    rules: Vec<LoadedRule>,
    lateness_ns: i64,
    sources: Vec<String>,
    acks: Vec<Option<AckFn>>,
    counters: Vec<Arc<SourceCounters>>,
    rule_counters: HashMap<String, Arc<AtomicU64>>,
    metrics: Arc<Metrics>,
    store: StoreHandle,
    max_ts: i64,
    watermark: i64,
    last_arrival: Instant,
    /// Positions that cover every alert in `out[..covered]`.
    positions: BTreeMap<usize, ResumePoint>,
    positions_dirty: bool,
    /// Positions that arrived while some positioned source was uncovered: they go to `positions`
    /// once none is.
    held: BTreeMap<usize, ResumePoint>,
    /// Positioned sources with events processed after their last position.
    uncovered: BTreeSet<usize>,
    /// `out[..covered]` may be committed with `positions`; the rest waits for positions that cover
    /// the events it came from (committed earlier, a crash would process those events again).
    covered: usize,
    last_offsets: Instant,
    out: Vec<Alert>,
    tap: Option<Arc<super::fleet::EdgeTap>>,
    stopping: Stopping,
}

pub(crate) async fn run(setup: Setup) {
    let Setup {
        rules,
        lateness_ns,
        sources,
        acks,
        mut input,
        mut control,
        store,
        metrics,
        state_file,
        tap,
        mut shutdown,
    } = setup;
    let counters = sources.iter().map(|s| metrics.source(s)).collect();
    let mut st = Stage {
        rules,
        lateness_ns,
        sources,
        acks,
        counters,
        rule_counters: HashMap::new(),
        metrics,
        store,
        max_ts: 0,
        watermark: i64::MIN,
        last_arrival: Instant::now(),
        positions: BTreeMap::new(),
        positions_dirty: false,
        held: BTreeMap::new(),
        uncovered: BTreeSet::new(),
        covered: 0,
        last_offsets: Instant::now(),
        out: Vec::new(),
        tap,
        stopping: Stopping::default(),
    };
    let mut buf = Vec::with_capacity(512);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control_open = true;
    let mut shutdown_open = true;
    let mut last_state_save = Instant::now();
    loop {
        tokio::select! {
            biased;
            ctl = control.recv(), if control_open => match ctl {
                Some(Reload { rules, lateness_ns, reply }) => {
                    let _ = reply.send(st.reload(rules, lateness_ns));
                }
                None => control_open = false,
            },
            changed = shutdown.changed(), if shutdown_open => {
                shutdown_open = false;
                if changed.is_ok() && *shutdown.borrow() {
                    st.stopping.deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                }
            }
            n = input.recv_many(&mut buf, 512) => {
                if n == 0 {
                    break;
                }
                st.events(&mut buf);
                st.flush(false).await;
            }
            _ = tick.tick() => {
                st.idle_watermark();
                st.flush(false).await;
                if last_state_save.elapsed() >= STATE_EVERY {
                    st.save_state(state_file.as_deref());
                    last_state_save = Instant::now();
                }
            }
        }
    }
    st.flush(true).await;
    st.save_state(state_file.as_deref());
    if st.stopping.left > 0 || st.stopping.dropped > 0 {
        tracing::warn!(
            left_for_next_start = st.stopping.left,
            dropped = st.stopping.dropped,
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "shutdown: queued events not processed within the grace period; network ingest and file sources read theirs again at the next start (their positions stay before them), kernel events have nothing to replay from and are dropped"
        );
    } else if st.stopping.deadline.is_some() {
        tracing::info!("shutdown: every queued event processed");
    }
}

impl Stage {
    /// Writes every detector's state (baselines) atomically; a failure is logged, never fatal.
    fn save_state(&self, path: Option<&std::path::Path>) {
        let Some(path) = path else { return };
        let map =
            correlator::analytics::save_states(self.rules.iter().map(|r| r.detector.as_ref()));
        if map.is_empty() {
            return;
        }
        if let Err(e) = crate::rules::write_state(map, path) {
            tracing::warn!(path = %path.display(), error = format!("{e:#}"), "could not save detector state (baselines)");
        }
    }

    /// Whether shutdown began more than [`SHUTDOWN_GRACE`] ago: queued inputs are then set aside.
    fn past_grace(&self) -> bool {
        self.stopping.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sets an input aside unprocessed (shutdown, past the grace period). Positions (marks) are not
    /// taken either: the source resumes before the events set aside.
    fn set_aside(&mut self, inp: Input) {
        if inp.event.is_none() {
            return;
        }
        match inp.cover {
            Cover::None => self.stopping.dropped += 1,
            Cover::Uncovered | Cover::Mark(_) | Cover::Closed => self.stopping.left += 1,
        }
    }

    fn events(&mut self, buf: &mut Vec<Input>) {
        self.last_arrival = Instant::now();
        for inp in buf.drain(..) {
            if self.past_grace() {
                self.set_aside(inp);
                continue;
            }
            if let Some(mut event) = inp.event {
                if event.timestamp_ns == 0 {
                    // Events without a time are stamped at arrival (documented in docs/config.md).
                    event.timestamp_ns = wall_ns();
                }
                self.max_ts = self.max_ts.max(event.timestamp_ns);
                if let Some(t) = &self.tap {
                    t.event(&event);
                }
                for r in &mut self.rules {
                    r.detector.on_event(&event, &mut self.out);
                }
                if let Some(c) = self.counters.get(inp.src) {
                    c.events_out.fetch_add(1, Relaxed);
                }
            }
            // Processed: its bytes go back to the source's in-flight budget.
            drop(inp.held);
            match inp.cover {
                Cover::None => {}
                Cover::Uncovered => {
                    self.uncovered.insert(inp.src);
                }
                Cover::Mark(p) => {
                    // A file source is never uncovered: only a positioned source's mark covers.
                    self.uncovered.remove(&inp.src);
                    self.note(inp.src, p);
                }
                Cover::Closed => {
                    self.uncovered.remove(&inp.src);
                    self.note_covered();
                }
            }
            self.note_covered();
        }
        let wm = self.max_ts.saturating_sub(self.lateness_ns);
        if wm >= self.watermark.saturating_add(WATERMARK_STEP_NS) {
            self.advance(wm);
        }
    }

    /// A source's new position: in force at once, or held until no positioned source is uncovered.
    fn note(&mut self, src: usize, r: ResumePoint) {
        if self.uncovered.is_empty() {
            self.positions.insert(src, r);
            self.positions_dirty = true;
        } else {
            self.held.insert(src, r);
        }
    }

    /// With no positioned source uncovered, every alert so far may be committed with the positions.
    fn note_covered(&mut self) {
        if self.uncovered.is_empty() {
            if !self.held.is_empty() {
                self.positions.append(&mut self.held);
                self.positions_dirty = true;
            }
            self.covered = self.out.len();
        }
    }

    fn idle_watermark(&mut self) {
        if self.max_ts == 0 {
            return;
        }
        let idle = i64::try_from(self.last_arrival.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let wm = self
            .max_ts
            .saturating_add(idle)
            .saturating_sub(self.lateness_ns);
        if wm > self.watermark {
            self.advance(wm);
        }
    }

    fn advance(&mut self, wm: i64) {
        self.watermark = wm;
        for r in &mut self.rules {
            r.detector.on_watermark(wm, &mut self.out);
        }
        self.note_covered();
    }

    async fn flush(&mut self, last: bool) {
        self.publish_pending();
        if last {
            // Whatever is still uncovered (a source that stopped without its last position) is
            // committed rather than dropped.
            self.uncovered.clear();
            self.note_covered();
        }
        let offsets_due =
            self.positions_dirty && (last || self.last_offsets.elapsed() >= OFFSET_EVERY);
        if self.covered == 0 && !offsets_due {
            return;
        }
        let alerts: Vec<Alert> = self.out.drain(..self.covered).collect();
        self.covered = 0;
        for a in &alerts {
            let c = match self.rule_counters.get(&a.rule_id) {
                Some(c) => c.clone(),
                None => {
                    let c = self.metrics.rule(&a.rule_id);
                    self.rule_counters.insert(a.rule_id.clone(), c.clone());
                    c
                }
            };
            c.fetch_add(1, Relaxed);
        }
        if let Some(t) = &self.tap {
            t.alerts(&alerts);
        }
        // Positions go with the alerts of the events before them, in one transaction: after a crash a
        // source resumes exactly after the last event whose alerts are stored.
        let mut points = Vec::new();
        if self.positions_dirty {
            self.positions_dirty = false;
            self.last_offsets = Instant::now();
            for (src, r) in &self.positions {
                let name = self.sources.get(*src).cloned().unwrap_or_default();
                // Only positioned sources hear that their point is durable (a file source has
                // nothing to drop).
                let ack = match r {
                    ResumePoint::File { .. } => None,
                    ResumePoint::Spool(_) => self.acks.get(*src).cloned().flatten(),
                };
                points.push((name, r.clone(), ack));
            }
        }
        if !self.store.record(alerts, points).await {
            tracing::error!("the alert store has stopped; alerts cannot be kept");
        }
    }

    fn publish_pending(&self) {
        let pending: usize = self.rules.iter().map(|r| r.detector.pending()).sum();
        self.metrics
            .pending
            .store(i64::try_from(pending).unwrap_or(i64::MAX), Relaxed);
        let shed: u64 = self.rules.iter().map(|r| r.detector.shed()).sum();
        self.metrics.pending_shed.store(shed, Relaxed);
    }

    fn reload(&mut self, new: Vec<LoadedRule>, lateness_ns: i64) -> ReloadReport {
        self.lateness_ns = lateness_ns;
        let mut old: HashMap<String, LoadedRule> = self
            .rules
            .drain(..)
            .map(|r| (r.detector.id().to_string(), r))
            .collect();
        let mut report = ReloadReport::default();
        for r in new {
            let id = r.detector.id().to_string();
            match old.remove(&id) {
                Some(prev) if prev.version == r.version => {
                    report.kept.push(id);
                    self.rules.push(prev);
                }
                _ => {
                    report.loaded.push(id);
                    self.rules.push(r);
                }
            }
        }
        report.removed = old.into_keys().collect();
        report.removed.sort();
        self.metrics
            .rules_loaded
            .store(i64::try_from(self.rules.len()).unwrap_or(i64::MAX), Relaxed);
        self.publish_pending();
        report
    }
}
