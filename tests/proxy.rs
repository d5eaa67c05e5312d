//! The built-in proxy end to end: real binary, simulator whose tasks are real HTTP servers.

mod common;

use common::{
    app_at, app_on, cluster, labeled_app, plain_app, send, start_against, wait_metric, wait_tcp,
    Rattan, FAST,
};
use rattan::dev::simulator::{AppSpec, Simulator};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// Waits up to 10 s for a 200 whose body starts with `app` (`""`: any 200).
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
    plain_app(&m, "/shop/web", 3).await;
    plain_app(&m, "/api", 2).await;
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
    // Open client connections: one more while a raw client keeps its connection, as many as before once it left.
    let open = r.metric("rattan_http_connections_active").await;
    let mut s = TcpStream::connect(r.proxy.trim_start_matches("http://"))
        .await
        .unwrap();
    let (status, _) = exchange(
        &mut s,
        b"GET /API/v1 HTTP/1.1\r\nHost: any.example.org\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    wait_metric(&r, "rattan_http_connections_active", open + 1.0).await;
    drop(s);
    wait_metric(&r, "rattan_http_connections_active", open).await;
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
    plain_app(&m, "/svc", 1).await;
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

/// A keep-alive backend whose every body is `name`; with `hold`, requests for `/lc/hold` wait until it turns true.
/// Returns its port and how many requests it has taken.
async fn named_backend(
    name: &'static str,
    hold: Option<tokio::sync::watch::Receiver<bool>>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (hold, count) = (hold.clone(), count.clone());
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let (Some(mut release), true) = (hold.clone(), head.contains("/lc/hold")) {
                        let _ = release.wait_for(|go| *go).await;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, taken)
}

/// Leastconn's in-flight counts live outside the routing snapshot: they survive swaps, and a request in flight to
/// a task that left Marathon still completes.
#[tokio::test(flavor = "multi_thread")]
async fn least_conn_prefers_the_idle_backend() {
    let (release, hold) = tokio::sync::watch::channel(false);
    let (busy_port, busy_taken) = named_backend("busy", Some(hold)).await;
    let (idle_port, _) = named_backend("idle", None).await;
    let m = cluster().await;
    // No rule of its own: the default rule, with the default balance (leastconn).
    let lc_on = |ports: &[u16]| app_at(&m, "/lc", 10998, ports);
    lc_on(&[busy_port, idle_port]);
    let r = start(&m);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/lc/ready", "").await;
    let backends = "rattan_app_healthy_backends{app=\"/lc\"}";

    // Park one request on the "busy" backend: /lc/hold returns at once from "idle", so send it until one stays.
    let mut parked = None;
    for _ in 0..50 {
        let before = busy_taken.load(std::sync::atomic::Ordering::SeqCst);
        let proxy = r.proxy.clone();
        let req = tokio::spawn(async move {
            let resp = reqwest::get(format!("{proxy}/lc/hold")).await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        });
        let t = Instant::now();
        while !req.is_finished() && busy_taken.load(std::sync::atomic::Ordering::SeqCst) == before {
            assert!(t.elapsed() < Duration::from_secs(5), "{}", r.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if req.is_finished() {
            assert_eq!(req.await.unwrap(), (200, "idle".to_string()));
        } else {
            parked = Some(req);
            break;
        }
    }
    let parked = parked.expect("no request ever reached the busy backend");

    // A new snapshot (another app arrives) keeps the count: with one request in flight on "busy" and none on
    // "idle", every new request goes to "idle".
    plain_app(&m, "/other", 1).await;
    wait_routed(&c, &r, "h", "/other", "/other").await;
    for _ in 0..40 {
        let (s, body, _) = get(&c, &r, "h", "/lc/x").await;
        assert_eq!((s, body.as_str()), (200, "idle"));
    }

    // "busy" leaves Marathon with the request still on it: the request completes.
    lc_on(&[idle_port]);
    wait_metric(&r, backends, 1.0).await;
    release.send(true).unwrap();
    assert_eq!(parked.await.unwrap(), (200, "busy".to_string()));

    // Back, with its count given back: both backends share the load again.
    lc_on(&[busy_port, idle_port]);
    wait_metric(&r, backends, 2.0).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let (s, body, _) = get(&c, &r, "h", "/lc/x").await;
        assert_eq!(s, 200);
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

// ---- raw-socket cases ---------------------------------------------------------------------------------------

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Content-Length of a raw message head.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

use common::raw::{read_head, read_until};

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
                    let length = content_length(&head);
                    seen.lock().unwrap().push(head);
                    if let Some(n) = length {
                        let mut body = vec![0u8; n];
                        let _ = s.read_exact(&mut body).await;
                    }
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
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--header-read-timeout",
        "1s",
        "--keep-alive-timeout",
        "2500ms",
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/x", "").await;
    heads.lock().unwrap().clear();

    // CL + TE with a request hidden behind it: refused with 400, nothing reaches the backend, and the connection
    // closes (so the hidden request is never read as one). Both header orders.
    let addr = r.proxy.trim_start_matches("http://").to_string();
    for attack in [
        &b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        // After an ordinary request with a body on the same connection, the other header order.
        &b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPOST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /x/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"[..],
    ] {
        heads.lock().unwrap().clear();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(attack).await.unwrap();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
        let all = String::from_utf8_lossy(&all).to_ascii_lowercase();
        let first_ok = attack.windows(17).any(|w| w == b"Content-Length: 5");
        let statuses: Vec<&str> = all
            .match_indices("http/1.1 ")
            .map(|(i, _)| &all[i + 9..i + 12])
            .collect();
        let want: Vec<&str> = if first_ok { vec!["200", "400"] } else { vec!["400"] };
        assert_eq!(statuses, want, "then the connection closes: {all}");
        assert!(all.contains("conflicting content-length and transfer-encoding"), "{all}");
        assert!(all.contains("connection: close"), "{all}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = heads.lock().unwrap().clone();
        assert_eq!(seen.len(), usize::from(first_ok), "only the honest request is forwarded: {seen:?}");
    }
    assert!(
        r.metric("rattan_http_rejected_total{reason=\"smuggling\"}")
            .await
            >= 2.0
    );

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

    // Drip-fed, a byte every 200 ms: the header timeout runs from the head's first byte, not from the last read.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let cut = drip(
        &mut s,
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-Slow: 1234567890abcdefghijklmnopqrstuvwxyz",
    )
    .await;
    assert!(cut < Duration::from_millis(2500), "cut after {cut:?}");

    // Keep-alive: an idle connection outlives the header timeout, then closes at its own.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ok = [0u8; 2];
    s.read_exact(&mut ok).await.unwrap();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_head(&mut s).await.starts_with("HTTP/1.1 200"),
        "closed at the header timeout"
    );
    s.read_exact(&mut ok).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok() && rest.is_empty(),
        "idle connection still open"
    );
    let idle = t.elapsed() - Duration::from_millis(1500);
    assert!(
        idle >= Duration::from_millis(2400),
        "closed after {idle:?} idle"
    );

    // The same timeouts for HTTP/1.0 keep-alive and HTTP/2, side by side to save the waits.
    tokio::join!(
        hyper_path_keeps_alive(&addr),
        hyper_path_cuts_slow_heads(&addr),
        http2_idle_gets_goaway(&addr)
    );
}

const HTTP10: &[u8] = b"GET /x HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n";

/// An HTTP/1.0 keep-alive connection outlives the header timeout (1 s) idle, then closes at the keep-alive
/// timeout (2.5 s).
async fn hyper_path_keeps_alive(addr: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut s, HTTP10).await, (200, "ok".into()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        exchange(&mut s, HTTP10).await,
        (200, "ok".into()),
        "closed at the header timeout"
    );
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok() && rest.is_empty(),
        "idle connection still open"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(2400),
        "closed after {:?} idle",
        t.elapsed()
    );
}

