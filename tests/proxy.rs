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
    assert!(r.log().contains("retrying on another"), "{}", r.log());

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
