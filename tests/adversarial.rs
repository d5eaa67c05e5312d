//! The adversarial suite: hostile bytes from clients, backends, Marathon and the API, each case asserting what
//! the backend received (a raw socket that records every byte) and what the client got, on the fast path and the
//! hyper path alike (HTTP/1.0 and chunked uploads go through hyper).

mod common;

use common::raw::{exchange, statuses, Recorder};
use common::{app_on, cluster, Rattan, FAST};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(3);

/// rattan against a simulator whose app `/a` is `backend`; returns the proxy's `host:port` once `/a` routes.
async fn front(
    backend: &Recorder,
    extra: &[&str],
) -> (Rattan, String, rattan::marathon::simulator::Simulator) {
    let m = cluster().await;
    app_on(&m, "/a", backend.port);
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str()];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let r = Rattan::start(&args);
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let t = Instant::now();
    loop {
        let got = exchange(
            &addr,
            b"GET /a/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never routed: {got}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    backend.clear();
    (r, addr, m)
}

/// The request HAProxy's adversarial run used: `Connection` names `Content-Length`, the body is a whole request.
const NAMED_LENGTH: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 40\r\n\r\nGET /slow-smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn connection_cannot_name_away_framing_or_host() {
    let backend = Recorder::start();
    let (r, addr, _m) = front(&backend, &[]).await;

    // Fast path, then hyper path (HTTP/1.0 keep-alive): one request reaches the backend, with its length and its
    // 40-byte body; the client gets one answer, and a later request on a pooled backend connection its own.
    let on_hyper = String::from_utf8_lossy(NAMED_LENGTH)
        .replace(
            "HTTP/1.1\r\nHost: x\r\nConnection: content-length",
            "HTTP/1.0\r\nHost: x\r\nConnection: keep-alive, content-length",
        )
        .into_bytes();
    for (path, attack) in [("fast", NAMED_LENGTH.to_vec()), ("hyper", on_hyper)] {
        backend.clear();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(&attack).await.unwrap();
        let got = common::raw::read_for(&mut s, Duration::from_millis(700)).await;
        assert_eq!(statuses(&got), [200], "{path}: one answer: {got}");
        assert!(got.ends_with("POST /a"), "{path}: {got}");
        let later = exchange(
            &addr,
            b"GET /a/later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        assert!(
            later.ends_with("GET /a/later"),
            "{path}: the next client got another answer: {later}"
        );
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{path}: {}", backend.all_bytes());
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/a")
        );
        assert_eq!(seen[0].header("content-length"), Some("40"), "{path}");
        assert_eq!(
            seen[0].body,
            &NAMED_LENGTH[NAMED_LENGTH.len() - 40..],
            "{path}"
        );
        assert!(
            seen.iter().all(|r| r.target != "/slow-smuggled"),
            "{path}: {seen:?}"
        );
    }

    // `Connection: host` leaves Host to the backend; an ordinary named field is still dropped. Both paths.
    for (path, version, conn) in [
        ("fast", "1.1", "host, x-hop"),
        ("hyper", "1.0", "keep-alive, host, x-hop"),
    ] {
        backend.clear();
        let req = format!("GET /a/h HTTP/{version}\r\nHost: named.example\r\nConnection: {conn}\r\nX-Hop: 1\r\n\r\n");
        let got = exchange(&addr, req.as_bytes(), Duration::from_millis(700)).await;
        assert_eq!(statuses(&got), [200], "{path}: {got}");
        let seen = backend.requests();
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(
            seen[0].all("host"),
            ["named.example"],
            "{path}: {:?}",
            seen[0]
        );
        assert!(seen[0].header("x-hop").is_none(), "{path}: {:?}", seen[0]);
    }

    // A chunked upload naming Transfer-Encoding (hyper path): the body arrives whole, framed.
    backend.clear();
    let got = exchange(
        &addr,
        b"POST /a/c HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding, close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200], "{got}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{}", backend.all_bytes());
    assert_eq!(seen[0].body, b"hello");
    drop(r);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_naming_its_length_keeps_it() {
    // The backend names Content-Length in Connection: the client must still get the length, or on keep-alive the
    // next response runs into this one's body.
    let backend = Recorder::with(Arc::new(|req| {
        let body = req.target.clone();
        (
            format!(
                "HTTP/1.1 200 OK\r\nConnection: content-length, x-secret\r\nX-Secret: s\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            false,
        )
    }));
    let (_r, addr, _m) = front(&backend, &[]).await;
    for (path, version, keep) in [
        ("fast", "1.1", ""),
        ("hyper", "1.0", "Connection: keep-alive\r\n"),
    ] {
        let two = format!(
            "GET /a/one HTTP/{version}\r\nHost: x\r\n{keep}\r\nGET /a/two HTTP/{version}\r\nHost: x\r\n{keep}\r\n"
        );
        let got = exchange(&addr, two.as_bytes(), Duration::from_millis(700)).await;
        assert_eq!(statuses(&got), [200, 200], "{path}: {got}");
        let lower = got.to_ascii_lowercase();
        assert_eq!(
            lower.matches("content-length: 6\r\n").count(),
            2,
            "{path}: {got}"
        );
        assert!(!lower.contains("x-secret"), "{path}: {got}");
        assert!(got.ends_with("/a/two"), "{path}: {got}");
    }
}

/// A forged `status_update_event` moving app `/a`'s traffic to `to`.
fn forged(task: &str, to: u16) -> String {
    serde_json::json!({"eventType": "status_update_event", "appId": "/a", "taskId": task,
        "taskStatus": "TASK_RUNNING", "host": "127.0.0.1", "ports": [to], "slaveId": "s", "version": "v",
        "timestamp": "2026-12-05T10:00:00.000Z"})
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_marathon_callbacks_move_no_traffic() {
    let backend = Recorder::start();
    let evil = Recorder::start();
    let c = reqwest::Client::new();

    // SSE mode (the default): there is no callback receiver at all.
    let (r, _addr, _m) = front(&backend, &[]).await;
    let resp = c
        .post(format!("{}/api/marathon/event_callback", r.api))
        .body(forged("a.evil", evil.port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    drop(r);

    // Callback mode with API credentials: Marathon is given a URL carrying the token.
    let m =
        rattan::marathon::simulator::Simulator::start(rattan::marathon::simulator::SimOptions {
            serve_tasks: true,
            callbacks_enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
    app_on(&m, "/a", backend.port);
    let url = m.url();
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--events",
        "callback",
        "--callback-url",
        "http://127.0.0.1:0",
        "--api-token",
        "api-secret",
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let t = Instant::now();
    while m.subscribers().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", r.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sub = m.subscribers()[0].clone();
    let token = sub
        .split_once("?token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    assert!(token.len() >= 16, "{sub}");
    let receiver = format!("{}/api/marathon/event_callback", r.api);
    let post = |url: String, auth: Option<&'static str>| {
        let mut rb = c.post(url).body(forged("a.evil", evil.port));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(receiver.clone(), None).await, 401, "no token");
    assert_eq!(
        post(format!("{receiver}?token=wrong{token}"), None).await,
        401,
        "wrong token"
    );
    assert_eq!(
        post(format!("{receiver}?token={token}"), Some("Bearer nope")).await,
        200,
        "token"
    );
    assert_eq!(
        post(receiver.clone(), Some("Bearer api-secret")).await,
        200,
        "API credentials"
    );
    assert!(r.metric("rattan_marathon_callback_refused_total").await >= 2.0);

    // Even accepted (as with a leaked token), a loop of forged events routes nothing to the forged address:
    // each only triggers a fetch, and Marathon does not know the task.
    let proxy = r.proxy.clone();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let s = c
            .get(format!("{proxy}/a/x"))
            .header("Host", "a")
            .send()
            .await
            .unwrap();
        if s.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..40 {
        assert_eq!(post(format!("{receiver}?token={token}"), None).await, 200);
        let resp = c
            .get(format!("{proxy}/a/{i}"))
            .header("Host", "a")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", r.log());
    }
    assert_eq!(evil.requests().len(), 0, "{}", r.log());
    assert!(backend.requests().len() >= 40);
}
