//! Export and import of a runner's state: its reorder buffer and its engine's pending state.

use std::cmp::Reverse;

use serde_json::{json, Value as Json};

use super::{Engine, Item, Reorder, RuleRunner};
use crate::checkpoint::{EventTable, Events};

impl Reorder {
    /// Buffered events in release order, and the marks that decide what is late.
    pub fn export_state(&self, tab: &mut EventTable) -> Json {
        let mut items: Vec<&Item> = self.heap.iter().map(|Reverse(i)| i).collect();
        items.sort_by_key(|i| (i.0, i.1));
        let evs: Vec<usize> = items.iter().map(|i| tab.add(&i.2)).collect();
        json!({"e": evs, "max": self.max_seen, "rel": self.released})
    }

    pub fn import_state(&mut self, v: &Json, evs: &Events) -> Result<(), String> {
        self.heap.clear();
        self.seq = 0;
        for i in v.get("e").and_then(Json::as_array).into_iter().flatten() {
            let ev = evs.get(i)?;
            self.seq += 1;
            self.heap.push(Reverse(Item(ev.timestamp_ns, self.seq, ev)));
        }
        self.max_seen = v.get("max").and_then(Json::as_i64).unwrap_or(i64::MIN);
        self.released = v.get("rel").and_then(Json::as_i64).unwrap_or(i64::MIN);
        Ok(())
    }
}

impl RuleRunner {
    /// The runner's state (events in `tab`); `Null` for a single-event rule with nothing held.
    pub fn export_state_with(&self, tab: &mut EventTable) -> Json {
        let engine = match &self.engine {
            Engine::Event => Json::Null,
            Engine::Sequence(s) => s.export_state(tab),
            Engine::Sample(s) => s.export_state(tab),
        };
        let reorder = self
            .reorder
            .as_ref()
            .map_or(Json::Null, |r| r.export_state(tab));
        json!({"engine": engine, "reorder": reorder, "last": self.last_ts})
    }

    pub fn import_state_with(&mut self, v: &Json, evs: &Events) -> Result<(), String> {
        let engine = v.get("engine").unwrap_or(&Json::Null);
        match &mut self.engine {
            Engine::Event => {}
            Engine::Sequence(s) => s.import_state(engine, evs)?,
            Engine::Sample(s) => s.import_state(engine, evs)?,
        }
        if let (Some(r), Some(rv)) = (self.reorder.as_mut(), v.get("reorder")) {
            if !rv.is_null() {
                r.import_state(rv, evs)?;
            }
        }
        self.last_ts = v.get("last").and_then(Json::as_i64).unwrap_or(i64::MIN);
        Ok(())
    }
}
