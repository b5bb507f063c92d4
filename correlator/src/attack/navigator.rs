//! ATT&CK Navigator layers (format 4.5): writing one from a coverage, and checking one.

use serde_json::{json, Value};

use super::{AnalyticCoverage, Coverage};

/// An ATT&CK Navigator layer (layer format 4.5) for one domain, one technique entry per covered technique
/// (and tactic), scored by the number of enabled rules covering it.
pub fn navigator_layer(cov: &Coverage, domain: &str, attack_version: &str) -> Value {
    let mut techniques = Vec::new();
    let mut max = 1usize;
    for t in cov
        .techniques
        .iter()
        .filter(|t| t.domain == domain || t.domain.is_empty() && domain == "enterprise-attack")
    {
        let rules: Vec<&AnalyticCoverage> = cov
            .analytics
            .iter()
            .filter(|a| a.enabled && t.rules.contains(&a.rule_id))
            .collect();
        max = max.max(rules.len());
        let comment = rules
            .iter()
            .map(|a| match (&a.analytic, &a.strategy) {
                (Some(an), Some(det)) => format!("{an} ({det}): {}", a.rule_name),
                _ => format!("{}: {}", a.rule_id, a.rule_name),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let metadata: Vec<Value> = rules
            .iter()
            .map(|a| json!({"name": a.analytic.as_deref().map_or("rule", |_| "analytic"), "value": a.analytic.clone().unwrap_or_else(|| a.rule_id.clone())}))
            .collect();
        let tactics: Vec<Option<&String>> = if t.tactics.is_empty() {
            vec![None]
        } else {
            t.tactics.iter().map(Some).collect()
        };
        for tactic in tactics {
            let mut e = json!({
                "techniqueID": t.id,
                "score": rules.len(),
                "color": "",
                "comment": comment,
                "enabled": true,
                "metadata": metadata,
                "links": [],
                "showSubtechniques": false,
            });
            if let (Some(tac), Value::Object(m)) = (tactic, &mut e) {
                m.insert("tactic".into(), Value::String(tac.clone()));
            }
            techniques.push(e);
        }
    }
    json!({
        "name": "sensor coverage",
        "versions": {"attack": attack_version, "navigator": "5.1.0", "layer": "4.5"},
        "domain": domain,
        "description": format!("Techniques covered by the loaded sensor rules; score = number of rules. Sources: {}.", cov.sources.join(", ")),
        "filters": {"platforms": ["Linux", "macOS", "Windows", "iOS", "Android"]},
        "sorting": 0,
        "layout": {"layout": "side", "aggregateFunction": "average", "showID": true, "showName": true, "showAggregateScores": false, "countUnscored": false, "expandedSubtechniques": "annotated"},
        "hideDisabled": false,
        "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#66b1ff"], "minValue": 0, "maxValue": max},
        "legendItems": [],
        "metadata": [],
        "links": [],
        "showTacticRowBackground": false,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
    })
}

