//! `sensor analytics`: the shipped ATT&CK analytics, their settings with the values in force, and the
//! shared loader (bundled files + override files from disk + the daemon config's `[analytics]` table)
//! that `replay`, `coverage` and the daemon use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use correlator::analytics::{AnalyticSet, Overrides};
use correlator::Detector;

/// Where analytics come from: bundled files, optional override files, optional daemon config.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Source {
    /// Daemon config file (TOML); its `[analytics.<ID>]` tables set `enabled` and `settings`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder of analytic files (*.toml) replacing bundled ones with the same id or adding new ones.
    #[arg(long)]
    pub analytics_dir: Option<PathBuf>,
}

impl Source {
    /// Loads the analytic set: bundled files, then `--analytics-dir`, then the config's overrides.
    pub fn load(&self) -> anyhow::Result<AnalyticSet> {
        let overrides = match &self.config {
            None => Overrides::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                Overrides::from_config_text(&text)
                    .with_context(|| format!("in config {}", p.display()))?
            }
        };
        let extra = match &self.analytics_dir {
            None => Vec::new(),
            Some(d) => read_dir_files(d)?,
        };
        Ok(AnalyticSet::load(&extra, &overrides)?)
    }
}

fn read_dir_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
    }
    files.sort();
    Ok(files)
}

/// Builds the detectors of every enabled analytic, restoring saved state from `state` when it exists.
pub fn detectors(
    set: &AnalyticSet,
    state: Option<&Path>,
) -> anyhow::Result<Vec<Box<dyn Detector>>> {
    let mut dets = set.detectors(&correlator::analytics::Eql)?;
    if let Some(p) = state {
        restore_state(dets.iter_mut().map(|d| d.as_mut()), p)?;
    }
    Ok(dets)
}

/// Restores the detectors' state (baselines) from the state file at `path`, when it exists; logs the
/// saved states of detectors no longer loaded.
pub fn restore_state<'a>(
    dets: impl IntoIterator<Item = &'a mut (dyn Detector + 'static)>,
    path: &Path,
) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading detector state {}", path.display()))
        }
    };
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("detector state {} is not a JSON object", path.display()))?;
    let unused = correlator::analytics::restore_states(dets, &map)
        .with_context(|| format!("detector state {}", path.display()))?;
    for id in unused {
        tracing::warn!(detector = %id, "saved state for a detector that is no longer loaded; ignored");
    }
    Ok(())
}

/// Writes every detector's state (baselines) to `path` atomically (temp file + rename).
pub fn save_state<'a>(
    dets: impl IntoIterator<Item = &'a (dyn Detector + 'static)>,
    path: &Path,
) -> anyhow::Result<()> {
    write_state(correlator::analytics::save_states(dets), path)
}

/// Writes saved detector states to `path` atomically (temp file + rename).
pub fn write_state(
    map: serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&serde_json::Value::Object(map))?,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
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

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
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

/// The daemon's rule loader for the shipped analytics (a [`crate::daemon::RuleProvider`] part): builds
/// the enabled analytics' detectors from the `[rules]` section (`shipped`, `disabled`, `settings`) and
/// gives each a version fingerprint of its analytic file and settings, so a reload keeps the running
/// detector (and its learned state) when nothing about it changed. Baseline state persistence across
/// restarts goes through [`detectors`]/[`save_state`] or `correlator::analytics::{save,restore}_states`.
pub fn daemon_rules(
    cfg: &crate::config::RulesConfig,
) -> Result<Vec<crate::daemon::LoadedRule>, crate::daemon::BoxError> {
    use std::hash::{Hash, Hasher};
    if !cfg.shipped {
        return Ok(Vec::new());
    }
    let overrides = Overrides::from_rules_section(&cfg.settings, &cfg.disabled)?;
    let set = AnalyticSet::load(&[], &overrides)?;
    let mut out = Vec::new();
    for e in set.entries.iter().filter(|e| e.enabled) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", e.analytic).hash(&mut h);
        for (k, v) in &e.values {
            k.hash(&mut h);
            v.to_json().to_string().hash(&mut h);
        }
        for (sel, values) in &e.scopes {
            sel.label().hash(&mut h);
            for (k, v) in values {
                k.hash(&mut h);
                v.to_json().to_string().hash(&mut h);
            }
        }
        let version = h.finish();
        // Scoped settings (`[[rules.settings.ID.scoped]]`) give detectors of their own.
        for detector in correlator::analytics::scope::build(e, &correlator::analytics::Eql)? {
            out.push(crate::daemon::LoadedRule { detector, version });
        }
    }
    Ok(out)
}
