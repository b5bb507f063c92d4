//! Helpers shared by the decoders: a cache of interned ECS fields, JSON access, value builders.

use std::sync::LazyLock;

use correlator::{Event, Field, Value};

/// Frequently used fields, interned once.
pub(crate) struct KnownFields {
    pub(crate) agent_id: Field,
    pub(crate) event_module: Field,
    pub(crate) event_dataset: Field,
    pub(crate) event_original: Field,
    pub(crate) event_action: Field,
    pub(crate) event_category: Field,
    pub(crate) event_type: Field,
    pub(crate) event_kind: Field,
    pub(crate) event_outcome: Field,
    pub(crate) timestamp: Field,
}

static FIELDS: LazyLock<KnownFields> = LazyLock::new(|| KnownFields {
    agent_id: Field::intern("agent.id"),
    event_module: Field::intern("event.module"),
    event_dataset: Field::intern("event.dataset"),
    event_original: Field::intern("event.original"),
    event_action: Field::intern("event.action"),
    event_category: Field::intern("event.category"),
    event_type: Field::intern("event.type"),
    event_kind: Field::intern("event.kind"),
    event_outcome: Field::intern("event.outcome"),
    timestamp: Field::intern("@timestamp"),
});

pub(crate) fn fields() -> &'static KnownFields {
    &FIELDS
}

pub(crate) fn s(v: &str) -> Value {
    Value::Str(v.into())
}

pub(crate) fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|x| s(x)).collect())
}

/// Sets `@timestamp` (RFC 3339) and [`Event::timestamp_ns`] from epoch nanoseconds.
pub(crate) fn set_time(ev: &mut Event, ns: i64) {
    ev.timestamp_ns = ns;
    ev.set(fields().timestamp, rfc3339_value(ns));
}

/// The `@timestamp` value of epoch nanoseconds.
pub(crate) fn rfc3339_value(ns: i64) -> Value {
    Value::Str(format_rfc3339(ns).into())
}

/// Epoch nanoseconds as `@timestamp` text (the fraction trimmed to the source's precision, at least
/// milliseconds).
pub(crate) fn format_rfc3339(ns: i64) -> String {
    correlator::ecs::rfc3339(ns, correlator::ecs::Fraction::Trimmed)
}

/// Seconds (possibly fractional, possibly a string) since the epoch, as nanoseconds.
pub(crate) fn epoch_secs_ns(v: &serde_json::Value) -> Option<i64> {
    let f = match v {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => {
            if let Ok(f) = s.trim().parse::<f64>() {
                f
            } else {
                return correlator::event::parse_rfc3339_ns(s);
            }
        }
        _ => return None,
    };
    if !f.is_finite() || f.abs() > 1e11 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some((f * 1e9).round() as i64)
}

/// Parses a JSON object line, naming the problem when it is not one.
pub(crate) fn parse_object(
    line: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    correlator::event::json_kind(v)
}

/// Walks a dotted path through nested objects.
pub(crate) fn get<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

pub(crate) fn get_str<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    get(v, path).and_then(serde_json::Value::as_str)
}

/// A JSON scalar as a Value (strings stay strings, numbers numbers); nulls and objects give None.
pub(crate) fn scalar(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::Null | serde_json::Value::Object(_) => None,
        serde_json::Value::Array(a) => Some(Value::Array(a.iter().filter_map(scalar).collect())),
        other => Some(Value::from_json(other)),
    }
}

/// Copies `src` (a dotted path in `doc`) to ECS `dst` when present and scalar.
pub(crate) fn copy(ev: &mut Event, doc: &serde_json::Value, src: &str, dst: &str) {
    if let Some(v) = get(doc, src).and_then(scalar) {
        ev.insert(dst, v);
    }
}

/// Copies a value that should be an integer (accepting numeric strings).
pub(crate) fn copy_int(ev: &mut Event, doc: &serde_json::Value, src: &str, dst: &str) {
    if let Some(v) = get(doc, src).and_then(as_int) {
        ev.insert(dst, Value::Int(v));
    }
}

pub(crate) fn as_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok())),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Copies a string field, also filling `ip` fields as IP values when they parse.
pub(crate) fn copy_ip(ev: &mut Event, doc: &serde_json::Value, src: &str, dst: &str) {
    if let Some(serde_json::Value::String(s)) = get(doc, src) {
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) => ev.insert(dst, Value::Ip(ip)),
            Err(_) => ev.insert(dst, s_owned(s)),
        }
    }
}

pub(crate) fn s_owned(v: &str) -> Value {
    s(v)
}

/// The final path component of a path (`/usr/bin/curl` -> `curl`).
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}
