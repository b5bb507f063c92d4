//! CrowdStrike Falcon for Mobile: `MobileDetectionSummaryEvent` records of the Falcon streaming API
//! (event streams), as they arrive — `{"metadata": {"eventType", "eventCreationTime", ...},
//! "event": {...}}` — or as SIEM connectors forward the `event` object alone (recognised by
//! `MobileDetectionId`).
//!
//! Fields, from the streaming API's event as integrations document and read it: `MobileDetectionId`,
//! `ComputerName` (the device), `UserName`, `SensorId` (the device's Falcon id), `DetectName`,
//! `DetectDescription`, `Tactic`/`Technique`/`TechniqueId`, `Severity` (0-100, or 1-5 in older
//! tenants) and `SeverityName`, `FalconHostLink`, `ContextTimeStamp` (epoch seconds),
//! `MobileAppsDetails[]` (`AppIdentifier`, `AndroidAppLabel`, `AndroidAppVersionName`,
//! `ImageFileName`), `MobileNetworkConnections[]` (`RemoteAddress`, `RemotePort`, `LocalAddress`,
//! `Url`, `Protocol`, `ConnectionDirection`), `ApplicationName`, `NetworkDetectionType`,
//! `PlatformName`/`OSVersion`.

use correlator::Value;
use serde_json::Value as JsonValue;

use super::super::util::{self, s};
use super::{alert, new_event, nonempty, set_destination, set_device, set_os, set_severity};
use super::{severity_word, Ctx, Event};

/// A Falcon for Mobile detection: the streaming API envelope, or its `event` object alone.
pub(super) fn is_falcon_mobile(d: &JsonValue) -> bool {
    util::get_str(d, "metadata.eventType") == Some("MobileDetectionSummaryEvent")
        || d.get("MobileDetectionId").is_some()
}

pub(super) fn falcon_mobile(ctx: &Ctx, record: &str, doc: &JsonValue) -> Result<Event, String> {
    let d = doc.get("event").filter(|e| e.is_object()).unwrap_or(doc);
    let ts = util::get(doc, "metadata.eventCreationTime")
        .and_then(util::as_int)
        .map(|ms| ms.saturating_mul(1_000_000))
        .or_else(|| {
            util::get(d, "ContextTimeStamp")
                .and_then(util::as_int)
                .map(|sec| sec.saturating_mul(1_000_000_000))
        })
        .ok_or("Falcon mobile detection without `metadata.eventCreationTime` or `event.ContextTimeStamp`")?;
    let mut ev = new_event(
        ctx,
        record,
        "mtd.crowdstrike",
        "CrowdStrike",
        "Falcon for Mobile",
    );
    util::set_time(&mut ev, ts);
    let network = d
        .get("MobileNetworkConnections")
        .and_then(JsonValue::as_array)
        .is_some_and(|a| !a.is_empty())
        || nonempty(d, "NetworkDetectionType").is_some();
    let apps = d
        .get("MobileAppsDetails")
        .and_then(JsonValue::as_array)
        .filter(|a| !a.is_empty());
    let category: &[&str] = if network {
        &["network", "threat"]
    } else if apps.is_some() {
        &["package", "threat"]
    } else {
        &["host", "threat"]
    };
    alert(&mut ev, category);
    ev.insert("event.action", s("threat_detected"));
    let name = nonempty(d, "DetectName")
        .or_else(|| nonempty(d, "Name"))
        .unwrap_or("Mobile Detection");
    ev.insert("rule.name", s(name));
    if let Some(desc) = nonempty(d, "DetectDescription").or_else(|| nonempty(d, "Description")) {
        ev.insert("event.reason", s(desc));
    } else {
        ev.insert("event.reason", s(name));
    }
    for (from, to) in [
        ("MobileDetectionId", "event.id"),
        ("FalconHostLink", "event.url"),
        ("Tactic", "threat.tactic.name"),
        ("Technique", "threat.technique.name"),
        ("TechniqueId", "threat.technique.id"),
        ("CompositeId", "mtd.crowdstrike.composite_id"),
        ("PatternId", "mtd.crowdstrike.pattern_id"),
        (
            "NetworkDetectionType",
            "mtd.crowdstrike.network_detection_type",
        ),
    ] {
        util::copy(&mut ev, d, from, to);
    }
    if nonempty(d, "TechniqueId").is_some() {
        ev.insert("threat.framework", s("MITRE ATT&CK"));
    }
    severity(&mut ev, d);
    if let Some(id) = nonempty(d, "SensorId") {
        set_device(&mut ev, id);
    }
    if let Some(h) = nonempty(d, "ComputerName") {
        ev.insert("host.name", s(h));
    }
    set_os(
        &mut ev,
        nonempty(d, "PlatformName"),
        nonempty(d, "OSVersion"),
    );
    if let Some(u) = nonempty(d, "UserName") {
        if u.contains('@') {
            ev.insert("user.email", s(u));
        }
        ev.insert("user.name", s(u));
    }
    if let Some(app) = apps.and_then(|a| a.first()) {
        let id = nonempty(app, "AppIdentifier");
        if let Some(p) = id.or_else(|| nonempty(app, "AndroidAppLabel")) {
            ev.insert("package.name", s(p));
        }
        util::copy(&mut ev, app, "AndroidAppLabel", "package.description");
        util::copy(&mut ev, app, "AndroidAppVersionName", "package.version");
        util::copy(&mut ev, app, "ImageFileName", "file.name");
    } else if let Some(a) = nonempty(d, "ApplicationName") {
        ev.insert("package.name", s(a));
    }
    if let Some(conn) = d
        .get("MobileNetworkConnections")
        .and_then(JsonValue::as_array)
        .and_then(|a| a.first())
    {
        let port = util::get(conn, "RemotePort").and_then(util::as_int);
        set_destination(&mut ev, None, nonempty(conn, "RemoteAddress"), port);
        if let Some(u) = nonempty(conn, "Url") {
            ev.insert("url.full", s(u));
            ev.insert("threat.indicator.url.full", s(u));
        }
        if let Some(a) = nonempty(conn, "LocalAddress").and_then(|a| a.parse().ok()) {
            ev.insert("source.ip", Value::Ip(a));
        }
        if let Some(p) = nonempty(conn, "Protocol") {
            ev.insert("network.transport", s(&p.to_ascii_lowercase()));
        }
        util::copy(&mut ev, conn, "ConnectionDirection", "network.direction");
    }
    Ok(ev)
}

