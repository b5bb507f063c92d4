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

use serde_json::Value;

mod coverage;
mod navigator;

pub use coverage::{
    coverage, known_sources, AnalyticCoverage, Coverage, DataComponentCoverage, StrategyCoverage,
    TechniqueCoverage, SOURCE_DATA_COMPONENTS,
};
pub use navigator::{navigator_layer, validate_layer};

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

fn attack_id(o: &Value) -> Option<String> {
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

fn strs(o: &Value, key: &str) -> Vec<String> {
    o.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn text(o: &Value, key: &str) -> String {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Catalog {
    /// Parses STIX JSON text and adds its objects to the catalog.
    // Over 100 lines on purpose: reads the STIX objects and then their relationships in one pass, type by type, as one reading of the format.
    pub fn add_json(&mut self, text_in: &str) -> Result<(), AttackError> {
        let doc: Value =
            serde_json::from_str(text_in).map_err(|e| AttackError::Json(e.to_string()))?;
        let objects: Vec<Value> = match doc {
            Value::Object(ref m) if m.get("type").and_then(Value::as_str) == Some("bundle") => m
                .get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Value::Object(_) => vec![doc],
            Value::Array(a) => a,
            Value::Null => return Err(AttackError::Shape("null")),
            Value::Bool(_) => return Err(AttackError::Shape("a boolean")),
            Value::Number(_) => return Err(AttackError::Shape("a number")),
            Value::String(_) => return Err(AttackError::Shape("a string")),
        };
        let mut by_stix: BTreeMap<String, (String, String)> = BTreeMap::new(); // stix id -> (type, attack id)
        let live = |o: &Value| {
            !o.get("revoked").and_then(Value::as_bool).unwrap_or(false)
                && !o
                    .get("x_mitre_deprecated")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
        };
        let mut found = false;
        for (index, o) in objects.iter().enumerate() {
            let (Some(ty), Some(sid)) = (
                o.get("type").and_then(Value::as_str),
                o.get("id").and_then(Value::as_str),
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
                        .and_then(Value::as_array)
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
            let ty = o.get("type").and_then(Value::as_str).unwrap_or_default();
            let domain = strs(o, "x_mitre_domains")
                .into_iter()
                .next()
                .unwrap_or_default();
            match ty {
                "x-mitre-analytic" => {
                    let Some(aid) = attack_id(o) else { continue };
                    let log_sources = o
                        .get("x_mitre_log_source_references")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|r| {
                                    let dc = r
                                        .get("x_mitre_data_component_ref")
                                        .and_then(Value::as_str)
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
                        .and_then(Value::as_array)
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
            if o.get("type").and_then(Value::as_str) != Some("relationship")
                || o.get("relationship_type").and_then(Value::as_str) != Some("detects")
                || !live(o)
            {
                continue;
            }
            let (Some(src), Some(dst)) = (
                o.get("source_ref")
                    .and_then(Value::as_str)
                    .and_then(|s| by_stix.get(s)),
                o.get("target_ref")
                    .and_then(Value::as_str)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::analytics::Analytic;
    use serde_json::json;

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
