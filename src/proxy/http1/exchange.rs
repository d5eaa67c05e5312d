//! The backend side of a request: its body's start read first, a reused or new connection (the next backend when a
//! connect fails), the rest of the body pumped while the response head is awaited, the retry rule, the response
//! relayed (decoded for HTTP/1.0), upgrades turned into tunnels.

use super::buf::Buf;
use super::buf::{write, BACKEND_BUF, BODY_BUF, CLIENT_BUF, MAX_BUFFERED_BODY, MAX_HEADERS};
use super::client::{Client, Next, Req};
use super::framing::BodyState;
use super::request::Forward;
use super::response::{self, body_part, response_head, Asked, Framing};
use crate::marathon::address::Endpoint;
use crate::proxy::backend::{InFlight, Slot};
use crate::proxy::deadline::Timeouts;
use crate::proxy::error::{Blame, Error};
use crate::proxy::options::ProxyOptions;
use crate::proxy::route::Picker;
use crate::rules::table::Route;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Forwards a planned request: reads the start of its body (after `100 Continue` when the client waits for it),
/// sends it to the route's backends until one answers, and passes the response back.
pub(super) async fn run<S>(r: &Req<'_>, c: &mut Client<S>, f: Forward<'_>) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opts = &r.front.proxy.opts;
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
        host,
    } = f;
    if expects_continue
        && c.buf.is_empty()
        && !matches!(
            r.t.within(opts.client_timeout, write(&mut c.io, CONTINUE))
                .await,
            Some(Ok(()))
        )
    {
        return Next::Close;
    }
    // The body's first part is read before any backend sees the request: bad chunk framing there is the
    // client's 400, never half a request at a backend; a small body is then whole, so a connect failure can
    // send it again elsewhere, and a backend that answers early never stalls its upload. The rest streams.
    let mut pump = Pump {
        state: body,
        pending: 0,
    };
    if let Err(e) = pump.preread(c, opts, r.t).await {
        return r.fail(c, e, route, None, (true, http10)).await;
    }
    let ex = Exchange {
        r,
        route,
        close,
        http10,
        upgrade,
        head_request,
        expects_continue,
        bodyless: body.is_none(),
        host,
    };
    let m = crate::metrics::metrics();
    m.http_in_flight.inc();
    let next = ex.go(c, &mut picker, &mut pump, host_at).await;
    m.http_in_flight.dec();
    next
}

/// The part of a request body still to come from the client, sent on to the backend as it arrives. Every wait in
/// it can be cancelled and taken up again: its position lives here, not in a future.
pub(super) struct Pump {
    /// Where the body ends; `None` or done: all of it is in `c.out` or with the backend.
    state: Option<BodyState>,
    /// Bytes at the front of the client buffer that belong to the body and are not written yet.
    pending: usize,
}

impl Pump {
    fn unfinished(&self) -> bool {
        self.pending > 0 || self.state.as_ref().is_some_and(|s| !s.done())
    }

