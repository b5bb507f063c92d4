//! EQL: parser, compiler and evaluators.
//!
//! - [`compile`] turns query text into a [`Query`]: field paths interned, constant patterns precompiled,
//!   case folding decided once.
//! - [`Query::matches`] evaluates an event query against one event.
//! - [`crate::runner::RuleRunner`] runs any query (event query, sequence, sample) as a streaming
//!   [`crate::Detector`]; [`batch`] runs a query over a finite list of events with pipes (the endgame
//!   conformance suite and `sensor query`).

mod ast;
pub mod batch;
mod expr;
mod lexer;
pub(crate) mod matcher;
mod parser;
pub mod sequence;

use std::fmt;

use crate::event::{Event, Field, Value};
pub(crate) use expr::{term_count, Env, Memo, Node, TermVal};

/// Bytes of a prefix or suffix used as an index key.
pub(crate) const INDEX_AFFIX: usize = 3;

/// Which EQL dialect to accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Elasticsearch EQL (7.x/8.x): `==` case-sensitive, `:` case-insensitive with wildcards.
    #[default]
    Elastic,
    /// The original endgame EQL: pipes, `join`, lineage, `=`; categories in `event_type`.
    Endgame,
}

/// Compile options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub dialect: Dialect,
    /// Make `==`, `!=`, `in`, ordering comparisons and string functions case-insensitive.
    pub case_insensitive: bool,
}

impl Options {
    pub fn elastic() -> Options {
        Options::default()
    }

    pub fn endgame(case_insensitive: bool) -> Options {
        Options {
            dialect: Dialect::Endgame,
            case_insensitive,
        }
    }
}

/// A query that could not be compiled: where, what was found, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct EqlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub expected: String,
}

impl fmt::Display for EqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)?;
        if !self.expected.is_empty() {
            write!(f, "; expected {}", self.expected)?;
        }
        Ok(())
    }
}

impl EqlError {
    pub(crate) fn at(src: &str, pos: usize, message: &str, expected: &str) -> EqlError {
        let (line, column) = lexer::line_col(src, pos);
        EqlError {
            line,
            column,
            message: message.to_string(),
            expected: expected.to_string(),
        }
    }

    /// An error that names a feature this engine does not support (so rule checks can tell them apart).
    pub fn is_unsupported(&self) -> bool {
        self.message.contains("unsupported")
    }
}

/// Category names (ASCII lower-cased) met by the compiler, numbered in order of first use; the first
/// 64 have a bit in per-event category masks ([`CatMask`]).
/// The names of [`crate::event::ECS_CATEGORIES`] come first, so their bits are the bits of
/// [`Event::category_bits`].
static CATEGORY_NAMES: std::sync::LazyLock<std::sync::RwLock<Vec<Box<str>>>> =
    std::sync::LazyLock::new(|| {
        std::sync::RwLock::new(
            crate::event::ECS_CATEGORIES
                .iter()
                .map(|c| Box::from(*c))
                .collect(),
        )
    });

/// The mask bit of a category name (interned on first use); `None` past the 64th name.
fn category_bit(name: &str) -> Option<u8> {
    let low = name.to_ascii_lowercase();
    let mut names = CATEGORY_NAMES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = match names.iter().position(|n| **n == *low) {
        Some(i) => i,
        None => {
            names.push(low.into());
            names.len() - 1
        }
    };
    u8::try_from(i).ok().filter(|b| *b < 64)
}

/// The category names that have a mask bit, with their bits (a snapshot: every query compiled
/// before the call has its categories in it).
pub(crate) fn category_bits() -> Vec<(Box<str>, u8)> {
    let names = CATEGORY_NAMES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names
        .iter()
        .take(64)
        .enumerate()
        .filter_map(|(i, n)| Some((n.clone(), u8::try_from(i).ok()?)))
        .collect()
}

