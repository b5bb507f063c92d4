//! Settings scoped to containers: an analytic's settings (allowlists above all) given other values
//! for the events of one Kubernetes namespace, image or container.
//!
//! ```toml
//! [rules.settings.AN1358]
//! FIFOAccessPatterns = ["/usr/bin/conmon"]                  # everywhere
//! [[rules.settings.AN1358.scoped]]
//! image = "registry.example/batch-*"                         # what it applies to (globs; all given must match)
//! FIFOAccessPatterns = ["/usr/bin/conmon", "/app/worker"]    # the value there
//! ```
//!
//! A scope has a selector (`namespace`, `image`, `container`: globs, at least one; `image` is
//! matched against `container.image.name` and against `name:tag`; `container` against
//! `container.name` and `container.id`) and setting values. The analytic's detectors are built once
//! for the unscoped values and once per scope with the unscoped values overlaid by the scope's; an
//! event goes to the detectors of the first scope whose selector matches it, and to the unscoped
//! ones when none does. So a scope changes nothing outside it, and state (thresholds, baselines)
//! is kept apart per scope. Detector ids of a scope end in `@<selector>` (saved states follow them).

use std::collections::BTreeMap;

use crate::detect::{glob_match, StateError};
use crate::Detector;
use crate::{Alert, Event, Field, Value};

use super::{Analytic, AnalyticError, Entry, EqlCompiler, SettingValue};

/// A scope's selector and its setting values.
pub type ScopedValues = (Selector, BTreeMap<String, SettingValue>);

