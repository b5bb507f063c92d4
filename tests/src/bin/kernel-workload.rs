//! Workloads for the kernel sensor tests, each in its own process so that the tests can pick out its
//! events by pid. Usage: `kernel-workload ACTION [ARGS]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::io::{Read, Write};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        // Binds an AF_UNIX listener at PATH and connects to it.
        "unix-connect" => {
            let path = arg(1);
            let _ = std::fs::remove_file(&path);
            let l = std::os::unix::net::UnixListener::bind(&path)?;
            let _c = std::os::unix::net::UnixStream::connect(&path)?;
            let _s = l.accept()?;
            std::fs::remove_file(&path)?;
        }
        // An AF_INET socket, never connected.
        "inet-socket" => {
            // SAFETY: plain syscalls.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            anyhow::ensure!(fd >= 0, "socket failed");
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        }
        // Opens a regular file for writing and reading.
        "open-regular" => {
            let path = arg(1);
            std::fs::write(&path, b"regular")?;
            let mut s = String::new();
            std::fs::File::open(&path)?.read_to_string(&mut s)?;
            std::fs::remove_file(&path)?;
        }
        // Opens the FIFO at PATH (read-write, which does not block on Linux) with the raw open(2)
        // and openat2(2) syscalls, not the openat(2) that libc uses.
        "fifo-raw-opens" => {
            let path = CString::new(arg(1))?;
            // SAFETY: a NUL-terminated path; the fd is closed at once.
            let fd = unsafe { libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDWR, 0) };
            anyhow::ensure!(fd >= 0, "open(2): {}", std::io::Error::last_os_error());
            // SAFETY: fd is ours.
            unsafe { libc::close(fd as i32) };
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how: [u64; 3] = [libc::O_RDWR as u64, 0, 0];
            // SAFETY: a valid open_how and its size; the fd is closed at once.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    how.as_ptr(),
                    std::mem::size_of_val(&how),
                )
            };
            anyhow::ensure!(fd >= 0, "openat2(2): {}", std::io::Error::last_os_error());
            // SAFETY: fd is ours.
            unsafe { libc::close(fd as i32) };
        }
        // Through io_uring, with no syscall of their own: an AF_UNIX socket (IORING_OP_SOCKET),
        // then opens (IORING_OP_OPENAT, read-write) of the FIFO at PATH and of the regular file
        // at REGULAR.
        "uring-ops" => {
            use io_uring::{opcode, types, IoUring};
            let fifo = CString::new(arg(1))?;
            let regular = CString::new(arg(2))?;
            std::fs::write(arg(2), b"regular")?;
            let mut ring = IoUring::new(8)?;
            let ops = [
                opcode::Socket::new(libc::AF_UNIX, libc::SOCK_STREAM, 0)
                    .build()
                    .user_data(1),
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), fifo.as_ptr())
                    .flags(libc::O_RDWR)
                    .build()
                    .user_data(2),
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), regular.as_ptr())
                    .flags(libc::O_RDONLY)
                    .build()
                    .user_data(3),
            ];
            for op in &ops {
                // SAFETY: the paths outlive the submission (they are waited for below).
                unsafe { ring.submission().push(op)? };
            }
            ring.submit_and_wait(ops.len())?;
            for cqe in ring.completion() {
                anyhow::ensure!(
                    cqe.result() >= 0,
                    "io_uring op {}: {}",
                    cqe.user_data(),
                    std::io::Error::from_raw_os_error(-cqe.result())
                );
                // SAFETY: a new fd of ours.
                unsafe { libc::close(cqe.result()) };
            }
            std::fs::remove_file(arg(2))?;
        }
        // AF_UNIX bind and connect through io_uring (IORING_OP_BIND, IORING_OP_CONNECT): a
        // socket bound to PATH and listening, then another socket connected to it.
        "uring-unix" => {
            use io_uring::{opcode, types, IoUring};
            let path = arg(1);
            let _ = std::fs::remove_file(&path);
            // SAFETY: a zeroed sockaddr_un, filled below within its bounds.
            let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            anyhow::ensure!(path.len() < sun.sun_path.len(), "path too long");
            for (d, s) in sun.sun_path.iter_mut().zip(path.bytes()) {
                *d = s as libc::c_char;
            }
            let len = (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as u32;
            // SAFETY: plain syscalls; the fds are closed below.
            let (server, client) = unsafe {
                (
                    libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
                    libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
                )
            };
            anyhow::ensure!(server >= 0 && client >= 0, "socket failed");
            let addr = (&raw const sun).cast::<libc::sockaddr>();
            let mut ring = IoUring::new(4)?;
            let run = |ring: &mut IoUring, e: io_uring::squeue::Entry| -> anyhow::Result<()> {
                // SAFETY: the address outlives the submission (it is waited for here).
                unsafe { ring.submission().push(&e)? };
                ring.submit_and_wait(1)?;
                let cqe = ring
                    .completion()
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("no cqe"))?;
                anyhow::ensure!(
                    cqe.result() >= 0,
                    "io_uring op {}: {}",
                    cqe.user_data(),
                    std::io::Error::from_raw_os_error(-cqe.result())
                );
                Ok(())
            };
            run(
                &mut ring,
                opcode::Bind::new(types::Fd(server), addr, len)
                    .build()
                    .user_data(1),
            )?;
            // SAFETY: a bound socket of ours.
            anyhow::ensure!(unsafe { libc::listen(server, 1) } == 0, "listen failed");
            run(
                &mut ring,
                opcode::Connect::new(types::Fd(client), addr, len)
                    .build()
                    .user_data(2),
            )?;
            // SAFETY: fds of ours.
            unsafe {
                libc::close(client);
                libc::close(server);
            }
            std::fs::remove_file(&path)?;
        }
        // mkfifo PATH (mode 0600).
        "mkfifo" => mkfifo(&arg(1))?,
        // TCP to 127.0.0.1:PORT: send N bytes, read until the peer closes, close.
        "tcp-client" => {
            let port: u16 = arg(1).parse()?;
            let n: usize = arg(2).parse()?;
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
            c.write_all(&vec![b'x'; n])?;
            c.shutdown(std::net::Shutdown::Write)?;
            let mut back = Vec::new();
            c.read_to_end(&mut back)?;
            println!("{}", back.len());
        }
        // Connects to 127.0.0.1:PORT, where nothing listens: the attempt must be refused.
        "tcp-refused" => {
            let port: u16 = arg(1).parse()?;
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                other => anyhow::bail!("expected a refused connection, got {other:?}"),
            }
        }
        // Creates N FIFOs in DIR as fast as it can (then removes them).
        "fifo-storm" => {
            let dir = arg(1);
            let n: usize = arg(2).parse()?;
            for i in 0..n {
                mkfifo(&format!("{dir}/f{i}"))?;
            }
            for i in 0..n {
                std::fs::remove_file(format!("{dir}/f{i}"))?;
            }
        }
        other => anyhow::bail!("unknown action `{other}`"),
    }
    Ok(())
}

fn mkfifo(path: &str) -> anyhow::Result<()> {
    let c = CString::new(path)?;
    // SAFETY: valid C string.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    anyhow::ensure!(
        rc == 0,
        "mkfifo {path}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
