//! HTTP/2, served by hyper: prior knowledge on the plain port, ALPN `h2` on TLS. Each stream is routed, picked and
//! answered as HTTP/1 requests are ([`super::route`], [`super::error`]); backends get HTTP/1.1 from the hyper
//! client pool.

use super::answer::Answer;
use super::answer::ProxyBody;
use super::deadline::Deadlines;
use super::error::Error;
use super::front::Front;
use super::idle::Expired;
use super::log::{access_log, record, AccessEntry, AccessLog};
use super::options::MAX_BACKEND_PER_CLIENT;
use super::route::Proxy;
use super::route::{host_name, sticky_cookie, Entry, Picker, Routed, Target};
use super::{idle, pool, rewrite};
use crate::marathon::address::Endpoint;
use crate::rules::acl::{Headers, Request as AclRequest};
use crate::rules::table::Route;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the access log and the metrics learn while a request is forwarded; borrows the snapshot `handle` holds.
#[derive(Default)]
struct Trace<'s> {
    route: Option<&'s Route>,
    backend: Option<&'s Endpoint>,
    /// Backends tried again after a failed connect.
    retries: u32,
    /// When the backend's response head arrived (hyper's client connects and sends in one call: no separate
    /// connect time on this path).
    head_at: Option<Instant>,
}

/// What a request's connection tells about it.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The port the client connected to (X-Forwarded-Port).
    pub port: u16,
    /// Which listener it came in on, for routing.
    pub entry: Entry,
    /// The TLS server name the client asked for.
    pub sni: Option<Arc<str>>,
    /// The connection's timers, which time request bodies' waits on the client.
    pub activity: Arc<idle::Activity>,
    /// For the backend waits of its streams, each on a deadline of its own.
    pub deadlines: Arc<Deadlines>,
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
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the access log keeps of a request on the hyper path (taken only when it is on).
struct H2Log {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    /// `Host`, else HTTP/2's `:authority`.
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    bytes_in: Option<u64>,
}

impl H2Log {
    fn of(req: &Request<Incoming>) -> H2Log {
        let h = req.headers();
        H2Log {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: h.get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            }),
            user_agent: h.get(header::USER_AGENT).cloned(),
            referer: h.get(header::REFERER).cloned(),
            request_id: h.get(X_REQUEST_ID).cloned(),
            bytes_in: h
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }
}
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

fn bodyless(req: &Request<Incoming>) -> bool {
    req.body().is_end_stream()
        || (matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        ) && !req.headers().contains_key(header::CONTENT_LENGTH)
            && !req.headers().contains_key(header::TRANSFER_ENCODING))
}

impl Proxy {
    /// Proxies one request and records it: by app and status class, with its time to the response head.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let m = crate::metrics::metrics();
        let started = Instant::now();
        let method = crate::metrics::method_index(req.method().as_str().as_bytes());
        let mut req = req;
        if !req.headers().contains_key(X_REQUEST_ID) {
            let id = crate::proxy::request_id::make();
            if let Ok(v) = HeaderValue::from_bytes(&id) {
                req.headers_mut().insert(X_REQUEST_ID, v);
            }
        }
        let log = (self.opts.access_log != AccessLog::Off).then(|| H2Log::of(&req));
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
        record(trace.route, (method, status), started, trace.retries);
        if let Some(l) = log {
            let text = |v: &Option<HeaderValue>| {
                v.as_ref().and_then(|h| h.to_str().ok()).map(str::to_string)
            };
            let (host, ua, referer, rid) = (
                text(&l.host),
                text(&l.user_agent),
                text(&l.referer),
                text(&l.request_id),
            );
            access_log(
                self.opts.access_log,
                &AccessEntry {
                    peer: conn.peer,
                    method: &l.method,
                    uri: &l.uri,
                    version: l.version,
                    host: host.as_deref(),
                    status,
                    bytes_in: l.bytes_in,
                    bytes_out: resp
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                    app: trace.route.map_or("", |r| r.app_id.as_str()),
                    backend: trace.backend,
                    tls: conn.tls,
                    timing: crate::proxy::log::Timing {
                        connect: None,
                        first_byte: trace.head_at.map(|t| t.saturating_duration_since(started)),
                        total: started.elapsed(),
                        retries: trace.retries,
                    },
                    user_agent: ua.as_deref(),
                    referer: referer.as_deref(),
                    request_id: rid.as_deref(),
                },
            );
        }
        resp
    }

    /// Routes and forwards; `trace` learns the route and the backend.
    async fn forward<'s>(
        &self,
        req: Request<Incoming>,
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
            return Answer::bad_request(why).into_response();
        }
        // HTTP/2 carries the host in :authority (Host, when also there, names the same). Kept as a header value:
        // cloning it is a refcount.
        let host_value: Option<HeaderValue> =
            req.headers().get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        let host = host_value.as_ref().and_then(|h| h.to_str().ok());
        let routed = self.route(
            snap,
            &acl_request(&req, host, conn),
            host,
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            (conn.tls, conn.entry),
        );
        let (route, backends) = match routed {
            Routed::Forward(route, backends) => (route, backends),
            Routed::Answer(route, answer) => {
                trace.route = route;
                return answer.into_response();
            }
        };
        trace.route = Some(route);
        let asked_host = route.revproxy_path.as_ref().and(host).map(str::to_string);
        let bodyless = bodyless(&req);
        let (mut parts, body) = req.into_parts();
        // Timed from here: a client that announces a body and stops sending it is cut at the client timeout.
        let body = idle::Paced::new(body, &conn.activity, idle::Toward::Backend).boxed();
        strip_hop_by_hop(&mut parts.headers);
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
        // back for the next backend, body unread.
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let passed = route
            .proxypass_path
            .as_deref()
            .and_then(|p| rewrite::proxypass(p, target.as_str()))
            .and_then(|p| http::uri::PathAndQuery::try_from(p).ok());
        *out.uri_mut() = http::Uri::from(passed.unwrap_or(target));
        *out.version_mut() = Version::HTTP_11;
        let picker = Picker::new(
            &self.balancer,
            Target::of(route),
            backends,
            sticky_cookie(Headers::Map(&parts.headers)),
        )
        .for_client(client_addr.ip());
        *out.headers_mut() = parts.headers;
        let mut resp = self
            .send(out, (route, picker), bodyless, &conn.deadlines, trace)
            .await;
        rewrite_response(resp.headers_mut(), route, conn.tls, asked_host.as_deref());
        resp
    }

    /// Sends `out` to the picker's backends until one takes it.
    async fn send<'s>(
        &self,
        mut out: Request<ProxyBody>,
        (route, mut picker): (&'s Route, Picker<'_, 's>),
        bodyless: bool,
        deadlines: &Deadlines,
        trace: &mut Trace<'s>,
    ) -> Response<ProxyBody> {
        loop {
            let Some((backend, guard)) = picker.next() else {
                return picker.exhausted().into_response();
            };
            trace.backend = Some(backend);
            let sent = pool::send(guard.slot(), backend, out, bodyless, &self.opts, deadlines);
            let result = match deadlines.within(self.opts.backend_timeout, sent).await {
                Some(r) => r,
                None => Err((Error::Timeout(self.opts.backend_timeout), None)),
            };
            match result {
                Ok(resp) => {
                    trace.head_at = Some(Instant::now());
                    guard.connected();
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    if let Some(cookie) = picker.set_cookie(backend) {
                        if let Ok(v) = HeaderValue::from_str(&cookie) {
                            rparts.headers.append(header::SET_COOKIE, v);
                        }
                    }
                    return Response::from_parts(rparts, Guarded::new(rbody, guard).boxed());
                }
                Err((Error::Connect(error), Some(back))) => {
                    match picker.connect_failed(backend, &error) {
                        Ok(()) => {
                            trace.retries += 1;
                            out = *back;
                        }
                        Err(answer) => return answer.into_response(),
                    }
                }
                Err((e, _)) => {
                    return e
                        .answer(Some(route), Some(backend))
                        .map_or_else(super::answer::empty_response, Answer::into_response)
                }
            }
        }
    }
}