/// `Severity` is 0-100 on current tenants (>= 80 critical, 70 high, 50 medium, else low) and 1-5
/// on older ones; `SeverityName` (`High`...) wins when present.
fn severity(ev: &mut Event, d: &JsonValue) {
    let raw = util::get(d, "Severity").and_then(util::as_int);
    let label = nonempty(d, "SeverityName")
        .and_then(severity_word)
        .map(|(l, _)| l)
        .unwrap_or(match raw {
            Some(n) if n > 5 => match n {
                80.. => "critical",
                70..=79 => "high",
                50..=69 => "medium",
                _ => "low",
            },
            Some(5) => "critical",
            Some(4) => "high",
            Some(3) => "medium",
            _ => "low",
        });
    set_severity(ev, raw, label);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::decode;
    use super::*;
    use crate::decode::Format;

    fn g(e: &Event, p: &str) -> Option<String> {
        e.get_path(p).and_then(Value::as_str).map(str::to_string)
    }

    /// A streaming-API record (envelope and event) of a malicious app with a network connection,
    /// written in the shape the Falcon event stream publishes; and the `event` object alone, as
    /// connectors forward it.
    #[test]
    fn falcon_mobile_detection_maps_device_app_and_destination() {
        let ctx = Ctx::new(Format::Mtd, "t");
        let rec = r#"{"metadata":{"customerIDString":"c1","offset":42,"eventType":"MobileDetectionSummaryEvent","eventCreationTime":1703082619686,"version":"1.0"},"event":{"MobileDetectionId":"9001","ComputerName":"Pixel-7","UserName":"ann@example.com","SensorId":"a1b2","PlatformName":"Android","OSVersion":"14","Severity":70,"SeverityName":"High","Tactic":"Command and Control","Technique":"Application Layer Protocol","TechniqueId":"T1437","DetectName":"Malicious app","DetectDescription":"An app connected to a known C2 server","FalconHostLink":"https://falcon.example/mobile/9001","ContextTimeStamp":1703082619,"MobileAppsDetails":[{"AppIdentifier":"com.evil.flashlight","AndroidAppLabel":"Flashlight","AndroidAppVersionName":"1.2","ImageFileName":"base.apk"}],"MobileNetworkConnections":[{"RemoteAddress":"203.0.113.9","RemotePort":443,"LocalAddress":"10.0.0.5","Url":"https://c2.example/x","Protocol":"TCP","ConnectionDirection":"outbound"}]}}"#;
        let evs = decode(&ctx, rec).unwrap();
        let e = &evs[0];
        assert_eq!(g(e, "observer.vendor").as_deref(), Some("CrowdStrike"));
        assert_eq!(g(e, "event.kind").as_deref(), Some("alert"));
        assert_eq!(
            e.get_path("event.category"),
            Some(&super::super::strs(&["network", "threat"]))
        );
        assert_eq!(
            g(e, "@timestamp").as_deref(),
            Some("2023-12-20T14:30:19.686Z")
        );
        assert_eq!(g(e, "rule.name").as_deref(), Some("Malicious app"));
        assert_eq!(g(e, "threat.technique.id").as_deref(), Some("T1437"));
        assert_eq!(g(e, "mtd.severity").as_deref(), Some("high"));
        assert_eq!(e.get_path("event.severity"), Some(&Value::Int(70)));
        assert_eq!(g(e, "host.id").as_deref(), Some("a1b2"));
        assert_eq!(g(e, "host.name").as_deref(), Some("Pixel-7"));
        assert_eq!(g(e, "host.os.type").as_deref(), Some("android"));
        assert_eq!(g(e, "user.email").as_deref(), Some("ann@example.com"));
        assert_eq!(g(e, "package.name").as_deref(), Some("com.evil.flashlight"));
        assert_eq!(g(e, "package.version").as_deref(), Some("1.2"));
        assert_eq!(g(e, "url.full").as_deref(), Some("https://c2.example/x"));
        assert_eq!(e.get_path("destination.port"), Some(&Value::Int(443)));
        assert!(e.get_path("destination.ip").is_some());
        assert_eq!(g(e, "network.transport").as_deref(), Some("tcp"));
        // The event object alone: the time from ContextTimeStamp (seconds), severity from the number.
        let bare = r#"{"MobileDetectionId":"7","ComputerName":"iPhone","Severity":85,"DetectName":"Jailbreak","ContextTimeStamp":1703082619}"#;
        let e = &decode(&ctx, bare).unwrap()[0];
        assert_eq!(
            g(e, "@timestamp").as_deref(),
            Some("2023-12-20T14:30:19.000Z")
        );
        assert_eq!(g(e, "mtd.severity").as_deref(), Some("critical"));
        assert_eq!(
            e.get_path("event.category"),
            Some(&super::super::strs(&["host", "threat"]))
        );
        // No time at all: a clear error naming what is missing.
        let err = decode(&ctx, r#"{"MobileDetectionId":"8"}"#).unwrap_err();
        assert!(err.contains("eventCreationTime"), "{err}");
    }
}
