//! `mtd`: mobile-threat-defence vendor events as their APIs and streams publish them. The vendor is
//! recognised from the record itself:
//!
//! - Zimperium (MTD API v2 `threats` objects, or a `threat/search` response `{"content": [...]}`):
//!   `threatTypeName`, `zappInstance`, `zdeviceId` / `device.zdeviceId`.
//! - Lookout (Mobile Risk API v2 event stream, an event or a batch `{"events": [...]}`):
//!   `created_time`, `type` (`THREAT`, `DEVICE`, `AUDIT`, `SMISHING_ALERT`), `change_type`.
//! - Jamf (Security Cloud "Threat Events Stream"): `event.metadata.vendor` `Jamf` or
//!   `event.metadata.product` `Threat Events Stream`, `event.eventType`, `event.alertId`.
//! - Check Point Harmony Mobile (event API / SIEM export): `attack_vector` with `threat_factors` or
//!   `device_rooted`.
//! - CrowdStrike Falcon for Mobile (streaming API `MobileDetectionSummaryEvent`, with its
//!   `metadata` envelope or the `event` object alone): `metadata.eventType`, `MobileDetectionId`.
//! - Microsoft Intune (diagnostic settings export of `Devices` / `DeviceComplianceOrg` logs, one
//!   record or a batch `{"records": [...]}`): `category`, `operationName`, `properties`.
//!
//! Threats are `event.kind` `alert` with `rule.name` (the vendor's threat type), `event.reason`,
//! `event.severity` (the vendor's number) and `mtd.severity` (low / medium / high / critical);
//! device, app and network destination go to ECS `host.*`, `device.*`, `package.*`,
//! `destination.*`. An item of a batch is an event of its own, with the item (compact JSON) as its
//! original record. The mapping is in docs/formats/mtd.md.

use correlator::{Event, Value};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};
use super::{emit_all, Ctx, Decoder, Sink};

mod crowdstrike;

pub(crate) struct MtdDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for MtdDecoder {
    fn line(&mut self, line_no: u64, record: &str, sink: &mut Sink<'_>) {
        emit_all(line_no, decode(&self.ctx, record), sink);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Vendor {
    Zimperium,
    Lookout,
    Jamf,
    Intune,
    Harmony,
    CrowdStrike,
}

fn vendor(d: &JsonValue) -> Option<Vendor> {
    let has = |k: &str| d.get(k).is_some();
    if crowdstrike::is_falcon_mobile(d) {
        Some(Vendor::CrowdStrike)
    } else if util::get_str(d, "event.metadata.vendor")
        .is_some_and(|v| v.eq_ignore_ascii_case("jamf"))
        || util::get_str(d, "event.metadata.product") == Some("Threat Events Stream")
        || (util::get(d, "event.eventType").is_some() && util::get(d, "event.alertId").is_some())
    {
        Some(Vendor::Jamf)
    } else if has("threatTypeName")
        || has("zappInstance")
        || has("zdeviceId")
        || util::get(d, "device.zdeviceId").is_some()
    {
        Some(Vendor::Zimperium)
    } else if has("created_time")
        && (has("change_type") || has("actor") || has("target"))
        && d.get("type").is_some_and(JsonValue::is_string)
    {
        Some(Vendor::Lookout)
    } else if has("attack_vector") && (has("threat_factors") || has("device_rooted")) {
        Some(Vendor::Harmony)
    } else if (has("operationName")
        && has("category")
        && d.get("properties").is_some_and(JsonValue::is_object))
        || (has("TimeGenerated") && intune_table(d).is_some())
    {
        Some(Vendor::Intune)
    } else {
        None
    }
}

const KNOWN: &str = "Zimperium (threatTypeName / zappInstance), Lookout Mobile Risk API v2 (created_time, type, change_type), Jamf Threat Events Stream (event.metadata, event.eventType), Intune diagnostic logs (category, operationName, properties), Check Point Harmony Mobile (attack_vector, threat_factors), CrowdStrike Falcon for Mobile (metadata.eventType MobileDetectionSummaryEvent, MobileDetectionId)";

pub(crate) fn decode(ctx: &Ctx, record: &str) -> Result<Vec<Event>, String> {
    let doc = JsonValue::Object(util::parse_object(record.trim())?);
    // Batches as the APIs return them.
    for key in ["content", "events", "records"] {
        if let Some(JsonValue::Array(items)) = doc.get(key) {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let v = vendor(it).ok_or_else(|| {
                    format!("`{key}[{i}]`: no known vendor's record (expected one of: {KNOWN})")
                })?;
                // Each item is one vendor event: it is the event's original record.
                let raw = it.to_string();
                out.push(one(ctx, &raw, it, v).map_err(|e| format!("`{key}[{i}]`: {e}"))?);
            }
            return Ok(out);
        }
    }
    let v = vendor(&doc)
        .ok_or_else(|| format!("no known vendor's record (expected one of: {KNOWN})"))?;
    Ok(vec![one(ctx, record, &doc, v)?])
}

fn one(ctx: &Ctx, record: &str, d: &JsonValue, v: Vendor) -> Result<Event, String> {
    match v {
        Vendor::Zimperium if is_zimperium_device(d) => zimperium_device(ctx, record, d),
        Vendor::Zimperium => zimperium(ctx, record, d),
        Vendor::Lookout => lookout(ctx, record, d),
        Vendor::Jamf => jamf(ctx, record, d),
        Vendor::Intune => intune(ctx, record, d),
        Vendor::Harmony => harmony(ctx, record, d),
        Vendor::CrowdStrike => crowdstrike::falcon_mobile(ctx, record, d),
    }
}

fn new_event(ctx: &Ctx, record: &str, dataset: &str, vendor: &str, product: &str) -> Event {
    let mut ev = ctx.event(dataset, record);
    ev.insert("observer.vendor", s(vendor));
    ev.insert("observer.product", s(product));
    ev.insert("observer.type", s("mobile-threat-defence"));
    ev
}

fn alert(ev: &mut Event, category: &[&str]) {
    let f = fields();
    ev.set(f.event_kind, s("alert"));
    ev.set(f.event_category, strs(category));
    ev.set(f.event_type, strs(&["indicator"]));
}

/// The one reading of the vendors' severity words (Lookout, Harmony Mobile, Zimperium's
/// `severityName`, Intune's threat level): `mtd.severity` and its rank, 1 (low) to 4 (critical).
fn severity_word(word: &str) -> Option<(&'static str, i64)> {
    match word.to_ascii_lowercase().as_str() {
        "critical" => Some(("critical", 4)),
        "high" | "elevated" => Some(("high", 3)),
        "medium" | "moderate" | "normal" => Some(("medium", 2)),
        "low" => Some(("low", 1)),
        _ => None,
    }
}

fn set_severity(ev: &mut Event, raw: Option<i64>, label: &str) {
    if let Some(n) = raw {
        ev.insert("event.severity", Value::Int(n));
    }
    ev.insert("mtd.severity", s(label));
}

/// `IOS`, `ANDROID`, `MAC_OS`... as ECS `host.os.type`.
fn os_type(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.starts_with("ios") || n.starts_with("ipados") {
        Some("ios")
    } else if n.starts_with("android") {
        Some("android")
    } else if n.starts_with("mac") || n.starts_with("osx") {
        Some("macos")
    } else if n.starts_with("windows") {
        Some("windows")
    } else if n.starts_with("chrome") || n.starts_with("linux") {
        Some("linux")
    } else {
        None
    }
}

fn set_os(ev: &mut Event, name: Option<&str>, version: Option<&str>) {
    if let Some(t) = name.and_then(os_type) {
        ev.insert("host.os.type", s(t));
        ev.insert("host.os.platform", s(t));
    }
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        ev.insert("host.os.name", s(n));
    }
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        ev.insert("host.os.version", s(v));
    }
}

