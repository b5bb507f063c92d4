//! Streaming evaluation of sequences, samples and joins.
//!
//! Events must arrive in event-time order (the runner's reorder buffer sees to that). State is
//! partitioned by join key; each key holds at most one partial match per stage (a newer partial at a
//! stage replaces the older one, as in both reference implementations), so memory per key is bounded by
//! the number of stages, and the total number of partials is bounded by [`SeqLimits::max_pending`],
//! the bytes of the events they hold by [`SeqLimits::max_pending_bytes`]: past either the oldest
//! partials are evicted and counted (`SeqStats::evicted`, `SeqStats::evicted_bytes`).

mod state;

use std::cell::OnceCell;
/// Hash maps on the hot path use aHash (SipHash costs more than the rest of a lookup).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Env, QueryKind, StepSpec};
use crate::event::{Event, Value};

/// A join-key value, hashable. Build it with [`KeyPart::from_value`]: a string is [`KeyPart::Short`]
/// when it fits inline and [`KeyPart::Str`] only when it does not, so equal strings give equal parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyPart {
    Null,
    Bool(bool),
    Int(i64),
    /// Bits of an f64 that is not an integer.
    Float(u64),
    /// A string of at most [`ShortStr::MAX`] bytes, held inline: building, hashing and comparing
    /// such a key touches neither the event's string allocation count nor another event's memory.
    Short(ShortStr),
    /// A longer string.
    Str(Arc<str>),
    /// Any other value, as its JSON text.
    Other(Box<str>),
}

