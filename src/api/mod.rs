//! The API port: `/status`, `/api/state`, `/metrics`, the Marathon event callback receiver.

pub mod gojson;
pub mod state;

use crate::marathon::events::{dispatch, Change};
use crate::metrics::metrics;
use crate::snapshot::Publisher;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Marathon's heavy deployment events can be megabytes.
const MAX_CALLBACK_BODY: usize = 16 << 20;

pub struct ApiState {
    pub publisher: Arc<Publisher>,
    pub events: Option<mpsc::Sender<Change>>,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Bamboo answers an unknown path or a wrong method with Go's plain 404.
fn not_found() -> Resp {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    )
}

async fn route(state: Arc<ApiState>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/status") => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "OK")
        }
        (&Method::GET | &Method::HEAD, "/api/state") => {
            let snap = state.publisher.load();
            respond(StatusCode::OK, "application/json", state::render(&snap))
        }
        (&Method::GET, "/metrics") => {
            let snap = state.publisher.load();
            let age = SystemTime::now()
                .duration_since(snap.built_at)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            let mut body = metrics().render();
            body.extend_from_slice(
                format!(
                    "# HELP rattan_snapshot_age_seconds Seconds since the current routing snapshot was built\n\
                     # TYPE rattan_snapshot_age_seconds gauge\nrattan_snapshot_age_seconds {age}\n"
                )
                .as_bytes(),
            );
            respond(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        (&Method::POST, "/api/marathon/event_callback") => {
            let body = Limited::new(req.into_body(), MAX_CALLBACK_BODY)
                .collect()
                .await;
            if let (Ok(body), Some(tx)) = (body, &state.events) {
                let bytes = body.to_bytes();
                dispatch(&String::from_utf8_lossy(&bytes), tx);
            }
            // Like Bamboo: always 200 `Got it!`, whatever arrived.
            respond(StatusCode::OK, "text/plain; charset=utf-8", "Got it!")
        }
        _ => not_found(),
    }
}

/// Binds the API port and serves it in the background. Returns the bound address (the port may have been 0).
pub async fn serve(bind: SocketAddr, state: Arc<ApiState>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
