//! `sensor coverage`: which ATT&CK analytics, detection strategies and techniques the loaded rules cover,
//! which data components the configured sources provide, and an ATT&CK Navigator layer (format 4.5).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use correlator::analytics::needs::{self, BranchCoverage, Seen};
use correlator::analytics::Analytic;
use correlator::attack::{self, Catalog};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// ATT&CK STIX data: a 2.0/2.1 bundle or per-object JSON file (repeatable, e.g. enterprise and mobile).
    #[arg(long)]
    pub(crate) attack: Vec<PathBuf>,
    /// Write an ATT&CK Navigator layer (format 4.5) for `--domain` to this file.
    #[arg(long)]
    pub(crate) navigator: Option<PathBuf>,
    /// ATT&CK domain of the Navigator layer.
    #[arg(long, default_value = "enterprise-attack")]
    pub(crate) domain: String,
    /// ATT&CK version written into the layer (default: taken from the bundle file name, else 18).
    #[arg(long)]
    pub(crate) attack_version: Option<String>,
    /// Sources this deployment receives (comma separated); default: all the sensor knows
    /// (kernel, auditd, eslogger, unifiedlog, osquery, zeek, suricata, mdm, mobile-edr, ecs, windows).
    #[arg(long, value_delimiter = ',')]
    pub(crate) sources: Vec<String>,
    /// A recording as ECS NDJSON (`sensor ingest` output, `.gz` read too): judge every analytic
    /// branch against the sources and fields it carries (and, without `--sources`, against its
    /// sources only).
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) source: super::analytics::Source,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let set = args.source.load()?;
    let mut catalog = Catalog::default();
    for p in &args.attack {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading ATT&CK data {}", p.display()))?;
        catalog
            .add_json(&text)
            .with_context(|| format!("in {}", p.display()))?;
    }
    let known = attack::known_sources();
    let seen = args.events.as_deref().map(read_events).transpose()?;
    let sources: Vec<String> = if let (true, Some(seen)) = (args.sources.is_empty(), &seen) {
        seen.sources.iter().cloned().collect()
    } else if args.sources.is_empty() {
        known.iter().map(|s| (*s).to_string()).collect()
    } else {
        for s in &args.sources {
            anyhow::ensure!(
                known.contains(&s.as_str()),
                "unknown source `{s}` (known: {})",
                known.join(", ")
            );
        }
        args.sources.clone()
    };
    let rules: Vec<(&Analytic, bool)> = set
        .entries
        .iter()
        .map(|e| (&e.analytic, e.enabled))
        .collect();
    let cov = attack::coverage(&catalog, &rules, &sources);
    let branches: Vec<BranchCoverage> = set
        .entries
        .iter()
        .flat_map(|e| {
            needs::judge(
                &e.analytic.meta.id,
                e.enabled,
                &e.analytic.needs,
                &sources,
                seen.as_ref(),
            )
        })
        .collect();
    if args.json {
        let mut doc = serde_json::to_value(&cov)?;
        if let Some(m) = doc.as_object_mut() {
            m.insert("branches".into(), serde_json::to_value(&branches)?);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_report(&cov, &catalog, args.attack.is_empty());
        print_branches(&branches, args.events.as_deref());
    }
    if let Some(out) = &args.navigator {
        let version = args
            .attack_version
            .clone()
            .unwrap_or_else(|| version_from_names(&args.attack));
        let layer = attack::navigator_layer(&cov, &args.domain, &version);
        let problems = attack::validate_layer(&layer);
        anyhow::ensure!(
            problems.is_empty(),
            "internal error: the layer does not validate: {problems:?}"
        );
        std::fs::write(out, serde_json::to_vec_pretty(&layer)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote Navigator layer {} ({} technique entries, domain {}, ATT&CK {version}, layer 4.5)",
            out.display(),
            layer["techniques"].as_array().map_or(0, Vec::len),
            args.domain
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `enterprise-attack-18.1-detection.json` -> `18`.
fn version_from_names(paths: &[PathBuf]) -> String {
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for part in name.split(['-', '_']) {
            let major: String = part.chars().take_while(char::is_ascii_digit).collect();
            if !major.is_empty() && part[major.len()..].starts_with('.') {
                return major;
            }
        }
    }
    "18".to_string()
}

fn print_report(cov: &attack::Coverage, catalog: &Catalog, no_bundle: bool) {
    if no_bundle {
        println!("(no --attack data given: ids are the rules' own, unchecked)\n");
    }
    println!("Analytics ({}):", cov.analytics.len());
    for a in &cov.analytics {
        println!(
            "  {:<38} {} strategy {} techniques {}{}",
            a.rule_id,
            if a.enabled { "covered " } else { "disabled" },
            a.strategy.as_deref().unwrap_or("-"),
            a.techniques.join(","),
            if a.in_attack_data {
                "  [in ATT&CK data]"
            } else {
                ""
            }
        );
        for d in &a.data_components {
            println!(
                "      {} {:<28} {:<20} {}",
                d.id.as_deref().unwrap_or("-----"),
                d.name.as_deref().unwrap_or("?"),
                d.log_source,
                if d.provided_by.is_empty() {
                    "NOT provided by the configured sources".to_string()
                } else {
                    format!("provided by {}", d.provided_by.join(", "))
                }
            );
        }
        for p in &a.problems {
            println!("      ! {p}");
        }
    }
    println!("\nDetection strategies ({}):", cov.strategies.len());
    for s in &cov.strategies {
        println!(
            "  {} {}: analytics covered {}/{} ({}){}",
            s.id,
            s.name,
            s.covered.len(),
            s.analytics.len().max(s.covered.len()),
            s.analytics
                .iter()
                .map(|a| if s.covered.contains(a) {
                    format!("{a} covered")
                } else {
                    format!("{a} not covered")
                })
                .collect::<Vec<_>>()
                .join(", "),
            if s.techniques.is_empty() {
                String::new()
            } else {
                format!("; detects {}", s.techniques.join(", "))
            }
        );
    }
    println!("\nTechniques ({}):", cov.techniques.len());
    for t in &cov.techniques {
        println!(
            "  {:<10} {:<40} [{}] by {}",
            t.id,
            t.name,
            t.tactics.join(", "),
            t.rules.join(", ")
        );
    }
    println!("\nSources: {}", cov.sources.join(", "));
    println!(
        "Data components they provide: {}",
        cov.provided_data_components.join(", ")
    );
    if !catalog.analytics.is_empty() {
        println!(
            "ATT&CK data: {} analytics, {} strategies, {} techniques, {} data components ({})",
            catalog.analytics.len(),
            catalog.strategies.len(),
            catalog.techniques.len(),
            catalog.data_components.len(),
            catalog
                .domains
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// The sources and fields of a recording of ECS events, one JSON object a line.
fn read_events(path: &Path) -> anyhow::Result<Seen> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        )))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut seen = Seen::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not an ECS JSON event", path.display(), i + 1))?;
        seen.add(&ev);
    }
    Ok(seen)
}

