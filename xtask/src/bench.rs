//! `cargo xtask bench sensor`: syscall storms run by this process, timed per operation, in four
//! configurations measured side by side in one run:
//! - `none`: nothing attached;
//! - `probe`: the sensor with only the one program the storm hits (the bare-probe floor of PERFORMANCE.md);
//! - `sensor`: the whole sensor (every program) with its NDJSON output going to /dev/null;
//! - `auditd`: Debian's auditd with rules for the same syscalls.
//!
//! Medians of `--runs` runs; the runs of each configuration are interleaved so that machine noise
//! spreads over all of them.
//!
//! An auditd run counts only if auditd really recorded the storm: the records carrying the bench's
//! key (`sensor-bench`) that its log gained during the run, plus auditd's `lost` delta, must cover
//! every operation. When they do not (auditd not writing, rules not matching, log elsewhere), the
//! row is marked invalid with what was seen, rather than reporting a cost auditd never paid.
//! Seen with it (smoke run, 2026-12-07): the socket and FIFO storms, which run in this process,
//! got 0 keyed records while the exec storm's children were recorded. The kernel gives a task an
//! audit context at fork only once auditing has been enabled since boot, so when this bench is what
//! first enables it, its own syscalls stay unaudited: a likely cause of rows that swung between +7%
//! and +738% on a fresh machine. So the auditd storms run in a child forked once auditd is on.
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Operations per socket storm.
    #[arg(long, default_value_t = 500_000)]
    socket_ops: u64,
    /// Operations per FIFO storm (mkfifo + open + close + unlink).
    #[arg(long, default_value_t = 100_000)]
    fifo_ops: u64,
    /// Operations per fork+exec storm (fork, execve /bin/true, wait).
    #[arg(long, default_value_t = 2_000)]
    exec_ops: u64,
    /// Sustained-rate check: kernel events per second offered to the whole sensor (0: skip).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Seconds the sustained rate is held.
    #[arg(long, default_value_t = 10)]
    rate_secs: u64,
    /// Runs of the sustained-rate check.
    #[arg(long, default_value_t = 3)]
    rate_runs: usize,
    /// Skip the auditd configuration.
    #[arg(long)]
    no_auditd: bool,
    /// Use this sensor binary instead of building target/release/sensor.
    #[arg(long)]
    pub(crate) sensor_bin: Option<std::path::PathBuf>,
    /// Write the markdown report here (default: target/bench-sensor.md).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Container identity on vs off instead of the usual storms: the socket storm only, alternating
    /// runs of the whole sensor with and without it (`sensor events --no-containers`), wall clock
    /// and BPF run time per event for both (see bench_identity.rs).
    #[arg(long)]
    pub(crate) identity: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Storm {
    Socket,
    Fifo,
    Exec,
}

impl Storm {
    fn name(self) -> &'static str {
        match self {
            Storm::Socket => "socket(AF_UNIX)+close",
            Storm::Fifo => "mkfifo+open+close+unlink",
            Storm::Exec => "fork+execve(/bin/true)+wait",
        }
    }
    /// The programs the bare-probe configuration attaches for this storm.
    fn probe(self) -> &'static str {
        match self {
            Storm::Socket => "sys_enter_socket",
            Storm::Fifo => "sys_enter_mknodat",
            Storm::Exec => "sched_process_exec",
        }
    }
    /// Kernel events the full sensor emits per operation (for the event rate).
    fn events_per_op(self) -> u64 {
        match self {
            Storm::Socket => 1,
            Storm::Fifo => 2,
            Storm::Exec => 3,
        }
    }
    /// Keyed audit records per operation when auditd records every matching syscall.
    fn audit_records_per_op(self) -> u64 {
        match self {
            Storm::Socket => 1,
            // mknodat + the FIFO open.
            Storm::Fifo => 2,
            // execve (the fork's clone is matched too, but glibc may use clone3: not counted).
            Storm::Exec => 1,
        }
    }

    fn audit_rules(self) -> Vec<Vec<&'static str>> {
        let base = ["-a", "always,exit", "-F", "arch=b64"];
        let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
        match self {
            Storm::Socket => vec![with(&["-S", "socket", "-F", "a0=1", "-k", "sensor-bench"])],
            Storm::Fifo => vec![
                with(&["-S", "mknodat", "-k", "sensor-bench"]),
                with(&["-S", "openat", "-F", "filetype=fifo", "-k", "sensor-bench"]),
            ],
            Storm::Exec => vec![with(&["-S", "execve", "-S", "clone", "-k", "sensor-bench"])],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    None,
    /// PERFORMANCE.md's floor: one tracepoint, 24-byte record, no wakeup, polled reader.
    Floor,
    Probe,
    Sensor,
    Auditd,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::None => "nothing attached",
            Config::Floor => "floor probe (24-byte record, polled; PERFORMANCE.md)",
            Config::Probe => "bare probe (one program of the sensor)",
            Config::Sensor => "sensor (all programs, NDJSON to /dev/null)",
            Config::Auditd => "auditd (rules for the same syscalls)",
        }
    }
}

