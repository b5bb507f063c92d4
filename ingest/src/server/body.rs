//! Request bodies: size-limited reading, decompression off the async workers (with the zstd
//! window capped), and splitting a body into records judged as a fresh decoder would.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{error_response, State};
use crate::decode::{decoder_with_context, feed_line, split_records, validate_line, Format};

/// What one request body yields: where the accepted records are in it, and the rejects.
pub struct BodyOutcome {
    /// Each accepted line's bytes in the body (terminator excluded), in order.
    pub accepted: Vec<std::ops::Range<usize>>,
    /// Rejected lines: 1-based line number and why.
    pub rejected: Vec<(u64, String)>,
    /// The decoder's header context after this body ([`crate::decode::Decoder::context`]).
    pub context: Vec<String>,
    /// The body's first accepted line depends on the context given to [`process_body`]: the
    /// context lines must be spooled before the body's lines, so that every spooled batch carries
    /// the header its rows need.
    pub needs_context: bool,
}

impl BodyOutcome {
    /// The accepted lines, sliced out of `body` (the body this outcome was computed from).
    pub fn lines<'b>(&'b self, body: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + 'b {
        self.accepted
            .iter()
            .map(move |r| body.get(r.clone()).unwrap_or_default())
    }
}

/// Splits a (decompressed) body into records (lines, or documents for formats framed by document:
/// [`Format::framing`]) and judges each as a fresh decoder for `format` would (ECS lines are
/// checked without building events, see [`validate_line`]). Pure; also
/// the fuzz entry point for the framing.
///
/// `context` is the header the agent's earlier bodies left ([`BodyOutcome::context`]): a Zeek TSV
/// log streamed over several requests sends its `#fields` header only in the first one.
pub fn process_body(
    format: Format,
    agent_id: &str,
    body: &[u8],
    max_record_bytes: usize,
    context: &[String],
) -> BodyOutcome {
    let mut dec = decoder_with_context(format, agent_id, context);
    let mut out = BodyOutcome {
        accepted: Vec::new(),
        rejected: Vec::new(),
        context: Vec::new(),
        needs_context: false,
    };
    for span in split_records(format.framing(), body) {
        let n = span.line;
        let range = span.start as usize..span.end as usize;
        let l = &body[range.clone()];
        if l.len() > max_record_bytes {
            out.rejected.push((
                n,
                format!(
                    "record of {} bytes exceeds the limit of {max_record_bytes}",
                    l.len()
                ),
            ));
            continue;
        }
        let verdict = validate_line(format, l).unwrap_or_else(|| {
            let mut rejected_here = Ok(());
            feed_line(dec.as_mut(), n, l, &mut |r| {
                if let Err(e) = r {
                    if e.line == n {
                        rejected_here = Err(e.message);
                    }
                }
            });
            rejected_here
        });
        match verdict {
            Ok(()) => {
                if out.accepted.is_empty() && !context.is_empty() && !l.starts_with(b"#") {
                    out.needs_context = true;
                }
                out.accepted.push(range);
            }
            Err(m) => out.rejected.push((n, m)),
        }
    }
    out.context = dec.context();
    out
}

pub(super) async fn read_body(
    state: &State,
    req: Request<Incoming>,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let limit = state.limits.max_request_bytes;
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body of {len} bytes exceeds the limit of {limit}"),
            ));
        }
    }
    let encoding = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let timeout = Duration::from_secs(state.limits.body_timeout_secs);
    let collected =
        tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await;
    let raw = match collected {
        Err(_) => {
            return Err(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body exceeds the limit of {limit} bytes"),
                ));
            }
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                &format!("reading the request body: {e}"),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    // Inflating up to `limit` bytes is CPU work: on the blocking pool, not an async worker.
    let enc = encoding.clone();
    match tokio::task::spawn_blocking(move || decompress(&enc, raw, limit)).await {
        Ok(r) => r.map_err(|(status, msg)| error_response(status, &msg)),
        Err(e) => Err(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("decompressing the {encoding} body failed: {e}"),
        )),
    }
}

/// Largest zstd window accepted (log2): 8 MiB. zstd's decoder would otherwise allocate whatever
/// window a frame declares (up to 128 MiB by default) for every request in flight.
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Decompresses a body per `Content-Encoding` (gzip, zstd, identity), never beyond `limit` bytes.
pub fn decompress(encoding: &str, raw: Bytes, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    use std::io::Read;
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let res = match encoding {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&raw[..])
            .take(cap)
            .read_to_end(&mut out),
        "zstd" => match zstd::stream::read::Decoder::new(&raw[..]) {
            Ok(mut d) => match d.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                Ok(()) => match d.take(cap).read_to_end(&mut out) {
                    // zstd: "Frame requires too much memory for decoding".
                    Err(e) if e.to_string().contains("too much memory") => {
                        return Err((
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "zstd body declares a window larger than {} bytes",
                                1u64 << ZSTD_WINDOW_LOG_MAX
                            ),
                        ))
                    }
                    r => r,
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding `{other}` is not supported (gzip, zstd)"),
            ))
        }
    };
    match res {
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("{encoding} body does not decompress: {e}"),
        )),
        Ok(_) if out.len() > limit => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body exceeds the limit of {limit} bytes"),
        )),
        Ok(_) => Ok(Bytes::from(out)),
    }
}
