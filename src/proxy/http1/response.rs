//! A backend's response head: how its body ends (RFC 9112 §6.3, in its order) and the head the client gets (the
//! backend's lines as they came, minus the hop-by-hop ones; the sticky cookie; `Connection` as the client needs it).

use super::buf::MAX_HEADERS;
use super::fields::{copy_lines, header, number, Fields, Lines};
use super::framing::{self, BodyState};
use super::head;
use crate::proxy::answer::connection_line;
use crate::proxy::rewrite;
use std::mem::MaybeUninit;

/// A backend's response head, read by `head` or by httparse.
pub(super) struct RespHead<'a> {
    pub minor: u8,
    pub code: u16,
    pub reason: &'a str,
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub headers: &'a [httparse::Header<'a>],
}

/// Reads a response head in `bytes` (the fast reader for the common shape, else httparse), its fields kept in
/// `fast` or `slots`.
pub(super) fn parse<'h, 'b: 'h>(
    bytes: &'b [u8],
    fast: &'h mut [httparse::Header<'b>; head::MAX],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS],
) -> Result<httparse::Status<RespHead<'h>>, httparse::Error> {
    if let Some(h) = head::response(bytes, fast) {
        return Ok(httparse::Status::Complete(RespHead {
            minor: h.minor,
            code: h.code,
            reason: h.reason,
            len: h.len,
            headers: &fast[..h.fields],
        }));
    }
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, bytes, slots)?;
    Ok(match status {
        httparse::Status::Complete(len) => httparse::Status::Complete(RespHead {
            minor: resp.version.unwrap_or(1),
            code: resp.code.unwrap_or(0),
            reason: resp.reason.unwrap_or(""),
            len,
            headers: resp.headers,
        }),
        httparse::Status::Partial => httparse::Status::Partial,
    })
}

/// How a response's body ends.
pub(super) struct Framing {
    /// `None`: at the end of the stream (no length, no chunked coding).
    pub body: Option<BodyState>,
    /// The backend connection can carry another request afterwards.
    pub reusable: bool,
    pub status: u16,
    pub content_length: Option<u64>,
    /// The body is chunked and the client speaks HTTP/1.0: it gets the data alone, and the end of the stream.
    pub dechunk: bool,
}

/// What of the request and the proxy's settings shapes the response head.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a> {
    pub head_request: bool,
    pub http10: bool,
    pub set_cookie: Option<&'a str>,
    pub via: bool,
    /// `Strict-Transport-Security` goes on it.
    pub hsts: bool,
    /// Location-type fields go back under this path (with the Host the client asked for).
    pub revproxy: Option<(&'a str, Option<&'a str>)>,
}

