//! `mdm` and `mobile-edr`: the product's own JSON for iOS MDM log entries and mobile EDR telemetry
//! (no standard exists). The schemas are published in `schemas/mdm.schema.json` and
//! `schemas/mobile-edr.schema.json`; this decoder checks the required fields and enumerations and
//! names the first violation. The mapping is in docs/formats/mdm.md and docs/formats/mobile-edr.md.

use correlator::{Event, Value};
use serde_json::Value as JsonValue;

use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

pub(crate) struct MdmDecoder {
    pub(crate) ctx: Ctx,
}

pub(crate) struct MobileEdrDecoder {
    pub(crate) ctx: Ctx,
}

impl Decoder for MdmDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        sink(mdm(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

impl Decoder for MobileEdrDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        sink(edr(&self.ctx, line).map_err(|m| DecodeError::new(line_no, m)));
    }
}

fn enum_field<'a>(
    doc: &'a JsonValue,
    path: &str,
    allowed: &[&str],
    required: bool,
) -> Result<Option<&'a str>, String> {
    match util::get(doc, path) {
        None | Some(JsonValue::Null) if !required => Ok(None),
        None | Some(JsonValue::Null) => Err(format!("missing required `{path}`")),
        Some(JsonValue::String(v)) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(JsonValue::String(v)) => Err(format!(
            "`{path}` is `{v}`, expected one of: {}",
            allowed.join(", ")
        )),
        Some(other) => Err(format!(
            "`{path}` is {}, expected a string",
            util::kind(other)
        )),
    }
}

