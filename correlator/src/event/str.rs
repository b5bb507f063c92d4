//! [`Str`]: a string value held inline up to [`Str::INLINE`] bytes, shared otherwise.

use std::fmt;
use std::sync::Arc;

/// A string value: held inline when it has at most [`Str::INLINE`] bytes (most field values:
/// names, ids, categories, short paths), in a shared allocation otherwise. An inline string lives
/// inside the event's field vector, so reading it touches no other memory; build one with `.into()`
/// from `&str`, `String`, `Box<str>` or `Arc<str>`. Equality, order and hashing are those of the text.
#[derive(Clone)]
pub struct Str(StrRepr);

#[derive(Clone)]
enum StrRepr {
    Inline { len: u8, bytes: [u8; Str::INLINE] },
    Heap(Arc<str>),
}

impl Str {
    /// The longest string held inline (a `Str` is then the size of a `Vec`).
    pub const INLINE: usize = 22;

    fn inline(s: &str) -> Option<Str> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|l| usize::from(*l) <= Self::INLINE)?;
        let mut bytes = [0u8; Self::INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Str(StrRepr::Inline { len, bytes }))
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            StrRepr::Inline { len, bytes } => {
                let b = &bytes[..usize::from(*len).min(Self::INLINE)];
                // Built from a `&str` of exactly these bytes, so this never fails.
                std::str::from_utf8(b).unwrap_or_default()
            }
            StrRepr::Heap(s) => s,
        }
    }

    /// The text's bytes (no UTF-8 check: for comparisons and hashing).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            StrRepr::Inline { len, bytes } => &bytes[..usize::from(*len).min(Self::INLINE)],
            StrRepr::Heap(s) => s.as_bytes(),
        }
    }

    /// The text as an `Arc<str>` (a new allocation for an inline string, a shared one otherwise).
    pub fn to_arc(&self) -> Arc<str> {
        match &self.0 {
            StrRepr::Inline { .. } => Arc::from(self.as_str()),
            StrRepr::Heap(s) => s.clone(),
        }
    }

    /// True when the text is held inline.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, StrRepr::Inline { .. })
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for Str {
    fn default() -> Str {
        Str(StrRepr::Inline {
            len: 0,
            bytes: [0; Str::INLINE],
        })
    }
}

impl PartialEq for Str {
    #[inline]
    fn eq(&self, other: &Str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Str {}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str::inline(s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Str {
        Str::from(s.as_str())
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str::inline(&s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<Box<str>> for Str {
    fn from(s: Box<str>) -> Str {
        Str::inline(&s).unwrap_or_else(|| Str(StrRepr::Heap(Arc::from(s))))
    }
}

impl From<std::borrow::Cow<'_, str>> for Str {
    fn from(s: std::borrow::Cow<'_, str>) -> Str {
        match s {
            std::borrow::Cow::Borrowed(b) => Str::from(b),
            std::borrow::Cow::Owned(o) => Str::from(o),
        }
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Str {
        Str::inline(&s).unwrap_or(Str(StrRepr::Heap(s)))
    }
}

impl From<&Arc<str>> for Str {
    fn from(s: &Arc<str>) -> Str {
        Str::inline(s).unwrap_or_else(|| Str(StrRepr::Heap(s.clone())))
    }
}

impl From<Str> for Arc<str> {
    fn from(s: Str) -> Arc<str> {
        match s.0 {
            StrRepr::Heap(a) => a,
            StrRepr::Inline { .. } => Arc::from(s.as_str()),
        }
    }
}