fn set_device(ev: &mut Event, id: &str) {
    ev.insert("host.id", s(id));
    ev.insert("device.id", s(id));
}

fn nonempty<'a>(d: &'a JsonValue, path: &str) -> Option<&'a str> {
    util::get_str(d, path).filter(|x| !x.is_empty())
}

fn set_destination(ev: &mut Event, host: Option<&str>, ip: Option<&str>, port: Option<i64>) {
    if let Some(h) = host {
        match h.parse::<std::net::IpAddr>() {
            Ok(a) => ev.insert("destination.ip", Value::Ip(a)),
            Err(_) => {
                ev.insert("destination.domain", s(h));
                ev.insert("threat.indicator.domain", s(h));
            }
        }
    }
    if let Some(a) = ip.and_then(|i| i.parse::<std::net::IpAddr>().ok()) {
        ev.insert("destination.ip", Value::Ip(a));
        ev.insert("threat.indicator.ip", Value::Ip(a));
    }
    if let Some(p) = port {
        ev.insert("destination.port", Value::Int(p));
    }
}

fn epoch_ms(v: &JsonValue) -> Option<i64> {
    util::as_int(v).map(|ms| ms.saturating_mul(1_000_000))
}

// Over 100 lines on purpose: Zimperium's mapping table (docs/formats/mtd.md), kept as one table.
fn zimperium(ctx: &Ctx, record: &str, d: &JsonValue) -> Result<Event, String> {
    let ts = d
        .get("timestamp")
        .and_then(epoch_ms)
        .or_else(|| util::get(d, "timestampInfo.timestamp").and_then(epoch_ms))
        .ok_or("Zimperium threat without a numeric `timestamp` (epoch ms)")?;
    let mut ev = new_event(ctx, record, "mtd.zimperium", "Zimperium", "MTD");
    util::set_time(&mut ev, ts);
    let threat = nonempty(d, "threatTypeName").unwrap_or("unknown threat");
    let vector = nonempty(d, "vectorName").unwrap_or("");
    let cat: &[&str] = match vector {
        "Network" => &["network", "threat"],
        "App" | "Apps" => &["package", "threat"],
        _ => &["host", "threat"],
    };
    alert(&mut ev, cat);
    ev.set(fields().event_action, s("threat_detected"));
    ev.insert("rule.name", s(threat));
    ev.insert("event.reason", s(threat));
    util::copy(&mut ev, d, "id", "event.id");
    util::copy(&mut ev, d, "threatTypeId", "rule.id");
    util::copy(&mut ev, d, "vectorName", "rule.category");
    util::copy(
        &mut ev,
        d,
        "classificationName",
        "mtd.threat.classification",
    );
    util::copy(&mut ev, d, "state", "mtd.threat.state");
    util::copy(&mut ev, d, "simulated", "mtd.threat.simulated");
    let sev = d.get("severity").and_then(util::as_int);
    let label = match nonempty(d, "severityName").and_then(severity_word) {
        Some((label, _)) => label,
        // Zimperium's numbers: 0 low, 1 normal, 2 elevated, 3 critical.
        None => match sev {
            Some(3) => "critical",
            Some(2) => "high",
            Some(1) => "medium",
            _ => "low",
        },
    };
    set_severity(&mut ev, sev, label);
    let dev_id = nonempty(d, "device.zdeviceId")
        .or_else(|| nonempty(d, "zdeviceId"))
        .or_else(|| nonempty(d, "deviceId"))
        .or_else(|| nonempty(d, "device.id"));
    if let Some(id) = dev_id {
        set_device(&mut ev, id);
    }
    if let Some(m) = nonempty(d, "device.mdmDeviceId") {
        ev.insert("mtd.device.mdm_id", s(m));
    }
    if let Some(m) = nonempty(d, "device.model") {
        ev.insert("device.model.identifier", s(m));
    }
    set_os(
        &mut ev,
        nonempty(d, "device.os.name").or_else(|| nonempty(d, "os")),
        nonempty(d, "device.os.version"),
    );
    if let Some(u) = nonempty(d, "deviceOwner").or_else(|| nonempty(d, "activationName")) {
        ev.insert("user.email", s(u));
    }
    // The app that raised it (the Zimperium agent or an SDK-embedding app).
    if let Some(b) = nonempty(d, "zappInstance.bundleId") {
        ev.insert("observer.name", s(b));
    }
    if let Some(gi) = d.get("generalInfo") {
        util::copy(&mut ev, gi, "ssid", "network.name");
        util::copy(&mut ev, gi, "bssid", "mtd.network.bssid");
        util::copy(&mut ev, gi, "actionTriggered", "mtd.threat.action");
        util::copy(
            &mut ev,
            gi,
            "jailbreakReasons",
            "mtd.threat.jailbreak_reasons",
        );
        util::copy(&mut ev, gi, "malwareName", "threat.software.name");
    }
    if let Some(app) = d.get("appInfo").or_else(|| d.get("maliciousAppInfo")) {
        if let Some(p) = nonempty(app, "bundleId").or_else(|| nonempty(app, "packageName")) {
            ev.insert("package.name", s(p));
            ev.insert("mobile.app.bundle_id", s(p));
        }
        util::copy(&mut ev, app, "appName", "mobile.app.name");
        util::copy(&mut ev, app, "version", "package.version");
        util::copy(&mut ev, app, "sha256", "file.hash.sha256");
    }
    if let Some(u) = nonempty(d, "suspiciousUrlInfo.url") {
        ev.insert("url.full", s(u));
        ev.insert("threat.indicator.url.full", s(u));
    }
    if let Some(nt) = d.get("networkThreatInfo") {
        set_destination(
            &mut ev,
            nonempty(nt, "domain").or_else(|| nonempty(nt, "host")),
            nonempty(nt, "destinationIp").or_else(|| nonempty(nt, "ip")),
            nt.get("destinationPort").and_then(util::as_int),
        );
    }
    Ok(ev)
}

