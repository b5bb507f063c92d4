//! How a format's input divides into records.
//!
//! Most formats are line oriented: one record per line. Some arrive as documents that span lines
//! (rendered Windows event XML, Apple plists) and may also share a line (`wevtutil qe /f:xml` prints
//! its `<Event>`s back to back). A [`Framer`] is fed an input line by line, with each line's byte
//! offset, and names every record as a [`Span`] of that input: the caller keeps the bytes (the HTTP
//! listener spools slices of the request body; `decode_reader` keeps a window of the file).
//!
//! JSON documents may span lines too (an API response printed with indentation, as MDM and
//! mobile-threat-defence APIs return them): with [`Framing::Json`] a record that starts with `{`
//! runs until its braces balance (strings and escapes respected). One JSON object per line (NDJSON)
//! is framed exactly as [`Framing::Lines`] frames it. A document that never balances would swallow
//! what follows, so an open JSON document is cut before any line that starts with `{` in column 0
//! (where indented output never puts a nested object): it becomes a record of its own, which its
//! decoder rejects, and the next document starts there.

/// How a format's input divides into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One record per non-blank line (JSON lines, auditd, Zeek TSV, ...).
    Lines,
    /// XML documents. A record that starts with `<` runs to the first `end` tag, inclusive: it may
    /// span lines, and several may share one. Before a document, an XML prolog (`<?...?>`), a
    /// `<!...>` declaration or comment, and the opening or closing tags of the `wrappers` elements
    /// (`<Events>`, `</Events>`) are skipped. A line that does not start with `<` is one record, so
    /// a format may take JSON envelopes beside its XML.
    Xml {
        end: &'static str,
        wrappers: &'static [&'static str],
    },
    /// JSON documents that may span lines (see the module documentation); a line that does not
    /// start with `{` is one record.
    Json,
    /// Both [`Framing::Xml`] documents (a record starting with `<`) and [`Framing::Json`] documents
    /// (a record starting with `{`).
    XmlAndJson {
        end: &'static str,
        wrappers: &'static [&'static str],
    },
}

/// The state of a JSON document being framed: nesting depth and string state.
#[derive(Clone, Copy, Debug, Default)]
struct JsonScan {
    depth: u32,
    in_str: bool,
    escaped: bool,
}

