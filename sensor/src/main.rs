use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// eBPF security sensor and streaming correlator.
#[derive(Parser)]
#[command(name = "sensor", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `sensor=debug`.
    #[arg(long, global = true, env = "SENSOR_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: kernel sensor, ingest listeners, correlator, alert store, control API.
    Run(cli::run::Args),
    /// Stream normalised kernel events as NDJSON (root).
    Events(cli::events::Args),
    /// Run one EQL query over a file of events.
    Query(cli::query::Args),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(cli::rules::Command),
    /// Run rules over a file of events and print alerts as NDJSON.
    Replay(cli::replay::Args),
    /// Decode a file in a source format and print ECS NDJSON.
    Ingest(cli::ingest::Args),
    /// Run only the network ingest (listeners, spool, a consumer writing NDJSON): a test harness.
    #[command(name = "ingest-server")]
    IngestServer(cli::ingest_server::Args),
    /// Query and triage alerts in a running daemon.
    #[command(subcommand)]
    Alerts(cli::alerts::Command),
    /// Show what a running daemon is doing.
    Status(cli::status::Args),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(cli::config::Command),
    /// List shipped ATT&CK analytics and their settings.
    #[command(subcommand)]
    Analytics(cli::analytics::Command),
    /// Report ATT&CK coverage of the loaded rules; write a Navigator layer.
    Coverage(cli::coverage::Args),
    /// Internal: the container metadata helper `sensor run` starts before dropping privileges.
    #[command(name = "container-meta-helper", hide = true)]
    ContainerMetaHelper(sensor::daemon::meta_helper::Args),
}

fn main() -> ExitCode {
    // Before anything can create a file: state, spool, store, outputs and sockets are for the
    // daemon's user only (modes are widened explicitly where a setting asks, like `api.socket_mode`).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    sensor::logging::init(&cli.log);
    let result = match cli.command {
        Command::Run(a) => cli::run::run(a),
        Command::Events(a) => cli::events::run(a),
        Command::Query(a) => cli::query::run(a),
        Command::Rules(c) => cli::rules::run(c),
        Command::Replay(a) => cli::replay::run(a),
        Command::Ingest(a) => cli::ingest::run(a),
        Command::IngestServer(a) => cli::ingest_server::run(a),
        Command::Alerts(c) => cli::alerts::run(c),
        Command::Status(a) => cli::status::run(a),
        Command::Config(c) => cli::config::run(c),
        Command::Analytics(c) => cli::analytics::run(c),
        Command::Coverage(a) => cli::coverage::run(a),
        Command::ContainerMetaHelper(a) => sensor::daemon::meta_helper::main(&a)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("container metadata helper: {e}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
