//! Building an [`Event`] straight from JSON text, without a `serde_json::Value` in between.
//!
//! The definition of the result is the serde path: `serde_json::from_str::<serde_json::Value>` then
//! [`Event::from_json`]. The streaming parser here is a fast path for the documents that path
//! handles in an obvious way; whenever the text uses a construct whose meaning serde defines in a
//! less obvious way (a duplicate key, a lone surrogate escape, an escaped key, a number beyond the
//! plain integers, very deep nesting) or is not valid at all, the parser gives up ([`Bail`]) and the
//! serde path decides, errors and their messages included. The fast path therefore never changes
//! a result; it only skips building the intermediate tree.
//!
//! The same scanner, without building values, backs [`Event::check_json_str`]: the verdict
//! [`Event::from_json_str`] would give, for validating records before they are spooled.

use std::sync::Arc;

use super::{parse_rfc3339_ns, Event, EventError, Field, Str, Value};

/// The fast path does not decide this input; the serde path will.
#[derive(Debug)]
struct Bail;

/// Nesting the fast path handles (serde_json's own limit is 127 containers; deeper inputs go to it).
const MAX_DEPTH: usize = 100;
/// Object-valued keys per object the fast path checks for duplicates (quadratic check).
const MAX_OBJECT_KEYS: usize = 64;
/// Entries of an object inside an array that the fast path merges (quadratic check).
const MAX_INNER_ENTRIES: usize = 64;

impl Event {
    /// Builds an event from ECS JSON text: the same event, or the same error, as parsing the text
    /// with serde_json and calling [`Event::from_json`] (errors of the JSON syntax are
    /// [`EventError::InvalidJson`] with serde_json's message).
    pub fn from_json_str(text: &str) -> Result<Event, EventError> {
        Event::from_json_str_nested(text).map(|(ev, _)| ev)
    }

    /// As [`Event::from_json_str`], also telling how the field paths relate to the document.
    /// `Some(_)` when the streaming parser decided: then no key of a flattened object had escapes
    /// (every such key appears literally in `text`), and `Some(true)` says moreover that no such
    /// key was empty or contained a dot, so that the field `a.b.c` exists exactly when the
    /// document has `{"a":{"b":{"c":...}}}` with a scalar, an array or an empty object there.
    /// `None` when the serde path decided (the caller can look at the document itself).
    pub fn from_json_str_nested(text: &str) -> Result<(Event, Option<bool>), EventError> {
        match build(text) {
            Ok((ev, nested)) => Ok((ev, Some(nested))),
            Err(Bail) => serde_path(text).map(|ev| (ev, None)),
        }
    }

    /// The verdict of [`Event::from_json_str`] on `text` (the same error, message included)
    /// without building the event: a scan that allocates nothing for well-formed documents.
    pub fn check_json_str(text: &str) -> Result<(), EventError> {
        match check(text) {
            Ok(()) => Ok(()),
            Err(Bail) => serde_path(text).map(drop),
        }
    }
}

/// The reference: serde_json's tree, then [`Event::from_json`].
fn serde_path(text: &str) -> Result<Event, EventError> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| EventError::InvalidJson(e.to_string()))?;
    Event::from_json(&doc)
}

