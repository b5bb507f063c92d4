//! `apple-mdm`: Apple MDM protocol messages as MDM servers relay them.
//!
//! A record is one of
//! - an XML property list: a check-in message (`MessageType`: `Authenticate`, `TokenUpdate`,
//!   `CheckOut`, ...), a command result (`Status`, `CommandUUID`, with `QueryResponses`,
//!   `SecurityInfo`, `CertificateList`, `ProfileList`, `InstalledApplicationList`, ...), or a
//!   command the server sends (`Command.RequestType`);
//! - NanoMDM / MicroMDM webhook JSON: `topic`, `event_id`, `created_at` and a `checkin_event` or
//!   `acknowledge_event` whose `raw_payload` is the device's plist, base64;
//! - an Apple Automated Device Enrollment (DEP) device record or device-list response
//!   (`devices`: an array, or an object keyed by serial number).
//!
//! Device identity (UDID, serial number, model, OS version, names) goes to ECS `host.*` and
//! `device.*`; lists (certificates, profiles, applications) give one event per item, each with the
//! device identity, so an analytic reads one certificate or one profile at a time. Plists carry no
//! time: their events have none (the daemon stamps them at arrival) unless the webhook's
//! `created_at` gives one. The mapping is in docs/formats/apple-mdm.md.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use correlator::{Event, Value};
use plist::{Dictionary, Value as P};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};
use super::{emit_all, Ctx, Decoder, Sink};

pub(crate) struct AppleMdmDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for AppleMdmDecoder {
    fn line(&mut self, line_no: u64, record: &str, sink: &mut Sink<'_>) {
        emit_all(line_no, decode(&self.ctx, record), sink);
    }
}

/// Profile payload types that install a trust anchor or route the device's traffic through
/// another party (proxy, VPN, content filter, DNS proxy, relay). Kept on the event as
/// `apple_mdm.profile.traffic_payload_types` / `root_ca` so an analytic can read them.
const ROOT_CA_PAYLOADS: &[&str] = &["com.apple.security.root"];
const TRAFFIC_PAYLOADS: &[&str] = &[
    "com.apple.proxy.http.global",
    "com.apple.vpn.managed",
    "com.apple.vpn.managed.applayer",
    "com.apple.vpn.managed.appmapping",
    "com.apple.webcontent-filter",
    "com.apple.dnsProxy.managed",
    "com.apple.dnsSettings.managed",
    "com.apple.relay.managed",
];

pub(crate) fn decode(ctx: &Ctx, record: &str) -> Result<Vec<Event>, String> {
    let t = record.trim_start_matches('\u{feff}').trim();
    if t.starts_with('<') {
        let p = parse_plist(t.as_bytes())?;
        from_plist(ctx, record, &p, &Meta::default())
    } else if t.starts_with('{') {
        let doc = JsonValue::Object(util::parse_object(t)?);
        if doc.get("checkin_event").is_some() || doc.get("acknowledge_event").is_some() {
            webhook(ctx, record, &doc)
        } else if doc.get("devices").is_some() || doc.get("serial_number").is_some() {
            dep(ctx, record, &doc)
        } else {
            Err("a JSON object that is neither an MDM webhook (`checkin_event` / `acknowledge_event`) nor a DEP device record (`devices`, `serial_number`)".into())
        }
    } else {
        Err("expected an XML property list (`<?xml` / `<plist`) or a webhook JSON object".into())
    }
}

fn parse_plist(bytes: &[u8]) -> Result<P, String> {
    P::from_reader_xml(std::io::Cursor::new(bytes)).map_err(|e| format!("invalid XML plist: {e}"))
}

/// What a webhook adds around its plist.
#[derive(Default)]
struct Meta {
    ts: Option<i64>,
    topic: Option<String>,
    event_id: Option<String>,
    udid: Option<String>,
    status: Option<String>,
    command_uuid: Option<String>,
}

