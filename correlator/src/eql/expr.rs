//! Compiled expressions: a tree of nodes with field paths interned, constant patterns precompiled and case
//! folding decided at compile time. Evaluation borrows from the event wherever it can.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

use super::ast::{ArithOp, CmpOp, Expr, Lit, MatchKind, PathPart};
use super::matcher::{fold, Pattern, PatternSet};
use super::{Dialect, EqlError, Options};
use crate::event::{Event, Field, Value};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Add,
    Between,
    CidrMatch,
    Concat,
    Divide,
    EndsWith,
    IndexOf,
    Length,
    Modulo,
    Multiply,
    Number,
    StartsWith,
    String,
    StringContains,
    Substring,
    Subtract,
    // endgame
    Wildcard,
    ArrayContains,
    ArrayCount,
    Match,
    MatchLite,
}

impl Func {
    fn lookup(name: &str) -> Option<Func> {
        Some(match name.to_ascii_lowercase().as_str() {
            "add" => Func::Add,
            "between" => Func::Between,
            "cidrmatch" => Func::CidrMatch,
            "concat" => Func::Concat,
            "divide" => Func::Divide,
            "endswith" => Func::EndsWith,
            "indexof" => Func::IndexOf,
            "length" => Func::Length,
            "modulo" => Func::Modulo,
            "multiply" => Func::Multiply,
            "number" => Func::Number,
            "startswith" => Func::StartsWith,
            "string" => Func::String,
            "stringcontains" => Func::StringContains,
            "substring" => Func::Substring,
            "subtract" => Func::Subtract,
            "wildcard" => Func::Wildcard,
            "arraycontains" => Func::ArrayContains,
            "arraycount" => Func::ArrayCount,
            "match" => Func::Match,
            "matchlite" => Func::MatchLite,
            _ => return None,
        })
    }

    fn arity(self) -> (usize, usize) {
        match self {
            Func::Add | Func::Divide | Func::Modulo | Func::Multiply | Func::Subtract => (2, 2),
            Func::Between => (3, 5),
            Func::CidrMatch => (2, usize::MAX),
            Func::Concat => (0, usize::MAX),
            Func::EndsWith | Func::StartsWith | Func::StringContains => (2, 2),
            Func::IndexOf => (2, 3),
            Func::Length | Func::String => (1, 1),
            Func::Number => (1, 2),
            Func::Substring => (2, 3),
            Func::Wildcard | Func::ArrayContains | Func::Match | Func::MatchLite => (2, usize::MAX),
            Func::ArrayCount => (3, 3),
        }
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

pub(crate) struct Compiler<'a> {
    pub(crate) src: &'a str,
    pub(crate) opts: Options,
    /// Lineage subqueries collected while compiling (endgame).
    pub(crate) lineage: Vec<(super::ast::Lineage, super::ast::EventQuery)>,
    pub(crate) vars: Vec<String>,
}

fn lit_value(l: &Lit) -> Value {
    match l {
        Lit::Null => Value::Null,
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Int(i) => Value::Int(*i),
        Lit::Float(f) => Value::Float(*f),
        Lit::Str(s) => Value::Str(s.as_str().into()),
    }
}

fn const_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Lit(Lit::Str(s)) => Some(s),
        _ => None,
    }
}