impl KeyPart {
    pub fn from_value(v: &Value) -> KeyPart {
        match v {
            Value::Null => KeyPart::Null,
            Value::Bool(b) => KeyPart::Bool(*b),
            Value::Int(i) => KeyPart::Int(*i),
            Value::Float(f) => match v.as_i64() {
                Some(i) => KeyPart::Int(i),
                None => KeyPart::Float(f.to_bits()),
            },
            Value::Str(s) => {
                ShortStr::of(s).map_or_else(|| KeyPart::Str(s.to_arc()), KeyPart::Short)
            }
            other => KeyPart::Other(other.to_json().to_string().into()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            KeyPart::Null => serde_json::Value::Null,
            KeyPart::Bool(b) => (*b).into(),
            KeyPart::Int(i) => (*i).into(),
            KeyPart::Float(f) => serde_json::Number::from_f64(f64::from_bits(*f))
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            KeyPart::Short(s) => serde_json::Value::String(s.as_str().to_string()),
            KeyPart::Str(s) => serde_json::Value::String(s.to_string()),
            KeyPart::Other(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A short string stored inline (zero-padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShortStr {
    len: u8,
    bytes: [u8; ShortStr::MAX],
}

impl ShortStr {
    /// The longest string held inline (a `KeyPart` stays the size of an `Arc<str>` part).
    pub const MAX: usize = 22;

    pub fn new(s: &str) -> Option<ShortStr> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|l| usize::from(*l) <= Self::MAX)?;
        let mut bytes = [0u8; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(ShortStr { len, bytes })
    }

    /// [`ShortStr::new`] of a string value, from its bytes (no UTF-8 check of an inline string).
    fn of(s: &crate::event::Str) -> Option<ShortStr> {
        let b = s.as_bytes();
        let len = u8::try_from(b.len())
            .ok()
            .filter(|l| usize::from(*l) <= Self::MAX)?;
        let mut bytes = [0u8; Self::MAX];
        bytes[..b.len()].copy_from_slice(b);
        Some(ShortStr { len, bytes })
    }

    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..usize::from(self.len).min(Self::MAX)];
        // Built from a `&str` of exactly these bytes, so this never fails.
        std::str::from_utf8(b).unwrap_or_default()
    }
}

/// A join key: the values of the `by` expressions. A single-value key (the usual `by host.id`) is held
/// inline, so building one allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub smallvec::SmallVec<[KeyPart; 1]>);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// An event shared between partial matches; made into an `Arc` only when some step keeps it.
pub struct Shared<'a> {
    pub ev: &'a Event,
    arc: OnceCell<Arc<Event>>,
    /// The event's category mask, when the caller (the rule set) computed it.
    pub(crate) cats: Option<super::CatMask>,
    /// Shared-term results for this event, when the caller (the rule set) keeps them.
    memo: Option<&'a super::Memo>,
}

impl<'a> Shared<'a> {
    pub fn new(ev: &'a Event) -> Shared<'a> {
        Shared {
            ev,
            arc: OnceCell::new(),
            cats: None,
            memo: None,
        }
    }

    pub fn from_arc(ev: &'a Arc<Event>) -> Shared<'a> {
        let cell = OnceCell::new();
        let _ = cell.set(ev.clone());
        Shared {
            ev,
            arc: cell,
            cats: None,
            memo: None,
        }
    }

    /// The same event (and the same shared `Arc`, if made) with a shared-term memo.
    pub(crate) fn with_memo<'b>(self, memo: &'b super::Memo) -> Shared<'b>
    where
        'a: 'b,
    {
        Shared {
            ev: self.ev,
            arc: self.arc,
            cats: self.cats,
            memo: Some(memo),
        }
    }

    /// The evaluation environment of a streaming rule for this event.
    pub(crate) fn env(&self) -> Env<'a> {
        Env {
            lineage: None,
            vars: &[],
            cats: self.cats,
            memo: self.memo,
        }
    }

    pub fn arc(&self) -> Arc<Event> {
        self.arc.get_or_init(|| Arc::new(self.ev.clone())).clone()
    }
}

/// The join key of `ev`; `None` when a key that may not be null is null (Elasticsearch: only
/// `?optional` join keys may be null; such an event joins nothing).
fn key_for(keys: &super::Keys, ev: &Event, env: &Env<'_>) -> Option<Key> {
    let mut parts = smallvec::SmallVec::new();
    for (i, k) in keys.0.iter().enumerate() {
        let v = k.eval(ev, env);
        if v.is_null() && !keys.1.get(i).copied().unwrap_or(true) {
            return None;
        }
        parts.push(KeyPart::from_value(&v));
    }
    Some(Key(parts))
}

/// A completed sequence (or sample/join).
#[derive(Clone, Debug)]
pub struct SeqMatch {
    pub join_keys: Vec<serde_json::Value>,
    pub events: Vec<Arc<Event>>,
}

/// Bounds on pending state.
#[derive(Clone, Copy, Debug)]
pub struct SeqLimits {
    /// Most partial matches held at once (per rule); past it the oldest are evicted.
    pub max_pending: usize,
    /// Most bytes of events held by partial matches (per rule, each event counted once per partial
    /// that holds it, see [`event_bytes`]); past it the oldest partials are evicted.
    pub max_pending_bytes: usize,
}

impl Default for SeqLimits {
    fn default() -> SeqLimits {
        SeqLimits {
            max_pending: 100_000,
            max_pending_bytes: 64 << 20,
        }
    }
}

/// What an event costs held in memory, approximately: the event, its field table, the heap bytes
/// of its values and its original record. Cheap (no allocation); an upper bound for shared strings.
pub fn event_bytes(ev: &Event) -> usize {
    fn value_bytes(v: &Value) -> usize {
        match v {
            Value::Str(s) if !s.is_inline() => s.as_bytes().len(),
            Value::Array(a) => a
                .iter()
                .map(|x| std::mem::size_of::<Value>() + value_bytes(x))
                .sum(),
            Value::Object(o) => o
                .iter()
                .map(|(k, x)| std::mem::size_of::<(Arc<str>, Value)>() + k.len() + value_bytes(x))
                .sum(),
            _ => 0,
        }
    }
    std::mem::size_of::<Event>()
        + ev.raw.as_ref().map_or(0, |r| r.len())
        + ev.fields()
            .map(|(_, v)| std::mem::size_of::<(crate::event::Field, Value)>() + value_bytes(v))
            .sum::<usize>()
}

/// Counters a sequence engine keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeqStats {
    pub matches: u64,
    pub evicted: u64,
    pub expired: u64,
    pub cancelled_until: u64,
    pub cancelled_missing: u64,
    /// Partials evicted because the rule's pending bytes passed `max_pending_bytes` (also in `evicted`).
    pub evicted_bytes: u64,
}

#[derive(Clone)]
struct Partial {
    events: Vec<Arc<Event>>,
    /// [`event_bytes`] of `events`, summed.
    bytes: usize,
    start: i64,
    /// Time of the last leading-missing event seen for the key when this partial started.
    lead_seen: Option<i64>,
}

#[derive(Default)]
struct KeyState {
    /// `stages[i]`: a partial that has matched positive steps `0..=i`.
    stages: Vec<Option<Partial>>,
    /// Completed matches waiting for a trailing missing window to close.
    waiting: Vec<(Partial, i64)>,
    last_lead: Option<i64>,
}

impl KeyState {
    fn count(&self) -> usize {
        self.stages.iter().filter(|s| s.is_some()).count() + self.waiting.len()
    }