/// A Zimperium v2 device object (`devices/public/v2/devices/...`, `device/search` responses): no
/// threat fields, the device's state instead (`riskPosture`, `os` as an object, `lastSeen`).
fn is_zimperium_device(d: &JsonValue) -> bool {
    d.get("threatTypeName").is_none()
        && d.get("threatTypeId").is_none()
        && d.get("timestamp").is_none()
        && (d.get("riskPosture").is_some() || d.get("os").is_some_and(JsonValue::is_object))
}

fn zimperium_device(ctx: &Ctx, record: &str, d: &JsonValue) -> Result<Event, String> {
    let ts = ["lastSeen", "processedAt", "created"]
        .iter()
        .find_map(|k| d.get(*k).and_then(epoch_ms))
        .ok_or("Zimperium device without a numeric `lastSeen` or `created` (epoch ms)")?;
    let mut ev = new_event(ctx, record, "mtd.zimperium", "Zimperium", "MTD");
    util::set_time(&mut ev, ts);
    let f = fields();
    ev.set(f.event_kind, s("state"));
    ev.set(f.event_category, strs(&["host"]));
    ev.set(f.event_type, strs(&["info"]));
    ev.set(f.event_action, s("device"));
    let id = nonempty(d, "zdeviceId")
        .or_else(|| nonempty(d, "id"))
        .ok_or("Zimperium device without `zdeviceId` or `id`")?;
    set_device(&mut ev, id);
    set_os(
        &mut ev,
        nonempty(d, "os.type").or_else(|| nonempty(d, "os.name")),
        nonempty(d, "os.version"),
    );
    util::copy(&mut ev, d, "os.patchDate", "mtd.device.os_patch_date");
    util::copy(&mut ev, d, "fullType", "device.model.identifier");
    util::copy(&mut ev, d, "model", "device.model.name");
    util::copy(&mut ev, d, "mdmDeviceId", "mtd.device.mdm_id");
    if let Some(u) = nonempty(d, "deviceOwner.email").or_else(|| nonempty(d, "activationName")) {
        ev.insert("user.email", s(u));
    }
    // The device's risk: 0 normal/low .. 3 critical, as on threats.
    if let Some(w) = nonempty(d, "riskPostureName") {
        ev.insert("mtd.device.risk_posture", s(w));
        if let Some((label, _)) = severity_word(w) {
            set_severity(&mut ev, d.get("riskPosture").and_then(util::as_int), label);
        }
    }
    for (k, dst) in [
        ("isJailbroken", "mtd.device.jailbroken"),
        ("developerOptionsOn", "mtd.device.developer_options"),
        (
            "lockScreenUnprotected",
            "mtd.device.lock_screen_unprotected",
        ),
        ("appStatus", "mtd.device.app_status"),
    ] {
        util::copy(&mut ev, d, k, dst);
    }
    Ok(ev)
}