/// Writes the head to give the client for a backend's response head, and says how its body ends. `Err` for a
/// head no client should get.
pub(super) fn response_head(
    resp: &RespHead<'_>,
    head: &[u8],
    asked: Asked<'_>,
    close: &mut bool,
    out: &mut Vec<u8>,
) -> Result<Framing, &'static str> {
    let Asked {
        head_request,
        http10,
        set_cookie,
        via,
        hsts,
        revproxy,
    } = asked;
    let status = resp.code;
    let f = Fields::scan(resp.headers);
    if f.content_length_conflict {
        return Err("conflicting Content-Length values");
    }
    let (cl, te) = (f.content_length, f.transfer_encoding);
    let chunked = te.is_some_and(framing::ends_chunked);
    let length = match cl {
        Some(v) if te.is_none() => Some(framing::parse_length(v).ok_or("invalid Content-Length")?),
        _ => None,
    };
    // RFC 9112 §6.3, in its order.
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Some(BodyState::Done)
    } else if te.is_some() {
        chunked.then(BodyState::chunked)
    } else {
        length.map(BodyState::length)
    };
    let dechunk = http10 && chunked && body.is_some_and(|b| !b.done());
    if body.is_none() || dechunk {
        *close = true;
    }
    out.clear();
    // The status line as it came when it is already HTTP/1.1 with CRLF; written anew otherwise.
    match head.iter().position(|b| *b == b'\n') {
        Some(eol) if head.starts_with(b"HTTP/1.1 ") && head[..eol].ends_with(b"\r") => {
            out.extend_from_slice(&head[..=eol])
        }
        _ => {
            out.extend_from_slice(b"HTTP/1.1 ");
            number(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(resp.reason.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    // Content-Length stays when it frames the body (no Transfer-Encoding); chunked coding passes through as is.
    // The body passes through as it is coded, so Transfer-Encoding does too (all its codings, not just chunked);
    // Content-Length goes when Transfer-Encoding frames the body.
    let lengths = if te.is_some() {
        f.content_length_lines
    } else {
        f.repeated_lengths()
    };
    let codings = if dechunk {
        0
    } else {
        f.transfer_encoding_lines
    };
    // Location-type lines the route rewrites are left out here and written anew.
    let (moved, rewritten) = match revproxy {
        Some((root, host)) => relocated(resp.headers, root, host),
        None => (0, Vec::new()),
    };
    copy_lines(
        out,
        head,
        resp.headers,
        (f.hop_by_hop & !codings) | lengths | moved,
    );
    for (name, value) in rewritten {
        header(out, name.as_bytes(), value.as_bytes());
    }
    if hsts
        && !resp
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("strict-transport-security"))
    {
        header(out, b"strict-transport-security", rewrite::HSTS.as_bytes());
    }
    if let Some(c) = set_cookie {
        header(out, b"set-cookie", c.as_bytes());
    }
    if via {
        out.extend_from_slice(b"via: 1.1 rattan\r\n");
    }
    out.extend_from_slice(connection_line(*close, http10));
    out.extend_from_slice(b"\r\n");
    Ok(Framing {
        body,
        reusable: resp.minor == 1 && !f.conn.close && body.is_some(),
        status,
        content_length: length,
        dechunk,
    })
}

/// The Location-type fields `revproxy` rewrites: which lines, and their new values.
fn relocated<'h>(
    headers: &[httparse::Header<'h>],
    root: &str,
    host: Option<&str>,
) -> (Lines, Vec<(&'h str, String)>) {
    let mut moved: Lines = 0;
    let mut rewritten = Vec::new();
    for (i, h) in headers.iter().enumerate().take(Lines::BITS as usize) {
        let is_location = rewrite::LOCATION_FIELDS
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n));
        let new = is_location
            .then(|| std::str::from_utf8(h.value).ok())
            .flatten()
            .and_then(|v| rewrite::revproxy(root, v, host));
        if let Some(v) = new {
            moved |= 1 << i;
            rewritten.push((h.name, v));
        }
    }
    (moved, rewritten)
}

/// How much of `bytes` belongs to the response body (all of it when the body runs to the end of the stream);
/// with `data`, chunked coding is taken off into it (for an HTTP/1.0 client).
pub(super) fn body_part(
    state: &mut Option<BodyState>,
    bytes: &[u8],
    data: Option<&mut Vec<u8>>,
) -> Result<usize, framing::BadFraming> {
    match (state, data) {
        (Some(s), Some(data)) => s.advance_with(bytes, |d| data.extend_from_slice(d)),
        (Some(s), None) => s.advance(bytes),
        (None, Some(data)) => {
            data.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        (None, None) => Ok(bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (body framing and reusable, or the error; the head written for the client; whether it closes)
    type Framed = (
        Result<(Option<BodyState>, bool), &'static str>,
        String,
        bool,
    );

    fn framing_of(resp: &[u8], head_request: bool) -> Framed {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(resp) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{other:?}"),
        };
        let head = RespHead {
            minor: r.version.unwrap_or(1),
            code: r.code.unwrap_or(0),
            reason: r.reason.unwrap_or(""),
            len: n,
            headers: r.headers,
        };
        let (mut close, mut out) = (false, Vec::new());
        let f = response_head(
            &head,
            &resp[..n],
            Asked {
                head_request,
                http10: false,
                set_cookie: Some("c=1"),
                via: false,
                hsts: false,
                revproxy: None,
            },
            &mut close,
            &mut out,
        )
        .map(|f| (f.body, f.reusable));
        (f, String::from_utf8(out).unwrap(), close)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (f, out, close) = framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
            false,
        );
        assert_eq!(f, Ok((Some(BodyState::Length(5)), true)));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nset-cookie: c=1\r\n\r\n"
        );
        assert!(!close);
        // HEAD, 204 and 304 have no body whatever their fields say.
        for (resp, head) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..], true),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
            ),
        ] {
            assert_eq!(framing_of(resp, head).0, Ok((Some(BodyState::Done), true)));
        }
        // Transfer-Encoding frames and stays; the length goes.
        let (f, out, _) = framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(f, Ok((Some(BodyState::chunked()), true)));
        assert!(
            out.contains("Transfer-Encoding: chunked\r\n") && !out.contains("Content-Length"),
            "{out}"
        );
        // No length, or a coding that is not chunked last: the body ends with the connection, the client's too.
        for resp in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            let (f, out, close) = framing_of(resp, false);
            assert_eq!(f, Ok((None, false)));
            assert!(close && out.ends_with("connection: close\r\n\r\n"), "{out}");
        }
        // HTTP/1.0 and `Connection: close` backends are not reused; HTTP/1.1 goes to the client.
        let (f, out, _) = framing_of(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert_eq!(f, Ok((Some(BodyState::Length(1)), false)));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(
            framing_of(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .0,
            Ok((Some(BodyState::Length(1)), false))
        );
        assert!(framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .0
        .is_err());
        assert!(
            framing_of(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false)
                .0
                .is_err()
        );
    }

    #[test]
    fn redirects_go_back_under_the_public_path_and_hsts_is_added() {
        let resp = b"HTTP/1.1 302 Found\r\nLocation: /login\r\nX-A: 1\r\nContent-Location: http://other.example/x\r\nContent-Length: 0\r\n\r\n";
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut fast = [httparse::EMPTY_HEADER; head::MAX];
        let httparse::Status::Complete(h) = parse(resp, &mut fast, &mut slots).unwrap() else {
            panic!("partial");
        };
        let (mut close, mut out) = (false, Vec::new());
        let asked = Asked {
            head_request: false,
            http10: false,
            set_cookie: None,
            via: false,
            hsts: true,
            revproxy: Some(("/app", Some("web.example.com"))),
        };
        response_head(&h, &resp[..h.len], asked, &mut close, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Location: /app/login\r\n"), "{out}");
        assert!(!out.contains("Location: /login"), "{out}");
        assert!(
            out.contains("Content-Location: http://other.example/x\r\n"),
            "{out}"
        );
        assert!(out.contains("X-A: 1\r\n"), "{out}");
        assert!(
            out.contains("strict-transport-security: max-age=15768000\r\n"),
            "{out}"
        );
    }
}
