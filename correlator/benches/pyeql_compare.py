#!/usr/bin/env python3
"""Times the Python reference implementation (`pip install eql`) on the benchmark queries.

Usage:
    python3 correlator/benches/pyeql_compare.py gen  /tmp/eql-mix.ndjson 200000
    python3 correlator/benches/pyeql_compare.py run  /tmp/eql-mix.ndjson
The same file and queries are timed in Rust by
    EQL_COMPARE_FILE=/tmp/eql-mix.ndjson cargo bench -p correlator --bench eql
"""
import json
import random
import sys
import time

NAMES = ["bash", "sh", "python3", "curl", "wget", "sshd", "systemd", "cron", "nginx", "java", "node", "ls",
         "cat", "grep", "ps", "sudo", "dpkg", "apt", "tar", "gzip"]
ARGS = ["-c", "-la", "--help", "install", "http://example.org/x", "-o", "/tmp/out", "-r", "status", "-v"]
FILES = ["/etc/passwd", "/tmp/x.sh", "/var/log/syslog", "/home/user/.bashrc", "/etc/cron.d/job", "/dev/shm/f"]
PORTS = [22, 53, 80, 443, 8080, 4444, 3306, 6379]

QUERIES = {
    "single": 'process where process.name in ("curl", "wget") and process.parent.name == "bash"',
    "sequence": 'sequence by host.id [process where process.name == "bash"] '
                '[network where destination.port == 4444]',
}


def gen(path, n, keys=100000):
    rnd = random.Random(42)
    with open(path, "w") as f:
        for i in range(n):
            roll = rnd.randrange(100)
            cat = "process" if roll < 45 else "network" if roll < 75 else "file" if roll < 95 else "authentication"
            key = rnd.randrange(keys)
            name = rnd.choice(NAMES)
            args = [name] + [rnd.choice(ARGS) for _ in range(1 + rnd.randrange(3))]
            ts_ms = 1_700_000_000_000 + i  # 1 ms apart
            ev = {
                "@timestamp": ts_ms,
                "timestamp": ts_ms,
                "event_type": cat,
                "event": {"category": [cat], "type": ["start"]},
                "host": {"id": "host-%d" % key},
                "user": {"name": "user"},
                "process": {"name": name, "args": args, "entity_id": "ent-%d" % key,
                            "parent": {"name": rnd.choice(NAMES)}},
            }
            if cat == "network":
                ev["destination"] = {"port": rnd.choice(PORTS), "ip": "10.0.%d.%d" % (rnd.randrange(256), rnd.randrange(256))}
            if cat == "file":
                ev["file"] = {"path": rnd.choice(FILES)}
            f.write(json.dumps(ev) + "\n")


def run(path):
    import eql
    from eql.engine import PythonEngine
    from eql.parser import parse_query
    print("python eql", eql.__version__)
    for name, text in QUERIES.items():
        t0, c0 = time.perf_counter(), time.process_time()
        with open(path) as f:
            events = [eql.Event.from_data(json.loads(line)) for line in f]
        t1, c1 = time.perf_counter(), time.process_time()
        engine = PythonEngine()
        results = []
        engine.add_output_hook(results.append)
        engine.add_query(parse_query(text))
        engine.stream_events(events)
        engine.finalize()
        t2, c2 = time.perf_counter(), time.process_time()
        n = len(events)
        print("%s: %d results; wall: parse %.2fs, eval %.2fs; CPU: parse %.2fs, eval %.3fs "
              "(%.0f events per CPU-second eval, %.0f parse+eval)"
              % (name, len(results), t1 - t0, t2 - t1, c1 - c0, c2 - c1, n / (c2 - c1), n / (c2 - c0)))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2])
