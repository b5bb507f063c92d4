//! The syntax tree the parser produces and the compiler consumes.

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchKind {
    /// `:` (case-insensitive, wildcards).
    Colon,
    Like,
    Regex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lineage {
    Descendant,
    Child,
    Event,
}

/// One step of a field path: a name or an array index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PathPart {
    Name(String),
    Index(i64),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Lit(Lit),
    Field {
        parts: Vec<PathPart>,
        optional: bool,
        pos: usize,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        insensitive: bool,
        negate: bool,
    },
    Match {
        expr: Box<Expr>,
        kind: MatchKind,
        patterns: Vec<Expr>,
        insensitive: bool,
        pos: usize,
    },
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Call {
        name: String,
        args: Vec<Expr>,
        insensitive: bool,
        pos: usize,
    },
    /// Endgame `descendant of [...]`, `child of [...]`, `event of [...]`.
    Lineage {
        kind: Lineage,
        query: Box<EventQuery>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EventQuery {
    /// `None` for `any`.
    pub(crate) category: Option<String>,
    pub(crate) cond: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    pub(crate) query: EventQuery,
    pub(crate) by: Vec<Expr>,
    pub(crate) runs: u32,
    pub(crate) missing: bool,
    /// Endgame `fork=true`: matching this step copies the partial instead of moving it.
    pub(crate) fork: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    Event(EventQuery),
    Sequence {
        by: Vec<Expr>,
        maxspan_ns: Option<i64>,
        steps: Vec<Step>,
        until: Option<Step>,
    },
    Sample {
        by: Vec<Expr>,
        steps: Vec<Step>,
    },
    Join {
        by: Vec<Expr>,
        steps: Vec<Step>,
        until: Option<Step>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pipe {
    Head(usize),
    Tail(usize),
    Filter(Expr),
    Unique(Vec<Expr>),
    UniqueCount(Vec<Expr>),
    Count(Vec<Expr>),
    Sort(Vec<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ast {
    pub(crate) body: Body,
    pub(crate) pipes: Vec<Pipe>,
}