/// Drip-fed after a first request, an HTTP/1.0 head is cut off at the header timeout from its first byte.
async fn hyper_path_cuts_slow_heads(addr: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut s, HTTP10).await, (200, "ok".into()));
    let cut = drip(
        &mut s,
        b"GET /x HTTP/1.0\r\nHost: h\r\nX-Slow: 1234567890abcdefghijklmnopqrstuvwxyz",
    )
    .await;
    // 1 s header timeout; the keep-alive timeout (2.5 s) would be the bug.
    assert!(cut < Duration::from_millis(2300), "cut after {cut:?}");
}

/// Sends `head` a byte every 200 ms until the proxy closes the connection; how long that took. The head never
/// ends, so any answer but the close (a 408 may come first) is a failure.
async fn drip(s: &mut TcpStream, head: &[u8]) -> Duration {
    let t = Instant::now();
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            return t.elapsed();
        }
        let mut answer = Vec::new();
        if let Ok(r) =
            tokio::time::timeout(Duration::from_millis(200), s.read_to_end(&mut answer)).await
        {
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                r.is_err() || answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                "an answer to half a head: {answer}"
            );
            return t.elapsed();
        }
    }
    panic!("a drip-fed head was never cut off");
}

/// An HTTP/2 connection with no stream gets a GOAWAY at the keep-alive timeout, then closes.
async fn http2_idle_gets_goaway(addr: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let t = Instant::now();
    let mut all = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut all)).await;
    assert!(closed.is_ok(), "idle HTTP/2 connection still open");
    assert!(
        t.elapsed() >= Duration::from_millis(2400),
        "closed after {:?}",
        t.elapsed()
    );
    // Frame type 7 is GOAWAY: walk the frames (9-byte headers) the server sent.
    let mut at = 0;
    let mut types = Vec::new();
    while at + 9 <= all.len() {
        let len =
            usize::from(all[at]) << 16 | usize::from(all[at + 1]) << 8 | usize::from(all[at + 2]);
        types.push(all[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&7), "no GOAWAY among frames {types:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge() {
    let m = cluster().await;
    plain_app(&m, "/h2", 1).await;
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
    wait_routed(&c, &r, "h", "/slow/ready", "").await;
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
    plain_app(&m, "/cart", 3).await;
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

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
fn cert(names: &[&str]) -> (String, String, Vec<u8>) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    (
        c.cert.pem(),
        c.key_pair.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

/// HTTPS GET of `https://name:port/path` resolved to the proxy: (status, body, served certificate, version, headers).
async fn tls_get(
    c: &reqwest::Client,
    name: &str,
    port: u16,
    path: &str,
) -> Result<
    (
        u16,
        String,
        Vec<u8>,
        reqwest::Version,
        reqwest::header::HeaderMap,
    ),
    reqwest::Error,
> {
    let resp = c.get(format!("https://{name}:{port}{path}")).send().await?;
    let served = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let (status, version, headers) = (
        resp.status().as_u16(),
        resp.version(),
        resp.headers().clone(),
    );
    Ok((status, resp.text().await?, served, version, headers))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_by_sni_with_reload_redirect_and_h2() {
    let m = cluster().await;
    labeled_app(
        &m,
        "/secure",
        1,
        &[
            ("HAPROXY_0_VHOST", "a.example.com,x.wild.test"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
        ],
    )
    .await;
    labeled_app(&m, "/plain", 1, &[("HAPROXY_0_VHOST", "b.example.com")]).await;
    let dir = tempfile::tempdir().unwrap();
    // Three layouts: cert and key in one file, `.crt` + `.key`, a wildcard; plus the default for unknown names.
    let (a_pem, a_key, a_der) = cert(&["a.example.com"]);
    std::fs::write(dir.path().join("a.pem"), format!("{a_pem}{a_key}")).unwrap();
    let (b_pem, b_key, b_der) = cert(&["b.example.com"]);
    std::fs::write(dir.path().join("b.crt"), &b_pem).unwrap();
    std::fs::write(dir.path().join("b.key"), &b_key).unwrap();
    let (w_pem, w_key, w_der) = cert(&["*.wild.test"]);
    std::fs::write(dir.path().join("wild.pem"), format!("{w_pem}{w_key}")).unwrap();
    let (d_pem, d_key, d_der) = cert(&["fallback.invalid"]);
    std::fs::write(dir.path().join("default.pem"), format!("{d_pem}{d_key}")).unwrap();

    let url = m.url();
    let certs = dir.path().display().to_string();
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--https-bind",
        "127.0.0.1:0",
        "--tls-cert-dir",
        certs.as_str(),
        "--via",
        "true",
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let https: std::net::SocketAddr = r
        .https
        .as_deref()
        .expect("https listener")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let port = https.port();
    // Each certificate's expiry is exported (rcgen's default validity runs to 4096).
    let not_after = r
        .metric("rattan_tls_certificate_not_after_timestamp_seconds")
        .await;
    assert!(not_after > 4.0e9, "{not_after}");
    let names = [
        "a.example.com",
        "b.example.com",
        "x.wild.test",
        "c.example.com",
        "unknown.test",
    ];
    let mut trusting = reqwest::Client::builder().tls_info(true);
    for pem in [&a_pem, &b_pem, &w_pem] {
        trusting =
            trusting.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    let mut any = reqwest::Client::builder()
        .tls_info(true)
        .danger_accept_invalid_certs(true);
    for n in names {
        trusting = trusting.resolve(n, https);
        any = any.resolve(n, https);
    }
    let (trusting, any) = (trusting.build().unwrap(), any.build().unwrap());

    let t = Instant::now();
    loop {
        match tls_get(&trusting, "b.example.com", port, "/").await {
            Ok((200, body, ..)) if body.starts_with("/plain ") => break,
            other => assert!(
                t.elapsed() < Duration::from_secs(10),
                "b.example.com never routed: {other:?}\n{}",
                r.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each name gets its own certificate (the trusting client checks the name too); ALPN gives HTTP/2.
    let (s, body, served, version, headers) = tls_get(&trusting, "a.example.com", port, "/x?y=1")
        .await
        .unwrap();
    assert_eq!(
        (s, served == a_der, version),
        (200, true, reqwest::Version::HTTP_2),
        "{body}"
    );
    assert!(body.starts_with("/secure "), "{body}");
    assert_eq!(headers["x-req-x-forwarded-proto"], "https");
    assert_eq!(headers["x-req-x-forwarded-port"], port.to_string().as_str());
    assert_eq!(headers["x-req-via"], "1.1 rattan");
    assert_eq!(headers["via"], "1.1 rattan");
    let (_, _, served, ..) = tls_get(&trusting, "b.example.com", port, "/")
        .await
        .unwrap();
    assert!(served == b_der, "b.example.com served another certificate");
    let (s, body, served, ..) = tls_get(&trusting, "x.wild.test", port, "/").await.unwrap();
    assert_eq!((s, served == w_der), (200, true), "{body}");
    let (_, _, served, ..) = tls_get(&any, "unknown.test", port, "/").await.unwrap();
    assert!(served == d_der, "unknown names get the default certificate");
    assert!(tls_get(&trusting, "unknown.test", port, "/").await.is_err());

    // Plain HTTP to a redirect_https route: 301 to the HTTPS port, path and query kept; other routes proxied.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (s, _, h) = get(&plain, &r, "a.example.com:8080", "/x?y=1").await;
    assert_eq!(s, 301);
    assert_eq!(
        h["location"],
        format!("https://a.example.com:{port}/x?y=1").as_str()
    );
    let (s, body, _) = get(&plain, &r, "b.example.com", "/").await;
    assert_eq!((s, body.starts_with("/plain ")), (200, true), "{body}");

    // A broken file is reported and changes nothing; a new certificate is picked up without a restart.
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    let (c_pem, c_key, c_der) = cert(&["c.example.com"]);
    std::fs::write(dir.path().join("c.pem"), format!("{c_pem}{c_key}")).unwrap();
    let t = Instant::now();
    loop {
        // A new client each time: a pooled connection would keep the certificate of its handshake.
        let fresh = reqwest::Client::builder()
            .tls_info(true)
            .danger_accept_invalid_certs(true)
            .resolve("c.example.com", https)
            .build()
            .unwrap();
        let (_, _, served, ..) = tls_get(&fresh, "c.example.com", port, "/").await.unwrap();
        if served == c_der {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "new certificate never served\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _, served, ..) = tls_get(&trusting, "a.example.com", port, "/")
        .await
        .unwrap();
    assert_eq!((s, served == a_der), (200, true));
    // The broken file is reported.
    r.wait_log("broken.pem", 5).await;
}

/// One HTTP/1.1 request on an open connection; returns the body.
async fn raw_get(s: &mut TcpStream) -> String {
    exchange(s, b"GET / HTTP/1.1\r\nHost: tcp\r\n\r\n").await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_listeners_follow_apps() {
    let m = cluster().await;
    let (p_label, p_env) = (common::free_port(), common::free_port());
    m.create_app(AppSpec {
        id: "/db".into(),
        instances: 1,
        labels: [
            ("HAPROXY_0_MODE".to_string(), "tcp".to_string()),
            ("HAPROXY_0_PORT".to_string(), p_label.to_string()),
            ("HAPROXY_0_BALANCE".to_string(), "roundrobin".to_string()),
        ]
        .into(),
        ..AppSpec::default()
    })
    .await;
    m.create_app(AppSpec {
        id: "/cache".into(),
        instances: 1,
        env: [("BAMBOO_TCP_PORT".to_string(), p_env.to_string())].into(),
        ..AppSpec::default()
    })
    .await;
    let r = start_against(&m.url(), &["--tcp-bind-address", "127.0.0.1"]);
    wait_tcp(p_label, &r, true).await;
    wait_tcp(p_env, &r, true).await;

    let mut held = TcpStream::connect(("127.0.0.1", p_label)).await.unwrap();
    let first = raw_get(&mut held).await;
    assert!(first.starts_with("/db "), "{first}");
    let mut c = TcpStream::connect(("127.0.0.1", p_env)).await.unwrap();
    assert!(raw_get(&mut c).await.starts_with("/cache "));
    // The two held open, the probes gone.
    wait_metric(&r, "rattan_tcp_connections_active", 2.0).await;

    // More tasks: new connections spread over them; the open connection keeps its backend.
    m.scale("/db", 3).await;
    let t = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(10), "saw only {seen:?}");
        let mut s = TcpStream::connect(("127.0.0.1", p_label)).await.unwrap();
        seen.insert(raw_get(&mut s).await);
    }
    assert_eq!(
        raw_get(&mut held).await,
        first,
        "the held connection was not moved or cut"
    );
    assert!(
        r.metric("rattan_tcp_bytes_total{app=\"/db\",direction=\"in\"}")
            .await
            > 0.0
    );
    assert!(
        r.metric("rattan_tcp_bytes_total{app=\"/db\",direction=\"out\"}")
            .await
            > 0.0
    );

    // The app goes: its listener closes, the other stays; the open connection to it is not cut.
    m.remove_app("/cache");
    wait_tcp(p_env, &r, false).await;
    assert!(raw_get(&mut c).await.starts_with("/cache "));
    drop((c, held));
    wait_metric(&r, "rattan_tcp_connections_active", 0.0).await;
    let mut s = TcpStream::connect(("127.0.0.1", p_label)).await.unwrap();
    assert!(raw_get(&mut s).await.starts_with("/db "));
    assert_eq!(r.metric("rattan_tcp_listeners").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_service_ports_makes_every_service_port_tcp() {
    let (backend, _) = named_backend("plain", None).await;
    let service = common::free_port();
    let m = cluster().await;
    // No TCP label, no BAMBOO_TCP_PORT: an HTTP app unless every service port is to be TCP.
    app_at(&m, "/plain", service, &[backend]);
    let c = reqwest::Client::new();
    let r = start_against(&m.url(), &["--tcp-bind-address", "127.0.0.1"]);
    wait_routed(&c, &r, "h", "/plain", "plain").await;
    assert_eq!(r.metric("rattan_tcp_listeners").await, 0.0);
    drop(r);

    let r = start_against(
        &m.url(),
        &[
            "--tcp-bind-address",
            "127.0.0.1",
            "--tcp-service-ports",
            "true",
        ],
    );
    wait_tcp(service, &r, true).await;
    let mut s = TcpStream::connect(("127.0.0.1", service)).await.unwrap();
    assert_eq!(raw_get(&mut s).await, "plain");
    assert_eq!(r.metric("rattan_tcp_listeners").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_timeouts_and_access_log() {
    // A backend that accepts and never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            keep.push(s);
        }
    });
    let m = cluster().await;
    app_on(&m, "/slow", port);
    plain_app(&m, "/fast", 1).await;
    let r = start_against(
        &m.url(),
        &[
            "--backend-timeout",
            "500ms",
            "--access-log",
            "json",
            "--max-connections",
            "1",
        ],
    );
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    wait_routed(&c, &r, "h", "/fast", "/fast").await;
    let t = Instant::now();
    let (s, body, _) = get(&c, &r, "h", "/slow").await;
    assert_eq!(s, 504, "{body}");
    assert!(t.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let line = r
        .out
        .lock()
        .unwrap()
        .lines()
        .find(|l| l.contains("\"/slow\""))
        .map(str::to_string)
        .expect("an access log line for /slow");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["method"].as_str()),
        (Some(504), Some("GET"))
    );
    assert_eq!(v["backend"], format!("127.0.0.1:{port}").as_str());

    // One connection at a time: a second client waits until the first leaves.
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    first
        .write_all(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte))
            .await
            .is_err(),
        "second connection served past --max-connections 1"
    );
    drop(first);
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut second))
        .await
        .unwrap();
    assert!(
        head.starts_with("TTP/1.1 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn header_size_and_connect_timeout_limits() {
    // A backend that never completes a connect: a listener whose accept queue (backlog 0) is full and never
    // accepted from, so the kernel drops further SYNs.
    let hole = tokio::net::TcpSocket::new_v4().unwrap();
    hole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hole = hole.listen(0).unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            TcpStream::connect(("127.0.0.1", hole_port)),
        )
        .await
        {
            Ok(Ok(s)) => queued.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => break,
        }
        assert!(queued.len() < 16, "the accept queue never filled");
    }
    let m = cluster().await;
    app_on(&m, "/hole", hole_port);
    plain_app(&m, "/fast", 1).await;
    let r = start_against(
        &m.url(),
        &["--max-header-size", "2048", "--connect-timeout", "300ms"],
    );
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/fast", "/fast").await;

    // Request heads up to the limit pass; a larger one gets 431 and never reaches the backend.
    let send_with = |size: usize| {
        c.get(format!("{}/fast", r.proxy))
            .header("Host", "h")
            .header("X-Pad", "p".repeat(size))
            .send()
    };
    let ok = send_with(1024).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.text().await.unwrap().starts_with("/fast"));
    let big = send_with(4096).await.unwrap();
    assert_eq!(big.status().as_u16(), 431);
    assert_eq!(
        big.text().await.unwrap(),
        "rattan: request head too large\n"
    );

    // The configured connect timeout, not the 5 s default, ends the wait for the unreachable backend.
    let (s, body, _) = get(&c, &r, "h", "/hole").await;
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("connect timeout after 300ms"), "{body}");
    drop(queued);
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_under_load_fails_no_request() {
    let m = cluster().await;
    plain_app(&m, "/churn", 2).await;
    let r = start(&m);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/churn", "/churn").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, url, stop) = (c.clone(), format!("{}/churn", r.proxy), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut tasks) =
                (0u32, Vec::new(), std::collections::HashSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        ok += 1;
                        tasks.insert(task_of(&resp.text().await.unwrap_or_default()));
                    }
                    Ok(resp) => failed.push(format!(
                        "{} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, tasks)
        }));
    }
    // 60 changes, one every 100 ms: 2 -> 4 -> 2 ...
    for i in 0..60 {
        m.scale("/churn", if i % 2 == 0 { 4 } else { 2 }).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut tasks) = (0, Vec::new(), std::collections::HashSet::new());
    for h in clients {
        let (o, f, t) = h.await.unwrap();
        ok += o;
        failed.extend(f);
        tasks.extend(t);
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}\n{}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)],
        r.log()
    );
    assert!(ok > 100, "only {ok} requests");
    assert!(
        tasks.len() > 10,
        "traffic reached only {} tasks",
        tasks.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_connection_failures_are_resent_only_without_a_body() {
    // A backend that answers the first request of each connection, then closes on the next one without answering.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                if let Some(n) = content_length(&head) {
                    let mut body = vec![0u8; n];
                    let _ = s.read_exact(&mut body).await;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await;
                let _ = read_head(&mut s).await;
                // Written by the proxy, never answered: the connection just closes.
            });
        }
    });
    let m = cluster().await;
    app_on(&m, "/flaky", port);
    let r = start(&m);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/flaky", "").await;
    // One client connection, so the proxy reuses its backend connection for each request: which connection a
    // pooling client picks would otherwise decide whether the proxy writes to a used backend connection at all.
    let addr = r.proxy.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let again = b"GET /flaky HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(exchange(&mut s, again).await, (200, "ok\n".into()));
    // A GET on the reused connection fails after it was written: sent again on a new connection, the client sees 200.
    let before = conns.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        exchange(&mut s, again).await,
        (200, "ok\n".into()),
        "{}",
        r.log()
    );
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), before + 1);
    // A POST with a body is not sent twice: 502, and no new backend connection.
    let post = b"POST /flaky HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\npayload";
    assert_eq!(exchange(&mut s, post).await.0, 502, "{}", r.log());
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), before + 1);
}

