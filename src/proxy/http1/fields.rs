//! One pass over a head's fields (request or response): what frames the body, what `Connection` says, and which
//! lines are connection-specific (RFC 9110 §7.6.1: never forwarded, in either direction).

use super::buf::MAX_HEADERS;
use super::framing;

/// `name` is `lower` in any case. `lower` has only lower-case letters and '-', onto which `| 0x20` maps nothing
/// else but CR, a byte httparse never leaves in a name or a value: one OR per byte instead of a case fold, and
/// a word of bytes at a time (the last word overlapping the one before).
pub(super) fn is(name: &[u8], lower: &[u8]) -> bool {
    fn word(s: &[u8], i: usize) -> u64 {
        s.get(i..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |w| u64::from_ne_bytes(*w))
    }
    const CASE: u64 = u64::from_ne_bytes([0x20; 8]);
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b);
    }
    let mut i = 0;
    loop {
        let at = i.min(n - 8);
        if word(name, at) | CASE != word(lower, at) {
            return false;
        }
        if at == n - 8 {
            return true;
        }
        i += 8;
    }
}

/// Header lines by index, as bits (a head has at most `MAX_HEADERS`).
pub(super) type Lines = u128;
const _: () = assert!(MAX_HEADERS <= Lines::BITS as usize);

/// What one pass over a head's fields finds: the framing and connection fields, and which lines are
/// connection-specific (RFC 9110 §7.6.1: never forwarded, in either direction).
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub host: Option<&'a [u8]>,
    pub hosts: usize,
    pub content_length: Option<&'a [u8]>,
    pub content_length_conflict: bool,
    pub content_length_lines: Lines,
    /// The last Transfer-Encoding value (its last coding is the one that frames).
    pub transfer_encoding: Option<&'a [u8]>,
    pub transfer_encoding_lines: Lines,
    /// How often `chunked` appears across every Transfer-Encoding line (more than once is refused).
    pub chunked: usize,
    /// Expect lines saying `100-continue`: answered here, not forwarded.
    pub continue_lines: Lines,
    pub upgrade: Option<&'a [u8]>,
    pub conn: ConnectionTokens<'a>,
    pub hop_by_hop: Lines,
    pub x_forwarded_for: Lines,
    /// X-Forwarded-Host, -Proto, -Port: replaced by the proxy's own.
    pub x_forwarded: Lines,
    /// The client's (or a proxy in front's) X-Request-Id: forwarded as it is; one is made when there is none.
    pub request_id: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Content-Length lines after the first (all the same value, or the head was refused): one goes on.
    pub fn repeated_lengths(&self) -> Lines {
        let l = self.content_length_lines;
        l & !(l & l.wrapping_neg())
    }

    pub fn scan(headers: &[httparse::Header<'a>]) -> Fields<'a> {
        let mut f = Fields::default();
        for (i, h) in headers.iter().enumerate() {
            let (n, bit) = (h.name.as_bytes(), 1 << i);
            // By length first: most names are settled there.
            match n.len() {
                2 if is(n, b"te") => f.hop_by_hop |= bit,
                4 if is(n, b"host") => {
                    f.host = f.host.or(Some(h.value));
                    f.hosts += 1;
                }
                6 if is(n, b"expect")
                    && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") =>
                {
                    f.continue_lines |= bit
                }
                7 if is(n, b"upgrade") => {
                    f.upgrade = Some(h.value);
                    f.hop_by_hop |= bit;
                }
                7 if is(n, b"trailer") => f.hop_by_hop |= bit,
                10 if is(n, b"connection") => {
                    f.conn.add(h.value);
                    f.hop_by_hop |= bit;
                }
                10 if is(n, b"keep-alive") => f.hop_by_hop |= bit,
                12 if is(n, b"x-request-id") => f.request_id = f.request_id.or(Some(h.value)),
                14 if is(n, b"content-length") => {
                    match f.content_length {
                        Some(prev) if prev.trim_ascii() != h.value.trim_ascii() => {
                            f.content_length_conflict = true
                        }
                        _ => f.content_length = Some(h.value),
                    }
                    f.content_length_lines |= bit;
                }
                15 if is(n, b"x-forwarded-for") => f.x_forwarded_for |= bit,
                16 if is(n, b"proxy-connection") => f.hop_by_hop |= bit,
                16 if is(n, b"x-forwarded-host") || is(n, b"x-forwarded-port") => {
                    f.x_forwarded |= bit
                }
                17 if is(n, b"transfer-encoding") => {
                    f.transfer_encoding = Some(h.value);
                    f.chunked += framing::chunked_count(std::iter::once(h.value));
                    f.transfer_encoding_lines |= bit;
                    f.hop_by_hop |= bit;
                }
                17 if is(n, b"x-forwarded-proto") => f.x_forwarded |= bit,
                18 if is(n, b"proxy-authenticate") => f.hop_by_hop |= bit,
                19 if is(n, b"proxy-authorization") => f.hop_by_hop |= bit,
                _ => {}
            }
        }
        // Fields that `Connection` names are connection-specific too (rare: a second pass only then).
        if !f.conn.named.is_empty() {
            for (i, h) in headers.iter().enumerate() {
                if f.conn.names(h.name) {
                    f.hop_by_hop |= 1 << i;
                }
            }
        }
        f
    }
}

/// The comma-separated tokens of a `Connection` value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What `Connection` headers say: `close`, `upgrade`, and the other fields they name (hop-by-hop too).
#[derive(Default)]
pub(super) struct ConnectionTokens<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub named: Vec<&'a [u8]>,
}

