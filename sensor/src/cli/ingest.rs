//! `sensor ingest`: decode a file in a source format and print ECS NDJSON (no daemon needed).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use ingest::{decode_reader, lacks_ecs_category, uncategorized_warning, Format};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Source format: ecs, auditd, eslogger, unifiedlog, osquery, zeek, suricata, mdm, mobile-edr, windows.
    #[arg(long)]
    pub(crate) format: Format,
    /// Input file (`-` for stdin); a `.gz` file is decompressed.
    #[arg(long, default_value = "-")]
    pub(crate) input: PathBuf,
    /// The agent id stamped on every event (`agent.id`).
    #[arg(long, default_value = "local")]
    pub(crate) agent_id: String,
    /// Exit with status 1 when any record was rejected.
    #[arg(long)]
    pub(crate) strict: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f =
            File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        if args.input.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
        } else {
            Box::new(BufReader::new(f))
        }
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut ok, mut bad, mut uncategorized) = (0u64, 0u64, 0u64);
    let check_ecs = args.format == Format::Ecs;
    let mut write_err: Option<std::io::Error> = None;
    let mut stderr = std::io::stderr().lock();
    decode_reader(args.format, &args.agent_id, reader, &mut |r| match r {
        Ok(ev) => {
            ok += 1;
            if check_ecs && lacks_ecs_category(&ev) {
                uncategorized += 1;
            }
            if write_err.is_none() {
                if let Err(e) = serde_json::to_writer(&mut out, &ev.to_json())
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                {
                    write_err = Some(e);
                }
            }
        }
        Err(e) => {
            bad += 1;
            let _ = writeln!(stderr, "rejected: {}: {e}", args.input.display());
        }
    });
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e).context("writing events to stdout");
    }
    let _ = writeln!(
        stderr,
        "{} events decoded, {} records rejected ({})",
        ok, bad, args.format
    );
    if uncategorized > 0 {
        let _ = writeln!(stderr, "warning: {}", uncategorized_warning(uncategorized));
    }
    Ok(if args.strict && bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