impl JsonScan {
    /// Scans `s`; the index of the byte that closes the document, if it is in `s`.
    fn feed(&mut self, s: &[u8]) -> Option<usize> {
        for (i, &b) in s.iter().enumerate() {
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// One record of an input: the 1-based line it starts on and its byte range `start..end` in the
/// input (line terminators at its end excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub line: u64,
    pub start: u64,
    pub end: u64,
}

/// Divides an input into records, line by line (see the module documentation).
#[derive(Clone, Debug)]
pub struct Framer {
    framing: Framing,
    /// The open document: the line it starts on and its first byte.
    open: Option<(u64, u64)>,
    /// The end of the input seen so far (the end of the last line fed).
    seen: u64,
    /// The open document is JSON: its scan state.
    json: Option<JsonScan>,
}

impl Framer {
    pub fn new(framing: Framing) -> Framer {
        Framer {
            framing,
            open: None,
            seen: 0,
            json: None,
        }
    }

    /// The first byte of the document still open, if any: the bytes from there on must be kept.
    pub fn open_start(&self) -> Option<u64> {
        self.open.map(|(_, s)| s)
    }

    /// Feeds one line: its 1-based number, the offset of its first byte in the input, and its bytes
    /// without the `\n` terminator (a trailing `\r` is allowed). Pushes the records it completes.
    pub fn line(&mut self, line_no: u64, offset: u64, line: &[u8], out: &mut Vec<Span>) {
        let prev_end = self.seen;
        self.seen = offset + line.len() as u64;
        let mut l = line;
        while let [rest @ .., b'\r'] = l {
            l = rest;
        }
        let (xml, json) = match self.framing {
            Framing::Lines => (None, false),
            Framing::Xml { end, wrappers } => (Some((end, wrappers)), false),
            Framing::Json => (None, true),
            Framing::XmlAndJson { end, wrappers } => (Some((end, wrappers)), true),
        };
        if xml.is_none() && !json {
            if !l.iter().all(u8::is_ascii_whitespace) {
                out.push(Span {
                    line: line_no,
                    start: offset,
                    end: offset + l.len() as u64,
                });
            }
            return;
        }
        let mut pos = 0usize;
        if self.json.is_some() && l.first() == Some(&b'{') {
            // A new top-level document while one is open: the open one ended on the line before.
            if let Some((first, start)) = self.open.take() {
                out.push(Span {
                    line: first,
                    start,
                    end: prev_end.max(start),
                });
            }
            self.json = None;
        }
        loop {
            if self.open.is_none() {
                while pos < l.len() && l[pos].is_ascii_whitespace() {
                    pos += 1;
                }
                if pos == l.len() {
                    return;
                }
                if json && l[pos] == b'{' {
                    self.open = Some((line_no, offset + pos as u64));
                    self.json = Some(JsonScan::default());
                } else if l[pos] != b'<' || xml.is_none() {
                    // A line of another shape (a JSON envelope): one record.
                    out.push(Span {
                        line: line_no,
                        start: offset + pos as u64,
                        end: offset + l.len() as u64,
                    });
                    return;
                } else {
                    let wrappers = xml.map_or(&[][..], |(_, w)| w);
                    if let Some(n) = skippable(&l[pos..], wrappers) {
                        pos += n;
                        continue;
                    }
                    self.open = Some((line_no, offset + pos as u64));
                }
            }
            if let Some(scan) = &mut self.json {
                match scan.feed(&l[pos..]) {
                    Some(p) => {
                        let stop = pos + p + 1;
                        if let Some((first, start)) = self.open.take() {
                            out.push(Span {
                                line: first,
                                start,
                                end: offset + stop as u64,
                            });
                        }
                        self.json = None;
                        pos = stop;
                        continue;
                    }
                    None => return,
                }
            }
            let Some((end, _)) = xml else { return };
            let end = end.as_bytes();
            match memchr::memmem::find(&l[pos..], end) {
                Some(p) => {
                    let stop = pos + p + end.len();
                    if let Some((first, start)) = self.open.take() {
                        out.push(Span {
                            line: first,
                            start,
                            end: offset + stop as u64,
                        });
                    }
                    pos = stop;
                }
                None => return,
            }
        }
    }

    /// End of input: a document still open is pushed as it is (its decoder rejects it as
    /// unterminated, naming the line it starts on).
    pub fn finish(&mut self, out: &mut Vec<Span>) {
        self.json = None;
        if let Some((line, start)) = self.open.take() {
            out.push(Span {
                line,
                start,
                end: self.seen,
            });
        }
    }
}

/// The length of the markup at the start of `s` that is not part of a document: `<?...?>`,
/// `<!...>`, or a wrapper element's opening or closing tag. `None` when `s` starts a document or
/// the markup does not end on this line (then it is taken as the start of a document, and its
/// decoder says what is wrong with it).
fn skippable(s: &[u8], wrappers: &[&str]) -> Option<usize> {
    let close = memchr::memchr(b'>', s)? + 1;
    let tag = &s[..close];
    if tag.starts_with(b"<?") || tag.starts_with(b"<!") {
        return Some(close);
    }
    let name = tag.strip_prefix(b"</").or_else(|| tag.strip_prefix(b"<"))?;
    let name_len = name
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(name.len());
    let name = &name[..name_len];
    wrappers
        .iter()
        .any(|w| w.as_bytes() == name)
        .then_some(close)
}

/// Every record of an input held in memory (an HTTP body, a fuzz input), in order.
pub fn split(framing: Framing, input: &[u8]) -> Vec<Span> {
    let mut framer = Framer::new(framing);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut line_no = 0u64;
    while start < input.len() {
        let end = memchr::memchr(b'\n', &input[start..]).map_or(input.len(), |p| start + p);
        line_no += 1;
        framer.line(line_no, start as u64, &input[start..end], &mut out);
        start = end + 1;
    }
    framer.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const XML: Framing = Framing::Xml {
        end: "</Event>",
        wrappers: &["Events"],
    };

    fn texts(framing: Framing, input: &str) -> Vec<(u64, &str)> {
        split(framing, input.as_bytes())
            .into_iter()
            .map(|s| (s.line, &input[s.start as usize..s.end as usize]))
            .collect()
    }

    #[test]
    fn lines_skip_blanks_and_carriage_returns() {
        assert_eq!(
            texts(Framing::Lines, "a\r\n\n  \nb\nc"),
            vec![(1, "a"), (4, "b"), (5, "c")]
        );
    }

    #[test]
    fn xml_documents_span_lines_and_share_lines() {
        let input = "<?xml version=\"1.0\"?>\r\n<Events>\n<Event a='1'>\n <x/>\n</Event><Event>b</Event>\n</Events>\n{\"json\":1}\n";
        assert_eq!(
            texts(XML, input),
            vec![
                (3, "<Event a='1'>\n <x/>\n</Event>"),
                (5, "<Event>b</Event>"),
                (7, "{\"json\":1}"),
            ]
        );
    }

    #[test]
    fn xml_unterminated_document_is_a_record() {
        assert_eq!(texts(XML, "<Event>\n<x>\n"), vec![(1, "<Event>\n<x>")]);
        // A tag that does not close on its line starts a document too.
        assert_eq!(texts(XML, "<Events"), vec![(1, "<Events")]);
    }

    #[test]
    fn xml_wrapper_prefix_is_not_a_wrapper() {
        // `<EventsX>` is not the wrapper `Events`: it starts a document.
        assert_eq!(
            texts(XML, "<EventsX>y</Event>"),
            vec![(1, "<EventsX>y</Event>")]
        );
    }

    #[test]
    fn json_documents_span_lines_and_ndjson_stays_lines() {
        let input = "{\"a\":1}\n{\n  \"b\": {\"c\": \"}{\\\"\"},\n  \"d\": [1,\n 2]\n}\nplain\n";
        assert_eq!(
            texts(Framing::Json, input),
            vec![
                (1, "{\"a\":1}"),
                (2, "{\n  \"b\": {\"c\": \"}{\\\"\"},\n  \"d\": [1,\n 2]\n}"),
                (7, "plain"),
            ]
        );
        let nd = "{\"a\":1}\n{\"b\":2}\n";
        assert_eq!(texts(Framing::Json, nd), texts(Framing::Lines, nd),);
    }

    #[test]
    fn json_unbalanced_document_is_cut_at_the_next_top_level_one() {
        assert_eq!(
            texts(Framing::Json, "{\"a\":\n  1\n{\"b\":2}\n"),
            vec![(1, "{\"a\":\n  1"), (3, "{\"b\":2}")]
        );
        assert_eq!(texts(Framing::Json, "{\"a\":\n"), vec![(1, "{\"a\":")]);
    }

    #[test]
    fn xml_and_json_together() {
        let f = Framing::XmlAndJson {
            end: "</plist>",
            wrappers: &[],
        };
        let input = "<?xml version=\"1.0\"?>\n<!DOCTYPE plist>\n<plist>\n<dict/>\n</plist>\n{\n \"x\": 1\n}\n{\"y\":2}\n";
        assert_eq!(
            texts(f, input),
            vec![
                (3, "<plist>\n<dict/>\n</plist>"),
                (6, "{\n \"x\": 1\n}"),
                (9, "{\"y\":2}"),
            ]
        );
    }

    proptest! {
        /// Records never overlap, come in order, lie within the input, and every non-blank byte
        /// outside them is skipped markup: nothing is lost silently.
        #[test]
        fn spans_are_ordered_and_in_bounds(input in "[<>/a-zEvnt\n\r ?!]{0,200}") {
            let bytes = input.as_bytes();
            let spans = split(XML, bytes);
            let mut last = 0u64;
            for s in &spans {
                prop_assert!(s.start >= last && s.start <= s.end && s.end <= bytes.len() as u64);
                prop_assert!(s.line >= 1);
                last = s.end;
            }
            let lines = split(Framing::Lines, bytes);
            for s in &lines {
                prop_assert!(s.end <= bytes.len() as u64);
            }
        }

        /// The same for JSON framing, on inputs made of JSON punctuation.
        #[test]
        fn json_spans_are_ordered_and_in_bounds(input in "[{}\\[\\]\"\\\\a<>/plist\n ]{0,200}") {
            let bytes = input.as_bytes();
            for f in [Framing::Json, Framing::XmlAndJson { end: "</plist>", wrappers: &[] }] {
                let mut last = 0u64;
                for s in split(f, bytes) {
                    prop_assert!(s.start >= last && s.start <= s.end && s.end <= bytes.len() as u64);
                    prop_assert!(s.line >= 1);
                    last = s.end;
                }
            }
        }
    }
}
