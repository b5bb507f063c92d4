//! Where alerts go besides the store: NDJSON file with rotation, stdout, syslog (RFC 5424), webhook.
//!
//! Every output receives the same ECS document ([`ecs_document`]), so Elastic or OpenSearch ingest it
//! as it is. Each output runs as its own task fed by a broadcast channel: a slow webhook never holds
//! up the store or the other outputs (it drops what it cannot keep up with, counted in metrics).

pub mod file;
pub mod syslog;
pub mod webhook;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::config::OutputsConfig;
use crate::metrics::Metrics;
use crate::store::AlertUpdate;

/// RFC 3339 UTC with microseconds.
pub fn rfc3339(ns: i64) -> String {
    correlator::ecs::rfc3339(ns, correlator::ecs::Fraction::Micros)
}

/// The alert as an ECS document: `event.kind: alert`, `rule.*`, `threat.*` (MITRE ATT&CK), `host`,
/// `user`, `process`, `message`, and the sensor's own fields under `sensor.alert.*`.
pub fn ecs_document(u: &AlertUpdate) -> Value {
    let a = &u.alert;
    let mut doc = json!({
        "@timestamp": rfc3339(a.last_seen_ns),
        "message": if a.reason.is_empty() { a.rule_name.clone() } else { a.reason.clone() },
        "event": {
            "kind": "alert",
            "id": a.id.to_string(),
            "created": rfc3339(a.created_ns),
            "start": rfc3339(a.first_seen_ns),
            "end": rfc3339(a.last_seen_ns),
            "severity": a.risk_score,
            "risk_score": a.risk_score,
            "module": "sensor",
            "dataset": "sensor.alerts",
        },
        "rule": { "id": a.rule_id, "name": a.rule_name },
        "sensor": { "alert": {
            "id": a.id,
            "status": a.status,
            "severity": a.severity.as_str(),
            "count": a.count,
            "new": u.new,
            "join_keys": a.join_keys,
            "settings": a.settings,
            "evidence": u.evidence,
        }},
    });
    if !a.attack.techniques.is_empty() || !a.attack.tactics.is_empty() {
        let techniques: Vec<Value> = a
            .attack
            .techniques
            .iter()
            .map(|t| json!({"id": t, "reference": format!("https://attack.mitre.org/techniques/{}/", t.replace('.', "/"))}))
            .collect();
        let tactics: Vec<Value> = a
            .attack
            .tactics
            .iter()
            .map(|t| json!({ "id": t }))
            .collect();
        doc["threat"] =
            json!({ "framework": "MITRE ATT&CK", "technique": techniques, "tactic": tactics });
    }
    if let Some(an) = &a.attack.analytic {
        doc["sensor"]["alert"]["analytic"] = json!(an);
    }
    if let Some(st) = &a.attack.strategy {
        doc["sensor"]["alert"]["strategy"] = json!(st);
    }
    if let Some(h) = &a.host {
        doc["host"] = json!({ "name": h });
    }
    if let Some(user) = &a.user {
        doc["user"] = json!({ "name": user });
    }
    if let Some(p) = &a.process {
        doc["process"] = json!({ "executable": p });
    }
    // Where: the container, orchestrator and Kubernetes objects of the evidence that names a
    // container (the kernel sensor's fields, or a remote source's as sent).
    if a.container.is_some() {
        if let Some(ev) = u
            .evidence
            .iter()
            .rev()
            .find(|e| e.get("container").is_some())
        {
            for k in ["container", "orchestrator", "kubernetes"] {
                if let Some(v) = ev.get(k) {
                    doc[k] = v.clone();
                }
            }
        }
    }
    doc
}

/// Errors setting an output up (delivery errors are logged and counted, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("syslog output {target}: {detail}")]
    Syslog { target: String, detail: String },
    #[error("webhook output: {0}")]
    Webhook(String),
}

/// Starts every configured output as a task subscribed to `alerts`. Returns their join handles (they
/// end when the sender is dropped, after delivering what they had).
pub fn start(
    cfg: &OutputsConfig,
    alerts: &broadcast::Sender<Arc<AlertUpdate>>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, OutputError> {
    let mut tasks = Vec::new();
    let repeats = cfg.repeats;
    if cfg.stdout {
        tasks.push(tokio::spawn(run_blocking_sink(
            "stdout",
            alerts.subscribe(),
            metrics.clone(),
            repeats,
            |doc| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{doc}")
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())
            },
        )));
    }
    if let Some(f) = &cfg.file {
        let mut out = file::RotatingFile::open(f)?;
        tasks.push(tokio::spawn(run_blocking_sink(
            "file",
            alerts.subscribe(),
            metrics.clone(),
            repeats,
            move |doc| out.write_doc(&doc).map_err(|e| e.to_string()),
        )));
    }
    if let Some(s) = &cfg.syslog {
        let mut sink = syslog::Syslog::new(s)?;
        tasks.push(tokio::spawn(run_blocking_sink(
            "syslog",
            alerts.subscribe(),
            metrics.clone(),
            repeats,
            move |doc| sink.send(&doc).map_err(|e| e.to_string()),
        )));
    }
    if let Some(w) = &cfg.webhook {
        let hook = webhook::Webhook::new(w)?;
        tasks.push(tokio::spawn(webhook::run(
            hook,
            alerts.subscribe(),
            metrics.clone(),
            repeats,
        )));
    }
    Ok(tasks)
}

/// Receives alerts until the channel closes; counts lag as drops.
pub(crate) async fn next_doc(
    rx: &mut broadcast::Receiver<Arc<AlertUpdate>>,
    metrics: &Metrics,
    repeats: bool,
) -> Option<Value> {
    loop {
        match rx.recv().await {
            Ok(u) if u.new || repeats => return Some(ecs_document(&u)),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics.output_dropped.fetch_add(n, Relaxed);
                tracing::warn!(
                    dropped = n,
                    "an alert output fell behind; alerts skipped for it (they are in the store)"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn run_blocking_sink<F>(
    name: &'static str,
    mut rx: broadcast::Receiver<Arc<AlertUpdate>>,
    metrics: Arc<Metrics>,
    repeats: bool,
    mut f: F,
) where
    F: FnMut(Value) -> Result<(), String> + Send + 'static,
{
    while let Some(doc) = next_doc(&mut rx, &metrics, repeats).await {
        if let Err(e) = f(doc) {
            metrics.output_errors.fetch_add(1, Relaxed);
            tracing::warn!(output = name, error = %e, "alert output failed");
        }
    }
}
