//! Rule files: Elastic detection-rules TOML as published, and the product's own format.
//!
//! No file I/O here: callers pass the text and a name for it (`origin`, usually the path).
//!
//! Elastic format: one rule per file, `[metadata]` and `[rule]` with `query`, `language`, `name`,
//! `rule_id`, `risk_score`, `severity`, `[[rule.threat]]`.
//!
//! Own format: any number of `[[rule]]` tables with `id`, `name`, `query` and optionally `language`
//! (default `eql`), `description`, `severity`, `risk_score`, `techniques`, `tactics`, `dialect`
//! (`elastic`|`endgame`), `case_insensitive`, `enabled`.

use crate::alert::{AttackRef, Severity};
use crate::eql::{self, Dialect, EqlError, Options, Query};
use crate::runner::RuleMeta;

/// A rule as loaded from a file, not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    pub meta: RuleMeta,
    /// `eql`, or another language this engine does not run (`esql`, `kuery`, `lucene`, ...).
    pub language: String,
    /// Elastic rule type (`eql`, `query`, `threshold`, `machine_learning`, `esql`, ...).
    pub rule_type: String,
    pub query: String,
    pub options: Options,
    pub enabled: bool,
    /// Where it came from (file path and, for multi-rule files, index).
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}: not valid TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{origin}: rule `{name}` is not EQL (language `{language}`): not run by this engine")]
    NotEql {
        origin: String,
        name: String,
        language: String,
    },
    #[error("{origin}: rule `{name}`: {error}")]
    Eql {
        origin: String,
        name: String,
        error: EqlError,
    },
}

impl RuleError {
    /// True for rules in a language other than EQL (counted apart from failures).
    pub fn is_not_eql(&self) -> bool {
        matches!(self, RuleError::NotEql { .. })
    }
}

impl RuleDef {
    pub fn is_eql(&self) -> bool {
        self.language.eq_ignore_ascii_case("eql")
    }

    /// Compiles the query.
    pub fn compile(&self) -> Result<Query, RuleError> {
        if !self.is_eql() {
            return Err(RuleError::NotEql {
                origin: self.origin.clone(),
                name: self.meta.name.clone(),
                language: self.language.clone(),
            });
        }
        eql::compile(&self.query, &self.options).map_err(|error| RuleError::Eql {
            origin: self.origin.clone(),
            name: self.meta.name.clone(),
            error,
        })
    }
}

fn get_str(t: &toml::Table, k: &str) -> Option<String> {
    t.get(k).and_then(toml::Value::as_str).map(str::to_string)
}

fn invalid(origin: &str, message: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        origin: origin.to_string(),
        message: message.into(),
    }
}

/// Parses one rule file (Elastic detection-rules TOML or the product's `[[rule]]` format).
pub fn parse_rule_file(text: &str, origin: &str) -> Result<Vec<RuleDef>, RuleError> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| RuleError::Toml {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    match doc.get("rule") {
        Some(toml::Value::Table(rule)) => Ok(vec![elastic_rule(rule, origin)?]),
        Some(toml::Value::Array(rules)) => rules
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                toml::Value::Table(t) => own_rule(t, &format!("{origin}#{}", i + 1)),
                _ => Err(invalid(
                    origin,
                    format!("[[rule]] entry {} is not a table", i + 1),
                )),
            })
            .collect(),
        Some(_) => Err(invalid(
            origin,
            "`rule` must be a table ([rule]) or an array of tables ([[rule]])",
        )),
        None => Err(invalid(origin, "no `[rule]` or `[[rule]]` section")),
    }
}

fn severity(t: &toml::Table, origin: &str) -> Result<Severity, RuleError> {
    match get_str(t, "severity") {
        None => Ok(Severity::Medium),
        Some(s) => Severity::parse(&s).ok_or_else(|| {
            invalid(
                origin,
                format!("unknown severity `{s}` (low, medium, high, critical)"),
            )
        }),
    }
}

fn risk(t: &toml::Table, origin: &str) -> Result<u32, RuleError> {
    match t.get("risk_score") {
        None => Ok(0),
        Some(toml::Value::Integer(i)) if (0..=100).contains(i) => Ok(*i as u32),
        Some(other) => Err(invalid(
            origin,
            format!("risk_score must be an integer 0..=100, found {other}"),
        )),
    }
}