fn webhook(ctx: &Ctx, record: &str, doc: &JsonValue) -> Result<Vec<Event>, String> {
    let (key, inner) = if let Some(c) = doc.get("checkin_event") {
        ("checkin_event", c)
    } else {
        (
            "acknowledge_event",
            doc.get("acknowledge_event").unwrap_or(&JsonValue::Null),
        )
    };
    if !inner.is_object() {
        return Err(format!(
            "`{key}` is {}, expected an object",
            util::kind(inner)
        ));
    }
    let str_of = |v: &JsonValue, k: &str| v.get(k).and_then(JsonValue::as_str).map(str::to_string);
    let ts = match doc.get("created_at") {
        None | Some(JsonValue::Null) => None,
        Some(JsonValue::String(t)) => match correlator::event::parse_rfc3339_ns(t) {
            // Go's zero time (`0001-01-01T00:00:00Z`) means "not set".
            Some(ns) if ns > 0 => Some(ns),
            Some(_) => None,
            None if t.starts_with("0001-01-01") => None,
            None => return Err(format!("`created_at` `{t}` is not RFC 3339")),
        },
        Some(other) => {
            return Err(format!(
                "`created_at` is {}, expected a string",
                util::kind(other)
            ))
        }
    };
    let meta = Meta {
        ts,
        topic: str_of(doc, "topic"),
        event_id: str_of(doc, "event_id"),
        udid: str_of(inner, "udid")
            .or_else(|| inner.get("ids").and_then(|i| str_of(i, "id")))
            .filter(|u| !u.is_empty()),
        status: str_of(inner, "status"),
        command_uuid: str_of(inner, "command_uuid"),
    };
    match inner.get("raw_payload") {
        Some(JsonValue::String(b64)) if !b64.is_empty() => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("`{key}.raw_payload` is not base64: {e}"))?;
            let p = parse_plist(&bytes).map_err(|e| format!("`{key}.raw_payload`: {e}"))?;
            from_plist(ctx, record, &p, &meta)
        }
        None | Some(JsonValue::Null | JsonValue::String(_)) => {
            // No payload (e.g. an Idle acknowledgement): the webhook's own fields.
            let mut ev = base(ctx, record, &meta);
            if key == "acknowledge_event" {
                result_outcome(&mut ev, meta.status.as_deref());
                ev.set(fields().event_action, s("command_result"));
            } else {
                ev.set(fields().event_action, s("checkin"));
            }
            ev.set(fields().event_category, strs(&["host"]));
            ev.set(fields().event_type, strs(&["info"]));
            if meta.udid.is_none() {
                return Err(format!(
                    "`{key}` has neither `raw_payload` nor `udid`: no device to report"
                ));
            }
            Ok(vec![ev])
        }
        Some(other) => Err(format!(
            "`{key}.raw_payload` is {}, expected a base64 string",
            util::kind(other)
        )),
    }
}

/// An event with the agent, module, webhook metadata and the record.
fn base(ctx: &Ctx, record: &str, meta: &Meta) -> Event {
    let mut ev = ctx.event("apple_mdm.message", record);
    ev.set(fields().event_kind, s("event"));
    if let Some(ns) = meta.ts {
        util::set_time(&mut ev, ns);
    }
    if let Some(t) = &meta.topic {
        ev.insert("apple_mdm.webhook.topic", s(t));
    }
    if let Some(id) = &meta.event_id {
        ev.insert("event.id", s(id));
    }
    if let Some(u) = &meta.udid {
        ev.insert("host.id", s(u));
        ev.insert("device.id", s(u));
    }
    if let Some(st) = &meta.status {
        ev.insert("apple_mdm.status", s(st));
    }
    if let Some(c) = &meta.command_uuid {
        ev.insert("apple_mdm.command_uuid", s(c));
    }
    ev
}

fn pstr<'a>(d: &'a Dictionary, k: &str) -> Option<&'a str> {
    d.get(k).and_then(P::as_string).filter(|v| !v.is_empty())
}

fn pbool(d: &Dictionary, k: &str) -> Option<bool> {
    d.get(k).and_then(P::as_boolean)
}