pub(crate) fn ns_per_op(d: Duration, ops: u64) -> f64 {
    d.as_secs_f64() * 1e9 / ops.max(1) as f64
}

pub(crate) fn socket_storm(ops: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..ops {
        // SAFETY: plain syscalls on a fd we own.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
    t.elapsed()
}

fn fifo_storm(ops: u64, dir: &Path) -> Result<Duration> {
    let path = CString::new(dir.join("bench-fifo").to_string_lossy().as_bytes())?;
    let t = Instant::now();
    for _ in 0..ops {
        // SAFETY: valid C string; the fd is ours.
        unsafe {
            if libc::mkfifo(path.as_ptr(), 0o600) != 0 {
                bail!("mkfifo: {}", std::io::Error::last_os_error());
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
            if fd >= 0 {
                libc::close(fd);
            }
            libc::unlink(path.as_ptr());
        }
    }
    Ok(t.elapsed())
}

fn exec_storm(ops: u64) -> Result<Duration> {
    let prog = c"/bin/true";
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let t = Instant::now();
    for _ in 0..ops {
        // SAFETY: the child only calls execve and _exit (async-signal-safe); xtask is single-threaded here.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
            if pid < 0 {
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
    Ok(t.elapsed())
}

fn run_storm(s: Storm, a: &Args, dir: &Path) -> Result<(Duration, u64)> {
    Ok(match s {
        Storm::Socket => (socket_storm(a.socket_ops), a.socket_ops),
        Storm::Fifo => (fifo_storm(a.fifo_ops, dir)?, a.fifo_ops),
        Storm::Exec => (exec_storm(a.exec_ops)?, a.exec_ops),
    })
}

/// [`run_storm`] in a child forked now: the kernel gives a task an audit context at fork only once
/// auditing has been enabled, so a storm run by this process (started before `auditctl -e 1` on a
/// machine where auditing was never on) would not be audited at all.
fn run_storm_forked(s: Storm, a: &Args, dir: &Path) -> Result<(Duration, u64)> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) with a two-int array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the child runs the storm, writes 16 bytes and _exits; glibc's fork resets the
    // allocator's locks, and the only other thread (a sensor's reader) is gone by now.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let (d, ops) = run_storm(s, a, dir).unwrap_or((Duration::ZERO, 0));
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(
            &u64::try_from(d.as_nanos())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
        buf[8..].copy_from_slice(&ops.to_le_bytes());
        // SAFETY: writes our buffer to the pipe, then ends the child without running destructors.
        unsafe {
            libc::write(fds[1], buf.as_ptr().cast(), buf.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; the read end becomes a File that owns its fd.
    let mut rd = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut buf = [0u8; 16];
    let read = rd.read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.context("reading the storm child's result")?;
    let mut n = [0u8; 8];
    n.copy_from_slice(&buf[..8]);
    let d = Duration::from_nanos(u64::from_le_bytes(n));
    n.copy_from_slice(&buf[8..]);
    let ops = u64::from_le_bytes(n);
    if ops == 0 {
        bail!("the storm child failed");
    }
    Ok((d, ops))
}

/// `socket(AF_UNIX, <invalid type>, 0)` at `rate` calls per second for `secs`: each call fails at
/// once with EINVAL but still enters the syscall, so the sensor's `sys_enter_socket` program
/// reports it; this offers the sensor a fixed event rate far above what real socket creation
/// reaches on this machine. Returns (calls, elapsed).
fn paced_socket_storm(rate: u64, secs: u64) -> (u64, Duration) {
    let total = rate.saturating_mul(secs);
    let t = Instant::now();
    let mut i = 0u64;
    while i < total {
        // SAFETY: a syscall with plain integer arguments; it fails and returns no fd.
        unsafe {
            libc::socket(libc::AF_UNIX, 999, 0);
        }
        i += 1;
        if i.is_multiple_of(64) {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            while t.elapsed() < due {
                std::hint::spin_loop();
            }
        }
    }
    (total, t.elapsed())
}

/// CPU time (user + system) a process has used, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the command.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn per_kind(status: &serde_json::Value, key: &str, kind: &str) -> u64 {
    status[key][kind].as_u64().unwrap_or(0)
}

/// The sustained-rate check: the whole sensor (`sensor events`, every program, NDJSON to
/// /dev/null) offered `rate` socket events per second; reports what it delivered and lost.
fn sustained(bin: &Path, a: &Args) -> Result<String> {
    let mut out = String::new();
    out.push_str("| run | offered events/s | events offered | delivered | lost in kernel (ring buffer) | lost in queue | sensor CPU per event |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for run in 0..a.rate_runs {
        eprintln!("bench: sustained {} events/s / run {}", a.rate, run + 1);
        let s = Sensor::start(bin, &[])?;
        let pid = s.child.id();
        let cpu0 = cpu_secs(pid);
        let (calls, d) = paced_socket_storm(a.rate, a.rate_secs);
        let (cpu1, status) = s.stop_after(|| cpu_secs(pid))?;
        let delivered = per_kind(&status, "events", "socket");
        let lk = per_kind(&status, "lost_kernel", "socket");
        let lq = per_kind(&status, "lost_queue", "socket");
        #[allow(clippy::cast_precision_loss)]
        let offered = calls as f64 / d.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let cpu_ns = (cpu1 - cpu0) * 1e9 / delivered.max(1) as f64;
        out.push_str(&format!(
            "| {} | {offered:.0} | {calls} | {delivered} | {lk} | {lq} | {cpu_ns:.0} ns |\n",
            run + 1
        ));
    }
    Ok(out)
}

/// `sensor events` running in the background, output to /dev/null, status JSON on exit.
pub(crate) struct Sensor {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Sensor {
    pub(crate) fn start(bin: &Path, extra: &[&str]) -> Result<Sensor> {
        let mut cmd = Command::new(bin);
        cmd.args(["events", "--status"]).args(extra);
        let mut child = cmd
            .env("SENSOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let err = child.stderr.take().context("sensor stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.starts_with("sensor events: attached") => break,
                Ok(l) => eprintln!("sensor: {l}"),
                Err(_) => {
                    let _ = child.kill();
                    bail!("sensor events did not attach within 60 s");
                }
            }
        }
        Ok(Sensor { child, stderr: rx })
    }

    /// Stops the sensor; returns its status JSON.
    pub(crate) fn stop(self) -> Result<serde_json::Value> {
        Ok(self.stop_after(|| 0.0)?.1)
    }

    /// Waits for the sensor to catch up, calls `before_exit` (while it still runs), stops it and
    /// returns that value and the status JSON.
    fn stop_after<T>(mut self, before_exit: impl FnOnce() -> T) -> Result<(T, serde_json::Value)> {
        // Let the sensor work through what it still holds (records it left in the ring buffer
        // while its queue was full): wait until it has been idle for a moment, at most 20 s.
        let pid = self.child.id();
        let t = Instant::now();
        let mut last = cpu_secs(pid);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = cpu_secs(pid);
            if now - last < 0.01 || t.elapsed() > Duration::from_secs(20) {
                break;
            }
            last = now;
        }
        let v = before_exit();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id())?, libc::SIGINT) };
        self.child.wait()?;
        let mut status = serde_json::Value::Null;
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                status = v;
            } else {
                eprintln!("sensor: {l}");
            }
        }
        Ok((v, status))
    }
}

