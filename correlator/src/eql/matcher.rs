//! Precompiled string matchers: exact, prefix, suffix, substring, wildcard and regex, each with its case
//! folding done at compile time. Case-insensitive matching of ASCII values never allocates.

use std::borrow::Cow;
/// aHash: the set is probed once per event per pattern set.
type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;

use regex::Regex;

/// Lower-cases `s` only when it needs it.
pub(crate) fn fold(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    /// `*` alone: anything.
    Any,
    Glob(Box<[u8]>),
    Regex(Regex),
}

/// One compiled pattern. For case-insensitive patterns the text is stored lower-cased.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    kind: Kind,
    ci: bool,
}

impl Pattern {
    pub(crate) fn exact(p: &str, ci: bool) -> Pattern {
        let p = if ci {
            fold(p).into_owned()
        } else {
            p.to_string()
        };
        Pattern {
            kind: Kind::Exact(p.into()),
            ci,
        }
    }

    /// A wildcard pattern: `*` any run of characters, `?` one character (when `question` is set).
    pub(crate) fn wildcard(p: &str, ci: bool, question: bool) -> Pattern {
        let p = if ci {
            fold(p).into_owned()
        } else {
            p.to_string()
        };
        let has_q = question && p.contains('?');
        let stars = p.matches('*').count();
        let kind = if has_q {
            let bytes: Vec<u8> = p.bytes().map(|b| if b == b'?' { 1 } else { b }).collect();
            Kind::Glob(bytes.into())
        } else if stars == 0 {
            Kind::Exact(p.into())
        } else if p.bytes().all(|b| b == b'*') {
            Kind::Any
        } else if stars == 1 && p.ends_with('*') {
            Kind::Prefix(p[..p.len() - 1].into())
        } else if stars == 1 && p.starts_with('*') {
            Kind::Suffix(p[1..].into())
        } else if stars == 2 && p.starts_with('*') && p.ends_with('*') && p.len() > 2 {
            Kind::Contains(p[1..p.len() - 1].into())
        } else {
            Kind::Glob(p.into_bytes().into())
        };
        Pattern { kind, ci }
    }

    pub(crate) fn regex(p: &str, ci: bool) -> Result<Pattern, regex::Error> {
        let src = if ci {
            format!("(?is)^(?:{p})$")
        } else {
            format!("(?s)^(?:{p})$")
        };
        let re = regex::RegexBuilder::new(&src).size_limit(1 << 22).build()?;
        Ok(Pattern {
            kind: Kind::Regex(re),
            ci: false,
        })
    }

    /// A regex searched anywhere in the value (endgame `match`).
    pub(crate) fn regex_search(p: &str, ci: bool) -> Result<Pattern, regex::Error> {
        let src = if ci {
            format!("(?i){p}")
        } else {
            p.to_string()
        };
        let re = regex::RegexBuilder::new(&src).size_limit(1 << 22).build()?;
        Ok(Pattern {
            kind: Kind::Regex(re),
            ci: false,
        })
    }

