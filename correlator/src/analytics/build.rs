//! Building an analytic's detectors from its definition and the setting values in force: one
//! builder per detector kind, `${Name}` substitution into EQL text, and the wrapper that stamps the
//! analytic's ids, severity and settings on every alert.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    Analytic, AnalyticError, BaselineDef, BoolParam, DetectDef, EqlCompiler, FlowDef, JoinDef,
    Param, SettingValue, ThresholdDef, ValueDef,
};
use crate::detect::baseline::{Baseline, BaselineConfig};
use crate::detect::flow::{FlowConfig, FlowMonitor};
use crate::detect::join::{Join, JoinConfig, Stage};
use crate::detect::threshold::Threshold;
use crate::detect::{parse_duration_ns, FieldSpec, Filter, StateError};
use crate::{Alert, AttackRef, Detector, Event, Severity};

impl Analytic {
    /// Builds the analytic's detectors with the given setting values.
    pub fn build(
        &self,
        values: &BTreeMap<String, SettingValue>,
        eql: &dyn EqlCompiler,
    ) -> Result<Vec<Box<dyn Detector>>, AnalyticError> {
        let aid = &self.meta.id;
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
            escalations: self.escalations(values, eql)?,
        });
        let mut out: Vec<Box<dyn Detector>> = Vec::new();
        // One process table for all the analytic's detectors: one per detector held the same
        // entries several times over (seven tables of up to 32 MiB for one analytic under a flood).
        let lineage = self
            .meta
            .lineage
            .then(|| Arc::new(Mutex::new(crate::detect::lineage::Lineage::default())));
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
                DetectDef::Eql(e) => eql.rule(&did, &b.text(&e.query)?).map_err(err)?,
                DetectDef::Threshold(t) => b.threshold(&did, t)?,
                DetectDef::Baseline(x) => b.baseline(&did, x)?,
                DetectDef::Flow(f) => b.flow(&did, f)?,
                DetectDef::Join(j) => b.join(&did, j)?,
                DetectDef::IpcWiring(w) => w.build(&did, &b)?,
            };
            out.push(Box::new(AnalyticDetector {
                id: did,
                inner,
                meta: meta.clone(),
                scratch: Vec::new(),
                // The first detector reports what the shared table shed (once, not per detector).
                reports_lineage: out.is_empty(),
                lineage: lineage.clone(),
            }));
        }
        Ok(out)
    }

    /// The `[[escalate]]` blocks: a filter and the severity an alert takes when an event matches it.
    fn escalations(
        &self,
        values: &BTreeMap<String, SettingValue>,
        eql: &dyn EqlCompiler,
    ) -> Result<Vec<(Filter, Severity)>, AnalyticError> {
        let mut escalations = Vec::new();
        for e in &self.escalate {
            let inv = |error: String| AnalyticError::Invalid {
                analytic: self.meta.id.clone(),
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
        Ok(escalations)
    }
}

/// Builds one detector of an analytic: setting values substituted, EQL compiled, errors naming the
/// analytic and the detector.
pub(super) struct Builder<'a> {
    pub(super) values: &'a BTreeMap<String, SettingValue>,
    eql: &'a dyn EqlCompiler,
    pub(super) err: &'a dyn Fn(String) -> AnalyticError,
}