/// A plist scalar as an event value (data and containers give None).
fn pscalar(v: &P) -> Option<Value> {
    match v {
        P::String(x) => Some(s(x)),
        P::Boolean(b) => Some(Value::Bool(*b)),
        P::Integer(i) => i
            .as_signed()
            .or_else(|| i.as_unsigned().and_then(|u| i64::try_from(u).ok()))
            .map(Value::Int),
        P::Real(r) => Some(Value::Float(*r)),
        P::Date(d) => date_ns(d).map(util::rfc3339_value),
        _ => None,
    }
}

fn date_ns(d: &plist::Date) -> Option<i64> {
    let t: SystemTime = (*d).into();
    let dur = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(dur.as_nanos()).ok()
}

/// Apple's name for an operating system from a product or model name.
fn platform(product: &str) -> Option<(&'static str, &'static str, &'static str)> {
    // (host.os.type, host.os.platform, host.os.name)
    let p = product.to_ascii_lowercase();
    if p.starts_with("iphone") || p.starts_with("ipod") {
        Some(("ios", "ios", "iOS"))
    } else if p.starts_with("ipad") {
        Some(("ios", "ipados", "iPadOS"))
    } else if p.starts_with("mac")
        || p.starts_with("imac")
        || p.starts_with("vmware")
        || p.starts_with("virtualmac")
    {
        Some(("macos", "macos", "macOS"))
    } else if p.starts_with("appletv") {
        Some(("tvos", "tvos", "tvOS"))
    } else if p.starts_with("watch") {
        Some(("watchos", "watchos", "watchOS"))
    } else if p.starts_with("realitydevice") {
        Some(("visionos", "visionos", "visionOS"))
    } else {
        None
    }
}

