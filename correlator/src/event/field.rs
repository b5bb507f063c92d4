//! Interned field paths: a per-thread cache in front of one shared table, bounded by [`MAX_FIELDS`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

/// An interned ECS field path such as `process.name`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Field(pub(super) u32);

#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| RwLock::new(Interner::default()));

/// Most distinct field paths the process interns. Field names come from outside data (an agent
/// can send any JSON keys, auditd any `key=value`), so the table is bounded: past the limit, a new
/// path is interned as [`Field::OVERFLOW_NAME`] instead (the record's original text still holds it)
/// and counted ([`Field::overflowed`]). About 100 bytes per entry: ~25 MiB at the limit.
pub const MAX_FIELDS: usize = 262_144;

static OVERFLOWED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Field {
    /// Interns `path` (idempotent) and returns its id.
    pub fn intern(path: &str) -> Field {
        // A per-thread cache in front of the shared table: decoders intern every path of every
        // event, and the shared read lock would otherwise be taken once per field.
        // ahash: the keys are short dotted paths, hashed once per field of every decoded event.
        thread_local! {
            static CACHE: std::cell::RefCell<HashMap<Box<str>, u32, ahash::RandomState>> =
                std::cell::RefCell::new(HashMap::default());
        }
        if let Some(id) = CACHE.with(|c| c.borrow().get(path).copied()) {
            return Field(id);
        }
        let f = Field::intern_shared(path);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            // Bounded: outside data can carry any number of distinct paths.
            if c.len() >= 16_384 {
                c.clear();
            }
            c.insert(Box::from(path), f.0);
        });
        f
    }

    fn intern_shared(path: &str) -> Field {
        {
            let guard = INTERNER
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(&id) = guard.ids.get(path) {
                return Field(id);
            }
        }
        let mut guard = INTERNER
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&id) = guard.ids.get(path) {
            return Field(id);
        }
        if guard.names.len() + 1 >= MAX_FIELDS {
            let n = OVERFLOWED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(10_000) {
                tracing::warn!(
                    message = "field table full: new field names are kept as `_overflow`",
                    limit = MAX_FIELDS,
                    field = path,
                    overflowed = n + 1
                );
            }
            return Field::push(&mut guard, Field::OVERFLOW_NAME);
        }
        Field::push(&mut guard, path)
    }

    /// Adds `path` to the table (or finds it, for the overflow name).
    fn push(guard: &mut Interner, path: &str) -> Field {
        if let Some(&id) = guard.ids.get(path) {
            return Field(id);
        }
        let id = u32::try_from(guard.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(path);
        guard.names.push(name.clone());
        guard.ids.insert(name, id);
        Field(id)
    }

    /// The path new fields get once the table holds [`MAX_FIELDS`] paths.
    pub const OVERFLOW_NAME: &'static str = "_overflow";

    /// How many times a new field path was turned into [`Field::OVERFLOW_NAME`].
    pub fn overflowed() -> u64 {
        OVERFLOWED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The dotted path this field was interned from.
    pub fn name(self) -> Arc<str> {
        let guard = INTERNER
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .names
            .get(self.0 as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from("<unknown>"))
    }

    /// The raw id, for dense per-field tables.
    pub fn id(self) -> u32 {
        self.0
    }

    /// Runs `f` with the names of all interned fields, indexed by id, from a per-thread copy of the
    /// shared table (refreshed when a field is newer than the copy), so that a hot path (writing
    /// events as JSON) takes no lock and clones no name per field. `None` when `max` is not interned
    /// or the per-thread copy would be too large.
    pub(super) fn with_names<R>(max: Field, f: impl FnOnce(&[Arc<str>]) -> R) -> Option<R> {
        const MAX_CACHED: usize = 1 << 20;
        thread_local! {
            static NAMES: std::cell::RefCell<Vec<Arc<str>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let want = max.0 as usize + 1;
        if want > MAX_CACHED {
            return None;
        }
        NAMES.with(|c| {
            let mut names = c.borrow_mut();
            if names.len() < want {
                let guard = INTERNER
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if guard.names.len() < want {
                    return None;
                }
                let from = names.len();
                let to = guard.names.len().min(MAX_CACHED);
                names.extend(guard.names[from..to].iter().cloned());
            }
            Some(f(&names))
        })
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({})", self.name())
    }
}
