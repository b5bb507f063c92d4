//! `sensor events`: stream normalised kernel events as NDJSON on stdout.
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use sensor_kernel::{KernelConfig, KernelSensor};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Stop after this long (e.g. `10s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Stop after this many events.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Ring buffer size in bytes (a power of two, at least 4096).
    #[arg(long)]
    pub(crate) ring_buffer_bytes: Option<u32>,
    /// Capacity of the queue between the ring buffer reader and the output.
    #[arg(long)]
    pub(crate) queue_capacity: Option<usize>,
    /// Print the kernel sensor status (events and losses per kind) as JSON on stderr at the end.
    #[arg(long)]
    pub(crate) status: bool,
    /// Attach only these kernel programs (comma-separated, e.g. `sys_enter_socket`); default all.
    #[arg(long, value_delimiter = ',')]
    pub(crate) programs: Vec<String>,
    /// Only print events of these process ids (actor or, for fork, parent); repeatable.
    #[arg(long = "pid")]
    pub(crate) pids: Vec<i64>,
    /// Podman's API socket, where container labels are read (default /run/podman/podman.sock).
    #[arg(long)]
    pub(crate) podman_socket: Option<std::path::PathBuf>,
    /// No container identity: the kernel programs do not read the cgroup id and nothing is
    /// resolved (the "without" side of the container-identity benchmark).
    #[arg(long)]
    pub(crate) no_containers: bool,
    /// Benchmarks only: attach the reference probe (`floor_socket`) instead of the sensor and
    /// count its records; prints nothing on stdout.
    #[arg(long, hide = true)]
    pub(crate) floor_probe: bool,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "unknown duration unit `{u}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    // One thread: the ring buffer reader and the printer hand events over in the same cache, and
    // the other core stays with the workload.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(stream(args))
}

// Over 100 lines on purpose: setup, signal handling and the batching write loop of one command share the queue and the buffers.
async fn stream(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = KernelConfig {
        status_log_interval_s: 0,
        ..KernelConfig::default()
    };
    if let Some(b) = args.ring_buffer_bytes {
        cfg.ring_buffer_bytes = b;
    }
    cfg.programs.clone_from(&args.programs);
    if let Some(q) = args.queue_capacity {
        cfg.queue_capacity = q;
    }
    if let Some(p) = &args.podman_socket {
        cfg.containers.podman_socket.clone_from(p);
    }
    if args.no_containers {
        cfg.containers.enabled = false;
    }
    use tokio::signal::unix::{signal, SignalKind};
    // Registered once, before the "attached" line, so that no SIGINT/SIGTERM is missed.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    if args.floor_probe {
        let stop = async {
            tokio::select! {
                () = sleep_until(args.duration.map(|d| tokio::time::Instant::now() + d)) => {}
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        };
        let n = sensor_kernel::floor_probe(cfg.ring_buffer_bytes, stop, || {
            eprintln!("sensor events: attached 1 programs");
        })
        .await?;
        if args.status {
            eprintln!("{}", serde_json::json!({"events": {"socket": n}}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (mut sensor, mut rx) = KernelSensor::start(&cfg).await?;
    // Tell a waiting caller (tests, scripts) that the programs are attached.
    eprintln!(
        "sensor events: attached {} programs",
        sensor.status().attached.len()
    );
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut out = std::io::stdout().lock();
    let n = std::cell::Cell::new(0u64);
    let pid_field = correlator::Field::intern("process.pid");
    let ppid_field = correlator::Field::intern("process.parent.pid");
    let action_field = correlator::Field::intern("event.action");
    let filter = |ev: &correlator::Event| -> bool {
        if args.pids.is_empty() {
            return true;
        }
        let is_fork = ev.get(action_field).and_then(correlator::Value::as_str) == Some("fork");
        let f = if is_fork { ppid_field } else { pid_field };
        ev.get(f)
            .and_then(correlator::Value::as_i64)
            .is_some_and(|p| args.pids.contains(&p))
    };
    // Events are taken from the queue in batches and written straight into one buffer (no JSON
    // tree per event), which goes to stdout when it is large or the queue is empty.
    const BATCH: usize = 1024;
    const FLUSH_BYTES: usize = 1 << 16;
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut batch: Vec<correlator::Event> = Vec::with_capacity(BATCH);
    let limit = args.count;
    let done = || limit.is_some_and(|c| n.get() >= c);
    let emit = |ev: &correlator::Event, buf: &mut Vec<u8>| -> bool {
        if done() {
            return false;
        }
        if filter(ev) {
            ev.write_json(buf);
            buf.push(b'\n');
            n.set(n.get() + 1);
        }
        true
    };
    let write_out = |buf: &mut Vec<u8>, out: &mut std::io::StdoutLock<'_>| -> bool {
        let ok = out.write_all(buf).and_then(|()| out.flush()).is_ok();
        buf.clear();
        ok
    };
    let mut stdout_open = true;
    let mut drain_rest = true;
    'outer: loop {
        if done() {
            drain_rest = false;
            break;
        }
        batch.clear();
        let got = tokio::select! {
            k = rx.recv_many(&mut batch, BATCH) => k,
            () = sleep_until(deadline) => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        if got == 0 {
            break; // the sensor stopped
        }
        for ev in &batch {
            if !emit(ev, &mut buf) {
                drain_rest = false;
                break 'outer;
            }
        }
        if (buf.len() >= FLUSH_BYTES || rx.is_empty()) && !write_out(&mut buf, &mut out) {
            stdout_open = false;
            break;
        }
    }
    // Stop the sensor. When the rest is wanted it hands over everything still in the ring buffer
    // (waiting for the queue to have room) and this prints it, so that every event counted as
    // delivered is printed and nothing the kernel produced is dropped at the end.
    if drain_rest && stdout_open {
        sensor.finish();
        'rest: loop {
            batch.clear();
            if rx.recv_many(&mut batch, BATCH).await == 0 {
                break; // the reader is done
            }
            for ev in &batch {
                if !emit(ev, &mut buf) {
                    break 'rest;
                }
            }
            if buf.len() >= FLUSH_BYTES && !write_out(&mut buf, &mut out) {
                stdout_open = false;
                break;
            }
        }
    }
    // Whatever is still queued is not wanted any more: the reader counts the rest as lost.
    drop(rx);
    let status = sensor.shutdown_with_status().await;
    if stdout_open {
        write_out(&mut buf, &mut out);
    }

    drop(out);
    if args.status {
        eprintln!("{}", serde_json::to_string(&status)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
