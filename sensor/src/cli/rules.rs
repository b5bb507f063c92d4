//! `sensor rules check PATH...`: compile every rule in files or folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use correlator::rules::parse_rule_file;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Compile every rule in the given files or folders (recursively, `*.toml`).
    Check(CheckArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Check(args) = cmd;
    let (mut ok, mut failed, mut not_eql) = (0usize, 0usize, 0usize);
    let json = args.format == Format::Json;
    for f in sensor::rules::rule_files(&args.paths)? {
        let path = f.display().to_string();
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {path}"))?;
        let defs = match parse_rule_file(&text, &path) {
            Ok(d) => d,
            Err(e) => {
                failed += 1;
                report(json, &path, None, false, Some(&e.to_string()), false);
                continue;
            }
        };
        for d in defs {
            match d.compile() {
                Ok(_) => {
                    ok += 1;
                    report(json, &path, Some(&d.meta.name), true, None, false);
                }
                Err(e) if e.is_not_eql() => {
                    not_eql += 1;
                    report(
                        json,
                        &path,
                        Some(&d.meta.name),
                        false,
                        Some(&e.to_string()),
                        true,
                    );
                }
                Err(e) => {
                    failed += 1;
                    report(
                        json,
                        &path,
                        Some(&d.meta.name),
                        false,
                        Some(&e.to_string()),
                        false,
                    );
                }
            }
        }
    }
    eprintln!("{ok} rules compile, {failed} fail, {not_eql} not EQL (skipped)");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn report(
    json: bool,
    path: &str,
    name: Option<&str>,
    ok: bool,
    error: Option<&str>,
    skipped: bool,
) {
    if json {
        let mut v = serde_json::json!({"path": path, "name": name, "ok": ok, "error": error});
        if skipped {
            v["skipped"] = true.into();
        }
        println!("{v}");
    } else if ok {
        println!("ok    {path}: {}", name.unwrap_or(""));
    } else if skipped {
        println!("skip  {}", error.unwrap_or(""));
    } else {
        println!("FAIL  {}", error.unwrap_or(""));
    }
}
