//! The data plane: reads only the current snapshot (one `load` per request, no lock), matches the route, picks a
//! backend, forwards over pooled keep-alive connections.

pub mod backend;
pub mod balance;
pub mod deadline;
pub mod error;
pub mod framing;
pub mod h1;
pub mod head;
pub mod idle;
pub mod pool;
pub mod tcp;
pub mod tls;

use crate::marathon::address::Endpoint;
use crate::rules::acl::{Headers, Request as AclRequest};
use crate::snapshot::Publisher;
use backend::InFlight;
use balance::Balancer;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// `--access-log`: one line per request on stdout, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Json,
    Clf,
}

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub connect_timeout: Duration,
    /// Slowloris guard: an HTTP/1 request head must be whole this long after its first byte (the first head: after
    /// the connect).
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight is closed this long after its last response (HTTP/2: GOAWAY).
    pub keep_alive_timeout: Duration,
    /// Idle pooled backend connections.
    pub idle_timeout: Duration,
    pub backend_timeout: Duration,
    /// A request in flight whose client takes no response bytes (or sends no body bytes) this long is cut off.
    pub client_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub via: bool,
    pub access_log: AccessLog,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            backend_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            via: false,
            access_log: AccessLog::Off,
        }
    }
}

/// What a request's connection tells about it.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The port the client connected to (X-Forwarded-Port).
    pub port: u16,
    /// The hyper path's timers, which time request bodies' waits on the client.
    pub activity: Option<Arc<idle::Activity>>,
}

/// Backend requests one client connection may have at once (HTTP/2 streams past it wait for a turn, holding no
/// backend connection): a client that opens many streams and reads none cannot pin a backend pool.
pub const MAX_BACKEND_PER_CLIENT: usize = 32;

pub struct Proxy {
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    opts: ProxyOptions,
    /// Where redirects to HTTPS point: the HTTPS listener's port (443 when there is none here).
    https_port: u16,
}

/// What the access log and the metrics learn while a request is forwarded; borrows the snapshot `handle` holds.
#[derive(Default)]
struct Trace<'s> {
    route: Option<&'s crate::rules::table::Route>,
    backend: Option<&'s Endpoint>,
}

/// A response body that holds `guard` until hyper is done with it (the client has it all, or went away): the
/// backend's in-flight count, or the client connection's request in flight (`idle::Busy`).
pub(crate) struct Guarded<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    pub(crate) fn new(inner: B, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn plain(status: StatusCode, msg: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// By constant name: a `&str` would be parsed into a header name on every lookup.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Fields a `Connection` token can never remove. Dropping the length of a message whose body is still forwarded
/// splits it in two for the next hop (request smuggling, responses run together); dropping `Host` re-targets it.
/// RFC 9110 §7.6.1 lets a sender name only connection-specific fields, and these never are.
pub(crate) fn never_named(token: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"]
        .iter()
        .any(|n| token.eq_ignore_ascii_case(n))
}

/// RFC 9110 §7.6.1: connection-specific fields, and every field named in `Connection` (but the framing fields and
/// `Host`: [`never_named`]), never cross a proxy.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !never_named(n.as_bytes()))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Backends tried for one request when connects fail (nothing was sent, so trying another is always safe).
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// marathon-lb's sticky cookie name, so clients keep their sessions across the move.
pub const STICKY_COOKIE: &str = "mesosphere_server_id";

/// An opaque token naming a backend (FNV-1a of `host:port`): the cookie never reveals addresses.
fn sticky_token(e: &Endpoint) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in e.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The sticky cookie's value, from any `Cookie` header.
fn sticky_cookie<'a>(headers: Headers<'a>) -> Option<&'a [u8]> {
    headers.find_map("cookie", |v| {
        v.split(|b| *b == b';')
            .filter_map(|kv| {
                let kv = kv.trim_ascii();
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((&kv[..eq], &kv[eq + 1..]))
            })
            .find(|(k, _)| *k == STICKY_COOKIE.as_bytes())
            .map(|(_, v)| v)
    })
}

