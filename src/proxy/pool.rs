//! Keep-alive HTTP/1 connections to backends, kept per backend in the balancer's slot. Taking one is a lock on that
//! slot's short list (no pool-wide map, no absolute-URI parsing as a general client needs); a request that could
//! not be written (the idle connection had just closed) comes back untouched and goes out on another connection.

use super::answer::{empty, ProxyBody};
use super::backend::{Idle, Slot};
use super::deadline::{Deadlines, Timeouts};
use super::error::Error;
use super::options::ProxyOptions;
use crate::marathon::address::Endpoint;
use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per backend.
pub const MAX_IDLE: usize = 256;

/// Why a request got no response; a connect failure hands the request back, as nothing of it was sent.
pub type Failure = (Error, Option<Box<Request<ProxyBody>>>);

/// A ready idle connection of this backend, dropping closed and expired ones; busy ones (a response body still
/// streaming) stay for later.
fn take_idle(slot: &Slot, idle_timeout: Duration) -> Option<SendRequest<ProxyBody>> {
    let mut idle = slot.idle.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < idle_timeout);
    let i = idle.iter().rposition(|c| c.sender.is_ready())?;
    Some(idle.swap_remove(i).sender)
}

fn put_idle(slot: &Slot, sender: SendRequest<ProxyBody>) {
    let mut idle = slot.idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

/// An idle connection of the fast path's, most recent first, still open as far as the reactor knows: a backend
/// that closed it has sent a FIN, which `try_read` sees without a syscall when nothing arrived.
pub fn take_raw(slot: &Slot, idle_timeout: Duration, now: Instant) -> Option<TcpStream> {
    let mut idle = slot.raw_idle.lock().unwrap_or_else(|p| p.into_inner());
    while let Some((s, since)) = idle.pop() {
        if now.saturating_duration_since(since) >= idle_timeout {
            // The rest went idle earlier still.
            idle.clear();
            return None;
        }
        if still_open(&s) {
            return Some(s);
        }
    }
    None
}

/// Whether an idle connection can carry a request: no FIN and no stray bytes arrived on it. Costs no syscall
/// while the reactor has seen nothing on it.
pub fn still_open(s: &TcpStream) -> bool {
    matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

pub fn put_raw(slot: &Slot, s: TcpStream, now: Instant) {
    let mut idle = slot.raw_idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push((s, now));
    }
}

/// A new connection to `backend`, within `timeout` on `t`, with Nagle off (heads and bodies go out in one write
/// each).
pub async fn connect(
    backend: &Endpoint,
    timeout: Duration,
    t: Timeouts<'_>,
) -> Result<TcpStream, String> {
    let addr = backend.to_string();
    match t.within(timeout, TcpStream::connect(&addr)).await {
        Some(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("connect timeout after {timeout:?}")),
    }
}

/// Sends `req` (origin-form URI) to `backend` on an idle connection, or a new one. `replay`: the request has no
/// body, so if a reused connection fails after it was written (the backend closed it as we sent), it is sent once
/// more on a new connection.
pub async fn send(
    slot: &Slot,
    backend: &Endpoint,
    mut req: Request<ProxyBody>,
    replay: bool,
    opts: &ProxyOptions,
    deadlines: &Deadlines,
) -> Result<http::Response<Incoming>, Failure> {
    let copy_of = |req: &Request<ProxyBody>| {
        replay.then(|| {
            let mut r = Request::new(empty());
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.version_mut() = req.version();
            *r.headers_mut() = req.headers().clone();
            r
        })
    };
    while let Some(mut sender) = take_idle(slot, opts.idle_timeout) {
        let copy = copy_of(&req);
        match sender.try_send_request(req).await {
            Ok(resp) => {
                put_idle(slot, sender);
                return Ok(resp);
            }
            Err(mut e) => match (e.take_message(), copy) {
                // Not written: the connection closed under us. Try the next one.
                (Some(back), _) => req = back,
                (None, Some(again)) => {
                    tracing::debug!(backend = %backend, error = %e.error(), "reused connection failed; sending again on a new one");
                    req = again;
                    break;
                }
                (None, None) => return Err((Error::Failed(e.into_error().to_string()), None)),
            },
        }
    }
    let mine = deadlines.register();
    let t = deadlines.timeouts(&mine);
    let stream = match connect(backend, opts.connect_timeout, t).await {
        Ok(s) => s,
        Err(e) => return Err((Error::Connect(e), Some(Box::new(req)))),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return Err((Error::Connect(e.to_string()), Some(Box::new(req)))),
    };
    tokio::spawn(async move {
        // Upgrades (101) hand the connection over to the tunnel.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    let copy = copy_of(&req);
    match sender.try_send_request(req).await {
        Ok(resp) => {
            put_idle(slot, sender);
            Ok(resp)
        }
        Err(mut e) => match (e.take_message(), copy) {
            (Some(back), _) => Err((
                Error::Connect(e.into_error().to_string()),
                Some(Box::new(back)),
            )),
            // A new connection reset before any response (a task dying with connections in its backlog): for a
            // request without a body, as good as a connect failure ([`Error::unanswered`]).
            (None, again) => Err((
                Error::unanswered(false, again.is_some(), e.into_error().to_string()),
                again.map(Box::new),
            )),
        },
    }
}
