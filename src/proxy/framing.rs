//! Request-smuggling guard. hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` safely
//! (chunked wins, the connection closes) but drops the `Content-Length` before the handler sees it, so the proxy
//! could not refuse it. This wrapper watches the client's bytes on their way into hyper, follows HTTP/1 message
//! framing, and records for each request head whether it had both; the handler answers 400 for those.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// One entry per request head seen on the connection, in order; the handler takes them in the same order.
#[derive(Default)]
pub struct Heads(Mutex<VecDeque<Option<&'static str>>>);

/// Both framings at once.
pub const CL_AND_TE: &str = "conflicting Content-Length and Transfer-Encoding";
/// `chunked` applied twice (RFC 9112 §6.1: at most once), in one line or several.
pub const CHUNKED_TWICE: &str = "chunked transfer coding applied more than once";

impl Heads {
    /// Why the next request (in arrival order) has framing no proxy may pass on, if it has.
    pub fn next_conflicting(&self) -> Option<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .flatten()
    }
}

/// How often `chunked` appears across every Transfer-Encoding value.
pub fn chunked_count<'a>(values: impl Iterator<Item = &'a [u8]>) -> usize {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .filter(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count()
}

/// Where an HTTP/1 message body ends, followed across reads of any size: a length, or chunked coding (chunk-size
/// lines with extensions, data, trailers). Used by the smuggling guard on request bodies and by the fast path to
/// pass bodies through unchanged, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    Length(u64),
    /// In a chunk-size line: the size so far, whether a digit was seen, whether past the size (extensions),
    /// whether the last byte was CR (only LF may follow: a parser that took `0\rX` as a line end would find
    /// another end of the body than one that does not).
    ChunkSize {
        size: u64,
        digits: bool,
        ext: bool,
        len: u16,
        cr: bool,
    },
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd {
        cr: bool,
    },
    /// Trailer lines after the last chunk; `len` is the current line's length so far.
    Trailers {
        len: u16,
        cr: bool,
    },
    Done,
}

/// The body's framing is broken: the stream cannot be followed any further.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFraming;

/// Longest chunk-size or trailer line followed.
const MAX_LINE: u16 = 8192;

impl BodyState {
    pub fn chunked() -> BodyState {
        BodyState::ChunkSize {
            size: 0,
            digits: false,
            ext: false,
            len: 0,
            cr: false,
        }
    }

    pub fn length(n: u64) -> BodyState {
        if n == 0 {
            BodyState::Done
        } else {
            BodyState::Length(n)
        }
    }

    pub fn done(&self) -> bool {
        *self == BodyState::Done
    }

    /// Consumes the part of `data` that belongs to the body; returns its length. What follows it (when the body
    /// ends inside `data`) is the next message.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, BadFraming> {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            match self {
                BodyState::Done => break,
                BodyState::Length(n) | BodyState::ChunkData(n) => {
                    let take = (rest.len() as u64).min(*n);
                    used += take as usize;
                    *n -= take;
                    if *n == 0 {
                        *self = match self {
                            BodyState::Length(_) => BodyState::Done,
                            _ => BodyState::ChunkEnd { cr: false },
                        };
                    }
                }
                BodyState::ChunkEnd { cr } => {
                    let b = rest[0];
                    used += 1;
                    match b {
                        b'\n' => *self = BodyState::chunked(),
                        b'\r' if !*cr => *cr = true,
                        _ => return Err(BadFraming),
                    }
                }
                BodyState::ChunkSize {
                    size,
                    digits,
                    ext,
                    len,
                    cr,
                } => {
                    let b = rest[0];
                    used += 1;
                    *len += 1;
                    if *len > MAX_LINE {
                        return Err(BadFraming);
                    }
                    match b {
                        b'\n' if *digits => {
                            *self = match *size {
                                0 => BodyState::Trailers { len: 0, cr: false },
                                n => BodyState::ChunkData(n),
                            };
                        }
                        b'\n' => return Err(BadFraming),
                        _ if *cr => return Err(BadFraming),
                        b'\r' => *cr = true,
                        _ if *ext => {}
                        b';' | b' ' | b'\t' if *digits => *ext = true,
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(BadFraming)?;
                            *size = size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or(BadFraming)?;
                            *digits = true;
                        }
                    }
                }
                BodyState::Trailers { len, cr } => {
                    let b = rest[0];
                    used += 1;
                    match b {
                        b'\n' if *len == 0 => *self = BodyState::Done,
                        b'\n' => {
                            *len = 0;
                            *cr = false;
                        }
                        _ if *cr => return Err(BadFraming),
                        b'\r' => *cr = true,
                        _ => {
                            *len += 1;
                            if *len > MAX_LINE {
                                return Err(BadFraming);
                            }
                        }
                    }
                }
            }
        }
        Ok(used)
    }
}

