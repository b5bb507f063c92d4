//! The kernel sensor's userspace cost per event, without the kernel: a socket record decoded into
//! an enriched ECS event (process table, user, host) and written as one NDJSON line, as
//! `sensor events` does for every record it reads.
//!
//! `cargo bench -p sensor-kernel --bench kernel_decode`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensor_common::{kind, op, Header, SocketRecord};
use sensor_kernel::{Decoder, HostInfo, ProcessTable};

fn record() -> Vec<u8> {
    let pid = std::process::id();
    let r = SocketRecord {
        hdr: Header {
            kind: kind::SOCKET,
            flags: 0,
            pid,
            tid: pid,
            uid: 0,
            gid: 0,
            _pad: 0,
            ktime_ns: 1_000_000_000,
        },
        op: op::SOCKET,
        family: 1,
        sock_type: 1,
        protocol: 0,
    };
    // SAFETY: a plain-old-data record.
    unsafe {
        std::slice::from_raw_parts(
            (&raw const r).cast::<u8>(),
            std::mem::size_of::<SocketRecord>(),
        )
        .to_vec()
    }
}

fn bench(c: &mut Criterion) {
    let host = HostInfo::from_system();
    let mut d = Decoder::new(host.clone(), ProcessTable::new(&host.id));
    let rec = record();
    let mut out = Vec::with_capacity(1 << 16);
    let mut g = c.benchmark_group("kernel_userspace");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_socket_record", |b| {
        b.iter(|| d.decode(&rec).unwrap().unwrap());
    });
    g.bench_function("decode_and_write_ndjson", |b| {
        b.iter(|| {
            let (_, ev) = d.decode(&rec).unwrap().unwrap();
            out.clear();
            ev.write_json(&mut out);
            out.push(b'\n');
        });
    });
    let (_, ev) = d.decode(&rec).unwrap().unwrap();
    g.bench_function("write_ndjson_only", |b| {
        b.iter(|| {
            out.clear();
            ev.write_json(&mut out);
        });
    });
    g.bench_function("write_via_serde_json_value", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, &ev.to_json()).unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