pub(crate) fn lost_total(status: &serde_json::Value) -> u64 {
    ["lost_kernel", "lost_queue"]
        .iter()
        .filter_map(|k| status[k].as_object())
        .flat_map(|m| m.values().filter_map(serde_json::Value::as_u64))
        .sum()
}

/// auditd started for the bench (only stopped if we started it) with our rules loaded.
struct Audit {
    rules: Vec<Vec<&'static str>>,
    started: Option<i32>,
    /// `enabled` and `backlog_limit` before the bench, restored after.
    saved: (String, String),
    /// The log the run's keyed records are counted in.
    log: std::path::PathBuf,
    /// The configuration directory of an auditd the bench started (removed, with its log, after).
    own_dir: Option<std::path::PathBuf>,
}

/// `/etc/audit/auditd.conf` rewritten for a bench run: the log in `dir` and never rotated
/// (`max_log_file_action = ignore`), since a storm writes far more than `max_log_file` (8 MB by
/// default) and a rotated-away file takes its records with it (every auditd row read INVALID).
/// Nothing under /etc or /var/log is changed: the bench's auditd runs with `-c dir`.
fn bench_auditd_conf(system: &str, dir: &Path) -> String {
    let overrides = [
        ("log_file", dir.join("audit.log").display().to_string()),
        ("max_log_file_action", "ignore".to_string()),
        ("write_logs", "yes".to_string()),
    ];
    let mut out: Vec<String> = system
        .lines()
        .filter(|l| {
            let k = l.split_once('=').map_or("", |(k, _)| k.trim());
            !overrides.iter().any(|(o, _)| *o == k)
        })
        .map(str::to_string)
        .collect();
    out.extend(overrides.iter().map(|(k, v)| format!("{k} = {v}")));
    out.join("\n") + "\n"
}