/// The body a request head announces: `None` for an empty body, `Err` for framing that cannot be followed
/// (a transfer coding that does not end in `chunked`, a bad length).
pub fn request_body(te: Option<&[u8]>, cl: Option<&[u8]>) -> Result<Option<BodyState>, BadFraming> {
    if let Some(te) = te {
        return if ends_chunked(te) {
            Ok(Some(BodyState::chunked()))
        } else {
            Err(BadFraming)
        };
    }
    match cl {
        None => Ok(None),
        Some(cl) => match parse_length(cl) {
            Some(0) => Ok(None),
            Some(n) => Ok(Some(BodyState::Length(n))),
            None => Err(BadFraming),
        },
    }
}

/// Whether a Transfer-Encoding value's last coding (the one that frames the body) is `chunked`.
pub fn ends_chunked(te: &[u8]) -> bool {
    let last = te.rsplit(|b| *b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A Content-Length value: digits only (no sign, no spaces inside), no overflow.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

enum State {
    Head,
    Body(BodyState),
    /// Upgrades, CONNECT, HTTP/2, anything not understood: stop watching (hyper still parses what it gets).
    Off,
}

pub struct Tracker {
    state: State,
    buf: Vec<u8>,
    max_head: usize,
    heads: Arc<Heads>,
}

/// Where a request head ends, found as hyper finds it (httparse, which also takes a bare LF as a line end): a
/// watcher that looked for CRLFCRLF alone lost its place at the first LF-only head and stopped watching.
enum HeadEnd {
    At(usize),
    More,
    /// hyper refuses this head: the connection ends with it.
    Bad,
}

fn head_end(b: &[u8], from: usize) -> HeadEnd {
    // Only a blank line can end a head: parse only once one may have arrived.
    let tail = &b[from.min(b.len())..];
    if !tail.windows(2).any(|w| w == b"\n\n") && !tail.windows(3).any(|w| w == b"\n\r\n") {
        return HeadEnd::More;
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    match httparse::Request::new(&mut headers).parse(b) {
        Ok(httparse::Status::Complete(n)) => HeadEnd::At(n),
        Ok(httparse::Status::Partial) => HeadEnd::More,
        Err(_) => HeadEnd::Bad,
    }
}

impl Tracker {
    pub fn new(max_head: usize, heads: Arc<Heads>) -> Tracker {
        Tracker {
            state: State::Head,
            buf: Vec::new(),
            max_head,
            heads,
        }
    }

    /// Classifies one complete head and sets the state for its body.
    fn head(&mut self, head: &[u8]) {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                self.state = State::Off;
                return;
            }
        }
        let (mut te, mut cl, mut upgrade) = (None::<&[u8]>, None::<&[u8]>, false);
        let mut chunked = 0;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
                chunked += chunked_count(std::iter::once(h.value));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                cl = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let conflicting = if te.is_some() && cl.is_some() {
            Some(CL_AND_TE)
        } else if chunked > 1 {
            Some(CHUNKED_TWICE)
        } else {
            None
        };
        self.heads
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(conflicting);
        let conflicting = conflicting.is_some();
        self.state = if conflicting || upgrade || req.method == Some("CONNECT") {
            // hyper closes after a conflicting request; an upgrade may turn the stream into anything.
            State::Off
        } else {
            match request_body(te, cl) {
                Ok(None) => State::Head,
                Ok(Some(body)) => State::Body(body),
                Err(BadFraming) => State::Off,
            }
        };
    }

    /// Waiting for the next head (the last message ended exactly where the bytes fed so far end).
    pub fn at_head(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(body) => match body.advance(data) {
                    Ok(used) => {
                        data = &data[used..];
                        if body.done() {
                            self.state = State::Head;
                        }
                    }
                    Err(BadFraming) => self.state = State::Off,
                },
                State::Head => {
                    if self.buf.is_empty() {
                        // Stray CRLFs between requests are allowed.
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        match head_end(data, 0) {
                            HeadEnd::At(end) => {
                                self.head(&data[..end]);
                                data = &data[end..];
                                continue;
                            }
                            HeadEnd::Bad => {
                                self.state = State::Off;
                                return;
                            }
                            HeadEnd::More => {}
                        }
                    }
                    let from = self.buf.len().saturating_sub(2);
                    self.buf.extend_from_slice(data);
                    match head_end(&self.buf, from) {
                        HeadEnd::At(end) => {
                            let buf = std::mem::take(&mut self.buf);
                            self.head(&buf[..end]);
                            // Whatever followed the head in this read is fed again from the state it set.
                            let rest = buf[end..].to_vec();
                            self.feed(&rest);
                            return;
                        }
                        HeadEnd::Bad => {
                            self.buf = Vec::new();
                            self.state = State::Off;
                            return;
                        }
                        HeadEnd::More if self.buf.len() > self.max_head => {
                            self.buf = Vec::new();
                            self.state = State::Off;
                            return;
                        }
                        HeadEnd::More => return,
                    }
                }
            }
        }
    }
}

