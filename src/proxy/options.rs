//! The proxy's settings, with their defaults (the only place they are written).

use super::log::AccessLog;
use std::time::Duration;

/// `--http-bind`: the default.
pub const DEFAULT_HTTP_BIND: &str = "0.0.0.0:80";

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
    /// Peers whose `X-Forwarded-For` names the client, for allow lists (`--trusted-proxies`).
    pub trusted_proxies: Option<crate::rules::table::Networks>,
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
            trusted_proxies: None,
        }
    }
}

/// Backend requests one client connection may have at once (HTTP/2 streams past it wait for a turn, holding no
/// backend connection): a client that opens many streams and reads none cannot pin a backend pool.
pub const MAX_BACKEND_PER_CLIENT: usize = 32;
