use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::daemon::{BoxError, LoadedRule, Seams, SourceStarter, StartedSource};
use crate::metrics::Metrics;

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

/// Starts the kernel sensor when `[kernel] enabled`.
struct KernelStarter;

impl SourceStarter for KernelStarter {
    fn name(&self) -> String {
        "kernel".into()
    }

    fn start(
        self: Box<Self>,
        cfg: &Config,
        _metrics: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String> {
        if !cfg.kernel_enabled() {
            return Ok(None);
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: loading eBPF programs needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE)".into());
        }
        if !std::path::Path::new("/sys/kernel/tracing/events").is_dir()
            && !std::path::Path::new("/sys/kernel/debug/tracing/events").is_dir()
        {
            return Err(
                "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)".into(),
            );
        }
        // INTEGRATION: `sensor::kernel::KernelSensor::start(&KernelConfig)` ->
        //   StartedSource { name: "kernel", events: rx, detail: "<n> programs attached",
        //                   status: Some(Arc::new(move || serde_json::to_value(sensor.status()))),
        //                   stop: Some(Box::new(move || sensor.shutdown())) }
        // and KernelError (program type not allowed, BTF missing, ...) -> Err(e.to_string()).
        Err("the kernel sensor is not linked into this build yet".into())
    }
}

/// Starts network ingest when `[ingest] enabled`.
struct IngestStarter;

impl SourceStarter for IngestStarter {
    fn name(&self) -> String {
        "ingest".into()
    }

    fn start(
        self: Box<Self>,
        cfg: &Config,
        _metrics: &Arc<Metrics>,
    ) -> Result<Option<StartedSource>, String> {
        if !cfg.ingest_enabled() {
            return Ok(None);
        }
        // INTEGRATION: `sensor::ingest::serve(IngestConfig, Arc<Spool>, shutdown)`: read the spool into an
        // mpsc::Sender<Event> here, count clients in metrics.ingest_clients and bad records in
        // metrics.ingest_rejects, and return its receiver as the StartedSource.
        Err("network ingest is not linked into this build yet".into())
    }
}