fn bodyless(req: &Request<Incoming>) -> bool {
    req.body().is_end_stream()
        || (matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        ) && !req.headers().contains_key(header::CONTENT_LENGTH)
            && !req.headers().contains_key(header::TRANSFER_ENCODING))
}

impl Proxy {
    pub fn new(
        publisher: Arc<Publisher>,
        balancer: Arc<Balancer>,
        https_port: u16,
        opts: &ProxyOptions,
    ) -> Proxy {
        Proxy {
            publisher,
            balancer,
            opts: opts.clone(),
            https_port,
        }
    }

    /// Matches the request against the snapshot's routes and says what to do with it: forward to the route's
    /// routable backends, or answer here (404 no route, 301 to HTTPS, 503 no backend). One decision for both
    /// front ends.
    pub(crate) fn route<'s>(
        &self,
        snap: &'s crate::snapshot::Snapshot,
        req: &AclRequest<'_>,
        raw_host: Option<&str>,
        path_and_query: &str,
        tls: bool,
    ) -> Routed<'s> {
        let Some(route) = snap.routes.find(req) else {
            return Routed::Answer(
                None,
                Answer::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "rattan: no route for {}{}\n",
                        raw_host.unwrap_or(""),
                        req.path
                    ),
                ),
            );
        };
        if route.redirect_https && !tls {
            return Routed::Answer(Some(route), self.redirect_https(raw_host, path_and_query));
        }
        // Borrowed from the snapshot the request holds: a swap meanwhile does not change its backends.
        let backends: &[Endpoint] = snap
            .apps
            .get(&route.app_id)
            .map(|a| a.healthy_backends(route.port_index))
            .unwrap_or(&[]);
        if backends.is_empty() {
            return Routed::Answer(
                Some(route),
                Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("rattan: {} has no healthy backend\n", route.app_id),
                ),
            );
        }
        Routed::Forward(route, backends)
    }

    /// marathon-lb's `redirect scheme https code 301`: same host and path, on the HTTPS port.
    fn redirect_https(&self, host: Option<&str>, path_and_query: &str) -> Answer {
        // Drop the client's port (the plain listener's).
        let name = host_name(host.unwrap_or(""));
        let port = match self.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let location = format!("https://{name}{port}{path_and_query}");
        Answer {
            status: StatusCode::MOVED_PERMANENTLY,
            body: format!("rattan: moved to {location}\n"),
            location: Some(location),
        }
    }

    /// Counts the request by app and status class, with its time to the response head; returns the time now.
    fn record(
        route: Option<&crate::rules::table::Route>,
        status: u16,
        started: Instant,
    ) -> Instant {
        let now = Instant::now();
        let took = now.saturating_duration_since(started);
        match route {
            Some(route) => route
                .metrics
                .get_or_init(|| crate::metrics::AppMetrics::for_app(&route.app_id))
                .record(status, took),
            None => {
                static NO_ROUTE: std::sync::OnceLock<std::sync::Arc<crate::metrics::AppMetrics>> =
                    std::sync::OnceLock::new();
                NO_ROUTE
                    .get_or_init(|| crate::metrics::AppMetrics::for_app(""))
                    .record(status, took)
            }
        }
        now
    }

    /// The 400 for framing no proxy may pass on (`why`: one of `framing`'s reasons).
    fn smuggling_refused(peer: SocketAddr, why: &str) -> Answer {
        crate::metrics::metrics()
            .http_rejected
            .with_label_values(&["smuggling"])
            .inc();
        tracing::warn!(client = %peer, %why, "request with ambiguous framing refused");
        Answer::new(StatusCode::BAD_REQUEST, format!("rattan: {why}\n"))
    }

    /// Proxies one request and records it: by app and status class, with its time to the response head.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let m = crate::metrics::metrics();
        let started = Instant::now();
        let log = (self.opts.access_log != AccessLog::Off).then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                req.headers().get(header::HOST).cloned(),
            )
        });
        m.http_in_flight.inc();
        let snap = self.publisher.load_full();
        let mut trace = Trace::default();
        let mut resp = self.forward(req, conn, &snap, &mut trace).await;
        m.http_in_flight.dec();
        if self.opts.via {
            resp.headers_mut()
                .append(header::VIA, HeaderValue::from_static("1.1 rattan"));
        }
        let status = resp.status().as_u16();
        Self::record(trace.route, status, started);
        if let Some((method, uri, version, host)) = log {
            access_log(
                self.opts.access_log,
                &AccessEntry {
                    peer: conn.peer,
                    method: &method,
                    uri: &uri,
                    version,
                    host: host.as_ref().and_then(|h| h.to_str().ok()),
                    status,
                    size: resp
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                    app: trace.route.map_or("", |r| r.app_id.as_str()),
                    backend: trace.backend,
                    tls: conn.tls,
                    duration: started.elapsed(),
                },
            );
        }
        resp
    }

    /// Routes and forwards; `trace` learns the route and the backend.
    async fn forward<'s>(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        snap: &'s crate::snapshot::Snapshot,
        trace: &mut Trace<'s>,
    ) -> Response<ProxyBody> {
        let client_addr = conn.peer;
        if let Err(why) = target_agrees(&req) {
            crate::metrics::metrics()
                .http_rejected
                .with_label_values(&["bad_request"])
                .inc();
            return Answer::new(StatusCode::BAD_REQUEST, format!("rattan: {why}\n"))
                .into_response();
        }
        // HTTP/2 carries the host in :authority; HTTP/1 in Host (the same as an absolute-form target's, checked
        // above). Kept as a header value: cloning it is a refcount.
        let host_value: Option<HeaderValue> =
            req.headers().get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        let host = host_value.as_ref().and_then(|h| h.to_str().ok());
        let routed = self.route(
            snap,
            &AclRequest {
                path: req.uri().path(),
                method: req.method().as_str(),
                // Rules name hosts; a port (always in HTTP/2's :authority, in Host off port 80/443) is not part of it.
                host: host.map(host_name),
                headers: req.headers().into(),
                src: Some(client_addr.ip()),
            },
            host,
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            conn.tls,
        );
        let (route, backends) = match routed {
            Routed::Forward(route, backends) => (route, backends),
            Routed::Answer(route, answer) => {
                trace.route = route;
                return answer.into_response();
            }
        };
        trace.route = Some(route);

        let retryable = bodyless(&req);
        // WebSocket and other upgrades: keep `Upgrade` and say `Connection: upgrade` to the backend, then splice the
        // two upgraded connections together if it answers 101.
        let upgrade = upgrade_protocol(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        // Timed from here: a client that announces a body and stops sending it is cut at the client timeout.
        let body = match &conn.activity {
            Some(a) => idle::Paced::new(body, a, idle::Toward::Backend).boxed(),
            None => body.boxed(),
        };
        strip_hop_by_hop(&mut parts.headers);
        if let Some((proto, _)) = &upgrade {
            parts.headers.insert(header::UPGRADE, proto.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if let Some(h) = host_value {
            if !parts.headers.contains_key(header::HOST) {
                parts.headers.insert(header::HOST, h.clone());
            }
            parts.headers.insert(X_FORWARDED_HOST, h);
        }
        let ip = client_addr.ip().to_string();
        let xff = match parts
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::try_from(xff) {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
        parts.headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
        parts
            .headers
            .insert(X_FORWARDED_PORT, HeaderValue::from(conn.port));
        if self.opts.via {
            parts
                .headers
                .append(header::VIA, HeaderValue::from_static("1.1 rattan"));
        }
        // Built once: origin-form URI and the same headers whatever the backend, so a connect failure hands it
        // back for the next backend, body unread. An HTTP/1 request line is origin-form already.
        let mut out = Request::new(body);
        // An HTTP/1.0 request may come without Host; what goes out is HTTP/1.1, which needs one: the backend's.
        let generated_host = !parts.headers.contains_key(header::HOST);
        *out.method_mut() = parts.method;
        *out.uri_mut() = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
            parts.uri
        } else {
            http::Uri::from(
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            )
        };
        *out.version_mut() = Version::HTTP_11;
        let mut picker = Picker::new(
            &self.balancer,
            route,
            backends,
            sticky_cookie(Headers::Map(&parts.headers)),
        );
        *out.headers_mut() = parts.headers;
        loop {
            let Some((backend, guard)) = picker.next() else {
                return picker.exhausted().into_response();
            };
            trace.backend = Some(backend);
            if generated_host {
                if let Ok(v) = HeaderValue::from_str(&backend.to_string()) {
                    out.headers_mut().insert(header::HOST, v);
                }
            }
            let sent = pool::send(
                guard.slot(),
                backend,
                out,
                retryable,
                self.opts.connect_timeout,
                self.opts.idle_timeout,
            );
            let result = match tokio::time::timeout(self.opts.backend_timeout, sent).await {
                Ok(r) => r,
                Err(_) => return self.backend_timed_out(route, backend).into_response(),
            };
            match result {
                Ok(resp) => {
                    guard.connected();
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some((_, client_side)) = upgrade {
                            return tunnel(resp, client_side, guard, backend.clone());
                        }
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    if let Some(cookie) = picker.set_cookie(backend) {
                        if let Ok(v) = HeaderValue::from_str(&cookie) {
                            rparts.headers.append(header::SET_COOKIE, v);
                        }
                    }
                    return Response::from_parts(rparts, Guarded::new(rbody, guard).boxed());
                }
                Err(pool::Failure::Connect(error, back)) => {
                    match picker.connect_failed(backend, &error) {
                        Ok(()) => out = *back,
                        Err(answer) => return answer.into_response(),
                    }
                }
                Err(pool::Failure::Request(e)) => {
                    return backend_failed(route, backend, &e.to_string()).into_response()
                }
            }
        }
    }

    fn backend_timed_out(&self, route: &crate::rules::table::Route, backend: &Endpoint) -> Answer {
        tracing::warn!(backend = %backend, app = %route.app_id, timeout = ?self.opts.backend_timeout, "backend response timeout");
        Answer::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "rattan: backend {backend} did not answer within {:?}\n",
                self.opts.backend_timeout
            ),
        )
    }
}

