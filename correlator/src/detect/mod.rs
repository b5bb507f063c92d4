//! Stateful detectors: what EQL alone cannot express.
//!
//! - [`threshold::Threshold`]: N matching events per key within a window.
//! - [`baseline::Baseline`]: learn the values seen per key during a learning period, then alert on new ones;
//!   the learned state is plain JSON so the daemon can persist it across restarts.
//! - [`flow::FlowMonitor`]: connections open longer than D or moving more than B bytes out, checked while the
//!   flow is still open (on the watermark) and when it closes, joined to the owning process.
//! - [`join::Join`]: cross-source correlation of several event kinds on an identity key within a window.
//! - [`wiring::IpcWiring`]: FIFOs and AF_UNIX sockets in shared directories followed with the processes
//!   around them (creator, readers, writers, pipeline siblings, network activity): high when a network
//!   peer or a program from a writable directory drives a shell through one, low otherwise.
//!
//! Every detector decides on event time only (`Event::timestamp_ns` and the watermark), never on the clock,
//! so a replay gives the same alerts as the live run. Event filters are plain predicates ([`Filter`]); the
//! analytic loader builds them from EQL.
//!
//! Architecture Invariant: detector state is bounded (per-key caps, expiry on the watermark) and every
//! iteration that can produce alerts runs over ordered maps, so output order is deterministic.

pub mod baseline;
pub mod flow;
pub mod join;
pub mod lineage;
pub mod threshold;
pub mod wiring;

use std::fmt;
use std::sync::Arc;

use crate::eql::matcher::glob_utf8;
use crate::{Alert, Event, Field, Severity, Value};

/// An event predicate (a compiled EQL event query, or a closure in tests).
pub type Filter = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Builds a [`Filter`] from a closure.
pub fn filter(f: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Filter {
    Arc::new(f)
}

/// A filter that accepts every event.
pub fn any() -> Filter {
    Arc::new(|_| true)
}

/// Errors restoring persisted detector state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("detector `{id}`: persisted state is not valid: {reason}")]
    Invalid { id: String, reason: String },
}

/// Where a key or value comes from: the first present of several field paths (`a|b`), optionally with a
/// regular expression whose first capture group (or whole match) is the value.
#[derive(Clone)]
pub struct FieldSpec {
    pub paths: Vec<Field>,
    pub regex: Option<regex::Regex>,
    text: String,
}

impl fmt::Debug for FieldSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Bad field specifications.
#[derive(Debug, thiserror::Error)]
pub enum FieldSpecError {
    #[error("empty field path in `{0}`")]
    Empty(String),
    #[error("bad regular expression in `{spec}`: {error}")]
    Regex { spec: String, error: String },
}

impl FieldSpec {
    /// Parses `a.b|c.d`: the first of the alternatives present in an event.
    pub fn parse(spec: &str) -> Result<FieldSpec, FieldSpecError> {
        let mut paths = Vec::new();
        for p in spec.split('|') {
            let p = p.trim();
            if p.is_empty() {
                return Err(FieldSpecError::Empty(spec.to_string()));
            }
            paths.push(Field::intern(p));
        }
        Ok(FieldSpec {
            paths,
            regex: None,
            text: spec.to_string(),
        })
    }

    /// Parses a field spec with a capture regex applied to the field's text.
    pub fn with_regex(spec: &str, re: &str) -> Result<FieldSpec, FieldSpecError> {
        let mut fs = FieldSpec::parse(spec)?;
        fs.regex = Some(regex::Regex::new(re).map_err(|e| FieldSpecError::Regex {
            spec: format!("{spec} ~ {re}"),
            error: e.to_string(),
        })?);
        fs.text = format!("{spec} ~ /{re}/");
        Ok(fs)
    }

    /// The raw value of the first alternative present.
    pub fn raw<'e>(&self, ev: &'e Event) -> Option<&'e Value> {
        self.paths
            .iter()
            .find_map(|f| ev.get(*f).filter(|v| !v.is_null()))
    }

    /// The value as text (arrays joined with spaces), after the regex if there is one.
    pub fn text(&self, ev: &Event) -> Option<String> {
        let v = self.raw(ev)?;
        let s = value_text(v);
        match &self.regex {
            None => Some(s),
            Some(re) => {
                let caps = re.captures(&s)?;
                caps.get(1)
                    .or_else(|| caps.get(0))
                    .map(|m| m.as_str().to_string())
            }
        }
    }
}

