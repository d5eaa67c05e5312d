//! The API port: `/status`, `/api/state`, `/metrics`, the Marathon event callback receiver.

pub mod services;
pub mod state;
pub mod stats;
pub mod ui;

use crate::marathon::events::{dispatch, Change};
use crate::metrics::metrics;
use crate::snapshot::Publisher;
use crate::store::RuleStore;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Marathon's heavy deployment events can be megabytes.
const MAX_CALLBACK_BODY: usize = 16 << 20;

/// `--api-bind` and `--api-max-connections`: the defaults.
pub const DEFAULT_BIND: &str = "0.0.0.0:8000";
pub const MAX_CONNECTIONS: usize = 256;

/// The Marathon event callback receiver (callback mode only).
pub struct Callback {
    pub tx: mpsc::Sender<Change>,
    /// Marathon presents it as `?token=` in the URL it was given; the API credentials also pass.
    pub token: String,
}

impl Callback {
    fn allows(&self, query: Option<&str>) -> bool {
        let given = query
            .into_iter()
            .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v);
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), self.token.as_bytes()))
    }
}

pub struct ApiState {
    pub publisher: Arc<Publisher>,
    pub callback: Option<Callback>,
    pub store: Option<Arc<RuleStore>>,
    pub auth: ApiAuth,
    /// The HAProxy pipeline's state, in `--mode haproxy|both`.
    pub haproxy: Option<crate::haproxy::SharedStatus>,
    /// Largest rule write accepted (`--api-max-body`).
    pub max_body: usize,
    /// Refuse rule ACLs the built-in proxy cannot compile; off in `--mode haproxy`, where HAProxy judges them.
    pub check_acls: bool,
}

/// Optional protection of the API. Without a token or basic credentials everything is open, as in Bamboo.
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    pub token: Option<String>,
    pub basic: Option<(String, String)>,
    /// Protect reads (`GET /api/…`, the UI) too, not only writes.
    pub reads: bool,
}

impl ApiAuth {
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.basic.is_some()
    }

    fn allows(&self, header: Option<&str>) -> bool {
        if !self.enabled() {
            return true;
        }
        let Some(h) = header else { return false };
        if let (Some(token), Some(given)) = (&self.token, h.strip_prefix("Bearer ")) {
            if constant_time_eq(token.as_bytes(), given.trim().as_bytes()) {
                return true;
            }
        }
        if let (Some((u, p)), Some(given)) = (&self.basic, h.strip_prefix("Basic ")) {
            use base64::Engine;
            let expected = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            if constant_time_eq(expected.as_bytes(), given.trim().as_bytes()) {
                return true;
            }
        }
        false
    }
}

/// Why a rule change looks like a browser's cross-site request (CSRF: a page elsewhere posting with the basic
/// credentials the browser cached).
#[derive(Debug, thiserror::Error)]
enum CrossSite {
    #[error("cross-site request refused (Sec-Fetch-Site: {0})")]
    FetchSite(String),
    #[error("cross-site request refused (Origin {0} is not this API)")]
    Origin(String),
    #[error("rule changes take Content-Type: application/json, not {0}")]
    ContentType(String),
}

