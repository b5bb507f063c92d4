//! The kernel sensor: loads the eBPF object (aya), attaches its tracepoints, reads the ring buffer with
//! tokio, keeps a process table and turns every record into a normalised [`correlator::Event`].
//!
//! Architecture Invariant: this module (with `sensor-common`) is the only place that knows the kernel
//! ABI; everything downstream sees ECS events only.

pub mod btf;
pub mod container;
mod decode;
mod proctable;
mod ring;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use sensor_common::{kind, Offsets};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

pub use decode::{Decoder, HostInfo};
pub use proctable::{ProcessInfo, ProcessTable};

/// The eBPF object built by `cargo xtask build-ebpf` (empty when built without the BPF toolchain).
pub static EBPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sensor-ebpf.o"));

/// Kernel sensor settings (the `[kernel]` table of the daemon config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    /// Ring buffer size in bytes: a power of two, at least 4096.
    pub ring_buffer_bytes: u32,
    /// Fill level (bytes) past which a kernel submit wakes the reader; 0 = a quarter of the buffer.
    pub wakeup_bytes: u32,
    /// How often the reader drains the ring buffer without being woken, in milliseconds.
    pub poll_interval_ms: u64,
    /// Capacity of the event queue towards the consumer. A full queue applies backpressure: the
    /// reader stops reading the ring buffer until there is room, so overload becomes ring-buffer
    /// reserve failures counted in the kernel (`lost_kernel`); nothing is dropped from the queue.
    pub queue_capacity: usize,
    /// Interval of the status log line in seconds (0: never).
    pub status_log_interval_s: u64,
    /// Attach only these programs (names as in `KernelStatus::attached`, or the program name such as
    /// `sys_enter_socket`); empty: all of them.
    pub programs: Vec<String>,
    /// Container identity (`[kernel.containers]`).
    pub containers: container::ContainerConfig,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            ring_buffer_bytes: 8 << 20,
            wakeup_bytes: 0,
            poll_interval_ms: 10,
            queue_capacity: 65_536,
            status_log_interval_s: 60,
            programs: Vec::new(),
            containers: container::ContainerConfig::default(),
        }
    }
}

/// Why the kernel sensor could not start.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel sensor needs root (effective uid is {0})")]
    NotRoot(u32),
    #[error("built without the BPF toolchain: run cargo xtask build-ebpf")]
    NoObject,
    #[error("invalid kernel config: {0}")]
    Config(String),
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("loading the eBPF object was refused: {0}")]
    Load(String),
    #[error("no kernel program could be attached: {0}")]
    NothingAttached(String),
    #[error("the ring buffer map is missing or unusable: {0}")]
    RingBuf(String),
}

/// A program the kernel refused, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Refused {
    pub program: String,
    pub reason: String,
}

/// What the kernel sensor is doing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelStatus {
    /// Attached programs (`category/name` of each tracepoint).
    pub attached: Vec<String>,
    pub refused: Vec<Refused>,
    pub ring_buffer_bytes: u32,
    /// Events delivered to the consumer, per record kind.
    pub events: BTreeMap<String, u64>,
    /// Ring buffer reserve failures in the kernel (the buffer was full), per record kind.
    pub lost_kernel: BTreeMap<String, u64>,
    /// Records read at shutdown (the final drain) that the consumer queue could not take, per
    /// record kind; while running, a full queue stops the reader instead (backpressure).
    pub lost_queue: BTreeMap<String, u64>,
    /// Records that could not be decoded (too short, unknown kind).
    pub decode_errors: u64,
    /// Processes in the process table.
    pub processes: usize,
    /// Entries the table's sweeps against /proc dropped (processes whose exit was never seen).
    pub processes_swept: u64,
    /// Container identity: cgroups resolved, runtimes that could not be reached.
    pub containers: container::ContainerStatus,
    /// Kernel run time per program, when `kernel.bpf_stats_enabled` is 1 (empty otherwise).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub program_stats: BTreeMap<String, ProgramStats>,
}

/// What the kernel counts for one program while `kernel.bpf_stats_enabled` is 1.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProgramStats {
    pub run_count: u64,
    pub run_time_ns: u64,
    /// `run_time_ns / run_count`.
    pub ns_per_run: u64,
}