    /// Reads the body into `c.out` after the head, until it ends or [`MAX_BUFFERED_BODY`] bytes are in; each read
    /// waits at most the header timeout or the client timeout, whichever is shorter.
    async fn preread<S: AsyncRead + Unpin>(
        &mut self,
        c: &mut Client<S>,
        opts: &ProxyOptions,
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
        opts: &ProxyOptions,
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
    opts: &ProxyOptions,
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

/// A request with its backend side ahead.
struct Exchange<'a, 's> {
    r: &'a Req<'a>,
    route: &'s Route,
    close: bool,
    http10: bool,
    upgrade: bool,
    head_request: bool,
    expects_continue: bool,
    bodyless: bool,
    /// See [`Forward::host`].
    host: Option<String>,
}

/// How the wait for a response head ended.
enum Head {
    /// A final head; what the client gets is in `c.out`.
    Final(Framing),
    /// 101 to an upgrade: the connection is a tunnel now.
    Upgraded,
    /// The client went away while an interim head went out.
    ClientGone,
    Failed(Error),
}

impl<'s> Exchange<'_, 's> {
    fn opts(&self) -> &ProxyOptions {
        &self.r.front.proxy.opts
    }

    async fn go<S>(
        &self,
        c: &mut Client<S>,
        picker: &mut Picker<'_, 's>,
        pump: &mut Pump,
        host_at: Option<usize>,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (backend, guard, mut conn) = match self.connect(c, picker, pump, host_at).await {
            Ok(x) => x,
            Err(next) => return next,
        };
        guard.connected();
        let mut close = self.close || self.r.front.draining.load(Ordering::Relaxed);
        let cookie = picker.set_cookie(backend);
        match self
            .response_head(c, &mut conn, pump, cookie.as_deref(), &mut close)
            .await
        {
            Head::Final(framing) => {
                let close = (close, pump.unfinished());
                self.relay(c, (backend, guard, conn), framing, close).await
            }
            Head::Upgraded => {
                self.r.finish(101, Some(self.route), Some(backend), None);
                tunnel(c, conn, guard).await
            }
            Head::ClientGone => Next::Close,
            Head::Failed(e) => {
                let close = close || pump.unfinished();
                self.r
                    .fail(c, e, self.route, Some(backend), (close, self.http10))
                    .await
            }
        }
    }

    /// Writes the request in `c.out` to `backend` on an idle connection or a new one and waits for the first bytes of
    /// its response (in `c.rbuf`), passing the rest of the body on meanwhile. A connection that fails before answering
    /// is judged by [`Error::unanswered`]: a bodyless request goes once more on a new connection after a reused one
    /// failed; one with a body is never sent twice.
    async fn send<S>(
        &self,
        slot: &Arc<Slot>,
        backend: &Endpoint,
        c: &mut Client<S>,
        pump: &mut Pump,
    ) -> Result<TcpStream, Error>
    where
        S: AsyncRead + Unpin,
    {
        let (opts, started, t) = (self.opts(), self.r.started, self.r.t);
        let mut fresh_only = false;
        loop {
            let idle = if fresh_only {
                None
            } else {
                c.take_held(slot, opts.idle_timeout, started)
                    .or_else(|| crate::proxy::pool::take_raw(slot, opts.idle_timeout, started))
            };
            let reused = idle.is_some();
            let mut s = match idle {
                Some(s) => s,
                None => crate::proxy::pool::connect(backend, opts.connect_timeout, t)
                    .await
                    .map_err(Error::Connect)?,
            };
            // Timings only for the access log: two clock reads per request saved when it is off.
            if self.r.log.is_some() {
                self.r.marks.connected(started);
            }
            c.rbuf.clear();
            match t.within(opts.backend_timeout, s.write_all(&c.out)).await {
                Some(Ok(())) => {}
                // Closed before it could carry anything: the next idle connection, or a new one.
                Some(Err(_)) if reused => continue,
                Some(Err(e)) => {
                    return Err(Error::Connect(format!("{e} (new connection, writing)")))
                }
                None => return Err(Error::Timeout(opts.backend_timeout)),
            }
            // The first byte of the response within the backend timeout (each backend tried has its own).
            let max = BACKEND_BUF.max(opts.max_header_bytes);
            let error = match backend_read(c, &mut s, pump, max, opts, t).await {
                Ok(n) if n > 0 => {
                    if self.r.log.is_some() {
                        self.r.marks.first_byte(started);
                    }
                    return Ok(s);
                }
                Ok(_) => "connection closed before any response".to_string(),
                Err(Error::Failed(e)) => e,
                Err(e) => return Err(e),
            };
            match Error::unanswered(reused, self.bodyless, error) {
                Error::Reused(error) => {
                    tracing::debug!(backend = %backend, %error, "reused connection failed; sending again on a new one");
                    self.r.marks.retried();
                    fresh_only = true;
                }
                e => return Err(e),
            }
        }
    }

    /// The request in `c.out` to the picker's backends until one takes it and starts answering: the backend, its
    /// in-flight guard, the connection. `Err`: the client has had its answer.
    async fn connect<S>(
        &self,
        c: &mut Client<S>,
        picker: &mut Picker<'_, 's>,
        pump: &mut Pump,
        host_at: Option<usize>,
    ) -> Result<(&'s Endpoint, InFlight, TcpStream), Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let r = self.r;
        let how = (self.close, self.http10);
        let mut host_line = 0;
        loop {
            let Some((backend, guard)) = picker.next() else {
                let a = picker.exhausted();
                return Err(r.answer(c, &a, Some(self.route), None, how).await);
            };
            // A client that sent no Host (HTTP/1.0): each backend gets its own address.
            if let Some(at) = host_at {
                let line = format!("host: {backend}\r\n");
                c.out.splice(at..at + host_line, line.bytes());
                host_line = line.len();
            }
            let sent = self.send(guard.slot(), backend, c, pump).await;
            match sent {
                Ok(s) => return Ok((backend, guard, s)),
                Err(Error::Connect(error)) => {
                    if let Err(a) = picker.connect_failed(backend, &error) {
                        return Err(r.answer(c, &a, Some(self.route), Some(backend), how).await);
                    }
                    r.marks.retried();
                }
                Err(e) => {
                    let how = (self.close || pump.unfinished(), self.http10);
                    return Err(r.fail(c, e, self.route, Some(backend), how).await);
                }
            }
        }
    }

    /// Reads the response head: interim (1xx) heads pass through as they come (but a 100 the client had from
    /// us, and any to an HTTP/1.0 client); a final one is rewritten into `c.out`.
    async fn response_head<S>(
        &self,
        c: &mut Client<S>,
        conn: &mut TcpStream,
        pump: &mut Pump,
        cookie: Option<&str>,
        close: &mut bool,
    ) -> Head
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let opts = self.opts();
        let max_head = BACKEND_BUF.max(opts.max_header_bytes);
        loop {
            let mut fast = [httparse::EMPTY_HEADER; super::head::MAX];
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let read_more = match response::parse(c.rbuf.bytes(), &mut fast, &mut slots) {
                Ok(httparse::Status::Complete(h)) => match h.code {
                    101 if self.upgrade => return Head::Upgraded,
                    101 => {
                        return Head::Failed(Error::Failed(
                            "101 to a request that asked for no upgrade".into(),
                        ))
                    }
                    100..=199 => {
                        let n = h.len;
                        let pass = !(self.http10 || h.code == 100 && self.expects_continue);
                        c.out.clear();
                        if pass {
                            c.out.extend_from_slice(&c.rbuf.bytes()[..n]);
                        }
                        c.rbuf.consume(n);
                        if pass && !self.r.write_out(c).await {
                            return Head::ClientGone;
                        }
                        c.rbuf.is_empty()
                    }
                    _ => {
                        // A response before the whole body: the rest of it cannot be found, so the connection
                        // ends after it.
                        *close |= pump.unfinished();
                        let n = h.len;
                        let asked = Asked {
                            head_request: self.head_request,
                            http10: self.http10,
                            set_cookie: cookie,
                            via: opts.via,
                            hsts: self.route.hsts && self.r.peer.tls,
                            revproxy: self
                                .route
                                .revproxy_path
                                .as_deref()
                                .map(|root| (root, self.host.as_deref())),
                        };
                        return match response_head(
                            &h,
                            &c.rbuf.bytes()[..n],
                            asked,
                            close,
                            &mut c.out,
                        ) {
                            Ok(framing) => {
                                c.rbuf.consume(n);
                                Head::Final(framing)
                            }
                            Err(e) => {
                                Head::Failed(Error::Failed(format!("bad response head: {e}")))
                            }
                        };
                    }
                },
                Ok(httparse::Status::Partial) if c.rbuf.len() >= max_head => {
                    return Head::Failed(Error::Failed("response head too large".into()))
                }
                Ok(httparse::Status::Partial) => true,
                Err(e) => return Head::Failed(Error::Failed(format!("bad response head: {e}"))),
            };
            if read_more {
                match backend_read(c, conn, pump, max_head, opts, self.r.t).await {
                    Ok(n) if n > 0 => {}
                    Ok(_) => {
                        return Head::Failed(Error::Failed(
                            "connection closed in the response head".into(),
                        ))
                    }
                    Err(e) => return Head::Failed(e),
                }
            }
        }
    }

