//! Syscall numbers to names for the audit architectures seen in the wild (x86_64, aarch64, i386).

/// The syscall name for an audit arch and syscall number.
pub fn syscall_name(arch: &str, nr: u64) -> Option<&'static str> {
    let table: &[(u64, &str)] = match arch {
        "c000003e" => X86_64,
        "c00000b7" => AARCH64,
        "40000003" => I386,
        _ => return None,
    };
    table
        .binary_search_by_key(&nr, |(n, _)| *n)
        .ok()
        .map(|i| table[i].1)
}

pub(super) fn arch_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "c000003e" => "x86_64",
        "c00000b7" => "aarch64",
        "40000003" => "i386",
        "40000028" => "arm",
        "c0000015" => "ppc64le",
        "80000016" => "s390x",
        "c00000f3" => "riscv64",
        _ => return None,
    })
}

#[rustfmt::skip]
const X86_64: &[(u64, &str)] = &[
    (0, "read"), (1, "write"), (2, "open"), (3, "close"), (4, "stat"), (5, "fstat"), (6, "lstat"), (7, "poll"),
    (8, "lseek"), (9, "mmap"), (10, "mprotect"), (11, "munmap"), (12, "brk"), (13, "rt_sigaction"),
    (14, "rt_sigprocmask"), (15, "rt_sigreturn"), (16, "ioctl"), (17, "pread64"), (18, "pwrite64"), (19, "readv"),
    (20, "writev"), (21, "access"), (22, "pipe"), (23, "select"), (32, "dup"), (33, "dup2"), (39, "getpid"),
    (40, "sendfile"), (41, "socket"), (42, "connect"), (43, "accept"), (44, "sendto"), (45, "recvfrom"),
    (46, "sendmsg"), (47, "recvmsg"), (48, "shutdown"), (49, "bind"), (50, "listen"), (51, "getsockname"),
    (52, "getpeername"), (53, "socketpair"), (54, "setsockopt"), (55, "getsockopt"), (56, "clone"), (57, "fork"),
    (58, "vfork"), (59, "execve"), (60, "exit"), (61, "wait4"), (62, "kill"), (63, "uname"), (72, "fcntl"),
    (76, "truncate"), (77, "ftruncate"), (78, "getdents"), (79, "getcwd"), (80, "chdir"), (81, "fchdir"),
    (82, "rename"), (83, "mkdir"), (84, "rmdir"), (85, "creat"), (86, "link"), (87, "unlink"), (88, "symlink"),
    (89, "readlink"), (90, "chmod"), (91, "fchmod"), (92, "chown"), (93, "fchown"), (94, "lchown"), (95, "umask"),
    (101, "ptrace"), (105, "setuid"), (106, "setgid"), (112, "setsid"), (113, "setreuid"), (114, "setregid"),
    (117, "setresuid"), (119, "setresgid"), (133, "mknod"), (155, "pivot_root"), (157, "prctl"),
    (159, "adjtimex"), (161, "chroot"), (164, "settimeofday"), (165, "mount"), (166, "umount2"), (169, "reboot"),
    (170, "sethostname"), (175, "init_module"), (176, "delete_module"), (188, "setxattr"), (189, "lsetxattr"),
    (190, "fsetxattr"), (200, "tkill"), (227, "clock_settime"), (231, "exit_group"), (234, "tgkill"),
    (257, "openat"), (258, "mkdirat"), (259, "mknodat"), (260, "fchownat"), (262, "newfstatat"), (263, "unlinkat"),
    (264, "renameat"), (265, "linkat"), (266, "symlinkat"), (267, "readlinkat"), (268, "fchmodat"),
    (269, "faccessat"), (272, "unshare"), (288, "accept4"), (292, "dup3"), (293, "pipe2"), (305, "clock_adjtime"),
    (308, "setns"), (310, "process_vm_readv"), (311, "process_vm_writev"), (313, "finit_module"),
    (316, "renameat2"), (319, "memfd_create"), (321, "bpf"), (322, "execveat"), (425, "io_uring_setup"),
    (426, "io_uring_enter"), (427, "io_uring_register"), (435, "clone3"), (437, "openat2"), (439, "faccessat2"),
];

#[rustfmt::skip]
const AARCH64: &[(u64, &str)] = &[
    (17, "getcwd"), (23, "dup"), (24, "dup3"), (25, "fcntl"), (29, "ioctl"), (33, "mknodat"), (34, "mkdirat"),
    (35, "unlinkat"), (36, "symlinkat"), (37, "linkat"), (38, "renameat"), (39, "umount2"), (40, "mount"),
    (41, "pivot_root"), (45, "truncate"), (46, "ftruncate"), (48, "faccessat"), (49, "chdir"), (50, "fchdir"),
    (51, "chroot"), (52, "fchmod"), (53, "fchmodat"), (54, "fchownat"), (55, "fchown"), (56, "openat"),
    (57, "close"), (59, "pipe2"), (61, "getdents64"), (62, "lseek"), (63, "read"), (64, "write"),
    (78, "readlinkat"), (79, "newfstatat"), (80, "fstat"), (93, "exit"), (94, "exit_group"), (97, "unshare"),
    (98, "futex"), (105, "init_module"), (106, "delete_module"), (112, "clock_settime"), (117, "ptrace"),
    (129, "kill"), (130, "tkill"), (131, "tgkill"), (142, "reboot"), (144, "setgid"), (146, "setuid"),
    (147, "setresuid"), (149, "setresgid"), (157, "setsid"), (160, "uname"), (161, "sethostname"), (167, "prctl"),
    (170, "settimeofday"), (171, "adjtimex"), (172, "getpid"), (198, "socket"), (199, "socketpair"), (200, "bind"),
    (201, "listen"), (202, "accept"), (203, "connect"), (204, "getsockname"), (205, "getpeername"),
    (206, "sendto"), (207, "recvfrom"), (208, "setsockopt"), (209, "getsockopt"), (210, "shutdown"),
    (211, "sendmsg"), (212, "recvmsg"), (214, "brk"), (215, "munmap"), (216, "mremap"), (220, "clone"),
    (221, "execve"), (222, "mmap"), (226, "mprotect"), (242, "accept4"), (260, "wait4"), (266, "clock_adjtime"),
    (268, "setns"), (270, "process_vm_readv"), (271, "process_vm_writev"), (273, "finit_module"),
    (276, "renameat2"), (279, "memfd_create"), (280, "bpf"), (281, "execveat"), (425, "io_uring_setup"),
    (426, "io_uring_enter"), (427, "io_uring_register"), (435, "clone3"), (437, "openat2"), (439, "faccessat2"),
];

#[rustfmt::skip]
const I386: &[(u64, &str)] = &[
    (1, "exit"), (2, "fork"), (3, "read"), (4, "write"), (5, "open"), (6, "close"), (8, "creat"), (9, "link"),
    (10, "unlink"), (11, "execve"), (12, "chdir"), (14, "mknod"), (15, "chmod"), (26, "ptrace"), (37, "kill"),
    (38, "rename"), (39, "mkdir"), (40, "rmdir"), (102, "socketcall"), (120, "clone"), (190, "vfork"),
    (252, "exit_group"), (295, "openat"), (297, "mknodat"), (301, "unlinkat"), (358, "execveat"), (359, "socket"),
    (360, "socketpair"), (361, "bind"), (362, "connect"),
];
