//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/`, built once and run for a bounded time,
//! seeded from the third-party corpora in `../shared/corpora`. Any crash, hang, OOM or leak fails
//! the run with the target's name and the path of the input that caused it.
//!
//! Build-time choices (a cold build of the fuzz crate compiles the `ingest` crate and its
//! dependencies with coverage instrumentation, on CI's two cores):
//! - `--sanitizer none`: the fuzzed code (decoders, HTTP body handling, auditd framing) is safe
//!   Rust without a line of `unsafe`, and its dependencies on that path (serde_json, flate2's
//!   Rust backend, zstd and brotli decoders) are fuzzed upstream; AddressSanitizer would find
//!   nothing a panic does not report, while it instruments every crate and slows every run. The
//!   coverage instrumentation (sancov) that guides libFuzzer stays on, and so do debug assertions.
//! - one `cargo fuzz build` for every target: the dependency graph is compiled once.
//! - the targets then run side by side, one per core (each libFuzzer process is single-threaded,
//!   so every target still gets a whole core for its time budget).
//! - the fuzz crate's `release` profile (fuzz/Cargo.toml) trades peak speed for build time:
//!   `opt-level = 1`, no debug info, 16 codegen units.
//! - the targets' own `target/` directory (under `$CARGO_TARGET_DIR` when it is set): the
//!   instrumentation flags differ from the workspace's, so nothing could be shared with it anyway.
//!
//! cargo-fuzz passes unstable `-Z`/`-C llvm-args` flags to rustc; the stable toolchain accepts
//! them with `RUSTC_BOOTSTRAP=1`, as `build-ebpf` does for aya-ebpf.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{check, root};

/// The cargo-fuzz release `setup` installs (`cargo install --locked`).
pub(crate) const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds each target runs when `SENSOR_FUZZ_SECS` is not set.
const DEFAULT_SECS: u64 = 20;
/// Seeds are cut at line boundaries into pieces of at most this size (libFuzzer mutates small
/// inputs far faster than whole log files).
const SEED_BYTES: usize = 8 << 10;
/// The longest input libFuzzer generates.
const MAX_LEN: usize = 16 << 10;
/// Most bytes read from one compressed corpus file.
const GZ_BYTES: u64 = 256 << 10;

fn cargo_bin() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// True when `cargo fuzz` answers with the pinned version.
pub(crate) fn cargo_fuzz_ok() -> bool {
    Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        })
}

/// Installs cargo-fuzz (setup calls this only when [`cargo_fuzz_ok`] is false).
pub(crate) fn install_cargo_fuzz() -> Result<()> {
    eprintln!(
        "setup: cargo install --locked cargo-fuzz {CARGO_FUZZ_VERSION} (for `cargo xtask fuzz`)"
    );
    check(
        Command::new(cargo_bin()).args([
            "install",
            "--locked",
            "--quiet",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
        "cargo install cargo-fuzz",
    )?;
    if !cargo_fuzz_ok() {
        bail!(
            "cargo-fuzz installed but `cargo fuzz --version` does not answer {CARGO_FUZZ_VERSION}"
        );
    }
    Ok(())
}

/// Where the fuzz targets are built and their corpora, seeds and crash artifacts kept: never in
/// the source tree (the seeds are third-party data).
fn fuzz_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("fuzz"),
        _ => root().join("fuzz/target"),
    }
}

fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host triple")
}

/// The targets: one per `fuzz/fuzz_targets/*.rs`.
fn all_targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            if let Some(stem) = p.file_stem() {
                out.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The seconds each target runs: `SENSOR_FUZZ_SECS`, default 20.
fn secs_per_target() -> Result<u64> {
    match std::env::var("SENSOR_FUZZ_SECS") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| {
                format!("SENSOR_FUZZ_SECS must be a positive number of seconds, found `{s}`")
            }),
        Err(_) => Ok(DEFAULT_SECS),
    }
}

/// The targets asked for (all when `only` is empty), checked against `fuzz/fuzz_targets`.
fn chosen_targets(only: &[String]) -> Result<Vec<String>> {
    let all = all_targets()?;
    for t in only {
        if !all.contains(t) {
            bail!("no fuzz target `{t}` (targets: {})", all.join(", "));
        }
    }
    Ok(if only.is_empty() { all } else { only.to_vec() })
}