impl CrossSite {
    fn status(&self) -> StatusCode {
        match self {
            CrossSite::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Lets a rule change through unless a browser sent it from another site. Browsers mark every request with
/// `Sec-Fetch-Site` (and a cross-origin write with `Origin`); the body types an HTML form can send without a CORS
/// preflight (`text/plain`, `multipart/form-data`) are refused outright, and `application/x-www-form-urlencoded`
/// is taken only from a client that is not a browser: `curl -d`, as Bamboo's README has users write, sends it.
fn same_site_write(h: &hyper::HeaderMap, has_body: bool) -> Result<(), CrossSite> {
    let get = |name: &str| {
        h.get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let site = get("sec-fetch-site");
    if let Some(site) = &site {
        if !matches!(site.trim(), "same-origin" | "none") {
            return Err(CrossSite::FetchSite(site.clone()));
        }
    }
    let origin = get("origin");
    if let Some(origin) = &origin {
        let authority = origin
            .trim()
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'));
        let host = get("host").unwrap_or_default();
        if authority.is_none_or(|a| !a.eq_ignore_ascii_case(host.trim())) {
            return Err(CrossSite::Origin(origin.clone()));
        }
    }
    if !has_body {
        return Ok(());
    }
    let Some(ct) = get("content-type") else {
        return Ok(());
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let browser =
        site.is_some() || origin.is_some() || h.contains_key("referer") || h.contains_key("cookie");
    match media.as_str() {
        "application/json" => Ok(()),
        "application/x-www-form-urlencoded" if !browser => Ok(()),
        _ => Err(CrossSite::ContentType(ct)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Bamboo answers an unknown path or a wrong method with Go's plain 404.
pub(crate) fn not_found() -> Resp {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    )
}

fn unauthorized(auth: &ApiAuth, from_ui: bool) -> Resp {
    let mut r = services::text_error(StatusCode::UNAUTHORIZED, "authentication required");
    // The web UI asks for credentials in the page: a `Basic` challenge would make the browser open its own
    // dialog over it (or, headless, wait for one).
    if from_ui {
        return r;
    }
    let challenge = if auth.basic.is_some() {
        "Basic realm=\"rattan\""
    } else {
        "Bearer"
    };
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

async fn route(state: Arc<ApiState>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
    let guarded = (path.starts_with("/api/services") && (!is_read || state.auth.reads))
        // The page itself is static and holds no data: it loads, and asks for credentials when the API does.
        || (state.auth.reads && is_read && path.starts_with("/api/"));
    if guarded {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !state.auth.allows(header) {
            let from_ui = req
                .headers()
                .get("x-requested-with")
                .is_some_and(|v| v.as_bytes() == b"rattan-ui");
            return unauthorized(&state.auth, from_ui);
        }
    }
    if path.starts_with("/api/services") && !is_read {
        if let Err(why) = same_site_write(req.headers(), req.method() != Method::DELETE) {
            metrics()
                .http_rejected
                .with_label_values(&["cross_site"])
                .inc();
            tracing::warn!(%why, "rule change refused");
            return services::text_error(why.status(), &why.to_string());
        }
    }
    if path.starts_with("/api/services") {
        if let Some(r) = services::route(&state, req).await {
            return r;
        }
        return not_found();
    }
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
            respond(StatusCode::OK, "text/html; charset=utf-8", ui::INDEX_HTML)
        }
        (&Method::GET, "/api/routes") => {
            let snap = state.publisher.load();
            respond(
                StatusCode::OK,
                "application/json",
                ui::routes_json(&snap, &state.publisher.health),
            )
        }
        // Bamboo's `OK`, now only when it is true; otherwise 503 with one line per reason.
        (&Method::GET | &Method::HEAD, "/status") => {
            let reasons = state.publisher.health.reasons();
            if reasons.is_empty() {
                respond(StatusCode::OK, "text/plain; charset=utf-8", "OK")
            } else {
                let mut body = String::from("NOT READY\n");
                for r in reasons {
                    body.push_str(&r);
                    body.push('\n');
                }
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    body,
                )
            }
        }
        // Liveness: the process answers. Never fails on an input's trouble (a restart would not fix it).
        (&Method::GET | &Method::HEAD, "/healthz") => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
        }
        (&Method::GET | &Method::HEAD, "/readyz") => readyz(&state),
        (&Method::GET, "/api/openapi.json") => respond(StatusCode::OK, "application/json", OPENAPI),
        (&Method::GET, "/api/haproxy") => match &state.haproxy {
            Some(h) => {
                let st = h.lock().unwrap_or_else(|p| p.into_inner()).clone();
                respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&st).unwrap_or_default(),
                )
            }
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not in --mode haproxy or both\n",
            ),
        },
        (&Method::GET | &Method::HEAD, "/api/state") => {
            let snap = state.publisher.load();
            respond(StatusCode::OK, "application/json", state::render(&snap))
        }
        (&Method::GET, "/metrics") => {
            let snap = state.publisher.load();
            let age = snap.age_secs();
            let mut body = metrics().render();
            snapshot_metrics(&mut body, &snap, &state.publisher.health);
            body.extend_from_slice(
                format!(
                    "# HELP rattan_snapshot_age_seconds Seconds since the current routing snapshot was built\n\
                     # TYPE rattan_snapshot_age_seconds gauge\nrattan_snapshot_age_seconds {age}\n"
                )
                .as_bytes(),
            );
            respond(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        // Only in callback mode, and only for Marathon: a forged event must not even trigger a fetch storm.
        (&Method::POST, "/api/marathon/event_callback") => {
            let Some(cb) = &state.callback else {
                return not_found();
            };
            let credentials = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let api_credentials = state.auth.enabled() && state.auth.allows(credentials);
            if !api_credentials && !cb.allows(req.uri().query()) {
                metrics().callback_refused.inc();
                tracing::warn!("event callback without its token refused");
                return services::text_error(StatusCode::UNAUTHORIZED, "callback token required");
            }
            let body = Limited::new(req.into_body(), MAX_CALLBACK_BODY)
                .collect()
                .await;
            if let Ok(body) = body {
                let bytes = body.to_bytes();
                dispatch(&String::from_utf8_lossy(&bytes), &cb.tx);
            }
            // Like Bamboo: 200 `Got it!`, whatever arrived.
            respond(StatusCode::OK, "text/plain; charset=utf-8", "Got it!")
        }
        _ => not_found(),
    }
}

/// The families read off the snapshot and the health checks at scrape time (nothing per request).
fn snapshot_metrics(
    body: &mut Vec<u8>,
    snap: &crate::snapshot::Snapshot,
    health: &crate::health::Health,
) {
    use std::fmt::Write;
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    out.push_str("# HELP rattan_app_healthy_backends Routable backends per app and service port index\n# TYPE rattan_app_healthy_backends gauge\n");
    for (id, app) in snap.apps.iter() {
        for idx in 0..app.service_ports.len().max(1) {
            let _ = writeln!(
                out,
                "rattan_app_healthy_backends{{app=\"{}\",port_index=\"{idx}\"}} {}",
                esc(id),
                app.healthy_backends(idx).len()
            );
        }
    }
    let mut errors: std::collections::BTreeMap<&str, u64> = Default::default();
    for e in &snap.routes.errors {
        *errors.entry(e.app_id.as_str()).or_default() += 1;
    }
    for e in &snap.ports.errors {
        *errors.entry(e.app_id.as_str()).or_default() += 1;
    }
    out.push_str("# HELP rattan_app_rule_errors Rules, labels and service ports of an app that do not compile or cannot be served (see /api/routes)\n# TYPE rattan_app_rule_errors gauge\n");
    for (app, n) in errors {
        let _ = writeln!(out, "rattan_app_rule_errors{{app=\"{}\"}} {n}", esc(app));
    }
    let verdicts = health.verdicts();
    out.push_str("# HELP rattan_ready 1 when /readyz answers 200\n# TYPE rattan_ready gauge\n");
    let _ = writeln!(
        out,
        "rattan_ready {}",
        u8::from(!verdicts.iter().any(|v| v.blocks))
    );
    out.push_str("# HELP rattan_check_state State of each readiness input: 0 ok, 1 degraded (serving its last good data), 2 failing\n# TYPE rattan_check_state gauge\n");
    for v in &verdicts {
        let n = match v.check.state {
            crate::health::State::Ok => 0,
            crate::health::State::Degraded => 1,
            crate::health::State::Failing => 2,
        };
        let _ = writeln!(out, "rattan_check_state{{check=\"{}\"}} {n}", v.name);
    }
    body.extend_from_slice(out.as_bytes());
}

/// The API's OpenAPI 3 description (`tests/openapi.rs` checks the real answers against it).
const OPENAPI: &str = include_str!("../../config/openapi.json");

/// Readiness as JSON: each check, its state, since when, and whether it keeps rattan from being ready.
fn readyz(state: &ApiState) -> Resp {
    let verdicts = state.publisher.health.verdicts();
    let ready = crate::health::ready(&verdicts);
    let age = state.publisher.load().age_secs();
    let body = serde_json::json!({
        "ready": ready,
        "snapshot_age_seconds": (age * 1000.0).round() / 1000.0,
        "checks": verdicts,
    });
    respond(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        "application/json",
        body.to_string(),
    )
}

/// The address a request came from (in its extensions), for the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub SocketAddr);

/// Who made a request, as the audit log names them: the basic-auth user, the token holder, or the address.
pub(crate) fn who(req: &Request<Incoming>) -> String {
    let addr = req
        .extensions()
        .get::<Client>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = auth.and_then(|h| h.strip_prefix("Basic ")).and_then(|b| {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        text.split_once(':').map(|(u, _)| u.to_string())
    });
    match (user, auth) {
        (Some(u), _) => format!("user {u} from {addr}"),
        (None, Some(h)) if h.starts_with("Bearer ") => format!("token holder from {addr}"),
        _ => addr,
    }
}

/// What one client may hold of the API port: connections, and time.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Past it, new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request head must be whole this long after its first byte (the proxy's setting).
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection closes after this (the proxy's setting).
    pub keep_alive_timeout: Duration,
}

/// One request, body included, is answered within this or gets a 408 (rule writes wait on ZooKeeper, whose calls
/// are bounded far below it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the API port and serves it in the background. Returns the bound address (the port may have been 0).
pub async fn serve(
    bind: SocketAddr,
    state: Arc<ApiState>,
    limits: ApiLimits,
) -> std::io::Result<SocketAddr> {
    serve_with(bind, limits, move |req| route(state.clone(), req)).await
}

/// Serves `handler` on `bind` in the background, with the API's limits (connections, header and idle timeouts,
/// a deadline per request). Returns the bound address.
pub(crate) async fn serve_with<F, Fut>(
    bind: SocketAddr,
    limits: ApiLimits,
    handler: F,
) -> std::io::Result<SocketAddr>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    use crate::proxy::deadline::Deadlines;
    use crate::proxy::idle::{self, Activity, Limits, Metered};
    let listener = TcpListener::bind(bind).await?;
    let deadlines = Deadlines::spawn();
    let addr = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut backoff = crate::limits::AcceptBackoff::new("api");
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok((s, peer)) => {
                    backoff.succeeded();
                    (s, peer)
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let deadlines = deadlines.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let activity = Activity::new(false);
                let a = activity.clone();
                let d = deadlines.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(Client(peer));
                    let busy = a.begin();
                    let d = d.clone();
                    let answer = handler(req);
                    async move {
                        let resp = match d.within(REQUEST_TIMEOUT, answer).await {
                            Some(r) => r,
                            None => services::text_error(
                                StatusCode::REQUEST_TIMEOUT,
                                "request not completed in time",
                            ),
                        };
                        drop(busy);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder
                    .serve_connection(TokioIo::new(Metered::new(stream, activity.clone())), svc);
                let mine = deadlines.register();
                let limits = Limits {
                    header: limits.header_read_timeout,
                    keep_alive: limits.keep_alive_timeout,
                    client: REQUEST_TIMEOUT,
                };
                let t = deadlines.timeouts(&mine);
                idle::serve(conn, &activity, t, limits, std::future::pending()).await;
            });
        }
    });
    Ok(addr)
}
