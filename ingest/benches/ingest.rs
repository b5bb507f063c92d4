//! Ingest benchmarks: decoder throughput (auditd, ECS) and ECS over loopback HTTP into the
//! durable spool. Run: `cargo bench -p ingest --bench ingest`. Figures and how they were taken:
//! BENCHMARKS.md, "Ingest benchmarks".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest::server::{HttpConfig, IngestConfig};
use ingest::{decode_reader, Format, Spool, SpoolLimits};

/// Realistic auditd traffic: execve groups (SYSCALL, EXECVE, CWD, 2 PATH, PROCTITLE, EOE),
/// connect groups (SYSCALL, SOCKADDR, PROCTITLE, EOE) and single user records.
pub fn auditd_input(groups: usize) -> (Vec<u8>, usize) {
    let mut s = String::new();
    let mut records = 0;
    for i in 0..groups {
        let serial = 1000 + i;
        let ts = format!("1700000000.{:03}:{serial}", i % 1000);
        match i % 3 {
            0 => {
                s.push_str(&format!("type=SYSCALL msg=audit({ts}): arch=c000003e syscall=59 success=yes exit=0 a0=55d0c6a3e2a0 a1=55d0c6a3e2f0 a2=55d0c6a3e310 a3=8 items=2 ppid=4242 pid={} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm=\"curl\" exe=\"/usr/bin/curl\" subj=unconfined key=\"exec\"\n", 5000 + i));
                s.push_str(&format!("type=EXECVE msg=audit({ts}): argc=3 a0=\"curl\" a1=\"-s\" a2=\"https://example.org/x\"\n"));
                s.push_str(&format!("type=CWD msg=audit({ts}): cwd=\"/home/user\"\n"));
                s.push_str(&format!("type=PATH msg=audit({ts}): item=0 name=\"/usr/bin/curl\" inode=1234 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0\n"));
                s.push_str(&format!("type=PATH msg=audit({ts}): item=1 name=\"/lib64/ld-linux-x86-64.so.2\" inode=99 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0\n"));
                s.push_str(&format!("type=PROCTITLE msg=audit({ts}): proctitle=6375726C002D730068747470733A2F2F6578616D706C652E6F72672F78\n"));
                s.push_str(&format!("type=EOE msg=audit({ts}): \n"));
                records += 7;
            }
            1 => {
                s.push_str(&format!("type=SYSCALL msg=audit({ts}): arch=c000003e syscall=42 success=yes exit=0 a0=3 a1=7ffd a2=6e a3=0 items=1 ppid=1 pid={} auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=\"sshd\" exe=\"/usr/sbin/sshd\" key=(null)\n", 6000 + i));
                s.push_str(&format!("type=SOCKADDR msg=audit({ts}): saddr=01002F72756E2F73797374656D642F6A6F75726E616C2F736F636B657400\n"));
                s.push_str(&format!(
                    "type=PROCTITLE msg=audit({ts}): proctitle=\"sshd\"\n"
                ));
                s.push_str(&format!("type=EOE msg=audit({ts}): \n"));
                records += 4;
            }
            _ => {
                s.push_str(&format!("type=USER_ACCT msg=audit({ts}): pid=7 uid=0 auid=1000 ses=3 subj=unconfined msg='op=PAM:accounting grantors=pam_permit acct=\"root\" exe=\"/usr/bin/sudo\" hostname=? addr=? terminal=/dev/pts/0 res=success'\n"));
                records += 1;
            }
        }
    }
    (s.into_bytes(), records)
}

pub fn ecs_input(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "{{\"@timestamp\":\"2024-05-01T10:00:{:02}.123Z\",\"event\":{{\"category\":[\"process\"],\"type\":[\"start\"],\"action\":\"exec\"}},\"process\":{{\"pid\":{i},\"name\":\"curl\",\"executable\":\"/usr/bin/curl\",\"args\":[\"curl\",\"-s\",\"https://example.org\"],\"parent\":{{\"pid\":1,\"name\":\"bash\"}}}},\"host\":{{\"id\":\"h1\",\"os\":{{\"type\":\"linux\"}}}},\"user\":{{\"id\":\"1000\",\"name\":\"u\"}}}}\n",
            i % 60
        ));
    }
    s.into_bytes()
}