/// An absolute-form target (or HTTP/2's `:authority`) must name the host `Host` names, when both are there: a
/// proxy that routed by one and forwarded the other would let a client pick routes the rules do not give it
/// (HAProxy answers 400 too). An HTTP/1.1 request must name a host at all (RFC 9112 §3.2).
fn target_agrees(req: &Request<Incoming>) -> Result<(), &'static str> {
    let host = req.headers().get(header::HOST);
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err("more than one Host header");
    }
    match (req.uri().authority(), host) {
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
            Err("Host does not match the request target's authority")
        }
        (None, None) if req.version() == Version::HTTP_11 => Err("HTTP/1.1 request without Host"),
        _ => Ok(()),
    }
}

/// A request that reached a backend and failed there (after it was sent): 502, never retried.
fn backend_failed(route: &crate::rules::table::Route, backend: &Endpoint, error: &str) -> Answer {
    tracing::warn!(backend = %backend, app = %route.app_id, %error, "backend request failed");
    Answer::new(
        StatusCode::BAD_GATEWAY,
        format!("rattan: backend {backend} failed: {error}\n"),
    )
}

/// A short plain-text response the proxy gives itself, without a backend.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub location: Option<String>,
}

impl Answer {
    fn new(status: StatusCode, body: String) -> Answer {
        Answer {
            status,
            body,
            location: None,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut r = plain(self.status, self.body);
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}

/// What routing decided: forward to the route's backends, or answer here (with the route when one matched, for
/// the metrics).
pub(crate) enum Routed<'s> {
    Forward(&'s crate::rules::table::Route, &'s [Endpoint]),
    Answer(Option<&'s crate::rules::table::Route>, Answer),
}

/// Backends for one request, in the order they are tried: the sticky cookie's, then the balancer's picks, leaving
/// out those whose connect failed (nothing was sent to them, so moving on is always safe).
pub(crate) struct Picker<'p, 's> {
    balancer: &'p Balancer,
    route: &'s crate::rules::table::Route,
    backends: &'s [Endpoint],
    /// The backend the sticky cookie names, while it is routable.
    cookie: Option<&'s Endpoint>,
    pinned: Option<&'s Endpoint>,
    failed: Vec<Endpoint>,
}

impl<'p, 's> Picker<'p, 's> {
    pub fn new(
        balancer: &'p Balancer,
        route: &'s crate::rules::table::Route,
        backends: &'s [Endpoint],
        cookie: Option<&[u8]>,
    ) -> Self {
        let cookie = cookie
            .filter(|_| route.sticky)
            .and_then(|t| backends.iter().find(|b| sticky_token(b).as_bytes() == t));
        Picker {
            balancer,
            route,
            backends,
            cookie,
            pinned: cookie,
            failed: Vec::new(),
        }
    }

    pub fn next(&mut self) -> Option<(&'s Endpoint, InFlight)> {
        match self.pinned.take() {
            Some(b) => Some((b, self.balancer.take(b))),
            None => self.balancer.pick(
                &self.route.app_id,
                self.route.port_index,
                self.route.balance,
                self.backends,
                &self.failed,
            ),
        }
    }

    /// The 502 when every backend tried failed to connect.
    pub fn exhausted(&self) -> Answer {
        Answer::new(
            StatusCode::BAD_GATEWAY,
            format!("rattan: no backend of {} answered\n", self.route.app_id),
        )
    }

    /// A connect to `backend` failed before anything was sent: counts toward its ejection, then `Ok` when another
    /// backend is to be tried, or the 502 to give. A scale-down can take several at once, before Marathon's event.
    pub fn connect_failed(&mut self, backend: &Endpoint, error: &str) -> Result<(), Answer> {
        let app = &self.route.app_id;
        if self.balancer.connect_failed(backend) {
            crate::metrics::metrics().backend_ejections.inc();
            tracing::warn!(backend = %backend, %app, seconds = self.balancer.eject_for().as_secs(),
                "backend ejected after repeated connect failures");
        }
        if self.failed.len() + 1 < MAX_CONNECT_ATTEMPTS.min(self.backends.len()) {
            tracing::warn!(backend = %backend, %app, %error, "backend connect failed; retrying on another");
            self.failed.push(backend.clone());
            return Ok(());
        }
        tracing::warn!(backend = %backend, %app, %error, "backend connect failed");
        Err(Answer::new(
            StatusCode::BAD_GATEWAY,
            format!("rattan: backend {backend} failed: {error}\n"),
        ))
    }

    /// The `Set-Cookie` that pins the client to `backend`, unless its cookie names it already.
    pub fn set_cookie(&self, backend: &Endpoint) -> Option<String> {
        (self.route.sticky && self.cookie != Some(backend)).then(|| {
            format!(
                "{STICKY_COOKIE}={}; Path=/; HttpOnly",
                sticky_token(backend)
            )
        })
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn host_name(host: &str) -> &str {
    // Bytes, not chars: this runs on every request.
    let b = host.as_bytes();
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|c| *c == b']').map_or(b.len(), |i| i + 1)
    } else {
        b.iter().position(|c| *c == b':').unwrap_or(b.len())
    };
    &host[..end]
}

/// The protocol a request asks to upgrade to, when it is a real HTTP/1.1 upgrade request.
fn upgrade_protocol(req: &Request<Incoming>) -> Option<HeaderValue> {
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if req.version() != Version::HTTP_11 || !asks {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// Answers the client's upgrade with the backend's 101, then copies bytes both ways until either side closes.
/// The tunnel counts as one request in flight on the backend for its whole life.
fn tunnel(
    mut resp: Response<Incoming>,
    client_side: hyper::upgrade::OnUpgrade,
    guard: InFlight,
    backend: Endpoint,
) -> Response<ProxyBody> {
    let backend_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let _guard = guard;
        match tokio::try_join!(client_side, backend_side) {
            Ok((c, b)) => {
                let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
            Err(e) => tracing::warn!(backend = %backend, error = %e, "upgrade failed"),
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, empty())
}

pub struct Listeners {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

/// Binds the HTTP (and HTTPS) listeners and serves them in the background until `shutdown` turns true; then they
/// stop accepting and the returned task ends once every open connection has finished its requests (idle
/// keep-alive connections close at once, HTTP/2 gets a GOAWAY).
pub async fn serve(
    http_bind: SocketAddr,
    https: Option<(SocketAddr, Arc<tls::CertStore>)>,
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    opts: ProxyOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(Listeners, tokio::task::JoinHandle<()>)> {
    let http = TcpListener::bind(http_bind).await?;
    let http_addr = http.local_addr()?;
    let (https, https_addr, acceptor) = match https {
        Some((bind, certs)) => {
            let l = TcpListener::bind(bind).await?;
            let addr = l.local_addr()?;
            let cfg = certs.server_config().map_err(std::io::Error::other)?;
            (
                Some(l),
                Some(addr),
                Some(tokio_rustls::TlsAcceptor::from(cfg)),
            )
        }
        None => (None, None, None),
    };
    // Forget the counters and idle connections of backends gone from every app (batched: at most every 5 s).
    {
        let (publisher, balancer) = (publisher.clone(), balancer.clone());
        tokio::spawn(async move {
            let mut changes = publisher.subscribe();
            while changes.changed().await.is_ok() {
                tokio::time::sleep(Duration::from_secs(5)).await;
                changes.mark_unchanged();
                let snap = publisher.load_full();
                let live: std::collections::HashSet<&Endpoint> = snap
                    .apps
                    .values()
                    .flat_map(|a| a.backends.iter().flatten())
                    .collect();
                balancer.retain(|e| live.contains(e));
            }
        });
    }
    let proxy = Arc::new(Proxy::new(
        publisher,
        balancer,
        https_addr.map_or(443, |a| a.port()),
        &opts,
    ));
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes.max(8192) as u32);
    let front = Arc::new(h1::Front {
        proxy,
        h2,
        stop: shutdown.clone(),
        draining: Default::default(),
        drain: Default::default(),
        deadlines: Default::default(),
    });
    tokio::spawn(front.deadlines.clone().run());
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let task = tokio::spawn(async move {
        // Every connection task holds a sender: the drain is over when the last one is dropped.
        let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        let stopped = |rx: &mut tokio::sync::watch::Receiver<bool>| {
            let mut rx = rx.clone();
            async move { drop(rx.wait_for(|stop| *stop).await) }
        };
        let mut backoff = crate::limits::AcceptBackoff::new("proxy");
        loop {
            // Past the limit, new connections wait in the kernel's backlog instead of being accepted and starved.
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped(&mut shutdown) => break,
            };
            let accept_tls = async {
                match &https {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let (accepted, tls) = tokio::select! {
                a = http.accept() => (a, false),
                a = accept_tls => (a, true),
                _ = stopped(&mut shutdown) => break,
            };
            let (stream, peer) = match accepted {
                Ok(s) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let front = front.clone();
            let acceptor = acceptor.clone();
            let handshake_timeout = opts.header_read_timeout;
            let port = if tls {
                https_addr.map_or(443, |a| a.port())
            } else {
                http_addr.port()
            };
            let open = open.clone();
            tokio::spawn(async move {
                let m = crate::metrics::metrics();
                m.http_connections.inc();
                match acceptor.filter(|_| tls) {
                    None => {
                        let p = h1::Peer::new(peer, false, port, front.proxy.opts.via);
                        h1::serve(stream, front, p).await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            // HTTP/2 has no Content-Length/Transfer-Encoding ambiguity to watch for.
                            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                let info = ConnInfo {
                                    peer,
                                    tls: true,
                                    port,
                                    activity: None,
                                };
                                h1::serve_h2(s, &front, info).await
                            }
                            Ok(Ok(s)) => {
                                let p = h1::Peer::new(peer, true, port, front.proxy.opts.via);
                                h1::serve(s, front, p).await
                            }
                            Ok(Err(e)) => {
                                m.tls_handshake_failures.inc();
                                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                m.tls_handshake_failures.inc();
                                tracing::debug!(client = %peer, "TLS handshake timed out");
                            }
                        }
                    }
                }
                m.http_connections.dec();
                drop((permit, open));
            });
        }
        drop(http);
        drop(https);
        front
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        front.drain.notify_waiters();
        tracing::info!("proxy draining: no new connections, finishing in-flight requests");
        drop(open);
        let _ = all_closed.recv().await;
    });
    Ok((
        Listeners {
            http: http_addr,
            https: https_addr,
        },
        task,
    ))
}

/// What the hyper path answers with: each body keeps its request counted in flight for the idle timer.
/// The response body keeps the connection busy (`idle::Busy`) and its backend turn until hyper is done with it.
type TrackedResponse = Response<
    Guarded<idle::Paced<ProxyBody>, (idle::Busy, Option<tokio::sync::OwnedSemaphorePermit>)>,
>;

fn service(
    proxy: Arc<Proxy>,
    info: ConnInfo,
    activity: Arc<idle::Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = TrackedResponse,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<TrackedResponse, std::convert::Infallible>> + Send,
> + Clone {
    let info = Arc::new(info);
    let turns = Arc::new(tokio::sync::Semaphore::new(MAX_BACKEND_PER_CLIENT));
    hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let info = info.clone();
        let busy = activity.begin();
        let activity = activity.clone();
        let turns = turns.clone();
        async move {
            let turn = turns.acquire_owned().await.ok();
            let resp = proxy.handle(req, &info).await;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                let b = idle::Paced::new(b, &activity, idle::Toward::Client);
                Guarded::new(b, (busy, turn))
            }))
        }
    })
}

struct AccessEntry<'a> {
    peer: SocketAddr,
    method: &'a Method,
    uri: &'a http::Uri,
    version: Version,
    host: Option<&'a str>,
    status: u16,
    size: Option<u64>,
    app: &'a str,
    backend: Option<&'a Endpoint>,
    tls: bool,
    duration: Duration,
}

/// One line on stdout per request: JSON, or the common log format (`-` for what CLF has no field for).
fn access_log(format: AccessLog, e: &AccessEntry<'_>) {
    use std::io::Write;
    if let Some(line) = access_line(format, e, time::OffsetDateTime::now_utc()) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

fn access_line(
    format: AccessLog,
    e: &AccessEntry<'_>,
    now: time::OffsetDateTime,
) -> Option<String> {
    let path = e.uri.path_and_query().map_or("/", |p| p.as_str());
    let line = match format {
        AccessLog::Off => return None,
        AccessLog::Json => {
            let ts = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            serde_json::json!({
                "time": ts,
                "client": e.peer.ip().to_string(),
                "method": e.method.as_str(),
                "host": e.host,
                "path": path,
                "protocol": format!("{:?}", e.version),
                "tls": e.tls,
                "status": e.status,
                "bytes": e.size,
                "app": e.app,
                "backend": e.backend.map(|b| b.to_string()),
                "duration_ms": e.duration.as_secs_f64() * 1000.0,
            })
            .to_string()
        }
        AccessLog::Clf => {
            const FMT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            );
            format!(
                "{} - - [{}] \"{} {} {:?}\" {} {}",
                e.peer.ip(),
                now.format(FMT).unwrap_or_default(),
                e.method,
                path,
                e.version,
                e.status,
                e.size.map_or("-".to_string(), |s| s.to_string())
            )
        }
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines() {
        let uri: http::Uri = "/shop/cart?x=1".parse().unwrap();
        let backend = Endpoint {
            host: "10.0.0.7".into(),
            port: 31001,
        };
        let e = AccessEntry {
            peer: "192.0.2.9:5555".parse().unwrap(),
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            host: Some("shop.example.com"),
            status: 200,
            size: Some(1234),
            app: "/shop/cart",
            backend: Some(&backend),
            tls: false,
            duration: Duration::from_micros(1500),
        };
        let now = time::macros::datetime!(2026-11-30 06:05:04 UTC);
        assert_eq!(
            access_line(AccessLog::Clf, &e, now).unwrap(),
            "192.0.2.9 - - [30/Nov/2026:06:05:04 +0000] \"GET /shop/cart?x=1 HTTP/1.1\" 200 1234"
        );
        let j: serde_json::Value =
            serde_json::from_str(&access_line(AccessLog::Json, &e, now).unwrap()).unwrap();
        assert_eq!(j["app"], "/shop/cart");
        assert_eq!(j["backend"], "10.0.0.7:31001");
        assert_eq!(j["status"], 200);
        assert_eq!(j["time"], "2026-11-30T06:05:04Z");
        assert!(access_line(AccessLog::Off, &e, now).is_none());
    }
}
