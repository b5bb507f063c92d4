//! The fleet alert store against a real PostgreSQL 15 (initdb in a temporary directory, password
//! authentication over loopback): recording, dedup, redelivery, status history, retention, and an
//! outage of the server while alerts wait.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use correlator::{Alert, AttackRef, Severity};
use fleet::pg::{AlertFilter, FleetStore, Status};
use fleet::testing::PgServer;

const SEC: i64 = 1_000_000_000;

fn alert(rule: &str, host: &str, t_s: i64, ev_ids: &[&str]) -> Alert {
    Alert {
        rule_id: rule.to_string(),
        rule_name: format!("rule {rule}"),
        severity: Severity::High,
        risk_score: 73,
        attack: AttackRef {
            techniques: vec!["T1059".into()],
            ..AttackRef::default()
        },
        timestamp_ns: t_s * SEC,
        first_event_ns: t_s * SEC - SEC,
        join_keys: vec![],
        host: Some(host.to_string()),
        user: Some("alice".into()),
        process: Some("/bin/sh".into()),
        settings: serde_json::Map::new(),
        reason: "because".into(),
        evidence: ev_ids
            .iter()
            .map(|id| serde_json::json!({"host": {"name": host}, "sensor": {"fleet_id": id}, "z": 1, "a": 2}))
            .collect(),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_dedup_redelivery_history_retention() -> Result<()> {
    let pg = PgServer::start();
    let mut store = FleetStore::connect(&pg.config()).await.context("connect")?;
    ensure!(store.schema_version().await? == 2);
    // A second node connecting migrates nothing and sees the same version.
    let mut other = FleetStore::connect(&pg.config()).await?;
    ensure!(other.schema_version().await? == 2);

    let a1 = alert("r1", "web-1", 1000, &["e1:1", "e1:2"]);
    let r = store.record_batch(std::slice::from_ref(&a1), 5).await?;
    ensure!(r[0].new && !r[0].duplicate && r[0].count == 1, "{r:?}");
    let id = r[0].id;

    // Redelivery: the same alert from the same events, through another node. Nothing changes.
    let r2 = other.record_batch(std::slice::from_ref(&a1), 6).await?;
    ensure!(
        !r2[0].new && r2[0].duplicate && r2[0].id == id && r2[0].count == 1,
        "{r2:?}"
    );

    // A new sighting (other events) within the window folds into the alert.
    let a2 = alert("r1", "web-1", 1100, &["e1:7"]);
    let r3 = store.record_batch(std::slice::from_ref(&a2), 7).await?;
    ensure!(
        !r3[0].new && !r3[0].duplicate && r3[0].id == id && r3[0].count == 2,
        "{r3:?}"
    );
    // ... and its redelivery too is recognised.
    let r4 = store.record_batch(&[a2], 8).await?;
    ensure!(r4[0].duplicate && r4[0].count == 2, "{r4:?}");

    // Outside the window (600 s after the last sighting): a new alert.
    let a3 = alert("r1", "web-1", 1100 + 601, &["e1:9"]);
    let r5 = store.record_batch(&[a3], 9).await?;
    ensure!(r5[0].new && r5[0].id != id, "r5 {r5:?}");
    // Another host: its own alert.
    let r6 = store
        .record_batch(&[alert("r1", "db-1", 1000, &["e2:1"])], 9)
        .await?;
    ensure!(r6[0].new, "r6 {r6:?}");

    let d = store.get(id).await?;
    ensure!(d.evidence.len() == 3, "evidence {:?}", d.evidence);
    // Evidence is kept as it came (JSON, key order included).
    ensure!(
        serde_json::to_string(&d.evidence[0])? == serde_json::to_string(&a1.evidence[0])?,
        "{} vs {}",
        d.evidence[0],
        a1.evidence[0]
    );
    ensure!(d.alert.first_seen_ns == 999 * SEC && d.alert.last_seen_ns == 1100 * SEC);
    ensure!(d.alert.attack.techniques == ["T1059"]);
    ensure!(d.history.len() == 1 && d.history[0].to == Status::Open);

    // Ack once for the fleet, from one node; the other sees it, with history.
    store
        .set_status(id, Status::Acknowledged, "alice", "looking", 10)
        .await?;
    let seen = other.get(id).await?;
    ensure!(seen.alert.status == Status::Acknowledged);
    other
        .set_status(id, Status::Closed, "bob", "benign", 11)
        .await?;
    let d = store.get(id).await?;
    let h: Vec<_> = d
        .history
        .iter()
        .map(|h| (h.actor.as_str(), h.from, h.to))
        .collect();
    ensure!(
        h == [
            ("sensor", None, Status::Open),
            ("alice", Some(Status::Open), Status::Acknowledged),
            ("bob", Some(Status::Acknowledged), Status::Closed)
        ],
        "{h:?}"
    );
    ensure!(matches!(
        store.set_status(999_999, Status::Closed, "x", "", 1).await,
        Err(fleet::FleetError::NotFound(999_999))
    ));
    // A closed alert is not folded into: a new sighting (past the window of the other open one) opens a new one.
    let r7 = store
        .record_batch(&[alert("r1", "web-1", 2500, &["e1:20"])], 12)
        .await?;
    ensure!(r7[0].new, "r7 {r7:?}");

    // Filters.
    let open = store
        .list(&AlertFilter {
            status: Some(Status::Open),
            ..AlertFilter::default()
        })
        .await?;
    ensure!(open.len() == 3, "{open:?}");
    let db = store
        .list(&AlertFilter {
            host: Some("db-1".into()),
            ..AlertFilter::default()
        })
        .await?;
    ensure!(db.len() == 1 && db[0].host.as_deref() == Some("db-1"));
    let after = store
        .list(&AlertFilter {
            after_id: Some(id),
            ..AlertFilter::default()
        })
        .await?;
    ensure!(after.windows(2).all(|w| w[0].id < w[1].id) && after.len() == 3);

    // Retention: by count keeps the newest two by last_seen; by age removes old ones.
    let stats = store.stats().await?;
    ensure!(
        stats.alerts == 4 && stats.closed == 1 && stats.schema_version == 2,
        "{stats:?}"
    );
    let mut cfg = pg.config();
    cfg.max_alerts = 2;
    cfg.max_age_days = 0;
    let mut pruner = FleetStore::connect(&cfg).await?;
    let rep = pruner.apply_retention(now_ns()).await?;
    ensure!(
        rep.deleted_by_count == 2 && rep.deleted_by_age == 0,
        "{rep:?}"
    );
    let left: Vec<i64> = store
        .list(&AlertFilter::default())
        .await?
        .iter()
        .map(|a| a.last_seen_ns)
        .collect();
    ensure!(left == [2500 * SEC, 1701 * SEC], "{left:?}");
    // Sightings went with their alerts (cascade): nothing orphaned.
    let orphans = pg.psql("sensor", "SELECT count(*) FROM sightings s LEFT JOIN alerts a ON a.id = s.alert_id WHERE a.id IS NULL;");
    ensure!(orphans.trim() == "0", "orphans {orphans}");
    let rep = store
        .apply_retention(1701 * SEC + 91 * 86_400 * SEC)
        .await?;
    ensure!(rep.deleted_by_age == 2, "{rep:?}");
    ensure!(store.stats().await?.alerts == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redelivery_makes_one_alert() -> Result<()> {
    let pg = PgServer::start();
    let cfg = pg.config();
    let mut tasks = Vec::new();
    for node in 0..4 {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = FleetStore::connect(&cfg).await?;
            let mut recorded = Vec::new();
            for i in 0..25 {
                // Every node records the same 25 alerts (as after a takeover replay), in its own order.
                let i = (i + node * 7) % 25;
                let a = alert(
                    "seq",
                    &format!("h{}", i % 5),
                    2000 + i64::from(i),
                    &[&format!("e:{i}")],
                );
                recorded.push(s.record_batch(&[a], 1).await?[0]);
            }
            anyhow::Ok(recorded)
        }));
    }
    let mut new = 0;
    for t in tasks {
        new += t.await??.iter().filter(|r| r.new || !r.duplicate).count();
    }
    // 25 distinct sightings in all (5 hosts x 5 within the window: 5 alerts of count 5), whoever recorded them.
    ensure!(new == 25, "{new} sightings recorded, expected 25");
    let mut s = FleetStore::connect(&cfg).await?;
    let all = s.list(&AlertFilter::default()).await?;
    ensure!(
        all.len() == 5 && all.iter().all(|a| a.count == 5),
        "{all:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_wait_out_a_postgres_restart() -> Result<()> {
    let mut pg = PgServer::start();
    let mut store = FleetStore::connect(&pg.config()).await?;
    store
        .record_batch(&[alert("r", "h", 100, &["x:0"])], 1)
        .await?;
    pg.stop();
    // While the server is down, a writer keeps its batches and retries.
    let writer = tokio::spawn(async move {
        let mut out = Vec::new();
        for i in 1..=50 {
            let a = alert("r", &format!("h{i}"), 100 + i, &[&format!("x:{i}")]);
            out.push(
                store
                    .record_batch_durable(&[a], now_ns, Some(Duration::from_secs(60)))
                    .await?,
            );
        }
        anyhow::Ok((store, out))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        !writer.is_finished(),
        "the writer finished while PostgreSQL was down"
    );
    let pg_restart = tokio::task::block_in_place(|| {
        pg.start_again();
        pg
    });
    let (mut store, out) = tokio::time::timeout(Duration::from_secs(60), writer).await???;
    ensure!(out.iter().all(|r| r[0].new), "{out:?}");
    let all = store.list(&AlertFilter::default()).await?;
    ensure!(
        all.len() == 51,
        "{} alerts after the restart, expected 51",
        all.len()
    );
    let n = pg_restart.psql("sensor", "SELECT count(*) FROM sightings;");
    ensure!(n.trim() == "51", "sightings {n}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_config_are_named() -> Result<()> {
    let pg = PgServer::start();
    let dir = tempfile::tempdir()?;
    let mut cfg = pg.config();
    let wrong = dir.path().join("wrong.pw");
    std::fs::write(&wrong, "not-the-password\n")?;
    cfg.password_file = Some(wrong);
    let e = FleetStore::connect(&cfg)
        .await
        .err()
        .context("connected with a wrong password")?;
    let msg = e.to_string();
    ensure!(msg.contains(&cfg.url), "{msg}");
    // Refused, not unavailable: a writer must not wait for it forever.
    ensure!(
        !e.is_transient(),
        "wrong password taken for an outage: {msg}"
    );
    cfg.password_file = Some(dir.path().join("missing.pw"));
    let msg = FleetStore::connect(&cfg)
        .await
        .err()
        .context("connected")?
        .to_string();
    ensure!(msg.contains("missing.pw"), "{msg}");
    cfg.url = "postgresql://sensor@127.0.0.1:notaport/sensor".into();
    let msg = FleetStore::connect(&cfg)
        .await
        .err()
        .context("connected")?
        .to_string();
    ensure!(msg.contains("fleet.postgres.url"), "{msg}");
    Ok(())
}

/// One alert model in both stores: the source and container columns (migration v2), the filters on
/// them, and following new alerts through the `AlertStore` interface, also when ids become
/// visible out of order (an insert that commits after a later one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_container_filters_and_tail_through_the_alert_store_interface() -> Result<()> {
    use alert_store::{AlertStore, StatusChange};
    use fleet::pg::FleetAlerts;
    use futures_util::StreamExt;

    let pg = PgServer::start();
    let mut store = FleetStore::connect(&pg.config()).await?;
    let with = |rule: &str, host: &str, module: Option<&str>, container: Option<&str>, id: &str| {
        let mut a = alert(rule, host, 1000, &[id]);
        let ev = &mut a.evidence[0];
        if let Some(m) = module {
            ev["event"] = serde_json::json!({"module": m});
        }
        if let Some(c) = container {
            ev["container"] = serde_json::json!({"id": c, "name": "web"});
            ev["kubernetes"] = serde_json::json!({"namespace": "shop", "pod": {"name": "web-0"}});
        }
        a
    };
    let recorded = store
        .record_batch(
            &[
                with("r1", "h1", Some("auditd"), None, "e:1"),
                with("r1", "h2", Some("sensor"), None, "e:2"),
                with(
                    "r2",
                    "h1",
                    Some("sensor"),
                    Some("0123456789abcdef0123"),
                    "e:3",
                ),
                with("r2", "h1", None, None, "e:4"),
            ],
            5,
        )
        .await?;
    ensure!(recorded.iter().all(|r| r.new), "{recorded:?}");
    let ids: Vec<i64> = recorded.iter().map(|r| r.id).collect();
    let api = FleetAlerts::connect(&pg.config())
        .await?
        .with_poll_interval(Duration::from_millis(100));
    let list = |host: Option<&str>, source: Option<&str>, container: Option<&str>| {
        let api = api.clone();
        let f = AlertFilter {
            host: host.map(str::to_string),
            source: source.map(str::to_string),
            container: container.map(str::to_string),
            ..AlertFilter::default()
        };
        async move {
            let v: Vec<i64> = api.list(f).await?.iter().map(|a| a.id).collect();
            anyhow::Ok(v)
        }
    };
    ensure!(list(None, Some("auditd"), None).await? == [ids[0]]);
    ensure!(list(Some("h1"), Some("sensor"), None).await? == [ids[2]]);
    ensure!(list(Some("h1"), None, None).await? == [ids[3], ids[2], ids[0]]);
    ensure!(
        list(None, None, Some("0123456789ab")).await? == [ids[2]],
        "a 12-digit id prefix"
    );
    ensure!(
        list(None, None, Some("web")).await? == [ids[2]],
        "a container name"
    );
    let d = api.get(ids[2]).await?;
    ensure!(d.alert.source.as_deref() == Some("sensor"), "{:?}", d.alert);
    let c = d.alert.container.context("container")?;
    ensure!(
        c.namespace.as_deref() == Some("shop") && c.pod.as_deref() == Some("web-0"),
        "{c:?}"
    );
    ensure!(api.get(ids[3]).await?.alert.source.is_none());
    let namespaced = api
        .list(AlertFilter {
            namespace: Some("shop".into()),
            ..AlertFilter::default()
        })
        .await?;
    ensure!(namespaced.len() == 1 && namespaced[0].id == ids[2]);
    // A status change through the interface, read back through a plain store (another node).
    let change = StatusChange {
        status: Status::Acknowledged,
        actor: "alice".into(),
        reason: "mine".into(),
        now_ns: 9,
    };
    ensure!(api.set_status(ids[0], change.clone()).await?.status == Status::Acknowledged);
    ensure!(store.get(ids[0]).await?.alert.status == Status::Acknowledged);
    ensure!(matches!(
        api.set_status(999_999, change).await,
        Err(alert_store::AccessError::NotFound(999_999))
    ));
    let stats = api.stats().await?;
    ensure!(
        stats.engine == "postgresql" && stats.alerts == 4 && stats.acknowledged == 1,
        "{stats:?}"
    );
    ensure!(stats.path == pg.config().url, "{stats:?}");

    // Tail: only alerts stored after it starts; an insert that commits after a later one still
    // comes through.
    let mut tail = api.tail().await?;
    let mut raw = {
        let mut c: tokio_postgres::Config = pg.config().url.parse()?;
        let pw = std::fs::read_to_string(pg.config().password_file.context("password file")?)?;
        c.password(pw.trim_end());
        let (client, conn) = c.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
    };
    let slow = raw.transaction().await?;
    let slow_id: i64 = slow
        .query_one(
            "INSERT INTO alerts (rule_id, rule_name, dedup_key, severity, risk_score, status, first_seen_ns,
             last_seen_ns, created_ns, updated_ns, attack, reason, settings, join_keys, host, source)
             VALUES ('slow', 'slow', '[]', 2, 1, 'open', 1, 1, 1, 1, '{}', '', '{}', '[]', 'h9', 'zeek') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    let fast = store
        .record_batch(&[with("r3", "h3", Some("windows"), None, "e:5")], 6)
        .await?[0]
        .id;
    ensure!(fast > slow_id, "ids {slow_id} then {fast}");
    let first = next(&mut tail).await?;
    ensure!(
        first.id == fast && first.source.as_deref() == Some("windows"),
        "{first:?}"
    );
    slow.commit().await?;
    let second = next(&mut tail).await?;
    ensure!(
        second.id == slow_id && second.host.as_deref() == Some("h9"),
        "{second:?}"
    );
    // A repeat folded into an existing alert is not a new alert; a new one is, once.
    store
        .record_batch(&[with("r3", "h3", Some("windows"), None, "e:6")], 7)
        .await?;
    let third = store
        .record_batch(&[with("r4", "h4", Some("sensor"), None, "e:7")], 8)
        .await?[0]
        .id;
    let got = next(&mut tail).await?;
    ensure!(got.id == third, "{got:?}");
    ensure!(
        tokio::time::timeout(Duration::from_millis(800), tail.next())
            .await
            .is_err(),
        "nothing else is new"
    );
    // Closing the store ends the stream.
    api.close();
    ensure!(tokio::time::timeout(Duration::from_secs(5), tail.next())
        .await?
        .is_none());
    Ok(())
}

async fn next(tail: &mut alert_store::AlertStream) -> Result<fleet::pg::StoredAlert> {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .ok()
        .flatten()
        .context("no alert from the tail within 10 s")
}