// Over 100 lines on purpose: Lookout's mapping table (docs/formats/mtd.md), kept as one table.
fn lookout(ctx: &Ctx, record: &str, d: &JsonValue) -> Result<Event, String> {
    let t = util::get_str(d, "created_time").ok_or("Lookout event without `created_time`")?;
    let ts = correlator::event::parse_rfc3339_ns(t)
        .ok_or_else(|| format!("Lookout `created_time` `{t}` is not RFC 3339"))?;
    let ty = util::get_str(d, "type").unwrap_or("");
    let mut ev = new_event(ctx, record, "mtd.lookout", "Lookout", "Mobile Risk API");
    util::set_time(&mut ev, ts);
    util::copy(&mut ev, d, "id", "event.id");
    util::copy(&mut ev, d, "type", "mtd.lookout.type");
    util::copy(&mut ev, d, "change_type", "mtd.lookout.change_type");
    let f = fields();
    // The device: the event's `device` object, else the target or actor of type DEVICE.
    let dev_id = nonempty(d, "device.guid")
        .or_else(|| {
            (util::get_str(d, "target.type") == Some("DEVICE"))
                .then(|| nonempty(d, "target.guid"))
                .flatten()
        })
        .or_else(|| {
            (util::get_str(d, "actor.type") == Some("DEVICE"))
                .then(|| nonempty(d, "actor.guid"))
                .flatten()
        });
    if let Some(id) = dev_id {
        set_device(&mut ev, id);
    }
    if let Some(dev) = d.get("device") {
        set_os(
            &mut ev,
            nonempty(dev, "platform"),
            nonempty(dev, "software.os_version"),
        );
        util::copy(&mut ev, dev, "hardware.model", "device.model.identifier");
        util::copy(&mut ev, dev, "hardware.manufacturer", "device.manufacturer");
        util::copy(&mut ev, dev, "email_address", "user.email");
        util::copy(
            &mut ev,
            dev,
            "mdm_connector_uuid",
            "mtd.device.mdm_connector",
        );
        util::copy(&mut ev, dev, "mdm_external_id", "mtd.device.mdm_id");
        util::copy(
            &mut ev,
            dev,
            "status.security_status",
            "mtd.device.security_status",
        );
        util::copy(
            &mut ev,
            dev,
            "status.protection_status",
            "mtd.device.protection_status",
        );
        util::copy(
            &mut ev,
            dev,
            "status.activation_status",
            "mtd.device.activation_status",
        );
    }
    match ty {
        "THREAT" | "SMISHING_ALERT" => {
            let th = d
                .get("threat")
                .or_else(|| d.get("smishing_alert"))
                .unwrap_or(&JsonValue::Null);
            let classes: Vec<&str> = th
                .get("classifications")
                .and_then(JsonValue::as_array)
                .map(|a| a.iter().filter_map(JsonValue::as_str).collect())
                .unwrap_or_default();
            let threat_ty = nonempty(th, "type").unwrap_or(ty);
            let cat: &[&str] = match threat_ty {
                "NETWORK" | "WEB_CONTENT" => &["network", "threat"],
                "APP" | "FILE" => &["package", "threat"],
                _ => &["host", "threat"],
            };
            alert(&mut ev, cat);
            ev.set(f.event_action, s("threat_detected"));
            let name = classes.first().copied().unwrap_or(threat_ty);
            ev.insert("rule.name", s(name));
            ev.insert("rule.category", s(threat_ty));
            if !classes.is_empty() {
                ev.insert("mtd.threat.classification", strs(&classes));
            }
            let reason = nonempty(th, "description")
                .or_else(|| nonempty(th, "details.reason"))
                .unwrap_or(name);
            ev.insert("event.reason", s(reason));
            util::copy(&mut ev, th, "guid", "mtd.threat.id");
            util::copy(&mut ev, th, "status", "mtd.threat.state");
            util::copy(&mut ev, th, "action", "mtd.threat.action");
            let (label, num) = nonempty(th, "severity")
                .and_then(severity_word)
                .unwrap_or(("low", 1));
            set_severity(&mut ev, Some(num), label);
            if let Some(det) = th.get("details") {
                if let Some(p) = nonempty(det, "package_name")
                    .or_else(|| nonempty(det, "application_name").filter(|_| false))
                {
                    ev.insert("package.name", s(p));
                    ev.insert("mobile.app.bundle_id", s(p));
                }
                util::copy(&mut ev, det, "application_name", "mobile.app.name");
                util::copy(&mut ev, det, "package_version", "package.version");
                util::copy(&mut ev, det, "file_sha256", "file.hash.sha256");
                util::copy(&mut ev, det, "file_path", "file.path");
                util::copy(&mut ev, det, "response", "mtd.threat.response");
                util::copy(&mut ev, det, "reputation", "mtd.threat.reputation");
                if let Some(u) = nonempty(det, "url") {
                    ev.insert("url.full", s(u));
                    ev.insert("threat.indicator.url.full", s(u));
                }
                set_destination(
                    &mut ev,
                    nonempty(det, "domain").or_else(|| nonempty(det, "host")),
                    nonempty(det, "ip_address").or_else(|| nonempty(det, "destination_ip")),
                    None,
                );
                util::copy(&mut ev, det, "ssid", "network.name");
            }
        }
        "AUDIT" => {
            ev.set(f.event_kind, s("event"));
            ev.set(f.event_category, strs(&["configuration"]));
            ev.set(f.event_type, strs(&["change"]));
            ev.set(f.event_action, s("audit"));
            util::copy(&mut ev, d, "audit.type", "mtd.audit.type");
            util::copy(&mut ev, d, "actor.guid", "user.id");
        }
        _ => {
            ev.set(f.event_kind, s("state"));
            ev.set(f.event_category, strs(&["host"]));
            ev.set(f.event_type, strs(&["info"]));
            ev.set(f.event_action, s(&ty.to_ascii_lowercase()));
        }
    }
    Ok(ev)
}

