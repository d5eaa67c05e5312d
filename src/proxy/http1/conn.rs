//! The connection loop: waits for each request head (the keep-alive and header deadlines, the drain), answers
//! what needs no backend, and hands the rest to the exchange.

use super::buf::Buf;
use super::exchange;
use super::framing::Rewind;
use super::request::{plan, LogInfo, Plan};
use super::{write, CLIENT_BUF};
use crate::marathon::address::Endpoint;
use crate::proxy::answer::Answer;
use crate::proxy::backend::Slot;
use crate::proxy::deadline::{Deadlines, Timeouts};
use crate::proxy::error::{Blame, Error};
use crate::proxy::log::{access_log, record, AccessEntry};
use crate::proxy::Proxy;
use crate::rules::table::Route;
use crate::snapshot::Snapshot;
use http::StatusCode;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;

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
    pub(super) ip_line_end: String,
    /// The forwarded fields that are the same for every request of the connection.
    pub(super) fixed_fields: String,
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

/// A client connection on the fast path.
pub(super) struct Client<S> {
    pub io: S,
    pub buf: Buf,
    /// Backend reads, kept with the connection so a request costs no allocation.
    pub rbuf: Buf,
    /// The head (and body) being written, to the backend and then to the client.
    pub out: Vec<u8>,
    /// When the last response head went out: the backend connection it came on is idle from then.
    pub idle_since: Instant,
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
            crate::proxy::pool::put_raw(&self.slot, conn, self.since);
        }
    }
}

impl<S> Client<S> {
    fn new(io: S) -> Client<S> {
        Client {
            io,
            buf: Buf::new(),
            rbuf: Buf::new(),
            out: Vec::new(),
            idle_since: Instant::now(),
            held: None,
        }
    }
}

impl<S> Client<S> {
    /// The held connection, when it is to `slot`'s backend and still usable.
    pub(super) fn take_held(
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
        (now.saturating_duration_since(held.since) < idle_timeout
            && crate::proxy::pool::still_open(&conn))
        .then_some(conn)
    }

    pub(super) fn hold(&mut self, slot: &Arc<Slot>, conn: TcpStream, since: Instant) {
        match &mut self.held {
            Some(h) if Arc::ptr_eq(&h.slot, slot) => {
                h.conn = Some(conn);
                h.since = since;
            }
            // As many held as the pool keeps idle, per backend: idle clients must not pin more than that.
            _ if slot.held.fetch_add(1, Ordering::Relaxed) >= crate::proxy::pool::MAX_IDLE => {
                slot.held.fetch_sub(1, Ordering::Relaxed);
                self.held = None;
                crate::proxy::pool::put_raw(slot, conn, since);
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
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
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
        let (mut head_len, mut log) = (0, None);
        let Some(plan) = read_head(
            &mut c,
            &mut w,
            &front.proxy,
            &snap,
            first,
            &mut head_len,
            &mut log,
        )
        .await
        else {
            return;
        };
        first = false;
        let r = Req {
            front: &front,
            peer: &peer,
            log: log.as_ref(),
            started: Instant::now(),
            t,
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
    log: &mut Option<LogInfo>,
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
                log,
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
                let a = Answer::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "rattan: request head not received in time\n".into(),
                );
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
    crate::proxy::h2::serve_h2(io, front, (peer.addr, peer.tls, peer.port)).await;
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

/// One request on its way: what every step needs besides the connection.
pub(super) struct Req<'a> {
    pub front: &'a Front,
    pub peer: &'a Peer,
    pub log: Option<&'a LogInfo>,
    pub started: Instant,
    pub t: Timeouts<'a>,
}

impl Req<'_> {
    /// Counts the request done in the metrics and, with the access log on, logs it; returns the time now.
    pub fn finish(
        &self,
        status: u16,
        route: Option<&Route>,
        backend: Option<&Endpoint>,
        size: Option<u64>,
    ) -> Instant {
        let now = record(route, status, self.started);
        if let Some(l) = self.log {
            access_log(
                self.front.proxy.opts.access_log,
                &AccessEntry {
                    peer: self.peer.addr,
                    method: &l.method,
                    uri: &l.uri,
                    version: l.version,
                    host: l.host.as_deref(),
                    status,
                    size,
                    app: route.map_or("", |r| r.app_id.as_str()),
                    backend,
                    tls: self.peer.tls,
                    duration: now.saturating_duration_since(self.started),
                },
            );
        }
        now
    }

    /// Gives the client an answer of the proxy's own, counted and logged; `(close, http10)` as the connection
    /// stands.
    pub async fn answer<S: AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        a: &Answer,
        route: Option<&Route>,
        backend: Option<&Endpoint>,
        (close, http10): (bool, bool),
    ) -> Next {
        let opts = &self.front.proxy.opts;
        a.write_http1(&mut c.out, close, http10, opts.via);
        c.idle_since = self.finish(a.status.as_u16(), route, backend, Some(a.body.len() as u64));
        if self.write_out(c).await && !close {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Tells the client what went wrong (nothing when it is gone); the connection then ends unless the request
    /// was whole and the failure the backend's.
    pub async fn fail<S: AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        e: Error,
        route: &Route,
        backend: Option<&Endpoint>,
        (close, http10): (bool, bool),
    ) -> Next {
        let close = close || e.blame() == Blame::Client;
        match e.answer(Some(route), backend) {
            Some(a) => {
                self.answer(c, &a, Some(route), backend, (close, http10))
                    .await
            }
            None => {
                self.finish(400, Some(route), backend, None);
                Next::Close
            }
        }
    }

    /// Writes `c.out` to the client, within the client timeout; false when that failed.
    pub async fn write_out<S: AsyncWrite + Unpin>(&self, c: &mut Client<S>) -> bool {
        let opts = &self.front.proxy.opts;
        matches!(
            self.t
                .within(opts.client_timeout, write(&mut c.io, &c.out))
                .await,
            Some(Ok(()))
        )
    }
}
