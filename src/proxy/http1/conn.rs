//! The connection loop: waits for each request head (the keep-alive and header deadlines, the drain), answers
//! what needs no backend, and hands the rest to the exchange.

use super::buf::{write, CLIENT_BUF};
use super::client::{Client, Next, Peer, Req, Seen};
use super::exchange;
use super::framing::Rewind;
use super::request::{plan, Plan};
use crate::proxy::answer::Answer;
use crate::proxy::deadline::Timeouts;
use crate::proxy::front::Front;
use crate::proxy::route::Proxy;
use crate::snapshot::Snapshot;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::futures::Notified;

/// What ended a wait for the client's next bytes.
enum Woke {
    Read(io::Result<usize>),
    Stop,
    Timeout,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn is_h2_preface(b: &[u8]) -> bool {
    H2_PREFACE.starts_with(&b[..b.len().min(H2_PREFACE.len())])
}

/// The drain as an idle connection waits for it: registered from the start and polled once (to leave this task's
/// waker); after that `draining` tells.
struct DrainWatch<'p, 'n> {
    notified: Pin<&'p mut Notified<'n>>,
    polled: bool,
}

/// What the connection loop's waits share: which deadline is set (`Some(true)`: the keep-alive one), the drain.
struct Waits<'a, 'p, 'n> {
    front: &'a Front,
    peer: &'a Peer,
    t: Timeouts<'a>,
    drain: DrainWatch<'p, 'n>,
    armed: Option<bool>,
    max_head: usize,
}

/// Serves a client connection; returns when it closes.
pub async fn serve<S>(io: S, front: Arc<Front>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut c = Client::new(io);
    let deadline = front.deadlines.register();
    let t = front.deadlines.timeouts(&deadline);
    let mut w = Waits {
        front: &front,
        peer: &peer,
        t,
        drain: DrainWatch {
            notified: std::pin::pin!(front.drain.notified()),
            polled: false,
        },
        armed: None,
        max_head: front.proxy.opts.max_header_bytes.max(1024),
    };
    let mut snap = front.proxy.publisher.load_full();
    let mut first = true;
    loop {
        // Idle until the next head's first byte: the keep-alive deadline (the header one before the first
        // request), and an idle connection closes as soon as the drain begins.
        w.armed = None;
        if c.buf.is_empty() && !matches!(w.bytes(&mut c, !first).await, Woke::Read(Ok(n)) if n > 0)
        {
            return;
        }
        // Loaded when the head is here: a keep-alive connection may have waited through many swaps.
        front.proxy.publisher.refresh(&mut snap);
        let (mut head_len, mut seen) = (0, Seen::default());
        let Some(plan) = read_head(
            &mut c,
            &mut w,
            &front.proxy,
            &snap,
            first,
            &mut head_len,
            &mut seen,
        )
        .await
        else {
            return;
        };
        first = false;
        let r = Req {
            front: &front,
            peer: &peer,
            log: seen.log.as_ref(),
            method: seen.method,
            started: Instant::now(),
            t,
            marks: Default::default(),
        };
        c.buf.consume(head_len);
        let next = match plan {
            Plan::More => continue,
            Plan::H2 => return to_h2(c, &front, &peer).await,
            Plan::Answer {
                route,
                answer,
                close,
                http10,
            } => {
                let close = close || front.draining.load(Ordering::Relaxed);
                r.answer(&mut c, &answer, route, None, (close, http10))
                    .await
            }
            Plan::Forward(f) => exchange::run(&r, &mut c, f).await,
        };
        if let Next::Close = next {
            let _ = c.io.shutdown().await;
            return;
        }
    }
}

/// Reads until the head in `c.buf` is whole and plans it: the header deadline from its first byte on, whatever
/// the number of reads it takes (a 408 when it passes, a 431 past the size limit). `None`: the connection ends.
async fn read_head<'s, S>(
    c: &mut Client<S>,
    w: &mut Waits<'_, '_, '_>,
    proxy: &'s Proxy,
    snap: &'s Arc<Snapshot>,
    first: bool,
    head_len: &mut usize,
    seen: &mut Seen,
) -> Option<Plan<'s>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if first && is_h2_preface(c.buf.bytes()) {
            if c.buf.len() >= H2_PREFACE.len() {
                return Some(Plan::H2);
            }
        } else {
            match plan(
                proxy,
                snap,
                c.buf.bytes(),
                w.peer,
                &mut c.out,
                head_len,
                seen,
            ) {
                Plan::More if c.buf.len() >= w.max_head => return Some(Plan::too_large()),
                Plan::More => {}
                p => return Some(p),
            }
        }
        match w.bytes(c, false).await {
            Woke::Read(Ok(n)) if n > 0 => {}
            Woke::Timeout => {
                let opts = &w.front.proxy.opts;
                let a = Answer::head_timeout();
                a.write_http1(&mut c.out, true, false, opts.via);
                let _ =
                    w.t.within(opts.header_read_timeout, write(&mut c.io, &c.out))
                        .await;
                return None;
            }
            _ => return None,
        }
    }
}

/// HTTP/2 with prior knowledge: hyper's for the rest of the connection, the preface read so far first.
async fn to_h2<S>(c: Client<S>, front: &Front, peer: &Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Rewind::new(c.io, c.buf.bytes());
    crate::proxy::h2::serve_h2(io, front, peer).await;
}

impl Waits<'_, '_, '_> {
    /// Waits for the client's next bytes: bytes, else the drain (only between requests), else the deadline
    /// (`keep_alive`'s or the header one), set only when the read has to wait.
    async fn bytes<S>(&mut self, c: &mut Client<S>, keep_alive: bool) -> Woke
    where
        S: AsyncRead + Unpin,
    {
        let opts = &self.front.proxy.opts;
        let idle = c.buf.is_empty();
        let read = c.buf.fill(&mut c.io, CLIENT_BUF, self.max_head);
        tokio::pin!(read);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(Woke::Read(r));
            }
            if idle && !self.drain.polled {
                self.drain.polled = true;
                let _ = self.drain.notified.as_mut().poll(cx);
            }
            if idle && self.front.draining.load(Ordering::Relaxed) {
                return Poll::Ready(Woke::Stop);
            }
            if self.armed != Some(keep_alive) {
                let after = if keep_alive {
                    opts.keep_alive_timeout
                } else {
                    opts.header_read_timeout
                };
                self.t.all.arm(self.t.mine, after);
                self.armed = Some(keep_alive);
            }
            self.t.mine.poll_expired(cx).map(|()| Woke::Timeout)
        })
        .await
    }
}
