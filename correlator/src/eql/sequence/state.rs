//! Export and import of the pending state of [`SequenceEngine`] and [`SampleEngine`] (see
//! [`crate::checkpoint`]). Counters are not part of the state: they describe this process.

use serde_json::{json, Value as Json};

use super::{Key, KeyPart, KeyState, Partial, SampleEngine, SequenceEngine, ShortStr};
use crate::checkpoint::{EventTable, Events};
use crate::event::Event;

fn key_json(k: &Key) -> Json {
    Json::Array(
        k.0.iter()
            .map(|p| match p {
                KeyPart::Null => json!(["n"]),
                KeyPart::Bool(b) => json!(["b", b]),
                KeyPart::Int(i) => json!(["i", i]),
                KeyPart::Float(f) => json!(["f", f]),
                KeyPart::Short(s) => json!(["s", s.as_str()]),
                KeyPart::Str(s) => json!(["s", &**s]),
                KeyPart::Other(s) => json!(["o", &**s]),
            })
            .collect(),
    )
}

fn key_from(v: &Json) -> Result<Key, String> {
    let parts = v
        .as_array()
        .ok_or_else(|| format!("key {v} is not an array"))?;
    let mut out = smallvec::SmallVec::new();
    for p in parts {
        let tag = p.get(0).and_then(Json::as_str).unwrap_or("");
        let x = p.get(1);
        let bad = || format!("key part {p} is not valid");
        out.push(match tag {
            "n" => KeyPart::Null,
            "b" => KeyPart::Bool(x.and_then(Json::as_bool).ok_or_else(bad)?),
            "i" => KeyPart::Int(x.and_then(Json::as_i64).ok_or_else(bad)?),
            "f" => KeyPart::Float(x.and_then(Json::as_u64).ok_or_else(bad)?),
            "s" => {
                let s = x.and_then(Json::as_str).ok_or_else(bad)?;
                ShortStr::new(s).map_or_else(|| KeyPart::Str(s.into()), KeyPart::Short)
            }
            "o" => KeyPart::Other(x.and_then(Json::as_str).ok_or_else(bad)?.into()),
            _ => return Err(bad()),
        });
    }
    Ok(Key(out))
}

fn opt_i64(v: Option<i64>) -> Json {
    v.map_or(Json::Null, Json::from)
}

fn partial_json(p: &Partial, tab: &mut EventTable) -> Json {
    let evs: Vec<usize> = p.events.iter().map(|e| tab.add(e)).collect();
    json!({"e": evs, "s": p.start, "l": opt_i64(p.lead_seen)})
}

fn partial_from(v: &Json, evs: &Events) -> Result<Partial, String> {
    let events = v
        .get("e")
        .and_then(Json::as_array)
        .ok_or_else(|| format!("partial {v} has no events"))?
        .iter()
        .map(|i| evs.get(i))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = events.iter().map(|e| super::event_bytes(e)).sum();
    Ok(Partial {
        events,
        bytes,
        start: v
            .get("s")
            .and_then(Json::as_i64)
            .ok_or_else(|| format!("partial {v} has no start"))?,
        lead_seen: v.get("l").and_then(Json::as_i64),
    })
}

impl SequenceEngine {
    /// The pending partials, per key and stage, with the events they hold (in `tab`).
    pub fn export_state(&self, tab: &mut EventTable) -> Json {
        let keys: Vec<Json> = self
            .state
            .iter()
            .map(|(k, st)| {
                let stages: Vec<Json> = st
                    .stages
                    .iter()
                    .map(|s| s.as_ref().map_or(Json::Null, |p| partial_json(p, tab)))
                    .collect();
                let waiting: Vec<Json> = st
                    .waiting
                    .iter()
                    .map(|(p, d)| json!([partial_json(p, tab), d]))
                    .collect();
                json!({"k": key_json(k), "st": stages, "w": waiting, "ll": opt_i64(st.last_lead)})
            })
            .collect();
        json!({"keys": keys, "sweep": self.last_sweep})
    }

