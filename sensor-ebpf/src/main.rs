//! Kernel programs of the sensor: tracepoints only (LSM, fentry and kprobes are refused on the
//! project's kernels), all feeding the one ring buffer `EVENTS` with the `#[repr(C)]` records of
//! `sensor-common`. Programs only observe: they never change what a syscall does.
//!
//! Submits never wake the reader (`BPF_RB_NO_WAKEUP`) until the buffer holds more than
//! `OFFSETS.wakeup_bytes`; the daemon also polls on a timer. A reserve failure (buffer full) is counted
//! per record kind in `LOST`.
#![no_std]
#![no_main]
#![deny(warnings)]
#![allow(clippy::missing_safety_doc)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{
            bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns,
            bpf_probe_read_kernel as raw_read_kernel,
            bpf_probe_read_user as raw_read_user,
        },
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use sensor_common::{
    flags, kind, op, ExecRecord, ExitRecord, FifoRecord, ForkRecord, Header, Lineage, Offsets,
    Pending, SocketRecord, TcpAddr, TcpRecord, TcpTrack, UnixAddrRecord, UringPending, ARGS_MAX,
    PATH_MAX, UNIX_PATH_MAX,
};

/// Struct offsets and the wakeup mark, written by the loader (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: Offsets = Offsets::missing();

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

/// Syscall entry state (openat/bind/connect), by thread id.
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
const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const AT_FDCWD: i32 = -100;
const AF_UNIX: u16 = 1;
const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;

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
        off(global(&OFFSETS.$f))
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
        (*l).cgroup_id = bpf_get_current_cgroup_id();
        (*l).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}

macro_rules! reserve {
    ($t:ty, $k:expr) => {
        match EVENTS.reserve::<$t>(0) {
            Some(e) => e,
            None => {
                count_lost($k);
                return Ok(());
            }
        }
    };
}

// ---------------------------------------------------------------- processes

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let mut entry = reserve!(ExecRecord, kind::EXEC);
    let r: *mut ExecRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::EXEC);
        fill_lineage(&raw mut (*r).lin);
        let loc: u32 = arg(ctx, 8);
        let old_pid: u32 = arg(ctx, 16);
        (*r).old_pid = old_pid;
        (*r).args_len = 0;
        (*r).args_total = 0;
        (*r)._pad = 0;
        (*r).filename[0] = 0;
        (*r).args[0] = 0;
        let src = (ctx.as_ptr_u8()).add((loc & 0xffff) as usize);
        if bpf_probe_read_kernel_str_bytes(src, &mut (*r).filename).is_err() {
            (*r).filename[0] = 0;
        }
        let task = bpf_get_current_task();
        let mm: Option<u64> = kread(task, offset!(task_mm));
        if let Some(mm) = mm {
            let start: u64 = kread(mm, offset!(mm_arg_start)).unwrap_or(0);
            let end: u64 = kread(mm, offset!(mm_arg_end)).unwrap_or(0);
            if end > start && start != 0 {
                let total = end - start;
                let mut len = total;
                if len > ARGS_MAX as u64 {
                    len = ARGS_MAX as u64;
                    (*r).hdr.flags |= flags::ARGS_TRUNCATED;
                }
                (*r).args_total = total as u32;
                let len = bounded(len as u32, ARGS_MAX as u32);
                if len > 0
                    && raw_read_user(
                        (&raw mut (*r).args).cast(),
                        len,
                        start as *const core::ffi::c_void,
                    ) == 0
                {
                    (*r).args_len = len;
                }
            }
        }
    }
    submit(entry);
    Ok(())
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

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let child: u64 = ctx.arg(1);
    let (pid, tgid): (Option<u32>, Option<u32>) = unsafe {
        (
            kread(child, offset!(task_pid)),
            kread(child, offset!(task_tgid)),
        )
    };
    let (Some(pid), Some(tgid)) = (pid, tgid) else {
        return Ok(());
    };
    if pid != tgid {
        return Ok(()); // a new thread, not a new process
    }
    let mut entry = reserve!(ForkRecord, kind::FORK);
    let r: *mut ForkRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::FORK);
        fill_lineage(&raw mut (*r).lin);
        (*r).child_pid = pid;
        (*r)._pad = 0;
    }
    submit(entry);
    Ok(())
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let _ = try_exit();
    0
}