    fn bytes(&self) -> usize {
        self.stages
            .iter()
            .flatten()
            .chain(self.waiting.iter().map(|(p, _)| p))
            .map(|p| p.bytes)
            .sum()
    }
}

/// The streaming sequence matcher for one query.
pub struct SequenceEngine {
    steps: Vec<StepSpec>,
    /// Indices of positive steps in `steps`.
    positive: Vec<usize>,
    /// For each missing step: the positive stage that it guards (the index into `positive` of the step
    /// after it), `positive.len()` for trailing, 0 for leading.
    missing_before: Vec<(usize, usize)>,
    until: Option<StepSpec>,
    maxspan: Option<i64>,
    limits: SeqLimits,
    state: HashMap<Key, KeyState>,
    pending: usize,
    /// Bytes of the events pending partials hold (the sum of their `bytes`).
    bytes: usize,
    last_sweep: i64,
    pub stats: SeqStats,
}

impl SequenceEngine {
    pub fn new(kind: &QueryKind, limits: SeqLimits) -> Option<SequenceEngine> {
        let QueryKind::Sequence {
            steps,
            maxspan_ns,
            until,
        } = kind
        else {
            return None;
        };
        let mut positive = Vec::new();
        let mut missing_before = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            if s.missing {
                missing_before.push((i, positive.len()));
            } else {
                positive.push(i);
            }
        }
        Some(SequenceEngine {
            steps: steps.clone(),
            positive,
            missing_before,
            until: until.clone(),
            maxspan: *maxspan_ns,
            limits,
            state: HashMap::default(),
            pending: 0,
            bytes: 0,
            last_sweep: i64::MIN,
            stats: SeqStats::default(),
        })
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes of the events held by pending partials (what `max_pending_bytes` bounds).
    pub fn pending_event_bytes(&self) -> usize {
        self.bytes
    }

    /// Approximate bytes held by pending state (keys, partials and their event references).
    pub fn pending_bytes(&self) -> usize {
        let mut b = self.state.capacity()
            * (std::mem::size_of::<Key>() + std::mem::size_of::<KeyState>() + 8);
        for (k, s) in &self.state {
            if k.0.spilled() {
                b += k.0.len() * std::mem::size_of::<KeyPart>();
            }
            for p in s
                .stages
                .iter()
                .flatten()
                .chain(s.waiting.iter().map(|(p, _)| p))
            {
                b += std::mem::size_of::<Partial>() + p.events.capacity() * 8;
            }
            b += s.stages.capacity() * std::mem::size_of::<Option<Partial>>();
        }
        b
    }

