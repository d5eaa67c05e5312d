//! HTTP/1 message framing: where a body ends (a length, or chunked coding followed byte by byte), and the framing
//! no proxy may pass on. The fast path reads requests and responses with it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Both framings at once.
pub const CL_AND_TE: &str = "conflicting Content-Length and Transfer-Encoding";
/// A request transfer coding other than `chunked` alone (RFC 9112 §6.3: without `chunked` last the body's end
/// cannot be found).
pub const NOT_CHUNKED: &str = "transfer coding other than chunked";
/// HTTP/1.0 has no transfer codings: a proxy that took one would read another body than an HTTP/1.0 server.
pub const TE_IN_HTTP10: &str = "Transfer-Encoding in an HTTP/1.0 request";
/// `chunked` applied twice (RFC 9112 §6.1: at most once), in one line or several.
pub const CHUNKED_TWICE: &str = "chunked transfer coding applied more than once";

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
        self.advance_with(data, |_| {})
    }

    /// `advance`, handing each run of body data (chunk data without its framing) to `data_sink`: how a chunked
    /// body is decoded for an HTTP/1.0 client.
    #[inline]
    pub fn advance_with(
        &mut self,
        data: &[u8],
        mut data_sink: impl FnMut(&[u8]),
    ) -> Result<usize, BadFraming> {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            match self {
                BodyState::Done => break,
                BodyState::Length(n) | BodyState::ChunkData(n) => {
                    let take = (rest.len() as u64).min(*n);
                    data_sink(&rest[..take as usize]);
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
                        b'\n' if *cr => *self = BodyState::chunked(),
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
                        b'\n' if *digits && *cr => {
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
                        b'\n' if !*cr => return Err(BadFraming),
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

/// A connection with bytes read from it already put back in front: what the fast path read before it found an
/// HTTP/2 preface goes to hyper first.
pub struct Rewind<T> {
    inner: T,
    replay: Vec<u8>,
    at: usize,
}

impl<T> Rewind<T> {
    pub fn new(inner: T, replay: &[u8]) -> Rewind<T> {
        Rewind {
            inner,
            replay: replay.to_vec(),
            at: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.replay.len() {
            let n = (this.replay.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            if this.at == this.replay.len() {
                this.replay = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::proxy::idle::write_through!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(ends_chunked(b"gzip, chunked"));
        assert!(!ends_chunked(b"chunked, gzip"));
        assert!(!ends_chunked(b"xchunked"));
    }

    #[tokio::test]
    async fn replayed_bytes_come_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let replay = b"PRI * HTTP/2.0\r\n";
        let mut w = Rewind::new(server, replay);
        client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        w.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    #[test]
    fn dechunks_into_data_alone() {
        let chunked: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 4, chunked.len()] {
            let mut state = BodyState::chunked();
            let mut data = Vec::new();
            let mut used = 0;
            for piece in chunked.chunks(step) {
                if state.done() {
                    break;
                }
                used += state
                    .advance_with(piece, |d| data.extend_from_slice(d))
                    .unwrap();
            }
            assert_eq!(
                (data.as_slice(), used),
                (&b"hello world"[..], chunked.len() - 4)
            );
        }
    }

    /// A strict reading of a chunked body (RFC 9112 §7.1, CRLF line ends only): where it ends,
    /// or `None` when it is malformed or incomplete.
    fn reference_end(b: &[u8]) -> Option<usize> {
        let mut i = 0;
        let line = |i: usize| -> Option<(usize, &[u8])> {
            let nl = b.get(i..)?.iter().position(|c| *c == b'\n')?;
            let l = &b[i..i + nl];
            Some((i + nl + 1, l.strip_suffix(b"\r")?))
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
