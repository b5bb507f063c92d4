//! `cargo xtask`: setup (toolchain), build of the eBPF object, run, test, fuzz, bench.
//!
//! Everything a fresh machine needs is installed by `setup`; `run`, `test` and `bench` call it when
//! something is missing, so `cargo xtask test` on a fresh clone is the whole story.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_identity;
mod fuzz;

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Project automation: setup, build-ebpf, run, test, fuzz, bench"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain (Debian packages, bpf-linker, cargo-fuzz). Idempotent; quiet when already done.
    Setup,
    /// Build the eBPF object with Debian's BPF-capable rustc (sensor-ebpf -> bpfel-unknown-none).
    BuildEbpf,
    /// Set up if needed, build the eBPF object and the sensor (release, unless `--debug`), then
    /// `sensor run` with the given args.
    Run {
        /// Run a debug build instead of the optimised (release) one.
        #[arg(long)]
        debug: bool,
        /// Arguments passed to `sensor run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// fmt check, clippy -D warnings, eBPF build (warnings denied), sensor build, cargo test --workspace,
    /// then `fuzz`.
    Test {
        /// Extra arguments for `cargo test --workspace` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build every cargo-fuzz target (fuzz/) and run each for SENSOR_FUZZ_SECS seconds (default 20),
    /// seeded from ../shared/corpora; fails on any crash, naming the target and the input.
    Fuzz {
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Syscall storms without the sensor, with it, with the bare probe and with auditd rules.
    Sensor(bench::Args),
}

/// Debian packages the kernel build and the tests need (see TOOLCHAIN.md).
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "auditd",
    "audispd-plugins",
    // `systemd-analyze verify` of the unit, curl and setpriv/script for the end-to-end tests.
    "systemd",
    "curl",
    // unzip: the real-recordings test unpacks the Windows recordings in ../shared/corpora/real.
    "unzip",
    "util-linux",
    // Real containers for the container-identity tests (tests/tests/kernel_containers.rs): podman
    // with runc (crun refuses hybrid cgroups), busybox-static to build an image with no registry.
    "podman",
    "runc",
    // busybox's `nc` is the network tool of the live AN1358 reverse-shell test.
    "busybox-static",
    // The fleet's bus and alert store: the fleet tests start their own nats-server (JetStream) and
    // PostgreSQL cluster (initdb/pg_ctl as an unprivileged user) in temporary directories.
    "nats-server",
    "postgresql",
];
/// PyPI tools the tests use: offline validation of the Kubernetes manifests.
const PIP_TOOLS: &[(&str, &str)] = &[("kubernetes-validate", "kubernetes-validate==1.37.0")];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian's BPF-capable compiler and cargo.
const SYS_RUSTC: &str = "/usr/bin/rustc";
const SYS_CARGO: &str = "/usr/bin/cargo";

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::BuildEbpf => build_ebpf().map(|_| ()),
        Cmd::Run { debug, args } => run(!debug, &args),
        Cmd::Test { args } => test(&args),
        Cmd::Fuzz { targets } => {
            setup_if_missing()?;
            fuzz::fuzz(&targets)
        }
        Cmd::Bench(BenchCmd::Sensor(a)) => {
            setup_if_missing()?;
            let bin = match &a.sensor_bin {
                Some(b) => b.clone(),
                None => {
                    build_ebpf()?;
                    cargo(&["build", "--release", "-p", "sensor"])?;
                    root().join("target/release/sensor")
                }
            };
            bench::sensor(&bin, &a)
        }
    }
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or(here.clone(), Path::to_path_buf)
}

/// Where `build-ebpf` leaves the object; `sensor-kernel/build.rs` embeds it from here.
pub(crate) fn ebpf_object() -> PathBuf {
    root().join("sensor-ebpf/target/bpfel-unknown-none/release/sensor-ebpf")
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for p in PACKAGES {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .context("running dpkg-query (is this a Debian machine?)")?;
        if !String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
            missing.push(*p);
        }
    }
    Ok(missing)
}

fn bpf_linker() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin/bpf-linker")
}