/// The client connection as hyper sees it, with every byte read shown to the tracker first. It starts with the
/// bytes the fast path had read already (`replay`), then reads on.
pub struct Watched<T> {
    inner: T,
    tracker: Tracker,
    replay: Vec<u8>,
    at: usize,
}

impl<T> Watched<T> {
    pub fn new(inner: T, replay: &[u8], max_head: usize) -> (Watched<T>, Arc<Heads>) {
        let heads = Arc::new(Heads::default());
        (
            Watched {
                inner,
                tracker: Tracker::new(max_head, heads.clone()),
                replay: replay.to_vec(),
                at: 0,
            },
            heads,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = if this.at < this.replay.len() {
            let n = (this.replay.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            if this.at == this.replay.len() {
                this.replay = Vec::new();
                this.at = 0;
            }
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        if let Poll::Ready(Ok(())) = r {
            this.tracker.feed(&buf.filled()[before..]);
        }
        r
    }
}

/// `AsyncWrite` for a wrapper that only watches reads: every call goes to its `inner` as it is.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through;

write_through!(Watched);

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(chunks: &[&[u8]]) -> Vec<bool> {
        let heads = Arc::new(Heads::default());
        let mut t = Tracker::new(65536, heads.clone());
        for c in chunks {
            t.feed(c);
        }
        let v: Vec<bool> = heads
            .0
            .lock()
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect();
        v
    }

    #[test]
    fn follows_bodies_and_flags_conflicts() {
        let stream: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 25\r\n\r\nGET /fake HTTP/1.1\r\n\r\n\r\n\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let want = vec![false, false, false, true];
        assert_eq!(flags(&[stream]), want);
        // Byte by byte: the same answer whatever the read sizes.
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(flags(&singles), want);
        let sevens: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(flags(&sevens), want);
        // Either order of the two headers.
        assert_eq!(
            flags(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"]),
            vec![true]
        );
    }

    /// Feeds `stream` to a body in pieces of `step` bytes; returns the bytes consumed when it ended.
    fn body_end(
        mut state: BodyState,
        stream: &[u8],
        step: usize,
    ) -> Result<Option<usize>, BadFraming> {
        let mut at = 0;
        for piece in stream.chunks(step) {
            let used = state.advance(piece)?;
            at += used;
            if state.done() {
                return Ok(Some(at));
            }
            assert_eq!(
                used,
                piece.len(),
                "a body that has not ended takes all it is given"
            );
        }
        Ok(None)
    }

    #[test]
    fn body_framing() {
        let chunked: &[u8] = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 3, 7, chunked.len()] {
            assert_eq!(
                body_end(BodyState::chunked(), chunked, step),
                Ok(Some(chunked.len() - 4))
            );
            assert_eq!(
                body_end(BodyState::length(5), b"helloNEXT", step),
                Ok(Some(5))
            );
        }
        assert_eq!(body_end(BodyState::chunked(), b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(body_end(BodyState::chunked(), b"5\r\nhel", 2), Ok(None));
        assert_eq!(
            body_end(BodyState::chunked(), b"zz\r\n", 1),
            Err(BadFraming)
        );
        assert_eq!(body_end(BodyState::chunked(), b"\r\n", 1), Err(BadFraming));
        assert_eq!(
            body_end(BodyState::chunked(), b"5\r\nhelloXX", 1),
            Err(BadFraming)
        );
        assert_eq!(
            body_end(BodyState::chunked(), b"fffffffffffffffff\r\n", 1),
            Err(BadFraming)
        );
        assert!(BodyState::length(0).done());
        assert_eq!(parse_length(b" 12 "), Some(12));
        assert_eq!(parse_length(b"+12"), None);
        assert_eq!(parse_length(b"1 2"), None);
        assert_eq!(
            request_body(Some(b"gzip, chunked"), None),
            Ok(Some(BodyState::chunked()))
        );
        assert_eq!(request_body(Some(b"chunked, gzip"), None), Err(BadFraming));
        assert_eq!(request_body(None, Some(b"0")), Ok(None));
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_and_are_watched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let replay = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (mut w, heads) = Watched::new(server, replay, 65536);
        client
            .write_all(b"0\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        drop(client);
        let mut all = Vec::new();
        w.read_to_end(&mut all).await.unwrap();
        assert_eq!(
            all,
            [&replay[..], b"0\r\n\r\nGET /b HTTP/1.1\r\n\r\n"].concat()
        );
        assert!(
            heads.next_conflicting().is_some(),
            "the replayed head is tracked"
        );
    }

    #[test]
    fn stops_at_upgrades_and_h2() {
        assert_eq!(
            flags(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            vec![false]
        );
        assert!(flags(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_empty());
    }

    /// A strict reading of a chunked body (RFC 9112 §7.1, bare LF allowed as the decoder allows it): where it ends,
    /// or `None` when it is malformed or incomplete.
    fn reference_end(b: &[u8]) -> Option<usize> {
        let mut i = 0;
        let line = |i: usize| -> Option<(usize, &[u8])> {
            let nl = b.get(i..)?.iter().position(|c| *c == b'\n')?;
            let l = &b[i..i + nl];
            Some((i + nl + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        };
        loop {
            let (next, l) = line(i)?;
            if l.len() + 2 > usize::from(MAX_LINE) {
                return None;
            }
            let digits = l.iter().take_while(|c| c.is_ascii_hexdigit()).count();
            let rest = &l[digits..];
            if digits == 0
                || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t'))
                || rest.contains(&b'\r')
            {
                return None;
            }
            let size = u64::from_str_radix(std::str::from_utf8(&l[..digits]).ok()?, 16).ok()?;
            i = next;
            if size == 0 {
                loop {
                    let (next, t) = line(i)?;
                    if t.contains(&b'\r') || t.len() + 2 > usize::from(MAX_LINE) {
                        return None;
                    }
                    i = next;
                    if t.is_empty() {
                        return Some(i);
                    }
                }
            }
            let end = i.checked_add(usize::try_from(size).ok()?)?;
            if end > b.len() {
                return None;
            }
            i = end;
            match b.get(i..)? {
                [b'\r', b'\n', ..] => i += 2,
                [b'\n', ..] => i += 1,
                _ => return None,
            }
        }
    }

    /// Feeds `b` in the pieces `cuts` makes: (bytes consumed, ended, broken).
    fn decode(b: &[u8], cuts: &[usize]) -> (usize, bool, bool) {
        let mut st = BodyState::chunked();
        let (mut used, mut from) = (0, 0);
        for &to in cuts.iter().chain(std::iter::once(&b.len())) {
            let to = to.clamp(from, b.len());
            match st.advance(&b[from..to]) {
                Ok(n) => used += n,
                Err(BadFraming) => return (0, false, true),
            }
            if st.done() {
                return (used, true, false);
            }
            from = to;
        }
        (used, st.done(), false)
    }

    /// Seeded fuzzing in CI: random chunked bodies, valid and damaged, fed whole and in random pieces. The decoder
    /// finds the end the strict reference finds (never a later or an earlier one), and how the bytes are cut
    /// never changes what it decides.
    #[test]
    fn chunked_decoder_fuzz() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let alphabet = b"0123456789abcdefABCDEFxz\r\n ;\t=\"";
        let (mut valid, mut ended) = (0, 0);
        for _ in 0..30_000 {
            let mut b = Vec::new();
            for _ in 0..rng.gen_range(0..4) {
                let n = rng.gen_range(1..40usize);
                let ext = if rng.gen_bool(0.2) { ";a=b" } else { "" };
                b.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                b.extend(std::iter::repeat_n(b'x', n));
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(if rng.gen_bool(0.3) {
                &b"0\r\nX-T: 1\r\n\r\n"[..]
            } else {
                b"0\r\n\r\n"
            });
            let whole_len = b.len();
            for _ in 0..rng.gen_range(0..3) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => b.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            // What follows the body: the next message.
            b.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let whole = decode(&b, &[]);
            let mut cuts: Vec<usize> = (0..rng.gen_range(0..6))
                .map(|_| rng.gen_range(0..b.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                decode(&b, &cuts),
                whole,
                "cut at {cuts:?}: {:?}",
                String::from_utf8_lossy(&b)
            );
            if let Some(end) = reference_end(&b) {
                valid += 1;
                assert_eq!(
                    whole,
                    (end, true, false),
                    "{:?}",
                    String::from_utf8_lossy(&b)
                );
            }
            if whole.1 {
                ended += 1;
                assert_eq!(
                    Some(whole.0),
                    reference_end(&b),
                    "ended where the reference does not: {:?}",
                    String::from_utf8_lossy(&b)
                );
            }
            let _ = whole_len;
        }
        assert!(
            valid > 5_000 && ended >= valid,
            "{valid} valid, {ended} ended"
        );
    }
}