/// `cargo fuzz build` of the chosen targets (one build for all of them).
fn build_command(only: &[String], dir: &Path, triple: &str) -> Command {
    let mut build = Command::new(cargo_bin());
    build
        .current_dir(root())
        .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
        .args(["--target", triple])
        .arg("--target-dir")
        .arg(dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    if only.len() == 1 {
        build.arg(&only[0]);
    }
    build
}

/// Builds every target and runs each for `SENSOR_FUZZ_SECS` (default 20) seconds.
pub(crate) fn fuzz(only: &[String]) -> Result<()> {
    let secs = secs_per_target()?;
    if !cargo_fuzz_ok() {
        install_cargo_fuzz()?;
    }
    let targets = chosen_targets(only)?;
    let dir = fuzz_target_dir();
    let triple = host_triple()?;
    let started = Instant::now();
    check(&mut build_command(only, &dir, &triple), "cargo fuzz build")?;
    eprintln!(
        "fuzz: built {} targets in {:.0} s",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    run_targets(&targets, &dir, &triple, secs, started)
}

/// The fuzz build of every target, started at the lowest CPU priority while something else
/// runs (`cargo xtask test` starts it before the test binaries, which spend most of their
/// time waiting on daemons, servers and the kernel: the build takes the idle CPU and yields
/// it whenever a test wants it).
pub(crate) struct BackgroundBuild {
    child: std::process::Child,
    log: PathBuf,
    dir: PathBuf,
    triple: String,
    started: Instant,
}

impl BackgroundBuild {
    pub(crate) fn start() -> Result<Self> {
        secs_per_target()?;
        if !cargo_fuzz_ok() {
            install_cargo_fuzz()?;
        }
        let dir = fuzz_target_dir();
        let triple = host_triple()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("xtask-fuzz-build.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let build = build_command(&[], &dir, &triple);
        // The same command under `nice -n 19`; rustc and the linker inherit the priority.
        let mut niced = Command::new("nice");
        niced.current_dir(root()).args(["-n", "19"]);
        niced.arg(build.get_program()).args(build.get_args());
        for (k, v) in build.get_envs() {
            match v {
                Some(v) => niced.env(k, v),
                None => niced.env_remove(k),
            };
        }
        let child = niced
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting `nice -n 19 cargo fuzz build`")?;
        eprintln!(
            "fuzz: building the targets in the background (log {})",
            log.display()
        );
        Ok(Self {
            child,
            log,
            dir,
            triple,
            started: Instant::now(),
        })
    }

    /// Waits for the build, then runs every target.
    pub(crate) fn run_all(mut self) -> Result<()> {
        let status = self.child.wait().context("waiting for cargo fuzz build")?;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            bail!(
                "cargo fuzz build failed ({status}); log {}:\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let targets = chosen_targets(&[])?;
        eprintln!(
            "fuzz: {} targets built in the background, ready {:.0} s after it started",
            targets.len(),
            self.started.elapsed().as_secs_f64()
        );
        run_targets(
            &targets,
            &self.dir,
            &self.triple,
            secs_per_target()?,
            Instant::now(),
        )
    }

    /// Stops the build (the tests failed: no fuzzing follows).
    pub(crate) fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs each built target for `secs` seconds, side by side, and fails naming every target that
/// crashed and the input it saved.
fn run_targets(
    targets: &[String],
    dir: &Path,
    triple: &str,
    secs: u64,
    started: Instant,
) -> Result<()> {
    let corpora = root().join("../shared/corpora");
    let seeds = collect_seeds(&corpora)?;
    let work = dir.join("xtask-fuzz");
    // Targets run side by side, one per core: each fuzzer is single-threaded, so a target gets
    // the same CPU for its `secs` as when they ran one after another, and the phase takes
    // 1/cores of the wall time.
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let mut failures = Vec::new();
    for batch in targets.chunks(jobs) {
        let mut running = Vec::with_capacity(batch.len());
        for t in batch {
            running.push(start_target(t, dir, triple, &work, &seeds, secs)?);
        }
        for run in running {
            if let Some(failure) = run.finish()? {
                failures.push(failure);
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "fuzzing found {} failing target(s) (reproduce with `cargo fuzz run --sanitizer none TARGET INPUT`):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    eprintln!(
        "fuzz: {} targets, {secs} s each, no crash ({:.0} s in all)",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One fuzz target running: what `finish` needs to judge it.
struct Running {
    target: String,
    child: std::process::Child,
    log: PathBuf,
    artifacts: PathBuf,
    seeds: usize,
    started: Instant,
}

/// Writes the target's seeds, clears its old crash files and starts its fuzzer.
fn start_target(
    t: &str,
    dir: &Path,
    triple: &str,
    work: &Path,
    seeds: &Seeds,
    secs: u64,
) -> Result<Running> {
    let bin = dir.join(triple).join("release").join(t);
    let n = write_seeds(&work.join("seeds").join(t), t, seeds)?;
    let corpus = work.join("corpus").join(t);
    let artifacts = work.join("artifacts").join(t);
    // A crash file of an earlier run must not be taken for one of this run.
    let _ = std::fs::remove_dir_all(&artifacts);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = work.join(format!("{t}.log"));
    let child = Command::new(&bin)
        .arg(&corpus)
        .arg(work.join("seeds").join(t))
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Running {
        target: t.to_string(),
        child,
        log,
        artifacts,
        seeds: n,
        started: Instant::now(),
    })
}

impl Running {
    /// Waits for the fuzzer; `Some(description)` when it crashed or saved an input.
    fn finish(mut self) -> Result<Option<String>> {
        let t = &self.target;
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for fuzz target {t}"))?;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let execs = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?", str::trim);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.artifacts)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        if status.success() && found.is_empty() {
            eprintln!(
                "fuzz: {t}: ok, {execs} runs in {:.0} s from {} seeds",
                self.started.elapsed().as_secs_f64(),
                self.seeds
            );
            return Ok(None);
        }
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "fuzz: {t}: FAILED ({status}); log {}\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        let inputs = if found.is_empty() {
            "no input saved".to_string()
        } else {
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(Some(format!("{t}: {inputs}")))
    }
}

/// The ingest formats in `ingest::Format::ALL` order: `http_body` takes the format from
/// its first byte's low bits as an index into that array (and the encoding from the top two bits,
/// 0 = identity).
const FORMATS: [&str; 12] = [
    "ecs",
    "auditd",
    "eslogger",
    "unifiedlog",
    "osquery",
    "zeek",
    "suricata",
    "mdm",
    "mobile-edr",
    "windows",
    "apple-mdm",
    "mtd",
];

/// What a corpus file seeds, by its path below `corpora/`: the format its records are in and
/// how to turn the file into records (JSON documents listed in an array become NDJSON).
fn classify(rel: &str) -> Option<(&'static str, bool)> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if rel.starts_with("auditd/") {
        if name.ends_with("expected.json") {
            return Some(("ecs", true));
        }
        if name.ends_with(".log") || (rel.starts_with("auditd/laurel/") && name.ends_with(".txt")) {
            return Some(("auditd", false));
        }
        return None;
    }
    match rel {
        "eql/test_data.json" | "macos/jamf-protect-telemetry-expected.json" => Some(("ecs", true)),
        "macos/jamf-protect-telemetry.log" => Some(("eslogger", false)),
        "macos/osquery-results.log" => Some(("osquery", false)),
        // NXLog JSON of Windows event log records, zipped (`unzip -p`, part of `cargo xtask setup`).
        _ if rel.starts_with("real/windows-sysmon/") && name.ends_with(".zip") => {
            Some(("windows", false))
        }
        _ if rel.starts_with("real/apple-mdm/")
            && (name.ends_with(".plist") || name.ends_with(".json")) =>
        {
            Some(("apple-mdm", false))
        }
        _ if rel.starts_with("real/mtd/") && name.ends_with(".json") => Some(("mtd", false)),
        _ if rel.starts_with("zeek/")
            && (name.contains("conn.log")
                || name.contains("ssl.log")
                || name.ends_with(".json.gz")) =>
        {
            Some(("zeek", false))
        }
        _ => None,
    }
}

/// Seed inputs (name, bytes) by format.
type Seeds = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

/// Seed inputs by format, from every corpus file [`classify`] recognises.
fn collect_seeds(corpora: &Path) -> Result<Seeds> {
    let mut out = Seeds::new();
    if !corpora.is_dir() {
        eprintln!(
            "fuzz: {} not found: every target starts from an empty corpus",
            corpora.display()
        );
        return Ok(out);
    }
    let mut stack = vec![corpora.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for p in files {
        let rel = p
            .strip_prefix(corpora)
            .unwrap_or(&p)
            .to_string_lossy()
            .replace('\\', "/");
        let Some((format, json_list)) = classify(&rel) else {
            continue;
        };
        let mut data = Vec::new();
        if rel.ends_with(".gz") {
            let f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            // A cut-off gzip stream is fine: only the first part is wanted.
            let _ = flate2::read::GzDecoder::new(f)
                .take(GZ_BYTES)
                .read_to_end(&mut data);
        } else if rel.ends_with(".zip") {
            let out = std::process::Command::new("unzip")
                .arg("-p")
                .arg(&p)
                .output()
                .with_context(|| {
                    format!(
                        "unzip -p {} (cargo xtask setup installs unzip)",
                        p.display()
                    )
                })?;
            data = out.stdout;
            data.truncate(GZ_BYTES as usize);
        } else {
            data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        }
        if json_list {
            data = json_documents_as_ndjson(&data);
        }
        let stem = rel.replace('/', "_");
        for (i, piece) in line_chunks(&data, SEED_BYTES).into_iter().enumerate() {
            out.entry(format)
                .or_default()
                .push((format!("{stem}.{i}"), piece.to_vec()));
        }
    }
    Ok(out)
}

/// A JSON array of documents, or an object holding one (`{"expected": [...]}`), as NDJSON.
fn json_documents_as_ndjson(data: &[u8]) -> Vec<u8> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return data.to_vec();
    };
    let list = match &v {
        serde_json::Value::Array(a) => Some(a),
        serde_json::Value::Object(m) => m.values().find_map(serde_json::Value::as_array),
        _ => None,
    };
    let Some(list) = list else {
        return data.to_vec();
    };
    let mut out = Vec::new();
    for doc in list {
        out.extend_from_slice(doc.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Pieces of at most `max` bytes, cut after a newline (a longer line is a piece of its own).
fn line_chunks(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if end > start && end - start + line.len() > max {
            out.push(&data[start..end]);
            start = end;
        }
        end += line.len();
    }
    if end > start {
        out.push(&data[start..end]);
    }
    out
}

/// Writes the seeds of `target` into `dir` (replacing what an earlier run left); returns how many.
/// Targets whose format has no corpus get JSON lines of other formats: they at least lead the
/// fuzzer through the JSON parser to the decoder's own checks.
fn write_seeds(dir: &Path, target: &str, seeds: &Seeds) -> Result<usize> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let of = |f: &str| seeds.get(f).map_or(&[][..], Vec::as_slice);
    let json_fallback = || of("eslogger").iter().chain(of("osquery"));
    let mut n = 0;
    let mut put = |name: &str, prefix: Option<u8>, body: &[u8]| -> Result<()> {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.extend(prefix);
        bytes.extend_from_slice(body);
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        n += 1;
        Ok(())
    };
    match target {
        "http_body" => {
            for (i, f) in FORMATS.iter().enumerate() {
                let sel = u8::try_from(i).unwrap_or(0);
                for (name, body) in of(f) {
                    put(&format!("{f}-{name}"), Some(sel), body)?;
                }
            }
        }
        // The first byte is the chunk size the framing is fed in.
        "auditd_framing" => {
            for (name, body) in of("auditd") {
                put(name, Some(61), body)?;
            }
        }
        _ => {
            let format = target
                .strip_prefix("decode_")
                .map(|f| f.replace('_', "-"))
                .unwrap_or_default();
            let own = of(&format);
            if own.is_empty() {
                for (name, body) in json_fallback() {
                    put(name, None, body)?;
                }
            } else {
                for (name, body) in own {
                    put(name, None, body)?;
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunks_cut_at_lines_and_keep_every_byte() {
        let data = b"aaaa\nbb\ncccccccc\nd\n";
        let c = line_chunks(data, 7);
        assert_eq!(c.concat(), data.to_vec());
        let want: Vec<&[u8]> = vec![b"aaaa\n", b"bb\n", b"cccccccc\n", b"d\n"];
        assert_eq!(c, want);
        let c = line_chunks(data, 100);
        assert_eq!(c, vec![data.as_slice()]);
    }

    #[test]
    fn corpus_files_map_to_their_format() {
        assert_eq!(classify("auditd/beats/test.log"), Some(("auditd", false)));
        assert_eq!(
            classify("auditd/beats/test.log-expected.json"),
            Some(("ecs", true))
        );
        assert_eq!(classify("auditd/laurel/record-x.json"), None);
        assert_eq!(
            classify("zeek/010-zeek-mixed/data/conn.log.labeled"),
            Some(("zeek", false))
        );
        assert_eq!(classify("elastic-rules/rules/linux/x.toml"), None);
    }

    #[test]
    fn json_lists_become_ndjson() {
        let out = json_documents_as_ndjson(br#"{"expected":[{"a":1},{"b":2}]}"#);
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n".to_vec());
    }
}