fn audit_status(key: &str) -> Option<String> {
    let out = Command::new("auditctl").arg("-s").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|v| v.strip_prefix(' '))
            .map(|v| v.trim().to_string())
    })
}

impl Audit {
    fn start(s: Storm, dir: &Path) -> Result<Audit> {
        // Saved before auditd starts (starting it turns auditing on).
        let saved = (
            audit_status("enabled").unwrap_or_else(|| "0".into()),
            audit_status("backlog_limit").unwrap_or_else(|| "64".into()),
        );
        let running = Command::new("pgrep")
            .args(["-x", "auditd"])
            .output()
            .is_ok_and(|o| o.status.success());
        let mut started = None;
        let mut own_dir = None;
        let mut log = audit_log_path();
        if running {
            eprintln!(
                "bench: auditd was already running: counting in {} (a rotation past {}.1 during a run loses records and marks the run INVALID)",
                log.display(),
                log.display()
            );
        } else {
            use std::os::unix::fs::PermissionsExt;
            let conf_dir = dir.join("auditd");
            std::fs::create_dir_all(&conf_dir)?;
            std::fs::set_permissions(&conf_dir, std::fs::Permissions::from_mode(0o750))?;
            let system = std::fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
            let conf = conf_dir.join("auditd.conf");
            std::fs::write(&conf, bench_auditd_conf(&system, &conf_dir))?;
            std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640))?;
            let st = Command::new("/sbin/auditd")
                .arg("-c")
                .arg(&conf_dir)
                .status()
                .context("starting /sbin/auditd (apt-get install auditd)")?;
            if !st.success() {
                bail!(
                    "/sbin/auditd -c {} failed to start ({st})",
                    conf_dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
            let pid = std::fs::read_to_string("/var/run/auditd.pid").unwrap_or_default();
            started = pid.trim().parse().ok();
            log = conf_dir.join("audit.log");
            own_dir = Some(conf_dir);
        }
        // As Debian's default /etc/audit/rules.d/audit.rules: a backlog of 8192; auditing on.
        let st = Command::new("auditctl")
            .args(["-e", "1", "-b", "8192"])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("auditctl -e 1 -b 8192 failed");
        }
        let rules = s.audit_rules();
        for r in &rules {
            let st = Command::new("auditctl")
                .args(r)
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("auditctl {} failed", r.join(" "));
            }
        }
        Ok(Audit {
            rules,
            started,
            saved,
            log,
            own_dir,
        })
    }

    fn lost() -> u64 {
        let out = Command::new("auditctl")
            .arg("-s")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        out.ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("lost ").and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    fn stop(self) {
        for r in &self.rules {
            let mut d = r.clone();
            d[0] = "-d";
            let _ = Command::new("auditctl")
                .args(&d)
                .stdout(Stdio::null())
                .status();
        }
        if let Some(pid) = self.started {
            // SAFETY: the auditd we started, by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..50 {
                // SAFETY: signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Restored after auditd is gone (it changes `enabled` when it stops).
        let (enabled, backlog) = &self.saved;
        let _ = Command::new("auditctl")
            .args(["-e", enabled, "-b", backlog])
            .stdout(Stdio::null())
            .status();
        if let Some(d) = &self.own_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// auditd's log file, from `log_file` in /etc/audit/auditd.conf (default /var/log/audit/audit.log).
fn audit_log_path() -> std::path::PathBuf {
    std::fs::read_to_string("/etc/audit/auditd.conf")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "log_file").then(|| std::path::PathBuf::from(v.trim()))
            })
        })
        .unwrap_or_else(|| std::path::PathBuf::from("/var/log/audit/audit.log"))
}

