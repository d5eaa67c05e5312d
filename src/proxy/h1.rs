//! HTTP/1, the one implementation. One task per client connection reads each request head once (httparse, no
//! header map), routes it, writes the rewritten head to a pooled backend connection that it drives itself, and
//! passes the response back with its body bytes untouched: for a small request, two reads and two writes, nothing
//! else in between.
//!
//! It takes every HTTP/1 request: bodies of any size (the first 64 KiB read before a backend is chosen, the rest
//! streamed), chunked ones passed through as they came, `Expect: 100-continue` (answered here, once), HTTP/1.0 with
//! and without keep-alive (a chunked response reaches it decoded), absolute-form targets, and upgrades. An HTTP/2
//! preface hands the connection to hyper, which serves HTTP/2 alone.

use super::backend::{InFlight, Slot};
use super::deadline::{Deadline, Deadlines};
use super::error::{Blame, Error};
use super::framing::{self, BodyState};
use super::head;
use super::AccessLog;
use super::{pool, Answer, ConnInfo, Picker, Proxy, Routed};
use crate::marathon::address::Endpoint;
use crate::rules::acl::{Headers, Request as AclRequest};
use crate::rules::table::Route;
use crate::snapshot::Snapshot;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Request bodies up to this size are read whole before the request goes out (so a connect failure can send them
/// again elsewhere, and a backend that answers early can never stall the upload); larger ones stream through hyper.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Backend reads: a response head and what of the body comes with it, then the body in pieces of this size.
const BACKEND_BUF: usize = 16 * 1024;
const CLIENT_BUF: usize = 4 * 1024;

/// What every connection of the listeners shares.
pub struct Front {
    pub proxy: Arc<Proxy>,
    /// HTTP/2: prior knowledge on the plain port, ALPN `h2` on TLS.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Set once the drain begins: responses then say `Connection: close`, idle connections close.
    pub draining: AtomicBool,
    /// Notified once `draining` is set, for the connections waiting idle.
    pub drain: tokio::sync::Notify,
    pub deadlines: Arc<Deadlines>,
}

/// The client side of a connection, as the forwarded headers tell it.
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The port the client connected to (X-Forwarded-Port).
    pub port: u16,
    /// The client's address and CRLF, to end X-Forwarded-For.
    ip_line_end: String,
    /// The forwarded fields that are the same for every request of the connection.
    fixed_fields: String,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool, port: u16, via: bool) -> Peer {
        let proto = if tls { "https" } else { "http" };
        let via = if via { "via: 1.1 rattan\r\n" } else { "" };
        Peer {
            addr,
            tls,
            port,
            ip_line_end: format!("{}\r\n", addr.ip()),
            fixed_fields: format!(
                "x-forwarded-proto: {proto}\r\nx-forwarded-port: {port}\r\n{via}"
            ),
        }
    }
}

/// Bytes read and not used yet.
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once more (0 at the end of the stream), making room first: unread bytes move to the front, and the
    /// buffer grows up to `max` (from `initial` the first time).
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        initial: usize,
        max: usize,
    ) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < max {
                // Not `clamp`: a `--max-header-size` below `initial` must cap the buffer, not panic.
                let grown = (self.data.len() * 2).max(initial).min(max);
                self.data.resize(grown, 0);
            } else {
                return Err(io::Error::other("buffer full"));
            }
        }
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// The connection's deadline, with the sweeper's clock.
#[derive(Clone, Copy)]
struct Timeouts<'a> {
    all: &'a Deadlines,
    mine: &'a Deadline,
}

impl Timeouts<'_> {
    /// `fut`, unless `after` passes first. The deadline is set only when `fut` has to wait: most writes finish on
    /// their first poll.
    async fn within<F: Future>(self, after: Duration, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if !armed {
                self.all.arm(self.mine, after);
                armed = true;
            }
            self.mine.poll_expired(cx).map(|()| None)
        })
        .await
    }
}

/// `name` is `lower` in any case. `lower` has only lower-case letters and '-', onto which `| 0x20` maps nothing
/// else but CR, a byte httparse never leaves in a name or a value: one OR per byte instead of a case fold, and
/// a word of bytes at a time (the last word overlapping the one before).
fn is(name: &[u8], lower: &[u8]) -> bool {
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
type Lines = u128;
const _: () = assert!(MAX_HEADERS <= Lines::BITS as usize);

/// What one pass over a head's fields finds: the framing and connection fields, and which lines are
/// connection-specific (RFC 9110 §7.6.1: never forwarded, in either direction).
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    hosts: usize,
    content_length: Option<&'a [u8]>,
    content_length_conflict: bool,
    content_length_lines: Lines,
    /// The last Transfer-Encoding value (its last coding is the one that frames).
    transfer_encoding: Option<&'a [u8]>,
    transfer_encoding_lines: Lines,
    /// How often `chunked` appears across every Transfer-Encoding line (more than once is refused).
    chunked: usize,
    /// Expect lines saying `100-continue`: answered here, not forwarded.
    continue_lines: Lines,
    upgrade: Option<&'a [u8]>,
    conn: ConnectionTokens<'a>,
    hop_by_hop: Lines,
    x_forwarded_for: Lines,
    /// X-Forwarded-Host, -Proto, -Port: replaced by the proxy's own.
    x_forwarded: Lines,
}

impl<'a> Fields<'a> {
    /// Content-Length lines after the first (all the same value, or the head was refused): one goes on.
    fn repeated_lengths(&self) -> Lines {
        let l = self.content_length_lines;
        l & !(l & l.wrapping_neg())
    }

