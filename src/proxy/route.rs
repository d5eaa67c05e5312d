//! The routing decision: the route a request takes (or the answer it gets here), and the backends it tries in
//! order: the sticky cookie's, then the balancing policy's picks, past those whose connect failed. TCP listeners
//! pick and give up the same way.

use super::answer::Answer;
use super::backend::InFlight;
use super::balance::Balancer;
use super::options::ProxyOptions;
use crate::marathon::address::Endpoint;
use crate::rules::acl::{Headers, Request as AclRequest};
use crate::rules::table::{Balance, Route};
use crate::snapshot::Publisher;
use std::sync::Arc;

pub struct Proxy {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) opts: ProxyOptions,
    /// Where redirects to HTTPS point: the HTTPS listener's port (443 when there is none here).
    https_port: u16,
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
}

impl Proxy {
    /// Matches the request against the snapshot's routes (or takes the route of the service port it came in on)
    /// and says what to do with it: forward to the route's
    /// routable backends, or answer here (404 no route, 301 to HTTPS, 503 no backend). One decision for both
    /// front ends.
    pub(crate) fn route<'s>(
        &self,
        snap: &'s crate::snapshot::Snapshot,
        req: &AclRequest<'_>,
        raw_host: Option<&str>,
        path_and_query: &str,
        (tls, entry): (bool, Entry),
    ) -> Routed<'s> {
        let found = match entry {
            Entry::Shared => snap.routes.find(req),
            // A service port's own listener: its app port, whatever the request says.
            Entry::Port(port) => snap.ports.get(port).and_then(|s| s.route.as_deref()),
            // marathon-lb's :9091: the app the header names, at its first HTTP port.
            Entry::AppId => {
                let Some(id) = req
                    .headers
                    .find_map("x-marathon-app-id", |v| std::str::from_utf8(v).ok())
                else {
                    return Routed::Answer(None, Answer::bad_request("no X-Marathon-App-Id"));
                };
                let id = id.trim();
                match snap.ports.first_http(id) {
                    Some(r) => Some(r),
                    None => return Routed::Answer(None, Answer::no_app(id)),
                }
            }
        };
        let Some(route) = found else {
            return Routed::Answer(None, Answer::no_route(raw_host.unwrap_or(""), req.path));
        };
        if let Some(allowed) = &route.allowed {
            if !req
                .src
                .is_some_and(|ip| allowed.contains(self.client_ip(ip, req.headers)))
            {
                return Routed::Answer(Some(route), Answer::forbidden());
            }
        }
        // Before auth: credentials are not asked for over plain HTTP when HTTPS is wanted.
        if route.redirect_https && !tls {
            return Routed::Answer(Some(route), self.redirect_https(raw_host, path_and_query));
        }
        if let Some(auth) = &route.auth {
            if !auth.allows(req.headers.find_map("authorization", Some)) {
                return Routed::Answer(Some(route), Answer::unauthorized(&auth.realm));
            }
        }
        if let Some(to) = &route.redirect_root {
            if req.path == "/" {
                return Routed::Answer(Some(route), Answer::moved(to.clone()));
            }
        }
        // Borrowed from the snapshot the request holds: a swap meanwhile does not change its backends.
        let backends: &[Endpoint] = snap
            .apps
            .get(&route.app_id)
            .map(|a| a.healthy_backends(route.port_index))
            .unwrap_or(&[]);
        if backends.is_empty() {
            return Routed::Answer(Some(route), Answer::no_backend(&route.app_id));
        }
        Routed::Forward(route, backends)
    }

    /// The client's address for allow lists: the peer, or, when the peer is a trusted proxy, the last address in
    /// `X-Forwarded-For` that is not one.
    fn client_ip(&self, peer: std::net::IpAddr, headers: Headers<'_>) -> std::net::IpAddr {
        let Some(trusted) = &self.opts.trusted_proxies else {
            return peer;
        };
        if !trusted.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For line as one list, read from the right.
        let mut hops: Vec<std::net::IpAddr> = Vec::new();
        headers.find_map("x-forwarded-for", |v| {
            let text = std::str::from_utf8(v).ok()?;
            hops.extend(
                text.split(',')
                    .filter_map(|h| h.trim().parse::<std::net::IpAddr>().ok()),
            );
            None::<()>
        });
        for hop in hops.into_iter().rev() {
            client = hop;
            if !trusted.contains(hop) {
                break;
            }
        }
        client
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
        Answer::moved(location)
    }
}

