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

mod build;
mod ipc_wiring;
pub mod needs;
mod overrides;
pub mod scope;
mod set;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

pub use build::substitute;
pub use overrides::{AnalyticOverride, Overrides};
pub use set::{restore_states, save_states, AnalyticSet, Entry};
pub use settings::{SettingType, SettingValue};

use crate::detect::{Filter, StateError};
use crate::{AttackRef, Detector, Event, Severity};

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

/// One `[[detect]]` block: its kind names the detector it builds.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum DetectDef {
    Eql(EqlDef),
    Threshold(ThresholdDef),
    Baseline(BaselineDef),
    Flow(FlowDef),
    Join(JoinDef),
    IpcWiring(ipc_wiring::IpcWiringDef),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EqlDef {
    id: String,
    query: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdDef {
    id: String,
    filter: String,
    key: Vec<ValueDef>,
    count: Param,
    window: Param,
    reason: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineDef {
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowDef {
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinDef {
    id: String,
    window: Param,
    #[serde(default)]
    ordered: bool,
    stages: Vec<StageDef>,
    reason: String,
}

impl DetectDef {
    fn id(&self) -> &str {
        match self {
            DetectDef::Eql(EqlDef { id, .. })
            | DetectDef::Threshold(ThresholdDef { id, .. })
            | DetectDef::Baseline(BaselineDef { id, .. })
            | DetectDef::Flow(FlowDef { id, .. })
            | DetectDef::Join(JoinDef { id, .. }) => id,
            DetectDef::IpcWiring(w) => &w.id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            DetectDef::Eql(_) => "eql",
            DetectDef::Threshold(_) => "threshold",
            DetectDef::Baseline(_) => "baseline",
            DetectDef::Flow(_) => "flow",
            DetectDef::Join(_) => "join",
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
    #[serde(default)]
    needs: Vec<needs::Need>,
}

/// A parsed analytic file.
#[derive(Clone, Debug)]
pub struct Analytic {
    pub meta: Meta,
    pub settings: Vec<SettingSpec>,
    detect: Vec<DetectDef>,
    escalate: Vec<EscalateDef>,
    /// What each branch needs to see (`[[needs]]`).
    pub needs: Vec<needs::Need>,
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
        for n in &f.needs {
            if !ids.contains(n.detect.as_str()) {
                return Err(AnalyticError::Invalid {
                    analytic: id,
                    error: format!("[[needs]] names no [[detect]] block `{}`", n.detect),
                });
            }
        }
        let a = Analytic {
            meta: f.analytic,
            settings,
            detect: f.detect,
            escalate: f.escalate,
            needs: f.needs,
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
                DetectDef::Eql(e) => substitute(&e.query, values).ok(),
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
            DetectDef::Eql(e) => vec![e.query.clone()],
            DetectDef::Threshold(t) => {
                let mut v = vec![t.filter.clone()];
                v.extend(params(&[&t.count, &t.window]));
                v
            }
            DetectDef::Baseline(b) => vec![b.filter.clone()],
            DetectDef::Flow(f) => {
                let mut v = vec![
                    f.filter.clone(),
                    f.closing.clone(),
                    f.process_events.clone(),
                    f.candidate.clone(),
                ];
                v.extend(params(&[&f.max_duration, &f.max_bytes_out]));
                v
            }
            DetectDef::IpcWiring(w) => w.texts(),
            DetectDef::Join(j) => {
                let mut v = params(&[&j.window]);
                for s in &j.stages {
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

#[cfg(test)]
mod tests;
