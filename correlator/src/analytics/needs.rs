//! What each analytic branch needs to see: the `[[needs]]` blocks of an analytic file. A branch is a
//! `[[detect]]` block, or one way it fires (`branch = "..."`, e.g. AN1358's FIFO wiring driven by a
//! network peer); it needs every one of its inputs, and an input is provided by any one of its
//! sources (the sensor's source formats, `kernel` for the eBPF sensor). `sensor coverage --sources`
//! reports them against the configured sources, and with `--events` against the sources and fields a
//! recording actually carries.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One `[[needs]]` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Need {
    /// The `[[detect]]` block id.
    pub detect: String,
    /// One way the detector fires, when it has several with different inputs.
    #[serde(default)]
    pub branch: Option<String>,
    /// What the branch does without an optional input, or other remarks.
    #[serde(default)]
    pub note: Option<String>,
    /// Everything the branch needs (all of them).
    #[serde(rename = "input")]
    pub inputs: Vec<NeedInput>,
}

/// One input of a branch: a kind of event, provided by any one of `sources`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedInput {
    /// The events, in words.
    pub what: String,
    /// Source formats that deliver them (any one is enough).
    pub sources: Vec<String>,
    /// ECS fields the branch cannot do without (`a|b`: either).
    #[serde(default)]
    pub fields: Vec<String>,
}

/// What a recording (a file of ECS events) carries: its sources (`event.module`, the kernel sensor's
/// `sensor` read as `kernel`; a module that names no known source is `ecs`: the `ecs` decoder keeps a
/// document's own module, such as Elastic Defend's `endpoint` or Winlogbeat's `sysmon`, where every
/// other decoder writes its format's name) and every field path present in at least one event.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub sources: BTreeSet<String>,
    pub fields: BTreeSet<String>,
}

impl Seen {
    /// Adds one event (ECS JSON, nested or dotted keys).
    pub fn add(&mut self, ev: &serde_json::Value) {
        if let Some(m) = ev
            .get("event")
            .and_then(|e| e.get("module"))
            .or_else(|| ev.get("event.module"))
            .and_then(serde_json::Value::as_str)
        {
            let m = if m == "sensor" { "kernel" } else { m };
            let m = if crate::attack::known_sources().contains(&m) {
                m
            } else {
                "ecs"
            };
            self.sources.insert(m.to_string());
        }
        flatten("", ev, &mut self.fields);
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        serde_json::Value::Null => {}
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.to_string());
            }
        }
    }
}

/// A branch's inputs judged against the configured sources (and a recording, when given).
#[derive(Clone, Debug, Serialize)]
pub struct BranchCoverage {
    pub analytic: String,
    pub detect: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub enabled: bool,
    /// Every input has a configured source that provides it.
    pub provided: bool,
    /// With a recording: every input's source is in it and it carries every field each input
    /// needs (`a|b`: either).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_recording: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub inputs: Vec<InputCoverage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InputCoverage {
    pub what: String,
    pub sources: Vec<String>,
    pub fields: Vec<String>,
    /// The configured sources among `sources`.
    pub provided_by: Vec<String>,
    /// With a recording: its sources among `sources`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_sources: Option<Vec<String>>,
    /// With a recording: the needed fields it never carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_lacks: Option<Vec<String>>,
}

