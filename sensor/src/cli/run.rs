use std::path::PathBuf;

use anyhow::Context;
use std::process::ExitCode;

use sensor::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration file (default: the embedded default, see `sensor config default`).
    #[arg(long, short, env = "SENSOR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    // The listeners' connection caps, not the soft open-files limit, should bound them.
    match ingest::edge::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sensor")
        .build()?;
    rt.block_on(sensor::daemon::run(
        cfg,
        args.config,
        sensor::daemon::live::default_seams(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
