//! The fleet end to end, every part a real process: nats-server (JetStream) and PostgreSQL 15
//! started for the test; two central correlators (`sensor run`, `role = "central"`); a kernel edge
//! (`sensor run`, `role = "edge"`, the eBPF sensor attached) on which real processes bind AF_UNIX
//! sockets and open FIFOs; a gateway (`sensor run`, `role = "gateway"`) fed by Debian's real
//! `audisp-remote`. The seed analytics (AN1358) and a cross-host EQL sequence (`sequence by
//! user.id`: a connect seen by auditd on one host, then an AF_UNIX bind by the same uid on the kernel
//! host) must raise every expected alert exactly once in PostgreSQL, also across a `kill -9` of the
//! central node that owns the busy partitions (its partitions move to the other node).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::partition::partition_of;
use fleet::testing::{NatsServer, PgServer};
use tests::process::{wait_until, Process};

const PARTITIONS: u32 = 4;
const AUDIT_HOST: &str = "db-01.example.org";
/// The uid of round `n`: the `php` process of the real audit records (`record-connect.txt`, uid 48)
/// is given it, and the kernel edge runs its process as the same uid, so the cross-host rule joins
/// them. A new uid per round makes each round's match a new alert (not a repeat folded into the
/// last one: the store folds on the join keys).
fn uid(round: u32) -> u32 {
    47 + round
}

const CROSS_HOST_RULE: &str = r#"
[[rule]]
id = "fleet-cross-host"
name = "connect seen by auditd on one host, then an AF_UNIX bind by the same uid on another"
severity = "high"
query = '''
sequence by user.id with maxspan=5m
  [network where host.name == "db-01.example.org" and destination.port == 11211]
  [network where event.action == "unix_bind" and socket.path : "/tmp/fleet-e2e-*"]
'''
"#;

struct Fleet {
    dir: PathBuf,
    nats: NatsServer,
    pg: PgServer,
}

impl Fleet {
    fn fleet_section(&self, role: &str) -> String {
        let nats = self.nats.config();
        let pg = self.pg.config();
        format!(
            r#"[fleet]
role = "{role}"
partitions = {PARTITIONS}
partition_by = ["user.id", "host.id", "host.name", "agent.id"]
[fleet.nats]
urls = ["{url}"]
user = "{user}"
password_file = "{npw}"
[fleet.postgres]
url = "{pgurl}"
password_file = "{pgpw}"
"#,
            url = nats.urls[0],
            user = nats.user.unwrap_or_default(),
            npw = nats.password_file.unwrap_or_default().display(),
            pgurl = pg.url,
            pgpw = pg.password_file.unwrap_or_default().display(),
        )
    }

    /// The AN1358 settings of the live test: the test binary's own sockets under
    /// `/tmp/an1358-allowed-*` are expected, any other path is not.
    fn an1358_settings() -> String {
        let exe = std::env::current_exe().unwrap();
        format!(
            "[rules.settings.AN1358]\nSocketPathBaseline = {{ learning_period = \"0s\", allow = [ {{ key = \"{}\", value = \"/tmp/an1358-allowed-*\" }} ] }}\nDecisionDelay = \"1s\"\n",
            exe.display()
        )
    }

    fn start(&self, name: &str, body: &str, ready: &str) -> Process {
        let config = self.dir.join(format!("{name}.toml"));
        let text = format!(
            "state_dir = \"{state}\"\n[api]\nsocket = \"{sock}\"\n[privileges]\nuser = \"root\"\n{body}",
            state = self.dir.join(name).display(),
            sock = self.dir.join(format!("{name}.sock")).display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(tests::sensor_bin());
        cmd.args(["run", "--config"]).arg(&config);
        let log = self.dir.join(format!("{name}.log"));
        let mut p = Process::spawn(cmd, &log);
        p.wait_ready(Duration::from_secs(60), &format!("{name} to start"), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(ready)
        });
        p
    }