/// What `@timestamp` means, as [`super::parse_timestamp`] reads it from the serde value.
fn timestamp_ns(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => i.checked_mul(1_000_000),
        #[allow(clippy::cast_possible_truncation)]
        Value::Float(f) => Some((f * 1e6) as i64),
        Value::Str(s) => parse_rfc3339_ns(s),
        _ => None,
    }
}

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn new(s: &'a str) -> Scanner<'a> {
        Scanner {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace, then consumes `c` or bails.
    #[inline]
    fn eat(&mut self, c: u8) -> Result<(), Bail> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// After `,` or the opening brace/bracket: true at the closing `end`, false at `,`.
    #[inline]
    fn next_or_end(&mut self, end: u8) -> Result<bool, Bail> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(c) if c == end => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(Bail),
        }
    }

    /// A string body after its opening quote: the raw text between the quotes and what escapes
    /// it holds (`Esc::None`, `Esc::Simple` or `Esc::Unicode`).
    fn string_raw(&mut self) -> Result<(&'a str, Esc), Bail> {
        let start = self.i;
        let mut esc = Esc::None;
        loop {
            match *self.b.get(self.i).ok_or(Bail)? {
                b'"' => {
                    let raw = self.s.get(start..self.i).ok_or(Bail)?;
                    self.i += 1;
                    return Ok((raw, esc));
                }
                b'\\' => match *self.b.get(self.i + 1).ok_or(Bail)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                        if esc == Esc::None {
                            esc = Esc::Simple;
                        }
                        self.i += 2;
                    }
                    b'u' => {
                        let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Bail)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(Bail);
                        }
                        esc = Esc::Unicode;
                        self.i += 6;
                    }
                    _ => return Err(Bail),
                },
                0..=0x1f => return Err(Bail),
                _ => self.i += 1,
            }
        }
    }

    /// A number token (JSON grammar), returned as text; `true` when it is a plain integer.
    fn number(&mut self) -> Result<(&'a str, bool), Bail> {
        let start = self.i;
        let digits = |sc: &mut Scanner<'_>| {
            let from = sc.i;
            while sc.peek().is_some_and(|c| c.is_ascii_digit()) {
                sc.i += 1;
            }
            sc.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Bail),
        }
        let mut int = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            int = false;
            if digits(self) == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            int = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Bail);
            }
        }
        Ok((self.s.get(start..self.i).ok_or(Bail)?, int))
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A value (whitespace already skipped), built.
    fn value(&mut self, depth: usize) -> Result<Value, Bail> {
        match self.peek().ok_or(Bail)? {
            b'"' => {
                self.i += 1;
                let (raw, esc) = self.string_raw()?;
                Ok(Value::Str(match esc {
                    Esc::None => Str::from(raw),
                    _ => Str::from(unescape(raw)?),
                }))
            }
            b'-' | b'0'..=b'9' => {
                let (tok, int) = self.number()?;
                number_value(tok, int)
            }
            b't' => self.literal(b"true").map(|()| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Value::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Value::Null),
            b'[' => {
                self.i += 1;
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        if self.next_or_end(b']')? {
                            break;
                        }
                    }
                }
                Ok(Value::Array(Arc::from(items)))
            }
            b'{' => {
                self.i += 1;
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                // serde_json's map keeps the first position of a key and its last value.
                let mut entries: Vec<(Arc<str>, Value)> = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.eat(b'"')?;
                        let (raw, esc) = self.string_raw()?;
                        let key: Arc<str> = match esc {
                            Esc::None => Arc::from(raw),
                            _ => Arc::from(unescape(raw)?),
                        };
                        self.eat(b':')?;
                        self.ws();
                        let v = self.value(depth + 1)?;
                        match entries.iter().position(|(k, _)| *k == key) {
                            Some(i) => entries[i].1 = v,
                            None if entries.len() >= MAX_INNER_ENTRIES => return Err(Bail),
                            None => entries.push((key, v)),
                        }
                        if self.next_or_end(b'}')? {
                            break;
                        }
                    }
                }
                Ok(Value::Object(Arc::from(entries)))
            }
            _ => Err(Bail),
        }
    }

    /// A value (whitespace already skipped), checked and skipped.
    fn skip_value(&mut self, depth: usize) -> Result<(), Bail> {
        match self.peek().ok_or(Bail)? {
            b'"' => {
                self.i += 1;
                let (raw, esc) = self.string_raw()?;
                if esc == Esc::Unicode {
                    // Surrogates must pair up; only `\u` escapes can get that wrong.
                    unescape(raw)?;
                }
                Ok(())
            }
            b'-' | b'0'..=b'9' => {
                let (tok, int) = self.number()?;
                if !fast_int(tok, int) {
                    // Out-of-range floats are errors; serde_json says which.
                    number_value(tok, int)?;
                }
                Ok(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                self.i += 1;
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    if self.next_or_end(b']')? {
                        return Ok(());
                    }
                }
            }
            b'{' => {
                self.i += 1;
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.eat(b'"')?;
                    let (raw, esc) = self.string_raw()?;
                    if esc == Esc::Unicode {
                        unescape(raw)?;
                    }
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    if self.next_or_end(b'}')? {
                        return Ok(());
                    }
                }
            }
            _ => Err(Bail),
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Result<(), Bail> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(Bail)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// Only two-character escapes (`\n`, `\"`...).
    Simple,
    /// At least one `\uXXXX`.
    Unicode,
}