    fn key_of(&mut self, step: usize, ev: &Event, env: &Env<'_>) -> Option<Key> {
        let keys = if step == usize::MAX {
            &self.until.as_ref()?.keys
        } else {
            &self.steps[step].keys
        };
        key_for(keys, ev, env)
    }

    /// Feeds one event (in event-time order).
    pub fn on_event(&mut self, sh: &Shared<'_>, out: &mut Vec<SeqMatch>) {
        self.on_event_env(sh, &sh.env(), out);
    }

    // Over 100 lines on purpose: the hot per-event step of a sequence (until, each stage, missing events) on one borrowed state.
    pub(crate) fn on_event_env(&mut self, sh: &Shared<'_>, env: &Env<'_>, out: &mut Vec<SeqMatch>) {
        let ev = sh.ev;
        let ts = ev.timestamp_ns;
        if let Some(u) = &self.until {
            if u.filter.matches_env(ev, env) {
                let removed = self
                    .key_of(usize::MAX, ev, env)
                    .and_then(|key| self.state.remove(&key));
                if let Some(st) = removed {
                    let n = st.count();
                    self.pending -= n;
                    self.bytes -= st.bytes();
                    self.stats.cancelled_until += n as u64;
                    // Trailing-missing matches whose window already closed are not affected by until.
                }
            }
        }
        // Missing steps: cancel partials waiting for the step after them.
        for mi in 0..self.missing_before.len() {
            let (si, stage) = self.missing_before[mi];
            if !self.steps[si].filter.matches_env(ev, env) {
                continue;
            }
            let Some(key) = self.key_of(si, ev, env) else {
                continue;
            };
            let npos = self.positive.len();
            let st = self.state.entry(key).or_default();
            if st.stages.len() < npos {
                st.stages.resize(npos, None);
            }
            if stage == 0 {
                st.last_lead = Some(ts);
            } else if stage == npos {
                let before = st.waiting.len();
                let mut freed = 0;
                st.waiting.retain(|(p, deadline)| {
                    let keep = ts > *deadline;
                    if !keep {
                        freed += p.bytes;
                    }
                    keep
                });
                let n = before - st.waiting.len();
                self.pending -= n;
                self.bytes -= freed;
                self.stats.cancelled_missing += n as u64;
            } else if let Some(p) = st.stages[stage - 1].take() {
                self.pending -= 1;
                self.bytes -= p.bytes;
                self.stats.cancelled_missing += 1;
            }
        }
        let npos = self.positive.len();
        for stage in (0..npos).rev() {
            let si = self.positive[stage];
            if !self.steps[si].filter.matches_env(ev, env) {
                continue;
            }
            let Some(key) = self.key_of(si, ev, env) else {
                continue;
            };
            if stage == 0 {
                let st = self.state.entry(key.clone()).or_default();
                if st.stages.len() < npos {
                    st.stages.resize(npos, None);
                }
                let p = Partial {
                    events: vec![sh.arc()],
                    bytes: event_bytes(ev),
                    start: ts,
                    lead_seen: st.last_lead,
                };
                if npos == 1 {
                    self.complete(key, p, ts, out);
                    continue;
                }
                self.bytes += p.bytes;
                match st.stages[0].replace(p) {
                    None => self.pending += 1,
                    Some(old) => self.bytes -= old.bytes,
                }
                continue;
            }
            let Some(st) = self.state.get_mut(&key) else {
                continue;
            };
            let fork = self.steps[si].fork;
            let taken = if fork {
                st.stages.get(stage - 1).and_then(Clone::clone)
            } else {
                st.stages.get_mut(stage - 1).and_then(Option::take)
            };
            let Some(mut p) = taken else { continue };
            if !fork {
                self.pending -= 1;
                self.bytes -= p.bytes;
            }
            if self.maxspan.is_some_and(|m| ts.saturating_sub(p.start) > m) {
                self.stats.expired += 1;
                continue;
            }
            p.events.push(sh.arc());
            p.bytes += event_bytes(ev);
            if stage + 1 == npos {
                self.complete(key, p, ts, out);
            } else {
                self.bytes += p.bytes;
                match st.stages[stage].replace(p) {
                    None => self.pending += 1,
                    Some(old) => self.bytes -= old.bytes,
                }
            }
        }
        if self.pending > self.limits.max_pending {
            let excess = self.pending - self.limits.max_pending;
            self.evict((self.limits.max_pending / 8).max(excess));
        }
        while self.bytes > self.limits.max_pending_bytes {
            let before = self.stats.evicted;
            self.evict(self.pending / 8);
            let n = self.stats.evicted - before;
            if n == 0 {
                break;
            }
            self.stats.evicted_bytes += n;
        }
        if let Some(m) = self.maxspan {
            if self.last_sweep == i64::MIN {
                self.last_sweep = ts;
            } else if ts.saturating_sub(self.last_sweep) > m.max(1_000_000_000) {
                self.expire(ts);
                self.last_sweep = ts;
            }
        }
    }