/// The values of every scope: the analytic's `base` values overlaid by the scope's, each checked
/// against its declared type as the unscoped ones are.
pub fn resolve(
    analytic: &Analytic,
    base: &BTreeMap<String, SettingValue>,
    scopes: &[Scope],
) -> Result<Vec<ScopedValues>, AnalyticError> {
    let id = &analytic.meta.id;
    let mut out = Vec::new();
    for s in scopes {
        let mut values = base.clone();
        for (name, v) in &s.settings {
            let Some(spec) = analytic.settings.iter().find(|x| &x.name == name) else {
                return Err(AnalyticError::UnknownSetting {
                    analytic: id.clone(),
                    setting: format!("{name}` (in the scope {}) `", s.selector.label()),
                    known: analytic
                        .settings
                        .iter()
                        .map(|x| x.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let val = SettingValue::from_toml(spec.ty, v, base.get(name)).map_err(|e| {
                AnalyticError::Setting {
                    analytic: id.clone(),
                    setting: name.clone(),
                    error: format!(
                        "in the scope {}: {e} (declared type {})",
                        s.selector.label(),
                        spec.ty.as_str()
                    ),
                }
            })?;
            values.insert(name.clone(), val);
        }
        out.push((s.selector.clone(), values));
    }
    Ok(out)
}

/// The detectors of one analytic: unscoped, then one set per scope (see the module text).
pub fn build(e: &Entry, eql: &dyn EqlCompiler) -> Result<Vec<Box<dyn Detector>>, AnalyticError> {
    let plain = e.analytic.build(&e.values, eql)?;
    if e.scopes.is_empty() {
        return Ok(plain);
    }
    let all: Vec<Selector> = e.scopes.iter().map(|(s, _)| s.clone()).collect();
    let mut out: Vec<Box<dyn Detector>> = Vec::new();
    for d in plain {
        out.push(Box::new(Scoped {
            id: d.id().to_string(),
            inner: d,
            include: None,
            exclude: all.clone(),
        }));
    }
    for (i, (sel, values)) in e.scopes.iter().enumerate() {
        for d in e.analytic.build(values, eql)? {
            out.push(Box::new(Scoped {
                id: format!("{}@{}", d.id(), sel.label()),
                inner: d,
                include: Some(sel.clone()),
                exclude: all[..i].to_vec(),
            }));
        }
    }
    Ok(out)
}

/// Which events a scope applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub container: Option<String>,
}

/// One `[[...scoped]]` entry: a selector and its raw setting values.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub selector: Selector,
    pub settings: BTreeMap<String, toml::Value>,
}

const SELECTOR_KEYS: [&str; 3] = ["namespace", "image", "container"];

impl Scope {
    /// Reads the `scoped` array of one analytic's overrides.
    pub fn list_from_toml(analytic: &str, v: &toml::Value) -> Result<Vec<Scope>, AnalyticError> {
        let cfg = |error: String| AnalyticError::Config {
            analytic: analytic.to_string(),
            error,
        };
        let toml::Value::Array(items) = v else {
            return Err(cfg(
                "`scoped` must be an array of tables ([[...scoped]])".into()
            ));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let toml::Value::Table(t) = item else {
                return Err(cfg(format!("scoped[{i}] must be a table")));
            };
            let mut s = Scope::default();
            for (k, x) in t {
                if SELECTOR_KEYS.contains(&k.as_str()) {
                    let toml::Value::String(g) = x else {
                        return Err(cfg(format!("scoped[{i}].{k} must be a string (a glob)")));
                    };
                    let slot = match k.as_str() {
                        "namespace" => &mut s.selector.namespace,
                        "image" => &mut s.selector.image,
                        _ => &mut s.selector.container,
                    };
                    *slot = Some(g.clone());
                } else {
                    s.settings.insert(k.clone(), x.clone());
                }
            }
            if s.selector == Selector::default() {
                return Err(cfg(format!(
                    "scoped[{i}] names no scope: give `namespace`, `image` or `container`"
                )));
            }
            if s.settings.is_empty() {
                return Err(cfg(format!("scoped[{i}] sets no setting")));
            }
            out.push(s);
        }
        Ok(out)
    }
}

impl Selector {
    /// `namespace=a,image=b` (the suffix of the scope's detector ids).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("namespace", &self.namespace),
            ("image", &self.image),
            ("container", &self.container),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join(",")
    }

    pub fn matches(&self, e: &Event) -> bool {
        static F: std::sync::OnceLock<[Field; 6]> = std::sync::OnceLock::new();
        let [ns, ons, img, tag, name, id] = *F.get_or_init(|| {
            [
                Field::intern("kubernetes.namespace"),
                Field::intern("orchestrator.namespace"),
                Field::intern("container.image.name"),
                Field::intern("container.image.tag"),
                Field::intern("container.name"),
                Field::intern("container.id"),
            ]
        });
        let text = |f: Field| -> Option<&str> {
            match e.get(f)? {
                Value::Array(a) => a.first()?.as_str(),
                v => v.as_str(),
            }
        };
        if let Some(g) = &self.namespace {
            if !text(ns)
                .or_else(|| text(ons))
                .is_some_and(|v| glob_match(g, v, false))
            {
                return false;
            }
        }
        if let Some(g) = &self.image {
            let Some(n) = text(img) else { return false };
            let with_tag = text(tag).map(|t| format!("{n}:{t}"));
            if !(glob_match(g, n, false) || with_tag.is_some_and(|w| glob_match(g, &w, false))) {
                return false;
            }
        }
        if let Some(g) = &self.container {
            let by_name = text(name).is_some_and(|v| glob_match(g, v, false));
            if !by_name && !text(id).is_some_and(|v| glob_match(g, v, false)) {
                return false;
            }
        }
        true
    }
}

/// A detector that sees only the events of its scope: those its selector matches (none: all) and
/// no earlier scope's does.
pub(crate) struct Scoped {
    pub id: String,
    pub inner: Box<dyn Detector>,
    pub include: Option<Selector>,
    pub exclude: Vec<Selector>,
}

impl Detector for Scoped {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        if self.include.as_ref().is_some_and(|s| !s.matches(event))
            || self.exclude.iter().any(|s| s.matches(event))
        {
            return;
        }
        self.inner.on_event(event, out);
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        self.inner.on_watermark(now_ns, out);
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        self.inner.save_state()
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        self.inner.restore_state(state)
    }

    fn export_state(&self) -> Option<serde_json::Value> {
        self.inner.export_state()
    }

    fn import_state(&mut self, state: &serde_json::Value) -> Result<(), StateError> {
        self.inner.import_state(state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ev(ns: Option<&str>, image: &str, tag: &str, name: &str) -> Event {
        let mut f = vec![
            (
                Field::intern("container.image.name"),
                Value::Str(image.into()),
            ),
            (
                Field::intern("container.image.tag"),
                Value::Array(vec![Value::Str(tag.into())].into()),
            ),
            (Field::intern("container.name"), Value::Str(name.into())),
            (
                Field::intern("container.id"),
                Value::Str("abcdef0123456789".into()),
            ),
        ];
        if let Some(ns) = ns {
            f.push((Field::intern("kubernetes.namespace"), Value::Str(ns.into())));
        }
        Event::from_fields(0, f)
    }

    #[test]
    fn selectors() {
        let s = Selector {
            image: Some("localhost/bb:2".into()),
            ..Selector::default()
        };
        assert!(s.matches(&ev(None, "localhost/bb", "2", "c")));
        assert!(!s.matches(&ev(None, "localhost/bb", "1", "c")));
        let s = Selector {
            namespace: Some("prod-*".into()),
            container: Some("abcdef*".into()),
            image: None,
        };
        assert!(s.matches(&ev(Some("prod-eu"), "x", "1", "c")));
        assert!(!s.matches(&ev(Some("dev"), "x", "1", "c")));
        assert!(!s.matches(&ev(None, "x", "1", "c")));
        assert_eq!(s.label(), "namespace=prod-*,container=abcdef*");
        assert!(!s.matches(&Event::from_fields(0, vec![])));
    }

    fn fifo(path: &str, image: Option<&str>, sec: i64) -> Event {
        let mut j = serde_json::json!({
            "@timestamp": format!("2027-01-15T08:00:{sec:02}Z"),
            "event": {"action": "fifo_create", "category": ["file"], "type": ["creation"]},
            "file": {"path": path, "type": "fifo"},
            "host": {"id": "h1"},
            "process": {"executable": "/bin/busybox", "pid": 7},
        });
        if let Some(i) = image {
            j["container"] = serde_json::json!({"id": "c0ffee", "image": {"name": i, "tag": ["1"]}, "name": "batch"});
        }
        Event::from_json(&j).unwrap()
    }

    /// AN1358's FIFOAccessPatterns allows busybox in one image only: a FIFO made by busybox in
    /// /tmp alerts (low, unwired) on the host and in other images, not in that image; the unscoped settings are
    /// untouched, and the scoped detectors have ids of their own.
    #[test]
    fn an1358_allowlist_for_one_image() {
        let cfg = r#"
[rules.settings.AN1358]
SharedDirs = ["/tmp/*"]
[[rules.settings.AN1358.scoped]]
image = "localhost/batch*"
FIFOAccessPatterns = ["/bin/busybox"]
"#;
        let o = super::super::Overrides::from_config_text(cfg).unwrap();
        let set = super::super::AnalyticSet::load(&[], &o).unwrap();
        let e = set.get("AN1358").unwrap();
        assert_eq!(e.scopes.len(), 1);
        let mut dets = set.detectors(&super::super::Eql).unwrap();
        let ids: Vec<String> = dets
            .iter()
            .filter(|d| d.id().starts_with("AN1358"))
            .map(|d| d.id().to_string())
            .collect();
        assert!(
            ids.contains(&"AN1358/fifo-wiring@image=localhost/batch*".to_string()),
            "{ids:?}"
        );
        let mut alerts = Vec::new();
        let t = 1;
        for (i, ev) in [
            fifo("/tmp/a", Some("localhost/batch"), t),
            fifo("/tmp/b", None, t + 1),
            fifo("/tmp/c", Some("localhost/web"), t + 2),
        ]
        .iter()
        .enumerate()
        {
            for d in dets.iter_mut() {
                d.on_event(ev, &mut alerts);
            }
            let _ = i;
        }
        // An unwired FIFO is reported (low) once its decision delay has passed in event time.
        let later = fifo("/tmp/z", None, 59).timestamp_ns;
        for d in dets.iter_mut() {
            d.on_watermark(later, &mut alerts);
        }
        let paths: Vec<String> = alerts
            .iter()
            .filter(|a| a.rule_id == "AN1358" && !a.reason.contains("/tmp/z"))
            .map(|a| a.reason.clone())
            .collect();
        assert_eq!(paths.len(), 2, "{paths:?}");
        assert!(
            paths.iter().any(|r| r.contains("/tmp/b"))
                && paths.iter().any(|r| r.contains("/tmp/c"))
        );

        let bad = "[[rules.settings.AN1358.scoped]]\nimage = \"x\"\nNoSuch = 1\n";
        let o = super::super::Overrides::from_config_text(bad).unwrap();
        let err = super::super::AnalyticSet::load(&[], &o)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("NoSuch") && err.contains("image=x"), "{err}");
    }

    #[test]
    fn bad_scopes_are_named() {
        let t: toml::Table = toml::from_str(
            "scoped = [{ FIFOAccessPatterns = [] }, { image = 1, X = 2 }, { image = \"a\" }]",
        )
        .unwrap();
        let toml::Value::Array(a) = &t["scoped"] else {
            panic!()
        };
        for one in a {
            let e = Scope::list_from_toml("AN1", &toml::Value::Array(vec![one.clone()]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("AN1") && e.contains("scoped[0]"), "{e}");
        }
    }
}