fn try_exit() -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return Ok(()); // a thread other than the leader
    }
    let mut entry = reserve!(ExitRecord, kind::EXIT);
    let r: *mut ExitRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::EXIT);
        fill_lineage(&raw mut (*r).lin);
        let task = bpf_get_current_task();
        (*r).exit_code = kread(task, offset!(task_exit_code)).unwrap_or(0);
        (*r)._pad = 0;
    }
    submit(entry);
    Ok(())
}

// ---------------------------------------------------------------- sockets

#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    let _ = try_socket(&ctx, op::SOCKET);
    0
}

/// Reference probe for `cargo xtask bench sensor`, never attached by the sensor: the floor that
/// PERFORMANCE.md measures (one syscall tracepoint, a 24-byte record, no wakeup, a reader polling
/// on a timer), so that the sensor's overhead is compared with the least any probe can cost.
#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn floor_socket(ctx: TracePointContext) -> u32 {
    if let Some(mut e) = FLOOR.reserve::<[u64; 3]>(0) {
        // SAFETY: offset 16 is `family` in the sys_enter_socket tracepoint format.
        let family: u64 = unsafe { arg(&ctx, 16) };
        // SAFETY: helpers without preconditions.
        let (t, id) = unsafe { (bpf_ktime_get_boot_ns(), bpf_get_current_pid_tgid()) };
        e.write([t, id, family]);
        e.submit(BPF_RB_NO_WAKEUP);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_socketpair")]
pub fn sys_enter_socketpair(ctx: TracePointContext) -> u32 {
    let _ = try_socket(&ctx, op::SOCKETPAIR);
    0
}

fn try_socket(ctx: &TracePointContext, o: u32) -> Result<(), i64> {
    let (family, ty, proto): (u64, u64, u64) =
        unsafe { (arg(ctx, 16), arg(ctx, 24), arg(ctx, 32)) };
    emit_socket(o, family as u32, ty as u32, proto as u32, 0)
}

/// Reports a socket creation (`flags`: header flags, e.g. [`flags::IO_URING`]).
#[inline(always)]
fn emit_socket(o: u32, family: u32, ty: u32, proto: u32, fl: u16) -> Result<(), i64> {
    let mut entry = reserve!(SocketRecord, kind::SOCKET);
    let r: *mut SocketRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::SOCKET);
        (*r).hdr.flags = fl;
        (*r).op = o;
        (*r).family = family;
        (*r).sock_type = ty;
        (*r).protocol = proto;
    }
    submit(entry);
    Ok(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = try_addr_enter(&ctx, op::BIND);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_addr_enter(&ctx, op::CONNECT);
    0
}

