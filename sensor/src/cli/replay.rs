//! `sensor replay`: run rules over a file of events and print alerts as NDJSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use correlator::eql::sequence::SeqLimits;
use correlator::{Detector, RuleSet, RunnerConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Events file.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Rule files or folders.
    #[arg(long, num_args = 1..)]
    pub(crate) rules: Vec<PathBuf>,
    /// Also run the shipped ATT&CK analytics (EQL and stateful detectors); the default without `--rules`.
    #[arg(long)]
    pub(crate) analytics: bool,
    #[command(flatten)]
    pub(crate) analytics_source: super::analytics::Source,
    /// Analytics state file (baselines): loaded when it exists, written at the end.
    #[arg(long)]
    pub(crate) state: Option<PathBuf>,
    /// Input format: ecs (JSON array or NDJSON), auditd, eslogger, unifiedlog, osquery, zeek,
    /// suricata, mdm, mobile-edr, windows (the network ingest decoders; `.gz` inputs are decompressed).
    #[arg(long, default_value = "ecs")]
    pub(crate) format: ingest::Format,
    /// Agent id recorded on decoded events (`agent.id`) for non-ECS formats.
    #[arg(long, default_value = "replay")]
    pub(crate) agent_id: String,
    /// Out-of-order tolerance in milliseconds of event time.
    #[arg(long, default_value_t = 0)]
    pub(crate) lateness_ms: i64,
    /// Most pending partial sequences per rule.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_pending: usize,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let with_analytics = args.analytics || args.rules.is_empty();
    let mut analytics = if with_analytics {
        let set = args.analytics_source.load()?;
        sensor::rules::detectors(&set, args.state.as_deref())?
    } else {
        Vec::new()
    };
    let defs = if args.rules.is_empty() {
        Vec::new()
    } else {
        sensor::rules::load_rule_files(&args.rules)?
    };
    let mut set = RuleSet::new(RunnerConfig {
        lateness_ns: args.lateness_ms.saturating_mul(1_000_000),
        limits: SeqLimits {
            max_pending: args.max_pending,
        },
    });
    let report = set.reload(
        defs.into_iter()
            .filter(|d| d.enabled && d.is_eql())
            .collect(),
    );
    for (id, err) in &report.failed {
        tracing::warn!(rule = %id, error = %err, "rule skipped: does not compile");
    }
    let events = read_input(&args)?;
    if args.format == ingest::Format::Ecs {
        let n = events
            .iter()
            .filter(|e| ingest::lacks_ecs_category(e))
            .count() as u64;
        if n > 0 {
            eprintln!("warning: {}", ingest::uncategorized_warning(n));
        }
    }
    let progress = sensor::metrics::progress::Progress::items("replay", events.len() as u64);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut alerts = Vec::new();
    let mut watermark = i64::MIN;
    let mut last_ts = i64::MIN;
    for ev in &events {
        set.on_event(ev, &mut alerts);
        for d in &mut analytics {
            d.on_event(ev, &mut alerts);
        }
        // Analytics see event time advance once per second of it (flow lifetimes, window expiry).
        last_ts = last_ts.max(ev.timestamp_ns);
        if last_ts >= watermark.saturating_add(1_000_000_000) {
            watermark = last_ts;
            for d in &mut analytics {
                d.on_watermark(watermark, &mut alerts);
            }
        }
        for a in alerts.drain(..) {
            writeln!(w, "{}", serde_json::to_string(&a)?)?;
        }
        progress.inc(1);
    }
    progress.finish();
    set.flush(&mut alerts);
    // End of input is not the end of time: analytics get the last event time, not infinity.
    if last_ts > i64::MIN {
        for d in &mut analytics {
            d.on_watermark(last_ts, &mut alerts);
        }
    }
    if let Some(p) = &args.state {
        sensor::rules::save_state(analytics.iter().map(|d| d.as_ref()), p)?;
    }
    for a in alerts.drain(..) {
        writeln!(w, "{}", serde_json::to_string(&a)?)?;
    }
    w.flush()?;
    let st = set.stats();
    tracing::info!(
        rules = set.len(),
        analytics_detectors = analytics.len(),
        events = st.events,
        alerts = st.alerts,
        late = st.late,
        evicted = st.evicted,
        "replay done"
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads the input: ECS through the JSON reader (array or NDJSON), other formats through the
/// ingest decoders. Rejected records are reported on stderr with their line and reason, and counted.
fn read_input(args: &Args) -> anyhow::Result<Vec<correlator::Event>> {
    use anyhow::Context;
    use std::io::BufRead;
    if args.format == ingest::Format::Ecs && args.input.extension().is_none_or(|e| e != "gz") {
        return super::query::read_events(&args.input);
    }
    let f = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let reader: Box<dyn BufRead> = if args.input.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        )))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut events = Vec::new();
    let mut rejected = 0u64;
    ingest::decode_reader(args.format, &args.agent_id, reader, &mut |r| match r {
        Ok(ev) => events.push(ev),
        Err(e) => {
            rejected += 1;
            eprintln!("{}: {e}", args.input.display());
        }
    });
    if rejected > 0 {
        tracing::warn!(
            rejected,
            decoded = events.len(),
            "some records were rejected by the decoder"
        );
    }
    Ok(events)
}
