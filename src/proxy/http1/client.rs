//! A client connection's state on the fast path (its buffers, the backend connection it holds) and one request's
//! context on its way through: what the connection loop and the exchange both work on.

use super::buf::{write, Buf};
use crate::marathon::address::Endpoint;
use crate::proxy::answer::Answer;
use crate::proxy::backend::Slot;
use crate::proxy::deadline::Timeouts;
use crate::proxy::error::{Blame, Error};
use crate::proxy::front::Front;
use crate::proxy::log::{access_log, record, AccessEntry, Marks};
use crate::proxy::route::Entry;
use crate::rules::table::Route;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

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
    /// Which listener it came in on, for routing.
    pub entry: Entry,
    /// The TLS server name the client asked for (`ssl_fc_sni`).
    pub sni: Option<Arc<str>>,
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
            entry: Entry::Shared,
            sni: None,
        }
    }

    /// A TLS connection's: the name it asked for.
    pub fn named(self, sni: Option<Arc<str>>) -> Peer {
        Peer { sni, ..self }
    }

    /// A connection to another listener than the shared one.
    pub fn entered(self, entry: Entry) -> Peer {
        Peer { entry, ..self }
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
    pub(super) fn new(io: S) -> Client<S> {
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

/// How one request ended for the connection.
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// What the planner saw of a request head for the metrics and the access log.
#[derive(Default)]
pub(super) struct Seen {
    /// The method's index in `metrics::METHODS`.
    pub method: u8,
    /// Only when the access log is on.
    pub log: Option<LogInfo>,
}

/// What the access log keeps of a request (taken only when it is on).
pub(super) struct LogInfo {
    pub method: http::Method,
    pub uri: http::Uri,
    pub host: Option<String>,
    pub version: http::Version,
    pub bytes_in: Option<u64>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub request_id: String,
}

impl LogInfo {
    pub(super) fn new(
        (method, target, host): (&str, &str, Option<&str>),
        http10: bool,
        (headers, f): (&[httparse::Header<'_>], &super::fields::Fields<'_>),
        request_id: &[u8],
    ) -> LogInfo {
        let content_length = f.content_length;
        let field = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        LogInfo {
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            uri: target.parse().unwrap_or_default(),
            host: host.map(str::to_string),
            version: if http10 {
                http::Version::HTTP_10
            } else {
                http::Version::HTTP_11
            },
            bytes_in: content_length
                .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok())
                .and_then(|v| v.parse().ok()),
            user_agent: field("user-agent"),
            referer: field("referer"),
            request_id: String::from_utf8_lossy(request_id).into_owned(),
        }
    }
}

/// One request on its way: what every step needs besides the connection.
pub(super) struct Req<'a> {
    pub front: &'a Front,
    pub peer: &'a Peer,
    pub log: Option<&'a LogInfo>,
    /// The method's index in `metrics::METHODS`.
    pub method: u8,
    pub started: Instant,
    pub t: Timeouts<'a>,
    /// Backend connect, first byte, retries, as the exchange meets them.
    pub marks: Marks,
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
        let now = record(
            route,
            (self.method, status),
            self.started,
            self.marks.retries(),
        );
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
                    bytes_in: l.bytes_in,
                    bytes_out: size,
                    app: route.map_or("", |r| r.app_id.as_str()),
                    backend,
                    tls: self.peer.tls,
                    timing: self
                        .marks
                        .timing(now.saturating_duration_since(self.started)),
                    user_agent: l.user_agent.as_deref(),
                    referer: l.referer.as_deref(),
                    request_id: Some(&l.request_id),
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