/// One request on an open connection; returns the status and the body (by its Content-Length, which it must have).
async fn exchange(s: &mut TcpStream, request: &[u8]) -> (u16, String) {
    s.write_all(request).await.unwrap();
    let head = read_head(s).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let len = content_length(&head).unwrap_or_else(|| panic!("no length in {head:?}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

// ---- the HTTP/1 fast path on the wire -----------------------------------------------------------------------

/// What a scripted backend received: (request head, body).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// Reads one request (head and body, by length or chunked) off a raw connection; `None` at the end.
async fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let head = read_head(s).await;
    if head.is_empty() {
        return None;
    }
    let mut body = Vec::new();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        loop {
            let size_line = read_until(s, b"\n").await;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers up to the blank line.
                while !read_until(s, b"\n").await.trim().is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).await.ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = content_length(&head) {
        body = vec![0u8; n];
        s.read_exact(&mut body).await.ok()?;
    }
    Some((head, body))
}

/// A backend that answers each request by its path with raw bytes (written in the pieces given, 30 ms apart),
/// closing the connection after the `/close` and `/cut` answers. `/100` sends an interim 100 first when asked.
fn scripted_backend(seen: Seen) -> (u16, tokio::task::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let l = TcpListener::from_std(l).unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some((head, body)) = read_request(&mut s).await {
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let head_request = head.starts_with("HEAD ");
                    seen.lock().unwrap().push((head, body.clone()));
                    let pieces: Vec<Vec<u8>> = match path.split('?').next().unwrap_or("") {
                        "/w/hop" => vec![b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok".to_vec()],
                        "/w/chunked" => vec![
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
                            b"lo\r\n6;ext=1\r\n world\r\n".to_vec(),
                            b"0\r\nX-Trailer: t\r\n\r\n".to_vec(),
                        ],
                        "/w/close" => vec![
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ".to_vec(),
                            b"the end".to_vec(),
                        ],
                        "/w/head" if head_request => {
                            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()]
                        }
                        "/w/early" => vec![
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec(),
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlater".to_vec(),
                        ],
                        "/w/bad" => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec()],
                        "/w/cut" => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec()],
                        "/w/coded" => vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()],
                        "/w/cookies" => vec![format!(
                            "HTTP/1.1 200 OK\r\nSet-Cookie: big={}\r\nContent-Length: 2\r\n\r\nok",
                            "c".repeat(40 * 1024)
                        )
                        .into_bytes()],
                        _ => {
                            // Echo: the body back, and the query in a header, so replies can be told apart.
                            let q = path.split_once('?').map_or("", |(_, q)| q).to_string();
                            vec![[
                                format!("HTTP/1.1 200 OK\r\nX-Query: {q}\r\nContent-Length: {}\r\n\r\n", body.len())
                                    .into_bytes(),
                                body,
                            ]
                            .concat()]
                        }
                    };
                    for (i, p) in pieces.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                    }
                    if path == "/w/close" || path == "/w/cut" {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// Sends raw bytes on a new connection and reads until the proxy closes it (or 5 s pass).
async fn raw_exchange(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_on_the_wire() {
    let seen: Seen = Default::default();
    let (port, _backend) = scripted_backend(seen.clone());
    let m = cluster().await;
    app_on(&m, "/w", port);
    let r = start(&m);
    let c = reqwest::Client::new();
    wait_routed(&c, &r, "h", "/w/ready", "").await;
    let addr = r.proxy.trim_start_matches("http://").to_string();

    // Response hop-by-hop fields (and those Connection names) stop at the proxy; the rest pass.
    let (s, body, h) = get(&c, &r, "h", "/w/hop").await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    assert_eq!(h["x-kept"], "yes");
    for gone in ["x-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(h.get(gone).is_none(), "{gone} passed: {h:?}");
    }

    // One keep-alive connection through chunked, close-free HEAD, interim and plain responses, in order.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /w/chunked HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut body = Vec::new();
    while !body.ends_with(b"0\r\nX-Trailer: t\r\n\r\n") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed inside the chunked body: {}",
            String::from_utf8_lossy(&body)
        );
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        body, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        "passed through byte for byte"
    );
    s.write_all(b"HEAD /w/head HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-length: 1000"),
        "{head}"
    );
    s.write_all(b"GET /w/early HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let interim = read_head(&mut s).await;
    assert!(
        interim.starts_with("HTTP/1.1 103 Early Hints") && interim.contains("rel=preload"),
        "{interim}"
    );
    let fin = read_head(&mut s).await;
    assert!(fin.starts_with("HTTP/1.1 200"), "{fin}");
    let mut later = [0u8; 5];
    s.read_exact(&mut later).await.unwrap();
    assert_eq!(&later, b"later");

    // The body passes through as coded, so all its transfer codings do too (and no Content-Length beside them);
    // a 40 KiB response head is within the head limit.
    let all = raw_exchange(
        &addr,
        b"GET /w/coded HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = all.to_ascii_lowercase();
    assert!(
        lower.contains("transfer-encoding: gzip, chunked\r\n") && !lower.contains("content-length"),
        "{all}"
    );
    assert!(all.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{all}");
    let (s, body, h) = get(&c, &r, "h", "/w/cookies").await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    assert_eq!(h["set-cookie"].len(), 4 + 40 * 1024);

    // Pipelined requests: answered in order on the same connection.
    let all = raw_exchange(
        &addr,
        b"GET /w/echo?1 HTTP/1.1\r\nHost: h\r\n\r\nGET /w/echo?2 HTTP/1.1\r\nHost: h\r\n\r\nGET /w/echo?3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    let order: Vec<&str> = all
        .match_indices("X-Query: ")
        .map(|(i, _)| &all[i + 9..i + 10])
        .collect();
    assert_eq!(order, ["1", "2", "3"], "{all}");
    assert!(
        all.to_ascii_lowercase().contains("connection: close"),
        "{all}"
    );

    // A response delimited by the backend closing: passed whole, then the client connection closes too.
    let all = raw_exchange(&addr, b"GET /w/close HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(
        all.starts_with("HTTP/1.1 200") && all.ends_with("\r\n\r\nuntil the end"),
        "{all}"
    );
    assert!(
        all.to_ascii_lowercase().contains("connection: close"),
        "{all}"
    );

    // A head no client should get (two lengths) is a 502; a body cut short ends the client connection early.
    assert_eq!(get(&c, &r, "h", "/w/bad").await.0, 502);
    let all = raw_exchange(&addr, b"GET /w/cut HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(
        all.starts_with("HTTP/1.1 200") && all.ends_with("only this"),
        "{all}"
    );

    // Several X-Forwarded-For lines reach the backend as one list, then this client; a body split across
    // writes arrives whole.
    seen.lock().unwrap().clear();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /w/echo HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"world").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut echoed = [0u8; 10];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"helloworld");
    let (got, body) = seen.lock().unwrap()[0].clone();
    let got = got.to_ascii_lowercase();
    assert_eq!(got.matches("x-forwarded-for:").count(), 1, "{got}");
    assert!(
        got.contains("x-forwarded-for: 192.0.2.1, 192.0.2.2, 127.0.0.1\r\n"),
        "{got}"
    );
    assert_eq!(body, b"helloworld");

    // What the fast path once handed to hyper works: HTTP/1.0, a chunked upload, Expect: 100-continue, a large body.
    let all = raw_exchange(&addr, b"GET /w/echo?old HTTP/1.0\r\nHost: h\r\n\r\n").await;
    assert!(
        all.starts_with("HTTP/1.") && all.contains(" 200 ") && all.contains("old"),
        "{all}"
    );
    seen.lock().unwrap().clear();
    let all = raw_exchange(
        &addr,
        b"POST /w/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n chunk\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        all.starts_with("HTTP/1.1 200") && all.ends_with("hello chunk"),
        "{all}"
    );
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /w/echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await
    .unwrap();
    let cont = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap();
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
    s.write_all(b"ping").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let big = vec![b'x'; 200 * 1024];
    let resp = c
        .post(format!("{}/w/echo", r.proxy))
        .header("Host", "h")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), big.len());
    let seen = seen.lock().unwrap();
    let bodies: Vec<&[u8]> = seen.iter().map(|(_, b)| b.as_slice()).collect();
    assert!(
        bodies.contains(&&b"hello chunk"[..]) && bodies.contains(&&b"ping"[..]),
        "{:?}",
        seen.len()
    );
    assert!(bodies.iter().any(|b| b.len() == big.len()));
}