    pub(crate) fn exact_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Exact(s) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        if self.ci && !s.is_ascii() {
            let f = s.to_lowercase();
            return self.match_cs(&f);
        }
        if self.ci {
            self.match_ascii_ci(s.as_bytes())
        } else {
            self.match_cs(s)
        }
    }

    /// [`Pattern::is_match`] of an ASCII text given as bytes (no UTF-8 check needed).
    #[inline]
    fn is_match_ascii(&self, s: &[u8]) -> bool {
        if self.ci {
            return self.match_ascii_ci(s);
        }
        match &self.kind {
            Kind::Exact(p) => s == p.as_bytes(),
            Kind::Prefix(p) => s.starts_with(p.as_bytes()),
            Kind::Suffix(p) => s.ends_with(p.as_bytes()),
            Kind::Contains(p) => memchr::memmem::find(s, p.as_bytes()).is_some(),
            Kind::Any => true,
            Kind::Glob(p) => glob(p, s, false),
            Kind::Regex(r) => std::str::from_utf8(s).is_ok_and(|t| r.is_match(t)),
        }
    }

    fn match_cs(&self, s: &str) -> bool {
        match &self.kind {
            Kind::Exact(p) => s == &**p,
            Kind::Prefix(p) => s.starts_with(&**p),
            Kind::Suffix(p) => s.ends_with(&**p),
            Kind::Contains(p) => memchr::memmem::find(s.as_bytes(), p.as_bytes()).is_some(),
            Kind::Any => true,
            Kind::Glob(p) => glob(p, s.as_bytes(), false),
            Kind::Regex(r) => r.is_match(s),
        }
    }

    fn match_ascii_ci(&self, s: &[u8]) -> bool {
        match &self.kind {
            Kind::Exact(p) => s.eq_ignore_ascii_case(p.as_bytes()),
            Kind::Prefix(p) => {
                s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            Kind::Suffix(p) => {
                s.len() >= p.len() && s[s.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
            }
            Kind::Contains(p) => contains_ci(s, p.as_bytes()),
            Kind::Any => true,
            Kind::Glob(p) => glob(p, s, true),
            Kind::Regex(r) => std::str::from_utf8(s).is_ok_and(|t| r.is_match(t)),
        }
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.len() < needle.len() {
        return false;
    }
    let first = needle[0];
    let upper = first.to_ascii_uppercase();
    for i in 0..=hay.len() - needle.len() {
        let c = hay[i];
        if (c == first || c == upper) && hay[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            return true;
        }
    }
    false
}

/// Wildcard match: `*` any run, byte 1 one UTF-8 character. Pattern bytes are lower-case when `ci`.
fn glob(p: &[u8], s: &[u8], ci: bool) -> bool {
    if ci {
        glob_utf8(p, s, 1, |a, b| a == b.to_ascii_lowercase())
    } else {
        glob_utf8(p, s, 1, |a, b| a == b)
    }
}

/// Wildcard match over UTF-8 bytes, without copying either side: `*` any run, the pattern byte
/// `one` any one character (the text steps over a whole character for it, and the retry after a
/// `*` does too), any other pattern byte compared by `eq(pattern byte, text byte)`. An ASCII byte
/// of the pattern never equals a byte of a multibyte character, so on ASCII patterns this is the
/// same as matching characters. Shared by EQL (`one` = 1) and the analytics' `glob_match` (`?`).
#[inline]
pub(crate) fn glob_utf8(p: &[u8], s: &[u8], one: u8, eq: impl Fn(u8, u8) -> bool) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
            continue;
        }
        if pi < p.len() && p[pi] == one {
            pi += 1;
            si += utf8_len(s[si]);
            continue;
        }
        if pi < p.len() && eq(p[pi], s[si]) {
            pi += 1;
            si += 1;
            continue;
        }
        match star {
            Some((sp, ss)) => {
                let next = ss + utf8_len(s[ss]);
                star = Some((sp, next));
                pi = sp + 1;
                si = next;
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len() && si <= s.len()
}

fn utf8_len(b: u8) -> usize {
    match b {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

/// A set of patterns tested together; exact strings go into a hash set when there are many.
#[derive(Debug, Clone)]
pub(crate) struct PatternSet {
    exact: HashSet<Box<str>>,
    ci_exact: bool,
    others: Vec<Pattern>,
}

impl PatternSet {
    pub(crate) fn new(patterns: Vec<Pattern>) -> PatternSet {
        let mut exact = HashSet::default();
        let mut others = Vec::new();
        // Only hash when all exact patterns share one case mode.
        let ci_modes: HashSet<bool> = patterns
            .iter()
            .filter(|p| p.exact_text().is_some())
            .map(|p| p.ci)
            .collect();
        let ci_exact = ci_modes.iter().next().copied().unwrap_or(false);
        let hash = ci_modes.len() == 1
            && patterns.iter().filter(|p| p.exact_text().is_some()).count() >= 4;
        for p in patterns {
            match p.exact_text() {
                Some(t) if hash => {
                    exact.insert(t.into());
                }
                _ => others.push(p),
            }
        }
        PatternSet {
            exact,
            ci_exact,
            others,
        }
    }

    /// A rough cost of one test (for ordering `and`/`or` operands).
    pub(crate) fn cost(&self) -> u32 {
        let hashed = u32::from(!self.exact.is_empty()) * 3;
        let others: u32 = self
            .others
            .iter()
            .map(|p| match p.kind {
                Kind::Any => 0,
                Kind::Exact(_) => 1,
                Kind::Prefix(_) | Kind::Suffix(_) => 2,
                Kind::Contains(_) => 4,
                Kind::Glob(_) => 8,
                Kind::Regex(_) => 20,
            })
            .sum();
        hashed + others
    }

    /// When every pattern is an exact string, a prefix (`abc*`) or a suffix (`*abc`): index keys,
    /// lower-cased (a superset key for a case-insensitive index). Prefixes and suffixes need at least
    /// [`super::INDEX_AFFIX`] bytes.
    pub(crate) fn index_values(&self) -> Option<Vec<super::TermVal>> {
        use super::TermVal;
        let mut out: Vec<TermVal> = self
            .exact
            .iter()
            .map(|s| TermVal::Str(fold(s).into_owned()))
            .collect();
        for p in &self.others {
            let long = |t: &str| fold(t).len() >= super::INDEX_AFFIX;
            out.push(match &p.kind {
                Kind::Exact(t) => TermVal::Str(fold(t).into_owned()),
                Kind::Prefix(t) if long(t) => TermVal::Prefix(fold(t).into_owned()),
                Kind::Suffix(t) if long(t) => TermVal::Suffix(fold(t).into_owned()),
                _ => return None,
            });
        }
        Some(out)
    }

    #[inline]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        if !self.exact.is_empty() {
            let hit = if self.ci_exact {
                self.exact.contains(&*fold(s))
            } else {
                self.exact.contains(s)
            };
            if hit {
                return true;
            }
        }
        self.others.iter().any(|p| p.is_match(s))
    }

    /// [`PatternSet::is_match`] of a string value: an ASCII text (nearly all) is matched as bytes,
    /// so an inline string is checked for UTF-8 only when the hashed exact set needs a `&str`.
    #[inline]
    pub(crate) fn is_match_str(&self, s: &crate::event::Str) -> bool {
        let b = s.as_bytes();
        if !b.is_ascii() || !self.exact.is_empty() {
            return self.is_match(s);
        }
        self.others.iter().any(|p| p.is_match_ascii(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(Pattern::wildcard("*.exe", true, true).is_match("CMD.EXE"));
        assert!(!Pattern::wildcard("*.exe", false, true).is_match("CMD.EXE"));
        assert!(Pattern::wildcard("c?d*", false, true).is_match("cmd.exe"));
        assert!(Pattern::wildcard("*a*b*c", false, true).is_match("xxaxxbxxc"));
        assert!(!Pattern::wildcard("*a*b*c", false, true).is_match("xxaxxcxxb"));
        assert!(Pattern::wildcard("*WsmProv*", true, true).is_match("c:\\wsmprovhost.exe"));
        assert!(Pattern::wildcard("é*", true, true).is_match("ÉTÉ"));
        assert!(Pattern::wildcard("/tmp/*", false, true).is_match("/tmp/x"));
        assert!(Pattern::wildcard("*", false, true).is_match(""));
        let set = PatternSet::new(
            ["a", "b", "c", "d", "e*"]
                .iter()
                .map(|p| Pattern::wildcard(p, true, true))
                .collect(),
        );
        assert!(set.is_match("D"));
        assert!(set.is_match("Echo"));
        assert!(!set.is_match("f"));
    }
}
