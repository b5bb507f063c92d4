//! Kernel programs of the sensor: tracepoints only (LSM, fentry and kprobes are refused on the
//! project's kernels), all feeding the one ring buffer `EVENTS` with the `#[repr(C)]` records of
//! `sensor-common`. Programs only observe: they never change what a syscall does.
//!
//! Submits never wake the reader (`BPF_RB_NO_WAKEUP`) until the buffer holds more than
//! `OFFSETS.wakeup_bytes`; the daemon also polls on a timer. A reserve failure (buffer full) is counted
//! per record kind in `LOST`.
//!
//! This file holds what every program shares (maps, the `OFFSETS` global, header and lineage
//! fillers, the reserve/submit helpers); the programs are in `probes/`, one module per family.
#![no_std]
#![no_main]
#![deny(warnings)]
#![allow(clippy::missing_safety_doc)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_probe_read_kernel,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sensor_common::{
    kind, ExecRecord, ExitRecord, FifoRecord, ForkRecord, Header, Lineage, Offsets, Pending,
    SocketRecord, TcpRecord, TcpTrack, UnixAddrRecord, UringPending,
};

/// Struct offsets and the wakeup mark, written by the loader (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: Offsets = Offsets::missing();

/// Whether lifecycle records carry the cgroup id (container identity on), written by the loader;
/// 0 makes the verifier drop the helper call (a constant read from .rodata).
#[no_mangle]
static CGROUP_IDS: u32 = 1;

/// Every record type in one never-read global, so that the object's BTF describes them all: the
/// `kernel_layout` test compares that BTF with `sensor-common` as the daemon compiles it.
#[repr(C)]
pub struct RecordTypes {
    header: Header,
    lineage: Lineage,
    exec: ExecRecord,
    fork: ForkRecord,
    exit: ExitRecord,
    socket: SocketRecord,
    unix_addr: UnixAddrRecord,
    fifo: FifoRecord,
    tcp: TcpRecord,
    offsets: Offsets,
    pending: Pending,
    tcp_track: TcpTrack,
    uring_pending: UringPending,
}

#[no_mangle]
#[used]
static RECORD_TYPES: core::mem::MaybeUninit<RecordTypes> = core::mem::MaybeUninit::zeroed();

/// The one ring buffer (size set by the loader).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// The reference probe's ring buffer (`floor_socket`; size set by the loader when it is used).
#[map]
static FLOOR: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Reserve failures per record kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// An open(at/at2) between its entry and its exit: slot `tid & (OPEN_SLOTS_N - 1)` of
/// [`OPEN_SLOTS`]. Kernel-internal (never in a record).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenSlot {
    /// The thread the slot holds an open for (0: free).
    tid: u32,
    flags: u32,
    dfd: i32,
    _pad: u32,
    /// User pointer to the path.
    ptr: u64,
}

/// Slots of [`OPEN_SLOTS`] (a power of two).
const OPEN_SLOTS_N: u32 = 1 << 16;

/// Open entry state, indexed by thread id: an array slot (the verifier inlines the lookup, no
/// hashing, no lock, no element allocation) rather than a hash map entry, because every open on
/// the host passes here. Two threads whose ids are equal modulo the size and which are inside an
/// open at the same moment share a slot: the exit sees another thread's id and still reports a
/// FIFO open, without the path (see probes/fifo.rs).
#[map]
static OPEN_SLOTS: Array<OpenSlot> = Array::with_max_entries(OPEN_SLOTS_N, 0);

/// Syscall entry state (bind/connect), by thread id.
#[map]
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(16384, 0);

/// io_uring opens and AF_UNIX binds/connects between submission and completion, by request
/// (`struct io_kiocb *`).
#[map]
static URING: LruHashMap<u64, UringPending> = LruHashMap::with_max_entries(4096, 0);

/// Live TCP connections, by `struct sock *`.
#[map]
static TCP: LruHashMap<u64, TcpTrack> = LruHashMap::with_max_entries(65536, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const AT_FDCWD: i32 = -100;
const AF_UNIX: u16 = 1;

#[inline(always)]
fn off(v: u32) -> Option<usize> {
    if v == Offsets::MISSING {
        None
    } else {
        Some(v as usize)
    }
}

/// Reads a global the loader may have rewritten; volatile so that the compiler does not fold the
/// default value in.
#[inline(always)]
fn global(v: &u32) -> u32 {
    // SAFETY: `v` is a reference to a plain static.
    unsafe { core::ptr::read_volatile(v) }
}

macro_rules! offset {
    ($f:ident) => {
        $crate::off($crate::global(&$crate::OFFSETS.$f))
    };
}

/// Reads the tracepoint record field at `off` straight from the context: tracepoint programs may
/// load their context directly (the verifier checks the constant offset), which is several times
/// cheaper than a `bpf_probe_read_kernel` call per field.
///
/// # Safety
/// `off` must be a constant offset of a field of type `T` in the tracepoint's format.
#[inline(always)]
unsafe fn arg<T>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: the caller names a field of the record; the verifier rejects anything else.
    unsafe { core::ptr::read_volatile(ctx.as_ptr_u8().add(off).cast::<T>()) }
}