    fn complete(&mut self, key: Key, p: Partial, ts: i64, out: &mut Vec<SeqMatch>) {
        // Leading missing step seen within the window before the first event: no match.
        if self.missing_before.iter().any(|(_, s)| *s == 0) {
            if let Some(t) = p.lead_seen {
                if self.maxspan.is_none_or(|m| t >= ts.saturating_sub(m)) {
                    self.stats.cancelled_missing += 1;
                    return;
                }
            }
        }
        if self
            .missing_before
            .iter()
            .any(|(_, s)| *s == self.positive.len())
        {
            let deadline = p.start.saturating_add(self.maxspan.unwrap_or(0));
            let st = self.state.entry(key).or_default();
            self.bytes += p.bytes;
            st.waiting.push((p, deadline));
            self.pending += 1;
            return;
        }
        self.emit(&key, p, out);
    }

    fn emit(&mut self, key: &Key, p: Partial, out: &mut Vec<SeqMatch>) {
        self.stats.matches += 1;
        out.push(SeqMatch {
            join_keys: key.0.iter().map(KeyPart::to_json).collect(),
            events: p.events,
        });
    }

    /// Event time has reached `now`: drop partials older than maxspan, release trailing-missing matches.
    pub fn on_watermark(&mut self, now: i64, out: &mut Vec<SeqMatch>) {
        let mut ready = Vec::new();
        for (k, st) in &mut self.state {
            let mut i = 0;
            while i < st.waiting.len() {
                if st.waiting[i].1 < now {
                    let (p, _) = st.waiting.swap_remove(i);
                    ready.push((k.clone(), p));
                } else {
                    i += 1;
                }
            }
        }
        ready.sort_by_key(|(_, p)| p.events.last().map_or(0, |e| e.timestamp_ns));
        for (k, p) in ready {
            self.pending -= 1;
            self.bytes -= p.bytes;
            self.emit(&k, p, out);
        }
        if self.maxspan.is_some() {
            self.expire(now);
        }
    }

    fn expire(&mut self, now: i64) {
        let Some(m) = self.maxspan else { return };
        let cutoff = now.saturating_sub(m);
        let mut removed = 0usize;
        let mut freed = 0usize;
        self.state.retain(|_, st| {
            for s in &mut st.stages {
                if s.as_ref().is_some_and(|p| p.start < cutoff) {
                    freed += s.take().map_or(0, |p| p.bytes);
                    removed += 1;
                }
            }
            if st.last_lead.is_some_and(|t| t < cutoff) {
                st.last_lead = None;
            }
            st.count() > 0 || st.last_lead.is_some()
        });
        self.pending -= removed;
        self.bytes -= freed;
        self.stats.expired += removed as u64;
    }

