//! Sockets: socket(2)/socketpair(2) creation, and AF_UNIX bind/connect (address read at entry,
//! reported at exit with the result; other families are dropped in the kernel).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_user as raw_read_user},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{kind, op, Pending, SocketRecord, UnixAddrRecord, UNIX_PATH_MAX};

use crate::{arg, fill_header, submit, AF_UNIX, BPF_RB_NO_WAKEUP, FLOOR, PENDING};
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
pub(super) fn emit_socket(o: u32, family: u32, ty: u32, proto: u32, fl: u16) -> Result<(), i64> {
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