/// The text of a string body that the scanner accepted; bails on an unpaired surrogate.
fn unescape(raw: &str) -> Result<String, Bail> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let b = rest.as_bytes();
        let (c, used) = match b.get(p + 1).ok_or(Bail)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hi = hex4(rest.get(p + 2..p + 6).ok_or(Bail)?)?;
                match hi {
                    0xd800..=0xdbff => {
                        if rest.get(p + 6..p + 8) != Some("\\u") {
                            return Err(Bail);
                        }
                        let lo = hex4(rest.get(p + 8..p + 12).ok_or(Bail)?)?;
                        if !(0xdc00..=0xdfff).contains(&lo) {
                            return Err(Bail);
                        }
                        let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                        (char::from_u32(c).ok_or(Bail)?, 12)
                    }
                    0xdc00..=0xdfff => return Err(Bail),
                    _ => (char::from_u32(hi).ok_or(Bail)?, 6),
                }
            }
            _ => return Err(Bail),
        };
        out.push(c);
        rest = rest.get(p + used..).ok_or(Bail)?;
    }
    out.push_str(rest);
    Ok(out)
}

fn hex4(s: &str) -> Result<u32, Bail> {
    if s.len() == 4 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).map_err(|_| Bail)
    } else {
        Err(Bail)
    }
}

/// A plain integer the fast path converts itself: at most 18 digits, and not `-0` (a float in
/// serde_json).
fn fast_int(tok: &str, int: bool) -> bool {
    let digits = tok.strip_prefix('-').unwrap_or(tok);
    int && digits.len() <= 18 && !(tok.starts_with('-') && digits == "0")
}

fn number_value(tok: &str, int: bool) -> Result<Value, Bail> {
    if fast_int(tok, int) {
        let (neg, digits) = match tok.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, tok),
        };
        let mut n: i64 = 0;
        for c in digits.bytes() {
            n = n * 10 + i64::from(c - b'0');
        }
        return Ok(Value::Int(if neg { -n } else { n }));
    }
    // Floats and large integers: serde_json's conversion, so that the value is the same bit for
    // bit (and an out-of-range float is the same error).
    match serde_json::from_str::<serde_json::Value>(tok) {
        Ok(v) => Ok(Value::from_json(&v)),
        Err(_) => Err(Bail),
    }
}

/// The builder of the fast path: flattens objects into dotted paths as [`Event::from_json`] does.
struct Builder<'a> {
    sc: Scanner<'a>,
    prefix: String,
    fields: Vec<(Field, Value)>,
    /// Keys of the objects being flattened, innermost last.
    keys: Vec<&'a str>,
    /// Keys whose value is a non-empty object, innermost object's last.
    obj_keys: Vec<&'a str>,
    /// The root's `@timestamp` value.
    ts: Option<Value>,
    nested: bool,
}

fn build(text: &str) -> Result<(Event, bool), Bail> {
    let mut b = Builder {
        sc: Scanner::new(text),
        prefix: String::with_capacity(64),
        fields: Vec::with_capacity(32),
        keys: Vec::with_capacity(32),
        obj_keys: Vec::with_capacity(8),
        ts: None,
        nested: true,
    };
    b.sc.eat(b'{')?;
    b.sc.ws();
    if b.sc.peek() == Some(b'}') {
        b.sc.i += 1;
    } else {
        b.object(1)?;
    }
    b.sc.end()?;
    let mut fields = b.fields;
    fields.sort_unstable_by_key(|(f, _)| *f);
    // Two values for one path (`{"a.b":1,"a":{"b":2}}`, a repeated key): the serde path's
    // choice depends on its map's handling of duplicates.
    if fields.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Bail);
    }
    let timestamp_ns = match &b.ts {
        Some(v) => timestamp_ns(v).ok_or(Bail)?,
        None => 0,
    };
    Ok((Event::from_sorted(timestamp_ns, fields), b.nested))
}

impl<'a> Builder<'a> {
    /// The members of a non-empty object being flattened (after its `{`), up to its `}`.
    fn object(&mut self, depth: usize) -> Result<(), Bail> {
        let (k0, o0) = (self.keys.len(), self.obj_keys.len());
        loop {
            self.sc.eat(b'"')?;
            let (key, esc) = self.sc.string_raw()?;
            if esc != Esc::None || self.obj_keys[o0..].contains(&key) {
                return Err(Bail);
            }
            if key.is_empty() || memchr::memchr(b'.', key.as_bytes()).is_some() {
                self.nested = false;
            }
            self.sc.eat(b':')?;
            self.sc.ws();
            let len = self.prefix.len();
            if !self.prefix.is_empty() {
                self.prefix.push('.');
            }
            self.prefix.push_str(key);
            let root_ts = depth == 1 && key == "@timestamp";
            let v = if self.sc.peek() == Some(b'{') {
                self.sc.i += 1;
                self.sc.ws();
                if self.sc.peek() == Some(b'}') {
                    self.sc.i += 1;
                    Some(Value::Object(Arc::from(Vec::new())))
                } else {
                    None
                }
            } else {
                Some(self.sc.value(depth)?)
            };
            match v {
                Some(v) => {
                    if root_ts {
                        self.ts = Some(v.clone());
                    }
                    self.fields.push((Field::intern(&self.prefix), v));
                }
                None => {
                    // A non-empty object: flattened. A repeated key here would make serde's map
                    // drop the first object's fields.
                    if root_ts
                        || depth >= MAX_DEPTH
                        || self.obj_keys.len() - o0 >= MAX_OBJECT_KEYS
                        || self.keys[k0..].contains(&key)
                    {
                        return Err(Bail);
                    }
                    self.obj_keys.push(key);
                    self.object(depth + 1)?;
                }
            }
            self.keys.push(key);
            self.prefix.truncate(len);
            if self.sc.next_or_end(b'}')? {
                break;
            }
        }
        self.keys.truncate(k0);
        self.obj_keys.truncate(o0);
        Ok(())
    }
}