    /// The response body to the client: what came with the head goes out in the same write, the rest as it
    /// arrives. The backend connection is kept for the client's next request when it can carry one; `close`: the
    /// connection ends after it, and whether the request body was left unfinished.
    async fn relay<S>(
        &self,
        c: &mut Client<S>,
        (backend, guard, mut conn): (&Endpoint, InFlight, TcpStream),
        framing: Framing,
        (close, body_unfinished): (bool, bool),
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (r, opts) = (self.r, self.opts());
        c.idle_since = r.finish(
            framing.status,
            Some(self.route),
            Some(backend),
            framing.content_length,
        );
        let mut state = framing.body;
        let dechunk = framing.dechunk;
        let mut reusable = framing.reusable && !self.upgrade && !body_unfinished;
        let Ok(take) = body_part(&mut state, c.rbuf.bytes(), dechunk.then_some(&mut c.out)) else {
            return Next::Close;
        };
        if !dechunk {
            c.out.extend_from_slice(&c.rbuf.bytes()[..take]);
        }
        c.rbuf.consume(take);
        if !r.write_out(c).await {
            return Next::Close;
        }
        while !state.as_ref().is_some_and(BodyState::done) {
            let read =
                r.t.within(
                    opts.backend_timeout,
                    c.rbuf.fill(&mut conn, BACKEND_BUF, BACKEND_BUF),
                )
                .await;
            match read {
                Some(Ok(0)) if state.is_none() => break,
                Some(Ok(n)) if n > 0 => {}
                // A body cut short: the client must see the connection end, not a complete response.
                _ => {
                    tracing::debug!(backend = %backend, app = %self.route.app_id, "backend response body cut short");
                    return Next::Close;
                }
            }
            c.out.clear();
            let Ok(take) = body_part(&mut state, c.rbuf.bytes(), dechunk.then_some(&mut c.out))
            else {
                return Next::Close;
            };
            let bytes = if dechunk {
                &c.out[..]
            } else {
                &c.rbuf.bytes()[..take]
            };
            let written =
                r.t.within(opts.client_timeout, write(&mut c.io, bytes))
                    .await;
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
