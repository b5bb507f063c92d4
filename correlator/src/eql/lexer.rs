//! Tokens of EQL (both dialects), with the byte offset of each so errors can point at line and column.

use super::EqlError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// A back-quoted identifier (`` `process.name` ``): never a keyword.
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
    Dot,
    EqEq,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    Tilde,
    Question,
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Eof => "end of query".to_string(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Pipe => "|",
            Tok::Dot => ".",
            Tok::EqEq => "==",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Colon => ":",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Bang => "!",
            Tok::Tilde => "~",
            Tok::Question => "?",
            _ => "?",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
    /// True when whitespace or a comment came right before this token.
    pub(crate) space_before: bool,
}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(src.len());
    let before = &src[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// Long by design: one match over what may start a token, each arm a few lines.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, EqlError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let mut space = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            space = true;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            space = true;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let start = i;
            i += 2;
            loop {
                if i + 1 >= b.len() {
                    return Err(EqlError::at(src, start, "unterminated comment", "`*/`"));
                }
                if b[i] == b'*' && b[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            space = true;
            continue;
        }
        let start = i;
        let leading_dot =
            c == b'.' && (space || out.is_empty()) && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        let tok = if c.is_ascii_digit() || leading_dot {
            let mut j = i;
            if leading_dot {
                j += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let mut float = false;
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                float = true;
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
                let mut k = j + 1;
                if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
                    k += 1;
                }
                if k < b.len() && b[k].is_ascii_digit() {
                    float = true;
                    j = k;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                }
            }
            let text = &src[i..j];
            i = j;
            if leading_dot {
                Tok::Float(
                    format!("0{text}")
                        .parse()
                        .map_err(|_| EqlError::at(src, start, "bad number", "a number"))?,
                )
            } else if float {
                Tok::Float(
                    text.parse()
                        .map_err(|_| EqlError::at(src, start, "bad number", "a number"))?,
                )
            } else {
                match text.parse::<i64>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => Tok::Float(
                        text.parse()
                            .map_err(|_| EqlError::at(src, start, "bad number", "a number"))?,
                    ),
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'@' || c >= 0x80 {
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'@' || b[j] >= 0x80)
            {
                j += 1;
            }
            let text = &src[i..j];
            i = j;
            Tok::Ident(text.to_string())
        } else if c == b'`' {
            let Some(end) = src[i + 1..].find('`') else {
                return Err(EqlError::at(
                    src,
                    start,
                    "unterminated back-quoted field name",
                    "a closing backquote",
                ));
            };
            let text = &src[i + 1..i + 1 + end];
            i += end + 2;
            Tok::Quoted(text.to_string())
        } else if c == b'"' && src[i..].starts_with("\"\"\"") {
            let Some(end) = src[i + 3..].find("\"\"\"") else {
                return Err(EqlError::at(
                    src,
                    start,
                    "unterminated string",
                    "closing `\"\"\"`",
                ));
            };
            let text = &src[i + 3..i + 3 + end];
            i += end + 6;
            Tok::Str(text.to_string())
        } else if c == b'"' || c == b'\'' {
            let (s, next) = lex_string(src, i, c, false)?;
            i = next;
            Tok::Str(s)
        } else if c == b'?' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'\'')) {
            // Endgame raw string: ?"..." keeps backslashes.
            let (s, next) = lex_string(src, i + 1, b[i + 1], true)?;
            i = next;
            Tok::Str(s)
        } else {
            let two = b.get(i + 1).copied();
            let (t, n) = match (c, two) {
                (b'=', Some(b'=')) => (Tok::EqEq, 2),
                (b'!', Some(b'=')) => (Tok::Ne, 2),
                (b'<', Some(b'=')) => (Tok::Le, 2),
                (b'>', Some(b'=')) => (Tok::Ge, 2),
                (b'=', _) => (Tok::Eq, 1),
                (b'<', _) => (Tok::Lt, 1),
                (b'>', _) => (Tok::Gt, 1),
                (b'!', _) => (Tok::Bang, 1),
                (b'(', _) => (Tok::LParen, 1),
                (b')', _) => (Tok::RParen, 1),
                (b'[', _) => (Tok::LBracket, 1),
                (b']', _) => (Tok::RBracket, 1),
                (b',', _) => (Tok::Comma, 1),
                (b'|', _) => (Tok::Pipe, 1),
                (b'.', _) => (Tok::Dot, 1),
                (b':', _) => (Tok::Colon, 1),
                (b'+', _) => (Tok::Plus, 1),
                (b'-', _) => (Tok::Minus, 1),
                (b'*', _) => (Tok::Star, 1),
                (b'/', _) => (Tok::Slash, 1),
                (b'%', _) => (Tok::Percent, 1),
                (b'~', _) => (Tok::Tilde, 1),
                (b'?', _) => (Tok::Question, 1),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(EqlError::at(
                        src,
                        i,
                        &format!("unexpected character {ch:?}"),
                        "a field, value or operator",
                    ));
                }
            };
            i += n;
            t
        };
        out.push(Token {
            tok,
            pos: start,
            space_before: space,
        });
        space = false;
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
        space_before: space,
    });
    Ok(out)
}

fn lex_string(src: &str, start: usize, quote: u8, raw: bool) -> Result<(String, usize), EqlError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        let here = start + 1 + off;
        if ch as u32 == u32::from(quote) {
            return Ok((out, here + 1));
        }
        if ch == '\n' && !raw {
            return Err(EqlError::at(
                src,
                start,
                "unterminated string",
                "a closing quote on the same line",
            ));
        }
        if ch == '\\' {
            let Some((_, esc)) = chars.next() else { break };
            if raw {
                out.push('\\');
                out.push(esc);
                continue;
            }
            match esc {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                '0' => out.push('\0'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                '\\' => out.push('\\'),
                'u' => {
                    // \u{XXXX} (Elasticsearch) or \uXXXX.
                    let rest: String = chars.clone().map(|(_, c)| c).take(10).collect();
                    let (hex, used) = if let Some(r) = rest.strip_prefix('{') {
                        let end = r.find('}').unwrap_or(0);
                        (r[..end].to_string(), end + 2)
                    } else {
                        (rest.chars().take(4).collect::<String>(), 4)
                    };
                    let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                    else {
                        return Err(EqlError::at(src, here, "bad unicode escape", "\\u{XXXX}"));
                    };
                    out.push(c);
                    for _ in 0..used {
                        chars.next();
                    }
                }
                // Unknown escapes are kept as written (Windows paths in endgame queries).
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
            continue;
        }
        out.push(ch);
    }
    Err(EqlError::at(
        src,
        start,
        "unterminated string",
        "a closing quote",
    ))
}