impl Builder<'_> {
    fn threshold(&self, did: &str, t: &ThresholdDef) -> Result<Box<dyn Detector>, AnalyticError> {
        Ok(Box::new(Threshold::new(
            did.to_string(),
            self.filter(&t.filter)?,
            self.specs(&t.key)?,
            usize::try_from(self.int(&t.count, false)?).unwrap_or(1),
            self.int(&t.window, true)?,
            t.reason.clone(),
        )))
    }

    fn baseline(&self, did: &str, d: &BaselineDef) -> Result<Box<dyn Detector>, AnalyticError> {
        let err = self.err;
        let Some(SettingValue::Baseline { learning_ns, allow }) = self.values.get(&d.baseline)
        else {
            return Err(err(format!(
                "`baseline = \"{}\"` must name a setting of type baseline",
                d.baseline
            )));
        };
        let only = match &d.only_values {
            None => None,
            Some(name) => match self.values.get(name) {
                Some(SettingValue::List(l) | SettingValue::PatternList(l)) => Some(l.clone()),
                _ => {
                    return Err(err(format!(
                        "`only_values = \"{name}\"` must name a list or pattern_list setting"
                    )))
                }
            },
        };
        Ok(Box::new(Baseline::new(BaselineConfig {
            id: did.to_string(),
            filter: self.filter(&d.filter)?,
            key: self.specs(&d.key)?,
            value: self.specs(&d.value)?,
            learning_ns: *learning_ns,
            seed: allow.clone(),
            only_values: only,
            case_insensitive: d.case_insensitive,
            reason: d.reason.clone(),
        })))
    }

    fn flow(&self, did: &str, f: &FlowDef) -> Result<Box<dyn Detector>, AnalyticError> {
        let err = self.err;
        Ok(Box::new(FlowMonitor::new(FlowConfig {
            id: did.to_string(),
            filter: self.filter(&f.filter)?,
            flow_key: self.specs(&f.flow_key)?,
            closing: self.filter(&f.closing)?,
            bytes_out: FieldSpec::parse(&f.bytes_out).map_err(|e| err(e.to_string()))?,
            duration: f
                .duration
                .as_deref()
                .map(FieldSpec::parse)
                .transpose()
                .map_err(|e| err(e.to_string()))?,
            process_events: self.filter(&f.process_events)?,
            process_key: self.specs(&f.process_key)?,
            candidate: self.filter(&f.candidate)?,
            max_duration_ns: self.int(&f.max_duration, true)?,
            max_bytes_out: self.int(&f.max_bytes_out, false)?,
            idle_timeout_ns: match &f.idle_timeout {
                Some(p) => self.int(p, true)?,
                None => 86_400_000_000_000,
            },
            reason: f.reason.clone(),
        })))
    }

    fn join(&self, did: &str, j: &JoinDef) -> Result<Box<dyn Detector>, AnalyticError> {
        let err = self.err;
        let mut stages = Vec::new();
        for s in &j.stages {
            stages.push(Stage {
                name: s.name.clone(),
                filter: self.filter(&s.filter)?,
                key: self.specs(&s.key)?,
                count: match &s.count {
                    Some(p) => usize::try_from(self.int(p, false)?).unwrap_or(1),
                    None => 1,
                },
                required: match &s.required {
                    None => true,
                    Some(BoolParam::Bool(b)) => *b,
                    Some(BoolParam::Text(t)) => match self.text(t)?.as_str() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(err(format!(
                                "`required = \"{t}\"` gave `{other}`, not a bool"
                            )))
                        }
                    },
                },
            });
        }
        if stages.iter().all(|s| !s.required) {
            return Err(err("a join needs at least one required stage".into()));
        }
        Ok(Box::new(Join::new(JoinConfig {
            id: did.to_string(),
            window_ns: self.int(&j.window, true)?,
            ordered: j.ordered,
            stages,
            reason: j.reason.clone(),
        })))
    }

    fn text(&self, t: &str) -> Result<String, AnalyticError> {
        substitute(t, self.values).map_err(self.err)
    }

    pub(super) fn filter(&self, t: &str) -> Result<Filter, AnalyticError> {
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
    pub(super) fn int(&self, p: &Param, duration: bool) -> Result<i64, AnalyticError> {
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
    /// The analytic's process table, shared by its detectors: each observes every event (recording
    /// the same entry again is idempotent) and gets the event with its parent filled.
    lineage: Option<Arc<Mutex<crate::detect::lineage::Lineage>>>,
    /// Whether [`Detector::shed`] includes the shared table's.
    reports_lineage: bool,
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
        let filled = self.lineage.as_ref().and_then(|l| {
            l.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(event)
        });
        match filled {
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

    fn shed(&self) -> u64 {
        self.inner.shed()
            + self
                .lineage
                .as_ref()
                .filter(|_| self.reports_lineage)
                .map_or(0, |l| {
                    l.lock().unwrap_or_else(PoisonError::into_inner).shed()
                })
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        self.inner.save_state()
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        self.inner.restore_state(state)
    }

    fn export_state(&self) -> Option<serde_json::Value> {
        self.inner.export_state()
    }

    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        self.inner.import_state(state)
    }
}
