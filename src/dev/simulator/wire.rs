//! Marathon's JSON shapes and canned answers, as the simulator writes them.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;

pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) const JETTY_405: &str = "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/><title>Error 405 </title></head>\n<body><h2>HTTP ERROR: 405</h2><p>Problem accessing /v2/events. Reason:<pre>    HTTP method GET is not supported by this URL</pre></p>\n<hr /><a href=\"http://eclipse.org/jetty\">Powered by Jetty:// 9.3.z-SNAPSHOT</a><hr/></body></html>\n";
pub(super) const CALLBACKS_OFF: &str = "{\"message\":\"http event callback system is not running on this Marathon instance. Please re-start this instance with\\n\\\"--event_subscriber http_callback\\\".\"}";

pub(super) fn now_ts() -> String {
    let fmt = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
    );
    match fmt {
        Ok(f) => time::OffsetDateTime::now_utc()
            .format(&f)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub(super) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json; qs=2", v.to_string())
}

pub(super) fn with_tasks(app: &Value, tasks: Option<&Vec<Value>>, embed: bool) -> Value {
    let mut a = app.clone();
    if embed {
        a["tasks"] = Value::Array(tasks.cloned().unwrap_or_default());
    }
    let running = tasks.map(Vec::len).unwrap_or(0);
    a["tasksRunning"] = json!(running);
    a
}

/// An app's JSON as (id, definition without tasks, tasks if it listed any).
pub(super) fn split_tasks(mut app: Value) -> (String, Value, Option<Vec<Value>>) {
    let id = app
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tasks = app
        .as_object_mut()
        .and_then(|o| o.remove("tasks"))
        .and_then(|t| t.as_array().cloned());
    (id, app, tasks)
}

pub(super) fn instance_of(task_id: &str) -> String {
    crate::marathon::address::instance_id(task_id).unwrap_or_else(|| task_id.to_string())
}