fn try_addr_enter(ctx: &TracePointContext, o: u32) -> Result<(), i64> {
    let (fd, addr, len): (u64, u64, u64) = unsafe { (arg(ctx, 16), arg(ctx, 24), arg(ctx, 32)) };
    if addr == 0 {
        return Ok(());
    }
    // Only AF_UNIX addresses go further (TCP comes from inet_sock_set_state).
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    if family != AF_UNIX {
        return Ok(());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let p = Pending {
        ptr: addr,
        op: o,
        arg: len as u32,
        fd: fd as i32,
        _pad: 0,
    };
    let _ = PENDING.insert(&tid, &p, 0);
    Ok(())
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let _ = try_addr_exit(&ctx, op::BIND);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_addr_exit(&ctx, op::CONNECT);
    0
}

fn try_addr_exit(ctx: &TracePointContext, o: u32) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(p) = (unsafe { PENDING.get(&tid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(&tid);
    if p.op != o {
        return Ok(());
    }
    let ret: i64 = unsafe { arg(ctx, 16) };
    let mut entry = reserve!(UnixAddrRecord, kind::UNIX_ADDR);
    let r: *mut UnixAddrRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::UNIX_ADDR);
        (*r).op = o;
        (*r).fd = p.fd;
        (*r).ret = ret as i32;
        (*r)._pad = 0;
        let mut n = p.arg.saturating_sub(2);
        if n > UNIX_PATH_MAX as u32 {
            n = UNIX_PATH_MAX as u32;
        }
        (*r).path_len = n;
        (*r).path = [0; UNIX_PATH_MAX];
        // The whole sun_path is read (abstract names may hold NULs); path_len says how much counts.
        let _ = raw_read_user(
            (&raw mut (*r).path).cast(),
            UNIX_PATH_MAX as u32,
            (p.ptr + 2) as *const core::ffi::c_void,
        );
    }
    submit(entry);
    Ok(())
}

// ---------------------------------------------------------------- FIFOs

#[tracepoint(category = "syscalls", name = "sys_enter_mknodat")]
pub fn sys_enter_mknodat(ctx: TracePointContext) -> u32 {
    let _ = try_mknod(&ctx, 16, 24, 32);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mknod")]
pub fn sys_enter_mknod(ctx: TracePointContext) -> u32 {
    let _ = try_mknod(&ctx, usize::MAX, 16, 24);
    0
}

fn try_mknod(
    ctx: &TracePointContext,
    dfd_at: usize,
    path_at: usize,
    mode_at: usize,
) -> Result<(), i64> {
    let mode: u64 = unsafe { ctx.read_at(mode_at).unwrap_or(0) };
    if (mode as u32) & S_IFMT != S_IFIFO {
        return Ok(());
    }
    let dfd: i64 = if dfd_at == usize::MAX {
        -100
    } else {
        unsafe { ctx.read_at(dfd_at).unwrap_or(-100) }
    };
    let path: u64 = unsafe { ctx.read_at(path_at).unwrap_or(0) };
    let mut entry = reserve!(FifoRecord, kind::FIFO_CREATE);
    let r: *mut FifoRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::FIFO_CREATE);
        (*r).op = op::FIFO_CREATE;
        (*r).flags = mode as u32;
        (*r).ret = 0;
        (*r).dfd = dfd as i32;
        (*r).path[0] = 0;
        if bpf_probe_read_user_str_bytes(path as *const u8, &mut (*r).path).is_err() {
            (*r).path[0] = 0;
        }
    }
    submit(entry);
    Ok(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // openat(dfd, filename, flags, mode)
    let (dfd, path, fl): (u64, u64, u64) = unsafe { (arg(&ctx, 16), arg(&ctx, 24), arg(&ctx, 32)) };
    open_enter(dfd as i32, path, fl as u32);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    // open(filename, flags, mode): relative to the working directory.
    let (path, fl): (u64, u64) = unsafe { (arg(&ctx, 16), arg(&ctx, 24)) };
    open_enter(AT_FDCWD, path, fl as u32);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    // openat2(dfd, filename, how, usize): the flags are the first u64 of `struct open_how`.
    let (dfd, path, how): (u64, u64, u64) =
        unsafe { (arg(&ctx, 16), arg(&ctx, 24), arg(&ctx, 32)) };
    let fl: u64 = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
    open_enter(dfd as i32, path, fl as u32);
    0
}

/// Remembers an open's path and flags until its exit decides whether it opened a FIFO.
#[inline(always)]
fn open_enter(dfd: i32, path: u64, fl: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let p = Pending {
        ptr: path,
        op: op::FIFO_OPEN,
        arg: fl,
        fd: dfd,
        _pad: 0,
    };
    let _ = PENDING.insert(&tid, &p, 0);
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx);
    0
}

fn try_open_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(p) = (unsafe { PENDING.get(&tid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(&tid);
    if p.op != op::FIFO_OPEN {
        return Ok(());
    }
    let ret: i64 = unsafe { arg(ctx, 16) };
    if ret < 0 {
        return Ok(());
    }
    // Regular opens stop here: only an fd whose inode is a FIFO goes on.
    if !fd_is_fifo(ret as u64) {
        return Ok(());
    }
    let mut entry = reserve!(FifoRecord, kind::FIFO_OPEN);
    let r: *mut FifoRecord = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*r).hdr, kind::FIFO_OPEN);
        (*r).op = op::FIFO_OPEN;
        (*r).flags = p.arg;
        (*r).ret = ret as i32;
        (*r).dfd = p.fd;
        (*r).path[0] = 0;
        if bpf_probe_read_user_str_bytes(p.ptr as *const u8, &mut (*r).path).is_err() {
            (*r).path[0] = 0;
        }
    }
    submit(entry);
    Ok(())
}

