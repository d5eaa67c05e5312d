//! The real HTTP server standing in for a task.

use super::wire::full;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use tokio::net::TcpListener;

/// A real HTTP server standing in for a task: answers every request with `<app id> <task id>\n`, and echoes
/// each request header back as `x-req-<name>` (the target as `x-req-target`) so tests can see what reached the
/// backend; a path ending in `/redirect` gets a 302 to `/login`, one ending in `/slow` is answered after
/// [`SLOW`] (a request in flight for as long as a test needs).
pub const SLOW: std::time::Duration = std::time::Duration::from_millis(1500);

pub(super) async fn serve_task(
    app_id: String,
    task_id: String,
) -> std::io::Result<(u16, tokio::task::AbortHandle)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let body = Bytes::from(format!("{app_id} {task_id}\n"));
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut r = full(StatusCode::OK, "text/plain", body.clone());
                    // What reached the backend, for the tests: the target, and a redirect to follow.
                    if let Ok(v) = req.uri().to_string().parse() {
                        r.headers_mut().insert("x-req-target", v);
                    }
                    if req.uri().path().ends_with("/redirect") {
                        *r.status_mut() = StatusCode::FOUND;
                        r.headers_mut()
                            .insert(hyper::header::LOCATION, "/login".parse().expect("static"));
                    }
                    for (name, value) in req.headers() {
                        if let Ok(n) = hyper::header::HeaderName::from_bytes(
                            format!("x-req-{name}").as_bytes(),
                        ) {
                            r.headers_mut().append(n, value.clone());
                        }
                    }
                    let slow = req.uri().path().ends_with("/slow");
                    async move {
                        if slow {
                            tokio::time::sleep(SLOW).await;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((port, handle.abort_handle()))
}
