//! Interned field paths: a per-thread cache in front of one shared table, bounded by [`MAX_FIELDS`]
//! paths, [`MAX_FIELD_BYTES`] bytes of names, and [`MAX_FIELD_PATH_BYTES`] per path.

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
    /// Bytes of the names in `names`.
    bytes: usize,
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| RwLock::new(Interner::default()));

/// Most distinct field paths the process interns. Field names come from outside data (an agent
/// can send any JSON keys, auditd any `key=value`), so the table is bounded: past the limit, a new
/// path is interned as [`Field::OVERFLOW_NAME`] instead (the record's original text still holds it)
/// and counted ([`Field::overflowed`]). About 100 bytes per entry: ~25 MiB at the limit.
pub const MAX_FIELDS: usize = 262_144;

/// Longest field path interned; a longer one is [`Field::OVERFLOW_NAME`] (and counted), so that
/// neither the table nor the per-thread caches ever hold an outsider's 100 kB key.
pub const MAX_FIELD_PATH_BYTES: usize = 512;

/// Most bytes of field names the table holds; past it new paths are [`Field::OVERFLOW_NAME`].
pub const MAX_FIELD_BYTES: usize = 16 << 20;

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
        if path.len() > MAX_FIELD_PATH_BYTES {
            return Field::overflow(path, "field name too long: kept as `_overflow`");
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
        if guard.names.len() + 1 >= MAX_FIELDS || guard.bytes + path.len() > MAX_FIELD_BYTES {
            Field::count_overflow(
                path,
                "field table full: new field names are kept as `_overflow`",
            );
            return Field::push(&mut guard, Field::OVERFLOW_NAME);
        }
        Field::push(&mut guard, path)
    }

    /// Counts a path turned into [`Field::OVERFLOW_NAME`], with a warning now and then.
    fn count_overflow(path: &str, why: &'static str) {
        let n = OVERFLOWED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(10_000) {
            let shown: String = path.chars().take(64).collect();
            tracing::warn!(
                message = why,
                max_fields = MAX_FIELDS,
                max_bytes = MAX_FIELD_BYTES,
                max_path_bytes = MAX_FIELD_PATH_BYTES,
                field_start = %shown,
                field_bytes = path.len(),
                overflowed = n + 1
            );
        }
    }

    /// The overflow field, for `path` refused before the table is looked at.
    fn overflow(path: &str, why: &'static str) -> Field {
        static OVERFLOW: std::sync::OnceLock<Field> = std::sync::OnceLock::new();
        Field::count_overflow(path, why);
        *OVERFLOW.get_or_init(|| {
            let mut guard = INTERNER
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Field::push(&mut guard, Field::OVERFLOW_NAME)
        })
    }

    /// Adds `path` to the table (or finds it, for the overflow name).
    fn push(guard: &mut Interner, path: &str) -> Field {
        if let Some(&id) = guard.ids.get(path) {
            return Field(id);
        }
        let id = u32::try_from(guard.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(path);
        guard.bytes += path.len();
        guard.names.push(name.clone());
        guard.ids.insert(name, id);
        Field(id)
    }

    /// The path new fields get once the table is full ([`MAX_FIELDS`], [`MAX_FIELD_BYTES`]) and
    /// paths longer than [`MAX_FIELD_PATH_BYTES`] get.
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
