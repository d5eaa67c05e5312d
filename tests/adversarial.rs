//! The adversarial suite: hostile bytes from clients, backends, Marathon and the API, each case asserting what
//! the backend received (a raw socket that records every byte) and what the client got, over HTTP/1 and HTTP/2.

mod common;

use common::raw::{exchange, front, get_a, statuses, until_routed, Recorder};
use common::{app_on, cluster, Rattan, FAST};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(3);

/// The ids of the rules the API at `api` lists.
async fn rule_ids(api: &str) -> Vec<String> {
    let body = reqwest::get(format!("{api}/api/services"))
        .await
        .expect("GET /api/services")
        .text()
        .await
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v.as_object().expect("an object").keys().cloned().collect()
}

/// The request HAProxy's adversarial run used: `Connection` names `Content-Length`, the body is a whole request.
const NAMED_LENGTH: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 40\r\n\r\nGET /slow-smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn connection_cannot_name_away_framing_or_host() {
    let backend = Recorder::start();
    let (r, addr, _m) = front(&backend, &[]).await;

    // HTTP/1.1, then HTTP/1.0 keep-alive: one request reaches the backend, with its length and its
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

    // A chunked upload naming Transfer-Encoding: the body arrives whole, framed.
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
        if body.ends_with("/chunked") {
            return (
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
                .into_bytes(),
                false,
            );
        }
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
    // Naming Transfer-Encoding: the chunked framing still reaches the client, and the next response follows it.
    let got = exchange(
        &addr,
        b"GET /a/chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /a/after HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(statuses(&got), [200, 200], "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{got}"
    );
    assert!(
        got.contains("0\r\n\r\nHTTP/1.1 200") && got.ends_with("/a/after"),
        "{got}"
    );
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
    let m = rattan::dev::simulator::Simulator::start(rattan::dev::simulator::SimOptions {
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

/// A Marathon that serves one good `/v2/apps` (app `/a` on `backend`) until `huge_apps` is set, then a body that
/// never ends; its event stream is one line that never ends. Each endless answer stops at 256 MiB.
fn hostile_marathon(backend: u16, huge_apps: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    let apps = serde_json::json!({"apps": [{"id": "/a", "portDefinitions": [{"port": 10999}], "tasks": [
        {"id": "a.1", "appId": "/a", "host": "127.0.0.1", "ports": [backend], "state": "TASK_RUNNING",
         "startedAt": "2019-05-02T10:11:20.001Z"}]}]})
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (apps, huge) = (apps.clone(), huge_apps.clone());
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let endless = |start: &'static [u8], piece: Vec<u8>| (start, piece);
                    let (start, piece) = if head.starts_with("GET /v2/events") {
                        endless(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ",
                            vec![b'x'; 64 << 10],
                        )
                    } else if head.starts_with("GET /v2/apps")
                        && huge.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
                        chunk.extend(std::iter::repeat_n(b' ', 64 << 10));
                        chunk.extend_from_slice(b"\r\n");
                        endless(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", chunk)
                    } else {
                        let ok = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{apps}", apps.len());
                        if s.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    if s.write_all(start).await.is_err() {
                        return;
                    }
                    for _ in 0..(256 << 20) / piece.len() {
                        if s.write_all(&piece).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            });
        }
    });
    port
}