/// Reads a kernel value at `base + offset`.
#[inline(always)]
unsafe fn kread<T>(base: u64, offset: Option<usize>) -> Option<T> {
    let o = offset?;
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base as usize + o) as *const T).ok() }
}

/// Submits a record. The reader drains the buffer on a timer, so records go in without a wakeup,
/// except the one record whose reservation takes the unread data across the fill mark: that one
/// wakes the reader early, for a burst. Waking for every record past the mark instead would make
/// every traced syscall pay for a wakeup whenever the reader falls behind (or is stopped), which
/// is when the traced task can least afford it.
#[inline(always)]
fn submit<T>(entry: aya_ebpf::maps::ring_buf::RingBufEntry<T>) {
    let mark = global(&OFFSETS.wakeup_bytes) as u64;
    // The record as the ring buffer stores it: an 8-byte header, 8-byte aligned.
    let size = ((core::mem::size_of::<T>() + 8 + 7) & !7) as u64;
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let flags = if avail > mark && avail <= mark + size {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
}

#[inline(always)]
fn count_lost(k: u16) {
    if let Some(p) = LOST.get_ptr_mut(k as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Fills a header for the current task: who (pid, tid, uid, gid) and when. No parent pid and no
/// command name: userspace takes them from its process table, which the lifecycle records
/// ([`fill_lineage`]) keep. That keeps the records that come at high rates (sockets, opens,
/// connections) small and to the cheapest helpers.
#[inline(always)]
unsafe fn fill_header(h: *mut Header, k: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: h points into a ring buffer reservation of the right type.
    unsafe {
        (*h).kind = k;
        (*h).flags = 0;
        (*h).pid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).uid = uid_gid as u32;
        (*h).gid = (uid_gid >> 32) as u32;
        (*h)._pad = 0;
        (*h).ktime_ns = bpf_ktime_get_boot_ns();
    }
}

/// Fills the parent pid (`real_parent->tgid`), the cgroup v2 id and the command name of the current
/// task: exec, fork and exit records carry them, and the process table is kept from those.
#[inline(always)]
unsafe fn fill_lineage(l: *mut Lineage) {
    let task = unsafe { bpf_get_current_task() };
    let parent: Option<u64> = unsafe { kread(task, offset!(task_real_parent)) };
    let ppid: u32 = parent
        .and_then(|p| unsafe { kread(p, offset!(task_tgid)) })
        .unwrap_or(0);
    // SAFETY: l points into a ring buffer reservation of the right type.
    unsafe {
        (*l).ppid = ppid;
        (*l)._pad = 0;
        // The cgroup v2 id (container identity): one cheap helper, in the lifecycle records only.
        (*l).cgroup_id = if core::ptr::read_volatile(&raw const CGROUP_IDS) != 0 {
            bpf_get_current_cgroup_id()
        } else {
            0
        };
        (*l).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}

macro_rules! reserve {
    ($t:ty, $k:expr) => {
        match $crate::EVENTS.reserve::<$t>(0) {
            Some(e) => e,
            None => {
                $crate::count_lost($k);
                return Ok(());
            }
        }
    };
}

/// `v` clamped to `1..=max` in a way the verifier can follow (max is a power of two).
#[inline(always)]
fn bounded(v: u32, max: u32) -> u32 {
    let mut x = v;
    if x > max {
        x = max;
    }
    // The mask makes the upper bound visible to the verifier even if the compiler reorders the compare.
    let x = x & (2 * max - 1);
    if x > max {
        max
    } else {
        x
    }
}

trait CtxPtr {
    fn as_ptr_u8(&self) -> *const u8;
}
impl CtxPtr for TracePointContext {
    fn as_ptr_u8(&self) -> *const u8 {
        use aya_ebpf::EbpfContext;
        self.as_ptr() as *const u8
    }
}

mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