impl Compiler<'_> {
    fn err(&self, pos: usize, what: &str, expected: &str) -> EqlError {
        EqlError::at(self.src, pos, what, expected)
    }

    fn endgame(&self) -> bool {
        self.opts.dialect == Dialect::Endgame
    }

    pub(crate) fn compile(&mut self, e: &Expr) -> Result<Node, EqlError> {
        let node = fold_const(self.compile_inner(e)?);
        Ok(match node {
            Node::And(xs) => Node::And(by_cost(xs)),
            Node::Or(xs) => Node::Or(by_cost(xs)),
            n if memoisable(&n) => {
                let slot = term_slot(format!("{n:?}"));
                Node::Memo(slot, Box::new(n))
            }
            n => n,
        })
    }

    fn compile_inner(&mut self, e: &Expr) -> Result<Node, EqlError> {
        Ok(match e {
            Expr::Lit(l) => Node::Const(lit_value(l)),
            Expr::Field { parts, .. } => self.field(parts),
            Expr::Not(x) => Node::Not(Box::new(self.compile(x)?)),
            Expr::And(a, b) => {
                let mut v = Vec::new();
                for x in [a, b] {
                    match self.compile(x)? {
                        Node::And(inner) => v.extend(inner.into_vec()),
                        n => v.push(n),
                    }
                }
                Node::And(v.into())
            }
            Expr::Or(a, b) => {
                let mut v = Vec::new();
                for x in [a, b] {
                    match self.compile(x)? {
                        Node::Or(inner) => v.extend(inner.into_vec()),
                        n => v.push(n),
                    }
                }
                Node::Or(v.into())
            }
            Expr::Cmp(op, l, r) => self.cmp(*op, l, r)?,
            Expr::In {
                expr,
                list,
                insensitive,
                negate,
            } => {
                let ci = *insensitive || self.opts.case_insensitive;
                let arg = Box::new(self.compile(expr)?);
                if list.iter().all(|x| matches!(x, Expr::Lit(_)))
                    && list.iter().any(|x| const_str(x).is_some())
                {
                    let pats = list
                        .iter()
                        .filter_map(const_str)
                        .map(|s| Pattern::exact(s, ci))
                        .collect();
                    let extra: Vec<Value> = list
                        .iter()
                        .filter_map(|x| match x {
                            Expr::Lit(l) if !matches!(l, Lit::Str(_)) => Some(lit_value(l)),
                            _ => None,
                        })
                        .collect();
                    Node::Strings {
                        arg,
                        set: PatternSet::new(pats),
                        negate: *negate,
                        extra: extra.into(),
                    }
                } else {
                    let list = list
                        .iter()
                        .map(|x| self.compile(x))
                        .collect::<Result<Vec<_>, _>>()?;
                    Node::In {
                        arg,
                        list: list.into(),
                        ci,
                        negate: *negate,
                    }
                }
            }
            Expr::Match {
                expr,
                kind,
                patterns,
                insensitive,
                pos,
            } => {
                let arg = Box::new(self.compile(expr)?);
                let ci = *insensitive || *kind == MatchKind::Colon || self.opts.case_insensitive;
                let mut pats = Vec::new();
                for p in patterns {
                    let Some(s) = const_str(p) else {
                        return Err(self.err(
                            *pos,
                            "the pattern of `:`, `like` or `regex` must be a string literal",
                            "a quoted string",
                        ));
                    };
                    pats.push(match kind {
                        MatchKind::Colon | MatchKind::Like => Pattern::wildcard(s, ci, true),
                        MatchKind::Regex => Pattern::regex(s, ci).map_err(|e| {
                            self.err(
                                *pos,
                                &format!("invalid regular expression {s:?}: {e}"),
                                "a valid regex",
                            )
                        })?,
                    });
                }
                Node::Strings {
                    arg,
                    set: PatternSet::new(pats),
                    negate: false,
                    extra: Box::new([]),
                }
            }
            Expr::Arith(op, l, r) => {
                Node::Arith(*op, Box::new(self.compile(l)?), Box::new(self.compile(r)?))
            }
            Expr::Neg(x) => Node::Neg(Box::new(self.compile(x)?)),
            Expr::Call {
                name,
                args,
                insensitive,
                pos,
            } => self.call(name, args, *insensitive, *pos)?,
            Expr::Lineage { kind, query } => {
                if !self.endgame() {
                    return Err(self.err(
                        0,
                        "lineage (`descendant of`, `child of`, `event of`) is endgame-only",
                        "the endgame dialect",
                    ));
                }
                self.lineage.push((*kind, (**query).clone()));
                Node::Lineage(self.lineage.len() - 1)
            }
        })
    }

    fn field(&mut self, parts: &[PathPart]) -> Node {
        if let Some(PathPart::Name(n)) = parts.first() {
            if self.vars.iter().any(|v| v == n) {
                if parts.len() == 1 {
                    return Node::Var(n.as_str().into());
                }
                let steps = parts[1..]
                    .iter()
                    .map(|p| match p {
                        PathPart::Index(i) => PathStep::Index(*i),
                        PathPart::Name(n) => PathStep::Name(n.as_str().into()),
                    })
                    .collect();
                return Node::VarPath(n.as_str().into(), steps);
            }
        }
        let mut name = String::new();
        let mut i = 0;
        while i < parts.len() {
            match &parts[i] {
                PathPart::Name(n) => {
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(n);
                }
                PathPart::Index(_) => break,
            }
            i += 1;
        }
        let field = Field::intern(&name);
        if i == parts.len() {
            if self.endgame() {
                return Node::FieldObj(field, name.into());
            }
            return Node::Field(field);
        }
        let rest = parts[i..]
            .iter()
            .map(|p| match p {
                PathPart::Index(i) => PathStep::Index(*i),
                PathPart::Name(n) => PathStep::Name(n.as_str().into()),
            })
            .collect();
        Node::Path(field, rest)
    }

    fn cmp(&mut self, op: CmpOp, l: &Expr, r: &Expr) -> Result<Node, EqlError> {
        let ci = self.opts.case_insensitive;
        if matches!(op, CmpOp::Eq | CmpOp::Ne) {
            let negate = op == CmpOp::Ne;
            if matches!(r, Expr::Lit(Lit::Null)) {
                return Ok(Node::IsNull(Box::new(self.compile(l)?), negate));
            }
            if matches!(l, Expr::Lit(Lit::Null)) {
                return Ok(Node::IsNull(Box::new(self.compile(r)?), negate));
            }
            let (fld, lit) = if const_str(r).is_some() {
                (l, r)
            } else {
                (r, l)
            };
            if let Some(s) = const_str(lit) {
                if !matches!(fld, Expr::Lit(_)) {
                    let pat = if self.endgame() {
                        Pattern::wildcard(s, ci, false)
                    } else {
                        Pattern::exact(s, ci)
                    };
                    let node = Node::Strings {
                        arg: Box::new(self.compile(fld)?),
                        set: PatternSet::new(vec![pat]),
                        negate,
                        extra: Box::new([]),
                    };
                    return Ok(node);
                }
            }
        }
        Ok(Node::Cmp {
            op,
            l: Box::new(self.compile(l)?),
            r: Box::new(self.compile(r)?),
            ci,
            endgame: self.endgame(),
        })
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Expr],
        insensitive: bool,
        pos: usize,
    ) -> Result<Node, EqlError> {
        if name.eq_ignore_ascii_case("safe") && args.len() == 1 {
            return self.compile(&args[0]);
        }
        let is_count = name.eq_ignore_ascii_case("arrayCount");
        if name.eq_ignore_ascii_case("arraySearch") || is_count {
            if args.len() != 3 {
                return Err(self.err(
                    pos,
                    "arraySearch takes 3 arguments",
                    "arraySearch(array, var, condition)",
                ));
            }
            let Expr::Field { parts, .. } = &args[1] else {
                return Err(self.err(
                    pos,
                    "arraySearch's second argument must be a variable name",
                    "a name",
                ));
            };
            let var = parts
                .iter()
                .map(|p| match p {
                    PathPart::Name(n) => n.clone(),
                    PathPart::Index(i) => i.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".");
            let arr = self.compile(&args[0])?;
            self.vars.push(var.clone());
            let cond = self.compile(&args[2]);
            self.vars.pop();
            return Ok(Node::ArraySearch(
                Box::new(arr),
                var.into(),
                Box::new(cond?),
                is_count,
            ));
        }
        let Some(func) = Func::lookup(name) else {
            return Err(self.err(
                pos,
                &format!("unsupported function `{name}`"),
                "a known EQL function",
            ));
        };
        let (lo, hi) = func.arity();
        if args.len() < lo || args.len() > hi {
            return Err(self.err(
                pos,
                &format!(
                    "`{name}` takes {lo}..{} arguments, got {}",
                    if hi == usize::MAX {
                        "n".to_string()
                    } else {
                        hi.to_string()
                    },
                    args.len()
                ),
                "the right number of arguments",
            ));
        }
        let ci = insensitive || self.opts.case_insensitive;
        // Precompile the patterns of `wildcard`/`match` when they are literals.
        if matches!(func, Func::Wildcard | Func::Match | Func::MatchLite)
            && args[1..].iter().all(|a| const_str(a).is_some())
        {
            let mut pats = Vec::new();
            for a in &args[1..] {
                let s = const_str(a).unwrap_or_default();
                pats.push(match func {
                    Func::Wildcard => Pattern::wildcard(s, ci, false),
                    Func::MatchLite => Pattern::regex(s, ci).map_err(|e| {
                        self.err(
                            pos,
                            &format!("invalid regular expression {s:?}: {e}"),
                            "a valid regex",
                        )
                    })?,
                    _ => Pattern::regex_search(&format!("^(?:{s})"), ci).map_err(|e| {
                        self.err(
                            pos,
                            &format!("invalid regular expression {s:?}: {e}"),
                            "a valid regex",
                        )
                    })?,
                });
            }
            return Ok(Node::Strings {
                arg: Box::new(self.compile(&args[0])?),
                set: PatternSet::new(pats),
                negate: false,
                extra: Box::new([]),
            });
        }
        let args = args
            .iter()
            .map(|a| self.compile(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Node::Call(func, args.into(), ci))
    }
}

/// Folds nodes whose children are all constants.
fn fold_const(n: Node) -> Node {
    let all_const = match &n {
        Node::Arith(_, a, b) => is_const(a) && is_const(b),
        Node::Neg(a) => is_const(a),
        Node::Call(_, args, _) => args.iter().all(is_const),
        Node::Cmp { l, r, .. } => is_const(l) && is_const(r),
        Node::Not(a) => is_const(a),
        _ => false,
    };
    if all_const {
        let ev = Event::default();
        let v = n.eval(&ev, &Env::EMPTY).into_owned();
        return Node::Const(v);
    }
    n
}

/// A test worth remembering per event: a comparison or pattern test whose result depends on the
/// event's fields only (no lambda variables, no lineage).
fn memoisable(n: &Node) -> bool {
    matches!(
        n,
        Node::Strings { .. } | Node::Cmp { .. } | Node::In { .. } | Node::IsNull(..)
    ) && event_only(n)
}

fn event_only(n: &Node) -> bool {
    match n {
        Node::Const(_) | Node::Field(_) | Node::Path(..) | Node::FieldObj(..) => true,
        Node::Var(_) | Node::VarPath(..) | Node::Lineage(_) | Node::ArraySearch(..) => false,
        Node::Not(x) | Node::IsNull(x, _) | Node::Neg(x) | Node::Memo(_, x) => event_only(x),
        Node::And(xs) | Node::Or(xs) | Node::Call(_, xs, _) => xs.iter().all(event_only),
        Node::Cmp { l, r, .. } | Node::Arith(_, l, r) => event_only(l) && event_only(r),
        Node::Strings { arg, .. } => event_only(arg),
        Node::In { arg, list, .. } => event_only(arg) && list.iter().all(event_only),
    }
}

/// Orders the operands of `and`/`or` cheapest first. Evaluation has no side effects and the
/// three-valued result of `and`/`or` does not depend on operand order, so only the cost changes.
fn by_cost(xs: Box<[Node]>) -> Box<[Node]> {
    let mut v = xs.into_vec();
    v.sort_by_key(Node::cost);
    v.into()
}

fn is_const(n: &Node) -> bool {
    matches!(n, Node::Const(_))
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Float(f) => Some(*f != 0.0),
        Value::Str(s) => Some(!s.is_empty()),
        Value::Array(a) => Some(!a.is_empty()),
        _ => Some(true),
    }
}

