//! Evaluation: three-valued tests and values borrowed from the event (`Cow`), allocating only for
//! computed values; comparison and arithmetic with EQL's coercions.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

use super::functions::call;
use super::{Env, Node, PathStep, NULL, V};
use crate::eql::ast::{ArithOp, CmpOp};
use crate::eql::matcher::fold;
use crate::event::{Event, Value};

impl Node {
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

    // Long by design: one match arm per node kind (three-valued logic).
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

pub(super) fn values_eq(a: &Value, b: &Value, ci: bool) -> bool {
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

pub(super) fn truth(v: &Value) -> Option<bool> {
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

pub(super) fn bool_val(b: Option<bool>) -> Value {
    b.map_or(Value::Null, Value::Bool)
}
