//! Runs a query over a finite, ordered list of events, pipes included: what the endgame conformance
//! suite and `sensor query` need. Streaming rules use [`crate::runner::RuleRunner`] instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::ast::{Lineage, Pipe};
use super::expr::{Compiler, LineageOracle};
use super::sequence::{KeyPart, SampleEngine, SeqLimits, SeqMatch, SequenceEngine, Shared};
use super::{Env, EqlError, EventFilter, Node, Query, QueryKind};
use crate::event::{Event, Field, Value};

#[derive(Clone, Debug)]
pub(crate) enum CPipe {
    Head(usize),
    Tail(usize),
    Filter(Node),
    Unique(Vec<Node>),
    UniqueCount(Vec<Node>),
    Count(Vec<Node>),
    Sort(Vec<Node>, bool),
}

pub(crate) fn compile_pipe(c: &mut Compiler<'_>, p: &Pipe) -> Result<CPipe, EqlError> {
    let list = |c: &mut Compiler<'_>, xs: &[super::ast::Expr]| {
        xs.iter()
            .map(|x| c.compile(x))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match p {
        Pipe::Head(n) => CPipe::Head(*n),
        Pipe::Tail(n) => CPipe::Tail(*n),
        Pipe::Filter(e) => CPipe::Filter(c.compile(e)?),
        Pipe::Unique(xs) => CPipe::Unique(list(c, xs)?),
        Pipe::UniqueCount(xs) => CPipe::UniqueCount(list(c, xs)?),
        Pipe::Count(xs) => CPipe::Count(list(c, xs)?),
        Pipe::Sort(xs) => CPipe::Sort(list(c, xs)?, c.opts.case_insensitive),
    })
}

/// One result: an event (no join keys) or a sequence.
#[derive(Clone, Debug)]
pub struct Output {
    pub join_keys: Vec<serde_json::Value>,
    pub events: Vec<Arc<Event>>,
    /// Set by `count`/`unique_count`.
    pub count: Option<u64>,
    /// Set by `unique_count`: share of all results with this key.
    pub percent: Option<f64>,
}

impl Output {
    /// The NDJSON line `sensor query` prints: the event itself, or `{"join_keys":[..],"events":[..]}`.
    pub fn to_json(&self, sequence: bool) -> serde_json::Value {
        if !sequence && self.events.len() == 1 {
            let mut v = self.events[0].to_json();
            if let (Some(c), serde_json::Value::Object(m)) = (self.count, &mut v) {
                m.insert("count".into(), c.into());
            }
            return v;
        }
        let mut m = serde_json::Map::new();
        m.insert(
            "join_keys".into(),
            serde_json::Value::Array(self.join_keys.clone()),
        );
        m.insert(
            "events".into(),
            self.events.iter().map(|e| e.to_json()).collect(),
        );
        if let Some(c) = self.count {
            m.insert("count".into(), c.into());
        }
        serde_json::Value::Object(m)
    }
}

/// Process lineage for endgame `descendant of` / `child of` / `event of`.
struct Tree {
    parent: HashMap<KeyPart, KeyPart>,
    matched: Vec<HashSet<KeyPart>>,
    kinds: Vec<Lineage>,
    pid: Field,
    ppid: Field,
}

impl Tree {
    fn new(q: &Query) -> Tree {
        Tree {
            parent: HashMap::new(),
            matched: vec![HashSet::new(); q.lineage.len()],
            kinds: q.lineage.iter().map(|(k, _)| *k).collect(),
            pid: Field::intern("unique_pid"),
            ppid: Field::intern("unique_ppid"),
        }
    }

    fn id(&self, ev: &Event, f: Field) -> Option<KeyPart> {
        ev.get(f).filter(|v| !v.is_null()).map(KeyPart::from_value)
    }

