//! The `ipc_wiring` detector block of an analytic file: its TOML shape and how it is built into a
//! [`crate::detect::wiring::IpcWiring`] with the analytic's settings.

use serde::Deserialize;

use super::build::Builder;
use super::{substitute, AnalyticError, BoolParam, Param, SettingValue};
use crate::detect::wiring::{IpcWiring, WiringConfig};
use crate::{Detector, Severity};

/// `kind = "ipc_wiring"`: event filters are EQL (with `${Setting}`), lists name settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IpcWiringDef {
    pub(super) id: String,
    /// FIFO creations and opens to follow.
    fifo_events: String,
    /// AF_UNIX binds and connects to follow.
    socket_events: String,
    /// Process starts (fork, exec, auditd execve/clone).
    process_events: String,
    /// TCP connects and accepts.
    network_events: String,
    /// Names of list settings of shell and interpreter image names (globs).
    shells: Vec<String>,
    /// Name of the list setting of network tool image names.
    network_tools: String,
    /// Name of the list setting of writable-directory executable globs.
    writable_dirs: String,
    /// Names of the list settings of shared-directory path globs and ignored path globs (FIFOs
    /// named on command lines).
    shared_dirs: String,
    ignored_paths: String,
    window: Param,
    pipeline_span: Param,
    decision_delay: Param,
    /// A level, or `${LevelSetting}`.
    wired_severity: String,
    unwired_severity: String,
    /// Whether FIFOs that are not wired raise an alert of `unwired_severity`.
    report_unwired: BoolParam,
}

impl IpcWiringDef {
    /// Every text that may hold `${Name}` references.
    pub(super) fn texts(&self) -> Vec<String> {
        let mut v = vec![
            self.fifo_events.clone(),
            self.socket_events.clone(),
            self.process_events.clone(),
            self.network_events.clone(),
            self.wired_severity.clone(),
            self.unwired_severity.clone(),
        ];
        for p in [&self.window, &self.pipeline_span, &self.decision_delay] {
            if let Param::Text(t) = p {
                v.push(t.clone());
            }
        }
        if let BoolParam::Text(t) = &self.report_unwired {
            v.push(t.clone());
        }
        v
    }

    pub(super) fn build(
        &self,
        id: &str,
        b: &Builder<'_>,
    ) -> Result<Box<dyn Detector>, AnalyticError> {
        let list = |name: &str| -> Result<Vec<String>, AnalyticError> {
            match b.values.get(name) {
                Some(SettingValue::List(l) | SettingValue::PatternList(l)) => Ok(l.clone()),
                _ => Err((b.err)(format!(
                    "`{name}` must name a list or pattern_list setting"
                ))),
            }
        };
        let level = |t: &str| -> Result<Severity, AnalyticError> {
            let s = substitute(t, b.values).map_err(b.err)?;
            Severity::parse(s.trim_matches('"'))
                .ok_or_else(|| (b.err)(format!("`{t}` gave `{s}`, not a severity level")))
        };
        let mut shells = Vec::new();
        for name in &self.shells {
            shells.extend(list(name)?);
        }
        let report = match &self.report_unwired {
            BoolParam::Bool(x) => *x,
            BoolParam::Text(t) => match substitute(t, b.values).map_err(b.err)?.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err((b.err)(format!(
                        "`report_unwired = \"{t}\"` gave `{other}`, not a bool"
                    )))
                }
            },
        };
        Ok(Box::new(IpcWiring::new(WiringConfig {
            id: id.to_string(),
            fifo_events: b.filter(&self.fifo_events)?,
            socket_events: b.filter(&self.socket_events)?,
            process_events: b.filter(&self.process_events)?,
            network_events: b.filter(&self.network_events)?,
            shells,
            network_tools: list(&self.network_tools)?,
            writable_dirs: list(&self.writable_dirs)?,
            shared_dirs: list(&self.shared_dirs)?,
            ignored_paths: list(&self.ignored_paths)?,
            window_ns: b.int(&self.window, true)?,
            pipeline_span_ns: b.int(&self.pipeline_span, true)?,
            decision_delay_ns: b.int(&self.decision_delay, true)?,
            wired_severity: level(&self.wired_severity)?,
            unwired_severity: if report {
                Some(level(&self.unwired_severity)?)
            } else {
                None
            },
        })))
    }
}