fn decoders(c: &mut Criterion) {
    let (input, records) = auditd_input(3000);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function("auditd_records", |b| {
        b.iter(|| {
            let mut n = 0usize;
            decode_reader(Format::Auditd, "bench", &input[..], &mut |r| {
                n += usize::from(r.is_ok())
            });
            assert!(n >= 3000);
        });
    });
    let ecs = ecs_input(5000);
    g.throughput(Throughput::Elements(5000));
    g.bench_function("ecs_events", |b| {
        b.iter(|| {
            let mut n = 0usize;
            decode_reader(Format::Ecs, "bench", &ecs[..], &mut |r| {
                n += usize::from(r.is_ok())
            });
            assert_eq!(n, 5000);
        });
    });
    g.finish();
}

fn http_into_spool(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(
        Spool::open(
            dir.path(),
            SpoolLimits {
                max_bytes: 1 << 40,
                ..SpoolLimits::default()
            },
        )
        .unwrap(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "bench-token";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    let cfg: IngestConfig = IngestConfig {
        http: Some(HttpConfig {
            listen: ([127, 0, 0, 1], port).into(),
            tls: None,
            plaintext_loopback: true,
        }),
        agents: vec![ingest::server::AgentConfig {
            id: "bench".into(),
            token_sha256: hash,
            formats: None,
            rate_per_sec: Some(100_000_000),
        }],
        ..IngestConfig::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let sp = spool.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(ingest::serve(cfg, sp, rx)).unwrap();
    });
    let mut conn = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    conn.set_nodelay(true).unwrap();
    let n = 10_000;
    let body = ecs_input(n);
    let mut req = format!(
        "POST /v1/ingest/ecs HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    let mut buf = vec![0u8; 4096];
    g.bench_function("ecs_loopback_into_spool", |b| {
        b.iter(|| {
            conn.write_all(&req).unwrap();
            // Read one response (headers + small JSON body).
            let mut got = Vec::new();
            loop {
                let k = conn.read(&mut buf).unwrap();
                assert!(k > 0, "server closed");
                got.extend_from_slice(&buf[..k]);
                if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..p]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap();
                    if got.len() >= p + 4 + len {
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                        break;
                    }
                }
            }
        });
    });
    g.finish();
    // CPU cost per event, process-wide (server + client), for the per-core figure.
    let cpu = || {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes into the struct we own.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
        // SAFETY: initialised by getrusage (zeroed before).
        let ru = unsafe { ru.assume_init() };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    // A fresh connection: the server closes keep-alive connections idle past its header timeout.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    let before = cpu();
    let start = std::time::Instant::now();
    let rounds = 100;
    for _ in 0..rounds {
        conn.write_all(&req).unwrap();
        let mut got = Vec::new();
        while !got.windows(11).any(|w| w == b"\"accepted\":") || !got.ends_with(b"}") {
            let k = conn.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..k]);
        }
    }
    let cpu_s = cpu() - before;
    let wall = start.elapsed().as_secs_f64();
    let events = (rounds * n) as f64;
    println!(
        "http ecs loopback into spool: {events} events, {:.0} events/s wall, {:.0} events per CPU-second (server+client, all threads), spool durable={}",
        events / wall,
        events / cpu_s,
        spool.durable()
    );
    let (input, records) = auditd_input(30_000);
    if let Some(path) = std::env::var_os("INGEST_AUDITD_DUMP") {
        // The same input for another tool (laurel), see BENCHMARKS.md.
        std::fs::write(&path, &input).unwrap();
        println!("auditd input ({records} records) written to {path:?}");
    }
    let reps = 3;
    let before = cpu();
    let start = std::time::Instant::now();
    let mut n_ev = 0;
    for _ in 0..reps {
        decode_reader(Format::Auditd, "bench", &input[..], &mut |r| {
            n_ev += usize::from(r.is_ok())
        });
    }
    let cpu_s = cpu() - before;
    let wall = start.elapsed().as_secs_f64();
    let records = reps * records;
    println!(
        "auditd decode: {records} records -> {n_ev} events, {:.0} records per CPU-second, {:.0} records/s wall (one thread)",
        records as f64 / cpu_s,
        records as f64 / wall
    );
    // The consumer's half of the ECS path: decoding the spooled lines into events.
    let ecs = ecs_input(100_000);
    let before = cpu();
    let start = std::time::Instant::now();
    let mut n_ev = 0;
    decode_reader(Format::Ecs, "bench", &ecs[..], &mut |r| {
        n_ev += usize::from(r.is_ok())
    });
    let cpu_s = cpu() - before;
    let wall = start.elapsed().as_secs_f64();
    println!(
        "ecs decode (consumer side): {n_ev} events, {:.0} events per CPU-second, {:.0} events/s wall (one thread)",
        n_ev as f64 / cpu_s,
        n_ev as f64 / wall
    );
}

criterion_group!(benches, decoders, http_into_spool);
criterion_main!(benches);