    /// Replaces the pending state with an exported one (same query). The engine's bounds apply:
    /// partials beyond `max_pending` or `max_pending_bytes` are evicted, oldest first.
    pub fn import_state(&mut self, v: &Json, evs: &Events) -> Result<(), String> {
        self.clear();
        let npos = self.positive.len();
        let keys = v
            .get("keys")
            .and_then(Json::as_array)
            .ok_or("sequence state has no `keys`")?;
        for k in keys {
            let key = key_from(k.get("k").unwrap_or(&Json::Null))?;
            let mut st = KeyState {
                stages: vec![None; npos],
                ..KeyState::default()
            };
            for (i, s) in k
                .get("st")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if s.is_null() {
                    continue;
                }
                let slot = st
                    .stages
                    .get_mut(i)
                    .ok_or_else(|| format!("stage {i} beyond the query's {npos} steps"))?;
                *slot = Some(partial_from(s, evs)?);
            }
            for w in k.get("w").and_then(Json::as_array).into_iter().flatten() {
                let p = partial_from(w.get(0).unwrap_or(&Json::Null), evs)?;
                let d = w
                    .get(1)
                    .and_then(Json::as_i64)
                    .ok_or_else(|| format!("waiting match {w} has no deadline"))?;
                st.waiting.push((p, d));
            }
            st.last_lead = k.get("ll").and_then(Json::as_i64);
            self.pending += st.count();
            self.bytes += st.bytes();
            self.state.insert(key, st);
        }
        self.last_sweep = v.get("sweep").and_then(Json::as_i64).unwrap_or(i64::MIN);
        if self.pending > self.limits.max_pending {
            self.evict(self.pending - self.limits.max_pending);
        }
        while self.bytes > self.limits.max_pending_bytes {
            let before = self.stats.evicted;
            self.evict(self.pending / 8);
            if self.stats.evicted == before {
                break;
            }
        }
        Ok(())
    }
}

impl SampleEngine {
    /// The partial samples per key and the keys a join has already emitted.
    pub fn export_state(&self, tab: &mut EventTable) -> Json {
        let keys: Vec<Json> = self
            .state
            .iter()
            .map(|(k, slots)| {
                let s: Vec<Json> = slots
                    .iter()
                    .map(|e| e.as_ref().map_or(Json::Null, |e| tab.add(e).into()))
                    .collect();
                json!([key_json(k), s])
            })
            .collect();
        let done: Vec<Json> = self.done.iter().map(key_json).collect();
        json!({"keys": keys, "done": done, "order": self.order})
    }

    pub fn import_state(&mut self, v: &Json, evs: &Events) -> Result<(), String> {
        self.state.clear();
        self.done.clear();
        let n = self.steps.len();
        for k in v.get("keys").and_then(Json::as_array).into_iter().flatten() {
            let key = key_from(k.get(0).unwrap_or(&Json::Null))?;
            let slots = k
                .get(1)
                .and_then(Json::as_array)
                .ok_or_else(|| format!("sample entry {k} has no slots"))?;
            if slots.len() != n {
                return Err(format!(
                    "sample entry has {} slots, the query {n}",
                    slots.len()
                ));
            }
            let slots: Vec<Option<std::sync::Arc<Event>>> = slots
                .iter()
                .map(|s| (!s.is_null()).then(|| evs.get(s)).transpose())
                .collect::<Result<_, _>>()?;
            if self.state.len() < self.limits.max_pending {
                self.state.insert(key, slots);
            } else {
                self.stats.evicted += 1;
            }
        }
        for d in v.get("done").and_then(Json::as_array).into_iter().flatten() {
            self.done.insert(key_from(d)?);
        }
        self.order = v.get("order").and_then(Json::as_u64).unwrap_or(0);
        Ok(())
    }
}