fn elastic_rule(rule: &toml::Table, origin: &str) -> Result<RuleDef, RuleError> {
    let name = get_str(rule, "name").ok_or_else(|| invalid(origin, "[rule] has no `name`"))?;
    let id = get_str(rule, "rule_id")
        .ok_or_else(|| invalid(origin, format!("rule `{name}` has no `rule_id`")))?;
    let rule_type = get_str(rule, "type").unwrap_or_default();
    let language = get_str(rule, "language").unwrap_or_else(|| match rule_type.as_str() {
        "machine_learning" => "ml".to_string(),
        "threshold" | "query" | "new_terms" => "kuery".to_string(),
        other => other.to_string(),
    });
    let query = get_str(rule, "query").unwrap_or_default();
    if language.eq_ignore_ascii_case("eql") && query.trim().is_empty() {
        return Err(invalid(origin, format!("EQL rule `{name}` has no `query`")));
    }
    let mut attack = AttackRef::default();
    if let Some(toml::Value::Array(threats)) = rule.get("threat") {
        for th in threats.iter().filter_map(toml::Value::as_table) {
            if let Some(tac) = th
                .get("tactic")
                .and_then(toml::Value::as_table)
                .and_then(|t| get_str(t, "id"))
            {
                if !attack.tactics.contains(&tac) {
                    attack.tactics.push(tac);
                }
            }
            for tech in th
                .get("technique")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(toml::Value::as_table)
            {
                if let Some(id) = get_str(tech, "id") {
                    attack.techniques.push(id);
                }
                for sub in tech
                    .get("subtechnique")
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(toml::Value::as_table)
                {
                    if let Some(id) = get_str(sub, "id") {
                        attack.techniques.push(id);
                    }
                }
            }
        }
    }
    Ok(RuleDef {
        meta: RuleMeta {
            id,
            name,
            description: get_str(rule, "description")
                .unwrap_or_default()
                .trim()
                .to_string(),
            severity: severity(rule, origin)?,
            risk_score: risk(rule, origin)?,
            attack,
        },
        language,
        rule_type,
        query,
        options: Options::elastic(),
        enabled: true,
        origin: origin.to_string(),
    })
}

fn str_list(t: &toml::Table, k: &str, origin: &str) -> Result<Vec<String>, RuleError> {
    match t.get(k) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(origin, format!("`{k}` must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(invalid(origin, format!("`{k}` must be a list of strings"))),
    }
}

fn own_rule(t: &toml::Table, origin: &str) -> Result<RuleDef, RuleError> {
    let name = get_str(t, "name").ok_or_else(|| invalid(origin, "rule has no `name`"))?;
    let id = get_str(t, "id")
        .or_else(|| get_str(t, "rule_id"))
        .ok_or_else(|| invalid(origin, format!("rule `{name}` has no `id`")))?;
    let query = get_str(t, "query")
        .ok_or_else(|| invalid(origin, format!("rule `{name}` has no `query`")))?;
    let dialect = match get_str(t, "dialect").as_deref() {
        None | Some("elastic") => Dialect::Elastic,
        Some("endgame") => Dialect::Endgame,
        Some(other) => {
            return Err(invalid(
                origin,
                format!("unknown dialect `{other}` (elastic or endgame)"),
            ))
        }
    };
    let case_insensitive = t
        .get("case_insensitive")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    let attack = AttackRef {
        techniques: str_list(t, "techniques", origin)?,
        tactics: str_list(t, "tactics", origin)?,
        analytic: get_str(t, "analytic"),
        strategy: get_str(t, "strategy"),
    };
    Ok(RuleDef {
        meta: RuleMeta {
            id,
            name,
            description: get_str(t, "description").unwrap_or_default(),
            severity: severity(t, origin)?,
            risk_score: risk(t, origin)?,
            attack,
        },
        language: get_str(t, "language").unwrap_or_else(|| "eql".to_string()),
        rule_type: "eql".to_string(),
        query,
        options: Options {
            dialect,
            case_insensitive,
        },
        enabled: t
            .get("enabled")
            .and_then(toml::Value::as_bool)
            .unwrap_or(true),
        origin: origin.to_string(),
    })
}