/// What the route changes in a response: redirects put back under its public path, HSTS on HTTPS.
fn rewrite_response(headers: &mut HeaderMap, route: &Route, tls: bool, asked_host: Option<&str>) {
    if let Some(root) = &route.revproxy_path {
        for name in rewrite::LOCATION_FIELDS {
            let new = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| rewrite::revproxy(root, v, asked_host))
                .and_then(|v| HeaderValue::try_from(v).ok());
            if let Some(v) = new {
                headers.insert(name, v);
            }
        }
    }
    if route.hsts && tls && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(rewrite::HSTS),
        );
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

/// What HTTP/2 answers with: each body keeps its request counted in flight for the idle timer.
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

/// What the rules see of an HTTP/2 request on `conn`.
fn acl_request<'a>(
    req: &'a Request<Incoming>,
    host: Option<&'a str>,
    conn: &'a ConnInfo,
) -> AclRequest<'a> {
    AclRequest {
        path: req.uri().path(),
        method: req.method().as_str(),
        // Rules name hosts; a port (always in HTTP/2's :authority) is not part of it.
        host: host.map(host_name),
        headers: req.headers().into(),
        src: Some(conn.peer.ip()),
        url: req.uri().path_and_query().map_or("/", |p| p.as_str()),
        tls: conn.tls,
        sni: conn.sni.as_deref(),
        dst_port: conn.port,
    }
}

/// An HTTP/2 connection, served by hyper. It closes idle connections at the keep-alive timeout and cuts off heads
/// at the header timeout, as HTTP/1 does. On drain it gets a GOAWAY; in-flight requests finish.
pub async fn serve_h2<I>(io: I, front: &Front, peer: &crate::proxy::http1::Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = idle::Activity::new(true);
    let info = ConnInfo {
        peer: peer.addr,
        tls: peer.tls,
        port: peer.port,
        entry: peer.entry,
        sni: peer.sni.clone(),
        activity: activity.clone(),
        deadlines: front.deadlines.clone(),
    };
    let conn = front.h2.serve_connection(
        TokioIo::new(idle::Metered::new(io, activity.clone())),
        service(front.proxy.clone(), info, activity.clone()),
    );
    let opts = &front.proxy.opts;
    let limits = idle::Limits {
        header: opts.header_read_timeout,
        keep_alive: opts.keep_alive_timeout,
        client: opts.client_timeout,
    };
    let mine = front.deadlines.register();
    let t = front.deadlines.timeouts(&mine);
    let mut stop = front.stop.clone();
    let stop = async move { drop(stop.wait_for(|s| *s).await) };
    match idle::serve(conn, &activity, t, limits, stop).await {
        Some(Expired::Head) => {
            tracing::debug!(client = %peer.addr, "request head not received in time");
        }
        Some(Expired::Stalled) => {
            crate::metrics::metrics()
                .http_rejected
                .with_label_values(&["client_timeout"])
                .inc();
            tracing::debug!(client = %peer.addr, timeout = ?opts.client_timeout, "client stalled with a request in flight; cut off");
        }
        _ => {}
    }
}
