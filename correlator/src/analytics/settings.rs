//! Typed settings: the analytic's mutable elements (allowlists, patterns, windows, thresholds, baselines).
//!
//! A rule file declares each setting's type, default and description; the daemon config overrides values
//! under `[analytics.<ID>.settings]` without touching the rule. Values are checked against the declared
//! type, and an unknown name or a wrong type is an error naming the analytic, the setting and what was
//! expected. EQL text refers to settings as `${Name}` and gets them spliced in as EQL literals.

use serde::Deserialize;

use crate::detect::baseline::SeedEntry;
use crate::detect::{format_duration, parse_duration_ns};
use crate::Severity;

/// The declared type of a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingType {
    /// Exact strings (EQL `in~` list).
    List,
    /// Glob patterns with `*` and `?` (EQL `like~` list).
    PatternList,
    /// A duration such as `30s`, `5m`, `24h`.
    Duration,
    /// A non-negative integer (counts, bytes).
    Threshold,
    /// `true` / `false`.
    Bool,
    /// A severity: low, medium, high, critical.
    Level,
    /// A learned baseline: `{ learning_period = "24h", allow = [{ key = "*", value = "/run/*" }] }`.
    Baseline,
}

impl SettingType {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingType::List => "list",
            SettingType::PatternList => "pattern_list",
            SettingType::Duration => "duration",
            SettingType::Threshold => "threshold",
            SettingType::Bool => "bool",
            SettingType::Level => "level",
            SettingType::Baseline => "baseline",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            SettingType::List | SettingType::PatternList => "an array of strings",
            SettingType::Duration => "a duration string such as \"30s\", \"5m\", \"24h\"",
            SettingType::Threshold => "a non-negative integer",
            SettingType::Bool => "true or false",
            SettingType::Level => "one of \"low\", \"medium\", \"high\", \"critical\"",
            SettingType::Baseline => {
                "a table { learning_period = \"<duration>\", allow = [{ key = \"<glob>\", value = \"<glob>\" }] }"
            }
        }
    }
}

/// A setting's resolved value.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    List(Vec<String>),
    PatternList(Vec<String>),
    Duration(i64),
    Threshold(i64),
    Bool(bool),
    Level(Severity),
    Baseline {
        learning_ns: i64,
        allow: Vec<SeedEntry>,
    },
}

/// A setting value that does not fit its declared type.
#[derive(Debug, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct TypeError {
    pub expected: &'static str,
    pub found: String,
}

