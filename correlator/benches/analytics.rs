//! Throughput of the shipped analytics (all detectors, default settings) on a mixed event stream:
//! process starts, AF_UNIX binds, FIFO opens, unified log lines, flows, mobile TLS records.
//! `cargo bench -p correlator --bench analytics`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use correlator::analytics::{AnalyticSet, Eql, Overrides};
use correlator::{Detector, Event};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn stream(n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = 1_772_359_200_000i64 + i as i64 * 10; // 10 ms apart
        let pid = 1000 + (i % 500) as i64;
        let doc = match i % 6 {
            0 => {
                serde_json::json!({"@timestamp": t, "event": {"category": ["process"], "type": ["start"], "action": "exec"},
                "host": {"id": "h1", "os": {"type": "linux"}}, "process": {"pid": pid, "executable": format!("/usr/bin/tool{}", i % 37), "name": format!("tool{}", i % 37), "parent": {"pid": 1, "name": "systemd"}, "args": ["tool", "-x"]}})
            }
            1 => {
                serde_json::json!({"@timestamp": t, "event": {"category": ["network"], "type": ["creation"], "action": "unix_bind", "outcome": "success"},
                "host": {"id": "h1"}, "network": {"transport": "unix"}, "socket": {"family": "AF_UNIX", "path": format!("/run/svc{}.sock", i % 53)}, "process": {"pid": pid, "executable": format!("/usr/sbin/svc{}", i % 53)}})
            }
            2 => {
                serde_json::json!({"@timestamp": t, "event": {"category": ["file"], "type": ["access"], "action": "fifo_open"},
                "host": {"id": "h1"}, "file": {"path": format!("/run/user/1000/f{}", i % 11), "type": "fifo"}, "process": {"pid": pid, "executable": "/usr/bin/cat"}})
            }
            3 => {
                serde_json::json!({"@timestamp": t, "event": {"category": ["process"]}, "message": format!("activating connection: mach=true listener=false peer=false name=com.apple.svc{}", i % 29),
                "agent": {"id": "mac1"}, "process": {"pid": pid, "executable": "/usr/libexec/thing"}})
            }
            4 => {
                serde_json::json!({"@timestamp": t, "event": {"category": ["network"], "type": [if i % 12 == 4 { "start" } else { "end" }], "action": "connection"},
                "host": {"id": "mac1", "os": {"type": "macos"}}, "process": {"pid": pid}, "network": {"transport": "tcp", "direction": "egress"},
                "source": {"ip": "10.0.0.1", "port": 40000 + (i % 1000) as i64, "bytes": 1000}, "destination": {"ip": "203.0.113.5", "port": 443}})
            }
            _ => {
                serde_json::json!({"@timestamp": t, "event": {"action": "tls", "category": ["network"]}, "host": {"id": format!("dev{}", i % 17)}, "package": {"name": "com.acme.app"},
                "mobile": {"tls": {"outcome": "established", "inspected": true}}, "tls": {"client": {"server_name": "api.acme.io"}, "established": true}})
            }
        };
        out.push(Event::from_json(&doc).unwrap());
    }
    out
}

fn bench(c: &mut Criterion) {
    let events = stream(12_000);
    let set = AnalyticSet::load(&[], &Overrides::default()).unwrap();
    let mut g = c.benchmark_group("analytics");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("all_shipped_detectors", |b| {
        b.iter(|| {
            let mut dets: Vec<Box<dyn Detector>> = set.detectors(&Eql).unwrap();
            let mut out = Vec::new();
            let mut wm = i64::MIN;
            for ev in &events {
                for d in &mut dets {
                    d.on_event(ev, &mut out);
                }
                if ev.timestamp_ns >= wm.saturating_add(1_000_000_000) {
                    wm = ev.timestamp_ns;
                    for d in &mut dets {
                        d.on_watermark(wm, &mut out);
                    }
                }
            }
            out.len()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
