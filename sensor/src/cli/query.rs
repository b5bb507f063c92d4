//! `sensor query`: run one EQL query over a file of events (JSON array or NDJSON).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use correlator::eql::{batch, compile, Dialect, Options};
use correlator::Event;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub(crate) enum DialectArg {
    #[default]
    Elastic,
    Endgame,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The EQL query.
    #[arg(long)]
    pub(crate) eql: String,
    /// Events: a JSON array or NDJSON (one ECS document per line).
    #[arg(long)]
    pub(crate) input: PathBuf,
    #[arg(long, value_enum, default_value_t = DialectArg::Elastic)]
    pub(crate) dialect: DialectArg,
    /// Make `==`, `in` and string functions case-insensitive.
    #[arg(long)]
    pub(crate) case_insensitive: bool,
}

/// Reads events from a JSON array or NDJSON file; errors name the line (NDJSON) or the array index.
pub(crate) fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_events(&text).with_context(|| format!("in {}", path.display()))
}

pub(crate) fn parse_events(text: &str) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    if text.trim_start().starts_with('[') {
        let docs: Vec<serde_json::Value> =
            serde_json::from_str(text).context("not a valid JSON array of events")?;
        for (i, d) in docs.iter().enumerate() {
            let mut ev = Event::from_json(d).with_context(|| format!("event #{i}"))?;
            ev.raw = Some(Arc::from(d.to_string()));
            out.push(ev);
        }
        return Ok(out);
    }
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let d: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("line {}: not valid JSON", n + 1))?;
        let mut ev = Event::from_json(&d).with_context(|| format!("line {}", n + 1))?;
        ev.raw = Some(Arc::from(line));
        out.push(ev);
    }
    Ok(out)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = Options {
        dialect: match args.dialect {
            DialectArg::Elastic => Dialect::Elastic,
            DialectArg::Endgame => Dialect::Endgame,
        },
        case_insensitive: args.case_insensitive,
    };
    let query = compile(&args.eql, &opts).map_err(|e| anyhow::anyhow!("invalid query: {e}"))?;
    let mut events = read_events(&args.input)?;
    if query.is_sequence() {
        // Sequences are ordered by event time (stable: equal times keep file order).
        events.sort_by_key(|e| e.timestamp_ns);
    }
    let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
    let results = batch::run(&query, &events);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for r in &results {
        writeln!(w, "{}", r.to_json(query.is_sequence()))?;
    }
    w.flush()?;
    tracing::debug!(matches = results.len(), events = events.len(), "query done");
    Ok(ExitCode::SUCCESS)
}