fn bpf_linker_ok() -> bool {
    Command::new(bpf_linker())
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

fn setup() -> Result<()> {
    let missing = missing_packages()?;
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "setup needs root to install Debian packages: {} (run `sudo cargo xtask setup`)",
                missing.join(" ")
            );
        }
        eprintln!("setup: installing Debian packages: {}", missing.join(" "));
        let lists_empty = std::fs::read_dir("/var/lib/apt/lists").map_or(true, |d| {
            !d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        });
        let try_install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
        };
        let mut ok = false;
        if !lists_empty {
            ok = try_install().context("running apt-get install")?.success();
        }
        if !ok {
            eprintln!("setup: apt-get update");
            check(
                Command::new("apt-get").args(["update", "-q"]),
                "apt-get update",
            )?;
            if !try_install().context("running apt-get install")?.success() {
                bail!("apt-get install {} failed", missing.join(" "));
            }
        }
    }
    if !bpf_linker_ok() {
        eprintln!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (LLVM_PREFIX={LLVM_PREFIX}; a few minutes)"
        );
        check(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                ])
                .args(["--features", "llvm-22", "--force"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
            "cargo install bpf-linker",
        )?;
        if !bpf_linker_ok() {
            bail!(
                "bpf-linker installed but `{} --version` does not answer {BPF_LINKER_VERSION}",
                bpf_linker().display()
            );
        }
    }
    if !fuzz::cargo_fuzz_ok() {
        fuzz::install_cargo_fuzz()?;
    }
    for (tool, spec) in missing_pip_tools() {
        eprintln!("setup: pip install {spec} (for `{tool}`)");
        check(
            Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                spec,
            ]),
            &format!("pip install {spec}"),
        )?;
    }
    Ok(())
}

fn missing_pip_tools() -> Vec<(&'static str, &'static str)> {
    PIP_TOOLS
        .iter()
        .filter(|(tool, _)| {
            !Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .copied()
        .collect()
}

fn setup_if_missing() -> Result<()> {
    if !missing_packages()?.is_empty()
        || !bpf_linker_ok()
        || !fuzz::cargo_fuzz_ok()
        || !missing_pip_tools().is_empty()
    {
        setup()?;
    }
    Ok(())
}

/// Builds the eBPF object (warnings are errors: the crate has `#![deny(warnings)]`).
fn build_ebpf() -> Result<PathBuf> {
    setup_if_missing()?;
    let dir = root().join("sensor-ebpf");
    check(
        Command::new(SYS_CARGO)
            .current_dir(&dir)
            .args(["build", "--release", "--target", "bpfel-unknown-none"])
            .env("RUSTC", SYS_RUSTC)
            // aya-ebpf uses a nightly feature; Debian's rustc is stable.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", bpf_linker())
            .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
        "eBPF build (sensor-ebpf)",
    )?;
    let obj = ebpf_object();
    if !obj.exists() {
        bail!("eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    check(
        Command::new(cargo).current_dir(root()).args(args),
        &format!("cargo {}", args.join(" ")),
    )
}

pub(crate) fn check(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn run(release: bool, args: &[String]) -> Result<()> {
    build_ebpf()?;
    let profile = if release { "release" } else { "debug" };
    if release {
        cargo(&["build", "--release", "-p", "sensor"])?;
    } else {
        cargo(&["build", "-p", "sensor"])?;
    }
    let bin = root().join("target").join(profile).join("sensor");
    let mut cmd = Command::new(&bin);
    cmd.arg("run").args(args);
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}

fn test(args: &[String]) -> Result<()> {
    setup_if_missing()?;
    cargo(&["fmt", "--all", "--check"])?;
    // The eBPF crate is not a workspace member: check its formatting on its own.
    check(
        Command::new("rustfmt").current_dir(root()).args([
            "--edition",
            "2021",
            "--check",
            "sensor-ebpf/src/main.rs",
        ]),
        "rustfmt --check sensor-ebpf",
    )?;
    // The object first, so that clippy and the tests see the real embedded program.
    build_ebpf()?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["build", "-p", "sensor"])?;
    // The fuzz build (a CPU-bound compile of its own target directory) overlaps the tests,
    // which mostly wait on daemons, servers and the kernel; it runs at the lowest priority so
    // that a test that wants the CPU gets it.
    let fuzz_build = fuzz::BackgroundBuild::start()?;
    let mut t = vec!["test", "--workspace", "--no-fail-fast"];
    t.extend(args.iter().map(String::as_str));
    if let Err(e) = cargo(&t) {
        fuzz_build.abandon();
        return Err(e);
    }
    // The fuzz targets after the tests: bounded time, any crash fails the run.
    fuzz_build.run_all()?;
    eprintln!("xtask test: all passed");
    Ok(())
}
