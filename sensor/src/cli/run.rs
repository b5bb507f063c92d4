use std::path::PathBuf;

use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::daemon::live::{IngestStarter, KernelStarter};
use crate::daemon::{BoxError, LoadedRule, Seams};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (default: the embedded default, see `sensor config default`).
    #[arg(long, short, env = "SENSOR_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => {
            tracing::info!("no --config given: running the embedded default (`sensor config default` prints it)");
            Config::embedded()
        }
    };
    // Before any thread exists, so that every thread has it: nothing this process ever executes can
    // gain privileges (setuid binaries, file capabilities). The flag is per thread and inherited.
    nix::sys::prctl::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sensor")
        .build()?;
    rt.block_on(crate::daemon::run(cfg, args.config, default_seams()))?;
    Ok(ExitCode::SUCCESS)
}

/// The seams `sensor run` is built with.
pub fn default_seams() -> Seams {
    Seams {
        rules: Arc::new(shipped_rules),
        sources: vec![Box::new(KernelStarter), Box::new(IngestStarter::new())],
    }
}

/// The rule loader of `sensor run`: the shipped ATT&CK analytics (with `[rules.settings.<ID>]` applied,
/// minus `[rules] disabled`, baselines restored from the state file) and every EQL rule found under
/// `[rules] paths` (Elastic detection-rules TOML or the sensor's own format) in one `RuleSet`.
fn shipped_rules(cfg: &crate::config::RulesConfig) -> Result<Vec<LoadedRule>, BoxError> {
    let mut out = super::analytics::daemon_rules(cfg)?;
    if let Some(path) = cfg.state_file.as_deref() {
        super::analytics::restore_state(out.iter_mut().map(|r| r.detector.as_mut()), path)
            .map_err(|e| -> BoxError { format!("{e:#}").into() })?;
    }
    if !cfg.paths.is_empty() {
        let defs = super::rules::load_rules(&cfg.paths)
            .map_err(|e| -> BoxError { format!("{e:#}").into() })?;
        let defs: Vec<_> = defs
            .into_iter()
            .filter(|d| d.enabled && d.is_eql() && !cfg.disabled.iter().any(|x| x == &d.meta.id))
            .collect();
        let max_pending_bytes = usize::try_from(cfg.max_pending_bytes.0).unwrap_or(usize::MAX);
        let version = fingerprint(&(
            defs.iter()
                .map(|d| format!("{}:{}", d.meta.id, d.query))
                .collect::<Vec<_>>(),
            max_pending_bytes,
        ));
        let mut set = correlator::RuleSet::new(correlator::RunnerConfig {
            lateness_ns: i64::try_from(cfg.lateness.0.as_nanos()).unwrap_or(i64::MAX),
            limits: correlator::eql::sequence::SeqLimits {
                max_pending_bytes,
                ..correlator::eql::sequence::SeqLimits::default()
            },
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