fn kind(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the float {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the datetime {d}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

impl SettingValue {
    /// Checks `v` against `ty`. For baselines, `base` supplies fields the override leaves out.
    pub fn from_toml(
        ty: SettingType,
        v: &toml::Value,
        base: Option<&SettingValue>,
    ) -> Result<SettingValue, TypeError> {
        let err = || TypeError {
            expected: ty.expected(),
            found: kind(v),
        };
        let strings = |v: &toml::Value| -> Result<Vec<String>, TypeError> {
            let toml::Value::Array(a) = v else {
                return Err(err());
            };
            a.iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(TypeError {
                        expected: ty.expected(),
                        found: format!("an array holding {}", kind(other)),
                    }),
                })
                .collect()
        };
        Ok(match ty {
            SettingType::List => SettingValue::List(strings(v)?),
            SettingType::PatternList => SettingValue::PatternList(strings(v)?),
            SettingType::Duration => match v {
                toml::Value::String(s) => {
                    SettingValue::Duration(parse_duration_ns(s).ok_or_else(err)?)
                }
                _ => return Err(err()),
            },
            SettingType::Threshold => match v {
                toml::Value::Integer(i) if *i >= 0 => SettingValue::Threshold(*i),
                _ => return Err(err()),
            },
            SettingType::Bool => match v {
                toml::Value::Boolean(b) => SettingValue::Bool(*b),
                _ => return Err(err()),
            },
            SettingType::Level => match v {
                toml::Value::String(s) => SettingValue::Level(Severity::parse(s).ok_or_else(err)?),
                _ => return Err(err()),
            },
            SettingType::Baseline => {
                let toml::Value::Table(t) = v else {
                    return Err(err());
                };
                let (mut learning_ns, mut allow) = match base {
                    Some(SettingValue::Baseline { learning_ns, allow }) => {
                        (*learning_ns, allow.clone())
                    }
                    _ => (0, Vec::new()),
                };
                for (k, x) in t {
                    match k.as_str() {
                        "learning_period" => {
                            let toml::Value::String(s) = x else {
                                return Err(err());
                            };
                            learning_ns = parse_duration_ns(s).ok_or_else(err)?;
                        }
                        "allow" => {
                            allow =
                                x.clone()
                                    .try_into()
                                    .map_err(|e: toml::de::Error| TypeError {
                                        expected: ty.expected(),
                                        found: format!(
                                            "an `allow` that does not fit: {}",
                                            e.message()
                                        ),
                                    })?;
                        }
                        other => {
                            return Err(TypeError {
                                expected: ty.expected(),
                                found: format!("a table with unknown key `{other}`"),
                            })
                        }
                    }
                }
                SettingValue::Baseline { learning_ns, allow }
            }
        })
    }

    pub fn setting_type(&self) -> SettingType {
        match self {
            SettingValue::List(_) => SettingType::List,
            SettingValue::PatternList(_) => SettingType::PatternList,
            SettingValue::Duration(_) => SettingType::Duration,
            SettingValue::Threshold(_) => SettingType::Threshold,
            SettingValue::Bool(_) => SettingType::Bool,
            SettingValue::Level(_) => SettingType::Level,
            SettingValue::Baseline { .. } => SettingType::Baseline,
        }
    }

    /// The value as JSON (what alerts carry and `sensor analytics list --json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            SettingValue::List(l) | SettingValue::PatternList(l) => json!(l),
            SettingValue::Duration(ns) => json!(format_duration(*ns)),
            SettingValue::Threshold(n) => json!(n),
            SettingValue::Bool(b) => json!(b),
            SettingValue::Level(s) => json!(s.as_str()),
            SettingValue::Baseline { learning_ns, allow } => json!({
                "learning_period": format_duration(*learning_ns),
                "allow": allow.iter().map(|e| json!({"key": e.key, "value": e.value})).collect::<Vec<_>>(),
            }),
        }
    }

    /// A one-line human rendering for listings.
    pub fn display(&self) -> String {
        match self {
            SettingValue::Baseline { learning_ns, allow } => format!(
                "learning {} then alert on new; {} allowed: {}",
                format_duration(*learning_ns),
                allow.len(),
                allow
                    .iter()
                    .map(|e| format!("{}=>{}", e.key, e.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_json().to_string(),
        }
    }

    /// The value as an EQL literal, for `${Name}` in queries. Lists become `("a", "b")`; an empty list
    /// becomes a list holding one value no field carries, so `x in ${Empty}` is false, not a syntax error.
    pub fn eql_literal(&self) -> Option<String> {
        Some(match self {
            SettingValue::List(l) | SettingValue::PatternList(l) => {
                if l.is_empty() {
                    "(\"<empty list>\")".to_string()
                } else {
                    format!(
                        "({})",
                        l.iter()
                            .map(|s| eql_string(s))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
            SettingValue::Duration(ns) => format_duration(*ns),
            SettingValue::Threshold(n) => n.to_string(),
            SettingValue::Bool(b) => b.to_string(),
            SettingValue::Level(s) => eql_string(s.as_str()),
            SettingValue::Baseline { .. } => return None,
        })
    }
}

/// Quotes a string as an EQL double-quoted literal.
pub fn eql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(s: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone()
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            SettingValue::from_toml(SettingType::Duration, &t("\"5m\""), None).unwrap(),
            SettingValue::Duration(300_000_000_000)
        );
        let e = SettingValue::from_toml(SettingType::Duration, &t("5"), None).unwrap_err();
        assert!(
            e.to_string().contains("duration") && e.to_string().contains("integer 5"),
            "{e}"
        );
        assert!(SettingValue::from_toml(SettingType::List, &t("[\"a\", 1]"), None).is_err());
        assert!(SettingValue::from_toml(SettingType::Threshold, &t("-1"), None).is_err());
        assert!(SettingValue::from_toml(SettingType::Level, &t("\"severe\""), None).is_err());
        let base = SettingValue::Baseline {
            learning_ns: 5,
            allow: vec![],
        };
        let b = SettingValue::from_toml(
            SettingType::Baseline,
            &t("{ allow = [{ value = \"/run/*\" }] }"),
            Some(&base),
        )
        .unwrap();
        assert_eq!(
            b,
            SettingValue::Baseline {
                learning_ns: 5,
                allow: vec![SeedEntry {
                    key: "*".into(),
                    value: "/run/*".into()
                }]
            }
        );
        assert!(
            SettingValue::from_toml(SettingType::Baseline, &t("{ learn = \"1h\" }"), None).is_err()
        );
    }

    #[test]
    fn eql_literals() {
        assert_eq!(
            SettingValue::List(vec!["a\"b".into(), "\\\\.\\pipe".into()])
                .eql_literal()
                .unwrap(),
            r#"("a\"b", "\\\\.\\pipe")"#
        );
        assert_eq!(
            SettingValue::List(vec![]).eql_literal().unwrap(),
            "(\"<empty list>\")"
        );
        assert_eq!(
            SettingValue::Duration(30_000_000_000)
                .eql_literal()
                .unwrap(),
            "30s"
        );
        assert_eq!(SettingValue::Bool(false).eql_literal().unwrap(), "false");
    }
}
