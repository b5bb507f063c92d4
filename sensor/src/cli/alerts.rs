use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Placeholder.
    Todo,
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sensor alerts` is not implemented yet")
}
