//! The normalised event model: ECS field paths over typed values.
//!
//! Field paths are interned once (at rule compile time, or when a decoder first meets a path) into a
//! [`Field`], a small integer; an [`Event`] is a vector of `(Field, Value)` sorted by field, so a lookup
//! during evaluation is a binary search over integers, never a string comparison.
//!
//! Nested JSON objects are flattened into dotted paths (`{"process": {"pid": 1}}` is `process.pid`);
//! arrays stay arrays. The original record, when there is one, is kept in [`Event::raw`] as evidence.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, RwLock};

mod stream;

/// An interned ECS field path such as `process.name`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Field(u32);

#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| RwLock::new(Interner::default()));

/// Most distinct field paths the process interns. Field names come from outside data (an agent
/// can send any JSON keys, auditd any `key=value`), so the table is bounded: past the limit, a new
/// path is interned as [`Field::OVERFLOW_NAME`] instead (the record's original text still holds it)
/// and counted ([`Field::overflowed`]). About 100 bytes per entry: ~25 MiB at the limit.
pub const MAX_FIELDS: usize = 262_144;

static OVERFLOWED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Field {
    /// Interns `path` (idempotent) and returns its id.
    pub fn intern(path: &str) -> Field {
        // A per-thread cache in front of the shared table: decoders intern every path of every
        // event, and the shared read lock would otherwise be taken once per field.
        // ahash: the keys are short dotted paths, hashed once per field of every decoded event.
        thread_local! {
            static CACHE: std::cell::RefCell<HashMap<Box<str>, u32, ahash::RandomState>> =
                std::cell::RefCell::new(HashMap::default());
        }
        if let Some(id) = CACHE.with(|c| c.borrow().get(path).copied()) {
            return Field(id);
        }
        let f = Field::intern_shared(path);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            // Bounded: outside data can carry any number of distinct paths.
            if c.len() >= 16_384 {
                c.clear();
            }
            c.insert(Box::from(path), f.0);
        });
        f
    }

    fn intern_shared(path: &str) -> Field {
        {
            let guard = INTERNER
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(&id) = guard.ids.get(path) {
                return Field(id);
            }
        }
        let mut guard = INTERNER
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&id) = guard.ids.get(path) {
            return Field(id);
        }
        if guard.names.len() + 1 >= MAX_FIELDS {
            let n = OVERFLOWED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(10_000) {
                tracing::warn!(
                    message = "field table full: new field names are kept as `_overflow`",
                    limit = MAX_FIELDS,
                    field = path,
                    overflowed = n + 1
                );
            }
            return Field::push(&mut guard, Field::OVERFLOW_NAME);
        }
        Field::push(&mut guard, path)
    }

    /// Adds `path` to the table (or finds it, for the overflow name).
    fn push(guard: &mut Interner, path: &str) -> Field {
        if let Some(&id) = guard.ids.get(path) {
            return Field(id);
        }
        let id = u32::try_from(guard.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(path);
        guard.names.push(name.clone());
        guard.ids.insert(name, id);
        Field(id)
    }

    /// The path new fields get once the table holds [`MAX_FIELDS`] paths.
    pub const OVERFLOW_NAME: &'static str = "_overflow";

    /// How many times a new field path was turned into [`Field::OVERFLOW_NAME`].
    pub fn overflowed() -> u64 {
        OVERFLOWED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The dotted path this field was interned from.
    pub fn name(self) -> Arc<str> {
        let guard = INTERNER
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .names
            .get(self.0 as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from("<unknown>"))
    }

    /// The raw id, for dense per-field tables.
    pub fn id(self) -> u32 {
        self.0
    }

    /// Runs `f` with the names of all interned fields, indexed by id, from a per-thread copy of the
    /// shared table (refreshed when a field is newer than the copy), so that a hot path (writing
    /// events as JSON) takes no lock and clones no name per field. `None` when `max` is not interned
    /// or the per-thread copy would be too large.
    fn with_names<R>(max: Field, f: impl FnOnce(&[Arc<str>]) -> R) -> Option<R> {
        const MAX_CACHED: usize = 1 << 20;
        thread_local! {
            static NAMES: std::cell::RefCell<Vec<Arc<str>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let want = max.0 as usize + 1;
        if want > MAX_CACHED {
            return None;
        }
        NAMES.with(|c| {
            let mut names = c.borrow_mut();
            if names.len() < want {
                let guard = INTERNER
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if guard.names.len() < want {
                    return None;
                }
                let from = names.len();
                let to = guard.names.len().min(MAX_CACHED);
                names.extend(guard.names[from..to].iter().cloned());
            }
            Some(f(&names))
        })
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({})", self.name())
    }
}

/// A string value: held inline when it has at most [`Str::INLINE`] bytes (most field values:
/// names, ids, categories, short paths), in a shared allocation otherwise. An inline string lives
/// inside the event's field vector, so reading it touches no other memory; build one with `.into()`
/// from `&str`, `String`, `Box<str>` or `Arc<str>`. Equality, order and hashing are those of the text.
#[derive(Clone)]
pub struct Str(StrRepr);

#[derive(Clone)]
enum StrRepr {
    Inline { len: u8, bytes: [u8; Str::INLINE] },
    Heap(Arc<str>),
}

impl Str {
    /// The longest string held inline (a `Str` is then the size of a `Vec`).
    pub const INLINE: usize = 22;

    fn inline(s: &str) -> Option<Str> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|l| usize::from(*l) <= Self::INLINE)?;
        let mut bytes = [0u8; Self::INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Str(StrRepr::Inline { len, bytes }))
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            StrRepr::Inline { len, bytes } => {
                let b = &bytes[..usize::from(*len).min(Self::INLINE)];
                // Built from a `&str` of exactly these bytes, so this never fails.
                std::str::from_utf8(b).unwrap_or_default()
            }
            StrRepr::Heap(s) => s,
        }
    }

    /// The text's bytes (no UTF-8 check: for comparisons and hashing).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            StrRepr::Inline { len, bytes } => &bytes[..usize::from(*len).min(Self::INLINE)],
            StrRepr::Heap(s) => s.as_bytes(),
        }
    }

    /// The text as an `Arc<str>` (a new allocation for an inline string, a shared one otherwise).
    pub fn to_arc(&self) -> Arc<str> {
        match &self.0 {
            StrRepr::Inline { .. } => Arc::from(self.as_str()),
            StrRepr::Heap(s) => s.clone(),
        }
    }

    /// True when the text is held inline.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, StrRepr::Inline { .. })
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for Str {
    fn default() -> Str {
        Str(StrRepr::Inline {
            len: 0,
            bytes: [0; Str::INLINE],
        })
    }
}

