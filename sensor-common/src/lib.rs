//! Record types that cross the kernel boundary. `#![no_std]`, `#[repr(C)]`, no pointers.
//!
//! Every record starts with a [`Header`] whose `kind` says which record follows. The kernel programs in
//! `sensor-ebpf` write these into one BPF ring buffer; the daemon (`sensor-kernel`) reads them back.
//! Layouts are pinned twice: by the `const` asserts at the bottom of this file (a change on one side
//! fails the build) and by the `kernel_layout` test, which compares them with the BTF of the compiled
//! eBPF object.
#![no_std]

/// Record kinds (`Header::kind`). Also the index into the per-CPU loss counter map.
pub mod kind {
    pub const EXEC: u16 = 1;
    pub const FORK: u16 = 2;
    pub const EXIT: u16 = 3;
    pub const SOCKET: u16 = 4;
    pub const UNIX_ADDR: u16 = 5;
    /// A FIFO creation ([`crate::FifoRecord`]).
    pub const FIFO_CREATE: u16 = 6;
    pub const TCP: u16 = 7;
    /// A FIFO open ([`crate::FifoRecord`]); a kind of its own so that losses are counted apart.
    pub const FIFO_OPEN: u16 = 8;
    /// One past the largest kind: the size of the loss counter map.
    pub const COUNT: u32 = 9;
    /// Names, indexed by kind (index 0 is unused).
    pub const NAMES: [&str; COUNT as usize] = [
        "none",
        "exec",
        "fork",
        "exit",
        "socket",
        "unix_addr",
        "fifo_create",
        "tcp",
        "fifo_open",
    ];
}

/// `Header::flags` bits.
pub mod flags {
    /// `ExecRecord::args` holds only the first `ARGS_MAX` bytes of the argument area.
    pub const ARGS_TRUNCATED: u16 = 1;
    /// A path did not fit its buffer and was cut.
    pub const PATH_TRUNCATED: u16 = 2;
    /// The acting process is unknown (the kernel was in interrupt context).
    pub const NO_PROCESS: u16 = 4;
    /// The operation was submitted through io_uring, not made by a syscall of its own.
    pub const IO_URING: u16 = 8;
}

/// Operation codes in records that carry more than one operation.
pub mod op {
    pub const SOCKET: u32 = 1;
    pub const SOCKETPAIR: u32 = 2;
    pub const BIND: u32 = 3;
    pub const CONNECT: u32 = 4;
    pub const FIFO_CREATE: u32 = 5;
    pub const FIFO_OPEN: u32 = 6;
    pub const TCP_CONNECT: u32 = 7;
    pub const TCP_ACCEPT: u32 = 8;
    pub const TCP_CLOSE: u32 = 9;
}

pub const COMM_LEN: usize = 16;
pub const PATH_MAX: usize = 256;
pub const ARGS_MAX: usize = 1024;
pub const UNIX_PATH_MAX: usize = 108;

/// Common prefix of every record: who (the acting task's ids) and when. Kept small: it is written
/// for every event, and the records that come at high rates (sockets, opens, connections) are
/// mostly header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included.
    pub ktime_ns: u64,
}

/// What the process lifecycle records (exec, fork, exit) add to the header. Userspace keeps its
/// process table from these; the other records take the parent and the name from that table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// Parent's process id (`real_parent->tgid`), 0 when the offsets were not found.
    pub ppid: u32,
    pub _pad: u32,
    /// `bpf_get_current_cgroup_id()`: the acting task's cgroup in the cgroup v2 (unified)
    /// hierarchy, the inode number of its directory there. Userspace resolves it to a cgroup path
    /// and a container. Only in the lifecycle records: the others take it from the process table.
    pub cgroup_id: u64,
    /// `task->comm` of the acting task.
    pub comm: [u8; COMM_LEN],
}

/// `sched/sched_process_exec`: a successful execve/execveat.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub hdr: Header,
    pub lin: Lineage,
    pub old_pid: u32,
    /// Bytes of `args` filled (NUL-separated argv, as in `/proc/pid/cmdline`).
    pub args_len: u32,
    /// Size of the whole argument area in the new process (larger than `args_len` when truncated).
    pub args_total: u32,
    pub _pad: u32,
    pub filename: [u8; PATH_MAX],
    pub args: [u8; ARGS_MAX],
}

/// `sched_process_fork` for a new process (threads are filtered out in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub hdr: Header,
    pub lin: Lineage,
    pub child_pid: u32,
    pub _pad: u32,
}

/// `sched/sched_process_exit` of a thread group leader.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub hdr: Header,
    pub lin: Lineage,
    /// `task->exit_code` (wait status encoding).
    pub exit_code: i32,
    pub _pad: u32,
}