    /// Evicts the `n` oldest partials (at least one).
    fn evict(&mut self, n: usize) {
        let mut starts: Vec<i64> = Vec::with_capacity(self.pending);
        for st in self.state.values() {
            starts.extend(st.stages.iter().flatten().map(|p| p.start));
        }
        if starts.is_empty() {
            return;
        }
        let n = n.max(1).min(starts.len());
        let (_, cutoff, _) = starts.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let mut removed = 0usize;
        let mut freed = 0usize;
        let mut budget = n;
        self.state.retain(|_, st| {
            for s in &mut st.stages {
                if budget > 0 && s.as_ref().is_some_and(|p| p.start <= cutoff) {
                    freed += s.take().map_or(0, |p| p.bytes);
                    removed += 1;
                    budget -= 1;
                }
            }
            st.count() > 0 || st.last_lead.is_some()
        });
        self.pending -= removed;
        self.bytes -= freed;
        self.stats.evicted += removed as u64;
    }

    /// Forgets all state (for tests and reload of a changed rule).
    pub fn clear(&mut self) {
        self.state.clear();
        self.pending = 0;
        self.bytes = 0;
    }
}

/// Unordered matching (`sample by`, endgame `join`): per key, the first event matching each filter;
/// emitted once every filter has one, then the key starts over.
pub struct SampleEngine {
    steps: Vec<StepSpec>,
    until: Option<StepSpec>,
    limits: SeqLimits,
    state: HashMap<Key, Vec<Option<Arc<Event>>>>,
    order: u64,
    pub stats: SeqStats,
    /// Join emits each key once only.
    once: bool,
    done: std::collections::HashSet<Key, ahash::RandomState>,
}

impl SampleEngine {
    pub fn new(kind: &QueryKind, limits: SeqLimits) -> Option<SampleEngine> {
        let (steps, until, once) = match kind {
            QueryKind::Sample { steps } => (steps.clone(), None, false),
            QueryKind::Join { steps, until } => (steps.clone(), until.clone(), false),
            _ => return None,
        };
        Some(SampleEngine {
            steps,
            until,
            limits,
            state: HashMap::default(),
            order: 0,
            stats: SeqStats::default(),
            once,
            done: Default::default(),
        })
    }

    pub fn pending(&self) -> usize {
        self.state
            .values()
            .map(|v| v.iter().filter(|x| x.is_some()).count())
            .sum()
    }

    pub fn on_event(&mut self, sh: &Shared<'_>, out: &mut Vec<SeqMatch>) {
        self.on_event_env(sh, &sh.env(), out);
    }

    pub(crate) fn on_event_env(&mut self, sh: &Shared<'_>, env: &Env<'_>, out: &mut Vec<SeqMatch>) {
        let ev = sh.ev;
        self.order += 1;
        if let Some(u) = &self.until {
            if u.filter.matches_env(ev, env) {
                let key = key_for(&u.keys, ev, env);
                if key.is_some_and(|key| self.state.remove(&key).is_some()) {
                    self.stats.cancelled_until += 1;
                }
            }
        }
        for i in 0..self.steps.len() {
            if !self.steps[i].filter.matches_env(ev, env) {
                continue;
            }
            let Some(key) = key_for(&self.steps[i].keys, ev, env) else {
                continue;
            };
            if self.once && self.done.contains(&key) {
                continue;
            }
            let n = self.steps.len();
            if !self.state.contains_key(&key) && self.state.len() >= self.limits.max_pending {
                // Bounded: drop an arbitrary key's partial sample.
                if let Some(k) = self.state.keys().next().cloned() {
                    self.state.remove(&k);
                    self.stats.evicted += 1;
                }
            }
            let slots = self
                .state
                .entry(key.clone())
                .or_insert_with(|| vec![None; n]);
            if slots[i].is_none() {
                slots[i] = Some(sh.arc());
            }
            if slots.iter().all(Option::is_some) {
                let slots = self.state.remove(&key).unwrap_or_default();
                self.stats.matches += 1;
                out.push(SeqMatch {
                    join_keys: key.0.iter().map(KeyPart::to_json).collect(),
                    events: slots.into_iter().flatten().collect(),
                });
                if self.once {
                    self.done.insert(key);
                }
            }
        }
    }
}
