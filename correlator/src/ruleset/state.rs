//! Export and import of a rule set's state: the shared reorder buffer and each rule's runner,
//! matched by rule id on import. A rule whose query, language or options differ from the exported
//! one starts empty (as on a hot reload that changed it); a rule no longer in the set is dropped.

use serde_json::{json, Value as Json};

use super::{RuleSet, Slot};
use crate::checkpoint::{check_version, invalid, EventTable, Events, STATE_VERSION};
use crate::detect::StateError;

/// What identifies a rule's compiled form: state is only carried over to the same one.
fn fingerprint(s: &Slot) -> String {
    format!(
        "{}\u{0}{}\u{0}{:?}",
        s.def.language, s.def.query, s.def.options
    )
}

impl RuleSet {
    pub(super) fn export(&self) -> Json {
        let mut tab = EventTable::default();
        let reorder = self.reorder.export_state(&mut tab);
        let rules: Vec<Json> = self
            .slots
            .iter()
            .filter(|s| s.runner.is_sequence())
            .map(|s| {
                json!({
                    "id": s.def.meta.id,
                    "fp": fingerprint(s),
                    "runner": s.runner.export_state_with(&mut tab),
                })
            })
            .collect();
        json!({
            "v": STATE_VERSION,
            "events": tab.into_json(),
            "reorder": reorder,
            "last": self.last_ts,
            "rules": rules,
        })
    }

    pub(super) fn import(&mut self, state: &Json) -> Result<(), StateError> {
        const ID: &str = "eql-ruleset";
        let st = check_version(ID, state)?;
        let evs = Events::decode(st.get("events")).map_err(|e| invalid(ID, e))?;
        if let Some(r) = st.get("reorder") {
            self.reorder
                .import_state(r, &evs)
                .map_err(|e| invalid(ID, format!("reorder buffer: {e}")))?;
        }
        self.last_ts = st.get("last").and_then(Json::as_i64).unwrap_or(i64::MIN);
        let mut skipped = Vec::new();
        for r in st
            .get("rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let id = r.get("id").and_then(Json::as_str).unwrap_or_default();
            let fp = r.get("fp").and_then(Json::as_str).unwrap_or_default();
            match self.slots.iter_mut().find(|s| s.def.meta.id == id) {
                Some(slot) if fingerprint(slot) == fp => slot
                    .runner
                    .import_state_with(r.get("runner").unwrap_or(&Json::Null), &evs)
                    .map_err(|e| invalid(ID, format!("rule `{id}`: {e}")))?,
                _ => skipped.push(id.to_string()),
            }
        }
        if !skipped.is_empty() {
            tracing::info!(rules = ?skipped, "rule set state: rules changed or removed since the checkpoint start empty");
        }
        Ok(())
    }
}
