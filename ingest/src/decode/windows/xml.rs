//! Rendered event XML (`<Event xmlns=...>`), read with roxmltree.

use super::{parse_int, parse_time, Record};

/// Parses a record holding one or more `<Event>` elements (optionally inside `<Events>`, after an
/// XML prolog). Each event comes with its own text as the original record.
pub(super) fn parse_xml(text: &str) -> Result<Vec<(String, Record)>, String> {
    // Drop the prolog and wrap, so that several events on one line form one document.
    let mut body = text.trim();
    while let Some(rest) = body.strip_prefix("<?") {
        let end = rest.find("?>").ok_or("XML prolog without `?>`")?;
        body = rest[end + 2..].trim_start();
    }
    if body.starts_with("<!") {
        return Err("XML with a DOCTYPE or comment before the first event is not accepted".into());
    }
    let wrapped = format!("<r>{body}</r>");
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1 << 20,
    };
    let doc = roxmltree::Document::parse_with_options(&wrapped, opts)
        .map_err(|e| format!("invalid XML: {e}"))?;
    let mut out = Vec::new();
    for node in doc.root_element().descendants() {
        if !node.is_element() || node.tag_name().name() != "Event" {
            continue;
        }
        if node
            .ancestors()
            .skip(1)
            .any(|a| a.is_element() && a.tag_name().name() == "Event")
        {
            continue;
        }
        let raw = wrapped[node.range()].to_string();
        out.push((raw, xml_event(node)));
    }
    if out.is_empty() {
        return Err("XML record holds no <Event> element".into());
    }
    Ok(out)
}

pub(super) fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

pub(super) fn node_text(n: roxmltree::Node<'_, '_>) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
}

pub(super) fn xml_event(ev: roxmltree::Node<'_, '_>) -> Record {
    let mut rec = Record::default();
    if let Some(sys) = child(ev, "System") {
        let text = |name: &str| {
            child(sys, name)
                .map(node_text)
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let attr = |name: &str, a: &str| {
            child(sys, name)
                .and_then(|n| n.attribute(a))
                .map(str::to_string)
        };
        rec.event_id = text("EventID").and_then(|v| parse_int(&v));
        rec.provider = attr("Provider", "Name").or_else(|| attr("Provider", "EventSourceName"));
        rec.channel = text("Channel");
        rec.computer = text("Computer");
        rec.record_id = text("EventRecordID").and_then(|v| parse_int(&v));
        rec.exec_pid = attr("Execution", "ProcessID").and_then(|v| parse_int(&v));
        rec.exec_tid = attr("Execution", "ThreadID").and_then(|v| parse_int(&v));
        rec.user_sid = attr("Security", "UserID");
        rec.system_time =
            attr("TimeCreated", "SystemTime").and_then(|t| parse_time(&t).map(|p| p.0));
        rec.level = text("Level");
        rec.task = text("Task");
        rec.opcode = text("Opcode");
        rec.keywords = text("Keywords");
    }
    if let Some(data) = child(ev, "EventData") {
        for (i, d) in data.children().filter(|c| c.is_element()).enumerate() {
            let i = i + 1;
            let name = d.attribute("Name").map(str::to_string).unwrap_or_else(|| {
                if d.tag_name().name() == "Data" {
                    format!("param{i}")
                } else {
                    d.tag_name().name().to_string()
                }
            });
            rec.data.push((name, node_text(d)));
        }
    }
    if let Some(ud) = child(ev, "UserData") {
        // One element (the provider's) whose children are the fields.
        for holder in ud.children().filter(|c| c.is_element()) {
            for f in holder.children().filter(|c| c.is_element()) {
                rec.data
                    .push((f.tag_name().name().to_string(), node_text(f)));
            }
        }
    }
    if let Some(ri) = child(ev, "RenderingInfo") {
        rec.message = child(ri, "Message")
            .map(node_text)
            .filter(|m| !m.is_empty());
        if let Some(l) = child(ri, "Level").map(node_text).filter(|l| !l.is_empty()) {
            rec.level = Some(l);
        }
        if let Some(t) = child(ri, "Task").map(node_text).filter(|l| !l.is_empty()) {
            rec.task = Some(t);
        }
    }
    rec
}
