//! The answers the proxy gives itself, without a backend (404, 301, 401, 403, 400s, 502, 503, 504): built here, as
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
    /// One more field: `location` of a redirect, `www-authenticate` of a 401.
    pub field: Option<(&'static str, String)>,
}

impl Answer {
    /// 400, naming what was wrong with the request.
    pub(crate) fn bad_request(why: &str) -> Answer {
        Answer::new(StatusCode::BAD_REQUEST, format!("rattan: {why}\n"))
    }

    /// 408: the request head did not arrive within the header timeout.
    pub(crate) fn head_timeout() -> Answer {
        Answer::new(
            StatusCode::REQUEST_TIMEOUT,
            "rattan: request head not received in time\n".into(),
        )
    }

    /// 408: the client stopped sending its request body.
    pub(crate) fn body_timeout() -> Answer {
        Answer::new(
            StatusCode::REQUEST_TIMEOUT,
            "rattan: request body not received in time\n".into(),
        )
    }

    /// 431, `what` being too large.
    pub(crate) fn too_large(what: &str) -> Answer {
        Answer::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("rattan: {what}\n"),
        )
    }

    /// 404: no route matched.
    pub(crate) fn no_route(host: &str, path: &str) -> Answer {
        Answer::new(
            StatusCode::NOT_FOUND,
            format!("rattan: no route for {host}{path}\n"),
        )
    }

    /// 404 on the app-id frontend: no HTTP port of that app is served.
    pub(crate) fn no_app(id: &str) -> Answer {
        Answer::new(
            StatusCode::NOT_FOUND,
            format!("rattan: no app {id} with an HTTP port here\n"),
        )
    }

    /// 503: the route's app has no routable backend.
    pub(crate) fn no_backend(app: &str) -> Answer {
        Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("rattan: {app} has no healthy backend\n"),
        )
    }

    /// 301 to `location` (marathon-lb's `redirect scheme https code 301`).
    pub(crate) fn moved(location: String) -> Answer {
        Answer {
            status: StatusCode::MOVED_PERMANENTLY,
            body: format!("rattan: moved to {location}\n"),
            field: Some(("location", location)),
        }
    }

    /// 401 with the route's realm (marathon-lb's `http-request auth realm`).
    pub(crate) fn unauthorized(realm: &str) -> Answer {
        Answer {
            status: StatusCode::UNAUTHORIZED,
            body: "rattan: authentication required\n".into(),
            field: Some(("www-authenticate", format!("Basic realm=\"{realm}\""))),
        }
    }

    /// 403: the client's address is not in the route's allowed networks.
    pub(crate) fn forbidden() -> Answer {
        Answer::new(
            StatusCode::FORBIDDEN,
            "rattan: this address may not reach this service\n".into(),
        )
    }

    /// 502: every backend tried failed to connect.
    pub(crate) fn exhausted(app: &str) -> Answer {
        Answer::new(
            StatusCode::BAD_GATEWAY,
            format!("rattan: no backend of {app} answered\n"),
        )
    }

    /// 502: `backend` failed with `error`.
    pub(crate) fn backend_failed(backend: &str, error: &str) -> Answer {
        Answer::new(
            StatusCode::BAD_GATEWAY,
            format!("rattan: backend {backend} failed: {error}\n"),
        )
    }

    /// 504: `backend` did not answer within `after`.
    pub(crate) fn backend_timeout(backend: &str, after: std::time::Duration) -> Answer {
        Answer::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("rattan: backend {backend} did not answer within {after:?}\n"),
        )
    }

    fn new(status: StatusCode, body: String) -> Answer {
        Answer {
            status,
            body,
            field: None,
        }
    }

    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let mut r = plain(self.status, self.body);
        if let Some((name, v)) = self.field {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut()
                    .insert(header::HeaderName::from_static(name), v);
            }
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
        if let Some((name, v)) = &self.field {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
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
