//! MITRE ATT&CK: load STIX bundles, check the analytics' ids, compute coverage, write Navigator layers.
//!
//! Input is JSON text (the CLI reads the file): a STIX 2.0 or 2.1 bundle (`{"type": "bundle", "objects":
//! [...]}`), a JSON array of objects, or one object (ATT&CK's per-object files). Links, as ATT&CK models
//! them: analytic -> detection strategy by inverting the strategy's `x_mitre_analytic_refs`; strategy ->
//! technique through `detects` relationships; analytic -> data component through
//! `x_mitre_log_source_references[].x_mitre_data_component_ref`. Revoked and deprecated objects are skipped.
//!
//! Architecture Invariant: no I/O here; everything is a pure function of the given text and analytics.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as J};

use crate::analytics::Analytic;

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error("ATT&CK data is not valid JSON: {0}")]
    Json(String),
    #[error("ATT&CK data: expected a STIX bundle, an array of STIX objects or one STIX object, found {0}")]
    Shape(&'static str),
    #[error("ATT&CK data: object #{index} has no `type` or `id`")]
    Object { index: usize },
    #[error("ATT&CK data holds no ATT&CK objects (no attack-pattern, analytic, detection strategy or data component)")]
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Technique {
    pub id: String,
    pub name: String,
    /// Kill chain phase names (tactic short names, e.g. `execution`).
    pub tactics: Vec<String>,
    pub domain: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strategy {
    pub id: String,
    pub name: String,
    pub analytics: Vec<String>,
    pub techniques: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSourceRef {
    pub data_component: Option<String>,
    pub data_component_name: Option<String>,
    pub name: String,
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyticInfo {
    pub id: String,
    pub description: String,
    pub platforms: Vec<String>,
    pub strategy: Option<String>,
    pub log_sources: Vec<LogSourceRef>,
    pub mutable_elements: Vec<String>,
    pub domain: String,
}

/// The ATT&CK objects of one or more bundles, indexed by ATT&CK id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub domains: BTreeSet<String>,
    pub techniques: BTreeMap<String, Technique>,
    pub strategies: BTreeMap<String, Strategy>,
    pub analytics: BTreeMap<String, AnalyticInfo>,
    /// Data component id -> name.
    pub data_components: BTreeMap<String, String>,
}

fn attack_id(o: &J) -> Option<String> {
    o.get("external_references")?
        .as_array()?
        .iter()
        .find_map(|r| {
            let src = r.get("source_name")?.as_str()?;
            if src.starts_with("mitre-") {
                r.get("external_id")?.as_str().map(str::to_string)
            } else {
                None
            }
        })
}

fn strs(o: &J, key: &str) -> Vec<String> {
    o.get(key)
        .and_then(J::as_array)
        .map(|a| a.iter().filter_map(J::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn text(o: &J, key: &str) -> String {
    o.get(key)
        .and_then(J::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Catalog {
    /// Parses STIX JSON text and adds its objects to the catalog.
    pub fn add_json(&mut self, text_in: &str) -> Result<(), AttackError> {
        let doc: J = serde_json::from_str(text_in).map_err(|e| AttackError::Json(e.to_string()))?;
        let objects: Vec<J> = match doc {
            J::Object(ref m) if m.get("type").and_then(J::as_str) == Some("bundle") => m
                .get("objects")
                .and_then(J::as_array)
                .cloned()
                .unwrap_or_default(),
            J::Object(_) => vec![doc],
            J::Array(a) => a,
            J::Null => return Err(AttackError::Shape("null")),
            J::Bool(_) => return Err(AttackError::Shape("a boolean")),
            J::Number(_) => return Err(AttackError::Shape("a number")),
            J::String(_) => return Err(AttackError::Shape("a string")),
        };
        let mut by_stix: BTreeMap<String, (String, String)> = BTreeMap::new(); // stix id -> (type, attack id)
        let live = |o: &J| {
            !o.get("revoked").and_then(J::as_bool).unwrap_or(false)
                && !o
                    .get("x_mitre_deprecated")
                    .and_then(J::as_bool)
                    .unwrap_or(false)
        };
        let mut found = false;
        for (index, o) in objects.iter().enumerate() {
            let (Some(ty), Some(sid)) = (
                o.get("type").and_then(J::as_str),
                o.get("id").and_then(J::as_str),
            ) else {
                return Err(AttackError::Object { index });
            };
            if !live(o) {
                continue;
            }
            let Some(aid) = attack_id(o) else { continue };
            let domain = strs(o, "x_mitre_domains")
                .into_iter()
                .next()
                .unwrap_or_default();
            if !domain.is_empty() {
                self.domains.insert(domain.clone());
            }
            match ty {
                "attack-pattern" => {
                    let tactics = o
                        .get("kill_chain_phases")
                        .and_then(J::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|p| p.get("phase_name")?.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.techniques.insert(
                        aid.clone(),
                        Technique {
                            id: aid.clone(),
                            name: text(o, "name"),
                            tactics,
                            domain,
                        },
                    );
                }
                "x-mitre-data-component" => {
                    self.data_components.insert(aid.clone(), text(o, "name"));
                }
                "x-mitre-detection-strategy" | "x-mitre-analytic" => {}
                _ => continue,
            }
            found = true;
            by_stix.insert(sid.to_string(), (ty.to_string(), aid));
        }
        // Second pass: analytics, strategies and relationships, which refer to the objects above.
        for o in &objects {
            if !live(o) {
                continue;
            }
            let ty = o.get("type").and_then(J::as_str).unwrap_or_default();
            let domain = strs(o, "x_mitre_domains")
                .into_iter()
                .next()
                .unwrap_or_default();
            match ty {
                "x-mitre-analytic" => {
                    let Some(aid) = attack_id(o) else { continue };
                    let log_sources = o
                        .get("x_mitre_log_source_references")
                        .and_then(J::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|r| {
                                    let dc = r
                                        .get("x_mitre_data_component_ref")
                                        .and_then(J::as_str)
                                        .and_then(|s| by_stix.get(s))
                                        .map(|(_, id)| id.clone());
                                    LogSourceRef {
                                        data_component_name: dc
                                            .as_ref()
                                            .and_then(|d| self.data_components.get(d).cloned()),
                                        data_component: dc,
                                        name: text(r, "name"),
                                        channel: text(r, "channel"),
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let mutable_elements = o
                        .get("x_mitre_mutable_elements")
                        .and_then(J::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| m.get("field")?.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let strategy = self.analytics.get(&aid).and_then(|a| a.strategy.clone());
                    self.analytics.insert(
                        aid.clone(),
                        AnalyticInfo {
                            id: aid,
                            description: text(o, "description"),
                            platforms: strs(o, "x_mitre_platforms"),
                            strategy,
                            log_sources,
                            mutable_elements,
                            domain,
                        },
                    );
                }
                "x-mitre-detection-strategy" => {
                    let Some(did) = attack_id(o) else { continue };
                    let analytics: Vec<String> = strs(o, "x_mitre_analytic_refs")
                        .iter()
                        .filter_map(|r| by_stix.get(r).map(|(_, id)| id.clone()))
                        .collect();
                    let entry = self
                        .strategies
                        .entry(did.clone())
                        .or_insert_with(|| Strategy {
                            id: did.clone(),
                            name: String::new(),
                            analytics: Vec::new(),
                            techniques: Vec::new(),
                        });
                    entry.name = text(o, "name");
                    entry.analytics = analytics;
                }
                _ => {}
            }
        }
        for o in &objects {
            if o.get("type").and_then(J::as_str) != Some("relationship")
                || o.get("relationship_type").and_then(J::as_str) != Some("detects")
                || !live(o)
            {
                continue;
            }
            let (Some(src), Some(dst)) = (
                o.get("source_ref")
                    .and_then(J::as_str)
                    .and_then(|s| by_stix.get(s)),
                o.get("target_ref")
                    .and_then(J::as_str)
                    .and_then(|s| by_stix.get(s)),
            ) else {
                continue;
            };
            if src.0 == "x-mitre-detection-strategy" && dst.0 == "attack-pattern" {
                if let Some(s) = self.strategies.get_mut(&src.1) {
                    if !s.techniques.contains(&dst.1) {
                        s.techniques.push(dst.1.clone());
                    }
                }
            }
        }
        // Invert strategy -> analytics.
        for s in self.strategies.values() {
            for a in &s.analytics {
                if let Some(info) = self.analytics.get_mut(a) {
                    info.strategy = Some(s.id.clone());
                }
            }
        }
        if !found {
            return Err(AttackError::Empty);
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<Catalog, AttackError> {
        let mut c = Catalog::default();
        c.add_json(text)?;
        Ok(c)
    }
}

/// What each of the product's source formats can deliver, as ATT&CK data component names.
pub const SOURCE_DATA_COMPONENTS: &[(&str, &[&str])] = &[
    (
        "kernel",
        &[
            "Process Creation",
            "Process Termination",
            "Command Execution",
            "File Creation",
            "File Access",
            "Network Connection Creation",
            "Network Traffic Flow",
            "Process Access",
        ],
    ),
    (
        "auditd",
        &[
            "Process Creation",
            "Command Execution",
            "File Access",
            "File Creation",
            "File Modification",
            "File Deletion",
            "File Metadata",
            "Network Connection Creation",
            "User Account Authentication",
            "Logon Session Creation",
            "Kernel Module Load",
            "User Account Creation",
        ],
    ),
    (
        "eslogger",
        &[
            "Process Creation",
            "Process Termination",
            "Command Execution",
            "File Creation",
            "File Modification",
            "File Deletion",
            "Logon Session Creation",
            "User Account Authentication",
            "Kernel Module Load",
            "Process Metadata",
        ],
    ),
    (
        "unifiedlog",
        &[
            "Application Log Content",
            "Process Access",
            "OS API Execution",
            "Named Pipe Metadata",
            "Network Traffic Content",
        ],
    ),
    (
        "osquery",
        &[
            "Process Creation",
            "Script Execution",
            "Command Execution",
            "File Metadata",
            "Process Metadata",
        ],
    ),
    (
        "zeek",
        &[
            "Network Traffic Flow",
            "Network Traffic Content",
            "Network Connection Creation",
        ],
    ),
    (
        "suricata",
        &[
            "Network Traffic Flow",
            "Network Traffic Content",
            "Network Connection Creation",
        ],
    ),
    (
        "mdm",
        &[
            "Application Assets",
            "Protected Configuration",
            "System Settings",
            "Host Status",
        ],
    ),
    (
        "mobile-edr",
        &[
            "Network Communication",
            "Network Traffic Content",
            "Network Connection Creation",
            "API Calls",
            "Process Metadata",
            "Host Status",
        ],
    ),
    (
        "ecs",
        &[
            "Process Creation",
            "Process Termination",
            "Command Execution",
            "File Creation",
            "File Access",
            "Network Connection Creation",
            "Network Traffic Flow",
            "Named Pipe Metadata",
            "Script Execution",
            "Process Access",
        ],
    ),
];

/// Every known source name.
pub fn known_sources() -> Vec<&'static str> {
    SOURCE_DATA_COMPONENTS.iter().map(|(s, _)| *s).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DataComponentCoverage {
    pub id: Option<String>,
    pub name: Option<String>,
    pub log_source: String,
    pub channel: String,
    /// Configured sources that deliver this data component.
    pub provided_by: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AnalyticCoverage {
    pub rule_id: String,
    pub rule_name: String,
    /// The ATT&CK analytic id, when the rule is one.
    pub analytic: Option<String>,
    /// Whether the analytic id exists in the loaded ATT&CK data.
    pub in_attack_data: bool,
    pub strategy: Option<String>,
    pub techniques: Vec<String>,
    pub data_components: Vec<DataComponentCoverage>,
    /// Disagreements between the rule's ids and the ATT&CK data.
    pub problems: Vec<String>,
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StrategyCoverage {
    pub id: String,
    pub name: String,
    pub analytics: Vec<String>,
    pub covered: Vec<String>,
    pub techniques: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TechniqueCoverage {
    pub id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub domain: String,
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    pub analytics: Vec<AnalyticCoverage>,
    pub strategies: Vec<StrategyCoverage>,
    pub techniques: Vec<TechniqueCoverage>,
    pub sources: Vec<String>,
    /// Data component names the configured sources provide.
    pub provided_data_components: Vec<String>,
}

/// Computes what `rules` (with their enabled flag) cover in `catalog`, given the configured sources.
/// The sources that deliver a data component *to this rule*: when the rule's own log sources name that data
/// component, only the source formats they list (AN1359 reads Process Access from the unified log alone, so
/// `ecs` does not provide it to that rule even though ECS events carry other Process Access records).
fn restrict_to_declared(
    m: &crate::analytics::Meta,
    dc: Option<&str>,
    providers: Vec<String>,
) -> Vec<String> {
    let declared: Vec<&String> = m
        .log_sources
        .iter()
        .filter(|l| dc.is_some() && l.data_component.as_deref() == dc)
        .flat_map(|l| l.sources.iter())
        .collect();
    if declared.is_empty() {
        return providers;
    }
    providers
        .into_iter()
        .filter(|s| declared.contains(&s))
        .collect()
}

pub fn coverage(catalog: &Catalog, rules: &[(&Analytic, bool)], sources: &[String]) -> Coverage {
    let provided: BTreeSet<&str> = SOURCE_DATA_COMPONENTS
        .iter()
        .filter(|(s, _)| sources.iter().any(|x| x == s))
        .flat_map(|(_, dcs)| dcs.iter().copied())
        .collect();
    let providers = |dc_name: &str| -> Vec<String> {
        SOURCE_DATA_COMPONENTS
            .iter()
            .filter(|(s, dcs)| sources.iter().any(|x| x == s) && dcs.contains(&dc_name))
            .map(|(s, _)| (*s).to_string())
            .collect()
    };
    let mut out = Coverage {
        sources: sources.to_vec(),
        provided_data_components: provided.iter().map(|s| (*s).to_string()).collect(),
        ..Coverage::default()
    };
    let mut tech_rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut tech_domain: BTreeMap<String, String> = BTreeMap::new();
    let mut covered_analytics: BTreeSet<String> = BTreeSet::new();
    for (a, enabled) in rules {
        let m = &a.meta;
        let analytic = m.id.starts_with("AN").then(|| m.id.clone());
        let info = analytic.as_ref().and_then(|id| catalog.analytics.get(id));
        let mut problems = Vec::new();
        let strategy = info
            .and_then(|i| i.strategy.clone())
            .or_else(|| m.strategy.clone());
        if let (Some(i), Some(declared)) = (info, &m.strategy) {
            if i.strategy.as_ref() != Some(declared) {
                problems.push(format!(
                    "rule names strategy {declared}, ATT&CK data has {:?}",
                    i.strategy
                ));
            }
        }
        let mut techniques: Vec<String> = m.techniques.clone();
        if let Some(s) = strategy.as_ref().and_then(|s| catalog.strategies.get(s)) {
            for t in &s.techniques {
                if !techniques.contains(t) {
                    problems.push(format!(
                        "strategy {} detects {t}, which the rule does not name",
                        s.id
                    ));
                    techniques.push(t.clone());
                }
            }
        }
        for t in &m.techniques {
            if !catalog.techniques.contains_key(t) && catalog.domains.contains(&m.domain) {
                problems.push(format!("technique {t} is not in the ATT&CK data"));
            }
        }
        if analytic.is_some() && info.is_none() && catalog.domains.contains(&m.domain) {
            problems.push(format!("analytic {} is not in the ATT&CK data", m.id));
        }
        let data_components = match info {
            Some(i) => i
                .log_sources
                .iter()
                .map(|l| DataComponentCoverage {
                    id: l.data_component.clone(),
                    name: l.data_component_name.clone(),
                    log_source: l.name.clone(),
                    channel: l.channel.clone(),
                    provided_by: restrict_to_declared(
                        m,
                        l.data_component.as_deref(),
                        l.data_component_name
                            .as_deref()
                            .map(providers)
                            .unwrap_or_default(),
                    ),
                })
                .collect(),
            None => m
                .log_sources
                .iter()
                .map(|l| {
                    let name = l
                        .data_component
                        .as_ref()
                        .and_then(|d| catalog.data_components.get(d).cloned());
                    DataComponentCoverage {
                        provided_by: name.as_deref().map(providers).unwrap_or_else(|| {
                            l.sources
                                .iter()
                                .filter(|s| sources.contains(s))
                                .cloned()
                                .collect()
                        }),
                        id: l.data_component.clone(),
                        name,
                        log_source: l.name.clone(),
                        channel: l.channel.clone().unwrap_or_default(),
                    }
                })
                .collect(),
        };
        if *enabled {
            for t in &techniques {
                tech_rules
                    .entry(t.clone())
                    .or_default()
                    .insert(m.id.clone());
                tech_domain
                    .entry(t.clone())
                    .or_insert_with(|| m.domain.clone());
            }
            if let Some(id) = &analytic {
                covered_analytics.insert(id.clone());
            }
        }
        out.analytics.push(AnalyticCoverage {
            rule_id: m.id.clone(),
            rule_name: m.name.clone(),
            in_attack_data: info.is_some(),
            analytic,
            strategy,
            techniques,
            data_components,
            problems,
            enabled: *enabled,
        });
    }
    let strategies: BTreeSet<String> = out
        .analytics
        .iter()
        .filter(|a| a.enabled)
        .filter_map(|a| a.strategy.clone())
        .collect();
    for sid in strategies {
        let (name, analytics, techniques) = match catalog.strategies.get(&sid) {
            Some(s) => (s.name.clone(), s.analytics.clone(), s.techniques.clone()),
            None => (String::new(), Vec::new(), Vec::new()),
        };
        let covered = out
            .analytics
            .iter()
            .filter(|a| a.enabled && a.strategy.as_deref() == Some(sid.as_str()))
            .filter_map(|a| a.analytic.clone())
            .collect();
        out.strategies.push(StrategyCoverage {
            id: sid,
            name,
            analytics,
            covered,
            techniques,
        });
    }
    for (t, rules) in tech_rules {
        let (name, tactics, domain) = match catalog.techniques.get(&t) {
            Some(x) => (x.name.clone(), x.tactics.clone(), x.domain.clone()),
            None => (
                String::new(),
                Vec::new(),
                tech_domain.get(&t).cloned().unwrap_or_default(),
            ),
        };
        out.techniques.push(TechniqueCoverage {
            id: t,
            name,
            tactics,
            domain,
            rules: rules.into_iter().collect(),
        });
    }
    out
}

/// An ATT&CK Navigator layer (layer format 4.5) for one domain, one technique entry per covered technique
/// (and tactic), scored by the number of enabled rules covering it.
pub fn navigator_layer(cov: &Coverage, domain: &str, attack_version: &str) -> J {
    let mut techniques = Vec::new();
    let mut max = 1usize;
    for t in cov
        .techniques
        .iter()
        .filter(|t| t.domain == domain || t.domain.is_empty() && domain == "enterprise-attack")
    {
        let rules: Vec<&AnalyticCoverage> = cov
            .analytics
            .iter()
            .filter(|a| a.enabled && t.rules.contains(&a.rule_id))
            .collect();
        max = max.max(rules.len());
        let comment = rules
            .iter()
            .map(|a| match (&a.analytic, &a.strategy) {
                (Some(an), Some(det)) => format!("{an} ({det}): {}", a.rule_name),
                _ => format!("{}: {}", a.rule_id, a.rule_name),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let metadata: Vec<J> = rules
            .iter()
            .map(|a| json!({"name": a.analytic.as_deref().map_or("rule", |_| "analytic"), "value": a.analytic.clone().unwrap_or_else(|| a.rule_id.clone())}))
            .collect();
        let tactics: Vec<Option<&String>> = if t.tactics.is_empty() {
            vec![None]
        } else {
            t.tactics.iter().map(Some).collect()
        };
        for tactic in tactics {
            let mut e = json!({
                "techniqueID": t.id,
                "score": rules.len(),
                "color": "",
                "comment": comment,
                "enabled": true,
                "metadata": metadata,
                "links": [],
                "showSubtechniques": false,
            });
            if let (Some(tac), J::Object(m)) = (tactic, &mut e) {
                m.insert("tactic".into(), J::String(tac.clone()));
            }
            techniques.push(e);
        }
    }
    json!({
        "name": "sensor coverage",
        "versions": {"attack": attack_version, "navigator": "5.1.0", "layer": "4.5"},
        "domain": domain,
        "description": format!("Techniques covered by the loaded sensor rules; score = number of rules. Sources: {}.", cov.sources.join(", ")),
        "filters": {"platforms": ["Linux", "macOS", "Windows", "iOS", "Android"]},
        "sorting": 0,
        "layout": {"layout": "side", "aggregateFunction": "average", "showID": true, "showName": true, "showAggregateScores": false, "countUnscored": false, "expandedSubtechniques": "annotated"},
        "hideDisabled": false,
        "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#66b1ff"], "minValue": 0, "maxValue": max},
        "legendItems": [],
        "metadata": [],
        "links": [],
        "showTacticRowBackground": false,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
    })
}

/// Checks a layer against the required fields and types of the Navigator layer format 4.5. Returns every
/// problem found (empty: valid).
pub fn validate_layer(layer: &J) -> Vec<String> {
    let mut p = Vec::new();
    let Some(o) = layer.as_object() else {
        return vec!["layer is not a JSON object".into()];
    };
    let want_str = |p: &mut Vec<String>,
                    o: &serde_json::Map<String, J>,
                    k: &str,
                    required: bool| match o.get(k) {
        Some(J::String(_)) => {}
        None if !required => {}
        None => p.push(format!("missing required string `{k}`")),
        Some(_) => p.push(format!("`{k}` must be a string")),
    };
    want_str(&mut p, o, "name", true);
    want_str(&mut p, o, "domain", true);
    want_str(&mut p, o, "description", false);
    match o.get("domain").and_then(J::as_str) {
        Some("enterprise-attack" | "mobile-attack" | "ics-attack") | None => {}
        Some(d) => p.push(format!(
            "`domain` {d:?} is not enterprise-attack, mobile-attack or ics-attack"
        )),
    }
    match o.get("versions").and_then(J::as_object) {
        None => p.push("missing required object `versions`".into()),
        Some(v) => {
            if v.get("layer").and_then(J::as_str) != Some("4.5") {
                p.push("`versions.layer` must be \"4.5\"".into());
            }
            for k in ["attack", "navigator"] {
                if v.get(k).is_some_and(|x| !x.is_string()) {
                    p.push(format!("`versions.{k}` must be a string"));
                }
            }
        }
    }
    for k in [
        "hideDisabled",
        "showTacticRowBackground",
        "selectTechniquesAcrossTactics",
        "selectSubtechniquesWithParent",
        "selectVisibleTechniques",
    ] {
        if o.get(k).is_some_and(|x| !x.is_boolean()) {
            p.push(format!("`{k}` must be a boolean"));
        }
    }
    if o.get("sorting")
        .is_some_and(|x| x.as_u64().is_none_or(|n| n > 3))
    {
        p.push("`sorting` must be 0..=3".into());
    }
    match o.get("techniques") {
        None => {}
        Some(J::Array(ts)) => {
            for (i, t) in ts.iter().enumerate() {
                let Some(t) = t.as_object() else {
                    p.push(format!("techniques[{i}] is not an object"));
                    continue;
                };
                match t.get("techniqueID").and_then(J::as_str) {
                    Some(id) if is_technique_id(id) => {}
                    Some(id) => p.push(format!(
                        "techniques[{i}].techniqueID {id:?} is not a technique id"
                    )),
                    None => p.push(format!(
                        "techniques[{i}] lacks the required string techniqueID"
                    )),
                }
                if t.get("tactic").is_some_and(|x| !x.is_string()) {
                    p.push(format!("techniques[{i}].tactic must be a string"));
                }
                if t.get("score")
                    .is_some_and(|x| !x.is_number() && !x.is_null())
                {
                    p.push(format!("techniques[{i}].score must be a number"));
                }
                for k in ["comment", "color"] {
                    if t.get(k).is_some_and(|x| !x.is_string()) {
                        p.push(format!("techniques[{i}].{k} must be a string"));
                    }
                }
                for k in ["enabled", "showSubtechniques"] {
                    if t.get(k).is_some_and(|x| !x.is_boolean()) {
                        p.push(format!("techniques[{i}].{k} must be a boolean"));
                    }
                }
                if let Some(m) = t.get("metadata") {
                    let ok = m.as_array().is_some_and(|a| {
                        a.iter().all(|x| {
                            x.get("name").is_some_and(J::is_string)
                                && x.get("value").is_some_and(J::is_string)
                        })
                    });
                    if !ok {
                        p.push(format!(
                            "techniques[{i}].metadata must be an array of {{name, value}} strings"
                        ));
                    }
                }
            }
        }
        Some(_) => p.push("`techniques` must be an array".into()),
    }
    if let Some(g) = o.get("gradient") {
        let ok = g
            .get("colors")
            .and_then(J::as_array)
            .is_some_and(|c| c.len() >= 2 && c.iter().all(J::is_string))
            && g.get("minValue").is_some_and(J::is_number)
            && g.get("maxValue").is_some_and(J::is_number);
        if !ok {
            p.push(
                "`gradient` needs colors (>= 2 strings), minValue and maxValue (numbers)".into(),
            );
        }
    }
    if let Some(l) = o.get("legendItems") {
        if !l.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.get("label").is_some_and(J::is_string) && x.get("color").is_some_and(J::is_string)
            })
        }) {
            p.push("`legendItems` must be an array of {label, color}".into());
        }
    }
    p
}

fn is_technique_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest
        .split_once('.')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && sub.is_none_or(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MINI: &str = r#"{"type": "bundle", "id": "bundle--1", "spec_version": "2.0", "objects": [
      {"type": "attack-pattern", "id": "attack-pattern--1", "name": "Inter-Process Communication",
       "external_references": [{"source_name": "mitre-attack", "external_id": "T1559"}],
       "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}], "x_mitre_domains": ["enterprise-attack"]},
      {"type": "x-mitre-data-component", "id": "x-mitre-data-component--1", "name": "Process Creation",
       "external_references": [{"source_name": "mitre-attack", "external_id": "DC0032"}]},
      {"type": "x-mitre-analytic", "id": "x-mitre-analytic--1", "x_mitre_domains": ["enterprise-attack"],
       "external_references": [{"source_name": "mitre-attack", "external_id": "AN1358"}],
       "x_mitre_log_source_references": [{"x_mitre_data_component_ref": "x-mitre-data-component--1", "name": "auditd:SYSCALL", "channel": "socket"}]},
      {"type": "x-mitre-analytic", "id": "x-mitre-analytic--2", "revoked": true,
       "external_references": [{"source_name": "mitre-attack", "external_id": "AN0001"}]},
      {"type": "x-mitre-detection-strategy", "id": "x-mitre-detection-strategy--1", "name": "Detect IPC",
       "external_references": [{"source_name": "mitre-attack", "external_id": "DET0493"}],
       "x_mitre_analytic_refs": ["x-mitre-analytic--1"]},
      {"type": "relationship", "id": "relationship--1", "relationship_type": "detects",
       "source_ref": "x-mitre-detection-strategy--1", "target_ref": "attack-pattern--1"}
    ]}"#;

    #[test]
    fn links_analytic_strategy_technique() {
        let c = Catalog::from_json(MINI).unwrap();
        assert_eq!(c.analytics["AN1358"].strategy.as_deref(), Some("DET0493"));
        assert_eq!(c.strategies["DET0493"].techniques, ["T1559"]);
        assert_eq!(
            c.analytics["AN1358"].log_sources[0]
                .data_component
                .as_deref(),
            Some("DC0032")
        );
        assert!(
            !c.analytics.contains_key("AN0001"),
            "revoked objects are skipped"
        );
        // A per-object file (one STIX 2.1 object) loads too.
        let one = r#"{"type": "attack-pattern", "spec_version": "2.1", "id": "attack-pattern--9", "name": "X",
            "external_references": [{"source_name": "mitre-attack", "external_id": "T1000"}]}"#;
        assert!(Catalog::from_json(one)
            .unwrap()
            .techniques
            .contains_key("T1000"));
        assert!(matches!(
            Catalog::from_json("[1]"),
            Err(AttackError::Object { index: 0 })
        ));
        assert!(matches!(
            Catalog::from_json("\"x\""),
            Err(AttackError::Shape(_))
        ));
        assert!(matches!(
            Catalog::from_json("{\"type\": \"bundle\", \"objects\": []}"),
            Err(AttackError::Empty)
        ));
        assert!(Catalog::from_json("{").is_err());
    }

    #[test]
    fn a_rule_is_provided_only_by_the_sources_it_declares() {
        let c = Catalog::from_json(MINI).unwrap();
        let set = crate::analytics::AnalyticSet::load(&[], &crate::analytics::Overrides::default())
            .unwrap();
        let rules: Vec<(&Analytic, bool)> = set
            .entries
            .iter()
            .map(|e| (&e.analytic, e.enabled))
            .collect();
        let dc0032 = |sources: &[&str]| -> Vec<String> {
            let sources: Vec<String> = sources.iter().map(|s| (*s).to_string()).collect();
            let cov = coverage(&c, &rules, &sources);
            let a = cov
                .analytics
                .iter()
                .find(|a| a.rule_id == "AN1358")
                .unwrap();
            a.data_components[0].provided_by.clone()
        };
        // ECS delivers Process Creation records, but AN1358 reads them only from auditd and the kernel sensor.
        assert!(SOURCE_DATA_COMPONENTS
            .iter()
            .any(|(s, dcs)| *s == "ecs" && dcs.contains(&"Process Creation")));
        assert_eq!(dc0032(&["ecs"]), Vec::<String>::new());
        assert_eq!(dc0032(&["ecs", "auditd"]), ["auditd"]);
        assert_eq!(dc0032(&["kernel", "auditd"]), ["kernel", "auditd"]);
    }

    #[test]
    fn layer_validation_catches_bad_layers() {
        let c = Catalog::from_json(MINI).unwrap();
        let set = crate::analytics::AnalyticSet::load(&[], &crate::analytics::Overrides::default())
            .unwrap();
        let rules: Vec<(&Analytic, bool)> = set
            .entries
            .iter()
            .map(|e| (&e.analytic, e.enabled))
            .collect();
        let cov = coverage(&c, &rules, &["kernel".into(), "auditd".into()]);
        let layer = navigator_layer(&cov, "enterprise-attack", "18");
        assert_eq!(validate_layer(&layer), Vec::<String>::new());
        let t1559 = layer["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["techniqueID"] == "T1559")
            .unwrap();
        assert_eq!(t1559["tactic"], "execution");
        assert_eq!(t1559["score"], 3);
        let mut bad = layer.clone();
        bad["versions"]["layer"] = json!("4.4");
        bad["techniques"][0]["techniqueID"] = json!("X1");
        bad.as_object_mut().unwrap().remove("name");
        let probs = validate_layer(&bad);
        assert_eq!(probs.len(), 3, "{probs:?}");
    }
}
