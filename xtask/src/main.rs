//! `cargo xtask`: setup, build of the eBPF object, run, test, bench.
use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
enum Cmd {
    /// Install the toolchain.
    Setup,
}

fn main() -> Result<()> {
    match Cmd::parse() {
        Cmd::Setup => Ok(()),
    }
}