/// `current->files->fdt->fd[fd]`: the `struct file *` of one of the running task's fds.
#[inline(always)]
unsafe fn fd_file(fd: u64) -> Option<u64> {
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task, offset!(task_files))?;
        let fdt: u64 = kread(files, offset!(files_fdt))?;
        let max: u32 = kread(fdt, offset!(fdtable_max_fds))?;
        if fd >= max as u64 {
            return None;
        }
        let fds: u64 = kread(fdt, offset!(fdtable_fd))?;
        kread(fds + fd * 8, Some(0))
    }
}

/// Whether the running task's `fd` is a FIFO (false when the kernel objects cannot be read).
#[inline(always)]
fn fd_is_fifo(fd: u64) -> bool {
    let mode = unsafe { fd_mode(fd) }.unwrap_or(0);
    (mode as u32) & S_IFMT == S_IFIFO
}

/// `current->files->fdt->fd[fd]->f_inode->i_mode`.
#[inline(always)]
unsafe fn fd_mode(fd: u64) -> Option<u16> {
    unsafe {
        let file = fd_file(fd)?;
        let inode: u64 = kread(file, offset!(file_f_inode))?;
        kread(inode, offset!(inode_i_mode))
    }
}

// ---------------------------------------------------------------- TCP

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_tcp(&ctx);
    0
}

fn try_tcp(ctx: &TracePointContext) -> Result<(), i64> {
    let proto: u16 = unsafe { arg(ctx, 30) };
    if proto != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = unsafe { arg(ctx, 8) };
    let old: i32 = unsafe { arg(ctx, 16) };
    let new: i32 = unsafe { arg(ctx, 20) };
    let now = unsafe { bpf_ktime_get_boot_ns() };

    // An outbound connection is tracked from SYN_SENT (in the caller's context, so the process is
    // known) but reported when it leaves SYN_SENT: at that point the kernel has bound the source
    // port (connect() moves to SYN_SENT before it picks one), so `tcp_connect` carries both ends.
    // A refused or timed-out attempt is reported too (SYN_SENT -> CLOSE), followed by its close.
    //
    // An inbound connection becomes established in softirq context, where the running task is not
    // the owner: it is tracked then and reported as `tcp_accept` when accept() returns it, in the
    // accepting process (`sys_exit_accept4`/`sys_exit_accept`). One that is closed without having
    // been accepted that way (io_uring, or never accepted) is reported at its close.
    let start = if new == TCP_SYN_SENT {
        Some(1u32)
    } else if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        Some(2u32)
    } else {
        None
    };
    if let Some(dir) = start {
        let mut track = TcpTrack {
            hdr: Header {
                kind: kind::TCP,
                flags: 0,
                pid: 0,
                tid: 0,
                uid: 0,
                gid: 0,
                _pad: 0,
                ktime_ns: now,
            },
            start_ns: now,
            direction: dir,
            reported: 0,
            addr: tcp_addr(ctx),
        };
        if dir == 1 {
            unsafe { fill_header(&raw mut track.hdr, kind::TCP) };
        } else {
            track.hdr.flags = flags::NO_PROCESS;
        }
        let _ = TCP.insert(&sk, &track, 0);
        return Ok(());
    }
    let Some(t) = TCP.get_ptr_mut(&sk) else {
        return Ok(());
    };
    // SAFETY: a value of the TCP map; only this socket's transitions (serialised by its lock)
    // and its accept() touch it.
    unsafe {
        (*t).addr = tcp_addr(ctx);
        if old == TCP_SYN_SENT && (*t).reported == 0 {
            (*t).reported = 1;
            let track = *t;
            emit_tcp(&track, op::TCP_CONNECT, now, 0, 0, 0)?;
            if new != TCP_CLOSE {
                return Ok(());
            }
        }
    }
    if (new == TCP_FIN_WAIT1 && old == TCP_ESTABLISHED)
        || (new == TCP_LAST_ACK && old == TCP_CLOSE_WAIT)
    {
        // close()/shutdown() by the owner, in its own context.
        unsafe {
            if (*t).hdr.flags & flags::NO_PROCESS != 0 {
                fill_header(&raw mut (*t).hdr, kind::TCP);
            }
        }
        return Ok(());
    }
    if new == TCP_CLOSE {
        let track = unsafe { *t };
        let _ = TCP.remove(&sk);
        if track.reported == 0 {
            let o = if track.direction == 1 {
                op::TCP_CONNECT
            } else {
                op::TCP_ACCEPT
            };
            emit_tcp(&track, o, track.start_ns, 0, 0, 0)?;
        }
        let sent: u64 = unsafe { kread(sk, offset!(tcp_bytes_sent)) }.unwrap_or(0);
        let recv: u64 = unsafe { kread(sk, offset!(tcp_bytes_received)) }.unwrap_or(0);
        emit_tcp(
            &track,
            op::TCP_CLOSE,
            now,
            now.saturating_sub(track.start_ns),
            sent,
            recv,
        )?;
    }
    Ok(())
}