/// Checks a layer against the required fields and types of the Navigator layer format 4.5. Returns every
/// problem found (empty: valid).
// Over 100 lines on purpose: one check per field of the Navigator 4.5 layer format, in the format's order.
pub fn validate_layer(layer: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let Some(o) = layer.as_object() else {
        return vec!["layer is not a JSON object".into()];
    };
    let want_str = |p: &mut Vec<String>,
                    o: &serde_json::Map<String, Value>,
                    k: &str,
                    required: bool| match o.get(k) {
        Some(Value::String(_)) => {}
        None if !required => {}
        None => p.push(format!("missing required string `{k}`")),
        Some(_) => p.push(format!("`{k}` must be a string")),
    };
    want_str(&mut p, o, "name", true);
    want_str(&mut p, o, "domain", true);
    want_str(&mut p, o, "description", false);
    match o.get("domain").and_then(Value::as_str) {
        Some("enterprise-attack" | "mobile-attack" | "ics-attack") | None => {}
        Some(d) => p.push(format!(
            "`domain` {d:?} is not enterprise-attack, mobile-attack or ics-attack"
        )),
    }
    match o.get("versions").and_then(Value::as_object) {
        None => p.push("missing required object `versions`".into()),
        Some(v) => {
            if v.get("layer").and_then(Value::as_str) != Some("4.5") {
                p.push("`versions.layer` must be \"4.5\"".into());
            }
            for k in ["attack", "navigator"] {
                if v.get(k).is_some_and(|x| !x.is_string()) {
                    p.push(format!("`versions.{k}` must be a string"));
                }
            }
        }
    }
    for k in [
        "hideDisabled",
        "showTacticRowBackground",
        "selectTechniquesAcrossTactics",
        "selectSubtechniquesWithParent",
        "selectVisibleTechniques",
    ] {
        if o.get(k).is_some_and(|x| !x.is_boolean()) {
            p.push(format!("`{k}` must be a boolean"));
        }
    }
    if o.get("sorting")
        .is_some_and(|x| x.as_u64().is_none_or(|n| n > 3))
    {
        p.push("`sorting` must be 0..=3".into());
    }
    match o.get("techniques") {
        None => {}
        Some(Value::Array(ts)) => {
            for (i, t) in ts.iter().enumerate() {
                let Some(t) = t.as_object() else {
                    p.push(format!("techniques[{i}] is not an object"));
                    continue;
                };
                match t.get("techniqueID").and_then(Value::as_str) {
                    Some(id) if is_technique_id(id) => {}
                    Some(id) => p.push(format!(
                        "techniques[{i}].techniqueID {id:?} is not a technique id"
                    )),
                    None => p.push(format!(
                        "techniques[{i}] lacks the required string techniqueID"
                    )),
                }
                if t.get("tactic").is_some_and(|x| !x.is_string()) {
                    p.push(format!("techniques[{i}].tactic must be a string"));
                }
                if t.get("score")
                    .is_some_and(|x| !x.is_number() && !x.is_null())
                {
                    p.push(format!("techniques[{i}].score must be a number"));
                }
                for k in ["comment", "color"] {
                    if t.get(k).is_some_and(|x| !x.is_string()) {
                        p.push(format!("techniques[{i}].{k} must be a string"));
                    }
                }
                for k in ["enabled", "showSubtechniques"] {
                    if t.get(k).is_some_and(|x| !x.is_boolean()) {
                        p.push(format!("techniques[{i}].{k} must be a boolean"));
                    }
                }
                if let Some(m) = t.get("metadata") {
                    let ok = m.as_array().is_some_and(|a| {
                        a.iter().all(|x| {
                            x.get("name").is_some_and(Value::is_string)
                                && x.get("value").is_some_and(Value::is_string)
                        })
                    });
                    if !ok {
                        p.push(format!(
                            "techniques[{i}].metadata must be an array of {{name, value}} strings"
                        ));
                    }
                }
            }
        }
        Some(_) => p.push("`techniques` must be an array".into()),
    }
    if let Some(g) = o.get("gradient") {
        let ok = g
            .get("colors")
            .and_then(Value::as_array)
            .is_some_and(|c| c.len() >= 2 && c.iter().all(Value::is_string))
            && g.get("minValue").is_some_and(Value::is_number)
            && g.get("maxValue").is_some_and(Value::is_number);
        if !ok {
            p.push(
                "`gradient` needs colors (>= 2 strings), minValue and maxValue (numbers)".into(),
            );
        }
    }
    if let Some(l) = o.get("legendItems") {
        if !l.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.get("label").is_some_and(Value::is_string)
                    && x.get("color").is_some_and(Value::is_string)
            })
        }) {
            p.push("`legendItems` must be an array of {label, color}".into());
        }
    }
    p
}

fn is_technique_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest
        .split_once('.')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && sub.is_none_or(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}