/// The categories of one event, computed once for all the rules that look at it: bit `b` is set
/// when a value of `field` equals (ASCII case-insensitively) the category name numbered `b`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CatMask {
    pub(crate) field: Field,
    pub(crate) bits: u64,
}

impl CatMask {
    /// The mask of `ev`'s `field` against the names of `table` (from [`category_bits`]).
    pub(crate) fn of(ev: &Event, field: Field, table: &[(Box<str>, u8)]) -> CatMask {
        // The event's own summary of `event.category`, when exact: the ECS names have the same
        // bits in both (they are numbered first), and no other (lower-case) name of the table can
        // equal, even ignoring case, a value that is exactly an ECS name.
        if field == Event::category_field() {
            if let Some(b) = ev.category_bits() {
                return CatMask {
                    field,
                    bits: u64::from(b),
                };
            }
        }
        let mut bits = 0u64;
        // Bytes, not `&str`: an inline string needs no UTF-8 check to be compared.
        let mut add = |s: &[u8]| {
            for (n, b) in table {
                if s.eq_ignore_ascii_case(n.as_bytes()) {
                    bits |= 1 << b;
                }
            }
        };
        match ev.get(field) {
            Some(Value::Str(s)) => add(s.as_bytes()),
            Some(Value::Array(a)) => {
                for v in a.iter() {
                    if let Value::Str(s) = v {
                        add(s.as_bytes());
                    }
                }
            }
            _ => {}
        }
        CatMask { field, bits }
    }
}

/// The category test of an event filter, resolved at compile time.
#[derive(Clone, Debug)]
pub struct Category {
    field: Field,
    name: Box<str>,
    bit: Option<u8>,
}

impl Category {
    /// [`Category::matches`], answered from the event's mask when the caller computed one.
    #[inline]
    pub(crate) fn matches_env(&self, ev: &Event, env: &Env<'_>) -> bool {
        if let (Some(b), Some(m)) = (self.bit, env.cats) {
            if m.field == self.field {
                return m.bits >> b & 1 == 1;
            }
        }
        self.matches(ev)
    }

