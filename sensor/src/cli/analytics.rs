//! `sensor analytics`: the shipped ATT&CK analytics and their settings with the values in force, as
//! loaded by `sensor::rules::load_analytics` (bundled files + override files from disk + the daemon
//! config's `[analytics]` table), like `replay` and `coverage` load them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use correlator::analytics::AnalyticSet;

/// Where analytics come from: bundled files, optional override files, optional daemon config.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Source {
    /// Daemon config file (TOML); its `[analytics.<ID>]` tables set `enabled` and `settings`.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Folder of analytic files (*.toml) replacing bundled ones with the same id or adding new ones.
    #[arg(long)]
    pub(crate) analytics_dir: Option<PathBuf>,
}

impl Source {
    /// Loads the analytic set: bundled files, then `--analytics-dir`, then the config's overrides.
    pub(crate) fn load(&self) -> anyhow::Result<AnalyticSet> {
        Ok(sensor::rules::load_analytics(
            self.config.as_deref(),
            self.analytics_dir.as_deref(),
        )?)
    }
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// List the analytics: ids, platform, log sources, settings with their current values.
    List {
        #[command(flatten)]
        source: Source,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one analytic in full, notes included.
    Show {
        /// Analytic id, e.g. AN1358.
        id: String,
        #[command(flatten)]
        source: Source,
    },
    /// Check the analytics and the config overrides: every file parses, every setting has the right
    /// type, every query compiles. Exit 0 when all is well.
    Check {
        #[command(flatten)]
        source: Source,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List { source, json } => {
            let set = source.load()?;
            if json {
                let list: Vec<serde_json::Value> = set.entries.iter().map(entry_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in &set.entries {
                    print_entry(e, false);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, source } => {
            let set = source.load()?;
            let e = set.get(&id).with_context(|| {
                format!(
                    "no analytic `{id}` (loaded: {})",
                    set.entries
                        .iter()
                        .map(|e| e.analytic.meta.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            print_entry(e, true);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { source } => {
            let set = source.load()?;
            let dets = set.detectors(&correlator::analytics::Eql)?;
            println!(
                "ok: {} analytics ({} enabled), {} detectors",
                set.entries.len(),
                set.entries.iter().filter(|e| e.enabled).count(),
                dets.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn entry_json(e: &correlator::analytics::Entry) -> serde_json::Value {
    let m = &e.analytic.meta;
    serde_json::json!({
        "id": m.id,
        "name": m.name,
        "strategy": m.strategy,
        "techniques": m.techniques,
        "tactics": m.tactics,
        "platform": m.platform,
        "domain": m.domain,
        "severity": m.severity,
        "risk_score": m.risk_score,
        "enabled": e.enabled,
        "log_sources": m.log_sources.iter().map(|l| serde_json::json!({
            "name": l.name, "channel": l.channel, "data_component": l.data_component, "sources": l.sources,
        })).collect::<Vec<_>>(),
        "detectors": e.analytic.detectors_summary().iter().map(|(id, kind)| serde_json::json!({"id": id, "kind": kind})).collect::<Vec<_>>(),
        "settings": e.analytic.settings.iter().map(|s| serde_json::json!({
            "name": s.name,
            "type": s.ty.as_str(),
            "description": s.description,
            "default": s.default.to_json(),
            "value": e.values.get(&s.name).map(correlator::analytics::SettingValue::to_json),
            "overridden": e.overridden.contains(&s.name),
        })).collect::<Vec<_>>(),
    })
}

fn print_entry(e: &correlator::analytics::Entry, full: bool) {
    let m = &e.analytic.meta;
    println!(
        "{}  {}{}",
        m.id,
        m.name,
        if e.enabled { "" } else { "  [disabled]" }
    );
    println!(
        "  strategy: {}  techniques: {}  tactics: {}  platform: {}  severity: {} ({})",
        m.strategy.as_deref().unwrap_or("-"),
        m.techniques.join(", "),
        m.tactics.join(", "),
        m.platform,
        m.severity,
        m.risk_score
    );
    let mut sources: Vec<String> = m
        .log_sources
        .iter()
        .flat_map(|l| l.sources.iter().cloned())
        .collect();
    sources.sort();
    sources.dedup();
    println!(
        "  log sources: {}  (sensor sources: {})",
        m.log_sources
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        sources.join(", ")
    );
    println!(
        "  detectors: {}",
        e.analytic
            .detectors_summary()
            .iter()
            .map(|(id, k)| format!("{id} ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !e.analytic.settings.is_empty() {
        println!("  settings:");
    }
    for s in &e.analytic.settings {
        let v = e
            .values
            .get(&s.name)
            .map_or_else(String::new, correlator::analytics::SettingValue::display);
        let tag = if e.overridden.contains(&s.name) {
            " (from config)"
        } else {
            ""
        };
        println!("    {} [{}] = {}{}", s.name, s.ty.as_str(), v, tag);
        if full {
            println!("        {}", s.description);
        }
    }
    if full {
        println!("  description: {}", m.description.trim());
        println!(
            "  notes:\n{}",
            m.notes
                .trim()
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!();
}
