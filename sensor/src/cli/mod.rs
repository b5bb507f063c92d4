//! One module per subcommand: its clap `Args` (or `Command`) and its `run`. Part of the `sensor`
//! binary, not of the library: library code cannot import the CLI.

pub(crate) mod alerts;
pub(crate) mod analytics;
pub(crate) mod config;
pub(crate) mod coverage;
pub(crate) mod events;
pub(crate) mod ingest;
pub(crate) mod ingest_server;
pub(crate) mod query;
pub(crate) mod replay;
pub(crate) mod rules;
pub(crate) mod run;
pub(crate) mod status;
