//! Compiled expressions: a tree of nodes with field paths interned, constant patterns precompiled and case
//! folding decided at compile time. Evaluation borrows from the event wherever it can.

use std::borrow::Cow;

use super::ast::{ArithOp, CmpOp};
use super::matcher::PatternSet;
use crate::event::{Event, Field, Value};

mod compile;
mod eval;
mod functions;

pub(crate) use compile::Compiler;
pub(crate) use functions::Func;

type V<'a> = Cow<'a, Value>;

static NULL: Value = Value::Null;

/// Answers endgame lineage tests (`descendant of [...]`) during evaluation.
pub(crate) trait LineageOracle {
    fn check(&self, index: usize, ev: &Event) -> Option<bool>;
}

pub(crate) struct Env<'a> {
    pub(crate) lineage: Option<&'a dyn LineageOracle>,
    /// Values bound by `arraySearch` lambdas.
    pub(crate) vars: &'a [(Box<str>, Value)],
    /// The event's categories as a bit mask, when the caller computed it once for the event.
    pub(crate) cats: Option<super::CatMask>,
    /// Results of shared terms already evaluated on this event (by other rules of a rule set).
    pub(crate) memo: Option<&'a Memo>,
}

impl Env<'_> {
    pub(crate) const EMPTY: Env<'static> = Env {
        lineage: None,
        vars: &[],
        cats: None,
        memo: None,
    };
}

/// Numbers the memoisable terms of every compiled query by their structure, so that the same term
/// in two rules (`event.type == "start"`, `host.os.type == "linux"`) has one number.
static TERMS: std::sync::LazyLock<std::sync::RwLock<std::collections::HashMap<String, u32>>> =
    std::sync::LazyLock::new(Default::default);

fn term_slot(key: String) -> u32 {
    let mut t = TERMS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = u32::try_from(t.len()).unwrap_or(u32::MAX);
    *t.entry(key).or_insert(n)
}

/// How many terms have a number (every query compiled so far has its terms below it).
pub(crate) fn term_count() -> usize {
    TERMS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

/// Per-event results of numbered terms: each cell holds the event generation and the three-valued
/// result, so moving to the next event is one increment, not a clear.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    generation: std::cell::Cell<u32>,
    cells: Vec<std::cell::Cell<u32>>,
}

impl Memo {
    /// Room for every term numbered so far.
    pub(crate) fn with_terms(n: usize) -> Memo {
        Memo {
            generation: std::cell::Cell::new(1),
            cells: vec![std::cell::Cell::new(0); n],
        }
    }

    /// Forgets the results of the previous event.
    pub(crate) fn next_event(&self) {
        let g = self.generation.get() + 1;
        if g >= 1 << 30 {
            for c in &self.cells {
                c.set(0);
            }
            self.generation.set(1);
        } else {
            self.generation.set(g);
        }
    }

    #[inline]
    fn test(&self, slot: u32, node: &Node, ev: &Event, env: &Env<'_>) -> Option<bool> {
        let Some(cell) = self.cells.get(slot as usize) else {
            return node.test(ev, env);
        };
        let v = cell.get();
        let g = self.generation.get();
        if v >> 2 == g {
            return match v & 3 {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            };
        }
        let r = node.test(ev, env);
        let code = match r {
            Some(true) => 1,
            Some(false) => 2,
            None => 3,
        };
        cell.set(g << 2 | code);
        r
    }
}

/// A value of an index term: a lower-cased string, prefix or suffix, or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TermVal {
    Str(String),
    Prefix(String),
    Suffix(String),
    Int(i64),
}

#[derive(Debug, Clone)]
pub(crate) enum PathStep {
    Index(i64),
    Name(Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(Value),
    Field(Field),
    Path(Field, Box<[PathStep]>),
    Var(Box<str>),
    Not(Box<Node>),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    /// `x == null` (negate: `x != null`).
    IsNull(Box<Node>, bool),
    Cmp {
        op: CmpOp,
        l: Box<Node>,
        r: Box<Node>,
        ci: bool,
        endgame: bool,
    },
    /// A value tested against constant string patterns (`==`/`:`/`like`/`regex`/`in` with literals).
    Strings {
        arg: Box<Node>,
        set: PatternSet,
        negate: bool,
        extra: Box<[Value]>,
    },
    In {
        arg: Box<Node>,
        list: Box<[Node]>,
        ci: bool,
        negate: bool,
    },
    Arith(ArithOp, Box<Node>, Box<Node>),
    Neg(Box<Node>),
    Call(Func, Box<[Node]>, bool),
    /// `arraySearch(array, var, cond)` (or `arrayCount` when the flag is set).
    ArraySearch(Box<Node>, Box<str>, Box<Node>, bool),
    /// Endgame: a field that may name a nested object (flattened in the event).
    FieldObj(Field, Box<str>),
    VarPath(Box<str>, Box<[PathStep]>),
    Lineage(usize),
    /// A test that depends on the event only, numbered so that its result is computed once per
    /// event for all the rules that contain it (see [`Memo`]).
    Memo(u32, Box<Node>),
}
