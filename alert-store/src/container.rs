//! Where an alert happened, container-wise: taken from its evidence (the kernel sensor's
//! `container.*` / `kubernetes.*` / `orchestrator.*` ECS fields, or a remote source's as sent), kept
//! in columns of its own so that `sensor alerts list --container/--namespace` can filter on it.

use serde::{Deserialize, Serialize};

use correlator::Alert;

/// The container an alert's closing evidence names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// `container.id`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `container.image.name`, with `:tag` when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `kubernetes.namespace` (else `orchestrator.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `kubernetes.pod.name` (else `orchestrator.resource.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

pub(crate) fn at<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    // ECS documents are nested; some senders write dotted keys: accept both.
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    let mut cur = doc;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    Some(cur)
}

pub(crate) fn text(doc: &serde_json::Value, path: &str) -> Option<String> {
    match at(doc, path)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Array(a) => a.first()?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The container of the last evidence event that names one.
pub fn container_of(alert: &Alert) -> Option<ContainerSummary> {
    let doc = alert
        .evidence
        .iter()
        .rev()
        .find(|d| text(d, "container.id").is_some())?;
    let image = text(doc, "container.image.name").map(|n| match text(doc, "container.image.tag") {
        Some(t) => format!("{n}:{t}"),
        None => n,
    });
    Some(ContainerSummary {
        id: text(doc, "container.id")?,
        name: text(doc, "container.name"),
        image,
        namespace: text(doc, "kubernetes.namespace")
            .or_else(|| text(doc, "orchestrator.namespace")),
        pod: text(doc, "kubernetes.pod.name").or_else(|| text(doc, "orchestrator.resource.name")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn from_nested_and_dotted_evidence() {
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "rule_id": "r", "rule_name": "r", "severity": "low", "risk_score": 1,
            "timestamp_ns": 0, "first_event_ns": 0, "evidence": [
                {"container": {"id": "c1", "name": "web", "image": {"name": "nginx", "tag": ["1.25"]}},
                 "kubernetes": {"namespace": "shop", "pod": {"name": "web-0"}}},
                {"process": {"pid": 1}}
            ]
        }))
        .unwrap();
        let c = container_of(&a).unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(c.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.pod.as_deref(), Some("web-0"));
        a.evidence =
            vec![serde_json::json!({"container.id": "c2", "orchestrator.namespace": "ns"})];
        let c = container_of(&a).unwrap();
        assert_eq!((c.id.as_str(), c.namespace.as_deref()), ("c2", Some("ns")));
        a.evidence = vec![serde_json::json!({"host": {"name": "h"}})];
        assert!(container_of(&a).is_none());
    }
}