/// Per-program run counts and times from the kernel (BPF_OBJ_GET_INFO_BY_FD).
fn program_stats(ebpf: &Ebpf) -> BTreeMap<String, ProgramStats> {
    let mut out = BTreeMap::new();
    for (name, _) in PROGRAMS {
        let Some(info) = ebpf.program(name).and_then(|p| p.info().ok()) else {
            continue;
        };
        let run_count = info.run_count();
        if run_count == 0 {
            continue;
        }
        let run_time_ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        out.insert(
            (*name).to_string(),
            ProgramStats {
                run_count,
                run_time_ns,
                ns_per_run: run_time_ns / run_count,
            },
        );
    }
    out
}

#[derive(Default)]
pub(crate) struct Counters {
    events: [AtomicU64; kind::COUNT as usize],
    lost_queue: [AtomicU64; kind::COUNT as usize],
    decode_errors: AtomicU64,
    processes: AtomicU64,
    processes_swept: AtomicU64,
    containers: container::SharedStatus,
}

/// Offsets passed to the programs as the global `OFFSETS`.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct OffsetsPod(Offsets);
// SAFETY: Offsets is #[repr(C)], all u32, no padding.
unsafe impl aya::Pod for OffsetsPod {}

/// Programs in the object and where they attach.
enum Attach {
    Tp(&'static str, &'static str),
    BtfTp(&'static str),
}

/// A program attached to the tracepoint of its own name in `category`.
const fn tp(category: &'static str, name: &'static str) -> (&'static str, Attach) {
    (name, Attach::Tp(category, name))
}

/// A program attached to the BTF-enabled raw tracepoint of its own name.
const fn btf_tp(name: &'static str) -> (&'static str, Attach) {
    (name, Attach::BtfTp(name))
}

const PROGRAMS: &[(&str, Attach)] = &[
    tp("sched", "sched_process_exec"),
    btf_tp("sched_process_fork"),
    tp("sched", "sched_process_exit"),
    tp("syscalls", "sys_enter_socket"),
    tp("syscalls", "sys_enter_socketpair"),
    tp("syscalls", "sys_enter_bind"),
    tp("syscalls", "sys_exit_bind"),
    tp("syscalls", "sys_enter_connect"),
    tp("syscalls", "sys_exit_connect"),
    tp("syscalls", "sys_enter_mknodat"),
    tp("syscalls", "sys_enter_mknod"),
    tp("syscalls", "sys_enter_openat"),
    tp("syscalls", "sys_exit_openat"),
    tp("syscalls", "sys_enter_open"),
    tp("syscalls", "sys_exit_open"),
    tp("syscalls", "sys_enter_openat2"),
    tp("syscalls", "sys_exit_openat2"),
    tp("sock", "inet_sock_set_state"),
    tp("syscalls", "sys_exit_accept4"),
    tp("syscalls", "sys_exit_accept"),
    tp("io_uring", "io_uring_submit_req"),
    tp("io_uring", "io_uring_complete"),
];

/// The running kernel sensor. Dropping it without [`KernelSensor::shutdown`] detaches the programs
/// when the reader task ends.
pub struct KernelSensor {
    ebpf: Arc<Mutex<Ebpf>>,
    counters: Arc<Counters>,
    attached: Vec<String>,
    refused: Vec<Refused>,
    ring_buffer_bytes: u32,
    /// Stops the reader; `true`: hand every record left in the ring buffer to the consumer first.
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing when it is not there (a fresh machine does not mount it).
pub fn ensure_tracefs() -> Result<(), KernelError> {
    if std::path::Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(KernelError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!(message = "mounted tracefs at /sys/kernel/tracing (it was not mounted)");
    Ok(())
}

/// Finds the kernel struct offsets the programs need in the running kernel's BTF. Missing ones stay
/// `Offsets::MISSING` (the programs then skip the read) and are named in the returned list.
pub fn kernel_offsets(btf: &btf::Btf) -> (Offsets, Vec<String>) {
    let mut o = Offsets::missing();
    let mut missing = Vec::new();
    let mut get = |s: &str, m: &str| {
        btf.offset_of(s, m).unwrap_or_else(|| {
            missing.push(format!("{s}.{m}"));
            Offsets::MISSING
        })
    };
    o.task_real_parent = get("task_struct", "real_parent");
    o.task_tgid = get("task_struct", "tgid");
    o.task_pid = get("task_struct", "pid");
    o.task_mm = get("task_struct", "mm");
    o.task_files = get("task_struct", "files");
    o.task_exit_code = get("task_struct", "exit_code");
    o.mm_arg_start = get("mm_struct", "arg_start");
    o.mm_arg_end = get("mm_struct", "arg_end");
    o.files_fdt = get("files_struct", "fdt");
    o.fdtable_fd = get("fdtable", "fd");
    o.fdtable_max_fds = get("fdtable", "max_fds");
    o.file_f_inode = get("file", "f_inode");
    o.inode_i_mode = get("inode", "i_mode");
    o.tcp_bytes_sent = get("tcp_sock", "bytes_sent");
    o.tcp_bytes_received = get("tcp_sock", "bytes_received");
    o.file_private_data = get("file", "private_data");
    o.socket_sk = get("socket", "sk");
    o.kiocb_cmd = get("io_kiocb", "cmd");
    o.io_open_dfd = get("io_open", "dfd");
    o.io_open_file_slot = get("io_open", "file_slot");
    o.io_open_filename = get("io_open", "filename");
    o.io_open_how = get("io_open", "how");
    o.filename_name = get("filename", "name");
    o.io_socket_domain = get("io_socket", "domain");
    o.io_socket_type = get("io_socket", "type");
    o.io_socket_protocol = get("io_socket", "protocol");
    o.kiocb_async_data = get("io_kiocb", "async_data");
    o.kiocb_cqe = get("io_kiocb", "cqe");
    o.cqe_fd = get("io_cqe", "fd");
    o.async_msghdr_addr = get("io_async_msghdr", "addr");
    o.io_connect_addr_len = get("io_connect", "addr_len");
    o.io_bind_addr_len = get("io_bind", "addr_len");
    (o, missing)
}

impl KernelSensor {
    /// Loads and attaches the kernel programs and starts the reader. Events arrive on the receiver.
    pub async fn start(
        cfg: &KernelConfig,
    ) -> Result<(KernelSensor, mpsc::Receiver<correlator::Event>), KernelError> {
        let rb = cfg.ring_buffer_bytes;
        preflight(rb)?;
        if cfg.queue_capacity == 0 {
            return Err(KernelError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }
        ensure_tracefs()?;
        let kbtf = btf::Btf::from_sys_fs()
            .map_err(|e| KernelError::Load(format!("reading /sys/kernel/btf/vmlinux: {e}")))?;
        let (mut offsets, missing) = kernel_offsets(&kbtf);
        if !missing.is_empty() {
            tracing::warn!(message = "kernel struct members not found in BTF; dependent fields stay empty", missing = ?missing);
        }
        offsets.wakeup_bytes = if cfg.wakeup_bytes == 0 {
            rb / 4
        } else {
            cfg.wakeup_bytes.min(rb)
        };
        let pod = OffsetsPod(offsets);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", rb)
            .override_global("OFFSETS", &pod, true)
            .override_global("CGROUP_IDS", &u32::from(cfg.containers.enabled), true)
            .load(EBPF_OBJECT)
            .map_err(|e| KernelError::Load(format!("{e:#}")))?;
        let (attached, refused) = attach_programs(&mut ebpf, &cfg.programs)?;
        let ring = take_ring(&mut ebpf, rb)?;
        // SAFETY: the Ring owns its map fd; it stays open and the same for as long as the AsyncFd
        // (which owns the Ring) lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| {
                KernelError::RingBuf(format!("registering the ring buffer with tokio: {e}"))
            })?;

        let host = HostInfo::from_system();
        let counters = Arc::new(Counters::default());
        let containers = container::Containers::new(&cfg.containers, counters.containers.clone());
        let table = ProcessTable::seed_from_proc(&host.id, containers);
        tracing::info!(
            message = "kernel sensor attached",
            programs = attached.len(),
            refused = refused.len(),
            processes = table.len(),
            ring_buffer_bytes = rb
        );
        let ebpf = Arc::new(Mutex::new(ebpf));
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let reader = Reader {
            fd,
            decoder: Decoder::new(host, table),
            tx,
            counters: counters.clone(),
            ebpf: ebpf.clone(),
            poll: Duration::from_millis(cfg.poll_interval_ms.max(1)),
            log_every: (cfg.status_log_interval_s > 0)
                .then(|| Duration::from_secs(cfg.status_log_interval_s)),
        };
        let handle = tokio::spawn(reader.run(stop_rx));
        Ok((
            KernelSensor {
                ebpf,
                counters,
                attached,
                refused,
                ring_buffer_bytes: rb,
                stop: Some(stop_tx),
                reader: Some(handle),
            },
            rx,
        ))
    }

    /// Attached and refused programs, events and losses per kind.
    pub fn status(&self) -> KernelStatus {
        let (lost, stats) = lock(&self.ebpf)
            .map(|e| (lost_kernel(&e), program_stats(&e)))
            .unwrap_or_default();
        let mut s = status_from(
            &self.counters,
            &lost,
            self.attached.clone(),
            self.refused.clone(),
            self.ring_buffer_bytes,
        );
        s.program_stats = stats;
        s
    }

    /// Asks the reader to stop once it has handed every record still in the ring buffer to the
    /// queue, waiting for room as long as the consumer takes events (at most
    /// [`FINISH_PATIENCE`]; what is left then is counted as lost). The receiver ends (`None`) when
    /// it is done; keep receiving until then, and call [`KernelSensor::shutdown_with_status`].
    pub fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }

    /// Stops the reader (draining what is in the ring buffer first) and detaches the programs.
    pub async fn shutdown(self) {
        self.shutdown_with_status().await;
    }

    /// [`KernelSensor::shutdown`], returning the final status (every record read and counted).
    pub async fn shutdown_with_status(mut self) -> KernelStatus {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
        if let Some(h) = self.reader.take() {
            let _ = h.await;
        }
        self.status()
    }
}

/// What loading needs before anything is touched: root, an embedded eBPF object, and a valid ring
/// buffer size.
fn preflight(ring_buffer_bytes: u32) -> Result<(), KernelError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(KernelError::NotRoot(euid));
    }
    if EBPF_OBJECT.is_empty() {
        return Err(KernelError::NoObject);
    }
    if ring_buffer_bytes < 4096 || !ring_buffer_bytes.is_power_of_two() {
        return Err(KernelError::Config(format!(
            "ring_buffer_bytes = {ring_buffer_bytes}: must be a power of two and at least 4096"
        )));
    }
    Ok(())
}

/// The benchmark's floor (PERFORMANCE.md): attaches only the reference probe `floor_socket` (one
/// tracepoint on `sys_enter_socket`, a 24-byte record, no wakeup) and counts its records, polling
/// every 5 ms, until `stop` completes. Returns the records read. Not part of the product's data
/// path: it exists so that `cargo xtask bench sensor` can put the sensor next to the least any
/// probe costs on the same machine in the same run.
pub async fn floor_probe(
    ring_buffer_bytes: u32,
    stop: impl std::future::Future<Output = ()>,
    attached: impl FnOnce(),
) -> Result<u64, KernelError> {
    preflight(ring_buffer_bytes)?;
    ensure_tracefs()?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("FLOOR", ring_buffer_bytes)
        .map_max_entries("EVENTS", 4096)
        .load(EBPF_OBJECT)
        .map_err(|e| KernelError::Load(format!("{e:#}")))?;
    attach(
        &mut ebpf,
        "floor_socket",
        &Attach::Tp("syscalls", "sys_enter_socket"),
        None,
    )
    .map_err(KernelError::NothingAttached)?;
    let mut ring = RingBuf::try_from(
        ebpf.take_map("FLOOR")
            .ok_or_else(|| KernelError::RingBuf("map FLOOR not in the object".into()))?,
    )
    .map_err(|e| KernelError::RingBuf(e.to_string()))?;
    attached();
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        while ring.next().is_some() {
            n += 1;
        }
    }
    while ring.next().is_some() {
        n += 1;
    }
    Ok(n)
}