fn bool_val(b: Option<bool>) -> Value {
    b.map_or(Value::Null, Value::Bool)
}

impl Node {
    /// A rough static cost of evaluating the node (field lookups and string tests), used to order
    /// the operands of `and`/`or`. A term shared between rules counts as cheap: usually another
    /// rule has already computed it for the event.
    fn cost(&self) -> u32 {
        match self {
            Node::Const(_) => 0,
            Node::Memo(_, x) => 1 + x.cost() / 4,
            Node::Field(_) | Node::FieldObj(..) | Node::Var(_) => 4,
            Node::Path(..) | Node::VarPath(..) => 6,
            Node::Not(x) | Node::Neg(x) | Node::IsNull(x, _) => x.cost(),
            Node::And(xs) | Node::Or(xs) => xs.iter().map(Node::cost).sum::<u32>().max(1),
            Node::Cmp { l, r, .. } | Node::Arith(_, l, r) => l.cost() + r.cost() + 2,
            Node::Strings { arg, set, .. } => arg.cost() + set.cost(),
            Node::In { arg, list, .. } => arg.cost() + list.iter().map(Node::cost).sum::<u32>() + 2,
            Node::Call(_, xs, _) => 20 + xs.iter().map(Node::cost).sum::<u32>(),
            Node::ArraySearch(..) | Node::Lineage(_) => 200,
        }
    }