    /// `(rule_id, reason, count)` of every alert in PostgreSQL.
    fn alerts(&self) -> Vec<(String, String, i64)> {
        self.pg
            .psql(
                "sensor",
                "SELECT rule_id || chr(9) || count || chr(9) || reason FROM alerts ORDER BY id",
            )
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, '\t');
                let rule = it.next()?.to_string();
                let count = it.next()?.parse().ok()?;
                Some((rule, it.next()?.to_string(), count))
            })
            .collect()
    }
}

/// Real audit records (`record-connect.txt`: `php`, uid 48, connects to 127.0.0.1:11211), retimed
/// to now and given fresh serials so that every round is new to the rules.
fn audit_records(round: u32) -> String {
    let text = std::fs::read_to_string(
        tests::shared_dir().join("corpora/auditd/laurel/record-connect.txt"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let stamp = format!("{}.{:03}", now.as_secs(), now.subsec_millis());
    text.replace("1723819442.459", &stamp)
        .replace(" uid=48 ", &format!(" uid={} ", uid(round)))
        .replace(":2482681)", &format!(":{})", 7_000_000 + round * 2))
        .replace(":2482682)", &format!(":{})", 7_000_001 + round * 2))
}

/// Binds an AF_UNIX socket at `path` from a process of this test binary (the AN1358 actor).
fn unix_bind(path: &str) {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    let _c = std::os::unix::net::UnixStream::connect(path).unwrap();
    drop(l);
    let _ = std::fs::remove_file(path);
}

/// A FIFO in /dev/shm made and opened by a shell (AN1358's FIFO behaviour).
fn fifo(path: &str) {
    let _ = std::fs::remove_file(path);
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkfifo {path} && (cat {path} >/dev/null &) && echo x > {path}"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_file(path);
}

/// The same uid as the audited `php` binds an AF_UNIX socket on this (the kernel edge's) host.
fn unix_bind_as_uid(path: &str, uid: u32) {
    let st = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_kernel-workload"))
        .args(["unix-connect", path])
        .status()
        .unwrap();
    assert!(st.success(), "kernel-workload as uid {uid}");
}

/// Restores a file on drop (audisp-remote reads only /etc/audit/audisp-remote.conf).
struct Restore(PathBuf, Option<Vec<u8>>);

impl Drop for Restore {
    fn drop(&mut self) {
        match &self.1 {
            Some(b) => {
                let _ = std::fs::write(&self.0, b);
            }
            None => {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}

/// Sends audit records through a real `audisp-remote` (managed format: it waits for each ACK,
/// which the gateway sends only after JetStream acknowledged the record).
fn audisp_remote(port: u16, records: &str) {
    let conf = Path::new("/etc/audit/audisp-remote.conf");
    std::fs::create_dir_all("/var/spool/audit").unwrap();
    std::fs::write(
        conf,
        format!(
            "remote_server = 127.0.0.1\nport = {port}\nlocal_port = {}\ntransport = tcp\nmode = immediate\nformat = managed\n\
             queue_file = /var/spool/audit/remote-fleet-e2e.log\nqueue_depth = 10240\nnetwork_retry_time = 1\n\
             max_tries_per_record = 5\nmax_time_per_record = 5\nheartbeat_timeout = 0\nnetwork_failure_action = stop\n\
             remote_ending_action = reconnect\n",
            // A privileged source port, as the listener requires by default (`tcp_client_ports`).
            tests::privileged_port()
        ),
    )
    .unwrap();
    let mut child = Command::new("/sbin/audisp-remote")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(records.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // audisp-remote sends as it reads; closing its input lets it finish and exit.
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The node id each central process logs at start (`node=<host>-<pid>`).
fn node_of(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("sensor running (fleet central)"))?
        .split("node=")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// Partitions a central process's log says it holds now (taken minus released).
fn held_partitions(log: &str) -> std::collections::BTreeSet<u32> {
    let mut held = std::collections::BTreeSet::new();
    for l in log.lines() {
        let p = l
            .split("partition=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(p) = p else { continue };
        if l.contains("central: partition taken") {
            held.insert(p);
        } else if l.contains("partition handed back") || l.contains("partition released") {
            held.remove(&p);
        }
    }
    held
}

#[test]
fn fleet_end_to_end_with_a_central_killed() {
    if !tests::require_root("fleet_end_to_end_with_a_central_killed") {
        return;
    }
    assert!(
        Path::new("/sbin/audisp-remote").exists(),
        "Debian's audispd-plugins must be installed (/sbin/audisp-remote): cargo xtask setup"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet {
        dir: dir.path().to_path_buf(),
        nats: NatsServer::start(),
        pg: PgServer::start(),
    };
    let rules = dir.path().join("cross-host.toml");
    std::fs::write(&rules, CROSS_HOST_RULE).unwrap();
    // Lateness above a takeover (lease TTL 6 s, then the new owner's first fetch): the records
    // of a partition whose owner was killed are decoded that much later than the kernel events
    // they are joined with, and must not arrive behind the watermark (docs/fleet.md).
    let central_body = format!(
        "[kernel]\nenabled = false\n[rules]\npaths = [\"{}\"]\nlateness = \"15s\"\n{}{}",
        rules.display(),
        Fleet::an1358_settings(),
        f.fleet_section("central")
    );
    let mut c1 = f.start("central1", &central_body, "sensor running (fleet central)");
    let mut c2 = f.start("central2", &central_body, "sensor running (fleet central)");
    let n1 = node_of(&c1.log()).expect("central1 node id");
    let n2 = node_of(&c2.log()).expect("central2 node id");
    // The two split the partitions (2 + 2).
    wait_until(
        Duration::from_secs(30),
        "the two central nodes to split the partitions",
        || {
            (held_partitions(&c1.log()).len() == 2 && held_partitions(&c2.log()).len() == 2)
                .then_some(())
        },
        || format!("central1:\n{}\ncentral2:\n{}", c1.log(), c2.log()),
    );

    let port = tests::free_port();
    let gateway_body = format!(
        "[kernel]\nenabled = false\n[ingest.auditd]\nlisten = \"127.0.0.1:{port}\"\npeers = [{{ addr = \"127.0.0.1\", agent_id = \"audit-db\", host_name = \"{AUDIT_HOST}\" }}]\n{}",
        f.fleet_section("gateway")
    );
    let gateway = f.start("gateway", &gateway_body, "sensor running (fleet gateway");
    let edge_body = format!(
        "[kernel]\nenabled = true\n{}{}",
        Fleet::an1358_settings(),
        f.fleet_section("edge")
    );
    let edge = f.start("edge", &edge_body, "sensor running");
    assert!(
        edge.log().contains("source=kernel"),
        "the kernel sensor did not attach on the edge:\n{}",
        edge.log()
    );

    let conf = PathBuf::from("/etc/audit/audisp-remote.conf");
    let _restore = Restore(conf.clone(), std::fs::read(&conf).ok());
    let pid = std::process::id();
    let round = |n: u32| -> Vec<(&'static str, String)> {
        // auditd first: the cross-host sequence is "connect on the db host, then the bind here".
        audisp_remote(port, &audit_records(n));
        std::thread::sleep(Duration::from_millis(1500));
        let cross = format!("/tmp/fleet-e2e-{pid}-{n}.sock");
        unix_bind_as_uid(&cross, uid(n));
        let evil = format!("/tmp/an1358-fleet-{pid}-{n}.sock");
        unix_bind(&evil);
        let fifo_path = format!("/dev/shm/fleet-e2e-{pid}-{n}");
        fifo(&fifo_path);
        vec![
            ("AN1358", evil),
            ("AN1358", fifo_path),
            ("fleet-cross-host", String::new()),
        ]
    };

    let t0 = Instant::now();
    let first = round(1);
    expect_once(&f, &[&c1, &c2, &edge, &gateway], &first, 1);
    eprintln!(
        "round 1: {} alerts in PostgreSQL after {:?}",
        f.alerts().len(),
        t0.elapsed()
    );
    let t1 = Instant::now();

    // kill -9 the central node owning the partition of uid 0 (AN1358's actor, this test).
    let busy = partition_of("0", PARTITIONS);
    let c1_busy = held_partitions(&c1.log()).contains(&busy);
    if c1_busy {
        c1.kill9();
    } else {
        c2.kill9();
    }
    let (survivor, survivor_node) = if c1_busy { (&c2, &n2) } else { (&c1, &n1) };
    let before_kill = held_partitions(&survivor.log());
    assert!(
        !before_kill.contains(&busy),
        "the survivor held partition {busy} before the kill: {before_kill:?}"
    );
    // Events keep flowing from the edge meanwhile (the machine is never quiet); round 2 goes to
    // a partition with no live owner until the lease expires.
    let second = round(2);
    wait_until(
        Duration::from_secs(30),
        "the surviving central node to own every partition",
        || (held_partitions(&survivor.log()).len() == PARTITIONS as usize).then_some(()),
        || format!("survivor ({survivor_node}):\n{}", survivor.log()),
    );
    let mut all_expected = first.clone();
    all_expected.extend(second);
    expect_once(&f, &[&c1, &c2, &edge, &gateway], &all_expected, 2);
    // The same through the CLI against the fleet: `sensor alerts list` on the surviving central
    // node's control socket reads the fleet store.
    let sock = f.dir.join(if c1_busy {
        "central2.sock"
    } else {
        "central1.sock"
    });
    let out = Command::new(tests::sensor_bin())
        .args(["alerts", "list", "--json", "--limit", "5000", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "alerts list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (rule, needle) in &all_expected {
        let n: Vec<_> = listed
            .iter()
            .filter(|a| {
                a["rule_id"] == *rule
                    && a["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(needle.as_str())
            })
            .collect();
        let want = if needle.is_empty() { 2 } else { 1 };
        assert_eq!(n.len(), want, "{rule} {needle} via the CLI: {n:#?}");
        assert!(n.iter().all(|a| a["count"] == 1), "{n:#?}");
    }
    // The cross-host alerts join a record that came through audisp-remote and the gateway with a
    // kernel event of the edge, both of the round's uid.
    for n in [1, 2] {
        let ev = f.pg.psql(
            "sensor",
            &format!(
                "SELECT e.event::text FROM evidence e JOIN alerts a ON a.id = e.alert_id \
                 WHERE a.rule_id = 'fleet-cross-host' AND a.join_keys::text LIKE '%\"{}\"%' ORDER BY e.seq",
                uid(n)
            ),
        );
        let evs: Vec<serde_json::Value> = ev
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(evs.len(), 2, "round {n}: evidence {evs:#?}");
        assert_eq!(evs[0]["host"]["name"], AUDIT_HOST, "{:#}", evs[0]);
        assert_eq!(evs[0]["agent"]["id"], "audit-db", "{:#}", evs[0]);
        assert_eq!(evs[0]["destination"]["port"], 11211, "{:#}", evs[0]);
        assert_eq!(evs[1]["event"]["action"], "unix_bind", "{:#}", evs[1]);
        assert_eq!(
            evs[1]["socket"]["path"],
            format!("/tmp/fleet-e2e-{pid}-{n}.sock"),
            "{:#}",
            evs[1]
        );
        assert_eq!(evs[1]["user"]["id"], uid(n).to_string(), "{:#}", evs[1]);
        assert_ne!(evs[1]["host"]["name"], AUDIT_HOST, "{:#}", evs[1]);
    }
    eprintln!(
        "after kill -9: {} alerts in PostgreSQL after {:?}, survivor {survivor_node} owns {:?}",
        f.alerts().len(),
        t1.elapsed(),
        held_partitions(&survivor.log())
    );
}

/// Waits until every expected alert is in PostgreSQL, then checks, a few seconds later, that each
/// is there exactly once with a count of 1 (`fleet-cross-host`: `cross_rounds` alerts).
fn expect_once(f: &Fleet, procs: &[&Process], want: &[(&str, String)], cross_rounds: usize) {
    let ctx = || {
        let mut s = format!("alerts: {:#?}", f.alerts());
        for p in procs {
            s.push_str(&format!("\n----\n{}", p.log()));
        }
        s
    };
    wait_until(
        Duration::from_secs(180),
        "every expected alert in PostgreSQL",
        || {
            let all = f.alerts();
            let found = want.iter().all(|(rule, needle)| {
                if needle.is_empty() {
                    all.iter().filter(|a| a.0 == *rule).count() >= cross_rounds
                } else {
                    all.iter()
                        .any(|a| a.0 == *rule && a.1.contains(needle.as_str()))
                }
            });
            found.then_some(())
        },
        ctx,
    );
    // Then nothing more comes for them: still exactly once a few seconds later.
    std::thread::sleep(Duration::from_secs(4));
    let all = f.alerts();
    for (rule, needle) in want {
        if needle.is_empty() {
            let n: Vec<_> = all.iter().filter(|a| a.0 == *rule).collect();
            assert_eq!(n.len(), cross_rounds, "{rule}: {n:#?}");
            assert!(n.iter().all(|a| a.2 == 1), "{rule} repeated: {n:#?}");
        } else {
            let n: Vec<_> = all
                .iter()
                .filter(|a| a.0 == *rule && a.1.contains(needle.as_str()))
                .collect();
            assert_eq!(n.len(), 1, "{rule} for {needle}: {n:#?}\n{}", ctx());
            assert_eq!(n[0].2, 1, "{rule} for {needle} counted twice: {n:#?}");
        }
    }
}

/// `[fleet]` in the daemon's config: standalone by default, and every bad key or value named.
#[test]
fn fleet_config_is_checked_and_names_what_is_wrong() {
    let c = sensor::config::Config::embedded();
    assert_eq!(c.fleet.role, fleet::Role::Standalone);
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let o = Command::new(tests::sensor_bin())
            .args(["config", "check"])
            .arg(&p)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, err) = check("[fleet]\nrole = \"boss\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("boss") && err.contains("c.toml"), "{err}");
    let (code, err) = check("[fleet.nats]\nurl = \"nats://127.0.0.1:4222\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown field `url`"), "{err}");
    let (code, err) =
        check("[fleet]\nrole = \"edge\"\n[fleet.nats]\nurls = [\"nats://nats.example:4222\"]\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("plaintext") && err.contains("nats.example"),
        "{err}"
    );
    let (code, err) = check("[fleet]\npartition_by = []\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("fleet.partition_by"), "{err}");
    let (code, err) =
        check("[fleet]\nrole = \"central\"\npartition_by = [\"user.id\", \"host.name\"]\n");
    assert_eq!(code, Some(0), "{err}");
}

/// The records in the gateway stream: (subject, `Sensor-Agent-Host`, payload); `None` while the
/// test's own client cannot read it (reconnecting after the restart).
fn gateway_records(
    rt: &tokio::runtime::Runtime,
    bus: &fleet::bus::Bus,
) -> Option<Vec<(String, String, Vec<u8>)>> {
    rt.block_on(async {
        let mut s = bus
            .js
            .get_stream(fleet::gateway::record_stream(bus))
            .await
            .ok()?;
        let st = s.info().await.ok()?.state.clone();
        let mut out = Vec::new();
        if st.messages == 0 {
            return Some(out);
        }
        for seq in st.first_sequence..=st.last_sequence {
            let m = s.get_raw_message(seq).await.ok()?;
            let host = m
                .headers
                .get(fleet::gateway::AGENT_HOST_HEADER)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            out.push((m.subject.to_string(), host, m.payload.to_vec()));
        }
        Some(out)
    })
}

/// A gateway acknowledges an agent only once JetStream has its records: with nats-server stopped
/// the agent gets no 200 (and nothing is in the stream for it); after the restart the same batch is
/// acknowledged and stored once.
#[test]
fn gateway_acknowledges_only_what_jetstream_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fcfg = fleet::FleetConfig {
        role: fleet::Role::Central,
        partitions: PARTITIONS,
        nats: nats.config(),
        ..fleet::FleetConfig::default()
    };
    let bus = rt.block_on(async {
        let bus = fleet::bus::Bus::connect(&fcfg, "test").await.unwrap();
        fleet::gateway::ensure_record_stream(&bus, &fcfg.nats)
            .await
            .unwrap();
        bus
    });
    let port = tests::free_port();
    let token = "gateway-test-token";
    let nc = nats.config();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
[privileges]
user = "root"
[kernel]
enabled = false
[ingest.http]
listen = "127.0.0.1:{port}"
plaintext_loopback = true
[[ingest.agents]]
id = "mac-7"
host_name = "mac-7.example.org"
token_sha256 = "{sha}"
[fleet]
role = "gateway"
partitions = {PARTITIONS}
[fleet.nats]
urls = ["{url}"]
user = "{user}"
password_file = "{pw}"
"#,
            state = dir.path().join("state").display(),
            sha = tests::sha256_hex(token),
            url = nc.urls[0],
            user = nc.user.clone().unwrap_or_default(),
            pw = nc.password_file.clone().unwrap_or_default().display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["run", "--config"]).arg(&config);
    let log = dir.path().join("gateway.log");
    let mut gw = Process::spawn(cmd, &log);
    gw.wait_ready(Duration::from_secs(30), "the gateway to start", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("sensor running (fleet gateway")
    });
    let line = |n: u32| {
        format!("{{\"@timestamp\":\"2026-12-07T06:00:0{n}Z\",\"event\":{{\"category\":[\"process\"]}},\"n\":{n}}}\n")
    };
    // Until the gateway's client has connected, it refuses (503) rather than queue: the agent
    // retries.
    let accepted = wait_until(
        Duration::from_secs(30),
        "the gateway to acknowledge a first batch",
        || tests::post_ecs(port, token, &line(1)),
        || gw.log(),
    );
    assert_eq!(accepted, 1);
    let recs = gateway_records(&rt, &bus).unwrap();
    assert_eq!(recs.len(), 1);
    let want_p = partition_of("mac-7", PARTITIONS);
    assert_eq!(recs[0].0, format!("sensor.records.{want_p}"));
    assert_eq!(recs[0].1, "mac-7.example.org");
    let (format, agent, rec) = ingest::server::decode_record(&recs[0].2).unwrap();
    assert_eq!((format, agent), (ingest::Format::Ecs, "mac-7"));
    assert!(String::from_utf8_lossy(rec).contains("\"n\":1"));

    nats.stop();
    let t0 = Instant::now();
    assert_eq!(
        tests::post_ecs(port, token, &line(2)),
        None,
        "acknowledged with the bus down:\n{}",
        gw.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the refusal took {:?}",
        t0.elapsed()
    );
    nats.start_again();
    let accepted = wait_until(
        Duration::from_secs(30),
        "the gateway to acknowledge again after the bus restart",
        || tests::post_ecs(port, token, &line(2)),
        || gw.log(),
    );
    assert_eq!(accepted, 1);
    let recs = wait_until(
        Duration::from_secs(30),
        "two records in the stream",
        || gateway_records(&rt, &bus).filter(|r| r.len() >= 2),
        || gw.log(),
    );
    let twos = recs
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.2).contains("\"n\":2"))
        .count();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(twos, 1);
    assert!(
        gw.stop(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        gw.log()
    );
}