/// The connection's ends from the `inet_sock_set_state` record.
#[inline(always)]
fn tcp_addr(ctx: &TracePointContext) -> TcpAddr {
    // SAFETY: offsets of the sock/inet_sock_set_state tracepoint format.
    unsafe {
        let family: u16 = arg(ctx, 28);
        let mut a = TcpAddr {
            family,
            sport: arg(ctx, 24),
            dport: arg(ctx, 26),
            _pad: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        if family == 2 {
            let s: [u8; 4] = arg(ctx, 32);
            let d: [u8; 4] = arg(ctx, 36);
            a.saddr[..4].copy_from_slice(&s);
            a.daddr[..4].copy_from_slice(&d);
        } else {
            a.saddr = arg(ctx, 40);
            a.daddr = arg(ctx, 56);
        }
        a
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = try_accept_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_accept_exit(&ctx);
    0
}

/// accept() returned a socket: if it is a tracked inbound TCP connection not yet reported, the
/// running task is its owner; report `tcp_accept` with it.
fn try_accept_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let ret: i64 = unsafe { arg(ctx, 16) };
    if ret < 0 {
        return Ok(());
    }
    // SAFETY: reads through bpf_probe_read_kernel; any failure ends the lookup.
    let sk: Option<u64> = unsafe {
        fd_file(ret as u64)
            .and_then(|file| kread::<u64>(file, offset!(file_private_data)))
            .and_then(|sock| kread::<u64>(sock, offset!(socket_sk)))
    };
    let Some(sk) = sk else { return Ok(()) };
    let Some(t) = TCP.get_ptr_mut(&sk) else {
        return Ok(());
    };
    // SAFETY: a value of the TCP map (see try_tcp).
    unsafe {
        if (*t).direction != 2 || (*t).reported != 0 {
            return Ok(());
        }
        fill_header(&raw mut (*t).hdr, kind::TCP);
        (*t).reported = 1;
        let track = *t;
        let now = bpf_ktime_get_boot_ns();
        emit_tcp(&track, op::TCP_ACCEPT, now, 0, 0, 0)
    }
}

#[inline(always)]
fn emit_tcp(
    t: &TcpTrack,
    o: u32,
    now: u64,
    duration: u64,
    sent: u64,
    recv: u64,
) -> Result<(), i64> {
    let mut entry = reserve!(TcpRecord, kind::TCP);
    let r: *mut TcpRecord = entry.as_mut_ptr();
    unsafe {
        (*r).hdr = t.hdr;
        (*r).hdr.kind = kind::TCP;
        (*r).hdr.ktime_ns = now;
        (*r).op = o;
        (*r).family = t.addr.family;
        (*r).sport = t.addr.sport;
        (*r).dport = t.addr.dport;
        (*r).direction = t.direction as u16;
        (*r)._pad = 0;
        (*r).saddr = t.addr.saddr;
        (*r).daddr = t.addr.daddr;
        (*r).start_ns = t.start_ns;
        (*r).duration_ns = duration;
        (*r).bytes_sent = sent;
        (*r).bytes_received = recv;
    }
    submit(entry);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

// ---------------------------------------------------------------- io_uring

/// `IORING_OP_*` opcodes (uapi `io_uring.h`).
const IORING_OP_CONNECT: u8 = 16;
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;
const IORING_OP_SOCKET: u8 = 45;
const IORING_OP_BIND: u8 = 56;

/// An io_uring request was submitted (after its preparation, so the kernel holds its arguments).
/// Operations submitted through io_uring make no syscall of their own, so the syscall tracepoints
/// never see them: a socket created, an AF_UNIX address bound or connected to, or a FIFO opened
/// this way would otherwise pass unseen. Sockets are reported here (as `sys_enter_socket` reports
/// them at entry); opens and AF_UNIX binds/connects are remembered until their completion gives
/// the result.
#[tracepoint(category = "io_uring", name = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let _ = try_uring_submit(&ctx);
    0
}

/// A zeroed pending entry for `req`, in the map.
#[inline(always)]
fn uring_slot(req: u64, o: u32, user_data: u64) -> Option<*mut UringPending> {
    let zero = UringPending {
        op: o,
        arg: 0,
        fd: AT_FDCWD,
        file_slot: 0,
        user_data,
        path: [0; PATH_MAX],
    };
    URING.insert(&req, &zero, 0).ok()?;
    URING.get_ptr_mut(&req)
}

fn try_uring_submit(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets of the io_uring/io_uring_submit_req tracepoint format.
    let (req, user_data, opcode): (u64, u64, u8) =
        unsafe { (arg(ctx, 16), arg(ctx, 24), arg(ctx, 32)) };
    let Some(cmd) = off(global(&OFFSETS.kiocb_cmd)).map(|o| req + o as u64) else {
        return Ok(());
    };
    match opcode {
        IORING_OP_SOCKET => {
            let (family, ty, proto): (Option<i32>, Option<i32>, Option<i32>) = unsafe {
                (
                    kread(cmd, offset!(io_socket_domain)),
                    kread(cmd, offset!(io_socket_type)),
                    kread(cmd, offset!(io_socket_protocol)),
                )
            };
            emit_socket(
                op::SOCKET,
                family.unwrap_or(-1) as u32,
                ty.unwrap_or(0) as u32,
                proto.unwrap_or(0) as u32,
                flags::IO_URING,
            )?;
        }
        IORING_OP_OPENAT | IORING_OP_OPENAT2 => {
            let Some(v) = uring_slot(req, op::FIFO_OPEN, user_data) else {
                return Ok(());
            };
            // SAFETY: v points to the map value just inserted; kread/probe reads check addresses.
            unsafe {
                (*v).fd = kread(cmd, offset!(io_open_dfd)).unwrap_or(AT_FDCWD);
                (*v).file_slot = kread(cmd, offset!(io_open_file_slot)).unwrap_or(0);
                let how: Option<u64> = off(global(&OFFSETS.io_open_how)).map(|o| cmd + o as u64);
                (*v).arg = how.and_then(|h| kread::<u64>(h, Some(0))).unwrap_or(0) as u32;
                let name: Option<u64> = kread(cmd, offset!(io_open_filename))
                    .and_then(|f: u64| kread(f, offset!(filename_name)));
                if let Some(n) = name {
                    if bpf_probe_read_kernel_str_bytes(n as *const u8, &mut (*v).path).is_err() {
                        (*v).path[0] = 0;
                    }
                }
            }
        }
        IORING_OP_CONNECT | IORING_OP_BIND => {
            // The preparation copied the address into the request's async data: the async data is
            // the `sockaddr_storage` itself on recent kernels, an `io_async_msghdr` holding it in
            // `addr` on older ones. The first case is recognised by its family (the older layout
            // starts with an aligned pointer, whose low 16 bits are never 1).
            let Some(data) =
                unsafe { kread::<u64>(req, offset!(kiocb_async_data)) }.filter(|&a| a > KERNEL_MIN)
            else {
                return Ok(());
            };
            let family: u16 = unsafe { kread(data, Some(0)) }.unwrap_or(0);
            let addr = if family == AF_UNIX {
                data
            } else {
                let Some(a) = off(global(&OFFSETS.async_msghdr_addr)).map(|o| data + o as u64)
                else {
                    return Ok(());
                };
                if unsafe { kread::<u16>(a, Some(0)) } != Some(AF_UNIX) {
                    return Ok(());
                }
                a
            };
            let (o, len_at) = if opcode == IORING_OP_CONNECT {
                (op::CONNECT, offset!(io_connect_addr_len))
            } else {
                (op::BIND, offset!(io_bind_addr_len))
            };
            let len: i32 = unsafe { kread(cmd, len_at) }.unwrap_or(0);
            let fd: i32 = off(global(&OFFSETS.kiocb_cqe))
                .and_then(|c| unsafe { kread(req + c as u64, offset!(cqe_fd)) })
                .unwrap_or(-1);
            let Some(v) = uring_slot(req, o, user_data) else {
                return Ok(());
            };
            let n = (len - 2).clamp(0, UNIX_PATH_MAX as i32) as u32;
            // SAFETY: v points to the map value just inserted; the read is bounded by sun_path.
            unsafe {
                (*v).arg = n;
                (*v).fd = fd;
                // Into the first UNIX_PATH_MAX bytes of the path (zeroed when the read fails).
                let _ = raw_read_kernel(
                    (&raw mut (*v).path).cast(),
                    UNIX_PATH_MAX as u32,
                    (addr + 2) as *const core::ffi::c_void,
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Kernel addresses are above this; a small value is a missing pointer.
const KERNEL_MIN: u64 = 4096;

/// An io_uring request completed: for a remembered open, report it when it opened a FIFO; for a
/// remembered AF_UNIX bind/connect, report it with its result. The completion runs in the
/// submitting process or one of its io_uring threads, which share its file table, so a new fd is
/// looked up as for open(2).
#[tracepoint(category = "io_uring", name = "io_uring_complete")]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let _ = try_uring_complete(&ctx);
    0
}

fn try_uring_complete(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets of the io_uring/io_uring_complete tracepoint format.
    let (req, user_data, res): (u64, u64, i32) =
        unsafe { (arg(ctx, 16), arg(ctx, 24), arg(ctx, 32)) };
    let Some(v) = URING.get_ptr(&req) else {
        return Ok(());
    };
    // SAFETY: a map value, valid until removed below.
    let (o, a, fd, slot, ud) =
        unsafe { ((*v).op, (*v).arg, (*v).fd, (*v).file_slot, (*v).user_data) };
    if ud != user_data {
        // A stale entry (its request ended without this tracepoint) meeting a reuse of the memory.
    } else if o == op::FIFO_OPEN {
        // Only an open that gave an fd, and a FIFO at that, is reported.
        if res >= 0 && slot == 0 && fd_is_fifo(res as u64) {
            if let Some(mut entry) = EVENTS.reserve::<FifoRecord>(0) {
                let r: *mut FifoRecord = entry.as_mut_ptr();
                unsafe {
                    fill_header(&raw mut (*r).hdr, kind::FIFO_OPEN);
                    (*r).hdr.flags = flags::IO_URING;
                    (*r).op = op::FIFO_OPEN;
                    (*r).flags = a;
                    (*r).ret = res;
                    (*r).dfd = fd;
                    if bpf_probe_read_kernel_buf((*v).path.as_ptr(), &mut (*r).path).is_err() {
                        (*r).path[0] = 0;
                    }
                }
                submit(entry);
            } else {
                count_lost(kind::FIFO_OPEN);
            }
        }
    } else if let Some(mut entry) = EVENTS.reserve::<UnixAddrRecord>(0) {
        let r: *mut UnixAddrRecord = entry.as_mut_ptr();
        unsafe {
            fill_header(&raw mut (*r).hdr, kind::UNIX_ADDR);
            (*r).hdr.flags = flags::IO_URING;
            (*r).op = o;
            (*r).fd = fd;
            (*r).ret = res;
            (*r).path_len = a;
            (*r)._pad = 0;
            if bpf_probe_read_kernel_buf((*v).path.as_ptr(), &mut (*r).path).is_err() {
                (*r).path[0] = 0;
            }
        }
        submit(entry);
    } else {
        count_lost(kind::UNIX_ADDR);
    }
    let _ = URING.remove(&req);
    Ok(())
}