/// Judges the branches of one analytic.
pub fn judge(
    analytic: &str,
    enabled: bool,
    needs: &[Need],
    sources: &[String],
    seen: Option<&Seen>,
) -> Vec<BranchCoverage> {
    needs
        .iter()
        .map(|n| {
            let inputs: Vec<InputCoverage> = n
                .inputs
                .iter()
                .map(|i| InputCoverage {
                    what: i.what.clone(),
                    sources: i.sources.clone(),
                    fields: i.fields.clone(),
                    provided_by: i
                        .sources
                        .iter()
                        .filter(|s| sources.contains(s))
                        .cloned()
                        .collect(),
                    recording_sources: seen.map(|r| {
                        i.sources
                            .iter()
                            .filter(|s| r.sources.contains(*s))
                            .cloned()
                            .collect()
                    }),
                    recording_lacks: seen.map(|r| {
                        i.fields
                            .iter()
                            .filter(|f| !f.split('|').any(|one| r.fields.contains(one)))
                            .cloned()
                            .collect()
                    }),
                })
                .collect();
            let provided = inputs.iter().all(|i| !i.provided_by.is_empty());
            let in_recording = seen.map(|_| {
                inputs.iter().all(|i| {
                    let src = i.recording_sources.as_ref().is_some_and(|s| !s.is_empty());
                    src && i.recording_lacks.as_ref().is_none_or(Vec::is_empty)
                })
            });
            BranchCoverage {
                analytic: analytic.to_string(),
                detect: n.detect.clone(),
                branch: n.branch.clone(),
                enabled,
                provided,
                in_recording,
                note: n.note.clone(),
                inputs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::analytics::{Analytic, BUNDLED};

    #[test]
    fn every_shipped_detector_says_what_it_needs_from_known_sources() {
        let known = crate::attack::known_sources();
        for (file, text) in BUNDLED {
            let a = Analytic::parse(file, text).unwrap();
            for (id, _) in a.detectors_summary() {
                assert!(
                    a.needs.iter().any(|n| n.detect == id),
                    "{file}: [[detect]] `{id}` has no [[needs]]"
                );
            }
            for n in &a.needs {
                assert!(!n.inputs.is_empty(), "{file}: {} needs no input", n.detect);
                for i in &n.inputs {
                    for s in &i.sources {
                        assert!(known.contains(&s.as_str()), "{file}: unknown source {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_branch_is_judged_by_sources_and_by_the_fields_a_recording_carries() {
        let a = Analytic::parse("AN1726.toml", BUNDLED[5].1).unwrap();
        let net = |b: &[BranchCoverage]| {
            b.iter()
                .find(|x| x.detect == "tls-inspection-network")
                .cloned()
                .unwrap()
        };
        let b = judge("AN1726", true, &a.needs, &["kernel".into()], None);
        assert!(!net(&b).provided);
        let b = judge("AN1726", true, &a.needs, &["zeek".into()], None);
        assert!(net(&b).provided && net(&b).in_recording.is_none());
        // A Zeek 4 ssl.log alone: the source is there, the issuer is not.
        let mut seen = Seen::default();
        seen.add(
            &serde_json::json!({"event": {"module": "zeek"}, "destination": {"ip": "1.1.1.1"}}),
        );
        let b = judge("AN1726", true, &a.needs, &["zeek".into()], Some(&seen));
        assert_eq!(net(&b).in_recording, Some(false));
        assert_eq!(
            net(&b).inputs[0].recording_lacks,
            Some(vec!["tls.server.issuer".to_string()])
        );
        seen.add(
            &serde_json::json!({"event.module": "zeek", "tls": {"server": {"issuer": "CN=x"}}}),
        );
        let b = judge("AN1726", true, &a.needs, &["zeek".into()], Some(&seen));
        assert_eq!(net(&b).in_recording, Some(true));
    }

    #[test]
    fn an_ecs_document_with_its_own_module_is_an_ecs_recording() {
        let mut seen = Seen::default();
        // Elastic Defend's process event as the `ecs` decoder passes it on (its own module kept).
        seen.add(&serde_json::json!({"event": {"module": "endpoint", "category": ["process"]}}));
        seen.add(&serde_json::json!({"event": {"module": "sensor"}}));
        seen.add(&serde_json::json!({"event": {"module": "eslogger"}}));
        assert_eq!(
            seen.sources.iter().map(String::as_str).collect::<Vec<_>>(),
            ["ecs", "eslogger", "kernel"]
        );
    }

    #[test]
    fn a_needs_block_must_name_a_detector() {
        let text = BUNDLED[0].1.to_string() + "\n[[needs]]\ndetect = \"nope\"\n[[needs.input]]\nwhat = \"x\"\nsources = [\"kernel\"]\n";
        let e = Analytic::parse("AN1358.toml", &text).unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }
}