fn jamf(ctx: &Ctx, record: &str, outer: &JsonValue) -> Result<Event, String> {
    let d = outer
        .get("event")
        .filter(|e| e.is_object())
        .unwrap_or(outer);
    let t = util::get_str(d, "timestamp").ok_or("Jamf threat event without `timestamp`")?;
    let ts = correlator::event::parse_rfc3339_ns(t)
        .ok_or_else(|| format!("Jamf `timestamp` `{t}` is not RFC 3339"))?;
    let mut ev = new_event(ctx, record, "mtd.jamf", "Jamf", "Threat Events Stream");
    util::set_time(&mut ev, ts);
    util::copy(&mut ev, d, "alertId", "event.id");
    let name = nonempty(d, "eventType.name").unwrap_or("UNKNOWN");
    let desc = nonempty(d, "eventType.description").unwrap_or(name);
    let dest_host = nonempty(d, "destination.name");
    let cat: &[&str] = if dest_host.is_some() || nonempty(d, "destination.ip").is_some() {
        &["network", "threat"]
    } else if nonempty(d, "app.id").is_some() {
        &["package", "threat"]
    } else {
        &["host", "threat"]
    };
    alert(&mut ev, cat);
    ev.set(fields().event_action, s(&name.to_ascii_lowercase()));
    ev.insert("rule.name", s(name));
    ev.insert("event.reason", s(desc));
    util::copy(&mut ev, d, "eventType.id", "rule.id");
    util::copy(&mut ev, d, "action", "mtd.threat.action");
    util::copy(&mut ev, d, "eventUrl", "event.url");
    util::copy(&mut ev, d, "location", "source.geo.country_iso_code");
    util::copy(&mut ev, d, "accessPoint", "network.name");
    util::copy(&mut ev, d, "accessPointBssid", "mtd.network.bssid");
    util::copy(&mut ev, d, "matchedPolicy", "rule.ruleset");
    let sev = d.get("severity").and_then(util::as_int);
    // Jamf's scale: 2 low ... 10 high (the stream documents 2, 4, 6, 8, 10).
    let label = match sev {
        Some(n) if n >= 10 => "critical",
        Some(n) if n >= 8 => "high",
        Some(n) if n >= 5 => "medium",
        _ => "low",
    };
    set_severity(&mut ev, sev, label);
    if let Some(id) = nonempty(d, "device.deviceId") {
        set_device(&mut ev, id);
    }
    util::copy(&mut ev, d, "device.externalId", "mtd.device.mdm_id");
    util::copy(&mut ev, d, "device.userDeviceName", "host.name");
    util::copy(&mut ev, d, "device.deviceName", "device.model.name");
    if let Some(os) = nonempty(d, "device.os") {
        // `IOS 17.2.1`, `MAC_OS 13.5.1`, `UNKNOWN 14.0.0`
        let (n, v) = os.split_once(' ').unwrap_or((os, ""));
        set_os(&mut ev, Some(n).filter(|n| *n != "UNKNOWN"), Some(v));
    }
    util::copy(&mut ev, d, "user.email", "user.email");
    util::copy(&mut ev, d, "user.name", "user.name");
    if let Some(a) = nonempty(d, "app.id") {
        ev.insert("package.name", s(a));
        ev.insert("mobile.app.bundle_id", s(a));
    }
    util::copy(&mut ev, d, "app.name", "mobile.app.name");
    util::copy(&mut ev, d, "app.version", "package.version");
    util::copy(&mut ev, d, "app.sha256", "file.hash.sha256");
    util::copy(&mut ev, d, "app.sha1", "file.hash.sha1");
    set_destination(
        &mut ev,
        dest_host,
        nonempty(d, "destination.ip"),
        util::get(d, "destination.port").and_then(util::as_int),
    );
    if let Some(ip) = nonempty(d, "source.ip").and_then(|i| i.parse::<std::net::IpAddr>().ok()) {
        ev.insert("source.ip", Value::Ip(ip));
    }
    util::copy_int(&mut ev, d, "source.port", "source.port");
    Ok(ev)
}