fn opt_type(doc: &JsonValue, path: &str, want: &str) -> Result<(), String> {
    let ok = match util::get(doc, path) {
        None | Some(JsonValue::Null) => true,
        Some(v) => match want {
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
            "object" => v.is_object(),
            _ => true,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{path}` must be {want}"))
    }
}

/// Fields common to both schemas: timestamp, device, user, app.
fn common(ctx: &Ctx, line: &str, dataset: &str) -> Result<(Event, JsonValue), String> {
    let doc = JsonValue::Object(util::parse_object(line)?);
    let ts = util::get_str(&doc, "timestamp").ok_or("missing required `timestamp`")?;
    let ts = correlator::event::parse_rfc3339_ns(ts)
        .ok_or_else(|| format!("`timestamp` `{ts}` is not RFC 3339"))?;
    let device_id = util::get_str(&doc, "device.id")
        .filter(|d| !d.is_empty())
        .ok_or("missing required `device.id`")?;
    let platform = enum_field(
        &doc,
        "device.platform",
        &["ios", "ipados", "android", "macos", "other"],
        false,
    )?;
    for (p, t) in [
        ("device.os_version", "string"),
        ("device.model", "string"),
        ("device.supervised", "boolean"),
        ("user.id", "string"),
        ("user.name", "string"),
        ("app.bundle_id", "string"),
        ("app.name", "string"),
        ("app.version", "string"),
        ("app.managed", "boolean"),
    ] {
        opt_type(&doc, p, t)?;
    }
    let f = fields();
    let mut ev = ctx.event(dataset, line);
    util::set_time(&mut ev, ts);
    ev.set(f.event_kind, s("event"));
    ev.insert("host.id", s(device_id));
    ev.insert("device.id", s(device_id));
    if let Some(p) = platform {
        ev.insert("host.os.type", s(p));
        ev.insert("host.os.platform", s(p));
    }
    util::copy(&mut ev, &doc, "device.os_version", "host.os.version");
    util::copy(&mut ev, &doc, "device.model", "device.model.identifier");
    util::copy(
        &mut ev,
        &doc,
        "device.supervised",
        "mobile.device.supervised",
    );
    util::copy(&mut ev, &doc, "user.id", "user.id");
    util::copy(&mut ev, &doc, "user.name", "user.name");
    if let Some(b) = util::get_str(&doc, "app.bundle_id") {
        ev.insert("package.name", s(b));
        ev.insert("process.code_signature.signing_id", s(b));
        ev.insert("mobile.app.bundle_id", s(b));
    }
    if let Some(n) = util::get_str(&doc, "app.name") {
        ev.insert("process.name", s(n));
        ev.insert("mobile.app.name", s(n));
    }
    util::copy(&mut ev, &doc, "app.version", "package.version");
    util::copy(&mut ev, &doc, "app.managed", "mobile.app.managed");
    util::copy(&mut ev, &doc, "message", "message");
    Ok((ev, doc))
}

fn mdm(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let (mut ev, doc) = common(ctx, line, "mdm.log")?;
    let kind = enum_field(
        &doc,
        "kind",
        &[
            "enrollment",
            "app_inventory",
            "app_install",
            "policy_state",
            "profile",
            "compliance",
        ],
        true,
    )?
    .unwrap_or("");
    enum_field(
        &doc,
        "app.source",
        &["app_store", "vpp", "enterprise", "testflight", "unknown"],
        false,
    )?;
    enum_field(
        &doc,
        "policy.state",
        &["compliant", "noncompliant", "pending", "error"],
        false,
    )?;
    opt_type(&doc, "policy.tls_inspection", "boolean")?;
    opt_type(&doc, "policy.id", "string")?;
    let f = fields();
    ev.set(f.event_action, s(kind));
    util::copy(&mut ev, &doc, "app.source", "mobile.app.source");
    util::copy(&mut ev, &doc, "policy.id", "mobile.policy.id");
    util::copy(&mut ev, &doc, "policy.name", "mobile.policy.name");
    util::copy(&mut ev, &doc, "policy.state", "mobile.policy.state");
    util::copy(
        &mut ev,
        &doc,
        "policy.tls_inspection",
        "mobile.policy.tls_inspection",
    );
    util::copy(
        &mut ev,
        &doc,
        "profile.identifier",
        "mobile.profile.identifier",
    );
    let (cat, ty): (&[&str], &[&str]) = match kind {
        "app_install" => (&["package"], &["installation"]),
        "app_inventory" => (&["package"], &["info"]),
        "policy_state" | "profile" | "compliance" => (&["configuration"], &["info"]),
        _ => (&["host"], &["info"]),
    };
    ev.set(f.event_category, strs(cat));
    ev.set(f.event_type, strs(ty));
    Ok(ev)
}

// Over 100 lines on purpose: the mobile-edr mapping table of docs/formats/mobile-edr.md, kept as one table.
fn edr(ctx: &Ctx, line: &str) -> Result<Event, String> {
    let (mut ev, doc) = common(ctx, line, "mobile_edr.telemetry")?;
    let kind = enum_field(
        &doc,
        "kind",
        &["app_state", "device_state", "network", "tls"],
        true,
    )?
    .unwrap_or("");
    let f = fields();
    ev.set(f.event_action, s(kind));
    if let Some(st) = enum_field(
        &doc,
        "app.state",
        &["foreground", "background", "suspended", "terminated"],
        kind == "app_state",
    )? {
        ev.insert("mobile.app.state", s(st));
        ev.insert("mobile.app.foreground", Value::Bool(st == "foreground"));
    }
    opt_type(&doc, "device_state.locked", "boolean")?;
    util::copy(&mut ev, &doc, "device_state.locked", "mobile.device.locked");
    if let Some(n) = enum_field(
        &doc,
        "device_state.network",
        &["wifi", "cellular", "wired", "none"],
        false,
    )? {
        ev.insert("mobile.device.network", s(n));
        ev.insert("mobile.device.network_capable", Value::Bool(n != "none"));
    }
    util::copy(&mut ev, &doc, "device_state.vpn", "mobile.device.vpn");
    let (cat, ty): (&[&str], &[&str]) = match kind {
        "network" | "tls" => {
            let dir = enum_field(&doc, "network.direction", &["outbound", "inbound"], false)?;
            if let Some(d) = dir {
                ev.insert(
                    "network.direction",
                    s(if d == "outbound" { "egress" } else { "ingress" }),
                );
            }
            for (p, t) in [
                ("network.src_port", "integer"),
                ("network.dst_port", "integer"),
                ("network.bytes_out", "integer"),
                ("network.bytes_in", "integer"),
                ("network.duration_ms", "integer"),
            ] {
                opt_type(&doc, p, t)?;
            }
            util::copy(&mut ev, &doc, "network.transport", "network.transport");
            util::copy_ip(&mut ev, &doc, "network.src_ip", "source.ip");
            util::copy_int(&mut ev, &doc, "network.src_port", "source.port");
            util::copy_ip(&mut ev, &doc, "network.dst_ip", "destination.ip");
            util::copy_int(&mut ev, &doc, "network.dst_port", "destination.port");
            util::copy(&mut ev, &doc, "network.dst_domain", "destination.domain");
            util::copy_int(&mut ev, &doc, "network.bytes_out", "source.bytes");
            util::copy_int(&mut ev, &doc, "network.bytes_in", "destination.bytes");
            if let Some(ms) = util::get(&doc, "network.duration_ms").and_then(util::as_int) {
                ev.insert("event.duration", Value::Int(ms.saturating_mul(1_000_000)));
            }
            if kind == "tls" {
                let outcome = enum_field(
                    &doc,
                    "tls.outcome",
                    &["established", "rejected", "failed"],
                    true,
                )?
                .unwrap_or("");
                enum_field(
                    &doc,
                    "tls.failure_reason",
                    &[
                        "certificate_pinning",
                        "untrusted_root",
                        "expired",
                        "hostname_mismatch",
                        "handshake",
                        "other",
                    ],
                    false,
                )?;
                opt_type(&doc, "tls.inspected", "boolean")?;
                util::copy(&mut ev, &doc, "tls.server_name", "tls.client.server_name");
                util::copy(&mut ev, &doc, "tls.version", "tls.version");
                util::copy(&mut ev, &doc, "tls.issuer", "tls.server.issuer");
                util::copy(
                    &mut ev,
                    &doc,
                    "tls.failure_reason",
                    "mobile.tls.failure_reason",
                );
                util::copy(&mut ev, &doc, "tls.inspected", "mobile.tls.inspected");
                ev.insert("tls.established", Value::Bool(outcome == "established"));
                ev.insert("mobile.tls.outcome", s(outcome));
                ev.set(
                    f.event_outcome,
                    s(if outcome == "established" {
                        "success"
                    } else {
                        "failure"
                    }),
                );
                (&["network"], &["connection", "protocol"])
            } else {
                (&["network"], &["connection"])
            }
        }
        "app_state" => (&["process"], &["change"]),
        _ => (&["host"], &["change"]),
    };
    ev.set(f.event_category, strs(cat));
    ev.set(f.event_type, strs(ty));
    Ok(ev)
}
