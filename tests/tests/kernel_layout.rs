//! The kernel/user record layouts cannot drift (as Tetragon's alignchecker): every record type of
//! `sensor-common`, as the daemon compiles it, must match the BTF that the compiled eBPF object carries
//! for the same type: same size, same members at the same offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::mem::{offset_of, size_of};

use sensor_common::*;
use sensor_kernel::btf::{object_btf, Btf};

type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        (stringify!($t), size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
    };
}

fn user_layouts() -> Vec<Layout> {
    vec![
        layout!(Header {
            kind,
            flags,
            pid,
            tid,
            uid,
            gid,
            _pad,
            ktime_ns
        }),
        layout!(Lineage {
            ppid,
            _pad,
            cgroup_id,
            comm
        }),
        layout!(ExecRecord {
            hdr,
            lin,
            old_pid,
            args_len,
            args_total,
            _pad,
            filename,
            args
        }),
        layout!(ForkRecord {
            hdr,
            lin,
            child_pid,
            _pad
        }),
        layout!(ExitRecord {
            hdr,
            lin,
            exit_code,
            _pad
        }),
        layout!(SocketRecord {
            hdr,
            op,
            family,
            sock_type,
            protocol
        }),
        layout!(UnixAddrRecord {
            hdr,
            op,
            fd,
            ret,
            path_len,
            path,
            _pad
        }),
        layout!(FifoRecord {
            hdr,
            op,
            flags,
            ret,
            dfd,
            path
        }),
        layout!(TcpRecord {
            hdr,
            op,
            family,
            sport,
            dport,
            direction,
            saddr,
            daddr,
            _pad,
            start_ns,
            duration_ns,
            bytes_sent,
            bytes_received
        }),
        layout!(Offsets {
            task_real_parent,
            task_tgid,
            task_pid,
            task_mm,
            task_files,
            task_exit_code,
            mm_arg_start,
            mm_arg_end,
            files_fdt,
            fdtable_fd,
            fdtable_max_fds,
            file_f_inode,
            inode_i_mode,
            tcp_bytes_sent,
            tcp_bytes_received,
            file_private_data,
            socket_sk,
            wakeup_bytes,
            kiocb_cmd,
            io_open_dfd,
            io_open_file_slot,
            io_open_filename,
            io_open_how,
            filename_name,
            io_socket_domain,
            io_socket_type,
            io_socket_protocol,
            kiocb_async_data,
            kiocb_cqe,
            cqe_fd,
            async_msghdr_addr,
            io_connect_addr_len,
            io_bind_addr_len
        }),
        layout!(UringPending {
            op,
            arg,
            fd,
            file_slot,
            user_data,
            path
        }),
        layout!(Pending {
            ptr,
            op,
            arg,
            fd,
            _pad
        }),
        layout!(TcpTrack {
            hdr,
            start_ns,
            direction,
            reported,
            addr
        }),
        layout!(TcpAddr {
            family,
            sport,
            dport,
            _pad,
            saddr,
            daddr
        }),
    ]
}

fn compare(btf: &Btf, layouts: &[Layout]) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, size, fields) in layouts {
        let Some(ksize) = btf.struct_size(name) else {
            errors.push(format!("{name}: not in the object's BTF"));
            continue;
        };
        if ksize as usize != *size {
            errors.push(format!("{name}: kernel size {ksize}, user size {size}"));
        }
        let members = btf.members(name).unwrap_or_default();
        for m in &members {
            match fields.iter().find(|(f, _)| *f == m.name) {
                None => errors.push(format!("{name}.{}: in the kernel object only", m.name)),
                Some((_, off)) if (m.bit_offset / 8) as usize != *off => {
                    errors.push(format!(
                        "{name}.{}: kernel offset {}, user offset {off}",
                        m.name,
                        m.bit_offset / 8
                    ));
                }
                Some(_) => {}
            }
        }
        for (f, _) in fields {
            if !members.iter().any(|m| m.name == *f) {
                errors.push(format!("{name}.{f}: in the user layout only"));
            }
        }
    }
    errors
}

#[test]
fn records_match_the_btf_of_the_compiled_object() {
    let obj = sensor_kernel::EBPF_OBJECT;
    if obj.is_empty() {
        let msg =
            "SKIPPED: the sensor was built without the eBPF object (run `cargo xtask build-ebpf`)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; under CI=true this is a failure"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
        return;
    }
    let raw = object_btf(obj).expect("the eBPF object has no .BTF section (built without --btf?)");
    let btf = Btf::parse(&raw).expect("parsing the object's BTF");
    let errors = compare(&btf, &user_layouts());
    assert!(
        errors.is_empty(),
        "kernel/user record layouts differ:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_check_sees_a_drift() {
    // The comparison itself must fail on a layout that differs: shift one offset and change a size.
    let obj = sensor_kernel::EBPF_OBJECT;
    if obj.is_empty() {
        return; // reported loudly by the test above
    }
    let btf = Btf::parse(&object_btf(obj).unwrap()).unwrap();
    let mut layouts = user_layouts();
    layouts[1].1 += 8;
    layouts[1].2[1].1 += 4;
    layouts[2].2.push(("extra", 56));
    let errors = compare(&btf, &layouts);
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn running_kernel_has_the_offsets_the_programs_need() {
    // The loader reads these from the running kernel's BTF; a missing one silently empties a field.
    let Ok(btf) = Btf::from_sys_fs() else {
        eprintln!("\n!!!!!!!! SKIPPED: /sys/kernel/btf/vmlinux is not readable !!!!!!!!\n");
        return;
    };
    let (offsets, missing) = sensor_kernel::kernel_offsets(&btf);
    assert!(
        missing.is_empty(),
        "missing kernel struct members: {missing:?}"
    );
    assert!(
        offsets.inode_i_mode == 0,
        "i_mode is the first member of struct inode"
    );
}