/// socket(2) / socketpair(2) entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord {
    pub hdr: Header,
    /// [`op::SOCKET`] or [`op::SOCKETPAIR`].
    pub op: u32,
    pub family: u32,
    /// Socket type including `SOCK_NONBLOCK`/`SOCK_CLOEXEC` bits.
    pub sock_type: u32,
    pub protocol: u32,
}

/// bind(2) / connect(2) to an AF_UNIX address, reported at syscall exit with the result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UnixAddrRecord {
    pub hdr: Header,
    /// [`op::BIND`] or [`op::CONNECT`].
    pub op: u32,
    pub fd: i32,
    /// Syscall return value (0 or -errno).
    pub ret: i32,
    /// Bytes of `sun_path` given by the caller (addrlen - 2, at most 108).
    pub path_len: u32,
    /// `sun_path` as given: a leading NUL means the abstract namespace.
    pub path: [u8; UNIX_PATH_MAX],
    pub _pad: u32,
}

/// FIFO creation (mknod/mknodat with S_IFIFO) or an open(2) whose result is a FIFO (decided in the
/// kernel from the opened file's inode mode).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FifoRecord {
    pub hdr: Header,
    /// [`op::FIFO_CREATE`] or [`op::FIFO_OPEN`].
    pub op: u32,
    /// Open flags (`O_RDONLY`/`O_WRONLY`/`O_RDWR` ...) for an open, the mode for a creation.
    pub flags: u32,
    /// The new fd for an open; 0 for a creation (reported at entry).
    pub ret: i32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100).
    pub dfd: i32,
    pub path: [u8; PATH_MAX],
}

/// TCP connection start (`op::TCP_CONNECT`, `op::TCP_ACCEPT`) and end (`op::TCP_CLOSE`), from
/// `sock/inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRecord {
    pub hdr: Header,
    pub op: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// 1 outbound (connect), 2 inbound (accept).
    pub direction: u16,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub _pad: u32,
    pub start_ns: u64,
    /// Boot-time ns between start and close (0 on a start record).
    pub duration_ns: u64,
    /// `tcp_sock.bytes_sent` at close.
    pub bytes_sent: u64,
    /// `tcp_sock.bytes_received` at close.
    pub bytes_received: u64,
}

/// Kernel struct member offsets found at load time in `/sys/kernel/btf/vmlinux` (Rust eBPF has no
/// CO-RE) and passed to the programs in the global `OFFSETS`. A field that was not found is
/// `u32::MAX`; the programs then skip the read that needs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_mm: u32,
    pub task_files: u32,
    pub task_exit_code: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub tcp_bytes_sent: u32,
    pub tcp_bytes_received: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// Ring buffer fill (bytes) past which a submit wakes the reader; below it submits do not.
    pub wakeup_bytes: u32,
    /// `io_kiocb.cmd`: where a request's per-opcode data starts.
    pub kiocb_cmd: u32,
    pub io_open_dfd: u32,
    pub io_open_file_slot: u32,
    pub io_open_filename: u32,
    /// `io_open.how`; its first member is the open flags.
    pub io_open_how: u32,
    pub filename_name: u32,
    pub io_socket_domain: u32,
    pub io_socket_type: u32,
    pub io_socket_protocol: u32,
    /// `io_kiocb.async_data`: where bind/connect keep the kernel copy of the address.
    pub kiocb_async_data: u32,
    /// `io_kiocb.cqe` and `io_cqe.fd`: the request's fd, as submitted.
    pub kiocb_cqe: u32,
    pub cqe_fd: u32,
    /// `io_async_msghdr.addr`: the address (a `sockaddr_storage`).
    pub async_msghdr_addr: u32,
    pub io_connect_addr_len: u32,
    pub io_bind_addr_len: u32,
}

impl Offsets {
    pub const MISSING: u32 = u32::MAX;
    pub const fn missing() -> Offsets {
        let m = Offsets::MISSING;
        Offsets {
            task_real_parent: m,
            task_tgid: m,
            task_pid: m,
            task_mm: m,
            task_files: m,
            task_exit_code: m,
            mm_arg_start: m,
            mm_arg_end: m,
            files_fdt: m,
            fdtable_fd: m,
            fdtable_max_fds: m,
            file_f_inode: m,
            inode_i_mode: m,
            tcp_bytes_sent: m,
            tcp_bytes_received: m,
            file_private_data: m,
            socket_sk: m,
            wakeup_bytes: 0,
            kiocb_cmd: m,
            io_open_dfd: m,
            io_open_file_slot: m,
            io_open_filename: m,
            io_open_how: m,
            filename_name: m,
            io_socket_domain: m,
            io_socket_type: m,
            io_socket_protocol: m,
            kiocb_async_data: m,
            kiocb_cqe: m,
            cqe_fd: m,
            async_msghdr_addr: m,
            io_connect_addr_len: m,
            io_bind_addr_len: m,
        }
    }
}