/// Device identity from a check-in message or `QueryResponses`, into `host.*` / `device.*`.
fn identity(ev: &mut Event, d: &Dictionary) {
    for k in ["UDID", "EnrollmentID"] {
        if let Some(u) = pstr(d, k) {
            ev.insert("host.id", s(u));
            ev.insert("device.id", s(u));
            break;
        }
    }
    if let Some(v) = pstr(d, "EnrollmentUserID") {
        ev.insert("user.id", s(v));
    }
    if let Some(v) = pstr(d, "SerialNumber") {
        ev.insert("device.serial_number", s(v));
    }
    let model = pstr(d, "Model").or_else(|| pstr(d, "ProductName"));
    if let Some(m) = model {
        ev.insert("device.model.identifier", s(m));
    }
    if let Some(v) = pstr(d, "ModelName") {
        ev.insert("device.model.name", s(v));
    }
    if model.is_some() || pstr(d, "ModelName").is_some() {
        ev.insert("device.manufacturer", s("Apple"));
    }
    let plat = pstr(d, "ProductName")
        .and_then(platform)
        .or_else(|| model.and_then(platform))
        .or_else(|| pstr(d, "ModelName").and_then(platform));
    if let Some((ty, pl, name)) = plat {
        ev.insert("host.os.type", s(ty));
        ev.insert("host.os.platform", s(pl));
        ev.insert("host.os.name", s(name));
        ev.insert("host.os.family", s("apple"));
    }
    let ver = pstr(d, "OSVersion");
    let build = pstr(d, "BuildVersion");
    if let Some(v) = ver {
        ev.insert("host.os.version", s(v));
    }
    if let Some(b) = build {
        ev.insert("apple_mdm.build_version", s(b));
    }
    if let (Some((_, _, name)), Some(v)) = (plat, ver) {
        let full = match build {
            Some(b) => format!("{name} {v} ({b})"),
            None => format!("{name} {v}"),
        };
        ev.insert("host.os.full", s(&full));
    }
    // One host name: the DNS host name when the device reports one, else its user-given name.
    let hostname = pstr(d, "HostName").or_else(|| pstr(d, "LocalHostName"));
    if let Some(h) = hostname {
        ev.insert("host.hostname", s(h));
    }
    if let Some(n) = hostname.or_else(|| pstr(d, "DeviceName")) {
        ev.insert("host.name", s(n));
    }
    if let Some(n) = pstr(d, "DeviceName") {
        ev.insert("apple_mdm.device_name", s(n));
    }
    if let Some(m) = pstr(d, "WiFiMAC") {
        ev.insert("host.mac", s(m));
    }
    for (k, dst) in [
        ("IMEI", "apple_mdm.imei"),
        ("MEID", "apple_mdm.meid"),
        ("Topic", "apple_mdm.topic"),
        ("UserID", "user.id"),
        ("UserShortName", "user.name"),
        ("UserLongName", "user.full_name"),
    ] {
        if let Some(v) = pstr(d, k) {
            ev.insert(dst, s(v));
        }
    }
    if let Some(b) = pbool(d, "IsSupervised") {
        ev.insert("mobile.device.supervised", Value::Bool(b));
    }
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn result_outcome(ev: &mut Event, status: Option<&str>) {
    let outcome = match status {
        Some("Acknowledged") => "success",
        Some("Error" | "CommandFormatError") => "failure",
        _ => "unknown",
    };
    ev.set(fields().event_outcome, s(outcome));
}

// Over 100 lines on purpose: one MDM message kind after another (check-in, command, command result), as the protocol defines them.
fn from_plist(ctx: &Ctx, record: &str, p: &P, meta: &Meta) -> Result<Vec<Event>, String> {
    let d = p
        .as_dictionary()
        .ok_or("the plist's root is not a dictionary")?;
    let f = fields();
    let mut ev = base(ctx, record, meta);
    identity(&mut ev, d);
    if let Some(mt) = pstr(d, "MessageType") {
        // A check-in message.
        ev.insert("apple_mdm.message_type", s(mt));
        ev.set(f.event_action, s(&snake(mt)));
        let (cat, ty): (&[&str], &[&str]) = match mt {
            "Authenticate" => (&["host", "configuration"], &["start"]),
            "TokenUpdate" => (&["host", "configuration"], &["change"]),
            "CheckOut" => (&["host", "configuration"], &["end"]),
            "UserAuthenticate" => (&["authentication"], &["start"]),
            _ => (&["host"], &["info"]),
        };
        ev.set(f.event_category, strs(cat));
        ev.set(f.event_type, strs(ty));
        if let Some(b) = pbool(d, "AwaitingConfiguration") {
            ev.insert("apple_mdm.awaiting_configuration", Value::Bool(b));
        }
        if ev.get_path("host.id").is_none() {
            return Err(format!("`{mt}` check-in without `UDID` or `EnrollmentID`"));
        }
        return Ok(vec![ev]);
    }
    if let Some(cmd) = d.get("Command").and_then(P::as_dictionary) {
        // A command the server queues for the device.
        let rt = pstr(cmd, "RequestType").ok_or("`Command` without `RequestType`")?;
        ev.insert("apple_mdm.request_type", s(rt));
        ev.set(f.event_action, s("command"));
        ev.set(f.event_category, strs(&["configuration"]));
        ev.set(f.event_type, strs(&["change"]));
        if let Some(u) = pstr(d, "CommandUUID") {
            ev.insert("apple_mdm.command_uuid", s(u));
        }
        if let Some(id) = pstr(cmd, "Identifier") {
            ev.insert("package.name", s(id));
        }
        return Ok(vec![ev]);
    }
    let status = pstr(d, "Status");
    if status.is_none() && pstr(d, "CommandUUID").is_none() {
        return Err(
            "a plist with neither `MessageType` (check-in), `Status`/`CommandUUID` (command result) nor `Command`"
                .into(),
        );
    }
    // A command result.
    if let Some(st) = status {
        ev.insert("apple_mdm.status", s(st));
    }
    if let Some(u) = pstr(d, "CommandUUID") {
        ev.insert("apple_mdm.command_uuid", s(u));
    }
    result_outcome(&mut ev, status);
    if let Some(chain) = d.get("ErrorChain").and_then(P::as_array) {
        if let Some(e) = chain.first().and_then(P::as_dictionary) {
            if let Some(m) =
                pstr(e, "USEnglishDescription").or_else(|| pstr(e, "LocalizedDescription"))
            {
                ev.insert("error.message", s(m));
            }
            if let Some(c) = e.get("ErrorCode").and_then(pscalar) {
                ev.insert("error.code", c);
            }
            if let Some(dm) = pstr(e, "ErrorDomain") {
                ev.insert("error.type", s(dm));
            }
        }
    }
    let request = pstr(d, "RequestType").map(str::to_string).or_else(|| {
        [
            ("QueryResponses", "DeviceInformation"),
            ("SecurityInfo", "SecurityInfo"),
            ("CertificateList", "CertificateList"),
            ("ProfileList", "ProfileList"),
            ("InstalledApplicationList", "InstalledApplicationList"),
        ]
        .iter()
        .find(|(k, _)| d.contains_key(k))
        .map(|(_, v)| (*v).to_string())
    });
    if let Some(rt) = &request {
        ev.insert("apple_mdm.request_type", s(rt));
    }
    ev.set(
        f.event_action,
        s(&request
            .as_deref()
            .map_or_else(|| "command_result".to_string(), snake)),
    );
    ev.set(f.event_category, strs(&["host"]));
    ev.set(f.event_type, strs(&["info"]));
    if let Some(q) = d.get("QueryResponses").and_then(P::as_dictionary) {
        identity(&mut ev, q);
        for (k, v) in q {
            if let Some(v) = pscalar(v) {
                ev.insert(&format!("apple_mdm.query_responses.{k}"), v);
            }
        }
    }
    if let Some(si) = d.get("SecurityInfo").and_then(P::as_dictionary) {
        ev.set(f.event_category, strs(&["host", "configuration"]));
        flatten(&mut ev, "apple_mdm.security_info", si, 0);
    }
    let items = |k: &str| d.get(k).and_then(P::as_array);
    let mut out = Vec::new();
    if let Some(list) = items("CertificateList") {
        ev.set(f.event_category, strs(&["configuration"]));
        for (i, c) in list.iter().enumerate() {
            let c = c
                .as_dictionary()
                .ok_or_else(|| format!("`CertificateList[{i}]` is not a dictionary"))?;
            let mut e = ev.clone();
            e.set(f.event_action, s("certificate"));
            certificate(&mut e, c);
            out.push(e);
        }
    } else if let Some(list) = items("ProfileList") {
        ev.set(f.event_category, strs(&["configuration"]));
        for (i, p) in list.iter().enumerate() {
            let p = p
                .as_dictionary()
                .ok_or_else(|| format!("`ProfileList[{i}]` is not a dictionary"))?;
            let mut e = ev.clone();
            e.set(f.event_action, s("profile"));
            profile(&mut e, p);
            out.push(e);
        }
    } else if let Some(list) = items("InstalledApplicationList") {
        ev.set(f.event_category, strs(&["package"]));
        for (i, a) in list.iter().enumerate() {
            let a = a
                .as_dictionary()
                .ok_or_else(|| format!("`InstalledApplicationList[{i}]` is not a dictionary"))?;
            let mut e = ev.clone();
            e.set(f.event_action, s("app_inventory"));
            application(&mut e, a);
            out.push(e);
        }
    }
    if out.is_empty() {
        // No list, or an empty one: the result itself.
        out.push(ev);
    }
    if out.iter().all(|e| e.get_path("host.id").is_none()) {
        return Err("command result without `UDID` or `EnrollmentID`: no device to report".into());
    }
    Ok(out)
}

/// Scalars of a nested dictionary under `prefix.Key.SubKey`, Apple's key names kept.
fn flatten(ev: &mut Event, prefix: &str, d: &Dictionary, depth: usize) {
    for (k, v) in d {
        let path = format!("{prefix}.{k}");
        match v {
            P::Dictionary(inner) if depth < 4 => flatten(ev, &path, inner, depth + 1),
            P::Array(a) => {
                let vals: Vec<Value> = a.iter().filter_map(pscalar).collect();
                if !vals.is_empty() {
                    ev.insert(&path, Value::Array(vals.into()));
                }
            }
            other => {
                if let Some(v) = pscalar(other) {
                    ev.insert(&path, v);
                }
            }
        }
    }
}

fn certificate(ev: &mut Event, c: &Dictionary) {
    if let Some(cn) = pstr(c, "CommonName") {
        ev.insert("x509.subject.common_name", s(cn));
    }
    if let Some(b) = pbool(c, "IsIdentity") {
        ev.insert("apple_mdm.certificate.is_identity", Value::Bool(b));
    }
    if let Some(b) = pbool(c, "IsManaged") {
        ev.insert("apple_mdm.certificate.managed", Value::Bool(b));
    }
    let Some(der) = c.get("Data").and_then(P::as_data) else {
        return;
    };
    use sha2::Digest as _;
    ev.insert(
        "apple_mdm.certificate.sha256",
        s(&hex::encode(sha2::Sha256::digest(der))),
    );
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let subject = cert.subject().to_string();
            let issuer = cert.issuer().to_string();
            ev.insert("x509.subject.distinguished_name", s(&subject));
            ev.insert("x509.issuer.distinguished_name", s(&issuer));
            if let Some(cn) = cert
                .issuer()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
            {
                ev.insert("x509.issuer.common_name", s(cn));
            }
            if let Some(o) = cert
                .issuer()
                .iter_organization()
                .next()
                .and_then(|a| a.as_str().ok())
            {
                ev.insert("x509.issuer.organization", s(o));
            }
            ev.insert("x509.serial_number", s(&cert.raw_serial_as_string()));
            ev.insert(
                "x509.version_number",
                s(&(cert.version().0 + 1).to_string()),
            );
            let nb = cert.validity().not_before.timestamp();
            let na = cert.validity().not_after.timestamp();
            ev.insert(
                "x509.not_before",
                util::rfc3339_value(nb.saturating_mul(1_000_000_000)),
            );
            ev.insert(
                "x509.not_after",
                util::rfc3339_value(na.saturating_mul(1_000_000_000)),
            );
            let is_ca = cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca);
            let self_signed = subject == issuer;
            ev.insert("apple_mdm.certificate.is_ca", Value::Bool(is_ca));
            ev.insert(
                "apple_mdm.certificate.self_signed",
                Value::Bool(self_signed),
            );
            ev.insert(
                "apple_mdm.certificate.root_ca",
                Value::Bool(is_ca && self_signed),
            );
        }
        Err(e) => {
            ev.insert(
                "apple_mdm.certificate.parse_error",
                s(&format!("not a DER X.509 certificate: {e}")),
            );
        }
    }
}

