//! Recursive-descent parser for EQL (Elasticsearch dialect, plus the endgame extensions: pipes, `join`,
//! lineage, `=` and single-quoted strings).

use super::ast::{
    ArithOp, Ast, Body, CmpOp, EventQuery, Expr, Lineage, Lit, MatchKind, PathPart, Pipe, Step,
};
use super::lexer::{lex, Tok, Token};
use super::{Dialect, EqlError};

pub(crate) fn parse(src: &str, dialect: Dialect) -> Result<Ast, EqlError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        i: 0,
        dialect,
    };
    let ast = p.query()?;
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.expected("`|` or the end of the query"));
    }
    Ok(ast)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    dialect: Dialect,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "like", "regex", "where", "by", "with", "until", "sequence",
    "sample", "join", "of", "maxspan", "runs",
];

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].pos
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expected(&self, what: &str) -> EqlError {
        EqlError::at(
            self.src,
            self.pos(),
            &format!("found {}", self.peek().describe()),
            what,
        )
    }

    fn expect(&mut self, t: &Tok, what: &str) -> Result<(), EqlError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), EqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{kw}`")))
        }
    }

    fn query(&mut self) -> Result<Ast, EqlError> {
        let body = if self.is_kw("sequence") {
            self.bump();
            self.sequence()?
        } else if self.is_kw("sample") {
            self.bump();
            self.sample()?
        } else if self.is_kw("join") && !matches!(self.peek_at(1), Tok::Ident(s) if s == "where") {
            self.bump();
            self.join()?
        } else {
            Body::Event(self.event_query()?)
        };
        let mut pipes = Vec::new();
        while self.eat(&Tok::Pipe) {
            pipes.push(self.pipe()?);
        }
        Ok(Ast { body, pipes })
    }

    fn event_query(&mut self) -> Result<EventQuery, EqlError> {
        let category = match self.bump() {
            Tok::Ident(s) if s.eq_ignore_ascii_case("any") => None,
            Tok::Ident(s) | Tok::Str(s) | Tok::Quoted(s) => Some(s),
            _ => {
                self.i -= 1;
                return Err(
                    self.expected("an event category (`process`, `any`, ...) followed by `where`")
                );
            }
        };
        self.expect_kw("where")?;
        let cond = self.expr()?;
        Ok(EventQuery { category, cond })
    }

    fn by_list(&mut self) -> Result<Vec<Expr>, EqlError> {
        let mut keys = vec![self.expr()?];
        while self.eat(&Tok::Comma) {
            keys.push(self.expr()?);
        }
        Ok(keys)
    }

    fn maxspan(&mut self) -> Result<i64, EqlError> {
        let pos = self.pos();
        if !(self.eat_kw("maxspan")) {
            return Err(self.expected("`maxspan`"));
        }
        self.expect(&Tok::Eq, "`=` after maxspan")?;
        let n = match self.bump() {
            Tok::Int(n) => n as f64,
            Tok::Float(f) => f,
            _ => {
                self.i -= 1;
                return Err(self.expected("a duration such as `30s`"));
            }
        };
        let unit_ns: f64 = match self.peek().clone() {
            Tok::Ident(u)
                if !self.toks[self.i].space_before
                    || matches!(u.as_str(), "ms" | "s" | "m" | "h" | "d") =>
            {
                self.bump();
                match u.to_ascii_lowercase().as_str() {
                    "ms" => 1e6,
                    "s" | "sec" | "second" | "seconds" => 1e9,
                    "m" | "min" | "minute" | "minutes" => 60e9,
                    "h" | "hour" | "hours" => 3600e9,
                    "d" | "day" | "days" => 86_400e9,
                    "micros" | "us" => 1e3,
                    "nanos" | "ns" => 1.0,
                    _ => {
                        return Err(EqlError::at(
                            self.src,
                            pos,
                            &format!("unknown time unit `{u}`"),
                            "ms, s, m, h or d",
                        ))
                    }
                }
            }
            // Endgame: a bare number is seconds.
            _ => 1e9,
        };
        #[allow(clippy::cast_possible_truncation)]
        Ok((n * unit_ns) as i64)
    }

    fn step(&mut self, allow_missing: bool) -> Result<Step, EqlError> {
        let missing = if allow_missing
            && matches!(self.peek(), Tok::Bang)
            && matches!(self.peek_at(1), Tok::LBracket)
        {
            self.bump();
            true
        } else {
            false
        };
        self.expect(&Tok::LBracket, "`[` opening a sequence step")?;
        let query = self.event_query()?;
        self.expect(&Tok::RBracket, "`]` closing the step")?;
        let mut by = Vec::new();
        let mut runs = 1;
        let mut fork = false;
        loop {
            if self.is_kw("by") {
                self.bump();
                by = self.by_list()?;
            } else if self.is_kw("fork") && matches!(self.peek_at(1), Tok::Eq) {
                // Endgame `fork=true|false`: accepted, no effect on matching.
                self.bump();
                self.bump();
                fork = matches!(self.bump(), Tok::Ident(v) if v.eq_ignore_ascii_case("true"));
            } else if self.is_kw("with") && self.is_kw_at(1, "runs") {
                self.bump();
                self.bump();
                self.expect(&Tok::Eq, "`=` after runs")?;
                match self.bump() {
                    Tok::Int(n) if (1..=100).contains(&n) => runs = n as u32,
                    _ => {
                        self.i -= 1;
                        return Err(self.expected("a run count between 1 and 100"));
                    }
                }
            } else {
                break;
            }
        }
        Ok(Step {
            query,
            by,
            runs,
            missing,
            fork,
        })
    }

    fn sequence(&mut self) -> Result<Body, EqlError> {
        let mut by = Vec::new();
        let mut maxspan = None;
        loop {
            if self.is_kw("by") {
                self.bump();
                by = self.by_list()?;
            } else if self.is_kw("with") {
                self.bump();
                maxspan = Some(self.maxspan()?);
            } else {
                break;
            }
        }
        let mut steps = Vec::new();
        while matches!(self.peek(), Tok::LBracket)
            || (matches!(self.peek(), Tok::Bang) && matches!(self.peek_at(1), Tok::LBracket))
        {
            steps.push(self.step(true)?);
        }
        let mut until = None;
        if self.eat_kw("until") {
            until = Some(self.step(false)?);
        }
        // Elasticsearch also accepts `with maxspan` after the steps in some older forms.
        if maxspan.is_none() && self.is_kw("with") && self.is_kw_at(1, "maxspan") {
            self.bump();
            maxspan = Some(self.maxspan()?);
        }
        let positive: u32 = steps.iter().filter(|s| !s.missing).map(|s| s.runs).sum();
        if steps.iter().map(|s| s.runs as usize).sum::<usize>() < 2 {
            return Err(self.expected("at least two sequence steps `[...]`"));
        }
        if positive == 0 {
            return Err(self.expected("at least one step that is not a missing event"));
        }
        Ok(Body::Sequence {
            by,
            maxspan_ns: maxspan,
            steps,
            until,
        })
    }

    fn sample(&mut self) -> Result<Body, EqlError> {
        let mut by = Vec::new();
        if self.eat_kw("by") {
            by = self.by_list()?;
        }
        let mut steps = Vec::new();
        while matches!(self.peek(), Tok::LBracket) {
            steps.push(self.step(false)?);
        }
        if steps.len() < 2 {
            return Err(self.expected("at least two sample filters `[...]`"));
        }
        Ok(Body::Sample { by, steps })
    }

    fn join(&mut self) -> Result<Body, EqlError> {
        let mut by = Vec::new();
        if self.eat_kw("by") {
            by = self.by_list()?;
        }
        let mut steps = Vec::new();
        while matches!(self.peek(), Tok::LBracket) {
            steps.push(self.step(false)?);
        }
        let mut until = None;
        if self.eat_kw("until") {
            until = Some(self.step(false)?);
        }
        if steps.len() < 2 {
            return Err(self.expected("at least two join terms `[...]`"));
        }
        Ok(Body::Join { by, steps, until })
    }

    fn pipe(&mut self) -> Result<Pipe, EqlError> {
        let pos = self.pos();
        let name = match self.bump() {
            Tok::Ident(s) => s.to_ascii_lowercase(),
            _ => {
                self.i -= 1;
                return Err(
                    self.expected("a pipe (head, tail, filter, unique, unique_count, count, sort)")
                );
            }
        };
        let count = |p: &mut Self| -> Result<usize, EqlError> {
            match p.peek() {
                Tok::Int(n) if *n >= 0 => {
                    let n = *n as usize;
                    p.bump();
                    Ok(n)
                }
                Tok::Pipe | Tok::Eof => Ok(50),
                _ => Err(p.expected("a non-negative count")),
            }
        };
        let args = |p: &mut Self| -> Result<Vec<Expr>, EqlError> {
            let mut v = Vec::new();
            while !matches!(p.peek(), Tok::Pipe | Tok::Eof) {
                v.push(p.expr()?);
                p.eat(&Tok::Comma);
            }
            Ok(v)
        };
        Ok(match name.as_str() {
            "head" => Pipe::Head(count(self)?),
            "tail" => Pipe::Tail(count(self)?),
            "filter" | "where" => Pipe::Filter(self.expr()?),
            "unique" => Pipe::Unique(args(self)?),
            "unique_count" => Pipe::UniqueCount(args(self)?),
            "count" => Pipe::Count(args(self)?),
            "sort" => Pipe::Sort(args(self)?),
            other => {
                return Err(EqlError::at(
                    self.src,
                    pos,
                    &format!("unsupported pipe `{other}`"),
                    "head, tail, filter, unique, unique_count, count or sort",
                ))
            }
        })
    }

    // ---- expressions -------------------------------------------------------------------------

    pub(crate) fn expr(&mut self) -> Result<Expr, EqlError> {
        self.or_expr()
    }

    fn or_expr(&mut self) -> Result<Expr, EqlError> {
        let mut l = self.and_expr()?;
        while self.eat_kw("or") {
            let r = self.and_expr()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> Result<Expr, EqlError> {
        let mut l = self.not_expr()?;
        while self.eat_kw("and") {
            let r = self.not_expr()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn not_expr(&mut self) -> Result<Expr, EqlError> {
        if self.eat_kw("not") {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        if self.dialect == Dialect::Endgame {
            for (kw, kind) in [
                ("descendant", Lineage::Descendant),
                ("child", Lineage::Child),
                ("event", Lineage::Event),
            ] {
                if self.is_kw(kw) && self.is_kw_at(1, "of") {
                    self.bump();
                    self.bump();
                    self.expect(&Tok::LBracket, "`[` after `of`")?;
                    let q = self.event_query()?;
                    self.expect(&Tok::RBracket, "`]`")?;
                    return Ok(Expr::Lineage {
                        kind,
                        query: Box::new(q),
                    });
                }
            }
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, EqlError> {
        let l = self.additive()?;
        let op = match self.peek() {
            Tok::EqEq => Some(CmpOp::Eq),
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            if matches!(self.peek(), Tok::Eq) && self.dialect == Dialect::Elastic {
                return Err(
                    self.expected("`==` (a single `=` is not an EQL operator; use `==` or `:`)")
                );
            }
            self.bump();
            let r = self.additive()?;
            return Ok(Expr::Cmp(op, Box::new(l), Box::new(r)));
        }
        // Predicates.
        let negate = if self.is_kw("not")
            && (self.is_kw_at(1, "in") || self.is_kw_at(1, "like") || self.is_kw_at(1, "regex"))
        {
            self.bump();
            true
        } else {
            false
        };
        if self.is_kw("in") {
            self.bump();
            let insensitive = self.eat(&Tok::Tilde);
            let list = self.paren_list()?;
            return Ok(Expr::In {
                expr: Box::new(l),
                list,
                insensitive,
                negate,
            });
        }
        let pos = self.pos();
        let kind = if matches!(self.peek(), Tok::Colon) {
            Some(MatchKind::Colon)
        } else if self.is_kw("like") {
            Some(MatchKind::Like)
        } else if self.is_kw("regex") {
            Some(MatchKind::Regex)
        } else {
            None
        };
        if let Some(kind) = kind {
            self.bump();
            let insensitive = kind != MatchKind::Colon && self.eat(&Tok::Tilde);
            let patterns = if matches!(self.peek(), Tok::LParen) {
                self.paren_list()?
            } else {
                vec![self.additive()?]
            };
            let m = Expr::Match {
                expr: Box::new(l),
                kind,
                patterns,
                insensitive,
                pos,
            };
            return Ok(if negate { Expr::Not(Box::new(m)) } else { m });
        }
        if negate {
            return Err(self.expected("`in`, `like` or `regex` after `not`"));
        }
        Ok(l)
    }

    fn paren_list(&mut self) -> Result<Vec<Expr>, EqlError> {
        self.expect(&Tok::LParen, "`(` opening a list")?;
        let mut v = Vec::new();
        if !matches!(self.peek(), Tok::RParen) {
            v.push(self.expr()?);
            while self.eat(&Tok::Comma) {
                if matches!(self.peek(), Tok::RParen) {
                    break;
                }
                v.push(self.expr()?);
            }
        }
        self.expect(&Tok::RParen, "`,` or `)` closing the list")?;
        Ok(v)
    }

    fn additive(&mut self) -> Result<Expr, EqlError> {
        let mut l = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.multiplicative()?;
            l = Expr::Arith(op, Box::new(l), Box::new(r));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, EqlError> {
        let mut l = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                Tok::Percent => ArithOp::Mod,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.unary()?;
            l = Expr::Arith(op, Box::new(l), Box::new(r));
        }
    }

    fn unary(&mut self) -> Result<Expr, EqlError> {
        if self.eat(&Tok::Minus) {
            let e = self.unary()?;
            return Ok(match e {
                Expr::Lit(Lit::Int(i)) => Expr::Lit(Lit::Int(-i)),
                Expr::Lit(Lit::Float(f)) => Expr::Lit(Lit::Float(-f)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.eat(&Tok::Plus) {
            return self.unary();
        }
        let mut e = self.primary()?;
        // Endgame method syntax: `x:length()` is `length(x)`.
        while self.dialect == Dialect::Endgame
            && matches!(self.peek(), Tok::Colon)
            && matches!(self.peek_at(1), Tok::Ident(_))
            && matches!(self.peek_at(2), Tok::LParen)
        {
            self.bump();
            let pos = self.pos();
            let Tok::Ident(name) = self.bump() else { break };
            let mut args = vec![e];
            args.extend(self.paren_list()?);
            e = Expr::Call {
                name,
                args,
                insensitive: false,
                pos,
            };
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, EqlError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                Ok(Expr::Lit(Lit::Int(i)))
            }
            Tok::Float(f) => {
                self.bump();
                Ok(Expr::Lit(Lit::Float(f)))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Lit(Lit::Str(s)))
            }
            Tok::LParen => {
                self.bump();
                let e = self.expr()?;
                self.expect(&Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::Question => {
                self.bump();
                match self.peek().clone() {
                    Tok::Ident(_) | Tok::Quoted(_) => {
                        let mut f = self.field()?;
                        if let Expr::Field { optional, .. } = &mut f {
                            *optional = true;
                        }
                        Ok(f)
                    }
                    _ => Err(self.expected("a field name after `?`")),
                }
            }
            Tok::Quoted(_) => self.field(),
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => {
                        self.bump();
                        return Ok(Expr::Lit(Lit::Bool(true)));
                    }
                    "false" => {
                        self.bump();
                        return Ok(Expr::Lit(Lit::Bool(false)));
                    }
                    "null" => {
                        self.bump();
                        return Ok(Expr::Lit(Lit::Null));
                    }
                    _ => {}
                }
                // Function call: name( or name~(
                let call = matches!(self.peek_at(1), Tok::LParen)
                    && !self.toks[self.i + 1].space_before
                    || matches!(self.peek_at(1), Tok::Tilde)
                        && matches!(self.peek_at(2), Tok::LParen);
                if call && !KEYWORDS.contains(&lower.as_str()) {
                    self.bump();
                    let insensitive = self.eat(&Tok::Tilde);
                    let args = self.paren_list()?;
                    return Ok(Expr::Call {
                        name,
                        args,
                        insensitive,
                        pos,
                    });
                }
                if KEYWORDS.contains(&lower.as_str()) {
                    return Err(self.expected("a field, value or function call"));
                }
                self.field()
            }
            _ => Err(self.expected("a field, value or function call")),
        }
    }

    fn field(&mut self) -> Result<Expr, EqlError> {
        let pos = self.pos();
        let mut parts = Vec::new();
        match self.bump() {
            Tok::Ident(s) => parts.push(PathPart::Name(s)),
            Tok::Quoted(s) => parts.extend(s.split('.').map(|p| PathPart::Name(p.to_string()))),
            _ => {
                self.i -= 1;
                return Err(self.expected("a field name"));
            }
        }
        loop {
            if matches!(self.peek(), Tok::Dot) && !self.toks[self.i].space_before {
                self.bump();
                match self.bump() {
                    Tok::Ident(s) | Tok::Quoted(s) => parts.push(PathPart::Name(s)),
                    Tok::Int(i) => parts.push(PathPart::Name(i.to_string())),
                    _ => {
                        self.i -= 1;
                        return Err(self.expected("a field name after `.`"));
                    }
                }
            } else if matches!(self.peek(), Tok::LBracket)
                && matches!(self.peek_at(1), Tok::Int(_))
                && matches!(self.peek_at(2), Tok::RBracket)
            {
                self.bump();
                if let Tok::Int(i) = self.bump() {
                    parts.push(PathPart::Index(i));
                }
                self.bump();
            } else {
                break;
            }
        }
        Ok(Expr::Field {
            parts,
            optional: false,
            pos,
        })
    }
}
