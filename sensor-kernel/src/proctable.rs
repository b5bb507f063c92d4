//! The process table: seeded from /proc at start-up, then kept by fork/exec/exit records.

use std::collections::HashMap;
use std::sync::Arc;

use correlator::Value;
use sha2::{Digest, Sha256};

use super::container::{Container, Containers};

/// What the table knows about one process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub name: Arc<str>,
    pub executable: Arc<str>,
    pub args: Arc<[Arc<str>]>,
    /// Stable id of this process instance: a hash of host id, pid and start time (boot ns).
    pub entity_id: Arc<str>,
    pub start_ns: u64,
    /// `args` as the event value of `process.args` and the joined `process.command_line`, built
    /// once per image rather than once per event.
    pub args_value: Value,
    pub command_line: Value,
    /// The cgroup v2 id the process was last seen in (0: unknown).
    pub cgroup_id: u64,
    /// The container the process runs in (None: the host), with its event fields prebuilt.
    pub container: Option<Arc<Container>>,
}

/// The `process.args` and `process.command_line` values of `args`.
pub(crate) fn arg_values(args: &[Arc<str>]) -> (Value, Value) {
    if args.is_empty() {
        return (Value::Null, Value::Null);
    }
    let list = Value::Array(args.iter().map(|a| Value::Str(a.into())).collect());
    let line = args
        .iter()
        .map(|a| a.as_ref())
        .collect::<Vec<_>>()
        .join(" ");
    (list, Value::Str(line.into()))
}

/// Most bytes of command-line arguments kept per process (from /proc or an exec record); the
/// argument that crosses it is cut at a character boundary and the rest dropped.
pub(crate) const MAX_ARGS_BYTES: usize = 16 << 10;

/// New entries between two sweeps of the table against /proc.
const SWEEP_EVERY: usize = 4096;

/// `args` cut to [`MAX_ARGS_BYTES`] in total.
fn cap_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<Arc<str>> {
    let mut left = MAX_ARGS_BYTES;
    let mut out = Vec::new();
    for a in args {
        if left == 0 {
            break;
        }
        if a.len() <= left {
            left -= a.len();
            out.push(Arc::from(a));
        } else {
            let mut end = left;
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            out.push(Arc::from(&a[..end]));
            left = 0;
        }
    }
    out
}

/// Processes by pid.
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
    host_id: String,
    ns_per_tick: u64,
    containers: Containers,
    /// Entries added since the last sweep.
    added: usize,
    /// Entries the sweeps removed (processes whose exit record was never seen).
    swept: u64,
}

