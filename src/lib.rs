//! rattan: a service-discovery load balancer for Marathon/Mesos.
//!
//! Data flows one way: Marathon (`marathon::events`, `marathon::api`) and the rules → `discovery` →
//! `bluegreen` (deployment groups merged) →
//! `snapshot::Publisher` (one immutable snapshot behind an `ArcSwap`) → the API, the proxy, the HAProxy renderer.

pub mod api;
pub mod apps;
pub mod backoff;
pub mod bamboo;
pub mod bluegreen;
pub mod boolean;
pub mod config;
pub mod dev;
pub mod discovery;
pub mod haproxy;
pub mod health;
pub mod limits;
pub mod marathon;
pub mod metrics;
pub mod periodic;
pub mod proxy;
pub mod rules;
pub mod server;
pub mod snapshot;
pub mod store;