/// Bamboo stores any HAProxy ACL: rules on every fetch that depends only on the request route as HAProxy would
/// route them, over HTTP/1, and over TLS on HTTP/1 and HTTP/2.
#[tokio::test(flavor = "multi_thread")]
async fn rules_on_every_request_fetch_route() {
    let m = cluster().await;
    let apps = [
        ("/a-url", "url_beg /api/"),
        ("/a-host", "req.hdr(host) -i a.com"),
        ("/a-cookie", "cook(canary) -m found"),
        ("/a-param", "urlp(v) 2"),
        ("/a-header", "hdr_cnt(x-hop) ge 2"),
        ("/a-query", "query -m reg ^debug"),
        ("/a-sni", "ssl_fc_sni -i sni.example"),
        ("/a-ssl", "ssl_fc"),
    ];
    for (id, _) in apps {
        plain_app(&m, id, 1).await;
    }
    // Last by id, so every other rule is tried first.
    plain_app(&m, "/z-port", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (pem, key, _) = cert(&["sni.example", "other.example"]);
    std::fs::write(dir.path().join("default.pem"), format!("{pem}{key}")).unwrap();
    let url = m.url();
    let certs = dir.path().display().to_string();
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--https-bind",
        "127.0.0.1:0",
        "--tls-cert-dir",
        certs.as_str(),
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let c = reqwest::Client::new();
    for (id, acl) in apps {
        let body = serde_json::json!({"id": id, "acl": acl}).to_string();
        let (s, answer) = send(
            "POST",
            &format!("{}/api/services", r.api),
            Some(&body),
            None,
        )
        .await;
        assert_eq!(s, 200, "{acl}: {answer}");
    }
    // The port the client connected to, for dst_port: one more rule, for the plain listener only.
    let port = r.proxy.rsplit(':').next().unwrap_or_default().to_string();
    let body = serde_json::json!({"id": "/z-port", "acl": format!("dst_port {port}")}).to_string();
    assert_eq!(
        send(
            "POST",
            &format!("{}/api/services", r.api),
            Some(&body),
            None
        )
        .await
        .0,
        200
    );

    wait_routed(&c, &r, "h", "/api/x", "/a-url").await;
    let plain: &[Case] = &[
        ("h", "/api/v1?x=1", &[], "/a-url"),
        ("A.com", "/x", &[], "/a-host"),
        ("h", "/x", &[("cookie", "a=b; canary=1")], "/a-cookie"),
        ("h", "/x?u=1&v=2", &[], "/a-param"),
        ("h", "/x", &[("x-hop", "a, b")], "/a-header"),
        ("h", "/x?debug=1", &[], "/a-query"),
        ("h", "/x?v=3", &[], "/z-port"),
    ];
    for (host, path, headers, app) in plain {
        let mut req = c.get(format!("{}{path}", r.proxy)).header("Host", *host);
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("proxy answers");
        let (status, body) = (resp.status(), resp.text().await.unwrap_or_default());
        assert_eq!(
            (status.as_u16(), task_app(&body)),
            (200, *app),
            "{host}{path} {headers:?}"
        );
    }
    let https: std::net::SocketAddr = r
        .https
        .as_deref()
        .expect("https listener")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    for h1 in [false, true] {
        let mut b = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve("sni.example", https)
            .resolve("other.example", https);
        if h1 {
            b = b.http1_only();
        }
        let tls = b.build().unwrap();
        for (name, app) in [("sni.example", "/a-sni"), ("other.example", "/a-ssl")] {
            let resp = tls
                .get(format!("https://{name}:{}/x", https.port()))
                .send()
                .await
                .expect("https answers");
            let version = resp.version();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(task_app(&body), app, "{name} over {version:?}");
        }
    }
}

/// (Host, target, extra headers, the app that should answer).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// The app that answered (`<app> <task>`).
fn task_app(body: &str) -> &str {
    body.split_whitespace().next().unwrap_or_default()
}
