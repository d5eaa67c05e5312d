//! The answers the proxy gives itself, without a backend (404, 301 to HTTPS, 400s, 502, 503, 504): built here, as
//! HTTP/1 bytes or as a hyper response. What failed and why is [`super::error`]'s to say.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use std::net::SocketAddr;

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A short plain-text response the proxy gives itself, without a backend.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub location: Option<String>,
}

impl Answer {
    pub(crate) fn new(status: StatusCode, body: String) -> Answer {
        Answer {
            status,
            body,
            location: None,
        }
    }

    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let mut r = plain(self.status, self.body);
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}

impl Answer {
    /// The 400 for framing no proxy may pass on (`why`: one of `framing`'s reasons).
    pub(crate) fn smuggling(peer: SocketAddr, why: &str) -> Answer {
        crate::metrics::metrics()
            .http_rejected
            .with_label_values(&["smuggling"])
            .inc();
        tracing::warn!(client = %peer, %why, "request with ambiguous framing refused");
        Answer::new(StatusCode::BAD_REQUEST, format!("rattan: {why}\n"))
    }

    /// As HTTP/1.1 bytes in `out`.
    pub(crate) fn write_http1(&self, out: &mut Vec<u8>, close: bool, http10: bool, via: bool) {
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status.as_u16()).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(l) = &self.location {
            out.extend_from_slice(b"location: ");
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(connection_line(close, http10));
        if via {
            out.extend_from_slice(b"via: 1.1 rattan\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }
}

/// The Connection line an HTTP/1 response needs: `close` when the connection ends after it; `keep-alive` when it
/// does not and the client speaks HTTP/1.0 (which closes by default).
pub(crate) fn connection_line(close: bool, http10: bool) -> &'static [u8] {
    match (close, http10) {
        (true, _) => b"connection: close\r\n",
        (false, true) => b"connection: keep-alive\r\n",
        (false, false) => b"",
    }
}

pub(crate) fn plain(status: StatusCode, msg: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response with no body, for a client nobody can answer any more (hyper drops it).
pub(crate) fn empty_response() -> Response<ProxyBody> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}