/// Per-thread state between a syscall's entry and exit (key: thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// User pointer to the path (openat) or sockaddr (bind/connect).
    pub ptr: u64,
    /// [`op::FIFO_OPEN`], [`op::BIND`] or [`op::CONNECT`].
    pub op: u32,
    /// Open flags, or the addrlen.
    pub arg: u32,
    pub fd: i32,
    pub _pad: u32,
}

/// An io_uring request between its submission and its completion (key: the request, `struct
/// io_kiocb *`): an open, or an AF_UNIX bind/connect. The path is copied at submission: the kernel
/// frees its copy of an open's path before the request completes, and the caller's buffer could be
/// changed by then.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UringPending {
    /// [`op::FIFO_OPEN`], [`op::BIND`] or [`op::CONNECT`].
    pub op: u32,
    /// Open flags, or the `sun_path` length for bind/connect.
    pub arg: u32,
    /// Directory fd of an open, or the socket fd of a bind/connect.
    pub fd: i32,
    /// Non-zero: an open into the ring's fixed-file table, not to an fd.
    pub file_slot: u32,
    /// The request's `user_data` at submission: a completion with another one is a later use of
    /// the same request memory (whose own submission was not one of these), not this request.
    pub user_data: u64,
    /// The open's path, or the `sun_path` (bytes as given: a leading NUL is the abstract namespace).
    pub path: [u8; PATH_MAX],
}

/// Per-socket state between a TCP start and its close (key: `struct sock *`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpTrack {
    pub hdr: Header,
    pub start_ns: u64,
    pub direction: u32,
    /// 1 once the start record (`tcp_connect` / `tcp_accept`) has been emitted.
    pub reported: u32,
    pub addr: TcpAddr,
}

/// The two ends of a TCP connection as `inet_sock_set_state` gives them (ports in host order).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpAddr {
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Layout layout pins: a change to a record must change these numbers (and the BTF test) on purpose.
macro_rules! pin {
    ($t:ty, $size:expr, $( $f:ident = $o:expr ),* ) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $( const _: () = assert!(core::mem::offset_of!($t, $f) == $o); )*
    };
}
pin!(
    Header,
    32,
    kind = 0,
    flags = 2,
    pid = 4,
    tid = 8,
    uid = 12,
    gid = 16,
    ktime_ns = 24
);
pin!(Lineage, 32, ppid = 0, cgroup_id = 8, comm = 16);
pin!(
    ExecRecord,
    1360,
    hdr = 0,
    lin = 32,
    old_pid = 64,
    args_len = 68,
    args_total = 72,
    filename = 80,
    args = 336
);
pin!(ForkRecord, 72, hdr = 0, lin = 32, child_pid = 64);
pin!(ExitRecord, 72, hdr = 0, lin = 32, exit_code = 64);
pin!(
    SocketRecord,
    48,
    hdr = 0,
    op = 32,
    family = 36,
    sock_type = 40,
    protocol = 44
);
pin!(
    UnixAddrRecord,
    160,
    hdr = 0,
    op = 32,
    fd = 36,
    ret = 40,
    path_len = 44,
    path = 48
);
pin!(
    FifoRecord,
    304,
    hdr = 0,
    op = 32,
    flags = 36,
    ret = 40,
    dfd = 44,
    path = 48
);
pin!(
    TcpRecord,
    112,
    hdr = 0,
    op = 32,
    family = 36,
    sport = 38,
    dport = 40,
    direction = 42,
    saddr = 44,
    daddr = 60,
    start_ns = 80,
    duration_ns = 88,
    bytes_sent = 96,
    bytes_received = 104
);
pin!(
    Offsets,
    132,
    task_real_parent = 0,
    wakeup_bytes = 68,
    kiocb_cmd = 72,
    io_socket_protocol = 104,
    io_bind_addr_len = 128
);
pin!(
    UringPending,
    280,
    op = 0,
    arg = 4,
    fd = 8,
    file_slot = 12,
    user_data = 16,
    path = 24
);
pin!(Pending, 24, ptr = 0, op = 8, arg = 12, fd = 16);
pin!(
    TcpTrack,
    88,
    hdr = 0,
    start_ns = 32,
    direction = 40,
    reported = 44,
    addr = 48
);
pin!(
    TcpAddr,
    40,
    family = 0,
    sport = 2,
    dport = 4,
    saddr = 8,
    daddr = 24
);
