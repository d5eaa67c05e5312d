//! Request-smuggling guard. hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` safely
//! (chunked wins, the connection closes) but drops the `Content-Length` before the handler sees it, so the proxy
//! could not refuse it. This wrapper watches the client's bytes on their way into hyper, follows HTTP/1 message
//! framing, and records for each request head whether it had both; the handler answers 400 for those.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One flag per request head seen on the connection, in order; the handler takes them in the same order.
#[derive(Default)]
pub struct Heads(Mutex<VecDeque<bool>>);

impl Heads {
    /// Whether the next request (in arrival order) had conflicting framing headers.
    pub fn next_conflicting(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or(false)
    }
}

enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    Trailers,
    /// Upgrades, CONNECT, HTTP/2, anything not understood: stop watching (hyper still parses what it gets).
    Off,
}

pub struct Tracker {
    state: State,
    buf: Vec<u8>,
    max_head: usize,
    heads: Arc<Heads>,
}

fn find_crlfcrlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
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
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                cl = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let conflicting = te.is_some() && cl.is_some();
        self.heads
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(conflicting);
        self.state = if conflicting || upgrade || req.method == Some("CONNECT") {
            // hyper closes after a conflicting request; an upgrade may turn the stream into anything.
            State::Off
        } else if let Some(te) = te {
            let last = te.rsplit(|b| *b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                State::ChunkSize
            } else {
                State::Off
            }
        } else if let Some(cl) = cl {
            match std::str::from_utf8(cl)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Off,
            }
        } else {
            State::Head
        };
    }

    /// Takes one line (through `\n`) into `buf`; returns how much of `data` it used and whether the line is whole.
    fn line(&mut self, data: &[u8]) -> (usize, bool) {
        match data.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.buf.extend_from_slice(&data[..=i]);
                (i + 1, true)
            }
            None => {
                self.buf.extend_from_slice(data);
                (data.len(), false)
            }
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
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
                        if let Some(end) = find_crlfcrlf(data, 0) {
                            self.head(&data[..end]);
                            data = &data[end..];
                            continue;
                        }
                    }
                    let from = self.buf.len().saturating_sub(3);
                    self.buf.extend_from_slice(data);
                    match find_crlfcrlf(&self.buf, from) {
                        Some(end) => {
                            let buf = std::mem::take(&mut self.buf);
                            self.head(&buf[..end]);
                            // Whatever followed the head in this read is fed again from the state it set.
                            let rest = buf[end..].to_vec();
                            self.feed(&rest);
                            return;
                        }
                        None if self.buf.len() > self.max_head => {
                            self.buf = Vec::new();
                            self.state = State::Off;
                            return;
                        }
                        None => return,
                    }
                }
                State::Body(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if n == take {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let (used, whole) = self.line(data);
                    data = &data[used..];
                    if !whole {
                        if self.buf.len() > 8192 {
                            self.state = State::Off;
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.buf);
                    let text = line.trim_ascii();
                    self.state = match self.state {
                        State::ChunkEnd => State::ChunkSize,
                        State::Trailers if text.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => {
                            let size = text.split(|b| *b == b';').next().unwrap_or_default();
                            match std::str::from_utf8(size)
                                .ok()
                                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                            {
                                Some(0) => State::Trailers,
                                Some(n) => State::ChunkData(n),
                                None => State::Off,
                            }
                        }
                    };
                }
            }
        }
    }
}

/// The client connection as hyper sees it, with every byte read shown to the tracker first.
pub struct Watched<T> {
    inner: T,
    tracker: Tracker,
}

impl<T> Watched<T> {
    pub fn new(inner: T, max_head: usize) -> (Watched<T>, Arc<Heads>) {
        let heads = Arc::new(Heads::default());
        (
            Watched {
                inner,
                tracker: Tracker::new(max_head, heads.clone()),
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
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.tracker.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(chunks: &[&[u8]]) -> Vec<bool> {
        let heads = Arc::new(Heads::default());
        let mut t = Tracker::new(65536, heads.clone());
        for c in chunks {
            t.feed(c);
        }
        let v: Vec<bool> = heads.0.lock().unwrap().iter().copied().collect();
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

    #[test]
    fn stops_at_upgrades_and_h2() {
        assert_eq!(
            flags(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            vec![false]
        );
        assert!(flags(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_empty());
    }
}
