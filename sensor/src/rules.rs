//! Loading what detects: EQL rule files, the shipped ATT&CK analytics with their overrides, and the
//! detector state file (learned baselines). The daemon's rule provider, `sensor replay` and the
//! `sensor rules|analytics|coverage` commands all load through here, so a rule means the same thing
//! to each of them.
//!
//! The correlator does no I/O: this module reads the files and hands their text in.

use std::path::{Path, PathBuf};

use correlator::analytics::{AnalyticError, AnalyticSet, Overrides};
use correlator::rules::{parse_rule_file, RuleDef, RuleError};
use correlator::Detector;

use crate::config::RulesConfig;

/// Everything that can go wrong loading rules, analytics or detector state; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Analytic(#[from] AnalyticError),
    #[error("in config {path}: {source}")]
    Config {
        path: PathBuf,
        source: AnalyticError,
    },
    #[error("detector state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("writing detector state {path}: {source}")]
    WriteState {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<String, RulesError> {
    std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One loaded detector and a fingerprint of its definition and settings. On reload, a detector whose
/// id and version are unchanged keeps its running instance (and so its pending state).
pub struct LoadedRule {
    pub detector: Box<dyn Detector>,
    pub version: u64,
}

impl std::fmt::Debug for LoadedRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedRule")
            .field("id", &self.detector.id())
            .field("version", &self.version)
            .finish()
    }
}

/// Every `*.toml` under `paths` (files are taken as given), sorted per folder.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RulesError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RulesError> {
        let io = |source| RulesError::Read {
            path: dir.to_path_buf(),
            source,
        };
        for e in std::fs::read_dir(dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v = Vec::new();
            walk(p, &mut v)?;
            v.sort();
            out.extend(v);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(RulesError::Missing(p.clone()));
        }
    }
    Ok(out)
}

/// Loads every rule from `paths`; a file that does not parse is an error naming it.
pub fn load_rule_files(paths: &[PathBuf]) -> Result<Vec<RuleDef>, RulesError> {
    let mut defs = Vec::new();
    for f in rule_files(paths)? {
        let text = read(&f)?;
        defs.extend(parse_rule_file(&text, &f.display().to_string())?);
    }
    Ok(defs)
}

/// Loads the analytic set: bundled files, then the `*.toml` files of `analytics_dir` (replacing
/// bundled ones with the same id or adding new ones), then the `[analytics.<ID>]` overrides of the
/// daemon config at `config`.
pub fn load_analytics(
    config: Option<&Path>,
    analytics_dir: Option<&Path>,
) -> Result<AnalyticSet, RulesError> {
    let overrides = match config {
        None => Overrides::default(),
        Some(p) => Overrides::from_config_text(&read(p)?).map_err(|source| RulesError::Config {
            path: p.to_path_buf(),
            source,
        })?,
    };
    let extra = match analytics_dir {
        None => Vec::new(),
        Some(d) => read_dir_files(d)?,
    };
    Ok(AnalyticSet::load(&extra, &overrides)?)
}

fn read_dir_files(dir: &Path) -> Result<Vec<(String, String)>, RulesError> {
    let io = |source| RulesError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push((path.display().to_string(), read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// Builds the detectors of every enabled analytic, restoring saved state from `state` when it exists.
pub fn detectors(
    set: &AnalyticSet,
    state: Option<&Path>,
) -> Result<Vec<Box<dyn Detector>>, RulesError> {
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
) -> Result<(), RulesError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RulesError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let state = |message: String| RulesError::State {
        path: path.to_path_buf(),
        message,
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| state(format!("is not a JSON object: {e}")))?;
    let unused =
        correlator::analytics::restore_states(dets, &map).map_err(|e| state(e.to_string()))?;
    for id in unused {
        tracing::warn!(detector = %id, "saved state for a detector that is no longer loaded; ignored");
    }
    Ok(())
}

/// Writes every detector's state (baselines) to `path` atomically (temp file + rename).
pub fn save_state<'a>(
    dets: impl IntoIterator<Item = &'a (dyn Detector + 'static)>,
    path: &Path,
) -> Result<(), RulesError> {
    write_state(correlator::analytics::save_states(dets), path)
}

/// Writes saved detector states to `path` atomically (temp file + rename).
pub fn write_state(
    map: serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> Result<(), RulesError> {
    let tmp = path.with_extension("tmp");
    let failed = |source| RulesError::WriteState {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(map))
        .map_err(|e| failed(std::io::Error::other(e)))?;
    std::fs::write(&tmp, bytes).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)?;
    Ok(())
}

/// The shipped analytics as the daemon loads them: the enabled analytics' detectors from the `[rules]`
/// section (`shipped`, `disabled`, `settings`), each with a version fingerprint of its analytic file
/// and settings, so a reload keeps the running detector (and its learned state) when nothing about it
/// changed.
pub fn shipped_analytics(cfg: &RulesConfig) -> Result<Vec<LoadedRule>, RulesError> {
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
            out.push(LoadedRule { detector, version });
        }
    }
    Ok(out)
}

/// The rule loader of `sensor run` (its `RuleProvider`): the shipped ATT&CK analytics (with
/// `[rules.settings.<ID>]` applied, minus `[rules] disabled`, baselines restored from the state file)
/// and every EQL rule found under `[rules] paths` (Elastic detection-rules TOML or the sensor's own
/// format) in one `RuleSet`.
pub fn daemon_rules(cfg: &RulesConfig) -> Result<Vec<LoadedRule>, RulesError> {
    let mut out = shipped_analytics(cfg)?;
    if let Some(path) = cfg.state_file.as_deref() {
        restore_state(out.iter_mut().map(|r| r.detector.as_mut()), path)?;
    }
    if !cfg.paths.is_empty() {
        let defs: Vec<_> = load_rule_files(&cfg.paths)?
            .into_iter()
            .filter(|d| d.enabled && d.is_eql() && !cfg.disabled.iter().any(|x| x == &d.meta.id))
            .collect();
        let version = fingerprint(
            &defs
                .iter()
                .map(|d| format!("{}:{}", d.meta.id, d.query))
                .collect::<Vec<_>>(),
        );
        let mut set = correlator::RuleSet::new(correlator::RunnerConfig {
            lateness_ns: i64::try_from(cfg.lateness.0.as_nanos()).unwrap_or(i64::MAX),
            ..correlator::RunnerConfig::default()
        });
        let report = set.reload(defs);
        for (id, err) in &report.failed {
            tracing::warn!(rule = %id, error = %err, "rule skipped: does not compile");
        }
        out.push(LoadedRule {
            detector: Box::new(set),
            version,
        });
    }
    Ok(out)
}

fn fingerprint<T: std::hash::Hash>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
