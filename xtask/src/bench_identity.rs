//! `cargo xtask bench sensor --identity`: the socket storm with container identity on and off,
//! side by side (issue #14: "within 1 point of the same build without it, and the BPF run time
//! per event for both").
//!
//! One build, two configurations of it: `sensor events` (identity on: the lifecycle programs read
//! the cgroup id, userspace resolves cgroups to containers) and `sensor events --no-containers`
//! (the loader sets the object's `CGROUP_IDS` global to 0, so the verifier drops the helper call,
//! and nothing is resolved). Each run does the bare storm, then both configurations in an order
//! that alternates from run to run, so that drift of the machine falls on both alike. The kernel's
//! own run-time counters (`kernel.bpf_stats_enabled`, switched on for the bench and restored after)
//! give the BPF cost per program run, which machine noise hardly moves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bench::{fastest, lost_total, median, ns_per_op, socket_storm, Sensor};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Programs whose run time is reported (the storm's own, and those that carry the cgroup id).
const PROGRAMS: [&str; 4] = [
    "sys_enter_socket",
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct StatsOn(String);

impl StatsOn {
    fn new() -> Result<StatsOn> {
        let before = std::fs::read_to_string(STATS).with_context(|| format!("reading {STATS}"))?;
        std::fs::write(STATS, "1").with_context(|| format!("writing {STATS}"))?;
        Ok(StatsOn(before.trim().to_string()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, &self.0);
    }
}

/// Run count and run time per program, summed over runs.
type Pooled = BTreeMap<String, (u64, u64)>;

fn add_stats(into: &mut Pooled, status: &serde_json::Value) {
    let Some(m) = status["program_stats"].as_object() else {
        return;
    };
    for (name, v) in m {
        let e = into.entry(name.clone()).or_default();
        e.0 += v["run_count"].as_u64().unwrap_or(0);
        e.1 += v["run_time_ns"].as_u64().unwrap_or(0);
    }
}

fn per_run(p: &Pooled, name: &str) -> String {
    match p.get(name) {
        Some(&(n, t)) if n > 0 => format!("{:.0} ({n} runs)", t as f64 / n as f64),
        _ => "-".into(),
    }
}

/// BPF time of all programs over the storm's socket events.
fn per_event(p: &Pooled, events: u64) -> String {
    let t: u64 = p.values().map(|v| v.1).sum();
    if events == 0 {
        return "-".into();
    }
    format!("{:.0}", t as f64 / events as f64)
}

pub(crate) fn run(bin: &Path, runs: usize, ops: u64, out: Option<PathBuf>) -> Result<()> {
    let _stats = StatsOn::new()?;
    let names = ["identity on", "identity off"];
    let flags: [&[&str]; 2] = [&[], &["--no-containers"]];
    let mut bare = Vec::new();
    let mut times = [Vec::new(), Vec::new()];
    let mut pooled = [Pooled::new(), Pooled::new()];
    let mut lost = [0u64; 2];
    for run in 0..runs {
        eprintln!("bench identity: run {} / bare", run + 1);
        bare.push(ns_per_op(socket_storm(ops), ops));
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            eprintln!("bench identity: run {} / {}", run + 1, names[i]);
            let s = Sensor::start(bin, flags[i])?;
            let d = socket_storm(ops);
            let status = s.stop()?;
            times[i].push(ns_per_op(d, ops));
            add_stats(&mut pooled[i], &status);
            lost[i] += lost_total(&status);
        }
    }
    let base = median(&mut bare.clone());
    let base_min = fastest(&bare);
    let mut report = format!(
        "| configuration | ns/op (median) | overhead | ns/op (fastest) | overhead (fastest) | lost |\n| --- | --- | --- | --- | --- | --- |\n| no sensor | {base:.0} | - | {base_min:.0} | - | - |\n"
    );
    let mut over = [0f64; 2];
    for i in 0..2 {
        let m = median(&mut times[i].clone());
        let f = fastest(&times[i]);
        over[i] = (m / base - 1.0) * 100.0;
        report.push_str(&format!(
            "| {} | {m:.0} | {:+.1}% | {f:.0} | {:+.1}% | {} |\n",
            names[i],
            over[i],
            (f / base_min - 1.0) * 100.0,
            lost[i]
        ));
    }
    report.push_str(&format!(
        "\nWith minus without: {:+.1} points (median overheads).\n\nBPF run time (`kernel.bpf_stats_enabled`), ns per program run, pooled over the runs:\n\n| program | identity on | identity off |\n| --- | --- | --- |\n",
        over[0] - over[1]
    ));
    for p in PROGRAMS {
        report.push_str(&format!(
            "| `{p}` | {} | {} |\n",
            per_run(&pooled[0], p),
            per_run(&pooled[1], p)
        ));
    }
    let events = ops * runs as u64;
    report.push_str(&format!(
        "| all programs, ns per socket event | {} | {} |\n",
        per_event(&pooled[0], events),
        per_event(&pooled[1], events)
    ));
    let cmd = format!("cargo xtask bench sensor --identity --runs {runs} --socket-ops {ops}");
    let text = format!("Command: `{cmd}`\n\nSocket storm ({ops} ops per run, {runs} runs, order alternating), container identity on vs off:\n\n{report}");
    let out = out.unwrap_or_else(|| crate::root().join("target/bench-identity.md"));
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!("written to {}", out.display());
    Ok(())
}