    #[inline]
    pub fn matches(&self, ev: &Event) -> bool {
        let name = self.name.as_bytes();
        match ev.get(self.field) {
            Some(Value::Str(s)) => s.as_bytes().eq_ignore_ascii_case(name),
            Some(Value::Array(a)) => a
                .iter()
                .any(|v| matches!(v, Value::Str(s) if s.as_bytes().eq_ignore_ascii_case(name))),
            _ => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `category where condition`, compiled.
#[derive(Clone, Debug)]
pub struct EventFilter {
    pub(crate) category: Option<Category>,
    pub(crate) cond: Node,
}

impl EventFilter {
    #[inline]
    pub(crate) fn matches_env(&self, ev: &Event, env: &Env<'_>) -> bool {
        if let Some(c) = &self.category {
            if !c.matches_env(ev, env) {
                return false;
            }
        }
        self.cond.is_true(ev, env)
    }

    #[inline]
    pub fn matches(&self, ev: &Event) -> bool {
        self.matches_env(ev, &Env::EMPTY)
    }

    pub(crate) fn index_terms(
        &self,
        skip: &dyn Fn(Field) -> bool,
    ) -> Option<Vec<(Field, Vec<TermVal>)>> {
        self.cond.index_terms(skip)
    }

    /// The category this filter requires (`None` for `any`).
    pub fn category(&self) -> Option<&str> {
        self.category.as_ref().map(|c| c.name())
    }
}

/// A compiled join key list.
#[derive(Clone, Debug, Default)]
pub struct Keys(pub(crate) Vec<Node>, pub(crate) Vec<bool>);

impl Keys {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One compiled sequence/sample/join step.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub filter: EventFilter,
    /// Sequence-level keys followed by this step's own keys.
    pub keys: Keys,
    pub missing: bool,
    pub fork: bool,
}

/// What kind of query this is.
#[derive(Clone, Debug)]
pub enum QueryKind {
    Event(EventFilter),
    Sequence {
        steps: Vec<StepSpec>,
        maxspan_ns: Option<i64>,
        until: Option<StepSpec>,
    },
    Sample {
        steps: Vec<StepSpec>,
    },
    Join {
        steps: Vec<StepSpec>,
        until: Option<StepSpec>,
    },
}

/// A compiled query.
#[derive(Clone, Debug)]
pub struct Query {
    pub(crate) kind: QueryKind,
    pub(crate) pipes: Vec<batch::CPipe>,
    pub(crate) lineage: Vec<(ast::Lineage, EventFilter)>,
    source: String,
    opts: Options,
}

impl Query {
    pub fn is_sequence(&self) -> bool {
        !matches!(self.kind, QueryKind::Event(_))
    }

    /// Whether an event matches an event query. Always false for sequences, samples and joins
    /// (run those through [`crate::runner::RuleRunner`] or [`batch::run`]).
    pub fn matches(&self, ev: &Event) -> bool {
        match &self.kind {
            QueryKind::Event(f) => f.matches(ev),
            _ => false,
        }
    }

    pub fn kind(&self) -> &QueryKind {
        &self.kind
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    pub fn has_pipes(&self) -> bool {
        !self.pipes.is_empty()
    }

    /// Index terms for the whole query: for a sequence, the union over every filter it evaluates
    /// (steps, missing steps, until), so the rule sees every event any of them could match.
    pub(crate) fn index_terms(
        &self,
        skip: &dyn Fn(Field) -> bool,
    ) -> Option<Vec<(Field, Vec<TermVal>)>> {
        match &self.kind {
            QueryKind::Event(f) => f.index_terms(skip),
            QueryKind::Sequence { steps, until, .. } | QueryKind::Join { steps, until } => {
                let mut out = Vec::new();
                for s in steps.iter().chain(until.iter()) {
                    out.extend(s.filter.index_terms(skip)?);
                }
                Some(out)
            }
            QueryKind::Sample { steps } => {
                let mut out = Vec::new();
                for s in steps {
                    out.extend(s.filter.index_terms(skip)?);
                }
                Some(out)
            }
        }
    }

    /// The event categories this query can look at; `None` when some step is `any`.
    pub fn categories(&self) -> Option<Vec<String>> {
        let filters: Vec<&EventFilter> = match &self.kind {
            QueryKind::Event(f) => vec![f],
            QueryKind::Sequence { steps, until, .. } | QueryKind::Join { steps, until } => steps
                .iter()
                .chain(until.iter())
                .map(|s| &s.filter)
                .collect(),
            QueryKind::Sample { steps } => steps.iter().map(|s| &s.filter).collect(),
        };
        let mut out = Vec::new();
        for f in filters {
            let c = f.category()?;
            if !out.iter().any(|o: &String| o.eq_ignore_ascii_case(c)) {
                out.push(c.to_ascii_lowercase());
            }
        }
        Some(out)
    }
}

/// Compiles `query` under `opts`.
// Over 100 lines on purpose: the compiler's passes (parse, validate, pipes, lineage subqueries) in order on one query.
pub fn compile(query: &str, opts: &Options) -> Result<Query, EqlError> {
    let ast = parser::parse(query, opts.dialect)?;
    let mut c = expr::Compiler {
        src: query,
        opts: *opts,
        lineage: Vec::new(),
        vars: Vec::new(),
    };
    let cat_field = Field::intern(match opts.dialect {
        Dialect::Elastic => "event.category",
        Dialect::Endgame => "event_type",
    });
    let filter =
        |c: &mut expr::Compiler<'_>, q: &ast::EventQuery| -> Result<EventFilter, EqlError> {
            Ok(EventFilter {
                category: q.category.as_ref().map(|n| Category {
                    field: cat_field,
                    name: n.as_str().into(),
                    bit: category_bit(n),
                }),
                cond: c.compile(&q.cond)?,
            })
        };
    let steps = |c: &mut expr::Compiler<'_>,
                 by: &[ast::Expr],
                 steps: &[ast::Step]|
     -> Result<Vec<StepSpec>, EqlError> {
        let mut out = Vec::new();
        let mut arity = None;
        for s in steps {
            let mut keys = Vec::new();
            let mut nullable = Vec::new();
            for k in by.iter().chain(s.by.iter()) {
                keys.push(c.compile(k)?);
                nullable.push(
                    opts.dialect == Dialect::Endgame
                        || !matches!(
                            k,
                            ast::Expr::Field {
                                optional: false,
                                ..
                            }
                        ),
                );
            }
            if *arity.get_or_insert(keys.len()) != keys.len() {
                return Err(EqlError::at(
                    query,
                    0,
                    "every step must have the same number of join keys",
                    "matching `by` lists",
                ));
            }
            let f = filter(c, &s.query)?;
            for _ in 0..s.runs {
                out.push(StepSpec {
                    filter: f.clone(),
                    keys: Keys(keys.clone(), nullable.clone()),
                    missing: s.missing,
                    fork: s.fork,
                });
            }
        }
        Ok(out)
    };
    let kind = match &ast.body {
        ast::Body::Event(q) => QueryKind::Event(filter(&mut c, q)?),
        ast::Body::Sequence {
            by,
            maxspan_ns,
            steps: st,
            until,
        } => {
            let s = steps(&mut c, by, st)?;
            let u = match until {
                Some(u) => steps(&mut c, by, std::slice::from_ref(u))?.pop(),
                None => None,
            };
            if s.last().is_some_and(|l| l.missing) && maxspan_ns.is_none() {
                return Err(EqlError::at(
                    query,
                    0,
                    "a trailing missing event `![...]` needs `with maxspan`",
                    "`with maxspan=...`",
                ));
            }
            QueryKind::Sequence {
                steps: s,
                maxspan_ns: *maxspan_ns,
                until: u,
            }
        }
        ast::Body::Sample { by, steps: st } => QueryKind::Sample {
            steps: steps(&mut c, by, st)?,
        },
        ast::Body::Join {
            by,
            steps: st,
            until,
        } => {
            let s = steps(&mut c, by, st)?;
            let u = match until {
                Some(u) => steps(&mut c, by, std::slice::from_ref(u))?.pop(),
                None => None,
            };
            QueryKind::Join { steps: s, until: u }
        }
    };
    let mut pipes = Vec::new();
    for p in &ast.pipes {
        pipes.push(batch::compile_pipe(&mut c, p)?);
    }
    if opts.dialect == Dialect::Elastic
        && !pipes.is_empty()
        && !matches!(
            ast.pipes.as_slice(),
            [ast::Pipe::Head(_) | ast::Pipe::Tail(_), ..]
        )
    {
        // Elasticsearch only has head/tail; keep the others (they are harmless) but they are endgame features.
    }
    // Lineage subqueries (may nest).
    let mut lineage = Vec::new();
    let mut i = 0;
    while i < c.lineage.len() {
        let (kind, q) = c.lineage[i].clone();
        let f = filter(&mut c, &q)?;
        lineage.push((kind, f));
        i += 1;
    }
    Ok(Query {
        kind,
        pipes,
        lineage,
        source: query.to_string(),
        opts: *opts,
    })
}

/// Evaluates an expression with no event (constants only; fields are null): the folding tables.
pub fn eval_constant(expression: &str, opts: &Options) -> Result<Value, EqlError> {
    let src = format!("any where {expression}");
    let ast = parser::parse(&src, opts.dialect)?;
    let ast::Body::Event(q) = ast.body else {
        return Err(EqlError::at(&src, 0, "not an expression", "an expression"));
    };
    let mut c = expr::Compiler {
        src: &src,
        opts: *opts,
        lineage: Vec::new(),
        vars: Vec::new(),
    };
    let node = c.compile(&q.cond)?;
    Ok(node.eval(&Event::default(), &Env::EMPTY).into_owned())
}

#[cfg(test)]
mod tests;
