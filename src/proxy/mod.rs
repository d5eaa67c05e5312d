//! The data plane: reads only the current snapshot (one `load` per request, no lock), matches the route, picks a
//! backend, forwards over pooled keep-alive connections.
//!
//! | module | owns | may import |
//! |---|---|---|
//! | `listener` | accept (and the HTTP service ports' hand-off), connection limit, TLS handshake, drain | `http1`, `h2`, `tls` |
//! | `http1` | the one HTTP/1 implementation: connection loop, request head and fields, body framing, response rewriting, the backend exchange, buffers | `route`, `answer`, `error`, `log`, `pool`, `backend`, `deadline` |
//! | `h2` | HTTP/2 through hyper, and hop-by-hop rules for header maps | `route`, `answer`, `error`, `log`, `pool`, `idle` |
//! | `route` | the routing decision: route, answer-here, sticky cookie, the picker (connect failures, ejection, attempt cap) | `balance`, `backend`, `answer`, `error` |
//! | `answer` / `error` | canned answers; the upstream error type (blame, retry) and its one mapping to an answer | - |
//! | `log` | request metrics and the access log | - |
//! | `balance` / `backend` / `pool` | balancing policy; per-backend state (slot, in-flight guard, idle lists); idle connections | `backend` |
//! | `deadline` / `idle` | the swept deadlines (the one timeout call); the timers of hyper-served connections | - |
//! | `ports` | the service ports' own listeners: TCP mode to `tcp`, HTTP mode handed to `listener` | `tcp`, `listener` |
//! | `tcp` / `tls` | L4 connections (same picker); certificates by SNI | `route`, `pool` |

pub mod answer;
pub mod backend;
pub mod balance;
pub mod deadline;
pub mod error;
pub mod front;
pub mod h2;
pub mod http1;
pub mod idle;
pub mod listener;
pub mod log;
pub mod options;
pub mod pool;
pub mod ports;
pub mod request_id;
pub mod rewrite;
pub mod route;
pub mod tcp;
pub mod tls;

pub use listener::{serve, Listeners};
pub use log::AccessLog;

/// The largest `--max-header-size` accepted: every connection may hold a head this large in memory.
pub const MAX_HEADER_LIMIT: usize = 1 << 20;
pub use options::{ProxyOptions, DEFAULT_HTTP_BIND, MAX_BACKEND_PER_CLIENT};
pub use route::{MAX_CONNECT_ATTEMPTS, STICKY_COOKIE};
