//! Writing events as nested ECS JSON straight from their fields, with a per-thread layout cache
//! per field set.

use std::collections::HashMap;

use super::{Event, Field, Value};

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

pub(super) fn insert_nested(
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
