//! The data plane: reads only the current snapshot (one `load` per request, no lock), matches the route, picks a
//! backend, forwards over pooled keep-alive connections.
//!
//! | module | owns | may import |
//! |---|---|---|
//! | `listener` | accept, connection limit, TLS handshake, drain | `http1`, `h2`, `tls` |
//! | `http1` | the one HTTP/1 implementation: connection loop, request head and fields, body framing, response rewriting, the backend exchange, buffers | `route`, `answer`, `error`, `log`, `pool`, `backend`, `deadline` |
//! | `h2` | HTTP/2 through hyper, and hop-by-hop rules for header maps | `route`, `answer`, `error`, `log`, `pool`, `idle` |
//! | `route` | the routing decision: route, answer-here, sticky cookie, the picker (connect failures, ejection, attempt cap) | `balance`, `backend`, `answer`, `error` |
//! | `answer` / `error` | canned answers; the upstream error type (blame, retry) and its one mapping to an answer | - |
//! | `log` | request metrics and the access log | - |
//! | `balance` / `backend` / `pool` | balancing policy; per-backend state (slot, in-flight guard, idle lists); idle connections | `backend` |
//! | `deadline` / `idle` | the swept deadlines (every HTTP/1 wait); HTTP/2's idle and stall timers | - |
//! | `tcp` / `tls` | L4 listeners (same picker); certificates by SNI | `route`, `pool` |

pub mod answer;
pub mod backend;
pub mod balance;
pub mod deadline;
pub mod error;
pub mod h2;
pub mod http1;
pub mod idle;
pub mod listener;
pub mod log;
pub mod pool;
pub mod route;
pub mod tcp;
pub mod tls;

pub use listener::{serve, Listeners};
pub use log::AccessLog;
pub use route::{MAX_CONNECT_ATTEMPTS, STICKY_COOKIE};

use crate::snapshot::Publisher;
use balance::Balancer;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `--http-bind`: the default.
pub const DEFAULT_HTTP_BIND: &str = "0.0.0.0:80";

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
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
    /// The connection's timers, which time request bodies' waits on the client.
    pub activity: Arc<idle::Activity>,
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
