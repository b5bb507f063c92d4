//! The compiler: AST to a tree of [`Node`]s, with field paths interned, constant patterns
//! precompiled, constant sub-expressions folded and `and`/`or` operands ordered cheapest first;
//! and the index terms a rule set dispatches on.

use super::{term_slot, Env, Func, Node, PathStep, TermVal};
use crate::eql::ast::{CmpOp, Expr, Lit, MatchKind, PathPart};
use crate::eql::matcher::{Pattern, PatternSet};
use crate::eql::{Dialect, EqlError, Options};
use crate::event::{Event, Field, Value};

pub(crate) struct Compiler<'a> {
    pub(crate) src: &'a str,
    pub(crate) opts: Options,
    /// Lineage subqueries collected while compiling (endgame).
    pub(crate) lineage: Vec<(crate::eql::ast::Lineage, crate::eql::ast::EventQuery)>,
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

    // Long by design: one match arm per AST node kind.
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

    // Long by design: one match arm per function's argument checks and constant folding.
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
}
