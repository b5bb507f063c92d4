//! `cargo xtask bench sensor`.
use std::path::Path;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn sensor(_bin: &Path, _args: &Args) -> Result<()> {
    anyhow::bail!("not yet")
}