fn lock(m: &Mutex<Ebpf>) -> Option<std::sync::MutexGuard<'_, Ebpf>> {
    Some(m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Attaches the programs `wanted` names (all when empty): (attached labels, refused ones). An
/// unknown name is a configuration error; a program the kernel refuses is logged and reported,
/// and only none attached at all is an error.
fn attach_programs(
    ebpf: &mut Ebpf,
    wanted: &[String],
) -> Result<(Vec<String>, Vec<Refused>), KernelError> {
    for p in wanted {
        if !PROGRAMS
            .iter()
            .any(|(name, at)| p == name || *p == label_of(at))
        {
            let known = PROGRAMS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(KernelError::Config(format!(
                "unknown program `{p}` in programs (known: {known})"
            )));
        }
    }
    let aya_btf = aya::Btf::from_sys_fs().ok();
    let mut attached = Vec::new();
    let mut refused = Vec::new();
    for (name, at) in PROGRAMS {
        let label = label_of(at);
        if !wanted.is_empty() && !wanted.iter().any(|p| p == name || *p == label) {
            continue;
        }
        match attach(ebpf, name, at, aya_btf.as_ref()) {
            Ok(()) => attached.push(label),
            Err(reason) => {
                tracing::warn!(message = "kernel program refused", program = %label, %reason);
                refused.push(Refused {
                    program: label,
                    reason,
                });
            }
        }
    }
    if attached.is_empty() {
        let why = refused
            .iter()
            .map(|r| format!("{}: {}", r.program, r.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(KernelError::NothingAttached(why));
    }
    Ok((attached, refused))
}

/// The `EVENTS` ring buffer of the loaded object, mapped for reading.
fn take_ring(ebpf: &mut Ebpf, rb: u32) -> Result<ring::Ring, KernelError> {
    match ebpf.take_map("EVENTS") {
        Some(aya::maps::Map::RingBuf(m)) => ring::Ring::new(m, rb as usize)
            .map_err(|e| KernelError::RingBuf(format!("mapping the ring buffer: {e}"))),
        Some(_) => Err(KernelError::RingBuf(
            "map EVENTS is not a ring buffer".into(),
        )),
        None => Err(KernelError::RingBuf("map EVENTS not in the object".into())),
    }
}

fn label_of(at: &Attach) -> String {
    match at {
        Attach::Tp(c, n) => format!("{c}/{n}"),
        Attach::BtfTp(n) => format!("tp_btf/{n}"),
    }
}

fn attach(ebpf: &mut Ebpf, name: &str, at: &Attach, btf: Option<&aya::Btf>) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the object"))?;
    match at {
        Attach::Tp(cat, tp) => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| format!("load: {e:#}"))?;
            p.attach(cat, tp).map_err(|e| format!("attach: {e:#}"))?;
        }
        Attach::BtfTp(tp) => {
            let btf = btf.ok_or("kernel BTF is not available")?;
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load(tp, btf).map_err(|e| format!("load: {e:#}"))?;
            p.attach().map_err(|e| format!("attach: {e:#}"))?;
        }
    }
    Ok(())
}

