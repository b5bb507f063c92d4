//! One module per subcommand: its clap `Args` (or `Command`) and its `run`.

pub mod alerts;
pub mod analytics;
pub mod config;
pub mod coverage;
pub mod events;
pub mod ingest;
pub mod ingest_server;
pub mod query;
pub mod replay;
pub mod rules;
pub mod run;
pub mod status;

/// Logs go to stderr so that stdout stays clean NDJSON.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
