use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Placeholder.
    Todo,
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sensor config` is not implemented yet")
}
