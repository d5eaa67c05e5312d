//! One backend's state, shared by every route and snapshot that names it: requests in flight (and the guard that
//! gives them back), connect failures and ejection, idle keep-alive connections. The balancing policy reads it
//! (`balance`); the connection pool fills and drains it (`pool`).

use super::answer::ProxyBody;
use hyper::client::conn::http1::SendRequest;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

pub(super) fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

#[derive(Default)]
pub struct Slot {
    pub in_flight: AtomicUsize,
    pub(super) connect_failures: AtomicU32,
    /// Passive health: not chosen before this time (ms since process start).
    pub(super) ejected_until: AtomicU64,
    /// Keep-alive connections to this backend (HTTP only): hyper's, for the HTTP/2 and fallback path.
    pub idle: std::sync::Mutex<Vec<Idle>>,
    /// Keep-alive connections the HTTP/1 fast path drives itself, with when each went idle.
    pub raw_idle: std::sync::Mutex<Vec<(tokio::net::TcpStream, std::time::Instant)>>,
    /// Connections to this backend kept by their clients between requests (the fast path's `Held`).
    pub held: AtomicUsize,
}

impl Slot {
    pub(super) fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// Decrements the backend's in-flight count when the request (or its response body) is done, however it ends.
pub struct InFlight(pub(super) Arc<Slot>);

impl InFlight {
    /// The request reached its backend: connect failures no longer run in a row.
    pub fn connected(&self) {
        if self.0.connect_failures.load(Ordering::Relaxed) != 0 {
            self.0.connect_failures.store(0, Ordering::Relaxed);
        }
    }
}

impl InFlight {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An idle hyper connection of the backend, with when it went idle.
pub struct Idle {
    pub(super) sender: SendRequest<ProxyBody>,
    pub(super) since: Instant,
}