    /// Terms that must hold for this condition to be true, usable as an index: a list of
    /// `(field, lower-cased values)` such that if the condition is true, the event's field equals (case
    /// folded) one of the values of at least one entry. `None` when no such terms exist.
    pub(crate) fn index_terms(
        &self,
        skip: &dyn Fn(Field) -> bool,
    ) -> Option<Vec<(Field, Vec<TermVal>)>> {
        let field_of = |n: &Node| match n {
            Node::Field(f) | Node::FieldObj(f, _) if !skip(*f) => Some(*f),
            _ => None,
        };
        match self {
            Node::Memo(_, x) => x.index_terms(skip),
            Node::Cmp {
                op: CmpOp::Eq,
                l,
                r,
                ..
            } => match (&**l, &**r) {
                (x, Node::Const(Value::Int(i))) | (Node::Const(Value::Int(i)), x) => {
                    Some(vec![(field_of(x)?, vec![TermVal::Int(*i)])])
                }
                _ => None,
            },
            Node::In {
                arg,
                list,
                negate: false,
                ..
            } => {
                let f = field_of(arg)?;
                let vals = list
                    .iter()
                    .map(|x| match x {
                        Node::Const(Value::Int(i)) => Some(TermVal::Int(*i)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(vec![(f, vals)])
            }
            Node::Strings {
                arg,
                set,
                negate: false,
                extra,
            } if extra.is_empty() => {
                let f = match &**arg {
                    Node::Field(f) | Node::FieldObj(f, _) => *f,
                    _ => return None,
                };
                if skip(f) {
                    return None;
                }
                set.index_values().map(|v| vec![(f, v)])
            }
            Node::And(xs) => xs
                .iter()
                .filter_map(|x| x.index_terms(skip))
                .min_by_key(|t| t.iter().map(|(_, v)| v.len()).sum::<usize>()),
            Node::Or(xs) => {
                let mut out = Vec::new();
                for x in xs.iter() {
                    out.extend(x.index_terms(skip)?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Whether the condition is true (null and false are not), short-circuiting as soon as the answer
    /// is known: what a `where` needs.
    #[inline]
    pub(crate) fn is_true(&self, ev: &Event, env: &Env<'_>) -> bool {
        match self {
            Node::And(xs) => xs.iter().all(|x| x.is_true(ev, env)),
            Node::Or(xs) => xs.iter().any(|x| x.is_true(ev, env)),
            Node::Not(x) => x.is_false(ev, env),
            other => other.test(ev, env) == Some(true),
        }
    }

    /// Whether the condition is false (not null).
    #[inline]
    pub(crate) fn is_false(&self, ev: &Event, env: &Env<'_>) -> bool {
        match self {
            Node::And(xs) => xs.iter().any(|x| x.is_false(ev, env)),
            Node::Or(xs) => xs.iter().all(|x| x.is_false(ev, env)),
            Node::Not(x) => x.is_true(ev, env),
            other => other.test(ev, env) == Some(false),
        }
    }

    /// Three-valued truth: `None` is null (which a `where` treats as false).
    #[inline]
    pub(crate) fn test(&self, ev: &Event, env: &Env<'_>) -> Option<bool> {
        match self {
            Node::Memo(slot, x) => match env.memo {
                Some(m) => m.test(*slot, x, ev, env),
                None => x.test(ev, env),
            },
            Node::And(xs) => {
                let mut null = false;
                for x in xs.iter() {
                    match x.test(ev, env) {
                        Some(false) => return Some(false),
                        None => null = true,
                        Some(true) => {}
                    }
                }
                if null {
                    None
                } else {
                    Some(true)
                }
            }
            Node::Or(xs) => {
                let mut null = false;
                for x in xs.iter() {
                    match x.test(ev, env) {
                        Some(true) => return Some(true),
                        None => null = true,
                        Some(false) => {}
                    }
                }
                if null {
                    None
                } else {
                    Some(false)
                }
            }
            Node::Not(x) => x.test(ev, env).map(|b| !b),
            Node::IsNull(x, negate) => {
                let v = x.eval(ev, env);
                Some(v.is_null() != *negate)
            }
            Node::Strings {
                arg,
                set,
                negate,
                extra,
            } => {
                let v = arg.eval(ev, env);
                let hit = match &*v {
                    Value::Null => return None,
                    Value::Str(s) => set.is_match_str(s),
                    Value::Array(a) => a.iter().any(|x| match x {
                        Value::Str(s) => set.is_match_str(s),
                        other => extra.iter().any(|e| values_eq(other, e, false)),
                    }),
                    other => extra.iter().any(|e| values_eq(other, e, false)),
                };
                Some(hit != *negate)
            }
            Node::In {
                arg,
                list,
                ci,
                negate,
            } => {
                let v = arg.eval(ev, env);
                if v.is_null() {
                    return None;
                }
                let mut hit = false;
                for x in list.iter() {
                    let w = x.eval(ev, env);
                    let any = match &*v {
                        Value::Array(a) => a.iter().any(|e| values_eq(e, &w, *ci)),
                        v => values_eq(v, &w, *ci),
                    };
                    if any {
                        hit = true;
                        break;
                    }
                }
                Some(hit != *negate)
            }
            Node::Cmp {
                op,
                l,
                r,
                ci,
                endgame,
            } => {
                let a = l.eval(ev, env);
                let b = r.eval(ev, env);
                compare(*op, &a, &b, *ci, *endgame)
            }
            Node::Lineage(i) => env.lineage.and_then(|o| o.check(*i, ev)).or(Some(false)),
            Node::ArraySearch(_, _, _, true) => truth(&self.eval(ev, env)),
            Node::ArraySearch(arr, var, cond, false) => {
                let a = arr.eval(ev, env);
                let Value::Array(items) = &*a else {
                    return if a.is_null() { None } else { Some(false) };
                };
                let mut vars: Vec<(Box<str>, Value)> = env.vars.to_vec();
                vars.push((var.clone(), Value::Null));
                for item in items.iter() {
                    if let Some(last) = vars.last_mut() {
                        last.1 = item.clone();
                    }
                    let inner = Env {
                        lineage: env.lineage,
                        vars: &vars,
                        cats: env.cats,
                        memo: env.memo,
                    };
                    if cond.test(ev, &inner) == Some(true) {
                        return Some(true);
                    }
                }
                Some(false)
            }
            other => truth(&other.eval(ev, env)),
        }
    }

    pub(crate) fn eval<'a>(&'a self, ev: &'a Event, env: &Env<'_>) -> V<'a> {
        match self {
            Node::Const(v) => Cow::Borrowed(v),
            Node::Field(f) => Cow::Borrowed(ev.get(*f).unwrap_or(&NULL)),
            Node::Path(f, steps) => {
                Cow::Borrowed(ev.get(*f).and_then(|v| walk(v, steps)).unwrap_or(&NULL))
            }
            Node::VarPath(name, steps) => {
                let v = env
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| walk(v, steps))
                    .cloned();
                Cow::Owned(v.unwrap_or(Value::Null))
            }
            Node::FieldObj(f, prefix) => match ev.get(*f) {
                Some(v) => Cow::Borrowed(v),
                None => {
                    let mut items: Vec<(Arc<str>, Value)> = Vec::new();
                    for (g, v) in ev.fields() {
                        let name = g.name();
                        if let Some(rest) = name
                            .strip_prefix(&**prefix)
                            .and_then(|r| r.strip_prefix('.'))
                        {
                            items.push((Arc::from(rest), v.clone()));
                        }
                    }
                    Cow::Owned(if items.is_empty() {
                        Value::Null
                    } else {
                        Value::Object(items.into())
                    })
                }
            },
            Node::ArraySearch(arr, var, cond, true) => {
                let a = arr.eval(ev, env);
                let Value::Array(items) = &*a else {
                    return Cow::Owned(Value::Null);
                };
                let mut vars: Vec<(Box<str>, Value)> = env.vars.to_vec();
                vars.push((var.clone(), Value::Null));
                let mut n = 0;
                for item in items.iter() {
                    if let Some(last) = vars.last_mut() {
                        last.1 = item.clone();
                    }
                    let inner = Env {
                        lineage: env.lineage,
                        vars: &vars,
                        cats: env.cats,
                        memo: env.memo,
                    };
                    if cond.test(ev, &inner) == Some(true) {
                        n += 1;
                    }
                }
                Cow::Owned(Value::Int(n))
            }
            Node::Var(name) => {
                let v = env
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map_or(Value::Null, |(_, v)| v.clone());
                Cow::Owned(v)
            }
            Node::Arith(op, a, b) => Cow::Owned(arith(*op, &a.eval(ev, env), &b.eval(ev, env))),
            Node::Neg(a) => Cow::Owned(match &*a.eval(ev, env) {
                Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            }),
            Node::Call(f, args, ci) => Cow::Owned(call(*f, args, *ci, ev, env)),
            other => Cow::Owned(bool_val(other.test(ev, env))),
        }
    }
}

/// Follows index and name steps into arrays and objects. Consecutive names are tried joined first
/// (objects built from flattened events have dotted keys), then one by one (nested JSON objects).
fn walk<'v>(v: &'v Value, steps: &[PathStep]) -> Option<&'v Value> {
    let Some(first) = steps.first() else {
        return Some(v);
    };
    match (v, first) {
        (Value::Array(a), PathStep::Index(i)) => {
            let i = if *i < 0 { a.len() as i64 + *i } else { *i };
            walk(usize::try_from(i).ok().and_then(|i| a.get(i))?, &steps[1..])
        }
        (Value::Object(o), PathStep::Name(_)) => {
            let run = steps
                .iter()
                .take_while(|s| matches!(s, PathStep::Name(_)))
                .count();
            for k in (1..=run).rev() {
                let key: String = steps[..k]
                    .iter()
                    .filter_map(|s| match s {
                        PathStep::Name(n) => Some(&**n),
                        PathStep::Index(_) => None,
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some((_, inner)) = o.iter().find(|(kk, _)| **kk == *key) {
                    if let Some(found) = walk(inner, &steps[k..]) {
                        return Some(found);
                    }
                }
            }
            None
        }
        _ => None,
    }
}

fn values_eq(a: &Value, b: &Value, ci: bool) -> bool {
    compare(CmpOp::Eq, a, b, ci, false) == Some(true)
}

fn num_pair(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

pub(crate) fn compare(op: CmpOp, a: &Value, b: &Value, ci: bool, endgame: bool) -> Option<bool> {
    if a.is_null() || b.is_null() {
        // Endgame (Python) semantics: equality with null is a plain false/true; ordering is null.
        if endgame {
            return match op {
                CmpOp::Eq => Some(a.is_null() && b.is_null()),
                CmpOp::Ne => Some(a.is_null() != b.is_null()),
                _ => None,
            };
        }
        return None;
    }
    let ord = match (a, b) {
        (Value::Str(x), Value::Str(y)) => {
            let (xb, yb) = (x.as_bytes(), y.as_bytes());
            if ci && xb.is_ascii() && yb.is_ascii() {
                // ASCII (nearly all values): fold byte by byte, no UTF-8 check of inline strings.
                let low = |b: &u8| b.to_ascii_lowercase();
                Some(xb.iter().map(low).cmp(yb.iter().map(low)))
            } else if ci {
                Some(fold(x).cmp(&fold(y)))
            } else {
                Some(x.cmp(y))
            }
        }
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Array(x), _)
            if matches!(op, CmpOp::Eq | CmpOp::Ne) && !matches!(b, Value::Array(_)) =>
        {
            let any = x
                .iter()
                .any(|e| compare(CmpOp::Eq, e, b, ci, endgame) == Some(true));
            return Some(any == (op == CmpOp::Eq));
        }
        (Value::Ip(x), Value::Ip(y)) => Some(x.cmp(y)),
        (Value::Ip(x), Value::Str(y)) | (Value::Str(y), Value::Ip(x)) => {
            return y
                .parse::<IpAddr>()
                .ok()
                .map(|y| (*x == y) == (op == CmpOp::Eq))
                .filter(|_| matches!(op, CmpOp::Eq | CmpOp::Ne));
        }
        _ => num_pair(a, b),
    };
    let Some(ord) = ord else {
        return match op {
            CmpOp::Eq => Some(a == b),
            CmpOp::Ne => Some(a != b),
            _ => None,
        };
    };
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

pub(crate) fn arith(op: ArithOp, a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(*y),
                ArithOp::Sub => x.checked_sub(*y),
                ArithOp::Mul => x.checked_mul(*y),
                ArithOp::Div => {
                    if *y == 0 {
                        None
                    } else {
                        // Floor division, as the reference implementation.
                        let q = x.wrapping_div(*y);
                        Some(if (x % y != 0) && ((*x < 0) != (*y < 0)) {
                            q - 1
                        } else {
                            q
                        })
                    }
                }
                ArithOp::Mod => {
                    if *y == 0 {
                        None
                    } else {
                        Some(x.wrapping_rem(*y))
                    }
                }
            };
            r.map_or(Value::Null, Value::Int)
        }
        _ => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return Value::Null;
            };
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => {
                    if y == 0.0 {
                        return Value::Null;
                    }
                    x / y
                }
                ArithOp::Mod => {
                    if y == 0.0 {
                        return Value::Null;
                    }
                    x % y
                }
            };
            Value::Float(r)
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(_) | Value::Float(_) => v.as_f64(),
        _ => None,
    }
}

/// `string()` rendering of a value.
pub(crate) fn to_string(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Ip(ip) => ip.to_string(),
        other => other.to_json().to_string(),
    })
}

