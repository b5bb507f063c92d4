//! Process lifecycle: exec, fork (new processes only; threads are dropped here) and exit. These
//! are the only records carrying a `Lineage`: the process table is kept from them.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel_str_bytes,
        generated::bpf_probe_read_user as raw_read_user,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sensor_common::{flags, kind, ExecRecord, ExitRecord, ForkRecord, ARGS_MAX};

use crate::{arg, bounded, fill_header, fill_lineage, kread, submit, CtxPtr};
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
