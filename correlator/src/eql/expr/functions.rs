//! The function library: names and arities, and the string, arithmetic and network functions.

use std::borrow::Cow;
use std::net::IpAddr;

use super::eval::{arith, to_string, values_eq};
use super::{Env, Node, V};
use crate::eql::ast::ArithOp;
use crate::eql::matcher::{fold, Pattern};
use crate::event::{Event, Value};

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
    pub(super) fn lookup(name: &str) -> Option<Func> {
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

    pub(super) fn arity(self) -> (usize, usize) {
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

fn str_arg(v: &Value) -> Option<&str> {
    v.as_str()
}

// Long by design: one match arm per EQL function of the library.
pub(super) fn call(f: Func, args: &[Node], ci: bool, ev: &Event, env: &Env<'_>) -> Value {
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