fn profile(ev: &mut Event, p: &Dictionary) {
    for (k, dst) in [
        ("PayloadIdentifier", "mobile.profile.identifier"),
        ("PayloadUUID", "apple_mdm.profile.uuid"),
        ("PayloadDisplayName", "apple_mdm.profile.display_name"),
        ("PayloadOrganization", "apple_mdm.profile.organization"),
        ("PayloadDescription", "apple_mdm.profile.description"),
    ] {
        if let Some(v) = pstr(p, k) {
            ev.insert(dst, s(v));
        }
    }
    for (k, dst) in [
        ("IsManaged", "apple_mdm.profile.managed"),
        ("IsEncrypted", "apple_mdm.profile.encrypted"),
        (
            "PayloadRemovalDisallowed",
            "apple_mdm.profile.removal_disallowed",
        ),
        (
            "HasRemovalPasscode",
            "apple_mdm.profile.has_removal_passcode",
        ),
    ] {
        if let Some(b) = pbool(p, k) {
            ev.insert(dst, Value::Bool(b));
        }
    }
    let mut types = Vec::new();
    let mut names = Vec::new();
    for item in p
        .get("PayloadContent")
        .and_then(P::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = item.as_dictionary() {
            if let Some(t) = pstr(c, "PayloadType") {
                types.push(t.to_string());
            }
            if let Some(n) = pstr(c, "PayloadDisplayName") {
                names.push(n.to_string());
            }
        }
    }
    let arr = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
    ev.insert("apple_mdm.profile.payload_types", arr(&types));
    if !names.is_empty() {
        ev.insert("apple_mdm.profile.payload_names", arr(&names));
    }
    // The enrollment profile itself (it carries the `com.apple.mdm` payload): installed by the
    // user when enrolling, so never IsManaged, and often with the organisation's CA.
    ev.insert(
        "apple_mdm.profile.enrollment",
        Value::Bool(types.iter().any(|t| t == "com.apple.mdm")),
    );
    let root = types.iter().any(|t| ROOT_CA_PAYLOADS.contains(&t.as_str()));
    ev.insert("apple_mdm.profile.root_ca", Value::Bool(root));
    let traffic: Vec<String> = types
        .iter()
        .filter(|t| TRAFFIC_PAYLOADS.contains(&t.as_str()))
        .cloned()
        .collect();
    ev.insert(
        "apple_mdm.profile.traffic",
        Value::Bool(!traffic.is_empty()),
    );
    if !traffic.is_empty() {
        ev.insert("apple_mdm.profile.traffic_payload_types", arr(&traffic));
    }
}