impl<'a> ConnectionTokens<'a> {
    fn add(&mut self, value: &'a [u8]) {
        // The usual value, without splitting.
        if is(value, b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        for t in tokens(value) {
            if is(t, b"close") {
                self.close = true;
            } else if is(t, b"upgrade") {
                self.upgrade = true;
            } else if is(t, b"keep-alive") {
                self.keep_alive = true;
            } else if !crate::proxy::h2::never_named(t) {
                self.named.push(t);
            }
        }
    }

    fn names(&self, name: &str) -> bool {
        !self.named.is_empty()
            && self
                .named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

pub(super) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Copies the header lines of `head` (a whole head, through its blank line) but those in `leave`, as they came:
/// runs of kept lines in one copy each. A line not ended by CRLF (httparse accepts a bare LF) is written anew.
pub(super) fn copy_lines(
    out: &mut Vec<u8>,
    head: &[u8],
    headers: &[httparse::Header<'_>],
    leave: Lines,
) {
    let base = head.as_ptr() as usize;
    // Where the blank line that ends the head begins (CRLF or a bare LF).
    let last_end = head.len() - if head.ends_with(b"\n\r\n") { 2 } else { 1 };
    let start_of = |h: &httparse::Header<'_>| h.name.as_ptr() as usize - base;
    let mut run = headers.first().map_or(last_end, start_of);
    for (i, h) in headers.iter().enumerate() {
        let start = start_of(h);
        let end = headers.get(i + 1).map_or(last_end, start_of);
        let kept = leave & (1 << i) == 0;
        if !kept || !head[start..end].ends_with(b"\r\n") {
            out.extend_from_slice(&head[run..start]);
            if kept {
                header(out, h.name.as_bytes(), h.value);
            }
            run = end;
        }
    }
    out.extend_from_slice(&head[run..last_end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_req(head: &[u8]) -> (usize, Vec<httparse::Header<'_>>) {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut hs);
        let n = match r.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{other:?}"),
        };
        (n, r.headers.to_vec())
    }

    #[test]
    fn fields_are_classified_in_one_pass() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nCONNECTION: keep-alive, X-Hop\r\nx-hop: 1\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\ncontent-length:  3 \r\nKeep-Alive: 5\r\nX-Other: y\r\n\r\n";
        let (_, hs) = parse_req(head);
        let f = Fields::scan(&hs);
        assert_eq!(f.host, Some(&b"a"[..]));
        // keep-alive is a token of Connection's own, not a field it names.
        assert!(!f.conn.close && f.conn.named == [&b"X-Hop"[..]]);
        // Connection (1), the field it names (2), TE (3), Keep-Alive (8).
        assert_eq!(f.hop_by_hop, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 8);
        assert_eq!((f.x_forwarded_for, f.x_forwarded), (1 << 4, 1 << 5));
        assert!(!f.content_length_conflict, "equal values are one length");
        let (_, hs) =
            parse_req(b"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(Fields::scan(&hs).content_length_conflict);
        // Case folding by OR is exact for these names: no other byte lands on them.
        assert!(is(b"Transfer-Encoding", b"transfer-encoding"));
        // The one byte OR maps onto '-' besides '-' is CR, which never gets past either parser.
        let mut hs = [httparse::EMPTY_HEADER; 4];
        assert!(httparse::Request::new(&mut hs)
            .parse(b"GET / HTTP/1.1\r\nTransfer\rEncoding: chunked\r\n\r\n")
            .is_err());
        let mut fast = [httparse::EMPTY_HEADER; super::super::head::MAX];
        assert!(super::super::head::response(
            b"HTTP/1.1 200 OK\r\nConnection: close\rX\r\n\r\n",
            &mut fast
        )
        .is_none());
        assert!(!is(b"Transfer_Encoding", b"transfer-encoding"));
    }

    /// The word-at-a-time compare says what the byte-wise one says, for every name the scan looks for with any
    /// one byte changed to any value, and for names one byte longer or shorter.
    #[test]
    fn word_compare_is_the_bytewise_one() {
        let bytewise =
            |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x | 0x20 == *y);
        for lower in [
            &b"te"[..],
            b"host",
            b"expect",
            b"upgrade",
            b"connection",
            b"keep-alive",
            b"content-length",
            b"x-forwarded-for",
            b"proxy-connection",
            b"transfer-encoding",
            b"proxy-authenticate",
            b"proxy-authorization",
        ] {
            let upper = lower.to_ascii_uppercase();
            assert!(is(&upper, lower));
            for i in 0..lower.len() {
                for v in 0..=255u8 {
                    let mut n = upper.clone();
                    n[i] = v;
                    assert_eq!(is(&n, lower), bytewise(&n, lower), "{n:?}");
                }
            }
            assert!(!is(&[lower, b"x"].concat(), lower));
            assert!(!is(&lower[1..], lower));
        }
    }

    #[test]
    fn lines_are_copied_as_they_came_without_the_left_ones() {
        let head =
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Drop: 1\r\nX-Keep:  v \r\nX-Drop-Too: 2\r\n\r\n";
        let (n, hs) = parse_req(head);
        let mut out = Vec::new();
        copy_lines(&mut out, &head[..n], &hs, 1 << 1 | 1 << 3);
        assert_eq!(out, b"Host: a\r\nX-Keep:  v \r\n");
        // A bare LF line is written anew with CRLF; the rest stay as they came.
        let head = b"GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\r\n";
        let (n, hs) = parse_req(head);
        let mut out = Vec::new();
        copy_lines(&mut out, &head[..n], &hs, 0);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n");
        let (n, hs) = parse_req(b"GET / HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        copy_lines(&mut out, &b"GET / HTTP/1.1\r\n\r\n"[..n], &hs, 0);
        assert!(out.is_empty());
    }
}