    fn scan(headers: &[httparse::Header<'a>]) -> Fields<'a> {
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
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    named: Vec<&'a [u8]>,
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
            } else if !super::never_named(t) {
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

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The Connection line a response needs: `close` when the connection ends after it; `keep-alive` when it does not
/// and the client speaks HTTP/1.0 (which closes by default).
fn connection_line(close: bool, http10: bool) -> &'static [u8] {
    match (close, http10) {
        (true, _) => b"connection: close\r\n",
        (false, true) => b"connection: keep-alive\r\n",
        (false, false) => b"",
    }
}

/// An answer of the proxy's own, as HTTP/1.1 bytes.
fn write_answer(out: &mut Vec<u8>, a: &Answer, close: bool, http10: bool, via: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    number(out, u64::from(a.status.as_u16()));
    out.push(b' ');
    out.extend_from_slice(a.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    number(out, a.body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if let Some(l) = &a.location {
        header(out, b"location", l.as_bytes());
    }
    out.extend_from_slice(connection_line(close, http10));
    if via {
        out.extend_from_slice(b"via: 1.1 rattan\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a.body.as_bytes());
}

/// What the access log keeps of a request (taken only when it is on).
struct LogInfo {
    method: http::Method,
    uri: http::Uri,
    host: Option<String>,
    version: http::Version,
}

/// A request head read and routed, with its rewritten head in the connection's `out`.
struct Forward<'s> {
    route: &'s Route,
    picker: Picker<'s, 's>,
    /// Where the request body ends (`None`: it has none).
    body: Option<BodyState>,
    /// The client asked to close after this request.
    close: bool,
    upgrade: bool,
    head_request: bool,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
    http10: bool,
    /// Where each backend's own Host line goes in the head, for a client that sent none (HTTP/1.0).
    host_at: Option<usize>,
}

enum Plan<'s> {
    /// The head is not complete yet.
    More,
    /// HTTP/2 with prior knowledge: hyper's, for the rest of the connection.
    H2,
    /// Answered without a backend; `close` ends the connection after it.
    Answer {
        route: Option<&'s Route>,
        answer: Answer,
        close: bool,
        http10: bool,
    },
    Forward(Forward<'s>),
}

/// A request target: origin-form as it is; absolute-form split into its authority and the origin-form part.
fn split_target(target: &str) -> Result<(Option<&str>, std::borrow::Cow<'_, str>), &'static str> {
    if target.starts_with('/') || target == "*" {
        return Ok((None, target.into()));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find(|s| {
            target
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        })
        .map(|s| &target[s.len()..])
        .ok_or("request target is neither a path nor an http URL")?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return Err("request target has no host");
    }
    Ok((
        Some(authority),
        match path.as_bytes().first() {
            Some(b'/') => path.into(),
            _ => format!("/{path}").into(),
        },
    ))
}

/// Reads the request head in `buf` (when whole), routes it and writes the head to send into `out`; `log` gets
/// what the access log needs, when it is on.
#[allow(clippy::too_many_arguments)]
fn plan<'s>(
    proxy: &'s Proxy,
    snap: &'s Snapshot,
    buf: &[u8],
    peer: &Peer,
    out: &mut Vec<u8>,
    head_len: &mut usize,
    log: &mut Option<LogInfo>,
) -> Plan<'s> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let refuse = |answer: Answer| Plan::Answer {
        route: None,
        answer,
        close: true,
        http10: false,
    };
    let bad = |msg: &str| {
        refuse(Answer::new(
            StatusCode::BAD_REQUEST,
            format!("rattan: {msg}\n"),
        ))
    };
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => *head_len = n,
        Ok(httparse::Status::Partial) => return Plan::More,
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(Answer::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "rattan: too many header fields\n".into(),
            ))
        }
        Err(e) => return bad(&format!("malformed request head ({e})")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return bad("malformed request head");
    };
    let http10 = minor == 0;
    let (authority, path_and_query) = match split_target(target) {
        Ok(t) => t,
        Err(why) => return bad(why),
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let f = Fields::scan(headers);
    let smuggling = |why| refuse(Proxy::smuggling_refused(peer.addr, why));
    if f.transfer_encoding.is_some() && f.content_length.is_some() {
        return smuggling(framing::CL_AND_TE);
    }
    if f.chunked > 1 {
        return smuggling(framing::CHUNKED_TWICE);
    }
    // `chunked` alone: another coding before it is legal but unused by clients, and one a backend reads
    // differently (an unknown name, a stray character) is how smugglers try.
    if f.transfer_encoding.is_some_and(|te| {
        f.transfer_encoding_lines.count_ones() > 1
            || !te.trim_ascii().eq_ignore_ascii_case(b"chunked")
    }) {
        return smuggling(framing::NOT_CHUNKED);
    }
    if f.transfer_encoding.is_some() && http10 {
        return smuggling(framing::TE_IN_HTTP10);
    }
    if f.content_length_conflict {
        return bad("conflicting Content-Length values");
    }
    if f.hosts > 1 {
        return bad("more than one Host header");
    }
    // An absolute-form target must name the host Host names: a proxy that routed by one and forwarded the other
    // would let a client pick routes the rules do not give it (HAProxy answers 400 too).
    if let (Some(a), Some(h)) = (authority, f.host) {
        if !a.as_bytes().eq_ignore_ascii_case(h) {
            return bad("Host does not match the request target's authority");
        }
    }
    if f.hosts == 0 && authority.is_none() && !http10 {
        return bad("HTTP/1.1 request without Host");
    }
    let body = match (
        f.transfer_encoding,
        f.content_length.map(framing::parse_length),
    ) {
        (Some(_), _) => Some(BodyState::chunked()),
        (None, None | Some(Some(0))) => None,
        (None, Some(Some(n))) => Some(BodyState::Length(n)),
        (None, Some(None)) => return bad("invalid Content-Length"),
    };
    // Host is ASCII but for the odd client: checked a word at a time, then taken as it is.
    let host = f.host.map(|h| {
        if h.is_ascii() {
            // SAFETY: checked just above.
            Ok(unsafe { head::ascii(h) })
        } else {
            std::str::from_utf8(h)
        }
    });
    let Some(host) = host.transpose().ok() else {
        return bad("Host is not UTF-8");
    };
    let host = host.or(authority);
    let path = &path_and_query[..path_and_query
        .bytes()
        .position(|b| b == b'?')
        .unwrap_or(path_and_query.len())];
    if proxy.opts.access_log != AccessLog::Off {
        *log = Some(LogInfo {
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            uri: target.parse().unwrap_or_default(),
            host: host.map(str::to_string),
            version: if http10 {
                http::Version::HTTP_10
            } else {
                http::Version::HTTP_11
            },
        });
    }
    // HTTP/1.0 closes after each request unless it asks to keep alive.
    let close = f.conn.close || (http10 && !f.conn.keep_alive);
    let routed = proxy.route(
        snap,
        &AclRequest {
            path,
            method,
            host: host.map(super::host_name),
            headers: Headers::Raw(headers),
            src: Some(peer.addr.ip()),
        },
        host,
        &path_and_query,
        peer.tls,
    );
    let (route, backends) = match routed {
        Routed::Forward(route, backends) => (route, backends),
        Routed::Answer(route, answer) => {
            return Plan::Answer {
                route,
                answer,
                // Its body was not read: the next request could not be found.
                close: body.is_some() || close,
                http10,
            };
        }
    };
    let upgrade = f.upgrade.filter(|_| f.conn.upgrade && !http10);
    // The head to send: the request line (origin-form, HTTP/1.1 to every backend), the client's lines as they came
    // without the hop-by-hop ones (but Transfer-Encoding: the body goes as it came), then the forwarded ones.
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let head = &buf[..*head_len];
    copy_lines(
        out,
        head,
        headers,
        (f.hop_by_hop & !f.transfer_encoding_lines)
            | f.continue_lines
            | f.x_forwarded_for
            | f.x_forwarded
            | f.repeated_lengths(),
    );
    let mut host_at = None;
    match (f.host, authority) {
        (Some(_), _) => {}
        (None, Some(a)) => header(out, b"host", a.as_bytes()),
        (None, None) => host_at = Some(out.len()),
    }
    // Every X-Forwarded-For line as one list, in order, then this client.
    out.extend_from_slice(b"x-forwarded-for: ");
    if f.x_forwarded_for != 0 {
        for (i, h) in headers.iter().enumerate() {
            if f.x_forwarded_for & (1 << i) != 0 {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(peer.ip_line_end.as_bytes());
    if let Some(h) = host {
        header(out, b"x-forwarded-host", h.as_bytes());
    }
    out.extend_from_slice(peer.fixed_fields.as_bytes());
    if let Some(proto) = upgrade {
        header(out, b"upgrade", proto);
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let cookie = route
        .sticky
        .then(|| super::sticky_cookie(Headers::Raw(headers)))
        .flatten();
    Plan::Forward(Forward {
        route,
        picker: Picker::new(&proxy.balancer, route, backends, cookie),
        body,
        close,
        upgrade: upgrade.is_some(),
        head_request: method == "HEAD",
        // HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1).
        expects_continue: f.continue_lines != 0 && !http10 && body.is_some(),
        http10,
        host_at,
    })
}

/// Copies the header lines of `head` (a whole head, through its blank line) but those in `leave`, as they came:
/// runs of kept lines in one copy each. A line not ended by CRLF (httparse accepts a bare LF) is written anew.
fn copy_lines(out: &mut Vec<u8>, head: &[u8], headers: &[httparse::Header<'_>], leave: Lines) {
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

/// A backend's response head, read by `head` or by httparse.
struct RespHead<'a> {
    minor: u8,
    code: u16,
    reason: &'a str,
    /// Bytes up to and including the blank line.
    len: usize,
    headers: &'a [httparse::Header<'a>],
}

/// How a response's body ends.
struct Framing {
    /// `None`: at the end of the stream (no length, no chunked coding).
    body: Option<BodyState>,
    /// The backend connection can carry another request afterwards.
    reusable: bool,
    status: u16,
    content_length: Option<u64>,
    /// The body is chunked and the client speaks HTTP/1.0: it gets the data alone, and the end of the stream.
    dechunk: bool,
}

/// What of the request and the proxy's settings shapes the response head.
#[derive(Clone, Copy)]
struct Asked<'a> {
    head_request: bool,
    http10: bool,
    set_cookie: Option<&'a str>,
    via: bool,
}

/// Writes the head to give the client for a backend's response head, and says how its body ends. `Err` for a
/// head no client should get.
fn response_head(
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
    copy_lines(out, head, resp.headers, (f.hop_by_hop & !codings) | lengths);
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

/// A client connection on the fast path.
struct Client<S> {
    io: S,
    buf: Buf,
    /// Backend reads, kept with the connection so a request costs no allocation.
    rbuf: Buf,
    /// The head (and body) being written, to the backend and then to the client.
    out: Vec<u8>,
    /// When the last response head went out: the backend connection it came on is idle from then.
    idle_since: Instant,
    held: Option<Held>,
}

/// The backend connection the client's last request used, kept for its next request while the balancer picks
/// the same backend: no pool lock, and it stays warm. Back to that backend's pool when the client goes elsewhere
/// or leaves.
struct Held {
    slot: Arc<Slot>,
    conn: Option<TcpStream>,
    since: Instant,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slot.held.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = self.conn.take() {
            pool::put_raw(&self.slot, conn, self.since);
        }
    }
}

impl<S> Client<S> {
    /// The held connection, when it is to `slot`'s backend and still usable.
    fn take_held(
        &mut self,
        slot: &Arc<Slot>,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<TcpStream> {
        let held = self.held.as_mut()?;
        if !Arc::ptr_eq(&held.slot, slot) {
            self.held = None;
            return None;
        }
        let conn = held.conn.take()?;
        (now.saturating_duration_since(held.since) < idle_timeout && pool::still_open(&conn))
            .then_some(conn)
    }

    fn hold(&mut self, slot: &Arc<Slot>, conn: TcpStream, since: Instant) {
        match &mut self.held {
            Some(h) if Arc::ptr_eq(&h.slot, slot) => {
                h.conn = Some(conn);
                h.since = since;
            }
            // As many held as the pool keeps idle, per backend: idle clients must not pin more than that.
            _ if slot.held.fetch_add(1, Ordering::Relaxed) >= pool::MAX_IDLE => {
                slot.held.fetch_sub(1, Ordering::Relaxed);
                self.held = None;
                pool::put_raw(slot, conn, since);
            }
            _ => {
                self.held = Some(Held {
                    slot: slot.clone(),
                    conn: Some(conn),
                    since,
                })
            }
        }
    }
}

/// What ended a wait for the client's next bytes.
enum Woke {
    Read(io::Result<usize>),
    Stop,
    Timeout,
}

/// How one request ended for the connection.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// Serves a client connection; returns when it closes.
pub async fn serve<S>(io: S, front: Arc<Front>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opts = &front.proxy.opts;
    let mut c = Client {
        io,
        buf: Buf::new(),
        rbuf: Buf::new(),
        out: Vec::new(),
        idle_since: Instant::now(),
        held: None,
    };
    // Registered from the start, polled once (to leave this task's waker); after that `draining` tells.
    let drained = front.drain.notified();
    tokio::pin!(drained);
    let mut drain_polled = false;
    let mut snap = front.proxy.publisher.load_full();
    let deadline = front.deadlines.register();
    let t = Timeouts {
        all: &front.deadlines,
        mine: &deadline,
    };
    let max_head = opts.max_header_bytes.max(1024);
    let mut first = true;
    loop {
        let mut head_len = 0;
        let mut log = None;
        // Waits for a whole head. Which deadline is set: the keep-alive one while no byte of it has come (after
        // the first request), then the header one from its first byte on, whatever the number of reads it takes.
        // An idle connection closes as soon as the drain begins.
        let mut armed: Option<bool> = None;
        let plan = loop {
            if !c.buf.is_empty() {
                if first && is_h2_preface(c.buf.bytes()) {
                    if c.buf.len() >= H2_PREFACE.len() {
                        break Plan::H2;
                    }
                } else {
                    // Loaded when the head is here: a keep-alive connection may have waited through many swaps.
                    front.proxy.publisher.refresh(&mut snap);
                    match plan(
                        &front.proxy,
                        &snap,
                        c.buf.bytes(),
                        &peer,
                        &mut c.out,
                        &mut head_len,
                        &mut log,
                    ) {
                        Plan::More if c.buf.len() >= max_head => {
                            break Plan::Answer {
                                route: None,
                                answer: Answer::new(
                                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    "rattan: request head too large\n".into(),
                                ),
                                close: true,
                                http10: false,
                            }
                        }
                        Plan::More => {}
                        p => break p,
                    }
                }
            }
            let idle = c.buf.is_empty();
            let woke = {
                let read = c.buf.fill(&mut c.io, CLIENT_BUF, max_head);
                tokio::pin!(read);
                let keep_alive = idle && !first;
                // Bytes, else the drain (only between requests), else the deadline, set only when the read has to
                // wait.
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = read.as_mut().poll(cx) {
                        return Poll::Ready(Woke::Read(r));
                    }
                    if idle && !drain_polled {
                        drain_polled = true;
                        let _ = drained.as_mut().poll(cx);
                    }
                    if idle && front.draining.load(Ordering::Relaxed) {
                        return Poll::Ready(Woke::Stop);
                    }
                    if armed != Some(keep_alive) {
                        let after = if keep_alive {
                            opts.keep_alive_timeout
                        } else {
                            opts.header_read_timeout
                        };
                        t.all.arm(t.mine, after);
                        armed = Some(keep_alive);
                    }
                    t.mine.poll_expired(cx).map(|()| Woke::Timeout)
                })
                .await
            };
            match woke {
                Woke::Read(Ok(n)) if n > 0 => {}
                Woke::Timeout if !idle => {
                    let a = Answer::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "rattan: request head not received in time\n".into(),
                    );
                    write_answer(&mut c.out, &a, true, false, opts.via);
                    let _ = t
                        .within(opts.header_read_timeout, write(&mut c.io, &c.out))
                        .await;
                    return;
                }
                _ => return,
            }
        };
        first = false;
        let started = Instant::now();
        let fwd = match plan {
            Plan::More => continue,
            Plan::H2 => {
                let info = ConnInfo {
                    peer: peer.addr,
                    tls: peer.tls,
                    port: peer.port,
                    activity: None,
                };
                let io = framing::Rewind::new(c.io, c.buf.bytes());
                serve_h2(io, &front, info).await;
                return;
            }
            Plan::Answer {
                route,
                answer,
                close,
                http10,
            } => {
                let close = close || front.draining.load(Ordering::Relaxed);
                write_answer(&mut c.out, &answer, close, http10, opts.via);
                c.idle_since = finish(
                    &front.proxy,
                    &peer,
                    log.as_ref(),
                    answer.status.as_u16(),
                    route,
                    None,
                    started,
                    Some(answer.body.len() as u64),
                );
                if !write_out(&mut c, opts, t).await || close {
                    let _ = c.io.shutdown().await;
                    return;
                }
                c.buf.consume(head_len);
                continue;
            }
            Plan::Forward(f) => f,
        };
        c.buf.consume(head_len);
        if fwd.expects_continue
            && c.buf.is_empty()
            && !matches!(
                t.within(opts.client_timeout, write(&mut c.io, CONTINUE))
                    .await,
                Some(Ok(()))
            )
        {
            return;
        }
        // The body's first part is read before any backend sees the request: bad chunk framing there is the
        // client's 400, never half a request at a backend; a small body is then whole, so a connect failure can
        // send it again elsewhere, and a backend that answers early never stalls its upload. The rest streams.
        let mut pump = Pump {
            state: fwd.body,
            pending: 0,
        };
        match pump.preread(&mut c, opts, t).await {
            Ok(()) => {}
            Err(e) => {
                if let Some(answer) = e.answer(Some(fwd.route), None) {
                    write_answer(&mut c.out, &answer, true, fwd.http10, opts.via);
                    finish(
                        &front.proxy,
                        &peer,
                        log.as_ref(),
                        answer.status.as_u16(),
                        Some(fwd.route),
                        None,
                        started,
                        Some(answer.body.len() as u64),
                    );
                    let _ = write_out(&mut c, opts, t).await;
                }
                let _ = c.io.shutdown().await;
                return;
            }
        }
        let m = crate::metrics::metrics();
        m.http_in_flight.inc();
        let next = forward(&front, &mut c, &peer, fwd, pump, started, log.as_ref(), t).await;
        m.http_in_flight.dec();
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = c.io.shutdown().await;
                return;
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn is_h2_preface(b: &[u8]) -> bool {
    H2_PREFACE.starts_with(&b[..b.len().min(H2_PREFACE.len())])
}

/// Counts a request done in the metrics and, with the access log on, logs it; returns the time now.
#[allow(clippy::too_many_arguments)]
fn finish(
    proxy: &Proxy,
    peer: &Peer,
    log: Option<&LogInfo>,
    status: u16,
    route: Option<&Route>,
    backend: Option<&Endpoint>,
    started: Instant,
    size: Option<u64>,
) -> Instant {
    let now = Proxy::record(route, status, started);
    if let Some(l) = log {
        super::access_log(
            proxy.opts.access_log,
            &super::AccessEntry {
                peer: peer.addr,
                method: &l.method,
                uri: &l.uri,
                version: l.version,
                host: l.host.as_deref(),
                status,
                size,
                app: route.map_or("", |r| r.app_id.as_str()),
                backend,
                tls: peer.tls,
                duration: now.saturating_duration_since(started),
            },
        );
    }
    now
}

/// The part of a request body still to come from the client, sent on to the backend as it arrives. Every wait in
/// it can be cancelled and taken up again: its position lives here, not in a future.
struct Pump {
    /// Where the body ends; `None` or done: all of it is in `c.out` or with the backend.
    state: Option<BodyState>,
    /// Bytes at the front of the client buffer that belong to the body and are not written yet.
    pending: usize,
}

/// The client's buffer grows to this for a body (heads stay within the header limit).
const BODY_BUF: usize = 64 * 1024;

impl Pump {
    fn unfinished(&self) -> bool {
        self.pending > 0 || self.state.as_ref().is_some_and(|s| !s.done())
    }

    /// Reads the body into `c.out` after the head, until it ends or [`MAX_BUFFERED_BODY`] bytes are in; each read
    /// waits at most the header timeout or the client timeout, whichever is shorter.
    async fn preread<S: AsyncRead + Unpin>(
        &mut self,
        c: &mut Client<S>,
        opts: &super::ProxyOptions,
        t: Timeouts<'_>,
    ) -> Result<(), Error> {
        let start = c.out.len();
        let wait = opts.header_read_timeout.min(opts.client_timeout);
        while let Some(state) = self.state.as_mut().filter(|s| !s.done()) {
            if c.out.len() - start >= MAX_BUFFERED_BODY as usize {
                break;
            }
            if c.buf.is_empty() {
                match t
                    .within(wait, c.buf.fill(&mut c.io, CLIENT_BUF, BODY_BUF))
                    .await
                {
                    None => return Err(Error::ClientStalled(wait)),
                    Some(Ok(n)) if n > 0 => {}
                    _ => return Err(Error::ClientGone),
                }
            }
            let room = MAX_BUFFERED_BODY as usize - (c.out.len() - start);
            let bytes = &c.buf.bytes()[..c.buf.len().min(room)];
            let take = state
                .advance(bytes)
                .map_err(|_| Error::BadBody("bad chunk framing"))?;
            c.out.extend_from_slice(&bytes[..take]);
            c.buf.consume(take);
        }
        Ok(())
    }

    /// Passes the rest of the body on, as it comes: each client read waits at most the client timeout, each
    /// backend write the backend timeout.
    async fn run<S, W>(
        &mut self,
        io: &mut S,
        buf: &mut Buf,
        to: &mut W,
        opts: &super::ProxyOptions,
        t: Timeouts<'_>,
    ) -> Result<(), Error>
    where
        S: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.pending == 0 {
                let Some(state) = self.state.as_mut().filter(|s| !s.done()) else {
                    return Ok(());
                };
                if buf.is_empty() {
                    match t
                        .within(opts.client_timeout, buf.fill(io, CLIENT_BUF, BODY_BUF))
                        .await
                    {
                        None => return Err(Error::ClientStalled(opts.client_timeout)),
                        Some(Ok(n)) if n > 0 => {}
                        _ => return Err(Error::ClientGone),
                    }
                }
                self.pending = state
                    .advance(buf.bytes())
                    .map_err(|_| Error::BadBody("bad chunk framing"))?;
                continue;
            }
            match t
                .within(opts.backend_timeout, to.write(&buf.bytes()[..self.pending]))
                .await
            {
                None => return Err(Error::Timeout(opts.backend_timeout)),
                Some(Ok(n)) if n > 0 => {
                    buf.consume(n);
                    self.pending -= n;
                }
                Some(Ok(_)) => return Err(Error::Failed("connection closed".into())),
                Some(Err(e)) => return Err(Error::Failed(e.to_string())),
            }
        }
    }
}

/// Reads the backend's next bytes into `c.rbuf` (0: it closed). While the request body is still coming, it goes
/// on to the backend meanwhile and only the pump's own waits are timed (the client's pace is not the backend's
/// fault); a backend that stops reading it may still answer. Then the backend timeout applies.
async fn backend_read<S>(
    c: &mut Client<S>,
    conn: &mut TcpStream,
    pump: &mut Pump,
    max: usize,
    opts: &super::ProxyOptions,
    t: Timeouts<'_>,
) -> Result<usize, Error>
where
    S: AsyncRead + Unpin,
{
    let Client { io, buf, rbuf, .. } = c;
    let (mut r, mut w) = conn.split();
    let fill = rbuf.fill(&mut r, BACKEND_BUF, max);
    tokio::pin!(fill);
    if pump.unfinished() {
        let pumped = {
            let run = pump.run(io, buf, &mut w, opts, t);
            tokio::pin!(run);
            tokio::select! {
                biased;
                read = fill.as_mut() => return read.map_err(|e| Error::Failed(e.to_string())),
                pumped = run => pumped,
            }
        };
        match pumped {
            Ok(()) => {}
            // The backend stopped taking the body: it may have answered already.
            Err(e) if e.blame() == Blame::Backend => {
                tracing::debug!(error = %e, "backend stopped reading the request body");
                pump.state = None;
                pump.pending = 0;
            }
            Err(e) => return Err(e),
        }
    }
    match t.within(opts.backend_timeout, fill).await {
        None => Err(Error::Timeout(opts.backend_timeout)),
        Some(r) => r.map_err(|e| Error::Failed(e.to_string())),
    }
}

/// What `forward` needs of the request besides its head.
struct Exchange<'a> {
    peer: &'a Peer,
    log: Option<&'a LogInfo>,
    started: Instant,
}

/// Sends the request in `c.out` to the route's backends until one answers, and passes its response to the client.
#[allow(clippy::too_many_arguments)]
async fn forward<S>(
    front: &Front,
    c: &mut Client<S>,
    peer: &Peer,
    f: Forward<'_>,
    mut pump: Pump,
    started: Instant,
    log: Option<&LogInfo>,
    t: Timeouts<'_>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = &front.proxy;
    let opts = &proxy.opts;
    let max_head = BACKEND_BUF.max(opts.max_header_bytes);
    let x = Exchange { peer, log, started };
    let Forward {
        route,
        mut picker,
        body,
        close,
        upgrade,
        head_request,
        expects_continue,
        http10,
        host_at,
    } = f;
    let bodyless = body.is_none();
    // What went wrong, told to the client; the connection closes after it unless the request was whole.
    let fail = |c: &mut Client<S>, e: Error, backend: Option<&Endpoint>, pump: &Pump| {
        let close = close || pump.unfinished() || e.blame() == Blame::Client;
        match e.answer(Some(route), backend) {
            Some(a) => {
                write_answer(&mut c.out, &a, close, http10, opts.via);
                c.idle_since = finish(
                    proxy,
                    x.peer,
                    x.log,
                    a.status.as_u16(),
                    Some(route),
                    backend,
                    x.started,
                    Some(a.body.len() as u64),
                );
                close
            }
            None => {
                c.out.clear();
                finish(
                    proxy,
                    x.peer,
                    x.log,
                    400,
                    Some(route),
                    backend,
                    x.started,
                    None,
                );
                true
            }
        }
    };
    let mut host_line = 0;
    let (backend, guard, mut conn) = loop {
        let Some((backend, guard)) = picker.next() else {
            let a = picker.exhausted();
            write_answer(&mut c.out, &a, close, http10, opts.via);
            c.idle_since = finish(
                proxy,
                peer,
                log,
                a.status.as_u16(),
                Some(route),
                None,
                started,
                Some(a.body.len() as u64),
            );
            return reply(c, close, opts, t).await;
        };
        // A client that sent no Host (HTTP/1.0): each backend gets its own address.
        if let Some(at) = host_at {
            let line = format!("host: {backend}\r\n");
            c.out.splice(at..at + host_line, line.bytes());
            host_line = line.len();
        }
        match send(
            guard.slot(),
            backend,
            c,
            bodyless,
            &mut pump,
            opts,
            started,
            t,
        )
        .await
        {
            Ok(s) => break (backend, guard, s),
            Err(Error::Connect(error)) => {
                if let Err(a) = picker.connect_failed(backend, &error) {
                    write_answer(&mut c.out, &a, close, http10, opts.via);
                    c.idle_since = finish(
                        proxy,
                        peer,
                        log,
                        a.status.as_u16(),
                        Some(route),
                        Some(backend),
                        started,
                        Some(a.body.len() as u64),
                    );
                    return reply(c, close, opts, t).await;
                }
            }
            Err(e) => {
                let close = fail(c, e, Some(backend), &pump);
                return reply(c, close, opts, t).await;
            }
        }
    };
    guard.connected();
    let mut close = close || front.draining.load(Ordering::Relaxed);
    // The response head: interim (1xx) heads pass through as they come, but a 100 the client had from us.
    let framing = loop {
        let mut fast = [httparse::EMPTY_HEADER; head::MAX];
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let bytes = c.rbuf.bytes();
        let parsed = match head::response(bytes, &mut fast) {
            Some(h) => Ok(httparse::Status::Complete(RespHead {
                minor: h.minor,
                code: h.code,
                reason: h.reason,
                len: h.len,
                headers: &fast[..h.fields],
            })),
            None => httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, bytes, &mut slots)
                .map(|status| match status {
                    httparse::Status::Complete(len) => httparse::Status::Complete(RespHead {
                        minor: resp.version.unwrap_or(1),
                        code: resp.code.unwrap_or(0),
                        reason: resp.reason.unwrap_or(""),
                        len,
                        headers: resp.headers,
                    }),
                    httparse::Status::Partial => httparse::Status::Partial,
                }),
        };
        let failure = match parsed {
            Ok(httparse::Status::Complete(r)) => match r.code {
                101 if upgrade => {
                    // Switching protocols: the backend's head as it is, then bytes both ways until either side ends.
                    finish(
                        proxy,
                        peer,
                        log,
                        101,
                        Some(route),
                        Some(backend),
                        started,
                        None,
                    );
                    return tunnel(c, conn, guard).await;
                }
                101 => Some(Error::Failed(
                    "101 to a request that asked for no upgrade".into(),
                )),
                100..=199 => {
                    let n = r.len;
                    // HTTP/1.0 clients know no interim responses; a 100 after ours would be a second one.
                    let pass = !(http10 || r.code == 100 && expects_continue);
                    c.out.clear();
                    if pass {
                        c.out.extend_from_slice(&c.rbuf.bytes()[..n]);
                    }
                    c.rbuf.consume(n);
                    if pass && !write_out(c, opts, t).await {
                        return Next::Close;
                    }
                    if c.rbuf.is_empty() {
                        match backend_read(c, &mut conn, &mut pump, max_head, opts, t).await {
                            Ok(n) if n > 0 => continue,
                            Ok(_) => Some(Error::Failed(
                                "connection closed after an interim response".into(),
                            )),
                            Err(e) => Some(e),
                        }
                    } else {
                        continue;
                    }
                }
                _ => {
                    // A response before the whole body: the rest of it cannot be found, so the connection ends.
                    close |= pump.unfinished();
                    let cookie = picker.set_cookie(backend);
                    let n = r.len;
                    match response_head(
                        &r,
                        &c.rbuf.bytes()[..n],
                        Asked {
                            head_request,
                            http10,
                            set_cookie: cookie.as_deref(),
                            via: opts.via,
                        },
                        &mut close,
                        &mut c.out,
                    ) {
                        Ok(framing) => {
                            c.rbuf.consume(n);
                            break framing;
                        }
                        Err(e) => Some(Error::Failed(format!("bad response head: {e}"))),
                    }
                }
            },
            Ok(httparse::Status::Partial) if c.rbuf.len() >= max_head => {
                Some(Error::Failed("response head too large".into()))
            }
            // The rest of the response head.
            Ok(httparse::Status::Partial) => {
                match backend_read(c, &mut conn, &mut pump, max_head, opts, t).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => Some(Error::Failed(
                        "connection closed in the response head".into(),
                    )),
                    Err(e) => Some(e),
                }
            }
            Err(e) => Some(Error::Failed(format!("bad response head: {e}"))),
        };
        if let Some(e) = failure {
            let close = fail(c, e, Some(backend), &pump);
            return reply(c, close, opts, t).await;
        }
    };
    c.idle_since = finish(
        proxy,
        peer,
        log,
        framing.status,
        Some(route),
        Some(backend),
        started,
        framing.content_length,
    );
    // The body: what came with the head goes out in the same write, the rest as it arrives.
    let mut state = framing.body;
    let dechunk = framing.dechunk;
    let mut reusable = framing.reusable && !upgrade && !pump.unfinished();
    let Ok(take) = body_part(&mut state, c.rbuf.bytes(), dechunk.then_some(&mut c.out)) else {
        return Next::Close;
    };
    if !dechunk {
        c.out.extend_from_slice(&c.rbuf.bytes()[..take]);
    }
    c.rbuf.consume(take);
    if !write_out(c, opts, t).await {
        return Next::Close;
    }
    while !state.as_ref().is_some_and(BodyState::done) {
        let read = t
            .within(
                opts.backend_timeout,
                c.rbuf.fill(&mut conn, BACKEND_BUF, BACKEND_BUF),
            )
            .await;
        match read {
            Some(Ok(0)) if state.is_none() => break,
            Some(Ok(n)) if n > 0 => {}
            // A body cut short: the client must see the connection end, not a complete response.
            _ => {
                tracing::debug!(backend = %backend, app = %route.app_id, "backend response body cut short");
                return Next::Close;
            }
        }
        c.out.clear();
        let Ok(take) = body_part(&mut state, c.rbuf.bytes(), dechunk.then_some(&mut c.out)) else {
            return Next::Close;
        };
        let bytes = if dechunk {
            &c.out[..]
        } else {
            &c.rbuf.bytes()[..take]
        };
        let written = t.within(opts.client_timeout, write(&mut c.io, bytes)).await;
        c.rbuf.consume(take);
        if written.is_none_or(|r| r.is_err()) {
            return Next::Close;
        }
    }
    // Bytes past the response: the backend is out of step; never reuse it.
    reusable &= c.rbuf.is_empty();
    c.rbuf.clear();
    if reusable {
        c.hold(guard.slot(), conn, c.idle_since);
    }
    drop(guard);
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// How much of `bytes` belongs to the response body (all of it when the body runs to the end of the stream);
/// with `data`, chunked coding is taken off into it (for an HTTP/1.0 client).
fn body_part(
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

/// Writes the answer in `c.out` to the client.
async fn reply<S: AsyncWrite + Unpin>(
    c: &mut Client<S>,
    close: bool,
    opts: &super::ProxyOptions,
    t: Timeouts<'_>,
) -> Next {
    if (c.out.is_empty() || write_out(c, opts, t).await) && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Writes `c.out` to the client, within the client timeout; false when that failed.
async fn write_out<S: AsyncWrite + Unpin>(
    c: &mut Client<S>,
    opts: &super::ProxyOptions,
    t: Timeouts<'_>,
) -> bool {
    matches!(
        t.within(opts.client_timeout, write(&mut c.io, &c.out))
            .await,
        Some(Ok(()))
    )
}

/// Writes the request in `c.out` to `backend` on an idle connection or a new one and waits for the first bytes of
/// its response (in `c.rbuf`), passing the rest of the body on meanwhile. A connection that fails before answering
/// is judged by [`Error::unanswered`]: a bodyless request goes once more on a new connection after a reused one
/// failed; one with a body is never sent twice.
#[allow(clippy::too_many_arguments)]
async fn send<S>(
    slot: &Arc<Slot>,
    backend: &Endpoint,
    c: &mut Client<S>,
    bodyless: bool,
    pump: &mut Pump,
    opts: &super::ProxyOptions,
    started: Instant,
    t: Timeouts<'_>,
) -> Result<TcpStream, Error>
where
    S: AsyncRead + Unpin,
{
    let mut fresh_only = false;
    loop {
        let idle = if fresh_only {
            None
        } else {
            c.take_held(slot, opts.idle_timeout, started)
                .or_else(|| pool::take_raw(slot, opts.idle_timeout, started))
        };
        let reused = idle.is_some();
        let mut s = match idle {
            Some(s) => s,
            None => pool::connect(backend, opts.connect_timeout)
                .await
                .map_err(Error::Connect)?,
        };
        c.rbuf.clear();
        match t.within(opts.backend_timeout, s.write_all(&c.out)).await {
            Some(Ok(())) => {}
            // Closed before it could carry anything: the next idle connection, or a new one.
            Some(Err(_)) if reused => continue,
            Some(Err(e)) => return Err(Error::Connect(format!("{e} (new connection, writing)"))),
            None => return Err(Error::Timeout(opts.backend_timeout)),
        }
        // The first byte of the response within the backend timeout (each backend tried has its own).
        let max = BACKEND_BUF.max(opts.max_header_bytes);
        let error = match backend_read(c, &mut s, pump, max, opts, t).await {
            Ok(n) if n > 0 => return Ok(s),
            Ok(_) => "connection closed before any response".to_string(),
            Err(Error::Failed(e)) => e,
            Err(e) => return Err(e),
        };
        match Error::unanswered(reused, bodyless, error) {
            Error::Reused(error) => {
                tracing::debug!(backend = %backend, %error, "reused connection failed; sending again on a new one");
                fresh_only = true;
            }
            e => return Err(e),
        }
    }
}

/// After a 101: the backend's head to the client, then bytes both ways until either side closes. The tunnel counts
/// as one request in flight on the backend for its whole life.
async fn tunnel<S>(c: &mut Client<S>, mut conn: TcpStream, guard: InFlight) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _guard = guard;
    if write(&mut c.io, c.rbuf.bytes()).await.is_err() {
        return Next::Close;
    }
    c.rbuf.clear();
    if !c.buf.is_empty() {
        if conn.write_all(c.buf.bytes()).await.is_err() {
            return Next::Close;
        }
        c.buf.clear();
    }
    let _ = tokio::io::copy_bidirectional(&mut c.io, &mut conn).await;
    Next::Close
}

/// An HTTP/2 connection, served by hyper. It closes idle connections at the keep-alive timeout and cuts off heads
/// at the header timeout, as HTTP/1 does. On drain it gets a GOAWAY; in-flight requests finish.
pub async fn serve_h2<I>(io: I, front: &Front, info: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = super::idle::Activity::new(true);
    let mut info = info;
    info.activity = Some(activity.clone());
    let client = info.peer;
    let conn = front.h2.serve_connection(
        TokioIo::new(super::idle::Metered::new(io, activity.clone())),
        super::service(front.proxy.clone(), info, activity.clone()),
    );
    tokio::pin!(conn);
    let opts = &front.proxy.opts;
    let mut stop = front.stop.clone();
    let expired = tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => None,
        why = activity.expired(opts.header_read_timeout, opts.keep_alive_timeout, opts.client_timeout) => Some(why),
    };
    match expired {
        Some(super::idle::Expired::Head) => {
            tracing::debug!(client = %client, "request head not received in time");
        }
        Some(super::idle::Expired::Stalled) => {
            crate::metrics::metrics()
                .http_rejected
                .with_label_values(&["client_timeout"])
                .inc();
            tracing::debug!(client = %client, timeout = ?opts.client_timeout, "client stalled with a request in flight; cut off");
        }
        Some(super::idle::Expired::Idle) => {
            // HTTP/2's GOAWAY waits for the client's answer to a ping; a client that never answers is not waited
            // for longer than for a head.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(opts.header_read_timeout, conn).await;
        }
        None => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
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

    /// A limit below the first allocation caps the buffer there: reads stop at `max`, then "buffer full".
    #[tokio::test]
    async fn a_buffer_limit_below_the_initial_size_caps_it() {
        let mut buf = Buf::new();
        let mut input = &[b'x'; 3000][..];
        let mut read = 0;
        loop {
            match buf.fill(&mut input, 4096, 2048).await {
                Ok(n) => read += n,
                Err(e) => {
                    assert_eq!(e.to_string(), "buffer full");
                    break;
                }
            }
        }
        assert_eq!((read, buf.bytes().len()), (2048, 2048));
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
        let mut fast = [httparse::EMPTY_HEADER; head::MAX];
        assert!(head::response(
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

    /// A proxy whose one app `/a` (the default path rule) has one backend, for `plan`.
    fn planner() -> (Arc<Proxy>, Arc<crate::snapshot::Publisher>) {
        let publisher = Arc::new(crate::snapshot::Publisher::new(Default::default()));
        let app = r#"{"apps":[{"id":"/a","portDefinitions":[{"port":10000}],"tasks":[{"id":"a.1","host":"127.0.0.1",
            "ports":[9],"state":"TASK_RUNNING","startedAt":"2019-05-02T10:11:20.001Z"}]}]}"#;
        let apps: crate::apps::Apps = crate::marathon::model::parse_apps(app.as_bytes())
            .unwrap()
            .apps
            .iter()
            .map(|a| {
                let v = crate::discovery::build_view(
                    a,
                    &a.tasks,
                    &Default::default(),
                    Default::default(),
                );
                (v.id.clone(), Arc::new(v))
            })
            .collect();
        publisher.set_apps(Arc::new(apps));
        publisher.set_rules(Default::default());
        let balancer = Arc::new(super::super::balance::Balancer::new(
            3,
            Duration::from_secs(1),
        ));
        let proxy = Arc::new(Proxy::new(
            publisher.clone(),
            balancer,
            443,
            &Default::default(),
        ));
        (proxy, publisher)
    }

    /// Seeded fuzzing in CI, differential: damaged request heads through the planner. Whatever it forwards,
    /// httparse reads the same head, a plain reading of its fields frames the body the same way (one framing,
    /// never two), and the head it writes parses cleanly with one Host, one length for a sized body and
    /// `Transfer-Encoding: chunked` alone for a chunked one. Whatever httparse refuses, it never forwards.
    #[test]
    fn request_heads_fuzz_against_httparse_and_a_plain_reading() {
        use rand::{Rng, SeedableRng};
        let (proxy, publisher) = planner();
        let snap = publisher.load_full();
        let peer = Peer::new("192.0.2.1:5000".parse().unwrap(), false, 80, false);
        let bases: [&[u8]; 4] = [
            b"GET /a/x HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
            b"POST /a/y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\nhello",
            b"PUT /a/z HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nabc",
            b"GET /a/w HTTP/1.1\r\nHost: a\r\nConnection: close, te\r\nTE: trailers\r\nCookie: a=b\r\n\r\n",
        ];
        let alphabet = b"\r\n :\t,;\x00\x7f\x80aZ09-+CLTEchunkedHost";
        let (mut forwarded, mut tried) = (0, 0);
        for _ in 0..40_000 {
            let mut h = bases[rng_pick(&mut tried, bases.len())].to_vec();
            let mut rng = rand::rngs::StdRng::seed_from_u64(tried as u64);
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..h.len());
                match rng.gen_range(0..4) {
                    0 => h[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => h.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    2 => {
                        h.remove(i);
                    }
                    _ => {
                        let field: &[u8] = [
                            &b"Content-Length: 2\r\n"[..],
                            b"Transfer-Encoding: chunked\r\n",
                            b"Content-Length: 99\r\n",
                            b"Host: b\r\n",
                            b"Connection: host\r\n",
                            b"Expect: 100-continue\r\n",
                        ][rng.gen_range(0..6)];
                        if let Some(at) = h.windows(2).position(|w| w == b"\r\n") {
                            let at = at + 2;
                            h.splice(at..at, field.iter().copied());
                        }
                    }
                }
            }
            let mut out = Vec::new();
            let (mut head_len, mut log) = (0, None);
            let body = match plan(&proxy, &snap, &h, &peer, &mut out, &mut head_len, &mut log) {
                Plan::Forward(f) => {
                    // As `forward` gives a client without Host its backend's.
                    if let Some(at) = f.host_at {
                        out.splice(at..at, b"host: 10.0.0.1:80\r\n".iter().copied());
                    }
                    f.body
                }
                _ => continue,
            };
            forwarded += 1;
            let shown = String::from_utf8_lossy(&h).into_owned();
            // httparse takes the client's head whole.
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut hs);
            assert!(
                matches!(req.parse(&h), Ok(httparse::Status::Complete(n)) if n == head_len),
                "forwarded a head httparse does not read the same: {shown:?}"
            );
            // A plain reading of the same fields frames the body as the planner does: one framing, never two.
            let values = |name: &str| -> Vec<&[u8]> {
                req.headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .map(|x| x.value)
                    .collect()
            };
            let (cl, te) = (values("content-length"), values("transfer-encoding"));
            let want = match (&cl[..], &te[..]) {
                ([], []) => None,
                ([], [te]) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
                    Some(BodyState::chunked())
                }
                ([first, rest @ ..], [])
                    if rest.iter().all(|v| v.trim_ascii() == first.trim_ascii()) =>
                {
                    framing::parse_length(first)
                        .filter(|n| *n > 0)
                        .map(BodyState::Length)
                }
                _ => panic!("forwarded ambiguous framing: {shown:?}"),
            };
            assert_eq!(body, want, "{shown:?}");
            let chunked = body == Some(BodyState::chunked());
            // The head it writes.
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut sent = httparse::Request::new(&mut hs);
            assert!(
                matches!(sent.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
                "unreadable head sent for {shown:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            let count = |name: &str| {
                sent.headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .count()
            };
            assert_eq!(count("host"), 1, "{shown:?}");
            assert_eq!(
                count("transfer-encoding"),
                usize::from(chunked),
                "{shown:?}"
            );
            let lengths = count("content-length");
            assert!(
                lengths <= 1
                    && (lengths == 1 || !matches!(body, Some(BodyState::Length(_))))
                    && (lengths == 0 || !chunked),
                "{shown:?} -> {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(
            forwarded > tried / 10,
            "the planner forwarded almost nothing: {forwarded}/{tried}"
        );
    }

    fn rng_pick(tried: &mut usize, n: usize) -> usize {
        *tried += 1;
        *tried % n
    }
}
