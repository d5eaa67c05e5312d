//! Marathon's REST API and event stream, served from the simulated state.

use super::state::{RequestLog, Simulator};
use super::wire::{full, json_resp, now_ts, with_tasks, Body, CALLBACKS_OFF, JETTY_405};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

impl Simulator {
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let accept: Vec<String> = req
            .headers()
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (fail, creds, redirect) = {
            let mut st = self.lock();
            st.requests.push(RequestLog {
                method: req.method().to_string(),
                path_and_query: if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{query}")
                },
                accept: accept.clone(),
                authorization: authorization.clone(),
            });
            (
                st.fail_status,
                st.credentials.clone(),
                st.redirect_events_to.clone(),
            )
        };
        if let Some((u, p)) = creds {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if authorization.as_deref() != Some(expected.as_str()) {
                let mut r = full(
                    StatusCode::UNAUTHORIZED,
                    "text/html;charset=iso-8859-1",
                    "<html><body><h2>HTTP ERROR 401</h2><p>Problem accessing. Reason:<pre>    Unauthorized</pre></p></body></html>",
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Basic realm=\"Mesosphere\""),
                );
                return r;
            }
        }
        if let Some(code) = fail {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return json_resp(
                status,
                &json!({"message": "Could not determine the current leader"}),
            );
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/ping") => full(StatusCode::OK, "text/plain", "pong"),
            (&Method::GET, "/v2/info") => json_resp(
                StatusCode::OK,
                &json!({"name":"marathon","version":"1.10.17","elected":true,"leader":self.inner.addr.to_string(),
                        "frameworkId":"sim","marathon_config":{"local_port_min":10000,"local_port_max":20000}}),
            ),
            (&Method::GET, "/v2/events") => {
                if let Some(leader) = redirect {
                    let mut r = full(StatusCode::FOUND, "text/plain", "");
                    let loc = format!("{}/v2/events?{query}", leader.trim_end_matches('/'));
                    if let Ok(v) = loc.parse() {
                        r.headers_mut().insert(hyper::header::LOCATION, v);
                    }
                    return r;
                }
                // Jetty's EventSourceServlet compares each Accept value for string equality.
                if accept.is_empty() || accept.iter().any(|a| a != "text/event-stream") {
                    return full(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "text/html;charset=ISO-8859-1",
                        JETTY_405,
                    );
                }
                self.event_stream(&query)
            }
            (&Method::GET, "/v2/apps") => {
                let embed_tasks = query
                    .split('&')
                    .any(|kv| kv.starts_with("embed=") && kv.ends_with(".tasks"));
                let st = self.lock();
                let apps: Vec<Value> = st
                    .apps
                    .iter()
                    .map(|(id, a)| with_tasks(a, st.tasks.get(id), embed_tasks))
                    .collect();
                json_resp(StatusCode::OK, &json!({ "apps": apps }))
            }
            (&Method::GET, p) if p.starts_with("/v2/apps/") => {
                let id = &p["/v2/apps".len()..];
                let st = self.lock();
                match st.apps.get(id) {
                    Some(a) => json_resp(
                        StatusCode::OK,
                        &json!({"app": with_tasks(a, st.tasks.get(id), true)}),
                    ),
                    None => json_resp(
                        StatusCode::NOT_FOUND,
                        &json!({"message": format!("App '{id}' does not exist")}),
                    ),
                }
            }
            (m, "/v2/eventSubscriptions") => self.subscriptions(m.clone(), &query),
            _ => json_resp(StatusCode::NOT_FOUND, &json!({"message": "Not found"})),
        }
    }

    fn subscriptions(&self, method: Method, query: &str) -> Response<Body> {
        let mut st = self.lock();
        if !st.callbacks_enabled {
            return full(StatusCode::BAD_REQUEST, "application/json", CALLBACKS_OFF);
        }
        let callback = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "callbackUrl")
            .map(|(_, v)| v.into_owned());
        match (method, callback) {
            (Method::GET, _) => json_resp(
                StatusCode::OK,
                &json!({"callbackUrls": st.subscribers.iter().collect::<Vec<_>>()}),
            ),
            (Method::POST, Some(cb)) => {
                if url::Url::parse(&cb).is_err() {
                    return json_resp(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"message":"Object is not valid","details":[{"path":"/callbackUrl","errors":["invalid URL"]}]}),
                    );
                }
                st.subscribers.insert(cb.clone());
                json_resp(
                    StatusCode::OK,
                    &json!({"clientIp":"127.0.0.1","callbackUrl":cb,"eventType":"subscribe_event","timestamp":now_ts()}),
                )
            }
            (Method::DELETE, Some(cb)) => {
                st.subscribers.remove(&cb);
                json_resp(
                    StatusCode::OK,
                    &json!({"clientIp":"127.0.0.1","callbackUrl":cb,"eventType":"unsubscribe_event","timestamp":now_ts()}),
                )
            }
            _ => json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"message": "callbackUrl is required"}),
            ),
        }
    }

    fn event_stream(&self, query: &str) -> Response<Body> {
        let filter: BTreeSet<String> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "event_type")
            .map(|(_, v)| v.into_owned())
            .collect();
        let wanted = move |kind: &str| filter.is_empty() || filter.contains(kind);
        let mut rx = self.inner.events.subscribe();
        let mut generation = self.inner.generation.subscribe();
        generation.mark_unchanged();
        let (tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let keepalive = self.inner.opts.keepalive;
        let sim = self.clone();
        tokio::spawn(async move {
            let frame = |s: String| Ok(Frame::data(Bytes::from(s)));
            let attach = json!({"remoteAddress":"127.0.0.1","eventType":"event_stream_attached","timestamp":now_ts()});
            if wanted("event_stream_attached")
                && tx
                    .send(frame(format!(
                        "event: event_stream_attached\r\ndata: {attach}\r\n\r\n"
                    )))
                    .await
                    .is_err()
            {
                return;
            }
            let mut tick = tokio::time::interval(keepalive);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = generation.changed() => return,
                    ev = rx.recv() => match ev {
                        Ok((kind, data)) => {
                            if sim.lock().stalled || !wanted(&kind) { continue; }
                            if tx.send(frame(format!("event: {kind}\r\ndata: {data}\r\n\r\n"))).await.is_err() { return; }
                        }
                        // A slow reader loses the connection, as on Marathon 1.8+.
                        Err(_) => return,
                    },
                    _ = tick.tick() => {
                        if sim.lock().stalled { continue; }
                        // Written as "\r", flush, "\n", flush: it may arrive split.
                        if tx.send(frame("\r".into())).await.is_err() { return; }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if tx.send(frame("\n".into())).await.is_err() { return; }
                    }
                }
            }
        });
        let stream = tokio_stream_from(body_rx);
        let mut r = Response::new(StreamBody::new(stream).boxed());
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream;charset=UTF-8"),
        );
        h.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        r
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