impl PartialEq for Str {
    #[inline]
    fn eq(&self, other: &Str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Str {}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str::inline(s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Str {
        Str::from(s.as_str())
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str::inline(&s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<Box<str>> for Str {
    fn from(s: Box<str>) -> Str {
        Str::inline(&s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<std::borrow::Cow<'_, str>> for Str {
    fn from(s: std::borrow::Cow<'_, str>) -> Str {
        match s {
            std::borrow::Cow::Borrowed(b) => Str::from(b),
            std::borrow::Cow::Owned(o) => Str::from(o),
        }
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Str {
        Str::inline(&s).unwrap_or(Str(StrRepr::Heap(s)))
    }
}

impl From<&Arc<str>> for Str {
    fn from(s: &Arc<str>) -> Str {
        Str::inline(s).unwrap_or_else(|| Str(StrRepr::Heap(s.clone())))
    }
}

impl From<Str> for Arc<str> {
    fn from(s: Str) -> Arc<str> {
        match s.0 {
            StrRepr::Heap(a) => a,
            StrRepr::Inline { .. } => Arc::from(s.as_str()),
        }
    }
}

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

/// Orders dotted paths segment by segment (`a` < `a.b` < `a.c` < `a-x` < `ab`): the paths of one
/// object are then neighbours at every depth.
fn cmp_paths(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'.' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_text(out, s.as_bytes(), || s);
}

/// Writes the JSON string of `text` (UTF-8 bytes), taking the `&str` from `s` only when the text
/// needs escaping: most strings need none and are copied in one go, without a UTF-8 check.
fn write_text<'a>(out: &mut Vec<u8>, text: &[u8], s: impl FnOnce() -> &'a str) {
    if text.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s());
    }
}

impl Value {
    /// Appends this value as JSON (the same JSON as [`Value::to_json`]) without building a
    /// `serde_json::Value`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => {
                let _ = serde_json::to_writer(&mut *out, i);
            }
            Value::Float(f) => {
                // Non-finite floats are `null`, as in `to_json`.
                let _ = serde_json::to_writer(&mut *out, f);
            }
            Value::Str(s) => write_text(out, s.as_bytes(), || s.as_str()),
            Value::Ip(ip) => {
                use std::io::Write;
                // An address has no character that needs escaping.
                let _ = write!(out, "\"{ip}\"");
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out);
                }
                out.push(b']');
            }
            Value::Object(o) => {
                out.push(b'{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    v.write_json(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl Event {
    /// Appends the event as one nested ECS JSON document (no newline), keys in path order. The
    /// document is the one [`Event::to_json`] builds, written straight from the fields: this is
    /// the path for high-rate output (`sensor events`, NDJSON files).
    ///
    /// The nesting depends only on which fields an event has, and a source emits a handful of
    /// field sets over and over, so the layout (every key, brace and comma between two values) is
    /// computed once per field set and kept per thread; writing an event is then copying those
    /// literal pieces and serialising the values.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        const MAX_LAYOUTS: usize = 1024;
        thread_local! {
            /// Layouts by field set, and a scratch key.
            static LAYOUTS: std::cell::RefCell<(LayoutMap, Vec<Field>)> =
                std::cell::RefCell::new((HashMap::default(), Vec::new()));
        }
        let done = LAYOUTS.with(|c| {
            let (layouts, key) = &mut *c.borrow_mut();
            key.clear();
            key.extend(self.fields.iter().map(|(f, _)| *f));
            if !layouts.contains_key(key.as_slice()) {
                if layouts.len() >= MAX_LAYOUTS {
                    layouts.clear();
                }
                let layout = Layout::of(key);
                layouts.insert(key.clone().into_boxed_slice(), layout);
            }
            match layouts.get(key.as_slice()) {
                Some(Some(layout)) => {
                    for (lit, i) in &layout.parts {
                        out.extend_from_slice(lit);
                        if let Some((_, v)) = self.fields.get(*i) {
                            v.write_json(out);
                        }
                    }
                    out.extend_from_slice(&layout.tail);
                    true
                }
                _ => false,
            }
        });
        if !done {
            let _ = serde_json::to_writer(&mut *out, &self.to_json());
        }
    }
}

type LayoutMap = HashMap<Box<[Field]>, Option<Layout>, ahash::RandomState>;

/// The JSON shape of one field set: before each value the literal text that precedes it (braces,
/// keys, commas), and what closes the document after the last one.
struct Layout {
    /// (literal, index of the value in the event's field vector)
    parts: Vec<(Box<[u8]>, usize)>,
    tail: Box<[u8]>,
}

impl Layout {
    /// `None` for shapes the nested writer does not handle (a value at `a` and at `a.b`, empty
    /// segments): those take the `to_json` path, which has the rules for them.
    fn of(fields: &[Field]) -> Option<Layout> {
        let Some(&max) = fields.iter().max() else {
            return Some(Layout {
                parts: Vec::new(),
                tail: Box::from(&b"{}"[..]),
            });
        };
        Field::with_names(max, |names| {
            let mut items: Vec<(&str, usize)> = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                items.push((names.get(f.0 as usize).map_or("", |n| n), i));
            }
            items.sort_unstable_by(|a, b| cmp_paths(a.0, b.0));
            let regular = items.iter().all(|(n, _)| {
                !n.is_empty() && !n.starts_with('.') && !n.ends_with('.') && !n.contains("..")
            }) && items.windows(2).all(|w| {
                !(w[1].0.len() > w[0].0.len()
                    && w[1].0.as_bytes()[w[0].0.len()] == b'.'
                    && w[1].0.starts_with(w[0].0))
            });
            if !regular {
                return None;
            }
            let segs: Vec<(Vec<&str>, usize)> = items
                .iter()
                .map(|(n, i)| (n.split('.').collect(), *i))
                .collect();
            let mut layout = Layout {
                parts: Vec::with_capacity(segs.len()),
                tail: Box::default(),
            };
            let mut lit = Vec::new();
            layout_group(&mut layout, &mut lit, &segs, 0);
            layout.tail = lit.into_boxed_slice();
            Some(layout)
        })
        .flatten()
    }
}

/// Lays out `items` (sorted by [`cmp_paths`], sharing their first `depth` segments) as one object.
fn layout_group(
    layout: &mut Layout,
    lit: &mut Vec<u8>,
    items: &[(Vec<&str>, usize)],
    depth: usize,
) {
    let seg = |i: usize| items[i].0.get(depth).copied().unwrap_or("");
    lit.push(b'{');
    let mut i = 0;
    while i < items.len() {
        let mut j = i + 1;
        while j < items.len() && seg(j) == seg(i) {
            j += 1;
        }
        if i > 0 {
            lit.push(b',');
        }
        write_str(lit, seg(i));
        lit.push(b':');
        if j == i + 1 && items[i].0.len() == depth + 1 {
            layout
                .parts
                .push((std::mem::take(lit).into_boxed_slice(), items[i].1));
        } else {
            layout_group(layout, lit, &items[i..j], depth + 1);
        }
        i = j;
    }
    lit.push(b'}');
}

fn insert_nested(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    v: serde_json::Value,
) -> bool {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if cur.contains_key(part) {
                return false;
            }
            cur.insert(part.to_string(), v);
            return true;
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        match entry {
            serde_json::Value::Object(next) => cur = next,
            _ => return false,
        }
    }
    false
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

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses `@timestamp`: an RFC 3339 string, or a number of epoch milliseconds.
pub fn parse_timestamp(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.checked_mul(1_000_000)
            } else {
                #[allow(clippy::cast_possible_truncation)]
                n.as_f64().map(|f| (f * 1e6) as i64)
            }
        }
        serde_json::Value::String(s) => parse_rfc3339_ns(s),
        _ => None,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into epoch nanoseconds, without a date library.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10i64.pow(u32::try_from(9 - digits).ok()?);
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        None => 0,
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
