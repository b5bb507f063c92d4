//! Detector state as data: what a checkpoint of a running correlator holds, so that another process
//! (a central node taking a partition over) continues exactly where this one stopped.
//!
//! [`crate::Detector::export_state`] returns everything a detector holds that changes what it will
//! say later: pending sequence partials (with maxspan starts, `until` and missing-step marks, each
//! `runs` repetition being a stage), samples, the reorder buffer, threshold windows, baselines.
//! [`crate::Detector::import_state`] puts it back into a freshly built detector of the same rules.
//!
//! Format: JSON, versioned (`"v"`, [`STATE_VERSION`]); an importer refuses another version with a
//! clear error rather than guessing. Events are written once in an event table (`"events"`) and
//! referred to by index, so an event held by several partials and the reorder buffer costs its
//! bytes once. The state is bounded by the detectors' own bounds (`SeqLimits` per rule, the key cap
//! of a threshold, the lateness window of the reorder buffer); importing applies the same bounds.
//!
//! Architecture invariant: an event survives export and import unchanged (fields, their value
//! types, time, raw record), so an alert made from a restored event has the same evidence, and the
//! same uniqueness key in the fleet store, as one made without the interruption.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::detect::StateError;
use crate::event::{Event, Field, Value};

/// The version of the state format this build writes and reads.
pub const STATE_VERSION: u64 = 1;

/// Events of one export, each written once.
#[derive(Default)]
pub struct EventTable {
    index: HashMap<*const Event, usize>,
    rows: Vec<Json>,
}

impl EventTable {
    /// The index of `ev` in the table (added on first sight; identity is the allocation).
    pub fn add(&mut self, ev: &Arc<Event>) -> usize {
        let ptr = Arc::as_ptr(ev);
        if let Some(i) = self.index.get(&ptr) {
            return *i;
        }
        let i = self.rows.len();
        self.rows.push(encode_event(ev));
        self.index.insert(ptr, i);
        i
    }

    /// Adds an event that is not shared (a threshold's window).
    pub fn add_owned(&mut self, ev: &Event) -> usize {
        let i = self.rows.len();
        self.rows.push(encode_event(ev));
        i
    }

    pub fn into_json(self) -> Json {
        Json::Array(self.rows)
    }
}

/// The decoded event table of an import.
pub struct Events(Vec<Arc<Event>>);

impl Events {
    pub fn decode(v: Option<&Json>) -> Result<Events, String> {
        let rows = match v {
            None | Some(Json::Null) => return Ok(Events(Vec::new())),
            Some(Json::Array(a)) => a,
            Some(_) => return Err("`events` is not an array".into()),
        };
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                decode_event(r)
                    .map(Arc::new)
                    .map_err(|e| format!("event {i}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Events)
    }

    /// The event at index `v` (a JSON number).
    pub fn get(&self, v: &Json) -> Result<Arc<Event>, String> {
        v.as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.0.get(i))
            .cloned()
            .ok_or_else(|| format!("event reference {v} is not in the event table"))
    }
}

/// Checks the version of a state and returns its body.
pub fn check_version<'a>(id: &str, state: &'a Json) -> Result<&'a Json, StateError> {
    match state.get("v").and_then(Json::as_u64) {
        Some(STATE_VERSION) => Ok(state),
        Some(v) => Err(invalid(
            id,
            format!("state format version {v}, this build reads version {STATE_VERSION}"),
        )),
        None => Err(invalid(id, "no state format version (`v`)")),
    }
}

pub fn invalid(id: &str, reason: impl Into<String>) -> StateError {
    StateError::Invalid {
        id: id.to_string(),
        reason: reason.into(),
    }
}

/// An event as `{"t": ns, "f": [[field, value], ...], "r": raw}`; values keep their type.
pub fn encode_event(ev: &Event) -> Json {
    let fields: Vec<Json> = ev
        .fields()
        .map(|(f, v)| json!([&*f.name(), encode_value(v)]))
        .collect();
    let mut o = serde_json::Map::new();
    o.insert("t".into(), ev.timestamp_ns.into());
    o.insert("f".into(), Json::Array(fields));
    if let Some(r) = &ev.raw {
        o.insert("r".into(), Json::String(r.to_string()));
    }
    Json::Object(o)
}