/// Harmony Mobile's `MM/DD/YYYY HH:MM:SS` (UTC).
fn harmony_time(t: &str) -> Option<i64> {
    let dt = chrono::NaiveDateTime::parse_from_str(t.trim(), "%m/%d/%Y %H:%M:%S").ok()?;
    dt.and_utc().timestamp_nanos_opt()
}

fn harmony(ctx: &Ctx, record: &str, d: &JsonValue) -> Result<Event, String> {
    let t = util::get_str(d, "event_timestamp")
        .or_else(|| util::get_str(d, "backend_last_updated"))
        .ok_or("Harmony Mobile event without `event_timestamp` or `backend_last_updated`")?;
    let ts = harmony_time(t)
        .ok_or_else(|| format!("Harmony Mobile time `{t}` is not MM/DD/YYYY HH:MM:SS"))?;
    let mut ev = new_event(ctx, record, "mtd.harmony", "Check Point", "Harmony Mobile");
    util::set_time(&mut ev, ts);
    let vector = nonempty(d, "attack_vector").unwrap_or("");
    let cat: &[&str] = match vector {
        "NetworkSecurity" | "Network" => &["network", "threat"],
        "App" | "Apps" | "Application" => &["package", "threat"],
        _ => &["host", "threat"],
    };
    alert(&mut ev, cat);
    ev.set(fields().event_action, s("threat_detected"));
    let factors = nonempty(d, "threat_factors").unwrap_or(vector);
    ev.insert("rule.name", s(factors));
    ev.insert("rule.category", s(vector));
    let details = nonempty(d, "details");
    ev.insert("event.reason", s(details.unwrap_or(factors)));
    if let Some(dom) = details.and_then(|x| x.strip_prefix("Domain:")) {
        // Defanged in the feed (`bb[.]example`): the domain itself, for joins.
        set_destination(&mut ev, Some(&dom.trim().replace("[.]", ".")), None, None);
    }
    util::copy(&mut ev, d, "id", "event.id");
    util::copy(&mut ev, d, "event", "mtd.harmony.event");
    util::copy(&mut ev, d, "client_version", "observer.version");
    let (label, num) = nonempty(d, "severity")
        .and_then(severity_word)
        .unwrap_or(("low", 1));
    set_severity(&mut ev, Some(num), label);
    let dev = match util::get(d, "device_id") {
        Some(JsonValue::String(x)) if !x.is_empty() => Some(x.clone()),
        Some(JsonValue::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(id) = dev {
        set_device(&mut ev, &id);
    }
    util::copy(&mut ev, d, "name", "host.name");
    util::copy(&mut ev, d, "device_model", "device.model.identifier");
    util::copy(&mut ev, d, "device_rooted", "mtd.device.rooted");
    if let Some(m) = nonempty(d, "mdm_uuid") {
        ev.insert("mtd.device.mdm_id", s(m));
    }
    if let Some(e) = nonempty(d, "email").filter(|e| e.contains('@')) {
        ev.insert("user.email", s(e));
    }
    Ok(ev)
}

/// The Intune table a Log Analytics row comes from (`Type`: `IntuneDevices`,
/// `IntuneDeviceComplianceOrg`, `IntuneAuditLogs`, `IntuneOperationalLogs`), as the diagnostic
/// category it carries (`Devices`, `DeviceComplianceOrg`...).
fn intune_table(d: &JsonValue) -> Option<&str> {
    util::get_str(d, "Type")?
        .strip_prefix("Intune")
        .filter(|t| !t.is_empty())
}

fn intune(ctx: &Ctx, record: &str, d: &JsonValue) -> Result<Event, String> {
    let t = util::get_str(d, "time")
        .or_else(|| util::get_str(d, "TimeGenerated"))
        .ok_or("Intune record without `time`")?;
    let ts = correlator::event::parse_rfc3339_ns(t)
        .ok_or_else(|| format!("Intune `time` `{t}` is not RFC 3339"))?;
    // A diagnostic-settings record keeps the columns in `properties`; a Log Analytics row (a
    // workspace's data export, a query's result) has them at the top level and names its table.
    let category = util::get_str(d, "category")
        .or_else(|| intune_table(d))
        .unwrap_or("");
    let p = d.get("properties").filter(|p| p.is_object()).unwrap_or(d);
    let mut ev = new_event(
        ctx,
        record,
        &format!("mtd.intune.{}", category.to_ascii_lowercase()),
        "Microsoft",
        "Intune",
    );
    util::set_time(&mut ev, ts);
    let f = fields();
    ev.set(f.event_kind, s("state"));
    ev.set(f.event_category, strs(&["host", "configuration"]));
    ev.set(f.event_type, strs(&["info"]));
    ev.set(
        f.event_action,
        s(&util::get_str(d, "operationName")
            .unwrap_or(category)
            .to_ascii_lowercase()),
    );
    util::copy(&mut ev, d, "operationName", "mtd.intune.operation");
    util::copy(&mut ev, d, "resultType", "event.outcome_detail");
    let pick = |keys: &[&str]| keys.iter().find_map(|k| nonempty(p, k));
    if let Some(id) = pick(&["DeviceId", "IntuneDeviceId", "deviceId"]) {
        set_device(&mut ev, id);
    }
    if let Some(n) = pick(&["DeviceName", "deviceName"]) {
        ev.insert("host.name", s(n));
    }
    set_os(
        &mut ev,
        pick(&["OS", "OSDescription", "Platform", "OperatingSystem"]),
        pick(&["OSVersion", "osVersion"]),
    );
    for (k, dst) in [
        ("SerialNumber", "device.serial_number"),
        ("Model", "device.model.identifier"),
        ("Manufacturer", "device.manufacturer"),
        ("UPN", "user.email"),
        ("UserEmail", "user.email"),
        ("UserName", "user.name"),
        ("UserId", "user.id"),
        ("UserID", "user.id"),
        ("ComplianceState", "mtd.intune.compliance_state"),
        ("DeviceHealthThreatLevel", "mtd.intune.threat_level"),
        ("ManagementAgents", "mtd.intune.management_agents"),
        ("Ownership", "mtd.intune.ownership"),
        ("OwnerType", "mtd.intune.ownership"),
        ("JailBroken", "mtd.intune.jailbroken"),
        ("EncryptionStatusString", "mtd.intune.encryption"),
        ("IMEI", "mtd.device.imei"),
        ("LastContact", "mtd.intune.last_contact"),
    ] {
        if let Some(v) = nonempty(p, k) {
            ev.insert(dst, s(v));
        }
    }
    // A device the MTD connector rates as threatened, or jailbroken: an alert.
    // `Secured` (or anything that is not a severity word) is no threat.
    let sev = pick(&["DeviceHealthThreatLevel"]).and_then(severity_word);
    let jail = pick(&["JailBroken"])
        .is_some_and(|j| j.eq_ignore_ascii_case("true") || j.eq_ignore_ascii_case("yes"));
    if jail || sev.is_some() {
        alert(&mut ev, &["host", "threat"]);
        let (label, num) = if jail {
            ("high", 3)
        } else {
            sev.unwrap_or(("low", 1))
        };
        set_severity(&mut ev, Some(num), label);
        let reason = if jail {
            "Intune reports the device jailbroken or rooted".to_string()
        } else {
            format!("Intune device health threat level {label}")
        };
        ev.insert(
            "rule.name",
            s(if jail {
                "JAILBROKEN"
            } else {
                "DEVICE_THREAT_LEVEL"
            }),
        );
        ev.insert("event.reason", s(&reason));
    }
    if ev.get_path("host.id").is_none() {
        return Err(
            "Intune record without `DeviceId` (in `properties`, or a Log Analytics row's column)"
                .into(),
        );
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::decode::Format;

    fn ctx() -> Ctx {
        Ctx::new(Format::Mtd, "t")
    }

    /// Zimperium v2 device objects (a `device/search` response) are device state, not threats:
    /// they carry no threat `timestamp`, and were rejected as threats without one.
    #[test]
    fn zimperium_device_search_is_device_state() {
        let rec = r#"{"totalHits":2,"content":[{"id":"5","riskPosture":2,"riskPostureName":"ELEVATED","created":1703082619686,"lastSeen":1703083587626,"os":{"id":2,"name":"ios","type":"iOS","version":"16.3"},"deviceOwner":{"email":"u@example.com"},"zappInstance":[{"id":"z","bundleId":"com.example.mtd"}],"fullType":"iPhone14,5","model":"iphone145","zdeviceId":"AF"},{"id":"62","riskPostureName":"CRITICAL","lastSeen":1702393458060,"os":{"type":"Android","version":"7.1.1"},"isJailbroken":true,"zdeviceId":"5"}]}"#;
        let evs = decode(&ctx(), rec).unwrap();
        assert_eq!(evs.len(), 2);
        let g = |e: &Event, p: &str| e.get_path(p).and_then(Value::as_str).map(str::to_string);
        assert_eq!(g(&evs[0], "event.kind").as_deref(), Some("state"));
        assert_eq!(g(&evs[0], "event.action").as_deref(), Some("device"));
        assert_eq!(g(&evs[0], "host.id").as_deref(), Some("AF"));
        assert_eq!(g(&evs[0], "host.os.type").as_deref(), Some("ios"));
        assert_eq!(g(&evs[0], "host.os.version").as_deref(), Some("16.3"));
        assert_eq!(g(&evs[0], "user.email").as_deref(), Some("u@example.com"));
        assert_eq!(g(&evs[0], "mtd.severity").as_deref(), Some("high"));
        assert_eq!(
            g(&evs[0], "@timestamp").as_deref(),
            Some("2023-12-20T14:46:27.626Z")
        );
        assert_eq!(g(&evs[1], "host.os.type").as_deref(), Some("android"));
        assert_eq!(
            evs[1].get_path("mtd.device.jailbroken"),
            Some(&Value::Bool(true))
        );
        // A threat keeps needing its own time.
        let e = decode(&ctx(), r#"{"threatTypeName":"x","zdeviceId":"d"}"#).unwrap_err();
        assert!(e.contains("timestamp"), "{e}");
    }

    /// Intune's device tables as Log Analytics holds them (a workspace data export or a query
    /// result): the columns at the top level, the table in `Type`, no `properties`.
    #[test]
    fn intune_log_analytics_rows() {
        let rec = r#"{"TenantId":"t","TimeGenerated":"2024-03-01T08:00:00Z","Type":"IntuneDeviceComplianceOrg","DeviceId":"6c1d","DeviceName":"Alice-iPhone","OS":"iOS","OSVersion":"17.3.1","ComplianceState":"Noncompliant","DeviceHealthThreatLevel":"High","UPN":"alice@example.com","UserID":"u1","SerialNumber":"F2LXX"}"#;
        let ev = &decode(&ctx(), rec).unwrap()[0];
        let g = |p: &str| ev.get_path(p).and_then(Value::as_str).map(str::to_string);
        assert_eq!(
            g("event.dataset").as_deref(),
            Some("mtd.intune.devicecomplianceorg")
        );
        assert_eq!(g("host.id").as_deref(), Some("6c1d"));
        assert_eq!(g("host.os.type").as_deref(), Some("ios"));
        assert_eq!(g("user.id").as_deref(), Some("u1"));
        assert_eq!(g("event.kind").as_deref(), Some("alert"));
        assert_eq!(g("mtd.severity").as_deref(), Some("high"));
        // Another table's row is no Intune record.
        assert!(decode(
            &ctx(),
            r#"{"TimeGenerated":"2024-03-01T08:00:00Z","Type":"SigninLogs"}"#
        )
        .is_err());
        // An Intune row without a device is rejected, naming the column.
        let e = decode(
            &ctx(),
            r#"{"TimeGenerated":"2024-03-01T08:00:00Z","Type":"IntuneDevices"}"#,
        )
        .unwrap_err();
        assert!(e.contains("DeviceId"), "{e}");
    }

    #[test]
    fn vendor_is_recognised_from_the_record() {
        let jamf = r#"{"event":{"metadata":{"vendor":"Jamf","product":"Threat Events Stream"},"timestamp":"2024-01-10T12:20:37.059Z","alertId":"a1","device":{"deviceId":"d1","os":"IOS 17.2.1"},"eventType":{"id":"303","description":"Risky Host/Domain - Malware","name":"ACCESS_BAD_HOST"},"app":{},"destination":{"ip":"52.92.33.124","name":"malware.example"},"severity":8,"action":"Blocked"}}"#;
        let ev = &decode(&ctx(), jamf).unwrap()[0];
        assert_eq!(
            ev.get_path("observer.vendor").unwrap().as_str(),
            Some("Jamf")
        );
        assert_eq!(ev.get_path("host.id").unwrap().as_str(), Some("d1"));
        assert_eq!(ev.get_path("host.os.type").unwrap().as_str(), Some("ios"));
        assert_eq!(
            ev.get_path("destination.domain").unwrap().as_str(),
            Some("malware.example")
        );
        assert_eq!(ev.get_path("event.kind").unwrap().as_str(), Some("alert"));
        assert_eq!(ev.get_path("mtd.severity").unwrap().as_str(), Some("high"));

        let lookout = r#"{"events":[{"id":"2","created_time":"2025-03-24T11:13:28.375+00:00","type":"THREAT","change_type":"CREATED","threat":{"guid":"g","status":"RESOLVED","severity":"LOW","type":"WEB_CONTENT","classifications":["UNAUTHORIZED_CONTENT"],"details":{"reason":"OBJECTIONABLE_CONTENT"}},"target":{"guid":"g","type":"THREAT"},"actor":{"guid":"dev1","type":"DEVICE"}}]}"#;
        let ev = &decode(&ctx(), lookout).unwrap()[0];
        assert_eq!(
            ev.get_path("observer.vendor").unwrap().as_str(),
            Some("Lookout")
        );
        assert_eq!(ev.get_path("host.id").unwrap().as_str(), Some("dev1"));
        assert_eq!(
            ev.get_path("rule.name").unwrap().as_str(),
            Some("UNAUTHORIZED_CONTENT")
        );

        let e = decode(&ctx(), r#"{"hello":1}"#).unwrap_err();
        assert!(e.contains("no known vendor"), "{e}");
        let e = decode(&ctx(), r#"{"content":[{"threatTypeName":"X"}]}"#).unwrap_err();
        assert!(e.contains("`content[0]`") && e.contains("timestamp"), "{e}");
    }
}
