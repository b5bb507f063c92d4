//! A loaded set of analytics with their effective settings, and the detector state the daemon saves
//! and restores.

use std::collections::BTreeMap;

use super::{scope, Analytic, AnalyticError, EqlCompiler, Overrides, SettingValue, BUNDLED};
use crate::detect::StateError;
use crate::Detector;

/// A loaded set of analytics with their effective settings.
pub struct AnalyticSet {
    pub entries: Vec<Entry>,
}

pub struct Entry {
    pub analytic: Analytic,
    pub enabled: bool,
    pub values: BTreeMap<String, SettingValue>,
    /// Names of the settings whose value came from the config.
    pub overridden: Vec<String>,
    /// Per scope: which events, and the values there (`values` overlaid by the scope's).
    pub scopes: Vec<scope::ScopedValues>,
}

impl AnalyticSet {
    /// The bundled analytics, with `extra` files (name, text) replacing bundled ones of the same id or
    /// adding new ones, then `overrides` applied.
    pub fn load(
        extra: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<AnalyticSet, AnalyticError> {
        let mut list: Vec<Analytic> = Vec::new();
        for (file, text) in BUNDLED {
            list.push(Analytic::parse(file, text)?);
        }
        for (file, text) in extra {
            let a = Analytic::parse(file, text)?;
            match list.iter_mut().find(|x| x.meta.id == a.meta.id) {
                Some(slot) => *slot = a,
                None => list.push(a),
            }
        }
        AnalyticSet::new(list, overrides)
    }

    pub fn new(list: Vec<Analytic>, overrides: &Overrides) -> Result<AnalyticSet, AnalyticError> {
        for (id, o) in &overrides.analytics {
            if !o.lenient && !list.iter().any(|a| &a.meta.id == id) {
                return Err(AnalyticError::UnknownAnalytic(
                    id.clone(),
                    list.iter()
                        .map(|a| a.meta.id.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        }
        let mut entries = Vec::new();
        for analytic in list {
            let mut values = analytic.default_values();
            let mut overridden = Vec::new();
            let mut enabled = true;
            if let Some(o) = overrides.analytics.get(&analytic.meta.id) {
                enabled = o.enabled.unwrap_or(true);
                for (name, v) in &o.settings {
                    let Some(spec) = analytic.settings.iter().find(|s| &s.name == name) else {
                        return Err(AnalyticError::UnknownSetting {
                            analytic: analytic.meta.id.clone(),
                            setting: name.clone(),
                            known: analytic
                                .settings
                                .iter()
                                .map(|s| s.name.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    };
                    let val =
                        SettingValue::from_toml(spec.ty, v, Some(&spec.default)).map_err(|e| {
                            AnalyticError::Setting {
                                analytic: analytic.meta.id.clone(),
                                setting: name.clone(),
                                error: format!("{e} (declared type {})", spec.ty.as_str()),
                            }
                        })?;
                    values.insert(name.clone(), val);
                    overridden.push(name.clone());
                }
            }
            let scopes = match overrides.analytics.get(&analytic.meta.id) {
                Some(o) => scope::resolve(&analytic, &values, &o.scoped)?,
                None => Vec::new(),
            };
            entries.push(Entry {
                analytic,
                enabled,
                values,
                overridden,
                scopes,
            });
        }
        Ok(AnalyticSet { entries })
    }

    /// Detectors of every enabled analytic.
    pub fn detectors(
        &self,
        eql: &dyn EqlCompiler,
    ) -> Result<Vec<Box<dyn Detector>>, AnalyticError> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.enabled) {
            out.extend(scope::build(e, eql)?);
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.analytic.meta.id == id)
    }
}

/// Collects every detector's persistent state, keyed by detector id (for the daemon to store).
pub fn save_states<'a>(
    detectors: impl IntoIterator<Item = &'a (dyn Detector + 'static)>,
) -> serde_json::Map<String, serde_json::Value> {
    detectors
        .into_iter()
        .filter_map(|d| d.save_state().map(|s| (d.id().to_string(), s)))
        .collect()
}

/// Hands saved states back to the detectors with the same ids; states of detectors no longer loaded are
/// ignored (and returned by name so the caller can log them).
pub fn restore_states<'a>(
    detectors: impl IntoIterator<Item = &'a mut (dyn Detector + 'static)>,
    states: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, StateError> {
    let mut used = std::collections::HashSet::new();
    for d in detectors {
        if let Some((id, st)) = states.get_key_value(d.id()) {
            d.restore_state(st)?;
            used.insert(id.as_str());
        }
    }
    Ok(states
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect())
}