/// `process.entity_id`: stable across pid reuse because the start time is part of it.
pub(crate) fn entity_id(host_id: &str, pid: u32, start_ns: u64) -> Arc<str> {
    let mut h = Sha256::new();
    h.update(host_id.as_bytes());
    h.update(pid.to_le_bytes());
    h.update(start_ns.to_le_bytes());
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for b in &d[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    Arc::from(s)
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

impl ProcessTable {
    /// A table that resolves no containers (see [`ProcessTable::with_containers`]).
    pub fn new(host_id: &str) -> ProcessTable {
        ProcessTable::with_containers(host_id, Containers::disabled())
    }

    /// An empty table whose processes are resolved to containers by `containers`.
    pub fn with_containers(host_id: &str, containers: Containers) -> ProcessTable {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
        ProcessTable {
            procs: HashMap::new(),
            host_id: host_id.to_string(),
            ns_per_tick: 1_000_000_000 / hz,
            containers,
            added: 0,
            swept: 0,
        }
    }

    /// Counts an insertion; every [`SWEEP_EVERY`] of them, drops the entries whose process is no
    /// longer in /proc (its exit record was lost), so the table tracks the live processes however
    /// many come and go.
    fn added(&mut self) {
        self.added += 1;
        if self.added >= SWEEP_EVERY {
            self.sweep();
        }
    }

    /// Removes entries whose pid is not in /proc; returns how many.
    pub fn sweep(&mut self) -> usize {
        self.added = 0;
        let before = self.procs.len();
        self.procs
            .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let n = before - self.procs.len();
        self.swept += n as u64;
        if n > 0 {
            tracing::debug!(
                removed = n,
                left = self.procs.len(),
                "process table swept against /proc"
            );
        }
        n
    }

    /// Entries the sweeps removed since start.
    pub fn swept(&self) -> u64 {
        self.swept
    }

    /// A table holding every process in /proc now (each with its container, from
    /// `/proc/<pid>/cgroup`: processes already running in a container are identified).
    pub fn seed_from_proc(host_id: &str, containers: Containers) -> ProcessTable {
        let mut t = ProcessTable::with_containers(host_id, containers);
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Some(info) = t.read_proc(p.pid) {
                    t.procs.insert(info.pid, info);
                }
            }
        }
        t
    }

    /// Reads one process from /proc (None when it is gone or is a thread of another process).
    pub fn read_proc(&mut self, pid_i: i32) -> Option<ProcessInfo> {
        let p = procfs::process::Process::new(pid_i).ok()?;
        let stat = p.stat().ok()?;
        if let Ok(status) = p.status() {
            if status.tgid != pid_i {
                return None;
            }
        }
        let executable: Arc<str> = p.exe().ok().map_or_else(
            || Arc::from(""),
            |e| Arc::from(e.to_string_lossy().as_ref()),
        );
        let args: Arc<[Arc<str>]> = cap_args(
            p.cmdline()
                .ok()
                .unwrap_or_default()
                .iter()
                .map(String::as_str),
        )
        .into();
        let name: Arc<str> = if executable.is_empty() {
            Arc::from(stat.comm.as_str())
        } else {
            Arc::from(basename(&executable))
        };
        let pid = u32::try_from(pid_i).ok()?;
        let start_ns = stat.starttime.saturating_mul(self.ns_per_tick);
        let (args_value, command_line) = arg_values(&args);
        let (container, cgroup_id) = self.containers.for_pid(pid, 0);
        Some(ProcessInfo {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            name,
            executable,
            args,
            entity_id: entity_id(&self.host_id, pid, start_ns),
            start_ns,
            args_value,
            command_line,
            cgroup_id,
            container,
        })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Puts container metadata that arrived since the last call on the processes of those
    /// containers (they carried the container's id alone until then). Cheap when nothing came.
    pub fn refresh_containers(&mut self) {
        let updated = self.containers.poll();
        if updated.is_empty() {
            return;
        }
        let by_id: HashMap<&str, &Arc<Container>> =
            updated.iter().map(|c| (c.id.as_str(), c)).collect();
        for p in self.procs.values_mut() {
            if let Some(c) = p.container.as_ref().and_then(|c| by_id.get(c.id.as_str())) {
                p.container = Some(Arc::clone(c));
            }
        }
    }

    /// The process, reading /proc for one the table has not seen.
    pub fn get_or_load(&mut self, pid: u32) -> Option<&ProcessInfo> {
        if pid == 0 {
            return None;
        }
        if !self.procs.contains_key(&pid) {
            let info = self.read_proc(i32::try_from(pid).ok()?)?;
            self.procs.insert(pid, info);
            self.added();
        }
        self.procs.get(&pid)
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// A fork: the child starts as a copy of its parent (same image until it execs, same
    /// container). `cgroup_id`: the parent's cgroup as the fork record says it (0: unknown).
    pub fn fork(
        &mut self,
        parent: u32,
        child: u32,
        start_ns: u64,
        parent_comm: &str,
        cgroup_id: u64,
    ) {
        let (name, executable, args, args_value, command_line, inherited) =
            match self.get_or_load(parent) {
                Some(p) => (
                    p.name.clone(),
                    p.executable.clone(),
                    p.args.clone(),
                    p.args_value.clone(),
                    p.command_line.clone(),
                    (cgroup_id == 0 || p.cgroup_id == cgroup_id)
                        .then(|| (p.container.clone(), p.cgroup_id)),
                ),
                None => (
                    Arc::from(parent_comm),
                    Arc::from(""),
                    Arc::from(Vec::new()),
                    Value::Null,
                    Value::Null,
                    None,
                ),
            };
        // The parent's container, unless the record says the parent is in another cgroup now.
        let (container, cgroup_id) =
            inherited.unwrap_or_else(|| self.containers.for_pids(&[child, parent], cgroup_id));
        // The start time as /proc shows it (clock ticks since boot), so that a daemon restarted later
        // (which seeds from /proc) computes the same entity id; the fork time when the child is gone.
        let start_ns = i32::try_from(child)
            .ok()
            .and_then(|p| procfs::process::Process::new(p).ok())
            .and_then(|p| p.stat().ok())
            .map_or(
                start_ns / self.ns_per_tick.max(1) * self.ns_per_tick,
                |st| st.starttime.saturating_mul(self.ns_per_tick),
            );
        let info = ProcessInfo {
            pid: child,
            ppid: parent,
            name,
            executable,
            args,
            entity_id: entity_id(&self.host_id, child, start_ns),
            start_ns,
            args_value,
            command_line,
            cgroup_id,
            container,
        };
        if self.procs.insert(child, info).is_none() {
            self.added();
        }
    }

    /// An exec: same process instance (same entity id), new image. `cgroup_id`: the cgroup the
    /// record says the process is in; a process that changed cgroup (a container's first process,
    /// moved into its cgroup by the runtime before it execs) is resolved again.
    pub fn exec(
        &mut self,
        pid: u32,
        ppid: u32,
        executable: &str,
        args: Vec<Arc<str>>,
        ktime_ns: u64,
        cgroup_id: u64,
    ) -> &ProcessInfo {
        let host_id = self.host_id.clone();
        let known = self
            .procs
            .get(&pid)
            .is_some_and(|p| cgroup_id == 0 || p.cgroup_id == cgroup_id);
        let resolved = (!known).then(|| self.containers.for_pid(pid, cgroup_id));
        if !self.procs.contains_key(&pid) {
            self.added();
        }
        let e = self.procs.entry(pid).or_insert_with(|| ProcessInfo {
            pid,
            ppid,
            name: Arc::from(""),
            executable: Arc::from(""),
            args: Arc::from(Vec::new()),
            entity_id: entity_id(&host_id, pid, ktime_ns),
            start_ns: ktime_ns,
            args_value: Value::Null,
            command_line: Value::Null,
            cgroup_id: 0,
            container: None,
        });
        if let Some((container, id)) = resolved {
            e.container = container;
            e.cgroup_id = id;
        }
        if ppid != 0 {
            e.ppid = ppid;
        }
        e.executable = Arc::from(executable);
        e.name = Arc::from(basename(executable));
        e.args = if args.iter().map(|a| a.len()).sum::<usize>() > MAX_ARGS_BYTES {
            cap_args(args.iter().map(|a| a.as_ref())).into()
        } else {
            Arc::from(args)
        };
        (e.args_value, e.command_line) = arg_values(&e.args);
        e
    }

    pub fn exit(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.procs.remove(&pid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_capped_at_a_character_boundary() {
        let big = "é".repeat(MAX_ARGS_BYTES); // 2 bytes each
        let args = cap_args(["prog", big.as_str(), "never"]);
        assert_eq!(args.len(), 2);
        let total: usize = args.iter().map(|a| a.len()).sum();
        assert!(
            (MAX_ARGS_BYTES - 1..=MAX_ARGS_BYTES).contains(&total),
            "{total}"
        );
        let mut t = ProcessTable::new("h");
        let e = t.exec(
            4_000_000_000,
            1,
            "/bin/x",
            vec![Arc::from("x"), Arc::from("a".repeat(1 << 20).as_str())],
            1,
            0,
        );
        assert_eq!(
            e.args.iter().map(|a| a.len()).sum::<usize>(),
            MAX_ARGS_BYTES
        );
        assert!(e
            .command_line
            .as_str()
            .is_some_and(|l| l.len() <= MAX_ARGS_BYTES + 1));
    }

    #[test]
    fn pid_churn_without_exit_records_is_swept_against_proc() {
        // Children whose exit records were lost: pids that /proc has never had (above pid_max).
        let mut t = ProcessTable::new("h");
        let me = std::process::id();
        t.get_or_load(me);
        for i in 0..(SWEEP_EVERY as u32 * 5) {
            t.fork(me, 4_000_000_000 + i, 1, "x", 0);
            assert!(
                t.len() <= SWEEP_EVERY + 1,
                "{} entries after {i} forks",
                t.len()
            );
        }
        assert!(t.swept() >= (SWEEP_EVERY * 4) as u64, "{}", t.swept());
        // A live process stays.
        assert!(t.get(me).is_some());
    }
}
