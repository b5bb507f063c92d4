//! How a format's input divides into records.
//!
//! Most formats are line oriented: one record per line. Some arrive as documents that span lines
//! (rendered Windows event XML, Apple plists) and may also share a line (`wevtutil qe /f:xml` prints
//! its `<Event>`s back to back). A [`Framer`] is fed an input line by line, with each line's byte
//! offset, and names every record as a [`Span`] of that input: the caller keeps the bytes (the HTTP
//! listener spools slices of the request body; `decode_reader` keeps a window of the file).

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
}

impl Framer {
    pub fn new(framing: Framing) -> Framer {
        Framer {
            framing,
            open: None,
            seen: 0,
        }
    }

    /// The first byte of the document still open, if any: the bytes from there on must be kept.
    pub fn open_start(&self) -> Option<u64> {
        self.open.map(|(_, s)| s)
    }

    /// Feeds one line: its 1-based number, the offset of its first byte in the input, and its bytes
    /// without the `\n` terminator (a trailing `\r` is allowed). Pushes the records it completes.
    pub fn line(&mut self, line_no: u64, offset: u64, line: &[u8], out: &mut Vec<Span>) {
        self.seen = offset + line.len() as u64;
        let mut l = line;
        while let [rest @ .., b'\r'] = l {
            l = rest;
        }
        let Framing::Xml { end, wrappers } = self.framing else {
            if !l.iter().all(u8::is_ascii_whitespace) {
                out.push(Span {
                    line: line_no,
                    start: offset,
                    end: offset + l.len() as u64,
                });
            }
            return;
        };
        let end = end.as_bytes();
        let mut pos = 0usize;
        loop {
            if self.open.is_none() {
                while pos < l.len() && l[pos].is_ascii_whitespace() {
                    pos += 1;
                }
                if pos == l.len() {
                    return;
                }
                if l[pos] != b'<' {
                    // A line of another shape (a JSON envelope): one record.
                    out.push(Span {
                        line: line_no,
                        start: offset + pos as u64,
                        end: offset + l.len() as u64,
                    });
                    return;
                }
                if let Some(n) = skippable(&l[pos..], wrappers) {
                    pos += n;
                    continue;
                }
                self.open = Some((line_no, offset + pos as u64));
            }
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
    }
}