    /// The parent process of the process that did `ev`.
    fn parent_of(&self, ev: &Event) -> Option<KeyPart> {
        self.id(ev, self.ppid).or_else(|| {
            self.id(ev, self.pid)
                .and_then(|p| self.parent.get(&p).cloned())
        })
    }

    fn update(&mut self, lineage: &[(Lineage, EventFilter)], ev: &Event) {
        if let (Some(p), Some(pp)) = (self.id(ev, self.pid), self.id(ev, self.ppid)) {
            self.parent.insert(p, pp);
        }
        for i in (0..lineage.len()).rev() {
            let hit = {
                let env = Env {
                    lineage: Some(&*self),
                    vars: &[],
                    cats: None,
                    memo: None,
                };
                lineage[i].1.matches_env(ev, &env)
            };
            if hit {
                if let Some(p) = self.id(ev, self.pid) {
                    self.matched[i].insert(p);
                }
            }
        }
    }
}

impl LineageOracle for Tree {
    fn check(&self, index: usize, ev: &Event) -> Option<bool> {
        let set = self.matched.get(index)?;
        Some(match self.kinds[index] {
            Lineage::Event => self.id(ev, self.pid).is_some_and(|p| set.contains(&p)),
            Lineage::Child => self.parent_of(ev).is_some_and(|p| set.contains(&p)),
            Lineage::Descendant => {
                let mut cur = self.parent_of(ev);
                let mut depth = 0;
                while let Some(p) = cur {
                    if set.contains(&p) {
                        return Some(true);
                    }
                    depth += 1;
                    if depth > 256 {
                        break;
                    }
                    cur = self.parent.get(&p).cloned();
                }
                false
            }
        })
    }
}

/// Runs `q` over `events` (in the given order) and applies its pipes.
pub fn run(q: &Query, events: &[Arc<Event>]) -> Vec<Output> {
    let mut tree = Tree::new(q);
    let mut out: Vec<Output> = Vec::new();
    let limits = SeqLimits {
        max_pending: usize::MAX,
        max_pending_bytes: usize::MAX,
    };
    let mut seq = SequenceEngine::new(&q.kind, limits);
    let mut sample = SampleEngine::new(&q.kind, limits);
    let mut matches: Vec<SeqMatch> = Vec::new();
    for ev in events {
        if !q.lineage.is_empty() {
            tree.update(&q.lineage, ev);
        }
        let env = Env {
            lineage: if q.lineage.is_empty() {
                None
            } else {
                Some(&tree)
            },
            vars: &[],
            cats: None,
            memo: None,
        };
        match &q.kind {
            QueryKind::Event(f) => {
                if f.matches_env(ev, &env) {
                    out.push(Output {
                        join_keys: Vec::new(),
                        events: vec![ev.clone()],
                        count: None,
                        percent: None,
                    });
                }
            }
            _ => {
                let sh = Shared::from_arc(ev);
                if let Some(s) = &mut seq {
                    s.on_event_env(&sh, &env, &mut matches);
                }
                if let Some(s) = &mut sample {
                    s.on_event_env(&sh, &env, &mut matches);
                }
                out.extend(matches.drain(..).map(|m| Output {
                    join_keys: m.join_keys,
                    events: m.events,
                    count: None,
                    percent: None,
                }));
            }
        }
    }
    if let Some(s) = &mut seq {
        s.on_watermark(i64::MAX, &mut matches);
        out.extend(matches.drain(..).map(|m| Output {
            join_keys: m.join_keys,
            events: m.events,
            count: None,
            percent: None,
        }));
    }
    apply_pipes(q, out)
}

/// What pipe expressions see: the (first) event, plus `events` (all events of a sequence as objects),
/// `count` and `percent` when a `unique_count` set them.
fn pipe_view(o: &Output, sequence: bool) -> Event {
    let mut ev = o
        .events
        .first()
        .map_or_else(Event::default, |e| (**e).clone());
    if sequence {
        let evs: Vec<Value> = o
            .events
            .iter()
            .map(|e| Value::Object(e.fields().map(|(f, v)| (f.name(), v.clone())).collect()))
            .collect();
        ev.insert("events", Value::Array(evs.into()));
    }
    if let Some(c) = o.count {
        ev.insert("count", Value::Int(i64::try_from(c).unwrap_or(i64::MAX)));
    }
    if let Some(p) = o.percent {
        ev.insert("percent", Value::Float(p));
    }
    ev
}