fn rss_mib(pid: u32) -> u64 {
    common::proc_status_kib(pid, "VmRSS") / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_marathon_cannot_fill_memory() {
    let backend = Recorder::start();
    let huge = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let marathon = format!(
        "http://127.0.0.1:{}",
        hostile_marathon(backend.port, huge.clone())
    );
    let mut args = vec![
        "--marathon",
        marathon.as_str(),
        "--marathon-max-event-size",
        "1MiB",
        "--marathon-max-body",
        "1MiB",
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let get = || get_a(&addr);
    until_routed(&r, &addr).await;

    // The endless line is cut at the cap, again at every reconnect; the table stays.
    r.wait_log("longer than --marathon-max-event-size (1048576 bytes)", 20)
        .await;
    assert!(
        r.metric("rattan_marathon_oversized_total{kind=\"event\"}")
            .await
            >= 1.0
    );

    // Each reconnect fetches /v2/apps: now endless, cut at its cap, and the last good table keeps routing.
    huge.store(true, std::sync::atomic::Ordering::SeqCst);
    r.wait_log("larger than --marathon-max-body (1048576 bytes)", 20)
        .await;
    assert!(
        r.metric("rattan_marathon_oversized_total{kind=\"body\"}")
            .await
            >= 1.0
    );
    assert!(get().await.starts_with("HTTP/1.1 200"), "{}", r.log());
    let rss = rss_mib(r.pid());
    assert!(rss < 100, "RSS {rss} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rules_api_refuses_injection_and_cross_site_writes() {
    let m = cluster().await;
    let url = m.url();
    let r = Rattan::start(&["--marathon", &url, "--api-basic", "admin:pw"]);
    let c = reqwest::Client::new();
    let api = r.api.clone();
    let rules = || rule_ids(&api);
    let write = |body: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let mut rb = c
            .post(format!("{api}/api/services"))
            .basic_auth("admin", Some("pw"))
            .body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        async move {
            let resp = rb.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

    // Control characters in an ACL, an id or a config value: 400 naming it, nothing stored.
    for body in [
        r#"{"id":"/x","acl":"hdr(host) -i a\nlisten injected\n  bind :1"}"#,
        r#"{"id":"/x\u0000y","acl":"hdr(host) -i a"}"#,
        r#"{"id":"/x","config":{"Acl":"hdr(host) -i a","note":"a\r\nlisten b"}}"#,
        r#"{"id":"/x","acl":"hdr(host) -i a\tb"}"#,
    ] {
        let (status, text) = write(body, JSON).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("control character"), "{text}");
    }
    assert!(rules().await.is_empty());

    // A browser on another site, with the credentials it cached: refused however the write is dressed.
    const RULE: &str = r#"{"id":"/csrf","acl":"hdr(host) -i evil.example"}"#;
    for headers in [
        &[("Content-Type", "text/plain")][..],
        &[("Content-Type", "multipart/form-data; boundary=x")],
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://evil.example"),
        ],
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Referer", "http://evil.example/"),
        ],
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &[("Content-Type", "application/json"), ("Origin", "null")],
        &[
            ("Content-Type", "application/json"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &[("Sec-Fetch-Site", "same-site")],
    ] {
        let (status, text) = write(RULE, headers).await;
        assert!(
            status == 403 || status == 415,
            "{headers:?}: {status} {text}"
        );
    }
    assert!(rules().await.is_empty());
    let del = c
        .delete(format!("{api}/api/services//csrf"))
        .basic_auth("admin", Some("pw"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 403);

    // What clients send: JSON (the UI: same Origin), curl -d (form-urlencoded, no browser markers), no type.
    let host = api.trim_start_matches("http://").to_string();
    let origin = api.clone();
    let (s1, t1) = write(r#"{"id":"/a","acl":"hdr(host) -i a.example"}"#, JSON).await;
    let (s2, t2) = write(
        r#"{"id":"/b","acl":"hdr(host) -i b.example"}"#,
        &[("Content-Type", "application/x-www-form-urlencoded")],
    )
    .await;
    let (s3, t3) = write(r#"{"id":"/c","acl":"hdr(host) -i c.example"}"#, &[]).await;
    assert_eq!((s1, s2, s3), (200, 200, 200), "{t1} {t2} {t3}");
    let ui = c
        .put(format!("{api}/api/services/%2Fd"))
        .basic_auth("admin", Some("pw"))
        .header("Content-Type", "application/json")
        .header("Origin", origin)
        .header("Host", host)
        .header("Sec-Fetch-Site", "same-origin")
        .body(r#"{"id":"/d","config":{"Acl":"hdr(host) -i d.example"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    assert_eq!(rules().await, ["/a", "/b", "/c", "/d"]);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_port_cannot_starve_the_proxy() {
    use tokio::io::AsyncWriteExt;
    let backend = Recorder::start();
    let m = cluster().await;
    app_on(&m, "/a", backend.port);
    let url = m.url();
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--header-read-timeout",
        "4s",
        "--keep-alive-timeout",
        "4s",
    ];
    args.extend_from_slice(FAST);
    // Soft 128, hard 256: rattan raises the soft limit and shares the 256 out (the API gets (256-64)/8 = 24).
    let r = Rattan::start_with_nofile(&args, 128, 256);
    r.wait_log("file descriptor limit nofile=256 api_connections=24", 5)
        .await;
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let api = r.api.trim_start_matches("http://").to_string();
    let get = || get_a(&addr);
    until_routed(&r, &addr).await;

    // A half-sent head and a silent connection, first in: each closed at the header timeout (4 s).
    let closes = |mut s: tokio::net::TcpStream| {
        tokio::spawn(async move {
            let t = Instant::now();
            let rest = common::raw::read_for(&mut s, Duration::from_secs(8)).await;
            (rest, t.elapsed())
        })
    };
    let mut half = tokio::net::TcpStream::connect(&api).await.unwrap();
    half.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let half = closes(half);
    let silent = closes(tokio::net::TcpStream::connect(&api).await.unwrap());
    // Then 400 idle connections at once, more than the descriptors: the API holds 24 of them (the rest wait in
    // the kernel's backlog, or for their SYN to be taken).
    let idle: Vec<_> = (0..400)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let s = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect(api),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(6)).await;
                drop(s);
            })
        })
        .collect();
    let mut fds = 0;
    let sampled = Instant::now();
    while sampled.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = fds.max(open_fds(r.pid()));
    }
    assert!(fds > 24 && fds < 150, "{fds} descriptors open");
    // The proxy still has its descriptors: every request answered.
    for _ in 0..20 {
        let got = get().await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}\n{}", r.log());
    }
    for c in [half, silent] {
        let (rest, took) = c.await.unwrap();
        assert!(rest.is_empty(), "{rest}");
        assert!(
            took > Duration::from_millis(3800) && took < Duration::from_millis(7000),
            "closed after {took:?}"
        );
    }
    for i in idle {
        i.abort();
    }
    // An empty --tls-cert-dir is not re-read (nor a certificate made) every second: one warning.
    let certs = tempfile::tempdir().unwrap();
    let r2 = Rattan::start(&[
        "--marathon",
        &url,
        "--https-bind",
        "127.0.0.1:0",
        "--tls-cert-dir",
        &certs.path().display().to_string(),
    ]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        r2.log().matches("no usable TLS certificate").count(),
        1,
        "{}",
        r2.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_a_backend_must_never_see() {
    let backend = Recorder::start();
    let (r, addr, _m) = front(&backend, &[]).await;
    let refused: &[(&str, &[u8])] = &[
        // An absolute-form target naming another host than Host: 400, as HAProxy.
        ("authority", b"GET http://other.example/a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        // HTTP/1.1 without Host, bodyless and with a chunked upload.
        ("no host, fast", b"GET /a/x HTTP/1.1\r\nX: y\r\n\r\n"),
        ("no host, hyper", b"POST /a/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        // chunked twice, in two lines or one.
        ("chunked twice", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("chunked, chunked", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        // Malformed chunked bodies: size overflow, bad hex, a bare LF.
        ("overflow", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        ("bad hex", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("bare LF", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        // The rest of the smuggling set: both framings (either order), two lengths, a coding that is not
        // chunked, TE folded over two lines, a bare LF after chunk data, and in trailers.
        ("CL+TE", b"POST /a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE+CL", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("two lengths", b"POST /a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("xchunked", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("chunked, then another line", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
        ("obs-fold in TE", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
        ("TE in HTTP/1.0", b"POST /a/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bare LF after data", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"),
        ("bare LF in trailers", b"POST /a/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"),
    ];
    for (what, bytes) in refused {
        backend.clear();
        let got = exchange(&addr, bytes, WAIT).await;
        assert_eq!(statuses(&got), [400], "{what}: {got}");
        assert!(
            backend.requests().is_empty(),
            "{what}: {}",
            backend.all_bytes()
        );
        assert!(
            backend.all_bytes().is_empty(),
            "{what}: {}",
            backend.all_bytes()
        );
    }
    assert!(!r.log().contains("backend request failed"), "{}", r.log());

    // The same target and Host: routed. HTTP/1.0 without Host: forwarded as HTTP/1.1 with the backend's Host.
    backend.clear();
    let got = exchange(
        &addr,
        b"GET http://a/a/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200], "{got}");
    let got = exchange(&addr, b"GET /a/old HTTP/1.0\r\n\r\n", WAIT).await;
    assert_eq!(statuses(&got), [200], "{got}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].target.as_str(), seen[0].header("host")),
        ("/a/abs", Some("a"))
    );
    let host = format!("127.0.0.1:{}", backend.port);
    assert_eq!(seen[1].header("host"), Some(host.as_str()), "{:?}", seen[1]);
    assert!(
        backend.all_bytes().contains("GET /a/old HTTP/1.1\r\n"),
        "{}",
        backend.all_bytes()
    );
    // A good chunked upload still streams through whole.
    let got = exchange(
        &addr,
        b"POST /a/up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200], "{got}");
    assert_eq!(backend.requests()[2].body, b"hello world");
}

/// `/a/huge`: 64 MiB; `/a/big…`: 1 MiB; anything else echoed.
fn sized(req: &common::raw::Seen) -> (Vec<u8>, bool) {
    let n = if req.target.starts_with("/a/huge") {
        64 << 20
    } else if req.target.starts_with("/a/big") {
        1 << 20
    } else {
        return common::raw::echo(req);
    };
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    r.resize(r.len() + n, b'x');
    (r, false)
}

/// The most backend connections open at once over `during`, and how many are open at the end.
async fn backend_load(b: &Recorder, during: Duration) -> (usize, usize) {
    let mut peak = 0;
    let t = Instant::now();
    while t.elapsed() < during {
        peak = peak.max(b.open.load(std::sync::atomic::Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (peak, b.open.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stop_reading_are_cut_at_the_client_timeout() {
    use tokio::io::AsyncWriteExt;
    let backend = Recorder::with(Arc::new(sized));
    let (r, addr, _m) = front(&backend, &["--client-timeout", "1s"]).await;
    let settled = backend.open.load(std::sync::atomic::Ordering::SeqCst);

    // A chunked upload that stops after its first bytes: cut at the client timeout, nothing at the backend.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /a/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    let t = Instant::now();
    let rest = common::raw::read_for(&mut s, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "open after {:?}: {rest}",
        t.elapsed()
    );
    assert!(backend.requests().is_empty(), "{}", backend.all_bytes());

    // HTTP/1.0 and HTTP/1.1 clients that never read a 64 MiB response.
    let mut stuck = Vec::new();
    for req in [
        &b"GET /a/huge HTTP/1.0\r\nHost: a\r\n\r\n"[..],
        b"GET /a/huge HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(req).await.unwrap();
        stuck.push(s);
    }
    let (peak, after) = backend_load(&backend, Duration::from_secs(4)).await;
    let huge = backend
        .requests()
        .iter()
        .filter(|r| r.target == "/a/huge")
        .count();
    assert!(
        peak >= 1 && huge == 2,
        "both reached the backend: {peak} {huge}"
    );
    assert!(
        after <= settled,
        "backend connections still held: {after} (were {settled})\n{}",
        r.log()
    );
    drop(stuck);

    // One h2c connection, 50 streams of 1 MiB, no WINDOW_UPDATE ever: at most 32 backend requests at once, and
    // all let go at the client timeout.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(&addr).await.unwrap());
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut held = Vec::new();
    for i in 0..50 {
        let mut send = send.clone();
        held.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://a/a/big{i}"))
                .body(http_body_util::Empty::new())
                .unwrap();
            // The response (head) is kept and its body never read.
            let resp = send.send_request(req).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(resp);
        }));
    }
    let (peak, after) = backend_load(&backend, Duration::from_secs(5)).await;
    assert!(
        peak > settled + 10 && peak <= settled + 32,
        "peak {peak} backend connections"
    );
    assert!(
        after <= settled,
        "backend connections still held: {after}\n{}",
        r.log()
    );
    for h in held {
        h.abort();
    }
    assert!(
        r.metric("rattan_http_rejected_total{reason=\"client_timeout\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_edits_of_the_rules_file_are_loaded_or_refused_never_overwritten() {
    let m = cluster().await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let r = Rattan::start(&["--marathon", &m.url(), "--data-dir", &dir]);
    let file = data.path().join("rules.json");
    let c = reqwest::Client::new();
    let api = r.api.clone();
    let put = |id: &'static str| {
        let rb = c
            .post(format!("{api}/api/services"))
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"id":"{id}","acl":"hdr(host) -i {}.example"}}"#,
                id.trim_start_matches('/')
            ));
        async move {
            let resp = rb.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let ids = || rule_ids(&api);
    assert_eq!(put("/first").await.0, 200);

    // Garbage while running: reported, the last good rules keep routing, writes are refused with the reason.
    std::fs::write(&file, b"{ this is not json").unwrap();
    r.wait_log("rules file changed on disk and is unusable", 5)
        .await;
    let (status, text) = put("/second").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("damaged"), "{text}");
    assert_eq!(ids().await, ["/first"]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"{ this is not json",
        "the damaged file is left as it is"
    );

    // A valid hand edit: loaded, and the next write keeps it.
    let hand = r#"{"/hand":{"Id":"/hand","Acl":"hdr(host) -i hand.example","Config":{"Acl":"hdr(host) -i hand.example"}}}"#;
    std::fs::write(&file, hand).unwrap();
    r.wait_log("rules file changed on disk; loaded", 5).await;
    assert_eq!(ids().await, ["/hand"]);
    assert_eq!(put("/third").await.0, 200);
    // An edit and a write in the same instant (before the watcher's next look): the write takes the edit in.
    let both = r#"{"/hand":{"Id":"/hand","Acl":"hdr(host) -i hand.example","Config":{"Acl":"hdr(host) -i hand.example"}},"/hand2":{"Id":"/hand2","Acl":"hdr(host) -i h2.example","Config":{"Acl":"hdr(host) -i h2.example"}}}"#;
    std::fs::write(&file, both).unwrap();
    assert_eq!(put("/fourth").await.0, 200);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let keys: Vec<&String> = on_disk.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["/fourth", "/hand", "/hand2"]);
    let leftovers: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Each hostile head, in origin-form and in absolute-form (once two readers of one connection; now one, and both
/// forms must still be refused alike): the client gets the refusal, the backend not one byte.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_heads_are_refused_on_both_paths() {
    let backend = Recorder::start();
    let (_r, addr, _m) = front(
        &backend,
        &["--max-header-size", "8192", "--header-read-timeout", "1s"],
    )
    .await;
    let big = "b".repeat(9000);
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "CL+TE",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            &[400],
        ),
        (
            "TE+CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n".into(),
            &[400],
        ),
        (
            "double CL",
            "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
            &[400],
        ),
        ("CL list", "Content-Length: 3, 4\r\n\r\nabcd".into(), &[400]),
        ("signed CL", "Content-Length: +4\r\n\r\nabcd".into(), &[400]),
        (
            "obs-fold",
            "X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n".into(),
            &[400],
        ),
        (
            "xchunked",
            "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".into(),
            &[400, 501],
        ),
        (
            "chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(),
            &[400, 501],
        ),
        (
            "space before colon",
            "Content-Length : 4\r\n\r\nabcd".into(),
            &[400],
        ),
        ("NUL in a value", "X-A: a\0b\r\n\r\n".into(), &[400]),
        (
            "head over the limit",
            format!("X-Big: {big}\r\n\r\n"),
            &[431],
        ),
        ("too many fields", format!("{many}\r\n"), &[431]),
    ];
    for (what, rest, want) in &cases {
        for (path, target) in [("fast", "/a/x"), ("hyper", "http://a/a/x")] {
            backend.clear();
            let req = format!("POST {target} HTTP/1.1\r\nHost: a\r\n{rest}");
            let got = exchange(&addr, req.as_bytes(), WAIT).await;
            let status = statuses(&got);
            assert!(
                status.len() == 1 && want.contains(&status[0]),
                "{what} ({path}): want {want:?}, got {got:?}"
            );
            assert!(
                backend.all_bytes().is_empty(),
                "{what} ({path}) reached the backend: {}",
                backend.all_bytes()
            );
        }
    }

    // A head with bare-LF line ends (which httparse takes) does not lose the reader its place: the CL+TE request
    // after it on the same connection is still refused.
    backend.clear();
    let got = exchange(
        &addr,
        b"GET http://a/a/lf HTTP/1.1\nHost: a\n\nPOST http://a/a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200, 400], "{got}");
    assert_eq!(backend.requests().len(), 1, "{}", backend.all_bytes());

    // Slowloris on both paths: a head never finished is cut at the header timeout (1 s), nothing forwarded.
    for (path, start) in [
        ("fast", "GET /a/x HTTP/1.1\r\n"),
        ("hyper", "GET /a/x HTTP/1.0\r\n"),
    ] {
        use tokio::io::AsyncWriteExt;
        backend.clear();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("{start}Host: a\r\nX-Slow: 1\r\n").as_bytes())
            .await
            .unwrap();
        let t = Instant::now();
        let rest = common::raw::read_for(&mut s, Duration::from_secs(4)).await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path}: open after {:?}",
            t.elapsed()
        );
        assert!(!rest.contains(" 200 "), "{path}: {rest}");
        assert!(
            backend.all_bytes().is_empty(),
            "{path}: {:?}",
            backend.all_bytes()
        );
    }
}
