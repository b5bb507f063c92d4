//! Per-analytic overrides from the daemon config: `[analytics.<ID>]` tables or the `[rules]`
//! section's `settings` and `disabled`.

use std::collections::BTreeMap;

use super::{scope, AnalyticError};

/// Per-analytic overrides from the daemon config's `[analytics]` table.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub analytics: BTreeMap<String, AnalyticOverride>,
}

#[derive(Clone, Debug, Default)]
pub struct AnalyticOverride {
    pub enabled: Option<bool>,
    pub settings: BTreeMap<String, toml::Value>,
    /// Only named by a `disabled` list, which may also name EQL rules: no error when no analytic has the id.
    pub lenient: bool,
    /// Setting values for one namespace, image or container (`[[...scoped]]`, see [`scope`]).
    pub scoped: Vec<scope::Scope>,
}

impl Overrides {
    /// Reads the `[analytics]` table of the daemon config:
    /// `[analytics.AN1358] enabled = false` and `[analytics.AN1358.settings] Name = value`.
    pub fn from_toml(table: &toml::Table) -> Result<Overrides, AnalyticError> {
        let mut out = Overrides::default();
        for (id, v) in table {
            let cfg = |error: String| AnalyticError::Config {
                analytic: id.clone(),
                error,
            };
            let toml::Value::Table(t) = v else {
                return Err(cfg("must be a table".into()));
            };
            let mut o = AnalyticOverride::default();
            for (k, x) in t {
                match (k.as_str(), x) {
                    ("enabled", toml::Value::Boolean(b)) => o.enabled = Some(*b),
                    ("enabled", _) => return Err(cfg("`enabled` must be true or false".into())),
                    ("settings", toml::Value::Table(s)) => {
                        o.settings = s.clone().into_iter().collect()
                    }
                    ("settings", _) => return Err(cfg("`settings` must be a table".into())),
                    ("scoped", v) => o.scoped = scope::Scope::list_from_toml(id, v)?,
                    (other, _) => {
                        return Err(cfg(format!(
                            "unknown key `{other}` (expected `enabled`, `settings` or `scoped`)"
                        )))
                    }
                }
            }
            out.analytics.insert(id.clone(), o);
        }
        Ok(out)
    }

    /// The daemon's `[rules]` form: `[rules.settings.<ID>]` holds the setting values directly (or the
    /// `enabled`/`settings` form of [`Overrides::from_toml`]), and `disabled` lists analytic ids to turn off.
    pub fn from_rules_section(
        settings: &toml::Table,
        disabled: &[String],
    ) -> Result<Overrides, AnalyticError> {
        let mut out = Overrides::default();
        for (id, v) in settings {
            let toml::Value::Table(t) = v else {
                return Err(AnalyticError::Config {
                    analytic: id.clone(),
                    error: "must be a table of settings".into(),
                });
            };
            let o = if t.contains_key("settings") || t.contains_key("enabled") {
                let mut one = toml::Table::new();
                one.insert(id.clone(), v.clone());
                Overrides::from_toml(&one)?
                    .analytics
                    .remove(id)
                    .unwrap_or_default()
            } else {
                let mut t = t.clone();
                let scoped = match t.remove("scoped") {
                    Some(v) => scope::Scope::list_from_toml(id, &v)?,
                    None => Vec::new(),
                };
                AnalyticOverride {
                    enabled: None,
                    settings: t.into_iter().collect(),
                    lenient: false,
                    scoped,
                }
            };
            out.analytics.insert(id.clone(), o);
        }
        for id in disabled {
            let o = out
                .analytics
                .entry(id.clone())
                .or_insert_with(|| AnalyticOverride {
                    lenient: true,
                    ..Default::default()
                });
            o.enabled = Some(false);
        }
        Ok(out)
    }

    /// Parses a whole daemon config text: its `[analytics.<ID>]` tables and its `[rules]` section
    /// (`settings`, `disabled`); either may be absent.
    pub fn from_config_text(text: &str) -> Result<Overrides, AnalyticError> {
        let t: toml::Table = toml::from_str(text).map_err(|e| AnalyticError::Parse {
            file: "config".into(),
            error: e.to_string(),
        })?;
        let cfg = |error: &str| AnalyticError::Config {
            analytic: "*".into(),
            error: error.into(),
        };
        let mut out = match t.get("analytics") {
            None => Overrides::default(),
            Some(toml::Value::Table(a)) => Overrides::from_toml(a)?,
            Some(_) => return Err(cfg("`analytics` must be a table")),
        };
        if let Some(toml::Value::Table(rules)) = t.get("rules") {
            let settings = match rules.get("settings") {
                None => toml::Table::new(),
                Some(toml::Value::Table(s)) => s.clone(),
                Some(_) => return Err(cfg("`rules.settings` must be a table")),
            };
            let disabled: Vec<String> = match rules.get("disabled") {
                None => Vec::new(),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                Some(_) => return Err(cfg("`rules.disabled` must be an array of ids")),
            };
            for (id, o) in Overrides::from_rules_section(&settings, &disabled)?.analytics {
                let fresh = !out.analytics.contains_key(&id);
                let slot = out.analytics.entry(id).or_default();
                slot.lenient = if fresh {
                    o.lenient
                } else {
                    slot.lenient && o.lenient
                };
                slot.enabled = o.enabled.or(slot.enabled);
                slot.settings.extend(o.settings);
                slot.scoped.extend(o.scoped);
            }
        }
        Ok(out)
    }
}