fn application(ev: &mut Event, a: &Dictionary) {
    if let Some(id) = pstr(a, "Identifier") {
        ev.insert("package.name", s(id));
        ev.insert("mobile.app.bundle_id", s(id));
    }
    if let Some(n) = pstr(a, "Name") {
        ev.insert("mobile.app.name", s(n));
    }
    if let Some(v) = pstr(a, "ShortVersion").or_else(|| pstr(a, "Version")) {
        ev.insert("package.version", s(v));
    }
    if let Some(v) = a.get("BundleSize").and_then(pscalar) {
        ev.insert("package.size", v);
    }
    for (k, dst) in [
        ("IsValidated", "apple_mdm.app.validated"),
        ("AdHocCodeSigned", "apple_mdm.app.ad_hoc_code_signed"),
        ("AppStoreVendable", "apple_mdm.app.app_store_vendable"),
        ("BetaReviewer", "apple_mdm.app.beta_reviewer"),
        ("Installing", "apple_mdm.app.installing"),
    ] {
        if let Some(b) = pbool(a, k) {
            ev.insert(dst, Value::Bool(b));
        }
    }
}

/// Apple Automated Device Enrollment device records (`devices` list or map, or one record).
fn dep(ctx: &Ctx, record: &str, doc: &JsonValue) -> Result<Vec<Event>, String> {
    let devices: Vec<&JsonValue> = match doc.get("devices") {
        Some(JsonValue::Array(a)) => a.iter().collect(),
        Some(JsonValue::Object(m)) => m.values().collect(),
        Some(other) => {
            return Err(format!(
                "`devices` is {}, expected an array or an object",
                util::kind(other)
            ))
        }
        None => vec![doc],
    };
    let f = fields();
    let mut out = Vec::with_capacity(devices.len());
    for (i, d) in devices.into_iter().enumerate() {
        let serial = util::get_str(d, "serial_number")
            .filter(|x| !x.is_empty())
            .ok_or_else(|| format!("DEP device {i} has no `serial_number`"))?;
        let mut ev = ctx.event("apple_mdm.dep_device", record);
        ev.set(f.event_kind, s("event"));
        ev.set(f.event_action, s("dep_device"));
        ev.set(f.event_category, strs(&["host"]));
        ev.set(f.event_type, strs(&["info"]));
        ev.insert("device.serial_number", s(serial));
        ev.insert("device.manufacturer", s("Apple"));
        util::copy(&mut ev, d, "model", "device.model.name");
        util::copy(&mut ev, d, "description", "apple_mdm.dep.description");
        util::copy(&mut ev, d, "device_family", "apple_mdm.dep.device_family");
        util::copy(&mut ev, d, "color", "apple_mdm.dep.color");
        util::copy(&mut ev, d, "profile_uuid", "apple_mdm.dep.profile_uuid");
        util::copy(&mut ev, d, "profile_status", "apple_mdm.dep.profile_status");
        util::copy(
            &mut ev,
            d,
            "profile_assign_time",
            "apple_mdm.dep.profile_assign_time",
        );
        util::copy(
            &mut ev,
            d,
            "device_assigned_by",
            "apple_mdm.dep.device_assigned_by",
        );
        util::copy(
            &mut ev,
            d,
            "device_assigned_date",
            "apple_mdm.dep.device_assigned_date",
        );
        util::copy(&mut ev, d, "op_type", "apple_mdm.dep.op_type");
        util::copy(
            &mut ev,
            d,
            "response_status",
            "apple_mdm.dep.response_status",
        );
        let os = util::get_str(d, "os").unwrap_or("");
        let os_l = os.to_ascii_lowercase();
        let plat = match os_l.as_str() {
            "osx" | "macos" => Some(("macos", "macos", "macOS")),
            "ios" => Some(("ios", "ios", "iOS")),
            "ipados" => Some(("ios", "ipados", "iPadOS")),
            "tvos" => Some(("tvos", "tvos", "tvOS")),
            _ => util::get_str(d, "device_family").and_then(platform),
        };
        if let Some((ty, pl, name)) = plat {
            ev.insert("host.os.type", s(ty));
            ev.insert("host.os.platform", s(pl));
            ev.insert("host.os.name", s(name));
            ev.insert("host.os.family", s("apple"));
        }
        if let Some(op) = util::get_str(d, "op_date").and_then(correlator::event::parse_rfc3339_ns)
        {
            util::set_time(&mut ev, op);
        }
        out.push(ev);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::decode::Format;

    fn ctx() -> Ctx {
        Ctx::new(Format::AppleMdm, "t")
    }

    fn get<'a>(ev: &'a Event, k: &str) -> Option<&'a str> {
        ev.get_path(k).and_then(|v| match v {
            Value::Str(x) => Some(&**x),
            _ => None,
        })
    }

    #[test]
    fn snake_names() {
        assert_eq!(snake("TokenUpdate"), "token_update");
        assert_eq!(
            snake("InstalledApplicationList"),
            "installed_application_list"
        );
        assert_eq!(snake("SecurityInfo"), "security_info");
        assert_eq!(snake("CheckOut"), "check_out");
    }

    const PROFILES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>CommandUUID</key><string>c1</string>
