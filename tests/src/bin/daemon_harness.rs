//! `sensor run` with small test detectors instead of the shipped rules, for the daemon's end-to-end tests
//! (tests/tests/daemon_*.rs). Same daemon code, same signals, same store and API; only the rule seam differs.
//!
//! Detectors:
//! - `action`: alerts on every event whose `event.action` is `alert-me` (severity high, T1559, key `user.name`).
//! - `seq`: a two-step sequence by `host.name`: `stage1` then `stage2`. Holds one pending entry per host
//!   between the two (`pending()`), so tests can watch pending state survive a reload.
//!
//! `[rules.settings.<id>] version = N` sets a detector's version (a changed version restarts it empty on
//! reload); `[rules] disabled = ["id"]` leaves it out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use correlator::{Alert, AttackRef, Detector, Event, Severity};
use sensor::config::{Config, RulesConfig};
use sensor::daemon::{BoxError, Seams};
use sensor::rules::LoadedRule;

struct ActionDetector;

fn alert(
    rule: &str,
    ev: &Event,
    key: serde_json::Value,
    reason: String,
    evidence: Vec<serde_json::Value>,
) -> Alert {
    let s = |p: &str| ev.get_path(p).and_then(|v| v.as_str()).map(str::to_string);
    Alert {
        rule_id: rule.into(),
        rule_name: format!("test rule {rule}"),
        severity: Severity::High,
        risk_score: 73,
        attack: AttackRef {
            techniques: vec!["T1559".into()],
            tactics: vec!["TA0002".into()],
            analytic: Some("AN1358".into()),
            strategy: Some("DET0493".into()),
        },
        timestamp_ns: ev.timestamp_ns,
        first_event_ns: ev.timestamp_ns,
        join_keys: vec![key],
        host: s("host.name"),
        user: s("user.name"),
        process: s("process.executable"),
        settings: serde_json::Map::new(),
        reason,
        evidence,
    }
}

impl Detector for ActionDetector {
    fn id(&self) -> &str {
        "action"
    }
    fn on_event(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        if ev.get_path("event.action").and_then(|v| v.as_str()) == Some("alert-me") {
            let key = ev
                .get_path("user.name")
                .map_or(serde_json::Value::Null, correlator::Value::to_json);
            out.push(alert(
                "action",
                ev,
                key,
                "event.action is alert-me".into(),
                vec![ev.to_json()],
            ));
        }
    }
}

#[derive(Default)]
struct SeqDetector {
    pending: HashMap<String, serde_json::Value>,
}

impl Detector for SeqDetector {
    fn id(&self) -> &str {
        "seq"
    }
    fn on_event(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Some(host) = ev
            .get_path("host.name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
        else {
            return;
        };
        match ev.get_path("event.action").and_then(|v| v.as_str()) {
            Some("stage1") => {
                self.pending.insert(host, ev.to_json());
            }
            Some("stage2") => {
                if let Some(first) = self.pending.remove(&host) {
                    let key = serde_json::Value::String(host);
                    out.push(alert(
                        "seq",
                        ev,
                        key,
                        "stage1 then stage2 on one host".into(),
                        vec![first, ev.to_json()],
                    ));
                }
            }
            _ => {}
        }
    }
    fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn rules(cfg: &RulesConfig) -> Result<Vec<LoadedRule>, BoxError> {
    let version = |id: &str| -> Result<u64, BoxError> {
        match cfg.settings.get(id).and_then(|t| t.get("version")) {
            None => Ok(1),
            Some(v) => v
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    format!(
                        "[rules.settings.{id}] version must be a non-negative integer, found {v}"
                    )
                    .into()
                }),
        }
    };
    let mut out = Vec::new();
    if !cfg.disabled.iter().any(|d| d == "action") {
        out.push(LoadedRule {
            detector: Box::new(ActionDetector),
            version: version("action")?,
        });
    }
    if !cfg.disabled.iter().any(|d| d == "seq") {
        out.push(LoadedRule {
            detector: Box::new(SeqDetector::default()),
            version: version("seq")?,
        });
    }
    Ok(out)
}

fn main() -> ExitCode {
    sensor::logging::init(&std::env::var("SENSOR_LOG").unwrap_or_else(|_| "info".into()));
    if std::env::args().nth(1).as_deref() == Some("--progress-demo") {
        // Exercises sensor::metrics::progress as a replay would: a bar on a terminal, nothing in a pipe.
        let p = sensor::metrics::progress::Progress::bytes("replay demo.ndjson", 1 << 20);
        eprintln!("progress visible: {}", p.visible());
        for _ in 0..16 {
            p.inc(1 << 16);
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        p.finish();
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args().skip(1);
    let (Some(flag), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: daemon_harness --config FILE");
        return ExitCode::from(2);
    };
    if flag != "--config" {
        eprintln!("usage: daemon_harness --config FILE");
        return ExitCode::from(2);
    }
    let path = PathBuf::from(path);
    let result = Config::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            // Network ingest runs when the config enables it (`[ingest] enabled = true`).
            let seams = Seams {
                rules: Arc::new(rules),
                sources: vec![Box::new(sensor::daemon::live::IngestStarter::new())],
            };
            rt.block_on(sensor::daemon::run(cfg, Some(path), seams))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