/// Where auditd's log ends now: (inode, size).
fn audit_log_mark(log: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(log).map_or((0, 0), |m| (m.ino(), m.len()))
}

/// Occurrences of `needle` in `path` from byte `from` on.
fn count_from(path: &Path, from: u64, needle: &[u8]) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return 0;
    }
    let mut data = Vec::new();
    if f.read_to_end(&mut data).is_err() {
        return 0;
    }
    memchr::memmem::find_iter(&data, needle).count() as u64
}

/// Records with the bench's key that auditd's log gained since `mark`, once auditd has finished
/// writing them (the count holds still for a second, or 15 s have passed). A rotation during the
/// run is followed into `<log>.1`.
fn audit_recorded_since(log: &Path, mark: (u64, u64)) -> u64 {
    const KEY: &[u8] = b"key=\"sensor-bench\"";
    let count = || {
        let (ino, _) = audit_log_mark(log);
        if ino == mark.0 {
            count_from(log, mark.1, KEY)
        } else {
            let mut old = log.as_os_str().to_owned();
            old.push(".1");
            count_from(Path::new(&old), mark.1, KEY) + count_from(log, 0, KEY)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = count();
    let mut still = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let n = count();
        if n != last {
            last = n;
            still = Instant::now();
        } else if still.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

/// Whether an auditd run recorded its storm: `None` when valid, else why not.
fn audit_run_invalid(storm: Storm, ops: u64, recorded: u64, lost: u64) -> Option<String> {
    let expected = ops * storm.audit_records_per_op();
    (recorded + lost < expected)
        .then(|| format!("recorded {recorded} keyed records (+{lost} lost) of {expected} expected"))
}

/// The fastest run: machine noise only ever adds time, so the minimum is the steadiest estimate of
/// a configuration's own cost (reported beside the median).
pub(crate) fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn sensor(bin: &Path, a: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench sensor needs root (it loads eBPF programs and audit rules)");
    }
    if a.identity {
        return crate::bench_identity::run(bin, a.runs, a.socket_ops, a.out.clone());
    }
    let dir = std::env::temp_dir().join(format!("sensor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut all = vec![Config::None, Config::Floor, Config::Probe, Config::Sensor];
    if !a.no_auditd {
        all.push(Config::Auditd);
    }
    let mut report = String::new();
    report.push_str(
        "| storm | configuration | ns/op (median) | overhead | ns/op (fastest run) | overhead (fastest) | events/s | lost |\n",
    );
    report.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let mut invalid_notes: Vec<String> = Vec::new();
    for storm in [Storm::Socket, Storm::Fifo, Storm::Exec] {
        invalid_notes.extend(storm_rows(bin, a, &dir, storm, &all, &mut report)?);
    }
    if !invalid_notes.is_empty() {
        report.push_str("\nInvalid rows:\n");
        for n in &invalid_notes {
            report.push_str(n);
            report.push('\n');
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if a.rate > 0 {
        report.push_str(&format!(
            "\nSustained rate: the whole sensor (`sensor events`, all programs, NDJSON to /dev/null) offered {} socket events/s for {} s (`socket(AF_UNIX, <invalid type>, 0)` calls, paced):\n\n",
            a.rate, a.rate_secs
        ));
        report.push_str(&sustained(bin, a)?);
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| crate::root().join("target/bench-sensor.md"));
    let cmd = format!(
        "cargo xtask bench sensor --runs {} --socket-ops {} --fifo-ops {} --exec-ops {} --rate {} --rate-secs {} --rate-runs {}",
        a.runs, a.socket_ops, a.fifo_ops, a.exec_ops, a.rate, a.rate_secs, a.rate_runs
    );
    let text = format!("Command: `{cmd}`\n\n{report}\nevents/s: kernel events generated per second during the storm (sensor rows: what the sensor had to carry; auditd rows: same rate for comparison). lost: sensor ring-buffer + queue losses, or auditd's `lost` counter delta, summed over runs.\n");
    std::fs::write(&out, &text)?;
    println!("{text}");
    eprintln!("written to {}", out.display());
    Ok(())
}

/// Runs `storm` `a.runs` times under every configuration of `all` (interleaved, so that a change
/// of the machine's load hits them alike) and appends its table rows to `report`; returns the note
/// on auditd runs that did not record the storm, if any.
fn storm_rows(
    bin: &Path,
    a: &Args,
    dir: &Path,
    storm: Storm,
    all: &[Config],
    report: &mut String,
) -> Result<Option<String>> {
    // The floor probe hooks `sys_enter_socket` only.
    let configs: Vec<Config> = all
        .iter()
        .copied()
        .filter(|c| *c != Config::Floor || storm == Storm::Socket)
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut lost = vec![0u64; configs.len()];
    let mut rate = vec![0f64; configs.len()];
    // Why auditd runs are invalid, per run.
    let mut invalid: Vec<String> = Vec::new();
    for run in 0..a.runs {
        for (ci, c) in configs.iter().enumerate() {
            eprintln!("bench: {} / {} / run {}", storm.name(), c.name(), run + 1);
            let (d, ops, run_lost, why) = one_run(bin, a, dir, storm, *c)?;
            lost[ci] += run_lost;
            if let Some(why) = why {
                eprintln!("bench: auditd run {} INVALID: {why}", run + 1);
                invalid.push(format!("run {}: {why}", run + 1));
            }
            times[ci].push(ns_per_op(d, ops));
            rate[ci] = (storm.events_per_op() * ops) as f64 / d.as_secs_f64();
        }
    }
    let base = median(&mut times[0].clone());
    let base_min = fastest(&times[0]);
    for (ci, c) in configs.iter().enumerate() {
        let m = median(&mut times[ci]);
        let f = fastest(&times[ci]);
        let (over, over_min) = if ci == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:+.1}%", (m / base - 1.0) * 100.0),
                format!("{:+.1}%", (f / base_min - 1.0) * 100.0),
            )
        };
        let ev = if matches!(c, Config::None) {
            "-".to_string()
        } else {
            format!("{:.0}", rate[ci])
        };
        let (over, over_min) = if *c == Config::Auditd && !invalid.is_empty() {
            (format!("INVALID ({over})"), format!("INVALID ({over_min})"))
        } else {
            (over, over_min)
        };
        report.push_str(&format!(
            "| {} | {} | {m:.0} | {over} | {f:.0} | {over_min} | {ev} | {} |\n",
            storm.name(),
            c.name(),
            lost[ci]
        ));
    }
    Ok((!invalid.is_empty()).then(|| {
        format!(
            "- {} / auditd: {} of {} runs did not record the storm ({}): its overhead is not a measurement of auditd doing the work.",
            storm.name(),
            invalid.len(),
            a.runs,
            invalid.join("; ")
        )
    }))
}

/// One timed run of `storm` under `c`: (elapsed, operations, events lost, why an auditd run does
/// not count when it does not).
fn one_run(
    bin: &Path,
    a: &Args,
    dir: &Path,
    storm: Storm,
    c: Config,
) -> Result<(Duration, u64, u64, Option<String>)> {
    match c {
        Config::None => {
            let (d, ops) = run_storm(storm, a, dir)?;
            Ok((d, ops, 0, None))
        }
        Config::Floor | Config::Probe | Config::Sensor => {
            let extra: &[&str] = match c {
                Config::Floor => &["--floor-probe"],
                Config::Probe => &["--programs", storm.probe()],
                _ => &[],
            };
            let s = Sensor::start(bin, extra)?;
            let r = run_storm(storm, a, dir);
            let status = s.stop()?;
            let (d, ops) = r?;
            let lost = if c == Config::Floor {
                // The floor probe has no loss counter: one record per socket() call.
                ops.saturating_sub(per_kind(&status, "events", "socket"))
            } else {
                lost_total(&status)
            };
            Ok((d, ops, lost, None))
        }
        Config::Auditd => {
            let before = Audit::lost();
            let au = Audit::start(storm, dir)?;
            let log = au.log.clone();
            let mark = audit_log_mark(&log);
            let r = run_storm_forked(storm, a, dir);
            let recorded = audit_recorded_since(&log, mark);
            let run_lost = Audit::lost().saturating_sub(before);
            au.stop();
            let (d, ops) = r?;
            eprintln!(
                "bench: auditd recorded {recorded} records with key sensor-bench in {}",
                log.display()
            );
            let why = audit_run_invalid(storm, ops, recorded, run_lost);
            Ok((d, ops, run_lost, why))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_auditd_run_is_valid_only_when_its_records_cover_the_storm() {
        assert_eq!(audit_run_invalid(Storm::Socket, 1000, 1000, 0), None);
        assert_eq!(audit_run_invalid(Storm::Socket, 1000, 990, 10), None);
        assert_eq!(
            audit_run_invalid(Storm::Socket, 1000, 3, 0).as_deref(),
            Some("recorded 3 keyed records (+0 lost) of 1000 expected")
        );
        assert!(audit_run_invalid(Storm::Fifo, 1000, 1000, 0).is_some());
        assert_eq!(audit_run_invalid(Storm::Fifo, 1000, 2000, 0), None);
    }

    #[test]
    fn keyed_records_are_counted_from_the_mark_and_across_a_rotation() {
        let d = std::env::temp_dir().join(format!("xtask-audit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let log = d.join("audit.log");
        let line = "type=SYSCALL msg=audit(1.0:1): syscall=41 key=\"sensor-bench\"\n";
        std::fs::write(&log, line.repeat(3)).unwrap();
        let mark = audit_log_mark(&log);
        let mut more = std::fs::read_to_string(&log).unwrap();
        more.push_str(&line.repeat(5));
        more.push_str("type=SYSCALL key=\"other\"\n");
        std::fs::write(&log, more).unwrap();
        assert_eq!(audit_recorded_since(&log, mark), 5);
        // Rotated: the old file's tail after the mark, plus the whole new file.
        let mark = audit_log_mark(&log);
        let mut tail = std::fs::read_to_string(&log).unwrap();
        tail.push_str(line);
        std::fs::write(&log, tail).unwrap();
        std::fs::rename(&log, d.join("audit.log.1")).unwrap();
        std::fs::write(&log, line.repeat(2)).unwrap();
        assert_eq!(audit_recorded_since(&log, mark), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_bench_auditd_logs_in_its_own_dir_and_never_rotates() {
        let system = "log_file = /var/log/audit/audit.log\nmax_log_file = 8\nnum_logs = 5\nmax_log_file_action = ROTATE\nflush = INCREMENTAL_ASYNC\n";
        let conf = bench_auditd_conf(system, Path::new("/tmp/b"));
        let kv: Vec<(&str, &str)> = conf
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| -> Vec<&str> {
            kv.iter()
                .filter(|(x, _)| *x == k)
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(get("log_file"), ["/tmp/b/audit.log"]);
        assert_eq!(get("max_log_file_action"), ["ignore"]);
        assert_eq!(
            get("num_logs"),
            ["5"],
            "irrelevant once the log is never rotated"
        );
        assert_eq!(
            get("flush"),
            ["INCREMENTAL_ASYNC"],
            "the rest is the system's"
        );
    }
}
