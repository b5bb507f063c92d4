//! FIFOs: mknod(2)/mknodat(2) of a FIFO, and opens whose opened file is a FIFO (decided at exit
//! from the fd's inode mode; regular opens are dropped in the kernel).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{kind, op, FifoRecord};

use crate::{arg, fill_header, kread, submit, OpenSlot, AT_FDCWD, OPEN_SLOTS, OPEN_SLOTS_N};

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
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
    if let Some(slot) = OPEN_SLOTS.get_ptr_mut(tid & (OPEN_SLOTS_N - 1)) {
        // SAFETY: an array map value of this type; this thread owns the slot until its exit.
        unsafe {
            *slot = OpenSlot {
                tid,
                flags: fl,
                dfd,
                _pad: 0,
                ptr: path,
            };
        }
    }
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
    let Some(slot) = OPEN_SLOTS.get_ptr_mut(tid & (OPEN_SLOTS_N - 1)) else {
        return Ok(());
    };
    // SAFETY: an array map value of this type.
    let p = unsafe { *slot };
    // This thread's entry (the slot is freed), or another thread's that shares the slot (left
    // alone: its own exit reads it), or none (the program attached during the call).
    let mine = p.tid == tid && tid != 0;
    if mine {
        // SAFETY: as above.
        unsafe { (*slot).tid = 0 };
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
        (*r).ret = ret as i32;
        (*r).path[0] = 0;
        if mine {
            (*r).flags = p.flags;
            (*r).dfd = p.dfd;
            if bpf_probe_read_user_str_bytes(p.ptr as *const u8, &mut (*r).path).is_err() {
                (*r).path[0] = 0;
            }
        } else {
            // The entry was lost to a thread sharing the slot: the FIFO open is still reported,
            // without path and flags.
            (*r).flags = 0;
            (*r).dfd = AT_FDCWD;
        }
    }
    submit(entry);
    Ok(())
}

/// `current->files->fdt->fd[fd]`: the `struct file *` of one of the running task's fds.
#[inline(always)]
pub(super) unsafe fn fd_file(fd: u64) -> Option<u64> {
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
pub(super) fn fd_is_fifo(fd: u64) -> bool {
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