/// Text of a value for keys and baselines: strings as is, arrays joined by spaces, others as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(" "),
        Value::Ip(ip) => ip.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_json().to_string(),
    }
}

/// A composite key from several field specs. Absent fields are `null`.
pub(crate) fn key_of(specs: &[FieldSpec], ev: &Event) -> (String, Vec<serde_json::Value>) {
    let mut key = String::new();
    let mut parts = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        match s.text(ev) {
            Some(t) => {
                key.push_str(&t);
                parts.push(serde_json::Value::String(t));
            }
            None => {
                key.push('\u{0}');
                parts.push(serde_json::Value::Null);
            }
        }
    }
    (key, parts)
}

/// An event as alert evidence: its ECS JSON, with the source's original record under `event.original`.
pub fn evidence_json(ev: &Event) -> serde_json::Value {
    let mut doc = ev.to_json();
    if let (Some(raw), serde_json::Value::Object(map)) = (&ev.raw, &mut doc) {
        let event = map
            .entry("event")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(e) = event {
            e.entry("original")
                .or_insert_with(|| serde_json::Value::String(raw.to_string()));
        }
    }
    if let serde_json::Value::Object(map) = &mut doc {
        if !map.contains_key("@timestamp") {
            map.insert(
                "@timestamp".into(),
                serde_json::Value::String(crate::ecs::rfc3339(
                    ev.timestamp_ns,
                    crate::ecs::Fraction::Nanos,
                )),
            );
        }
    }
    doc
}

/// Builds a draft alert from evidence; the analytic layer fills in ids, severity and settings.
pub(crate) fn draft_alert(
    detector_id: &str,
    evidence: &[&Event],
    join_keys: Vec<serde_json::Value>,
    reason: String,
) -> Alert {
    let last = evidence.iter().max_by_key(|e| e.timestamp_ns);
    let first = evidence.iter().map(|e| e.timestamp_ns).min().unwrap_or(0);
    let text = |paths: &[&str]| -> Option<String> {
        let ev = last?;
        paths
            .iter()
            .find_map(|p| ev.get_path(p).and_then(Value::as_str).map(str::to_string))
    };
    Alert {
        rule_id: detector_id.to_string(),
        rule_name: detector_id.to_string(),
        severity: Severity::Medium,
        risk_score: 47,
        attack: crate::AttackRef::default(),
        timestamp_ns: last.map_or(0, |e| e.timestamp_ns),
        first_event_ns: first,
        join_keys,
        host: text(&["host.name", "host.id", "host.hostname"]),
        user: text(&["user.name", "user.id"]),
        process: text(&["process.executable", "process.name"]),
        settings: serde_json::Map::new(),
        reason,
        evidence: evidence.iter().map(|e| evidence_json(e)).collect(),
    }
}

/// Fills `{field.path}` placeholders in a reason template from an event (absent fields render as `?`).
pub fn render_template(template: &str, ev: &Event) -> String {
    render_template_with(template, ev, &[])
}

