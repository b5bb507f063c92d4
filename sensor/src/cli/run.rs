use std::path::PathBuf;
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
        sources: vec![Box::new(KernelStarter), Box::new(IngestStarter)],
    }
}

/// INTEGRATION: point this at the real rule loader (shipped analytics per `cfg.shipped`, EQL and
/// detection-rules TOML from `cfg.paths`, minus `cfg.disabled`, with `cfg.settings` applied).
fn shipped_rules(cfg: &crate::config::RulesConfig) -> Result<Vec<LoadedRule>, BoxError> {
    if !cfg.paths.is_empty() {
        return Err(format!(
            "[rules] paths is set ({}), but this build has no rule loader linked in yet",
            cfg.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into());
    }
    Ok(Vec::new())
}