/// The listener a request came in on, which decides how it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `--http-bind`/`--https-bind`: by the rules.
    Shared,
    /// A service port's own listener: to the app port it serves.
    Port(u16),
    /// `--http-appid-bind`: to the app `X-Marathon-App-Id` names.
    AppId,
}

/// What routing decided: forward to the route's backends, or answer here (with the route when one matched, for
/// the metrics).
pub(crate) enum Routed<'s> {
    Forward(&'s Route, &'s [Endpoint]),
    Answer(Option<&'s Route>, Answer),
}

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
pub(crate) fn sticky_cookie<'a>(headers: Headers<'a>) -> Option<&'a [u8]> {
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

/// What a picker picks for: an HTTP route's app and port, or a TCP listener's.
#[derive(Clone, Copy)]
pub(crate) struct Target<'s> {
    pub app_id: &'s str,
    pub port_index: usize,
    pub balance: Balance,
    pub sticky: bool,
}

impl<'s> Target<'s> {
    pub fn of(route: &'s Route) -> Target<'s> {
        Target {
            app_id: &route.app_id,
            port_index: route.port_index,
            balance: route.balance,
            sticky: route.sticky,
        }
    }
}

/// Backends for one request, in the order they are tried: the sticky cookie's, then the balancer's picks, leaving
/// out those whose connect failed (nothing was sent to them, so moving on is always safe).
pub(crate) struct Picker<'p, 's> {
    balancer: &'p Balancer,
    target: Target<'s>,
    backends: &'s [Endpoint],
    /// The backend the sticky cookie names, while it is routable.
    cookie: Option<&'s Endpoint>,
    pinned: Option<&'s Endpoint>,
    failed: Vec<Endpoint>,
    /// For `balance source`.
    client: Option<std::net::IpAddr>,
}

impl<'p, 's> Picker<'p, 's> {
    pub fn new(
        balancer: &'p Balancer,
        target: Target<'s>,
        backends: &'s [Endpoint],
        cookie: Option<&[u8]>,
    ) -> Self {
        let cookie = cookie
            .filter(|_| target.sticky)
            .and_then(|t| backends.iter().find(|b| sticky_token(b).as_bytes() == t));
        Picker {
            balancer,
            target,
            backends,
            cookie,
            pinned: cookie,
            failed: Vec::new(),
            client: None,
        }
    }

    /// Picks for this client (`balance source` hashes its address).
    pub fn for_client(self, client: std::net::IpAddr) -> Self {
        Picker {
            client: Some(client),
            ..self
        }
    }

    pub fn next(&mut self) -> Option<(&'s Endpoint, InFlight)> {
        match self.pinned.take() {
            Some(b) => Some((b, self.balancer.take(b))),
            None => self.balancer.pick(
                self.target.app_id,
                self.target.port_index,
                (self.target.balance, self.client),
                self.backends,
                &self.failed,
            ),
        }
    }

    /// The 502 when every backend tried failed to connect.
    pub fn exhausted(&self) -> Answer {
        Answer::exhausted(self.target.app_id)
    }

    /// A connect to `backend` failed before anything was sent: counts toward its ejection, then `Ok` when another
    /// backend is to be tried, or the 502 to give. A scale-down can take several at once, before Marathon's event.
    pub fn connect_failed(&mut self, backend: &Endpoint, error: &str) -> Result<(), Answer> {
        let app = self.target.app_id;
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
        Err(Answer::backend_failed(&backend.to_string(), error))
    }

    /// The `Set-Cookie` that pins the client to `backend`, unless its cookie names it already.
    pub fn set_cookie(&self, backend: &Endpoint) -> Option<String> {
        (self.target.sticky && self.cookie != Some(backend)).then(|| {
            format!(
                "{STICKY_COOKIE}={}; Path=/; HttpOnly",
                sticky_token(backend)
            )
        })
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub(crate) fn host_name(host: &str) -> &str {
    // Bytes, not chars: this runs on every request.
    let b = host.as_bytes();
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|c| *c == b']').map_or(b.len(), |i| i + 1)
    } else {
        b.iter().position(|c| *c == b':').unwrap_or(b.len())
    };
    &host[..end]
}
