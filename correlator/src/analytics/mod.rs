//! ATT&CK analytics: the product's own rule format, and the seed detections bundled with it.
//!
//! An analytic file (TOML, see `docs/analytics.md`) names its ATT&CK analytic (`ANxxxx`), detection
//! strategy (`DETxxxx`), techniques and tactics, platform and log sources, severity and risk score; its
//! logic is one or more `[[detect]]` blocks (an EQL rule, or a stateful detector from [`crate::detect`]
//! whose event filters are EQL), and its mutable elements are typed `[settings.<Name>]` with a default and
//! a description. EQL text refers to settings as `${Name}`.
//!
//! Architecture Invariant: this module parses text and builds detectors; it does no I/O. The bundled files
//! are compiled in with `include_str!`; the CLI reads override files and the config and passes their text.

mod ipc_wiring;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

pub use settings::{SettingType, SettingValue};

use crate::detect::baseline::{Baseline, BaselineConfig};
use crate::detect::flow::{FlowConfig, FlowMonitor};
use crate::detect::join::{Join, JoinConfig, Stage};
use crate::detect::threshold::Threshold;
use crate::detect::{parse_duration_ns, FieldSpec, Filter, StateError};
use crate::{Alert, AttackRef, Detector, Event, Severity};

/// The analytic files shipped in the binary.
pub const BUNDLED: &[(&str, &str)] = &[
    ("AN1358.toml", include_str!("../../analytics/AN1358.toml")),
    ("AN1357.toml", include_str!("../../analytics/AN1357.toml")),
    ("AN1359.toml", include_str!("../../analytics/AN1359.toml")),
    ("AN0948.toml", include_str!("../../analytics/AN0948.toml")),
    ("AN0082.toml", include_str!("../../analytics/AN0082.toml")),
    ("AN1726.toml", include_str!("../../analytics/AN1726.toml")),
    (
        "elastic-macos-installer-network.toml",
        include_str!("../../analytics/elastic-macos-installer-network.toml"),
    ),
];

/// Everything that can be wrong with an analytic file, an override or a build.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticError {
    #[error("analytic file {file}: {error}")]
    Parse { file: String, error: String },
    #[error("analytic {analytic}: {error}")]
    Invalid { analytic: String, error: String },
    #[error("analytic {analytic}: setting `{setting}`: {error}")]
    Setting {
        analytic: String,
        setting: String,
        error: String,
    },
    #[error(
        "analytic {analytic}: setting `{setting}` is not one of its settings (known: {known})"
    )]
    UnknownSetting {
        analytic: String,
        setting: String,
        known: String,
    },
    #[error("[analytics.{0}] in the config names no loaded analytic (loaded: {1})")]
    UnknownAnalytic(String, String),
    #[error("[analytics.{analytic}]: {error}")]
    Config { analytic: String, error: String },
    #[error("analytic {analytic} detector `{detector}`: {error}")]
    Detector {
        analytic: String,
        detector: String,
        error: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// ATT&CK and catalogue metadata of an analytic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The ATT&CK analytic id (`AN1358`), or the rule's own id when it is not an ATT&CK analytic.
    pub id: String,
    pub name: String,
    /// Detection strategy id (`DET0493`).
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub techniques: Vec<String>,
    /// Tactic ids (`TA0002`).
    #[serde(default)]
    pub tactics: Vec<String>,
    /// `linux`, `windows`, `macos`, `ios`.
    pub platform: String,
    /// `enterprise-attack` or `mobile-attack`.
    #[serde(default = "enterprise")]
    pub domain: String,
    pub severity: String,
    pub risk_score: u32,
    pub description: String,
    /// Design choices where the analytic's text leaves one, and the false-positive notes.
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub log_sources: Vec<LogSource>,
    /// Where the logic comes from when it is not our own (e.g. an Elastic rule id).
    #[serde(default)]
    pub origin: Option<String>,
    /// Fill `process.parent.executable`/`name` from a table of process starts when a source gives only
    /// the parent pid (eslogger), before the detectors see the event.
    #[serde(default)]
    pub lineage: bool,
}

fn enterprise() -> String {
    "enterprise-attack".to_string()
}

