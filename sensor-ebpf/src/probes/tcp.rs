//! TCP: connection state changes (`inet_sock_set_state`), per-socket byte counts, and accepted
//! connections (the accepting process).

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext,
};
use sensor_common::{flags, kind, op, Header, TcpAddr, TcpRecord, TcpTrack};

use super::fifo::fd_file;
use crate::{arg, fill_header, kread, submit, TCP};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
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