/// The scan behind [`Event::check_json_str`]: JSON syntax, an object at the root, and the root's
/// `@timestamp`, building only the timestamp's value.
fn check(text: &str) -> Result<(), Bail> {
    let mut sc = Scanner::new(text);
    sc.eat(b'{')?;
    sc.ws();
    if sc.peek() == Some(b'}') {
        sc.i += 1;
        return sc.end();
    }
    let mut ts_seen = false;
    loop {
        sc.eat(b'"')?;
        let (key, esc) = sc.string_raw()?;
        if esc != Esc::None {
            // Could spell `@timestamp`.
            return Err(Bail);
        }
        sc.eat(b':')?;
        sc.ws();
        if key == "@timestamp" {
            if ts_seen {
                return Err(Bail);
            }
            ts_seen = true;
            let v = sc.value(1)?;
            timestamp_ns(&v).ok_or(Bail)?;
        } else {
            sc.skip_value(1)?;
        }
        if sc.next_or_end(b'}')? {
            break;
        }
    }
    sc.end()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An event as comparable data: fields by name, and the timestamp.
    fn view(ev: &Event) -> (Vec<(String, Value)>, i64) {
        let mut f: Vec<(String, Value)> = ev
            .fields()
            .map(|(f, v)| (f.name().to_string(), v.clone()))
            .collect();
        f.sort_by(|a, b| a.0.cmp(&b.0));
        (f, ev.timestamp_ns)
    }

    fn outcome(r: &Result<Event, EventError>) -> Result<(Vec<(String, Value)>, i64), String> {
        r.as_ref().map(view).map_err(ToString::to_string)
    }

    /// The streaming parser, the checker and the serde path agree on `text`; the fast paths,
    /// when they decide, decide like serde.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let reference = serde_path(text);
        let want = outcome(&reference);
        prop_assert_eq!(&outcome(&Event::from_json_str(text)), &want, "{}", text);
        prop_assert_eq!(
            Event::check_json_str(text).map_err(|e| e.to_string()),
            want.as_ref().map(drop).map_err(Clone::clone),
            "{}",
            text
        );
        if let Ok((ev, _)) = build(text) {
            prop_assert_eq!(Ok(view(&ev)), want.clone(), "fast path: {}", text);
        }
        if check(text).is_ok() {
            prop_assert!(reference.is_ok(), "fast check accepted {}", text);
        }
        Ok(())
    }

    #[test]
    fn common_documents_take_the_fast_path() {
        let docs = [
            r#"{"@timestamp":"2024-05-01T10:00:01.123Z","event":{"category":["process"],"type":["start"],"action":"exec"},"process":{"pid":42,"name":"curl","args":["curl","-s"],"parent":{"pid":1}},"host":{"id":"h1"},"user":{"id":"1000"}}"#,
            r#" { "a" : { "b" : [ 1 , -2 , true , null , "x\ny" , { "c" : "d" } ] } , "e" : { } } "#,
            r#"{"@timestamp":1700000000000,"s":"caf\u00e9 \ud83d\ude00","n":-7}"#,
            "{}",
        ];
        for d in docs {
            assert!(build(d).is_ok(), "{d}");
            assert!(check(d).is_ok(), "{d}");
            agree(d).unwrap();
        }
        let (ev, nested) = build(docs[0]).unwrap();
        assert!(nested);
        assert_eq!(ev.get_path("process.parent.pid"), Some(&Value::Int(1)));
        assert_eq!(ev.timestamp_ns, 1_714_557_601_123_000_000);
        assert!(!build(r#"{"a.b":1}"#).unwrap().1);
        assert!(!build(r#"{"":{"a":1}}"#).unwrap().1);
    }

    #[test]
    fn edge_cases_agree_with_serde() {
        let docs = [
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"x":1},"a":{"y":2}}"#,
            r#"{"a":{"x":1},"a":5}"#,
            r#"{"a":5,"a":{"x":1}}"#,
            r#"{"a.b":1,"a":{"b":2}}"#,
            r#"{"a":{"b":2},"a.b":1}"#,
            r#"{"@timestamp":"yesterday"}"#,
            r#"{"@timestamp":"x","@timestamp":"2024-01-01T00:00:00Z"}"#,
            r#"{"@timestamp":{}}"#,
            r#"{"@timestamp":{"a":1}}"#,
            r#"{"@timestamp":9223372036854775807}"#,
            r#"{"@timestamp":18446744073709551615}"#,
            r#"{"@timestamp":-0}"#,
            r#"{"@timestamp":1.5e3}"#,
            r#"{"\u0040timestamp":"bad"}"#,
            r#"{"n":[-0,0,1e400,1e-400,12345678901234567890,-9223372036854775808,1E2,0.1]}"#,
            r#"{"n":1e400}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00x"}"#,
            r#"{"s":"\ud800\u0041"}"#,
            r#"{"s":"tab	in string"}"#,
            r#"{"s":"\x"}"#,
            r#"{"a":[{"k":1,"k":2,"j":3}]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{"#,
            "[1]",
            "\"s\"",
            "12",
            "null",
            "",
            "{",
            r#"{"k\n":1}"#,
            r#"{"":{"":{"a":1}},"x":{"":2}}"#,
        ];
        for d in docs {
            agree(d).unwrap();
        }
    }

    #[test]
    fn nesting_limits_agree_with_serde() {
        for depth in [50, 99, 100, 101, 126, 127, 128, 129, 300] {
            let arr = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            agree(&arr).unwrap();
            let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agree(&obj).unwrap();
        }
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[abc]".prop_map(String::from),
            1 => Just("a.b".to_string()),
            1 => Just(String::new()),
            1 => Just("@timestamp".to_string()),
            1 => Just("k\\n".to_string()),
            1 => Just("\\u0061".to_string()),
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            Just("-0".to_string()),
            Just("1e400".to_string()),
            Just("123456789012345678901234".to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            "[ -~]{0,8}".prop_map(|s| format!("\"{s}\"")),
            Just(r#""\ud83d\ude00\u00e9\/\b\f\r\t""#.to_string()),
            Just(r#""\ud83d""#.to_string()),
            Just(r#""2024-01-02T03:04:05.5+01:00""#.to_string()),
            Just("1700000000000".to_string()),
        ]
    }

    fn arb_json() -> impl Strategy<Value = String> {
        arb_leaf().prop_recursive(4, 32, 5, |inner| {
            let sep = prop_oneof![Just(","), Just(" , "), Just(",\n\t")];
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..4), sep.clone())
                    .prop_map(|(v, sep)| format!("[{}]", v.join(sep))),
                (proptest::collection::vec((arb_key(), inner), 0..5), sep).prop_map(|(kv, sep)| {
                    let members: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(sep))
                }),
            ]
        })
    }

    fn arb_doc() -> impl Strategy<Value = String> {
        proptest::collection::vec((arb_key(), arb_json()), 0..6).prop_map(|kv| {
            let members: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", members.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// `from_json_str` and `check_json_str` give what the serde path gives, on generated
        /// documents (duplicate and dotted keys, escapes, numbers of every kind).
        #[test]
        fn agrees_with_serde_on_documents(doc in arb_doc()) {
            agree(&doc)?;
        }

        /// The same on damaged documents: bytes replaced, the text cut.
        #[test]
        fn agrees_with_serde_on_damaged_documents(
            doc in arb_doc(),
            edits in proptest::collection::vec((any::<usize>(), prop_oneof![
                Just(b'"'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b','),
                Just(b':'), Just(b'\\'), Just(b'.'), Just(b'e'), Just(b'-'), Just(b'0'),
                Just(b' '), Just(b'\n'), Just(0x01u8), any::<u8>().prop_filter("ascii", u8::is_ascii)
            ]), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = doc.into_bytes();
            for (pos, b) in edits {
                let i = pos % bytes.len();
                bytes[i] = b;
            }
            bytes.truncate(bytes.len() - cut % 3);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agree(text)?;
            }
        }
    }
}
