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
    /// ECS fields the branch reads from them.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// What a recording (a file of ECS events) carries: its sources (`event.module`, the kernel sensor's
/// `sensor` read as `kernel`) and every field path present in at least one event.
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
    /// With a recording: every input's source is in it and it carries at least one of the fields
    /// each input reads.
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
    /// With a recording: the fields it never carries.
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
                            .filter(|f| !r.fields.contains(*f))
                            .cloned()
                            .collect()
                    }),
                })
                .collect();
            let provided = inputs.iter().all(|i| !i.provided_by.is_empty());
            let in_recording = seen.map(|_| {
                inputs.iter().all(|i| {
                    let src = i.recording_sources.as_ref().is_some_and(|s| !s.is_empty());
                    let lacks = i.recording_lacks.as_ref().map_or(0, Vec::len);
                    src && (i.fields.is_empty() || lacks < i.fields.len())
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
