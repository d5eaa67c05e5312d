//! The data plane: reads only the current snapshot (one `load` per request, no lock), matches the route, picks a
//! backend, forwards over pooled keep-alive connections.

pub mod balance;

use crate::marathon::address::Endpoint;
use crate::rules::acl::Request as AclRequest;
use crate::snapshot::Publisher;
use balance::{Balancer, InFlight};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub connect_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
        }
    }
}

pub struct Proxy {
    publisher: Arc<Publisher>,
    balancer: Balancer,
    client: Client<HttpConnector, ProxyBody>,
    port: u16,
}

/// Response body that keeps the backend counted in flight until the client has it all (or goes away).
struct Guarded {
    inner: Incoming,
    _guard: InFlight,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// RFC 9110 §7.6.1: connection-specific fields, and every field named in `Connection`, never cross a proxy.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

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

fn sticky_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == STICKY_COOKIE)
        .map(|(_, v)| v)
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
    pub fn new(publisher: Arc<Publisher>, port: u16, opts: &ProxyOptions) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(opts.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.idle_timeout)
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Proxy {
            publisher,
            balancer: Balancer::default(),
            client,
            port,
        }
    }

    fn outgoing(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        backend: &Endpoint,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, http::Error> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{backend}{path_and_query}"))
            .version(Version::HTTP_11)
            .body(body)?;
        *req.headers_mut() = headers.clone();
        Ok(req)
    }

    /// Proxies one request and records it: by app and status class, with its time to the response head.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<ProxyBody> {
        let m = crate::metrics::metrics();
        let started = std::time::Instant::now();
        m.http_in_flight.inc();
        let mut app = String::new();
        let resp = self.forward(req, client_addr, &mut app).await;
        m.http_in_flight.dec();
        let class = match resp.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        m.http_requests.with_label_values(&[&app, class]).inc();
        m.http_duration
            .with_label_values(&[&app])
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    /// Routes and forwards; `app` is set to the app the request was routed to (left empty when none).
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client_addr: SocketAddr,
        app: &mut String,
    ) -> Response<ProxyBody> {
        let snap = self.publisher.load_full();
        // HTTP/2 carries the host in :authority; HTTP/1 in Host.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let path = req.uri().path().to_string();
        let route = {
            let acl_req = AclRequest {
                path: &path,
                method: req.method().as_str(),
                host: host.as_deref(),
                headers: req.headers(),
                src: Some(client_addr.ip()),
            };
            snap.routes.find(&acl_req)
        };
        let Some(route) = route else {
            return plain(
                StatusCode::NOT_FOUND,
                format!(
                    "rattan: no route for {}{path}\n",
                    host.as_deref().unwrap_or("")
                ),
            );
        };
        app.push_str(&route.app_id);
        // Borrowed from the snapshot this request holds: a swap meanwhile does not change its backends.
        let backends: &[Endpoint] = snap
            .apps
            .get(&route.app_id)
            .map(|a| a.healthy_backends(route.port_index))
            .unwrap_or(&[]);
        if backends.is_empty() {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("rattan: {} has no healthy backend\n", route.app_id),
            );
        }

        let retryable = bodyless(&req);
        // WebSocket and other upgrades: keep `Upgrade` and say `Connection: upgrade` to the backend, then splice the
        // two upgraded connections together if it answers 101.
        let upgrade = upgrade_protocol(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some((proto, _)) = &upgrade {
            parts.headers.insert(header::UPGRADE, proto.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if let Some(h) = &host {
            if !parts.headers.contains_key(header::HOST) {
                if let Ok(v) = HeaderValue::from_str(h) {
                    parts.headers.insert(header::HOST, v);
                }
            }
            if let Ok(v) = HeaderValue::from_str(h) {
                parts.headers.insert("x-forwarded-host", v);
            }
        }
        let ip = client_addr.ip().to_string();
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        parts
            .headers
            .insert("x-forwarded-port", HeaderValue::from(self.port));
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();

        let mut body = Some(body.boxed());
        let mut failed: Option<Endpoint> = None;
        // Sticky sessions: the backend the cookie names, while it is routable.
        let mut pinned = if route.sticky {
            sticky_cookie(&parts.headers)
                .and_then(|t| backends.iter().find(|b| sticky_token(b) == t))
        } else {
            None
        };
        loop {
            let picked = match pinned.take() {
                Some(b) => Some((b, self.balancer.take(b))),
                None => self.balancer.pick(
                    &route.app_id,
                    route.port_index,
                    route.balance,
                    backends,
                    failed.as_ref(),
                ),
            };
            let Some((backend, guard)) = picked else {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("rattan: no backend of {} answered\n", route.app_id),
                );
            };
            let b = match body.take() {
                Some(b) => b,
                None => Empty::new().map_err(|never| match never {}).boxed(),
            };
            let out = match self.outgoing(&parts.method, &pq, &parts.headers, backend, b) {
                Ok(r) => r,
                Err(e) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        format!("rattan: bad request: {e}\n"),
                    )
                }
            };
            let result = self.client.request(out).await;
            match &result {
                Ok(_) => guard.connected(),
                Err(e) if e.is_connect() => {
                    if self.balancer.connect_failed(backend) {
                        crate::metrics::metrics().backend_ejections.inc();
                        tracing::warn!(backend = %backend, app = %route.app_id, seconds = balance::EJECT_FOR.as_secs(),
                            "backend ejected after repeated connect failures");
                    }
                }
                Err(_) => {}
            }
            match result {
                Ok(resp) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some((_, client_side)) = upgrade {
                            return tunnel(resp, client_side, guard, backend.clone());
                        }
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    if route.sticky {
                        let token = sticky_token(backend);
                        if sticky_cookie(&parts.headers) != Some(token.as_str()) {
                            let cookie = format!("{STICKY_COOKIE}={token}; Path=/; HttpOnly");
                            if let Ok(v) = HeaderValue::from_str(&cookie) {
                                rparts.headers.append(header::SET_COOKIE, v);
                            }
                        }
                    }
                    let body = Guarded {
                        inner: rbody,
                        _guard: guard,
                    };
                    return Response::from_parts(rparts, body.boxed());
                }
                // Nothing was sent on a connect failure: safe to try another backend, once.
                Err(e) if e.is_connect() && retryable && failed.is_none() && backends.len() > 1 => {
                    tracing::warn!(backend = %backend, app = %route.app_id, error = %e, "backend connect failed; retrying on another");
                    failed = Some(backend.clone());
                }
                Err(e) => {
                    tracing::warn!(backend = %backend, app = %route.app_id, error = %e, "backend request failed");
                    return plain(
                        StatusCode::BAD_GATEWAY,
                        format!("rattan: backend {backend} failed: {e}\n"),
                    );
                }
            }
        }
    }
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
    Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed())
}

/// Binds the HTTP listener and serves it in the background until `shutdown` turns true; then it stops accepting
/// and the returned task ends once every open connection has finished its requests (idle keep-alive connections
/// close at once, HTTP/2 gets a GOAWAY).
pub async fn serve(
    bind: SocketAddr,
    publisher: Arc<Publisher>,
    opts: ProxyOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let proxy = Arc::new(Proxy::new(publisher, addr.port(), &opts));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    let builder = Arc::new(builder);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            let svc = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let m = crate::metrics::metrics();
                m.http_connections.inc();
                let _ = conn.await;
                m.http_connections.dec();
            });
        }
        drop(listener);
        tracing::info!("proxy draining: no new connections, finishing in-flight requests");
        graceful.shutdown().await;
    });
    Ok((addr, task))
}