pub fn decode_event(v: &Json) -> Result<Event, String> {
    let t = v
        .get("t")
        .and_then(Json::as_i64)
        .ok_or("event without a time (`t`)")?;
    let fields = v
        .get("f")
        .and_then(Json::as_array)
        .ok_or("event without fields (`f`)")?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let (Some(name), Some(val)) = (f.get(0).and_then(Json::as_str), f.get(1)) else {
            return Err(format!("field entry {f} is not [name, value]"));
        };
        out.push((Field::intern(name), decode_value(val)?));
    }
    out.sort_by_key(|(f, _)| *f);
    out.dedup_by_key(|(f, _)| *f);
    let mut ev = Event::from_fields(t, out);
    ev.raw = match v.get("r") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(Arc::from(s.as_str())),
        Some(_) => return Err("raw record (`r`) is not a string".into()),
    };
    Ok(ev)
}

/// A value as JSON; the types JSON cannot tell apart are tagged: an IP address `{"ip": "..."}`,
/// a float `{"f": bits}` (exact, also NaN), an object `{"o": [[k, v], ...]}`.
pub fn encode_value(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => json!({"f": f.to_bits()}),
        Value::Str(s) => Json::String(s.to_string()),
        Value::Ip(ip) => json!({"ip": ip.to_string()}),
        Value::Array(a) => Json::Array(a.iter().map(encode_value).collect()),
        Value::Object(o) => {
            json!({"o": o.iter().map(|(k, v)| json!([&**k, encode_value(v)])).collect::<Vec<_>>()})
        }
    }
}

pub fn decode_value(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Int(
            n.as_i64()
                .ok_or_else(|| format!("integer {n} out of range"))?,
        ),
        Json::String(s) => Value::Str(s.as_str().into()),
        Json::Array(a) => Value::Array(
            a.iter()
                .map(decode_value)
                .collect::<Result<Vec<_>, _>>()?
                .into(),
        ),
        Json::Object(o) => {
            if let Some(bits) = o.get("f").and_then(Json::as_u64) {
                Value::Float(f64::from_bits(bits))
            } else if let Some(ip) = o.get("ip").and_then(Json::as_str) {
                Value::Ip(
                    ip.parse::<IpAddr>()
                        .map_err(|e| format!("IP address `{ip}`: {e}"))?,
                )
            } else if let Some(items) = o.get("o").and_then(Json::as_array) {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    let (Some(k), Some(x)) = (it.get(0).and_then(Json::as_str), it.get(1)) else {
                        return Err(format!("object entry {it} is not [key, value]"));
                    };
                    out.push((Arc::from(k), decode_value(x)?));
                }
                Value::Object(out.into())
            } else {
                return Err(format!("value {v} has no known tag"));
            }
        }
    })
}

#[cfg(test)]
mod detector_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_round_trip_with_their_types() {
        let mut e = Event::from_json(&json!({
            "@timestamp": "2026-12-07T00:00:01.5Z",
            "event": {"category": ["process"]},
            "process": {"pid": 7, "name": "curl"},
            "x": {"ratio": 0.5, "whole": 2.0, "nan": null},
            "list": [{"a": 1}, "s"]
        }))
        .unwrap();
        e.insert("source.ip", Value::Ip("10.0.0.1".parse().unwrap()));
        e.insert("weird", Value::Float(f64::NAN));
        e.raw = Some(Arc::from("original line"));
        let text = serde_json::to_string(&encode_event(&e)).unwrap();
        let back = decode_event(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back.timestamp_ns, e.timestamp_ns);
        assert_eq!(back.raw, e.raw);
        assert_eq!(back.to_json(), e.to_json());
        assert!(matches!(back.get_path("source.ip"), Some(Value::Ip(_))));
        assert!(matches!(back.get_path("x.whole"), Some(Value::Float(f)) if *f == 2.0));
        assert!(matches!(back.get_path("weird"), Some(Value::Float(f)) if f.is_nan()));
        assert_eq!(back.category_bits(), e.category_bits());
    }

    #[test]
    fn bad_state_is_named() {
        assert!(decode_event(&json!({"f": []}))
            .unwrap_err()
            .contains("time"));
        assert!(decode_value(&json!({"zz": 1})).unwrap_err().contains("tag"));
        let err = check_version("r", &json!({"v": 99}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 99"), "{err}");
    }
}
