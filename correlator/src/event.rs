//! The normalised event model: ECS field paths over typed values.
//!
//! Field paths are interned once (at rule compile time, or when a decoder first meets a path) into a
//! [`Field`], a small integer; an [`Event`] is a vector of `(Field, Value)` sorted by field, so a lookup
//! during evaluation is a binary search over integers, never a string comparison.
//!
//! Nested JSON objects are flattened into dotted paths (`{"process": {"pid": 1}}` is `process.pid`);
//! arrays stay arrays. The original record, when there is one, is kept in [`Event::raw`] as evidence.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

mod field;
mod json;
mod str;
mod stream;
mod time;

use json::insert_nested;

pub use field::{Field, MAX_FIELDS, MAX_FIELD_BYTES, MAX_FIELD_PATH_BYTES};
pub use str::Str;
pub use time::{parse_rfc3339_ns, parse_timestamp};

/// A typed field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Str),
    Ip(IpAddr),
    Array(Arc<[Value]>),
    /// An object that could not be flattened (an element of an array of objects).
    Object(Arc<[(Arc<str>, Value)]>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)]
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts a JSON value (objects become [`Value::Object`]; callers flatten top-level objects).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    i64::try_from(u)
                        .map_or(Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Int)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::Str(Str::from(s.as_str())),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Ip(ip) => serde_json::Value::String(ip.to_string()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Errors building an event from outside data.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("an event must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("field `@timestamp` is not a valid timestamp: {0}")]
    BadTimestamp(String),
    /// The text is not JSON (serde_json's message, with line and column).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
}

/// The ECS `event.category` values (lower case) that have a fixed bit in
/// [`Event::category_bits`]: bit `i` is `ECS_CATEGORIES[i]`.
pub const ECS_CATEGORIES: [&str; 20] = [
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];

/// Set in an event's category summary when `event.category` holds a string that is not exactly
/// one of [`ECS_CATEGORIES`] (another name, or another case): the summary is then not exact.
const CAT_OTHER: u32 = 1 << 31;

/// The interned `event.category` field.
static CATEGORY_FIELD: LazyLock<Field> = LazyLock::new(|| Field::intern("event.category"));

/// The category summary of an `event.category` value: a bit per [`ECS_CATEGORIES`] name it holds
/// (exactly), [`CAT_OTHER`] for any other string; values that are not strings count for nothing
/// (the engine ignores them too).
fn category_summary(v: &Value) -> u32 {
    fn one(s: &Str) -> u32 {
        let b = s.as_bytes();
        ECS_CATEGORIES
            .iter()
            .position(|c| c.as_bytes() == b)
            .map_or(CAT_OTHER, |i| 1 << i)
    }
    match v {
        Value::Str(s) => one(s),
        Value::Array(a) => a.iter().fold(0, |m, x| match x {
            Value::Str(s) => m | one(s),
            _ => m,
        }),
        _ => 0,
    }
}

/// One normalised event.
///
/// Invariant: `cats` is the [`category_summary`] of the `event.category` value in `fields` (0 when
/// there is none); every constructor and every mutation of `fields` keeps it so.
#[derive(Clone, Debug, Default)]
pub struct Event {
    fields: Vec<(Field, Value)>,
    /// Event time in nanoseconds since the Unix epoch (0 when the source gave none).
    pub timestamp_ns: i64,
    /// The original record as the source sent it, kept as evidence.
    pub raw: Option<Arc<str>>,
    /// Summary of `event.category`, computed when the field is set (the producer has the value in
    /// cache then): the engine picks an event's rules from it without reading the field.
    cats: u32,
}

impl Event {
    pub fn new(timestamp_ns: i64) -> Event {
        Event {
            fields: Vec::new(),
            timestamp_ns,
            raw: None,
            cats: 0,
        }
    }

    /// An event from fields already sorted by field, without duplicates.
    fn from_sorted(timestamp_ns: i64, fields: Vec<(Field, Value)>) -> Event {
        let mut ev = Event {
            fields,
            timestamp_ns,
            raw: None,
            cats: 0,
        };
        ev.refresh_categories();
        ev
    }

    fn refresh_categories(&mut self) {
        self.cats = self.get(*CATEGORY_FIELD).map_or(0, category_summary);
    }

    /// The event's ECS categories as a mask over [`ECS_CATEGORIES`] (bit `i` set when
    /// `event.category` holds exactly `ECS_CATEGORIES[i]`, as a string or an array element), or
    /// `None` when it holds some other string (another name, or another case), for which the
    /// caller must read the field. Costs no memory access beyond the event itself.
    #[inline]
    pub fn category_bits(&self) -> Option<u32> {
        (self.cats & CAT_OTHER == 0).then_some(self.cats)
    }

    /// The interned `event.category` field (the one [`Event::category_bits`] summarises).
    pub fn category_field() -> Field {
        *CATEGORY_FIELD
    }

    /// Reads one word of each cache line of the event's field vector, then the first bytes of its
    /// out-of-line values (arrays, strings too long to be inline), with loads that do not depend
    /// on one another, and returns a value of no meaning. An event that is in no cache (a batch
    /// read from a queue, a replayed file) then costs two waits on memory, the fields and then
    /// their values, each in parallel, instead of one wait per step of [`Event::get`]'s binary
    /// search and per value read. The rule set calls it once per event before evaluating rules.
    #[inline]
    pub fn warm(&self) -> u64 {
        // Two (Field, Value) pairs per 64-byte line.
        let mut acc = 0u64;
        for (f, _) in self.fields.iter().step_by(2) {
            acc = acc.wrapping_add(u64::from(f.0));
        }
        for (_, v) in &self.fields {
            match v {
                Value::Array(a) => {
                    if let Some(Value::Str(s)) = a.first() {
                        acc = acc.wrapping_add(s.as_bytes().len() as u64);
                    }
                }
                Value::Str(s) if !s.is_inline() => {
                    acc = acc.wrapping_add(u64::from(s.as_bytes().first().copied().unwrap_or(0)));
                }
                _ => {}
            }
        }
        acc
    }

    /// Sets `field` to `value`, replacing any previous value.
    pub fn set(&mut self, field: Field, value: Value) {
        if field == *CATEGORY_FIELD {
            self.cats = category_summary(&value);
        }
        match self.fields.binary_search_by_key(&field, |(f, _)| *f) {
            Ok(i) => self.fields[i].1 = value,
            Err(i) => self.fields.insert(i, (field, value)),
        }
    }

    /// Builds an event from fields in any order; where a field appears more than once the last
    /// value wins (as with repeated [`Event::set`] calls), at the cost of one sort instead of one
    /// insertion per field.
    pub fn from_fields(timestamp_ns: i64, mut fields: Vec<(Field, Value)>) -> Event {
        fields.sort_by_key(|(f, _)| *f);
        // `dedup_by` keeps the first of equal neighbours; hand it the later value first.
        fields.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
        Event::from_sorted(timestamp_ns, fields)
    }

    /// Convenience: interns `path` and sets it.
    pub fn insert(&mut self, path: &str, value: Value) {
        self.set(Field::intern(path), value);
    }

    pub fn get(&self, field: Field) -> Option<&Value> {
        self.fields
            .binary_search_by_key(&field, |(f, _)| *f)
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// Looks a path up by name (slow path: interns it first). Prefer [`Event::get`].
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        self.get(Field::intern(path))
    }

    pub fn fields(&self) -> impl Iterator<Item = (Field, &Value)> {
        self.fields.iter().map(|(f, v)| (*f, v))
    }

    /// True when the event has a field at `path` or below it (`path.` followed by anything).
    /// Reads the field names from a per-thread copy of the interner, taking no lock per field.
    pub fn has_path_under(&self, path: &str) -> bool {
        let Some(max) = self.fields.iter().map(|(f, _)| *f).max() else {
            return false;
        };
        let under = |name: &str| {
            name.strip_prefix(path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        Field::with_names(max, |names| {
            self.fields
                .iter()
                .any(|(f, _)| names.get(f.0 as usize).is_some_and(|n| under(n)))
        })
        .unwrap_or_else(|| self.fields.iter().any(|(f, _)| under(&f.name())))
    }

    /// Builds an event from an ECS JSON document, flattening nested objects into dotted paths.
    /// `@timestamp` (RFC 3339 string, or epoch milliseconds as a number) sets [`Event::timestamp_ns`].
    pub fn from_json(doc: &serde_json::Value) -> Result<Event, EventError> {
        let serde_json::Value::Object(map) = doc else {
            return Err(EventError::NotAnObject(json_kind(doc)));
        };
        let mut ev = Event::default();
        let mut prefix = String::new();
        flatten(&mut ev, &mut prefix, map);
        ev.fields.sort_by_key(|(f, _)| *f);
        ev.fields.dedup_by_key(|(f, _)| *f);
        ev.refresh_categories();
        if let Some(ts) = map.get("@timestamp") {
            ev.timestamp_ns =
                parse_timestamp(ts).ok_or_else(|| EventError::BadTimestamp(ts.to_string()))?;
        }
        Ok(ev)
    }

    /// Rebuilds a nested ECS JSON document from the flattened fields. Where a scalar and an object
    /// share a prefix (`a` and `a.b`), the later one is kept under its full dotted path.
    pub fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (f, v) in &self.fields {
            let name = f.name();
            if !insert_nested(&mut root, &name, v.to_json()) {
                root.insert(name.to_string(), v.to_json());
            }
        }
        serde_json::Value::Object(root)
    }
}

fn flatten(ev: &mut Event, prefix: &mut String, map: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in map {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(k);
        match v {
            serde_json::Value::Object(inner) if !inner.is_empty() => flatten(ev, prefix, inner),
            _ => ev.fields.push((Field::intern(prefix), Value::from_json(v))),
        }
        prefix.truncate(len);
    }
}

/// What a JSON value is, in words for an error message (`an object`, `a string`, ...).
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn flattens_and_rebuilds() {
        let doc = serde_json::json!({"@timestamp": "2024-01-02T03:04:05.5Z", "process": {"pid": 7, "name": "sh"}, "tags": ["a"]});
        let ev = Event::from_json(&doc).unwrap();
        assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(7)));
        assert_eq!(
            ev.get_path("process.name").and_then(Value::as_str),
            Some("sh")
        );
        assert_eq!(ev.timestamp_ns, 1_704_164_645_500_000_000);
        assert_eq!(ev.to_json()["process"]["pid"], 7);
    }

    #[test]
    fn rejects_non_objects() {
        assert!(Event::from_json(&serde_json::json!([1])).is_err());
        assert!(Event::from_json(&serde_json::json!({"@timestamp": "yesterday"})).is_err());
    }

    #[test]
    fn timestamps_with_offsets() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01.000000001Z"),
            Some(1_000_000_001)
        );
    }

    #[test]
    fn from_fields_keeps_the_last_value_of_a_repeated_field() {
        let a = Field::intern("t.a");
        let b = Field::intern("t.b");
        let ev = Event::from_fields(
            5,
            vec![
                (b, Value::Int(1)),
                (a, Value::Int(2)),
                (b, Value::Int(3)),
                (b, Value::Int(4)),
            ],
        );
        assert_eq!(ev.get(a), Some(&Value::Int(2)));
        assert_eq!(ev.get(b), Some(&Value::Int(4)));
        assert_eq!(ev.fields().count(), 2);
        let mut by_set = Event::new(5);
        by_set.set(b, Value::Int(1));
        by_set.set(a, Value::Int(2));
        by_set.set(b, Value::Int(4));
        assert_eq!(by_set.fields, ev.fields);
    }

    #[test]
    fn short_strings_are_inline_and_compare_as_text() {
        let short = Str::from("process");
        let long = Str::from("/home/user/.local/bin/python3");
        assert!(short.is_inline());
        assert!(!long.is_inline());
        assert_eq!(&*short, "process");
        assert_eq!(&*long, "/home/user/.local/bin/python3");
        let edge = "é".repeat(11);
        assert_eq!(edge.len(), Str::INLINE);
        assert!(Str::from(edge.as_str()).is_inline());
        assert_eq!(&*Str::from(edge.as_str()), edge);
        assert_eq!(Str::from(Arc::<str>::from("process")), short);
        assert_eq!(Arc::<str>::from(long.clone()), Arc::from(&*long));
        let (a, ab, b) = (Str::from("a"), Str::from("ab"), Str::from("b"));
        assert!(a < b && ab > a && ab < b);
        assert_eq!(format!("{:?}", Value::Str(short)), r#"Str("process")"#);
        // Inline strings do not make a value bigger than a pointer pair and a tag.
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    #[test]
    fn category_bits_follow_event_category() {
        let bit = |name: &str| 1u32 << ECS_CATEGORIES.iter().position(|c| *c == name).unwrap();
        let mut ev = Event::new(0);
        assert_eq!(ev.category_bits(), Some(0));
        ev.insert(
            "event.category",
            Value::Array(Arc::from(vec![
                Value::Str("process".into()),
                Value::Int(3),
                Value::Str("network".into()),
            ])),
        );
        assert_eq!(ev.category_bits(), Some(bit("process") | bit("network")));
        ev.insert("event.category", Value::Str("Process".into()));
        assert_eq!(ev.category_bits(), None);
        ev.insert("event.category", Value::Str("my-own".into()));
        assert_eq!(ev.category_bits(), None);
        ev.insert("event.category", Value::Null);
        assert_eq!(ev.category_bits(), Some(0));
        let doc = serde_json::json!({"event": {"category": ["file"]}});
        assert_eq!(
            Event::from_json(&doc).unwrap().category_bits(),
            Some(bit("file"))
        );
        let text = doc.to_string();
        assert_eq!(
            Event::from_json_str(&text).unwrap().category_bits(),
            Some(bit("file"))
        );
        let f = Event::category_field();
        let ev = Event::from_fields(
            0,
            vec![(f, Value::Str("web".into())), (f, Value::Str("iam".into()))],
        );
        assert_eq!(ev.category_bits(), Some(bit("iam")));
        // `warm` reads every kind of value without panicking (its result has no meaning).
        let mut ev = Event::new(0);
        ev.warm();
        ev.insert("w.a", Value::Array(Arc::from(Vec::new())));
        ev.insert("w.b", Value::Array(Arc::from(vec![Value::Int(1)])));
        ev.insert("w.c", Value::Str("x".repeat(40).into()));
        ev.insert("w.d", Value::Str("".into()));
        std::hint::black_box(ev.warm());
    }

    #[test]
    fn write_json_nests_and_escapes() {
        let mut ev = Event::new(0);
        ev.insert("wj.process.name", Value::Str("a\"b\n".into()));
        ev.insert("wj.process.pid", Value::Int(-3));
        ev.insert("wj.ip", Value::Ip("::1".parse().unwrap()));
        ev.insert("wj.f", Value::Float(f64::NAN));
        ev.insert(
            "wj-x",
            Value::Array(Arc::from(vec![Value::Bool(true), Value::Null])),
        );
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"wj":{"f":null,"ip":"::1","process":{"name":"a\"b\n","pid":-3}},"wj-x":[true,null]}"#
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev.to_json());
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,30}".prop_map(|s| Value::Str(s.into())),
            any::<[u8; 4]>().prop_map(|b| Value::Ip(std::net::IpAddr::from(b))),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| Value::Array(Arc::from(v))),
                proptest::collection::vec(("[a-c]{1,2}", inner), 0..3).prop_map(|v| {
                    Value::Object(
                        v.into_iter()
                            .map(|(k, v)| (Arc::from(k.as_str()), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        /// The direct writer and the `serde_json::Value` path give the same document, including
        /// for paths that collide (`a` and `a.b`) and odd names.
        #[test]
        fn write_json_equals_to_json(
            fields in proptest::collection::vec(
                ("(pw\\.)?[ab]{1,2}(\\.[ab.-]{0,2}){0,2}", arb_value()), 0..12)
        ) {
            let mut ev = Event::new(0);
            for (path, v) in fields {
                ev.insert(&path, v);
            }
            let mut out = Vec::new();
            ev.write_json(&mut out);
            // Both texts go through the same parser (serde_json's float parsing is not exact).
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let slow: serde_json::Value =
                serde_json::from_str(&ev.to_json().to_string()).unwrap();
            proptest::prop_assert_eq!(back, slow);
        }
    }
}
