//! The built-in proxy end to end: real binary, simulator whose tasks are real HTTP servers.

mod common;

use common::{send, Rattan, FAST};
use rattan::marathon::simulator::{AppSpec, SimOptions, Simulator};
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn cluster() -> Simulator {
    Simulator::start(SimOptions {
        serve_tasks: true,
        keepalive: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

fn start(m: &Simulator) -> Rattan {
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str()];
    args.extend_from_slice(FAST);
    Rattan::start(&args)
}

/// GET through the proxy: (status, body, response headers).
async fn get(
    client: &reqwest::Client,
    r: &Rattan,
    host: &str,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = client
        .get(format!("{}{path}", r.proxy))
        .header("Host", host)
        .send()
        .await
        .expect("proxy answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap_or_default(), headers)
}

/// The task that answered (`<app> <task>`).
fn task_of(body: &str) -> String {
    body.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

async fn wait_routed(client: &reqwest::Client, r: &Rattan, host: &str, path: &str, app: &str) {
    let t = Instant::now();
    loop {
        let (s, body, _) = get(client, r, host, path).await;
        if s == 200 && body.starts_with(app) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{host}{path} never reached {app}: {s} {body}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_and_path_and_balances() {
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/shop/web".into(),
        instances: 3,
        ..AppSpec::default()
    })
    .await;
    m.create_app(AppSpec {
        id: "/api".into(),
        instances: 2,
        ..AppSpec::default()
    })
    .await;
    let r = start(&m);
    let c = reqwest::Client::new();

    // Bamboo's default rule: path_beg -i <app id>.
    wait_routed(&c, &r, "any.example.org", "/shop/web/cart", "/shop/web").await;
    wait_routed(&c, &r, "any.example.org", "/API/v1", "/api").await;
    let (s, body, _) = get(&c, &r, "any.example.org", "/nothing").await;
    assert_eq!(
        (s, body.as_str()),
        (404, "rattan: no route for any.example.org/nothing\n")
    );

    // A rule by host, round robin: spreads evenly over the three tasks.
    let (s, _) = send(
        "POST",
        &format!("{}/api/services", r.api),
        Some(r#"{"id":"/shop/web","config":{"Acl":"hdr(host) -i shop.example.com","balance":"roundrobin"}}"#),
        None,
    )
    .await;
    assert_eq!(s, 200);
    wait_routed(&c, &r, "SHOP.example.com", "/anything", "/shop/web").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..90 {
        let (s, body, _) = get(&c, &r, "shop.example.com", "/").await;
        assert_eq!(s, 200);
        *counts.entry(task_of(&body)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 30),
        "round robin is even: {counts:?}"
    );
    // Metrics: requests by app and status class, durations, healthy backends per app.
    let ok = r
        .metric("rattan_http_requests_total{app=\"/shop/web\",class=\"2xx\"}")
        .await;
    assert!(ok >= 90.0, "{ok}");
    assert!(
        r.metric("rattan_http_requests_total{app=\"\",class=\"4xx\"}")
            .await
            >= 1.0
    );
    assert!(
        r.metric("rattan_http_request_duration_seconds_count{app=\"/shop/web\"}")
            .await
            >= 90.0
    );
    assert_eq!(
        r.metric("rattan_app_healthy_backends{app=\"/shop/web\"}")
            .await,
        3.0
    );
    assert_eq!(r.metric("rattan_http_requests_in_flight").await, 0.0);
    // The path rule no longer applies to /shop/web (its stored rule replaced the default).
    let (s, _, _) = get(&c, &r, "any.example.org", "/shop/web").await;
    assert_eq!(s, 404);

    // Headers: forwarded info added, hop-by-hop removed both ways, Host kept.
    let resp = c
        .get(format!("{}/api/x", r.proxy))
        .header("Host", "edge.example.org")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Connection", "x-secret")
        .header("X-Secret", "must not pass")
        .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert!(h.contains_key("x-req-host"), "{h:?}");
    assert_eq!(h["x-req-host"], "edge.example.org");
    assert_eq!(h["x-req-x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-req-x-forwarded-proto"], "http");
    assert_eq!(h["x-req-x-forwarded-host"], "edge.example.org");
    assert_eq!(
        h["x-req-x-forwarded-port"],
        r.proxy.rsplit(':').next().unwrap()
    );
    assert!(h.get("x-req-x-secret").is_none() && h.get("x-req-proxy-authorization").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_and_failures() {
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/svc".into(),
        instances: 1,
        ..AppSpec::default()
    })
    .await;
    let r = start(&m);
    r.wait_stream().await;
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/svc", "/svc").await;

    // Scale up: the new task gets traffic at once.
    m.scale("/svc", 3).await;
    let t = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 3 {
        let (_, body, _) = get(&c, &r, "h", "/svc").await;
        seen.insert(task_of(&body));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "new tasks unused: {seen:?}"
        );
    }

    // Scale down: removed tasks get no new requests.
    m.scale("/svc", 1).await;
    let survivor = m.task_ids("/svc")[0].clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..30 {
        let (s, body, _) = get(&c, &r, "h", "/svc").await;
        assert_eq!((s, task_of(&body)), (200, survivor.clone()));
    }

    // A backend dies before Marathon notices: no client error while another is up.
    m.scale("/svc", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = m.task_ids("/svc")[1].clone();
    m.crash_task_server(&victim);
    for _ in 0..40 {
        let (s, body, _) = get(&c, &r, "h", "/svc").await;
        assert_eq!(s, 200, "{body}");
        assert_ne!(task_of(&body), victim);
    }
    // Passive health: after three connect failures in a row the dead backend is ejected and not tried again.
    let retries = r.log().matches("retrying on another").count();
    assert_eq!(retries, 3, "{}", r.log());
    assert!(r
        .log()
        .contains("backend ejected after repeated connect failures"));
    assert_eq!(r.metric("rattan_backend_ejections_total").await, 1.0);

    // No routable backend: 503 with the reason.
    m.scale("/svc", 0).await;
    let t = Instant::now();
    loop {
        let (s, body, _) = get(&c, &r, "h", "/svc").await;
        if s == 503 {
            assert_eq!(body, "rattan: /svc has no healthy backend\n");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- raw-socket cases ---------------------------------------------------------------------------------------

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Registers `port` on loopback as the one running task of app `id`.
fn app_on(m: &Simulator, id: &str, port: u16) {
    m.put_app_json(serde_json::json!({
        "id": id, "portDefinitions": [{"port": 10999}],
        "tasks": [{"id": format!("{}.1", id.trim_start_matches('/')), "host": "127.0.0.1", "ports": [port],
                   "state": "TASK_RUNNING", "startedAt": "2019-05-02T10:11:20.001Z"}]
    }));
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => buf.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_is_tunnelled_both_ways() {
    // A backend that accepts an `Upgrade: echo` and then echoes bytes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut s).await.to_ascii_lowercase();
                assert!(
                    head.contains("upgrade: echo") && head.contains("connection: upgrade"),
                    "{head}"
                );
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let m = cluster().await;
    app_on(&m, "/ws", port);
    let r = start(&m);
    let c = reqwest::Client::new();
    let t = Instant::now();
    while get(&c, &r, "h", "/ws").await.0 == 404 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = TcpStream::connect(r.proxy.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in ["ping\n", "pong and more\n"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_smuggling_and_slow_headers_time_out() {
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    let chunked = head
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    seen.lock().unwrap().push(head);
                    if chunked {
                        // Drain the (empty) chunked body.
                        let mut end = [0u8; 5];
                        let _ = s.read_exact(&mut end).await;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let m = cluster().await;
    app_on(&m, "/x", port);
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str(), "--header-read-timeout", "1s"];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let c = reqwest::Client::new();
    let t = Instant::now();
    while get(&c, &r, "h", "/x").await.0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    heads.lock().unwrap().clear();

    // CL + TE with a request hidden behind it: the hidden request never reaches the backend, and what does reach
    // it carries one framing only.
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x/smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    let all = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert_eq!(
        all.matches("http/1.1 ").count(),
        1,
        "one response, then the connection closes: {all}"
    );
    assert!(all.contains("connection: close"), "{all}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = heads.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| !h.contains("/x/smuggled")),
        "smuggled request forwarded: {seen:?}"
    );
    for h in &seen {
        let h = h.to_ascii_lowercase();
        assert!(
            !(h.contains("content-length") && h.contains("transfer-encoding")),
            "{h}"
        );
    }

    // Slowloris: headers never finished, the connection is closed after the header timeout.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "connection still open after 5 s");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge() {
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/h2".into(),
        instances: 1,
        ..AppSpec::default()
    })
    .await;
    // On the current-thread runtime (`--workers 1`), which the benchmark uses.
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str(), "--workers", "1"];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let t = Instant::now();
    loop {
        let resp = c.get(format!("{}/h2/x", r.proxy)).send().await.unwrap();
        if resp.status() == 200 {
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            assert!(resp.text().await.unwrap().starts_with("/h2 "));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests() {
    // A backend that takes 1.5 s to answer.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    let slow = head.contains("/slow");
                    if slow {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let m = cluster().await;
    app_on(&m, "/slow", port);
    let mut r = start(&m);
    let c = reqwest::Client::new();
    let t = Instant::now();
    while get(&c, &r, "h", "/slow/ready").await.0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proxy = r.proxy.clone();
    let in_flight = tokio::spawn(async move {
        let resp = reqwest::get(format!("{proxy}/slow")).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections while draining.
    assert!(TcpStream::connect(r.proxy.trim_start_matches("http://"))
        .await
        .is_err());
    assert_eq!(
        in_flight.await.unwrap(),
        (200, "done".to_string()),
        "in-flight request completed"
    );
    let status = tokio::task::spawn_blocking(move || {
        let s = r.wait_exit(10);
        (s, r.log())
    })
    .await
    .unwrap();
    assert_eq!(status.0.and_then(|s| s.code()), Some(0), "{}", status.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_sessions_pin_clients() {
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/cart".into(),
        instances: 3,
        ..AppSpec::default()
    })
    .await;
    // A label-driven sticky app too (marathon-lb's HAPROXY_0_STICKY).
    let labels = [
        (
            "HAPROXY_0_VHOST".to_string(),
            "labels.example.com".to_string(),
        ),
        ("HAPROXY_0_STICKY".to_string(), "true".to_string()),
    ]
    .into();
    m.create_app(AppSpec {
        id: "/labelled".into(),
        instances: 3,
        labels,
        ..AppSpec::default()
    })
    .await;
    let r = start(&m);
    let (s, _) = send(
        "POST",
        &format!("{}/api/services", r.api),
        Some(r#"{"id":"/cart","config":{"Acl":"path_beg /cart","sticky":"true","balance":"roundrobin"}}"#),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/cart", "/cart").await;
    wait_routed(&c, &r, "labels.example.com", "/", "/labelled").await;

    for (host, path) in [("h", "/cart"), ("labels.example.com", "/")] {
        // First visit: a cookie that names the backend without revealing it.
        let (s, body, headers) = get(&c, &r, host, path).await;
        assert_eq!(s, 200);
        let set = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.starts_with("mesosphere_server_id=") && !set.contains("127.0.0.1"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let first = task_of(&body);
        // With the cookie: always that backend, and no new cookie.
        for _ in 0..12 {
            let resp = c
                .get(format!("{}{path}", r.proxy))
                .header("Host", host)
                .header("Cookie", format!("lang=en; {cookie}"))
                .send()
                .await
                .unwrap();
            assert!(resp.headers().get("set-cookie").is_none());
            assert_eq!(task_of(&resp.text().await.unwrap()), first);
        }
    }

    // Without a cookie the rule's round robin still spreads.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(task_of(&get(&c, &r, "h", "/cart").await.1));
    }
    assert_eq!(seen.len(), 3);

    // The pinned backend leaves: the client moves to another one and gets a new cookie.
    let (_, body, headers) = get(&c, &r, "h", "/cart").await;
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    m.kill_task(&task_of(&body));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = c
        .get(format!("{}/cart", r.proxy))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_some(), "re-pinned");
    assert_ne!(task_of(&resp.text().await.unwrap()), task_of(&body));
}