/// One log source of the analytic (ATT&CK's `x_mitre_log_source_references`) and which of the product's
/// source formats deliver it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// ATT&CK log source name, e.g. `auditd:SYSCALL`.
    pub name: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// ATT&CK data component id, e.g. `DC0032`.
    #[serde(default)]
    pub data_component: Option<String>,
    /// Product source formats that carry it: `kernel`, `auditd`, `eslogger`, `unifiedlog`, `osquery`,
    /// `zeek`, `suricata`, `mdm`, `mobile-edr`, `ecs`.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// A declared setting (mutable element).
#[derive(Clone, Debug)]
pub struct SettingSpec {
    pub name: String,
    pub ty: SettingType,
    pub default: SettingValue,
    pub description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingDef {
    #[serde(rename = "type")]
    ty: SettingType,
    default: toml::Value,
    description: String,
}

/// An integer/duration parameter: a literal or `${Setting}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Param {
    Int(i64),
    Text(String),
}

/// A value spec: `"a|b"` or `{ field = "a|b", regex = "..." }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum ValueDef {
    Path(String),
    Regex { field: String, regex: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageDef {
    name: String,
    filter: String,
    key: Vec<ValueDef>,
    #[serde(default)]
    count: Option<Param>,
    /// `true`, `false`, or `"${BoolSetting}"`.
    #[serde(default)]
    required: Option<BoolParam>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum BoolParam {
    Bool(bool),
    Text(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum DetectDef {
    Eql {
        id: String,
        query: String,
    },
    Threshold {
        id: String,
        filter: String,
        key: Vec<ValueDef>,
        count: Param,
        window: Param,
        reason: String,
    },
    Baseline {
        id: String,
        filter: String,
        key: Vec<ValueDef>,
        value: Vec<ValueDef>,
        baseline: String,
        #[serde(default)]
        only_values: Option<String>,
        #[serde(default)]
        case_insensitive: bool,
        reason: String,
    },
    Flow {
        id: String,
        filter: String,
        closing: String,
        flow_key: Vec<ValueDef>,
        bytes_out: String,
        #[serde(default)]
        duration: Option<String>,
        process_events: String,
        process_key: Vec<ValueDef>,
        candidate: String,
        max_duration: Param,
        max_bytes_out: Param,
        #[serde(default)]
        idle_timeout: Option<Param>,
        reason: String,
    },
    Join {
        id: String,
        window: Param,
        #[serde(default)]
        ordered: bool,
        stages: Vec<StageDef>,
        reason: String,
    },
    IpcWiring(ipc_wiring::IpcWiringDef),
}

impl DetectDef {
    fn id(&self) -> &str {
        match self {
            DetectDef::Eql { id, .. }
            | DetectDef::Threshold { id, .. }
            | DetectDef::Baseline { id, .. }
            | DetectDef::Flow { id, .. }
            | DetectDef::Join { id, .. } => id,
            DetectDef::IpcWiring(d) => &d.id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            DetectDef::Eql { .. } => "eql",
            DetectDef::Threshold { .. } => "threshold",
            DetectDef::Baseline { .. } => "baseline",
            DetectDef::Flow { .. } => "flow",
            DetectDef::Join { .. } => "join",
            DetectDef::IpcWiring(_) => "ipc_wiring",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateDef {
    when: String,
    severity: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticFile {
    analytic: Meta,
    #[serde(default)]
    settings: BTreeMap<String, SettingDef>,
    #[serde(default)]
    detect: Vec<DetectDef>,
    #[serde(default)]
    escalate: Vec<EscalateDef>,
}

/// A parsed analytic file.
#[derive(Clone, Debug)]
pub struct Analytic {
    pub meta: Meta,
    pub settings: Vec<SettingSpec>,
    detect: Vec<DetectDef>,
    escalate: Vec<EscalateDef>,
}

/// Compiles EQL for the analytics: event filters and full rules (sequences). The EQL engine implements it;
/// tests may supply their own.
pub trait EqlCompiler {
    /// An event query (`category where condition`) as a predicate.
    fn filter(&self, query: &str) -> Result<Filter, String>;
    /// A full EQL rule (event query or sequence) as a streaming detector with the given id.
    fn rule(&self, id: &str, query: &str) -> Result<Box<dyn Detector>, String>;
}

/// The EQL engine ([`crate::eql`], Elasticsearch dialect) as the analytics' compiler.
pub struct Eql;

impl EqlCompiler for Eql {
    fn filter(&self, query: &str) -> Result<Filter, String> {
        let q = crate::eql::compile(query, &crate::eql::Options::elastic())
            .map_err(|e| e.to_string())?;
        if q.is_sequence() || q.has_pipes() {
            return Err(
                "an event filter must be a single event query (no sequence, no pipes)".into(),
            );
        }
        Ok(Arc::new(move |ev: &Event| q.matches(ev)))
    }

    fn rule(&self, id: &str, query: &str) -> Result<Box<dyn Detector>, String> {
        let q = crate::eql::compile(query, &crate::eql::Options::elastic())
            .map_err(|e| e.to_string())?;
        let meta = crate::runner::RuleMeta {
            id: id.to_string(),
            name: id.to_string(),
            ..Default::default()
        };
        Ok(Box::new(crate::runner::RuleRunner::new(
            meta,
            q,
            crate::runner::RunnerConfig::default(),
        )))
    }
}

impl Analytic {
    /// Parses one analytic file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Analytic, AnalyticError> {
        let f: AnalyticFile = toml::from_str(text).map_err(|e| AnalyticError::Parse {
            file: file.to_string(),
            error: e.to_string(),
        })?;
        let id = f.analytic.id.clone();
        if Severity::parse(&f.analytic.severity).is_none() {
            return Err(AnalyticError::Invalid {
                analytic: id,
                error: format!("unknown severity `{}`", f.analytic.severity),
            });
        }
        if f.analytic.risk_score > 100 {
            return Err(AnalyticError::Invalid {
                analytic: id,
                error: "risk_score must be 0..=100".into(),
            });
        }
        if f.detect.is_empty() {
            return Err(AnalyticError::Invalid {
                analytic: id,
                error: "no [[detect]] block".into(),
            });
        }
        let mut settings = Vec::new();
        for (name, def) in f.settings {
            let default = SettingValue::from_toml(def.ty, &def.default, None).map_err(|e| {
                AnalyticError::Setting {
                    analytic: id.clone(),
                    setting: name.clone(),
                    error: format!("bad default: {e}"),
                }
            })?;
            settings.push(SettingSpec {
                name,
                ty: def.ty,
                default,
                description: def.description,
            });
        }
        let mut ids = std::collections::BTreeSet::new();
        for d in &f.detect {
            if !ids.insert(d.id().to_string()) {
                return Err(AnalyticError::Invalid {
                    analytic: id,
                    error: format!("two [[detect]] blocks with id `{}`", d.id()),
                });
            }
        }
        let a = Analytic {
            meta: f.analytic,
            settings,
            detect: f.detect,
            escalate: f.escalate,
        };
        // Every `${Name}` must name a declared setting, whatever the values.
        let defaults = a.default_values();
        for d in &a.detect {
            for text in d.texts() {
                substitute(&text, &defaults).map_err(|e| AnalyticError::Detector {
                    analytic: a.meta.id.clone(),
                    detector: d.id().to_string(),
                    error: e,
                })?;
            }
        }
        for e in &a.escalate {
            substitute(&e.when, &defaults)
                .and_then(|_| substitute(&e.severity, &defaults))
                .map_err(|err| AnalyticError::Invalid {
                    analytic: a.meta.id.clone(),
                    error: format!("[[escalate]]: {err}"),
                })?;
        }
        Ok(a)
    }

    pub fn default_values(&self) -> BTreeMap<String, SettingValue> {
        self.settings
            .iter()
            .map(|s| (s.name.clone(), s.default.clone()))
            .collect()
    }

    /// The detector blocks: (id, kind).
    pub fn detectors_summary(&self) -> Vec<(String, &'static str)> {
        self.detect
            .iter()
            .map(|d| (d.id().to_string(), d.kind()))
            .collect()
    }

    /// The EQL queries of the `eql` blocks (after substitution with `values`).
    pub fn eql_queries(&self, values: &BTreeMap<String, SettingValue>) -> Vec<String> {
        self.detect
            .iter()
            .filter_map(|d| match d {
                DetectDef::Eql { query, .. } => substitute(query, values).ok(),
                _ => None,
            })
            .collect()
    }

    pub fn attack(&self) -> AttackRef {
        AttackRef {
            techniques: self.meta.techniques.clone(),
            tactics: self.meta.tactics.clone(),
            analytic: self.meta.id.starts_with("AN").then(|| self.meta.id.clone()),
            strategy: self.meta.strategy.clone(),
        }
    }

    /// Builds the analytic's detectors with the given setting values.
    pub fn build(
        &self,
        values: &BTreeMap<String, SettingValue>,
        eql: &dyn EqlCompiler,
    ) -> Result<Vec<Box<dyn Detector>>, AnalyticError> {
        let aid = &self.meta.id;
        let mut escalations = Vec::new();
        for e in &self.escalate {
            let inv = |error: String| AnalyticError::Invalid {
                analytic: aid.clone(),
                error: format!("[[escalate]]: {error}"),
            };
            let when = eql
                .filter(&substitute(&e.when, values).map_err(inv)?)
                .map_err(inv)?;
            let sev_text = substitute(&e.severity, values).map_err(inv)?;
            let sev = Severity::parse(sev_text.trim_matches('"'))
                .ok_or_else(|| inv(format!("unknown severity {sev_text}")))?;
            escalations.push((when, sev));
        }
        let meta = Arc::new(AlertMeta {
            rule_id: aid.clone(),
            name: self.meta.name.clone(),
            severity: Severity::parse(&self.meta.severity).unwrap_or_default(),
            risk_score: self.meta.risk_score,
            attack: self.attack(),
            settings: values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
            escalations,
        });
        let mut out: Vec<Box<dyn Detector>> = Vec::new();
        for d in &self.detect {
            let did = format!("{aid}/{}", d.id());
            let err = |error: String| AnalyticError::Detector {
                analytic: aid.clone(),
                detector: d.id().to_string(),
                error,
            };
            let b = Builder {
                values,
                eql,
                err: &err,
            };
            let inner: Box<dyn Detector> = match d {
                DetectDef::Eql { query, .. } => eql.rule(&did, &b.text(query)?).map_err(err)?,
                DetectDef::Threshold {
                    filter,
                    key,
                    count,
                    window,
                    reason,
                    ..
                } => Box::new(Threshold::new(
                    did.clone(),
                    b.filter(filter)?,
                    b.specs(key)?,
                    usize::try_from(b.int(count, false)?).unwrap_or(1),
                    b.int(window, true)?,
                    reason.clone(),
                )),
                DetectDef::Baseline {
                    filter,
                    key,
                    value,
                    baseline,
                    only_values,
                    case_insensitive,
                    reason,
                    ..
                } => {
                    let Some(SettingValue::Baseline { learning_ns, allow }) = values.get(baseline)
                    else {
                        return Err(err(format!(
                            "`baseline = \"{baseline}\"` must name a setting of type baseline"
                        )));
                    };
                    let only = match only_values {
                        None => None,
                        Some(name) => match values.get(name) {
                            Some(SettingValue::List(l) | SettingValue::PatternList(l)) => Some(l.clone()),
                            _ => return Err(err(format!("`only_values = \"{name}\"` must name a list or pattern_list setting"))),
                        },
                    };
                    Box::new(Baseline::new(BaselineConfig {
                        id: did.clone(),
                        filter: b.filter(filter)?,
                        key: b.specs(key)?,
                        value: b.specs(value)?,
                        learning_ns: *learning_ns,
                        seed: allow.clone(),
                        only_values: only,
                        case_insensitive: *case_insensitive,
                        reason: reason.clone(),
                    }))
                }
                DetectDef::Flow {
                    filter,
                    closing,
                    flow_key,
                    bytes_out,
                    duration,
                    process_events,
                    process_key,
                    candidate,
                    max_duration,
                    max_bytes_out,
                    idle_timeout,
                    reason,
                    ..
                } => Box::new(FlowMonitor::new(FlowConfig {
                    id: did.clone(),
                    filter: b.filter(filter)?,
                    flow_key: b.specs(flow_key)?,
                    closing: b.filter(closing)?,
                    bytes_out: FieldSpec::parse(bytes_out).map_err(|e| err(e.to_string()))?,
                    duration: duration
                        .as_deref()
                        .map(FieldSpec::parse)
                        .transpose()
                        .map_err(|e| err(e.to_string()))?,
                    process_events: b.filter(process_events)?,
                    process_key: b.specs(process_key)?,
                    candidate: b.filter(candidate)?,
                    max_duration_ns: b.int(max_duration, true)?,
                    max_bytes_out: b.int(max_bytes_out, false)?,
                    idle_timeout_ns: match idle_timeout {
                        Some(p) => b.int(p, true)?,
                        None => 86_400_000_000_000,
                    },
                    reason: reason.clone(),
                })),
                DetectDef::Join {
                    window,
                    ordered,
                    stages,
                    reason,
                    ..
                } => {
                    let mut st = Vec::new();
                    for s in stages {
                        st.push(Stage {
                            name: s.name.clone(),
                            filter: b.filter(&s.filter)?,
                            key: b.specs(&s.key)?,
                            count: match &s.count {
                                Some(p) => usize::try_from(b.int(p, false)?).unwrap_or(1),
                                None => 1,
                            },
                            required: match &s.required {
                                None => true,
                                Some(BoolParam::Bool(b)) => *b,
                                Some(BoolParam::Text(t)) => {
                                    match substitute(t, values).map_err(err)?.as_str() {
                                        "true" => true,
                                        "false" => false,
                                        other => {
                                            return Err(err(format!(
                                                "`required = \"{t}\"` gave `{other}`, not a bool"
                                            )))
                                        }
                                    }
                                }
                            },
                        });
                    }
                    if st.iter().all(|s| !s.required) {
                        return Err(err("a join needs at least one required stage".into()));
                    }
                    Box::new(Join::new(JoinConfig {
                        id: did.clone(),
                        window_ns: b.int(window, true)?,
                        ordered: *ordered,
                        stages: st,
                        reason: reason.clone(),
                    }))
                }
                DetectDef::IpcWiring(w) => w.build(&did, &b)?,
            };
            let lineage = self
                .meta
                .lineage
                .then(crate::detect::lineage::Lineage::default);
            out.push(Box::new(AnalyticDetector {
                id: did,
                inner,
                meta: meta.clone(),
                scratch: Vec::new(),
                lineage,
            }));
        }
        Ok(out)
    }
}

impl DetectDef {
    /// Every text that may hold `${Name}` references.
    fn texts(&self) -> Vec<String> {
        let params = |ps: &[&Param]| -> Vec<String> {
            ps.iter()
                .filter_map(|p| match p {
                    Param::Text(t) => Some(t.clone()),
                    Param::Int(_) => None,
                })
                .collect()
        };
        match self {
            DetectDef::Eql { query, .. } => vec![query.clone()],
            DetectDef::Threshold {
                filter,
                count,
                window,
                ..
            } => {
                let mut v = vec![filter.clone()];
                v.extend(params(&[count, window]));
                v
            }
            DetectDef::Baseline { filter, .. } => vec![filter.clone()],
            DetectDef::Flow {
                filter,
                closing,
                process_events,
                candidate,
                max_duration,
                max_bytes_out,
                ..
            } => {
                let mut v = vec![
                    filter.clone(),
                    closing.clone(),
                    process_events.clone(),
                    candidate.clone(),
                ];
                v.extend(params(&[max_duration, max_bytes_out]));
                v
            }
            DetectDef::IpcWiring(w) => w.texts(),
            DetectDef::Join { window, stages, .. } => {
                let mut v = params(&[window]);
                for s in stages {
                    v.push(s.filter.clone());
                    if let Some(BoolParam::Text(t)) = &s.required {
                        v.push(t.clone());
                    }
                    if let Some(c) = &s.count {
                        v.extend(params(&[c]));
                    }
                }
                v
            }
        }
    }
}

struct Builder<'a> {
    values: &'a BTreeMap<String, SettingValue>,
    eql: &'a dyn EqlCompiler,
    err: &'a dyn Fn(String) -> AnalyticError,
}

impl Builder<'_> {
    fn text(&self, t: &str) -> Result<String, AnalyticError> {
        substitute(t, self.values).map_err(self.err)
    }

    fn filter(&self, t: &str) -> Result<Filter, AnalyticError> {
        let q = self.text(t)?;
        self.eql
            .filter(&q)
            .map_err(|e| (self.err)(format!("{e}\n  in query: {q}")))
    }

    fn specs(&self, defs: &[ValueDef]) -> Result<Vec<FieldSpec>, AnalyticError> {
        defs.iter()
            .map(|d| match d {
                ValueDef::Path(p) => FieldSpec::parse(p),
                ValueDef::Regex { field, regex } => FieldSpec::with_regex(field, regex),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| (self.err)(e.to_string()))
    }

    /// An integer parameter; `duration` parses `"5m"` style text into nanoseconds.
    fn int(&self, p: &Param, duration: bool) -> Result<i64, AnalyticError> {
        match p {
            Param::Int(i) if !duration => Ok(*i),
            Param::Int(i) => Err((self.err)(format!(
                "duration {i} needs a unit, e.g. \"{i}s\""
            ))),
            Param::Text(t) => {
                let name = t.strip_prefix("${").and_then(|r| r.strip_suffix('}'));
                match (name.map(|n| self.values.get(n)), duration) {
                    (Some(Some(SettingValue::Duration(ns))), true) => Ok(*ns),
                    (Some(Some(SettingValue::Threshold(n))), false) => Ok(*n),
                    (Some(Some(other)), _) => Err((self.err)(format!(
                        "`{t}` is a {} setting, a {} is needed here",
                        other.setting_type().as_str(),
                        if duration { "duration" } else { "threshold" }
                    ))),
                    (Some(None), _) => Err((self.err)(format!("`{t}` names no setting"))),
                    (None, true) => parse_duration_ns(t)
                        .ok_or_else(|| (self.err)(format!("`{t}` is not a duration"))),
                    (None, false) => t
                        .parse()
                        .map_err(|_| (self.err)(format!("`{t}` is not an integer"))),
                }
            }
        }
    }
}

/// Replaces `${Name}` with the setting's EQL literal.
pub fn substitute(text: &str, values: &BTreeMap<String, SettingValue>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in {text:?}"))?;
        let name = &after[..end];
        let v = values.get(name).ok_or_else(|| {
            format!(
                "`${{{name}}}` names no setting (settings: {})",
                values.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let lit = v
            .eql_literal()
            .ok_or_else(|| format!("`${{{name}}}` is a baseline and cannot appear in EQL text"))?;
        out.push_str(&lit);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What the analytic stamps on every alert of its detectors.
struct AlertMeta {
    rule_id: String,
    name: String,
    severity: Severity,
    risk_score: u32,
    attack: AttackRef,
    settings: serde_json::Map<String, serde_json::Value>,
    escalations: Vec<(Filter, Severity)>,
}

/// Wraps a detector of an analytic: alerts get the analytic's ids, severity, and the settings in force.
struct AnalyticDetector {
    id: String,
    inner: Box<dyn Detector>,
    meta: Arc<AlertMeta>,
    scratch: Vec<Alert>,
    lineage: Option<crate::detect::lineage::Lineage>,
}

impl AnalyticDetector {
    fn finish(&mut self, out: &mut Vec<Alert>) {
        let own_severity = self.inner.sets_severity();
        for mut a in self.scratch.drain(..) {
            let sub = self.id.rsplit('/').next().unwrap_or_default().to_string();
            a.rule_id = self.meta.rule_id.clone();
            a.rule_name = self.meta.name.clone();
            if !own_severity {
                a.severity = self.meta.severity;
                a.risk_score = self.meta.risk_score;
            }
            a.attack = self.meta.attack.clone();
            a.settings = self.meta.settings.clone();
            a.reason = if a.reason.is_empty() {
                format!("[{sub}]")
            } else {
                format!("[{sub}] {}", a.reason)
            };
            for (when, sev) in &self.meta.escalations {
                let hit = a
                    .evidence
                    .iter()
                    .any(|doc| Event::from_json(doc).is_ok_and(|e| when(&e)));
                if hit {
                    a.severity = *sev;
                    a.reason
                        .push_str(&format!(" (severity {} by escalation)", sev.as_str()));
                    break;
                }
            }
            out.push(a);
        }
    }
}

impl Detector for AnalyticDetector {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        match self.lineage.as_mut().and_then(|l| l.observe(event)) {
            Some(filled) => self.inner.on_event(&filled, &mut self.scratch),
            None => self.inner.on_event(event, &mut self.scratch),
        }
        if !self.scratch.is_empty() {
            self.finish(out);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        self.inner.on_watermark(now_ns, &mut self.scratch);
        if !self.scratch.is_empty() {
            self.finish(out);
        }
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        self.inner.save_state()
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        self.inner.restore_state(state)
    }
}

/// Per-analytic overrides from the daemon config's `[analytics]` table.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub analytics: BTreeMap<String, AnalyticOverride>,
}

#[derive(Clone, Debug, Default)]
pub struct AnalyticOverride {
    pub enabled: Option<bool>,
    pub settings: BTreeMap<String, toml::Value>,
    /// Only named by a `disabled` list, which may also name EQL rules: no error when no analytic has the id.
    pub lenient: bool,
}

impl Overrides {
    /// Reads the `[analytics]` table of the daemon config:
    /// `[analytics.AN1358] enabled = false` and `[analytics.AN1358.settings] Name = value`.
    pub fn from_toml(table: &toml::Table) -> Result<Overrides, AnalyticError> {
        let mut out = Overrides::default();
        for (id, v) in table {
            let cfg = |error: String| AnalyticError::Config {
                analytic: id.clone(),
                error,
            };
            let toml::Value::Table(t) = v else {
                return Err(cfg("must be a table".into()));
            };
            let mut o = AnalyticOverride::default();
            for (k, x) in t {
                match (k.as_str(), x) {
                    ("enabled", toml::Value::Boolean(b)) => o.enabled = Some(*b),
                    ("enabled", _) => return Err(cfg("`enabled` must be true or false".into())),
                    ("settings", toml::Value::Table(s)) => {
                        o.settings = s.clone().into_iter().collect()
                    }
                    ("settings", _) => return Err(cfg("`settings` must be a table".into())),
                    (other, _) => {
                        return Err(cfg(format!(
                            "unknown key `{other}` (expected `enabled` or `settings`)"
                        )))
                    }
                }
            }
            out.analytics.insert(id.clone(), o);
        }
        Ok(out)
    }

    /// The daemon's `[rules]` form: `[rules.settings.<ID>]` holds the setting values directly (or the
    /// `enabled`/`settings` form of [`Overrides::from_toml`]), and `disabled` lists analytic ids to turn off.
    pub fn from_rules_section(
        settings: &toml::Table,
        disabled: &[String],
    ) -> Result<Overrides, AnalyticError> {
        let mut out = Overrides::default();
        for (id, v) in settings {
            let toml::Value::Table(t) = v else {
                return Err(AnalyticError::Config {
                    analytic: id.clone(),
                    error: "must be a table of settings".into(),
                });
            };
            let o = if t.contains_key("settings") || t.contains_key("enabled") {
                let mut one = toml::Table::new();
                one.insert(id.clone(), v.clone());
                Overrides::from_toml(&one)?
                    .analytics
                    .remove(id)
                    .unwrap_or_default()
            } else {
                AnalyticOverride {
                    enabled: None,
                    settings: t.clone().into_iter().collect(),
                    lenient: false,
                }
            };
            out.analytics.insert(id.clone(), o);
        }
        for id in disabled {
            let o = out
                .analytics
                .entry(id.clone())
                .or_insert_with(|| AnalyticOverride {
                    lenient: true,
                    ..Default::default()
                });
            o.enabled = Some(false);
        }
        Ok(out)
    }

    /// Parses a whole daemon config text: its `[analytics.<ID>]` tables and its `[rules]` section
    /// (`settings`, `disabled`); either may be absent.
    pub fn from_config_text(text: &str) -> Result<Overrides, AnalyticError> {
        let t: toml::Table = toml::from_str(text).map_err(|e| AnalyticError::Parse {
            file: "config".into(),
            error: e.to_string(),
        })?;
        let cfg = |error: &str| AnalyticError::Config {
            analytic: "*".into(),
            error: error.into(),
        };
        let mut out = match t.get("analytics") {
            None => Overrides::default(),
            Some(toml::Value::Table(a)) => Overrides::from_toml(a)?,
            Some(_) => return Err(cfg("`analytics` must be a table")),
        };
        if let Some(toml::Value::Table(rules)) = t.get("rules") {
            let settings = match rules.get("settings") {
                None => toml::Table::new(),
                Some(toml::Value::Table(s)) => s.clone(),
                Some(_) => return Err(cfg("`rules.settings` must be a table")),
            };
            let disabled: Vec<String> = match rules.get("disabled") {
                None => Vec::new(),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                Some(_) => return Err(cfg("`rules.disabled` must be an array of ids")),
            };
            for (id, o) in Overrides::from_rules_section(&settings, &disabled)?.analytics {
                let fresh = !out.analytics.contains_key(&id);
                let slot = out.analytics.entry(id).or_default();
                slot.lenient = if fresh {
                    o.lenient
                } else {
                    slot.lenient && o.lenient
                };
                slot.enabled = o.enabled.or(slot.enabled);
                slot.settings.extend(o.settings);
            }
        }
        Ok(out)
    }
}

/// A loaded set of analytics with their effective settings.
pub struct AnalyticSet {
    pub entries: Vec<Entry>,
}

pub struct Entry {
    pub analytic: Analytic,
    pub enabled: bool,
    pub values: BTreeMap<String, SettingValue>,
    /// Names of the settings whose value came from the config.
    pub overridden: Vec<String>,
}

impl AnalyticSet {
    /// The bundled analytics, with `extra` files (name, text) replacing bundled ones of the same id or
    /// adding new ones, then `overrides` applied.
    pub fn load(
        extra: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<AnalyticSet, AnalyticError> {
        let mut list: Vec<Analytic> = Vec::new();
        for (file, text) in BUNDLED {
            list.push(Analytic::parse(file, text)?);
        }
        for (file, text) in extra {
            let a = Analytic::parse(file, text)?;
            match list.iter_mut().find(|x| x.meta.id == a.meta.id) {
                Some(slot) => *slot = a,
                None => list.push(a),
            }
        }
        AnalyticSet::new(list, overrides)
    }

    pub fn new(list: Vec<Analytic>, overrides: &Overrides) -> Result<AnalyticSet, AnalyticError> {
        for (id, o) in &overrides.analytics {
            if !o.lenient && !list.iter().any(|a| &a.meta.id == id) {
                return Err(AnalyticError::UnknownAnalytic(
                    id.clone(),
                    list.iter()
                        .map(|a| a.meta.id.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        }
        let mut entries = Vec::new();
        for analytic in list {
            let mut values = analytic.default_values();
            let mut overridden = Vec::new();
            let mut enabled = true;
            if let Some(o) = overrides.analytics.get(&analytic.meta.id) {
                enabled = o.enabled.unwrap_or(true);
                for (name, v) in &o.settings {
                    let Some(spec) = analytic.settings.iter().find(|s| &s.name == name) else {
                        return Err(AnalyticError::UnknownSetting {
                            analytic: analytic.meta.id.clone(),
                            setting: name.clone(),
                            known: analytic
                                .settings
                                .iter()
                                .map(|s| s.name.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    };
                    let val =
                        SettingValue::from_toml(spec.ty, v, Some(&spec.default)).map_err(|e| {
                            AnalyticError::Setting {
                                analytic: analytic.meta.id.clone(),
                                setting: name.clone(),
                                error: format!("{e} (declared type {})", spec.ty.as_str()),
                            }
                        })?;
                    values.insert(name.clone(), val);
                    overridden.push(name.clone());
                }
            }
            entries.push(Entry {
                analytic,
                enabled,
                values,
                overridden,
            });
        }
        Ok(AnalyticSet { entries })
    }

    /// Detectors of every enabled analytic.
    pub fn detectors(
        &self,
        eql: &dyn EqlCompiler,
    ) -> Result<Vec<Box<dyn Detector>>, AnalyticError> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.enabled) {
            out.extend(e.analytic.build(&e.values, eql)?);
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.analytic.meta.id == id)
    }
}

/// Collects every detector's persistent state, keyed by detector id (for the daemon to store).
pub fn save_states<'a>(
    detectors: impl IntoIterator<Item = &'a (dyn Detector + 'static)>,
) -> serde_json::Map<String, serde_json::Value> {
    detectors
        .into_iter()
        .filter_map(|d| d.save_state().map(|s| (d.id().to_string(), s)))
        .collect()
}

/// Hands saved states back to the detectors with the same ids; states of detectors no longer loaded are
/// ignored (and returned by name so the caller can log them).
pub fn restore_states<'a>(
    detectors: impl IntoIterator<Item = &'a mut (dyn Detector + 'static)>,
    states: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, StateError> {
    let mut used = std::collections::HashSet::new();
    for d in detectors {
        if let Some((id, st)) = states.get_key_value(d.id()) {
            d.restore_state(st)?;
            used.insert(id.as_str());
        }
    }
    Ok(states
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests;
