//! io_uring: operations submitted through a ring make no syscall of their own, so the syscall
//! tracepoints never see them: sockets, AF_UNIX binds/connects and FIFO opens are followed from
//! submission to completion here.

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes,
        generated::bpf_probe_read_kernel as raw_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{
    flags, kind, op, FifoRecord, UnixAddrRecord, UringPending, PATH_MAX, UNIX_PATH_MAX,
};

use super::fifo::fd_is_fifo;
use super::socket::emit_socket;
use crate::{
    arg, count_lost, fill_header, global, kread, off, submit, AF_UNIX, AT_FDCWD, EVENTS, OFFSETS,
    URING,
};
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
