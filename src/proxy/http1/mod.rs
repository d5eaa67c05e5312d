//! HTTP/1, the one implementation. One task per client connection reads each request head once (httparse, no
//! header map), routes it, writes the rewritten head to a pooled backend connection that it drives itself, and
//! passes the response back with its body bytes untouched: for a small request, two reads and two writes, nothing
//! else in between.
//!
//! It takes every HTTP/1 request: bodies of any size (the first 64 KiB read before a backend is chosen, the rest
//! streamed), chunked ones passed through as they came, `Expect: 100-continue` (answered here, once), HTTP/1.0 with
//! and without keep-alive (a chunked response reaches it decoded), absolute-form targets, and upgrades. An HTTP/2
//! preface hands the connection to hyper ([`super::h2`]), which serves HTTP/2 alone.
//!
//! A connection's states, as [`conn::serve`] and [`exchange`] drive them (every wait is a swept deadline):
//!
//! ```text
//!  idle --first byte--> head --whole--> planned --answer here (404, 301, 503, 400)--> idle | closed
//!   ^  (keep-alive       | (header          |
//!   |   timeout, drain)  |  timeout: 408;   +--> body pre-read (<= 64 KiB; `100 Continue` first if asked)
//!   |                    |  too large: 431)          |
//!   |                    +--HTTP/2 preface--> hyper  v
//!   |                                         exchange: reuse or connect (next backend on a connect failure)
//!   |                                           -> head + body start -> rest of the body pumped while the
//!   |                                              response head is awaited (1xx relayed; 101 -> tunnel -> closed)
//!   +------- keep-alive <------ response body relayed (decoded for HTTP/1.0) <--+
//! ```
//!
//! | file | owns |
//! |---|---|
//! | `conn` | the connection loop, the drain, the client's half of the timeouts |
//! | `request` | a request head: validation (framing, Host, target form), routing, the head sent on |
//! | `fields` | one pass over a head's fields: framing, connection tokens, hop-by-hop lines |
//! | `framing` | where a body ends (length, chunked) |
//! | `exchange` | the backend side: connect or reuse, the body pump, the retry rule, the response relay, tunnels |
//! | `response` | a response head: framing (RFC 9112 §6.3) and the head the client gets |
//! | `head` | the fast reader of common response heads |
//! | `buf` | the connection's buffers |

pub mod buf;
mod client;
mod conn;
mod exchange;
mod fields;
pub mod framing;
pub mod head;
mod request;
mod response;

pub use client::Peer;
pub use conn::serve;
