//! What every connection of the listeners shares: the proxy, hyper's HTTP/2 builder, the drain, the deadlines.

use super::deadline::Deadlines;
use super::route::Proxy;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What every connection of the listeners shares.
pub struct Front {
    pub proxy: Arc<Proxy>,
    /// HTTP/2: prior knowledge on the plain port, ALPN `h2` on TLS.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Set once the drain begins: responses then say `Connection: close`, idle connections close.
    pub draining: AtomicBool,
    /// Notified once `draining` is set, for the connections waiting idle.
    pub drain: tokio::sync::Notify,
    pub deadlines: Arc<Deadlines>,
}
