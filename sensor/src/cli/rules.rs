//! `sensor rules check PATH...`: compile every rule in files or folders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use correlator::rules::{parse_rule_file, RuleDef};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Compile every rule in the given files or folders (recursively, `*.toml`).
    Check(CheckArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Every `*.toml` under `paths` (files are taken as given), sorted.
pub fn rule_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v = Vec::new();
            walk(p, &mut v)?;
            v.sort();
            out.extend(v);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(out)
}

/// Loads every rule from `paths`; a file that does not parse is an error naming it.
pub fn load_rules(paths: &[PathBuf]) -> anyhow::Result<Vec<RuleDef>> {
    let mut defs = Vec::new();
    for f in rule_files(paths)? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        defs.extend(parse_rule_file(&text, &f.display().to_string())?);
    }
    Ok(defs)
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Check(args) = cmd;
    let (mut ok, mut failed, mut not_eql) = (0usize, 0usize, 0usize);
    let json = args.format == Format::Json;
    for f in rule_files(&args.paths)? {
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