/// Per analytic branch: what it needs, and whether the sources (and the recording) provide it.
fn print_branches(branches: &[BranchCoverage], events: Option<&Path>) {
    println!(
        "\nBranches ({}): what each needs and who provides it",
        branches.len()
    );
    for b in branches {
        let verdict = match (b.provided, b.in_recording) {
            (_, Some(false)) => "LACKS INPUT in the recording",
            (false, _) => "NOT provided by the configured sources",
            (true, Some(true)) => "provided (the recording has its inputs)",
            (true, None) => "provided",
        };
        println!(
            "  {}/{}{}{}: {verdict}",
            b.analytic,
            b.detect,
            b.branch
                .as_deref()
                .map(|x| format!(" [{x}]"))
                .unwrap_or_default(),
            if b.enabled { "" } else { " (disabled)" },
        );
        for i in &b.inputs {
            let by = if i.provided_by.is_empty() {
                format!("needs one of {}: none configured", i.sources.join(", "))
            } else {
                format!("provided by {}", i.provided_by.join(", "))
            };
            println!("      - {}: {by}", i.what);
            if let (Some(srcs), Some(lacks)) = (&i.recording_sources, &i.recording_lacks) {
                if srcs.is_empty() {
                    println!(
                        "          the recording has no {} events",
                        i.sources.join(" / ")
                    );
                } else if !lacks.is_empty() {
                    println!("          the recording never carries {}", lacks.join(", "));
                }
            }
        }
        if let Some(n) = &b.note {
            println!("      note: {n}");
        }
    }
    if let Some(p) = events {
        println!("(judged against the recording {})", p.display());
    }
}
