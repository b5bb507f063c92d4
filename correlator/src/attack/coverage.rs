//! Coverage: which techniques, strategies and analytics the enabled rules cover, given the data
//! components each source format delivers.

use std::collections::{BTreeMap, BTreeSet};

use super::Catalog;
use crate::analytics::Analytic;

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
        "apple-mdm",
        &[
            "Application Assets",
            "Protected Configuration",
            "System Settings",
            "Host Status",
        ],
    ),
    (
        "mtd",
        &["Host Status", "Application Assets", "Network Communication"],
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
    (
        "windows",
        &[
            "Process Creation",
            "Process Termination",
            "Command Execution",
            "File Creation",
            "File Access",
            "File Deletion",
            "Network Connection Creation",
            "Named Pipe Metadata",
            "Process Access",
            "Module Load",
            "Windows Registry Key Creation",
            "Windows Registry Key Modification",
            "Service Creation",
            "Logon Session Creation",
            "User Account Authentication",
            "Network Share Access",
            "Script Execution",
            "Scheduled Job Creation",
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

/// Computes what `rules` (with their enabled flag) cover in `catalog`, given the configured sources.
// Over 100 lines on purpose: the analytics, strategies and techniques views are built from the same maps in one pass.
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