/// [`render_template`] with extra named values (`{key}`, `{value}`) that take precedence over fields.
pub fn render_template_with(template: &str, ev: &Event, extra: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let path = &after[..end];
                let v = match extra.iter().find(|(k, _)| *k == path) {
                    Some((_, v)) => (*v).to_string(),
                    None => ev
                        .get_path(path)
                        .map_or_else(|| "?".to_string(), value_text),
                };
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Glob match with `*` (any run) and `?` (one char), as EQL `like`; `ci` folds ASCII case.
///
/// An ASCII pattern (nearly all) is matched over the text's bytes without copying it: remote
/// agents send command lines of 100 kB and more, and every pattern of every pattern list is tried
/// on them (collecting the text into a `Vec<char>` for each was the pipeline's hot spot under a
/// flood of such process starts).
pub fn glob_match(pattern: &str, text: &str, ci: bool) -> bool {
    if pattern.is_ascii() {
        // By bytes, as EQL's wildcards: `?` and the retry after a `*` step over whole
        // characters, and an ASCII pattern byte never equals a byte of a multibyte character.
        let (p, t) = (pattern.as_bytes(), text.as_bytes());
        return if ci {
            glob_utf8(p, t, b'?', |a, b| a.eq_ignore_ascii_case(&b))
        } else {
            glob_utf8(p, t, b'?', |a, b| a == b)
        };
    }
    glob_match_chars(pattern, text, ci)
}

/// [`glob_match`] by characters (a pattern with non-ASCII characters).
fn glob_match_chars(pattern: &str, text: &str, ci: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ci {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses a duration such as `30s`, `5m`, `1h`, `7d`, `250ms`, `0s` into nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mul: i64 = match unit.trim() {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Formats nanoseconds as the largest exact unit (`90s`, `5m`, `250ms`), the form EQL `maxspan` takes.
pub fn format_duration(ns: i64) -> String {
    for (unit, mul) in [
        ("d", 86_400_000_000_000i64),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ] {
        if ns != 0 && ns % mul == 0 {
            return format!("{}{unit}", ns / mul);
        }
    }
    if ns == 0 {
        "0s".to_string()
    } else {
        format!("{}ms", ns / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ascii_patterns_match_by_bytes_as_by_characters() {
        let texts = [
            "",
            "a",
            "abc",
            "/tmp/x/y",
            "héllo wörld",
            "日本語.exe",
            "a日b",
            "ééé",
            "CMD.EXE",
            "x?y*z",
            "aaaaaaaaab",
        ];
        let patterns = [
            "", "*", "?", "??", "???", "a*", "*b", "a?c", "h?llo*", "*w?rld", "*.exe", "*.EXE",
            "?本*", "a?b", "*?*", "*a*a*b", "x\\?y*", "*??", "é*", "日*",
        ];
        for t in texts {
            for p in patterns {
                for ci in [false, true] {
                    assert_eq!(
                        glob_match(p, t, ci),
                        glob_match_chars(p, t, ci),
                        "{p:?} on {t:?} (ci {ci})"
                    );
                }
            }
        }
        let long = format!("/usr/bin/python3 -c {}", "x".repeat(200_000));
        assert!(glob_match("*python3*-c*", &long, false));
        assert!(!glob_match("*python3*-e*", &long, false));
    }

    #[test]
    fn globs() {
        assert!(glob_match("/tmp/*", "/tmp/x/y", false));
        assert!(!glob_match("/tmp/*", "/var/tmp/x", false));
        assert!(glob_match("*.EXE", "cmd.exe", true));
        assert!(!glob_match("*.EXE", "cmd.exe", false));
        assert!(glob_match("a?c*", "abcdef", false));
        assert!(glob_match("*", "", false));
        assert!(!glob_match("?", "", false));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("5m"), Some(300_000_000_000));
        assert_eq!(parse_duration_ns("0s"), Some(0));
        assert_eq!(parse_duration_ns("5 parsecs"), None);
        assert_eq!(parse_duration_ns("m"), None);
        assert_eq!(format_duration(300_000_000_000), "5m");
        assert_eq!(format_duration(1_500_000_000), "1500ms");
    }

    #[test]
    fn rfc3339_roundtrip() {
        for ns in [0i64, 1_704_164_645_500_000_000, 951_782_400_000_000_001] {
            assert_eq!(
                crate::event::parse_rfc3339_ns(&crate::ecs::rfc3339(
                    ns,
                    crate::ecs::Fraction::Nanos
                )),
                Some(ns)
            );
        }
    }

    #[test]
    fn field_specs() {
        let mut ev = Event::new(0);
        ev.insert(
            "process.args",
            Value::Array(
                vec![
                    Value::Str("osascript".into()),
                    Value::Str("-e".into()),
                    Value::Str("tell application \"Keychain Access\" to activate".into()),
                ]
                .into(),
            ),
        );
        let fs = FieldSpec::with_regex(
            "process.command_line|process.args",
            r#"(?i)tell\s+app(?:lication)?\s+"([^"]+)""#,
        )
        .unwrap();
        assert_eq!(fs.text(&ev).as_deref(), Some("Keychain Access"));
        assert_eq!(render_template("x={process.name}", &ev), "x=?");
        assert!(FieldSpec::parse("a||b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn star_matches_everything(s in ".*") {
            proptest::prop_assert!(glob_match("*", &s, false));
            proptest::prop_assert!(glob_match(&s.replace(['*', '?'], ""), &s.replace(['*', '?'], ""), false));
        }
    }
}
