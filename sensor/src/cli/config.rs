use std::path::PathBuf;
use std::process::ExitCode;

use sensor::config::{Config, DEFAULT_TOML};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Print the documented default configuration (what `sensor run` uses without --config).
    Default,
    /// Check a configuration file: syntax, unknown keys, values. Exit status 1 when it is invalid.
    Check {
        /// The file to check.
        file: PathBuf,
        /// Print the effective configuration (defaults filled in) as TOML.
        #[arg(long)]
        show: bool,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Default => {
            print!("{DEFAULT_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file, show } => match Config::load(&file) {
            Ok(cfg) => {
                if show {
                    print!("{}", toml::to_string_pretty(&cfg)?);
                }
                eprintln!(
                    "{}: ok (kernel sensor {}, network ingest {}, {} file source(s), store {}, control socket {})",
                    file.display(),
                    if cfg.kernel_enabled() { "on" } else { "off" },
                    if cfg.ingest_enabled() { "on" } else { "off" },
                    cfg.sources.file.len(),
                    cfg.store_path().display(),
                    cfg.api.socket.display(),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