fn str_arg(v: &Value) -> Option<&str> {
    v.as_str()
}

fn call(f: Func, args: &[Node], ci: bool, ev: &Event, env: &Env<'_>) -> Value {
    let vals: Vec<V<'_>> = args.iter().map(|a| a.eval(ev, env)).collect();
    let s = |i: usize| vals.get(i).and_then(|v| str_arg(v));
    match f {
        Func::Add => arith(ArithOp::Add, &vals[0], &vals[1]),
        Func::Subtract => arith(ArithOp::Sub, &vals[0], &vals[1]),
        Func::Multiply => arith(ArithOp::Mul, &vals[0], &vals[1]),
        Func::Divide => arith(ArithOp::Div, &vals[0], &vals[1]),
        Func::Modulo => arith(ArithOp::Mod, &vals[0], &vals[1]),
        Func::Length => match &*vals[0] {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            Value::Array(a) => Value::Int(a.len() as i64),
            _ => Value::Null,
        },
        Func::String => to_string(&vals[0]).map_or(Value::Null, |s| Value::Str(s.into())),
        Func::Concat => {
            let mut out = String::new();
            for v in &vals {
                match to_string(v) {
                    Some(s) => out.push_str(&s),
                    None => return Value::Null,
                }
            }
            Value::Str(out.into())
        }
        Func::StartsWith | Func::EndsWith | Func::StringContains => {
            let (Some(a), Some(b)) = (s(0), s(1)) else {
                // Arrays: any element.
                if let (Value::Array(arr), Some(b)) = (&*vals[0], s(1)) {
                    return Value::Bool(
                        arr.iter()
                            .any(|e| e.as_str().is_some_and(|a| str_test(f, a, b, ci))),
                    );
                }
                return Value::Null;
            };
            Value::Bool(str_test(f, a, b, ci))
        }
        Func::IndexOf => {
            let (Some(a), Some(b)) = (s(0), s(1)) else {
                return Value::Null;
            };
            let start = match vals.get(2).map(|v| &**v) {
                None | Some(Value::Null) => 0,
                Some(v) => match v.as_i64() {
                    Some(i) => i.max(0) as usize,
                    None => return Value::Null,
                },
            };
            let (a, b) = if ci {
                (fold(a), fold(b))
            } else {
                (Cow::Borrowed(a), Cow::Borrowed(b))
            };
            let chars: Vec<(usize, char)> = a.char_indices().collect();
            if start > chars.len() {
                return Value::Null;
            }
            let byte_start = chars.get(start).map_or(a.len(), |(i, _)| *i);
            match a[byte_start..].find(&*b) {
                Some(off) => Value::Int(a[..byte_start + off].chars().count() as i64),
                None => Value::Null,
            }
        }
        Func::Between => {
            let (Some(src), Some(l), Some(r)) = (s(0), s(1), s(2)) else {
                return Value::Null;
            };
            let greedy = match vals.get(3).map(|v| &**v) {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Value::Null,
            };
            let ci = ci || matches!(vals.get(4).map(|v| &**v), Some(Value::Bool(true)));
            between(src, l, r, greedy, ci).map_or(Value::Null, |s| Value::Str(s.into()))
        }
        Func::Substring => {
            let Some(src) = s(0) else { return Value::Null };
            let chars: Vec<char> = src.chars().collect();
            let n = chars.len() as i64;
            let idx = |v: Option<&Value>, dflt: i64| -> Option<i64> {
                match v {
                    None | Some(Value::Null) => Some(dflt),
                    Some(v) => {
                        let i = v.as_i64()?;
                        Some(if i < 0 { (n + i).max(0) } else { i.min(n) })
                    }
                }
            };
            let (Some(a), Some(b)) = (
                idx(vals.get(1).map(|v| &**v), 0),
                idx(vals.get(2).map(|v| &**v), n),
            ) else {
                return Value::Null;
            };
            if a >= b {
                return Value::Str("".into());
            }
            Value::Str(
                chars[a as usize..b as usize]
                    .iter()
                    .collect::<String>()
                    .into(),
            )
        }
        Func::Number => {
            let v = &*vals[0];
            match v {
                Value::Int(_) | Value::Float(_) => v.clone(),
                Value::Str(t) => {
                    let base = match vals.get(1).map(|v| &**v) {
                        None | Some(Value::Null) => 10,
                        Some(b) => match b.as_i64() {
                            Some(b @ 2..=36) => b as u32,
                            _ => return Value::Null,
                        },
                    };
                    parse_number(t.trim(), base)
                }
                _ => Value::Null,
            }
        }
        Func::CidrMatch => {
            let ip = match &*vals[0] {
                Value::Str(t) => match t.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return Value::Bool(false),
                },
                Value::Ip(ip) => *ip,
                _ => return Value::Null,
            };
            Value::Bool(
                vals[1..]
                    .iter()
                    .any(|c| c.as_str().is_some_and(|c| cidr_contains(c, ip))),
            )
        }
        Func::ArrayContains => {
            let Value::Array(arr) = &*vals[0] else {
                return if vals[0].is_null() {
                    Value::Null
                } else {
                    Value::Bool(false)
                };
            };
            Value::Bool(
                vals[1..]
                    .iter()
                    .any(|w| arr.iter().any(|e| values_eq(e, w, ci))),
            )
        }
        Func::Wildcard | Func::Match | Func::MatchLite => {
            let Some(src) = s(0) else { return Value::Null };
            for p in &vals[1..] {
                let Some(p) = p.as_str() else { continue };
                let pat = match f {
                    Func::Wildcard => Some(Pattern::wildcard(p, ci, false)),
                    _ => Pattern::regex_search(&format!("^(?:{p})"), ci).ok(),
                };
                if pat.is_some_and(|p| p.is_match(src)) {
                    return Value::Bool(true);
                }
            }
            Value::Bool(false)
        }
        Func::ArrayCount => Value::Null,
    }
}