<key>ProfileList</key><array>
 <dict><key>IsManaged</key><false/><key>PayloadIdentifier</key><string>com.example.charles</string>
  <key>PayloadDisplayName</key><string>Charles Proxy CA</string>
  <key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.security.root</string></dict>
  <dict><key>PayloadType</key><string>com.apple.proxy.http.global</string></dict></array></dict>
 <dict><key>IsManaged</key><true/><key>PayloadIdentifier</key><string>com.corp.wifi</string>
  <key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.wifi.managed</string></dict></array></dict>
</array>
<key>Status</key><string>Acknowledged</string>
<key>UDID</key><string>U1</string>
</dict></plist>"#;

    #[test]
    fn profile_list_gives_one_event_per_profile() {
        let evs = decode(&ctx(), PROFILES).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(get(&evs[0], "host.id"), Some("U1"));
        assert_eq!(get(&evs[0], "event.action"), Some("profile"));
        assert_eq!(get(&evs[0], "apple_mdm.request_type"), Some("ProfileList"));
        assert_eq!(
            evs[0].get_path("apple_mdm.profile.root_ca"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            evs[0].get_path("apple_mdm.profile.traffic"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            evs[0].get_path("apple_mdm.profile.managed"),
            Some(&Value::Bool(false))
        );
        assert_eq!(
            evs[1].get_path("apple_mdm.profile.root_ca"),
            Some(&Value::Bool(false))
        );
        assert_eq!(get(&evs[1], "event.outcome"), Some("success"));
    }

    #[test]
    fn rejects_name_the_problem() {
        for (rec, want) in [
            (
                "<plist><dict><key>A</key><string>b</string></dict></plist>",
                "neither `MessageType`",
            ),
            ("<plist><array/></plist>", "root is not a dictionary"),
            ("<plist><dict>", "invalid XML plist"),
            (r#"{"x":1}"#, "neither an MDM webhook"),
            (r#"{"checkin_event":{"raw_payload":"%%%"}}"#, "not base64"),
            ("hello", "expected an XML property list"),
            (
                "<plist><dict><key>MessageType</key><string>Authenticate</string></dict></plist>",
                "without `UDID`",
            ),
        ] {
            let e = decode(&ctx(), rec).unwrap_err();
            assert!(e.contains(want), "{rec}: {e}");
        }
    }
}
