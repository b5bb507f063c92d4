//! A realistic event mix and rule sets for the EQL benchmarks.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use correlator::rules::{parse_rule_file, RuleDef};
use correlator::{Event, Value};

/// Small deterministic PRNG (xorshift64*), so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

pub const NAMES: &[&str] = &[
    "bash", "sh", "python3", "curl", "wget", "sshd", "systemd", "cron", "nginx", "java", "node",
    "ls", "cat", "grep", "ps", "sudo", "dpkg", "apt", "tar", "gzip",
];
const DIRS: &[&str] = &[
    "/usr/bin/",
    "/bin/",
    "/usr/sbin/",
    "/tmp/",
    "/opt/app/",
    "/home/user/.local/bin/",
];
const ARGS: &[&str] = &[
    "-c",
    "-la",
    "--help",
    "install",
    "http://example.org/x",
    "-o",
    "/tmp/out",
    "-r",
    "status",
    "-v",
];
const FILES: &[&str] = &[
    "/etc/passwd",
    "/tmp/x.sh",
    "/var/log/syslog",
    "/home/user/.bashrc",
    "/etc/cron.d/job",
    "/usr/lib/libc.so.6",
    "/dev/shm/f",
    "/etc/ssh/sshd_config",
];
pub const PORTS: &[i64] = &[22, 53, 80, 443, 8080, 4444, 3306, 6379];

/// One event of the mix: 45% process, 30% network, 20% file, 5% other; `keys` distinct entity/host ids.
pub fn event(rng: &mut Rng, i: u64, keys: u64) -> Event {
    let mut e = Event::new(1_700_000_000_000_000_000 + i as i64 * 10_000);
    let roll = rng.below(100);
    let (cat, types): (&str, &[&str]) = match roll {
        0..=44 => ("process", &["start", "end"]),
        45..=74 => ("network", &["start", "connection"]),
        75..=94 => ("file", &["creation", "change", "deletion"]),
        _ => ("authentication", &["start"]),
    };
    let s = |x: &str| Value::Str(x.into());
    let arr = |xs: &[&str]| Value::Array(xs.iter().map(|x| Value::Str((*x).into())).collect());
    e.insert("event.category", arr(&[cat]));
    e.insert("event.type", arr(&[rng.pick(types)]));
    e.insert(
        "event.action",
        s(if cat == "process" { "exec" } else { "event" }),
    );
    e.insert("host.os.type", s("linux"));
    let key = rng.below(keys);
    e.insert("host.id", s(&format!("host-{}", key % keys)));
    e.insert("host.name", s(&format!("h{}", key % 1000)));
    e.insert(
        "user.name",
        s(if rng.below(4) == 0 { "root" } else { "user" }),
    );
    e.insert(
        "user.id",
        Value::Int(if rng.below(4) == 0 { 0 } else { 1000 }),
    );
    let name = rng.pick(NAMES);
    let dir = rng.pick(DIRS);
    e.insert("process.name", s(name));
    e.insert("process.executable", s(&format!("{dir}{name}")));
    e.insert("process.pid", Value::Int(rng.below(60_000) as i64));
    e.insert("process.entity_id", s(&format!("ent-{key}")));
    let nargs = 1 + rng.below(3) as usize;
    let mut args = vec![name.to_string()];
    for _ in 0..nargs {
        args.push(rng.pick(ARGS).to_string());
    }
    e.insert(
        "process.args",
        Value::Array(args.iter().map(|a| Value::Str(a.as_str().into())).collect()),
    );
    e.insert("process.command_line", s(&args.join(" ")));
    e.insert("process.args_count", Value::Int(args.len() as i64));
    e.insert("process.parent.name", s(rng.pick(NAMES)));
    e.insert(
        "process.parent.executable",
        s(&format!("/usr/bin/{}", rng.pick(NAMES))),
    );
    match cat {
        "network" => {
            e.insert(
                "destination.ip",
                s(&format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                )),
            );
            e.insert(
                "destination.port",
                Value::Int(PORTS[rng.below(PORTS.len() as u64) as usize]),
            );
            e.insert("network.transport", s("tcp"));
        }
        "file" => {
            let f = rng.pick(FILES);
            e.insert("file.path", s(f));
            e.insert("file.name", s(f.rsplit('/').next().unwrap_or(f)));
            e.insert(
                "file.extension",
                s(if f.ends_with(".sh") { "sh" } else { "" }),
            );
        }
        _ => {}
    }
    e
}

pub fn events(n: u64, keys: u64) -> Vec<Event> {
    let mut rng = Rng::new(42);
    (0..n).map(|i| event(&mut rng, i, keys)).collect()
}

/// The same events as [`events`], built `batch` at a time and handed to `f` right after they are
/// built (as a decoder hands over a batch): the events are hot in cache when `f` sees them.
pub fn event_batches(n: u64, keys: u64, batch: u64, mut f: impl FnMut(&[Event])) {
    let mut rng = Rng::new(42);
    let mut buf = Vec::with_capacity(batch as usize);
    let mut i = 0;
    while i < n {
        buf.clear();
        let end = (i + batch).min(n);
        buf.extend((i..end).map(|j| event(&mut rng, j, keys)));
        f(&buf);
        i = end;
    }
}

fn shared_dir() -> PathBuf {
    std::env::var_os("SENSOR_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    )
}

/// The first `n` single-event Elastic rules of the corpus (sorted by path).
pub fn elastic_single_event_rules(n: usize) -> Vec<RuleDef> {
    let mut files = Vec::new();
    let mut stack = vec![shared_dir().join("corpora/elastic-rules")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in parse_rule_file(&text, &f.display().to_string()).unwrap() {
            if d.compile().is_ok_and(|q| !q.is_sequence()) && out.len() < n {
                out.push(d);
            }
        }
    }
    out
}

/// `n` synthetic sequence rules, half keyed by `process.entity_id`, half by `host.id`.
pub fn sequence_rules(n: usize) -> Vec<RuleDef> {
    let mut text = String::new();
    for i in 0..n {
        let name = NAMES[i % NAMES.len()];
        let port = PORTS[i % PORTS.len()];
        let q = if i % 2 == 0 {
            format!(
                "sequence by process.entity_id with maxspan=30s\n  [process where event.type == \"start\" and process.name == \"{name}\"]\n  [network where destination.port == {port}]"
            )
        } else {
            format!(
                "sequence by host.id with maxspan=1m\n  [process where process.name : \"{name}\" and process.args : (\"-c\", \"-o\")]\n  [file where file.path : (\"/tmp/*\", \"/dev/shm/*\")]\n  [network where destination.port in (4444, {port})]"
            )
        };
        text.push_str(&format!(
            "[[rule]]\nid = \"seq-{i}\"\nname = \"sequence {i}\"\nquery = '''\n{q}\n'''\n\n"
        ));
    }
    parse_rule_file(&text, "bench").unwrap()
}