fn str_test(f: Func, a: &str, b: &str, ci: bool) -> bool {
    let (a, b) = if ci {
        (fold(a), fold(b))
    } else {
        (Cow::Borrowed(a), Cow::Borrowed(b))
    };
    match f {
        Func::StartsWith => a.starts_with(&*b),
        Func::EndsWith => a.ends_with(&*b),
        _ => a.contains(&*b),
    }
}

fn between(src: &str, l: &str, r: &str, greedy: bool, ci: bool) -> Option<String> {
    let (hay, ln, rn) = if ci {
        (
            fold(src).into_owned(),
            fold(l).into_owned(),
            fold(r).into_owned(),
        )
    } else {
        (src.to_string(), l.to_string(), r.to_string())
    };
    // Folding may change byte lengths for non-ASCII; fall back to the folded text then.
    let same = hay.len() == src.len();
    let start = hay.find(&ln)? + ln.len();
    let rest = &hay[start..];
    let end_rel = if greedy {
        rest.rfind(&rn)?
    } else {
        rest.find(&rn)?
    };
    let base = if same { src } else { &hay };
    Some(base[start..start + end_rel].to_string())
}

fn parse_number(t: &str, base: u32) -> Value {
    if base == 10 && (t.starts_with("0x") || t.starts_with("0X") || t.starts_with("-0x")) {
        return parse_number(t, 16);
    }
    if base == 10 {
        if let Ok(i) = t.parse::<i64>() {
            return Value::Int(i);
        }
        return t.parse::<f64>().map_or(Value::Null, Value::Float);
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let body = if base == 16 {
        body.strip_prefix("0x")
            .or_else(|| body.strip_prefix("0X"))
            .unwrap_or(body)
    } else {
        body
    };
    match i64::from_str_radix(body, base) {
        Ok(i) => Value::Int(if neg { -i } else { i }),
        Err(_) => Value::Null,
    }
}

pub(crate) fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (net, len) = match cidr.split_once('/') {
        Some((n, l)) => (n, l.parse::<u32>().ok()),
        None => (cidr, None),
    };
    let Ok(net) = net.trim().parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(n), IpAddr::V6(i)) => i
            .to_ipv4_mapped()
            .is_some_and(|m| cidr_contains(&format!("{n}/{}", len.unwrap_or(32)), IpAddr::V4(m))),
        _ => false,
    }
}
