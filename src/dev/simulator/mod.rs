//! An in-process Marathon stand-in with Marathon's wire formats (see the reference in `tests/fixtures/marathon`):
//! `/v2/apps` with embeds, `/v2/apps/{id}`, the `/v2/events` stream framed byte for byte (CRLF lines, a bare CRLF
//! keep-alive written as `\r` then `\n`), the 405 on a wrong `Accept`, 302 redirects of the stream, 401 with basic
//! auth, 503 outages, and HTTP callback subscriptions. `rattan dev` runs it with demo apps whose tasks are real HTTP
//! servers; the tests drive it directly.
//!
//! | file | owns |
//! |---|---|
//! | `state` | the simulated cluster (apps, tasks, subscribers) and the changes tests and `rattan dev` make |
//! | `http` | Marathon's REST API and event stream over that state |
//! | `wire` | Marathon's JSON shapes and canned answers |
//! | `task_server` | the real HTTP server behind each task |
//! | `faults` | fault injection, for the tests only (`sim-faults` feature) |

#[cfg(feature = "sim-faults")]
mod faults;
mod http;
mod state;
mod task_server;
mod wire;

pub use state::{AppSpec, RequestLog, SimOptions, Simulator};
pub use task_server::SLOW;