/// Sums the per-CPU reserve failure counters.
fn lost_kernel(ebpf: &Ebpf) -> [u64; kind::COUNT as usize] {
    let mut out = [0u64; kind::COUNT as usize];
    let Some(map) = ebpf.map("LOST") else {
        return out;
    };
    let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
        return out;
    };
    for (k, slot) in out.iter_mut().enumerate() {
        if let Ok(vals) = arr.get(&(k as u32), 0) {
            *slot = vals.iter().sum();
        }
    }
    out
}

fn status_from(
    c: &Counters,
    lost: &[u64; kind::COUNT as usize],
    attached: Vec<String>,
    refused: Vec<Refused>,
    ring_buffer_bytes: u32,
) -> KernelStatus {
    let mut s = KernelStatus {
        attached,
        refused,
        ring_buffer_bytes,
        decode_errors: c.decode_errors.load(Ordering::Relaxed),
        processes: usize::try_from(c.processes.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
        processes_swept: c.processes_swept.load(Ordering::Relaxed),
        containers: c.containers.lock().map(|g| g.clone()).unwrap_or_default(),
        ..KernelStatus::default()
    };
    for (k, &lost_k) in lost.iter().enumerate().skip(1) {
        let name = kind::NAMES[k].to_string();
        s.events
            .insert(name.clone(), c.events[k].load(Ordering::Relaxed));
        s.lost_kernel.insert(name.clone(), lost_k);
        s.lost_queue
            .insert(name, c.lost_queue[k].load(Ordering::Relaxed));
    }
    s
}

/// How long [`KernelSensor::finish`] waits for the consumer to make room for what is left.
pub const FINISH_PATIENCE: Duration = Duration::from_secs(5);

/// How a [`Reader::drain`] ended.
enum Drained {
    /// The ring buffer is empty.
    Empty,
    /// The queue is full; records are left in the ring buffer.
    Full,
    /// The receiver has been dropped.
    Closed,
}

struct Reader {
    fd: AsyncFd<ring::Ring>,
    decoder: Decoder,
    tx: mpsc::Sender<correlator::Event>,
    counters: Arc<Counters>,
    ebpf: Arc<Mutex<Ebpf>>,
    poll: Duration,
    log_every: Option<Duration>,
}

impl Reader {
    async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_log = tokio::time::Instant::now();
        let mut last_lost = 0u64;
        // The queue was full at the last drain: records wait in the ring buffer (which is where
        // they are cheapest to keep) until the consumer has made room, instead of being decoded
        // only to be dropped.
        let mut backlog = false;
        let mut patient = false;
        loop {
            if backlog {
                tokio::select! {
                    r = &mut stop => {
                        patient = matches!(r, Ok(true));
                        break;
                    }
                    permit = self.tx.reserve() => if permit.is_err() {
                        break; // the consumer is gone
                    },
                }
            } else {
                tokio::select! {
                    r = &mut stop => {
                        patient = matches!(r, Ok(true));
                        break;
                    }
                    r = self.fd.readable_mut() => match r {
                        Ok(mut g) => {
                            g.clear_ready();
                        }
                        Err(e) => {
                            tracing::error!(message = "ring buffer poll failed; reading on the timer only", error = %e);
                            tick.tick().await;
                        }
                    },
                    _ = tick.tick() => {}
                }
            }
            match self.drain(false) {
                Drained::Closed => break,
                Drained::Full => backlog = true,
                Drained::Empty => backlog = false,
            }
            if let Some(every) = self.log_every {
                if last_log.elapsed() >= every {
                    last_log = tokio::time::Instant::now();
                    last_lost = self.log_status(last_lost);
                }
            }
        }
        // Stopping: whatever is still in the ring buffer is read now. With `finish`, the reader
        // waits for room while the consumer makes progress; what the queue cannot take (at once,
        // or after the patience ran out) is counted as lost, so that delivered + lost always
        // equals what the kernel produced.
        let deadline = tokio::time::Instant::now() + FINISH_PATIENCE;
        if patient {
            loop {
                match self.drain(false) {
                    Drained::Empty | Drained::Closed => break,
                    Drained::Full => {
                        let room = tokio::time::timeout_at(deadline, self.tx.reserve()).await;
                        if !matches!(room, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
        }
        self.drain(true);
        if self.log_every.is_some() {
            self.log_status(last_lost);
        }
        tracing::debug!(
            message = "kernel sensor reader stopped",
            fd = self.fd.get_ref().as_raw_fd()
        );
    }

    /// Reads records from the ring buffer until it is empty, the queue is full (when
    /// `drop_when_full` is false: the rest stays in the ring buffer) or the receiver is gone.
    /// With `drop_when_full`, every record is read: those the queue cannot take (full, or its
    /// receiver gone) are decoded for the process table and counted as lost.
    fn drain(&mut self, drop_when_full: bool) -> Drained {
        let Reader {
            fd,
            decoder,
            tx,
            counters,
            ..
        } = self;
        decoder.table_mut().refresh_containers();
        let mut outcome = Drained::Empty;
        let r = fd.get_mut().drain(|rec| {
            let permit = match tx.try_reserve() {
                Ok(p) => Some(p),
                Err(mpsc::error::TrySendError::Closed(())) if !drop_when_full => {
                    outcome = Drained::Closed;
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(())) if !drop_when_full => {
                    outcome = Drained::Full;
                    return false;
                }
                Err(_) => None,
            };
            match decoder.decode(rec) {
                Ok(Some((k, ev))) => {
                    if let Some(p) = permit {
                        p.send(ev);
                        counters.events[k as usize].fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.lost_queue[k as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let n = counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    if n < 10 {
                        tracing::warn!(message = "undecodable kernel record", error = %e);
                    }
                }
            }
            true
        });
        if let Err(e) = r {
            // Cannot happen with a kernel ring buffer; if it did, nothing after it can be read.
            let n = counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            if n < 10 {
                tracing::error!(message = "ring buffer layout not understood; reading stops", error = %e);
            }
            outcome = Drained::Closed;
        }
        counters
            .processes
            .store(decoder.table_len() as u64, Ordering::Relaxed);
        counters
            .processes_swept
            .store(decoder.table().swept(), Ordering::Relaxed);
        outcome
    }

    fn log_status(&self, last_lost: u64) -> u64 {
        let lost = lock(&self.ebpf)
            .map(|e| lost_kernel(&e))
            .unwrap_or_default();
        let s = status_from(&self.counters, &lost, Vec::new(), Vec::new(), 0);
        let total_lost: u64 = s.lost_kernel.values().chain(s.lost_queue.values()).sum();
        let events: u64 = s.events.values().sum();
        if total_lost > last_lost {
            tracing::warn!(message = "kernel sensor status: events LOST", events, lost = total_lost, lost_kernel = ?s.lost_kernel, lost_queue = ?s.lost_queue);
        } else {
            tracing::info!(
                message = "kernel sensor status",
                events,
                lost = total_lost,
                processes = s.processes
            );
        }
        total_lost
    }
}