fn key_of(nodes: &[Node], ev: &Event) -> Vec<KeyPart> {
    nodes
        .iter()
        .map(|n| KeyPart::from_value(&n.eval(ev, &Env::EMPTY)))
        .collect()
}

fn apply_pipes(q: &Query, mut out: Vec<Output>) -> Vec<Output> {
    let seq = q.is_sequence();
    let first = |o: &Output| pipe_view(o, seq);
    for p in &q.pipes {
        out = match p {
            CPipe::Head(n) => out.into_iter().take(*n).collect(),
            CPipe::Tail(n) => {
                let skip = out.len().saturating_sub(*n);
                out.into_iter().skip(skip).collect()
            }
            CPipe::Filter(f) => out
                .into_iter()
                .filter(|o| f.test(&first(o), &Env::EMPTY) == Some(true))
                .collect(),
            CPipe::Unique(keys) => {
                let mut seen = HashSet::new();
                out.into_iter()
                    .filter(|o| seen.insert(key_of(keys, &first(o))))
                    .collect()
            }
            CPipe::UniqueCount(keys) => {
                let mut counts: HashMap<Vec<KeyPart>, u64> = HashMap::new();
                for o in &out {
                    *counts.entry(key_of(keys, &first(o))).or_default() += 1;
                }
                let mut seen = HashSet::new();
                let total = out.len().max(1) as f64;
                out.into_iter()
                    .filter_map(|mut o| {
                        let k = key_of(keys, &first(&o));
                        let c = counts.get(&k).copied();
                        if seen.insert(k) {
                            o.count = c;
                            o.percent = c.map(|c| c as f64 / total);
                            Some(o)
                        } else {
                            None
                        }
                    })
                    .collect()
            }
            CPipe::Count(keys) => {
                // Aggregates carry no events.
                let mut counts: HashMap<Vec<KeyPart>, u64> = HashMap::new();
                for o in &out {
                    *counts.entry(key_of(keys, &first(o))).or_default() += 1;
                }
                let mut rows: Vec<(Vec<KeyPart>, u64)> = counts.into_iter().collect();
                rows.sort_by_key(|(_, c)| *c);
                rows.into_iter()
                    .map(|(k, c)| Output {
                        join_keys: k.iter().map(KeyPart::to_json).collect(),
                        events: Vec::new(),
                        count: Some(c),
                        percent: None,
                    })
                    .collect()
            }
            CPipe::Sort(keys, ci) => {
                let mut rows: Vec<(Vec<Value>, Output)> = out
                    .into_iter()
                    .map(|o| {
                        let view = first(&o);
                        let vals = keys
                            .iter()
                            .map(|k| match k.eval(&view, &Env::EMPTY).into_owned() {
                                Value::Str(s) if *ci => Value::Str(super::matcher::fold(&s).into()),
                                v => v,
                            })
                            .collect();
                        (vals, o)
                    })
                    .collect();
                rows.sort_by(|(a, _), (b, _)| {
                    for (x, y) in a.iter().zip(b) {
                        let o = sort_cmp(x, y);
                        if o != std::cmp::Ordering::Equal {
                            return o;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                rows.into_iter().map(|(_, o)| o).collect()
            }
        };
    }
    out
}

/// Sort order: nulls first, then numbers, then strings.
fn sort_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 2,
        Value::Str(_) => 3,
        _ => 4,
    };
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ if rank(a) == 2 && rank(b) == 2 => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
        _ => rank(a).cmp(&rank(b)),
    }
}
