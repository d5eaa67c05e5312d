//! marathon-lb's service-port listeners end to end: the real binary, the simulator's apps with marathon-lb labels,
//! their tasks real HTTP servers that echo each request header back as `x-req-<name>`.

mod common;

use common::{cluster, free_port, labels, start_against, wait_metric, wait_tcp, Rattan};
use rattan::dev::simulator::{AppSpec, Simulator};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.0 request on a new connection to a loopback port; the whole answer (the server closes).
async fn get_on(port: u16, host: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("port open");
    let req = format!("GET /x HTTP/1.0\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_lowercase()
}

/// Waits (10 s at most) for `port` to answer with a body from `app`.
async fn wait_served(port: u16, app: &str, r: &Rattan) -> String {
    let mut got = String::new();
    r.wait_until(&format!("served {app} on port {port}"), async || {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            return false;
        }
        got = get_on(port, "anything.example").await;
        got.contains(&format!("\r\n\r\n{app} "))
    })
    .await;
    got
}

async fn app(m: &Simulator, id: &str, health_check: bool, pairs: &[(&str, &str)]) {
    m.create_app(AppSpec {
        id: id.into(),
        instances: 1,
        health_check,
        labels: labels(pairs),
        ..AppSpec::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_port_of_a_labelled_app_gets_its_listener() {
    let m = cluster().await;
    let [tcp, http_vhost, http_check, service, taken, other_group, disabled, forced] =
        [(); 8].map(|()| free_port());
    // The most common marathon-lb app: a group, no vhost, no HTTP health check → TCP on its port.
    app(
        &m,
        "/ext",
        false,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_PORT", &tcp.to_string()),
        ],
    )
    .await;
    // A vhost makes the port HTTP: a frontend for that one app, whatever Host says.
    let port = http_vhost.to_string();
    app(
        &m,
        "/web",
        false,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_VHOST", "web.example.com"),
            ("HAPROXY_0_PORT", &port),
        ],
    )
    .await;
    // So does a Marathon health check whose protocol is HTTP.
    app(
        &m,
        "/checked",
        true,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_PORT", &http_check.to_string()),
        ],
    )
    .await;
    // No HAPROXY_{n}_PORT: the service port itself.
    m.create_app(AppSpec {
        id: "/svc".into(),
        instances: 1,
        labels: labels(&[("HAPROXY_GROUP", "external")]),
        service_ports: vec![u32::from(service)],
        ..AppSpec::default()
    })
    .await;
    // A second claim on a port: the first by app id keeps it, this one is reported.
    app(
        &m,
        "/zz-late",
        false,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_PORT", &tcp.to_string()),
        ],
    )
    .await;
    // Not served: another group, disabled, a bind address that does not parse.
    app(
        &m,
        "/internal",
        false,
        &[
            ("HAPROXY_GROUP", "internal"),
            ("HAPROXY_0_PORT", &other_group.to_string()),
        ],
    )
    .await;
    app(
        &m,
        "/off",
        false,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_ENABLED", "false"),
            ("HAPROXY_0_PORT", &disabled.to_string()),
        ],
    )
    .await;
    app(
        &m,
        "/bad-bind",
        false,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_BIND_ADDR", "not-an-ip"),
            ("HAPROXY_0_PORT", &taken.to_string()),
        ],
    )
    .await;
    // HAPROXY_{n}_MODE beats what the health check says.
    app(
        &m,
        "/forced-tcp",
        true,
        &[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_MODE", "TCP"),
            ("HAPROXY_0_BIND_ADDR", "127.0.0.1"),
            ("HAPROXY_0_PORT", &forced.to_string()),
        ],
    )
    .await;
    let appid = free_port();
    let appid_bind = format!("127.0.0.1:{appid}");
    let r = start_against(
        &m.url(),
        &[
            "--group",
            "external",
            "--tcp-bind-address",
            "127.0.0.1",
            "--http-appid-bind",
            &appid_bind,
        ],
    );

    // TCP mode: the bytes as the client sent them, no forwarded headers.
    let got = wait_served(tcp, "/ext", &r).await;
    assert!(!got.contains("x-req-x-forwarded-for"), "{got}");
    let got = wait_served(forced, "/forced-tcp", &r).await;
    assert!(!got.contains("x-req-x-forwarded-for"), "{got}");
    // HTTP mode: forwarded headers, the port the client used, the Host it sent.
    for (port, id) in [(http_vhost, "/web"), (http_check, "/checked")] {
        let got = wait_served(port, id, &r).await;
        assert!(got.contains("x-req-x-forwarded-for: 127.0.0.1"), "{got}");
        assert!(
            got.contains(&format!("x-req-x-forwarded-port: {port}")),
            "{got}"
        );
        assert!(got.contains("x-req-host: anything.example"), "{got}");
    }
    wait_served(service, "/svc", &r).await;
    // The vhost app is on the shared frontend too.
    let shared: u16 = r
        .proxy
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("proxy port");
    let got = get_on(shared, "web.example.com").await;
    assert!(got.contains("\r\n\r\n/web "), "{got}");
    assert!(
        got.contains(&format!("x-req-x-forwarded-port: {shared}")),
        "{got}"
    );

    // The app-id frontend: the app the header names, at its first HTTP port.
    let by_id = |id: &str| {
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Marathon-App-Id: {id}\r\nConnection: close\r\n\r\n")
    };
    let (status, text) = ask(appid, &by_id("/checked")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\r\n\r\n/checked "), "{text}");
    assert!(
        text.contains(&format!("x-req-x-forwarded-port: {appid}")),
        "{text}"
    );
    let (status, text) = ask(appid, &by_id("/ext")).await;
    assert_eq!(status, 404, "a TCP-only app has no HTTP port: {text}");
    assert!(text.contains("/ext"), "{text}");
    assert_eq!(
        ask(
            appid,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .0,
        400
    );

    for port in [other_group, disabled, taken] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} is open"
        );
    }
    // What is not served says why: on /api/routes and as a metric.
    let (status, routes) = r.get("/api/routes").await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&routes).expect("json");
    let errors = routes["errors"].to_string();
    assert!(
        errors.contains("/zz-late") && errors.contains("already taken by /ext"),
        "{errors}"
    );
    assert!(
        errors.contains("/bad-bind") && errors.contains("not-an-ip"),
        "{errors}"
    );
    wait_metric(&r, "rattan_port_errors", 2.0).await;
    wait_metric(&r, "rattan_tcp_listeners", 3.0).await;
    wait_metric(&r, "rattan_http_port_listeners", 2.0).await;
    let ports = routes["ports"].to_string();
    assert!(ports.contains("\"mode\":\"http\""), "{ports}");

    // The port follows the app: a label change moves it to HTTP, removing the app closes it.
    m.remove_app("/ext");
    // The port goes to the next claimant.
    let got = wait_served(tcp, "/zz-late", &r).await;
    assert!(!got.contains("x-req-x-forwarded-for"), "{got}");
    m.remove_app("/zz-late");
    wait_tcp(tcp, &r, false).await;
}

/// A request through rattan's shared HTTP frontend or one port: (status, lower-cased head and body).
async fn ask(port: u16, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("port open");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("a port")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn functional_labels_guard_rewrite_and_order_routes() {
    let m = cluster().await;
    let sha512 = pwhash::sha512_crypt::hash_with("$6$saltsalt", "s3cret").expect("hash");
    let guarded_port = free_port();
    let auth = format!("ops:alice:{sha512}");
    // Auth on the vhost frontend and on the app's own port.
    app(
        &m,
        "/guarded",
        false,
        &[
            ("HAPROXY_0_VHOST", "guarded.example"),
            ("HAPROXY_0_AUTH", &auth),
            ("HAPROXY_0_PORT", &guarded_port.to_string()),
        ],
    )
    .await;
    // An _AUTH that does not parse: that route is not served open; the app's other port still routes.
    m.create_app(AppSpec {
        id: "/broken-auth".into(),
        instances: 1,
        ports: 2,
        labels: labels(&[
            ("HAPROXY_0_VHOST", "broken.example"),
            ("HAPROXY_0_AUTH", "ops:alice"),
            ("HAPROXY_1_VHOST", "fine.example"),
        ]),
        ..AppSpec::default()
    })
    .await;
    // Allow lists: HTTP gets 403, TCP a closed connection.
    let tcp_denied = free_port();
    app(
        &m,
        "/private",
        false,
        &[
            ("HAPROXY_0_VHOST", "private.example"),
            (
                "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
                "10.0.0.0/8 192.168.1.1",
            ),
        ],
    )
    .await;
    app(
        &m,
        "/private-tcp",
        false,
        &[
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_PORT", &tcp_denied.to_string()),
            ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/8"),
        ],
    )
    .await;
    // Path rewriting both ways, and the root redirect.
    app(
        &m,
        "/rewritten",
        false,
        &[
            ("HAPROXY_0_VHOST", "rw.example"),
            ("HAPROXY_0_PATH", "/api"),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/api"),
            ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/api"),
        ],
    )
    .await;
    app(
        &m,
        "/dash",
        false,
        &[
            ("HAPROXY_0_VHOST", "dash.example"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/dashboard"),
            ("HAPROXY_0_USE_HSTS", "true"),
            // A HAProxy fragment: reported as ignored, never an error.
            (
                "HAPROXY_0_BACKEND_HEAD",
                "backend {backend}\n  balance {balance}\n",
            ),
        ],
    )
    .await;
    // Equal specificity: the larger weight wins, whatever the app ids say.
    app(
        &m,
        "/a-light",
        false,
        &[("HAPROXY_0_VHOST", "same.example")],
    )
    .await;
    app(
        &m,
        "/b-heavy",
        false,
        &[
            ("HAPROXY_0_VHOST", "same.example"),
            ("HAPROXY_0_BACKEND_WEIGHT", "5"),
        ],
    )
    .await;
    m.create_app(AppSpec {
        id: "/sourced".into(),
        instances: 3,
        labels: labels(&[
            ("HAPROXY_0_VHOST", "sourced.example"),
            ("HAPROXY_0_BALANCE", "source"),
        ]),
        ..AppSpec::default()
    })
    .await;
    let r = start_against(
        &m.url(),
        &[
            "--tcp-bind-address",
            "127.0.0.1",
            "--trusted-proxies",
            "127.0.0.1/32",
            "--https-bind",
            "127.0.0.1:0",
        ],
    );
    let front = port_of(&r.proxy);
    let get = |host: &str, path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
    };
    wait_tcp(guarded_port, &r, true).await;

    // Auth: none or wrong → 401 with the realm; right → the app, on the vhost and on the port alike.
    for port in [front, guarded_port] {
        let (status, text) = ask(port, &get("guarded.example", "/", "")).await;
        assert_eq!(status, 401, "{text}");
        assert!(
            text.contains("www-authenticate: basic realm=\"ops\""),
            "{text}"
        );
        let wrong = format!("Authorization: Basic {}\r\n", basic("alice", "nope"));
        assert_eq!(ask(port, &get("guarded.example", "/", &wrong)).await.0, 401);
        let right = format!("Authorization: Basic {}\r\n", basic("alice", "s3cret"));
        let (status, text) = ask(port, &get("guarded.example", "/", &right)).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("/guarded "), "{text}");
    }
    // The broken label: reported, that vhost has no route; the same app's other port routes.
    assert_eq!(ask(front, &get("broken.example", "/", "")).await.0, 404);
    let (status, text) = ask(front, &get("fine.example", "/", "")).await;
    assert_eq!(status, 200, "{text}");
    let (_, routes) = r.get("/api/routes").await;
    assert!(
        routes.contains("/broken-auth") && routes.contains("three fields"),
        "{routes}"
    );
    let routes: serde_json::Value = serde_json::from_str(&routes).expect("json");
    assert_eq!(
        routes["ignored"],
        serde_json::json!([{"app_id": "/dash", "label": "HAPROXY_0_BACKEND_HEAD"}])
    );
    assert!(
        !routes["errors"].to_string().contains("/dash"),
        "{}",
        routes["errors"]
    );

    // Allow lists: this client is 127.0.0.1.
    assert_eq!(ask(front, &get("private.example", "/", "")).await.0, 403);
    // A trusted proxy's X-Forwarded-For names the client.
    let forwarded = "X-Forwarded-For: 10.1.2.3\r\n";
    let (status, text) = ask(front, &get("private.example", "/", forwarded)).await;
    assert_eq!(status, 200, "{text}");
    // Only the last untrusted hop counts: a client cannot claim an address by prepending it.
    let spoofed = "X-Forwarded-For: 10.1.2.3, 172.16.0.1\r\n";
    assert_eq!(
        ask(front, &get("private.example", "/", spoofed)).await.0,
        403
    );
    wait_tcp(tcp_denied, &r, true).await;
    let (status, text) = ask(tcp_denied, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        (status, text.as_str()),
        (0, ""),
        "a denied TCP client gets nothing"
    );

    // Proxypass: the backend sees the path without the prefix; revproxy: its redirect comes back under it.
    let (status, text) = ask(front, &get("rw.example", "/api/users?x=1", "")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("x-req-target: /users?x=1"), "{text}");
    let (status, text) = ask(front, &get("rw.example", "/api/redirect", "")).await;
    assert_eq!(status, 302, "{text}");
    assert!(text.contains("location: /api/login"), "{text}");

    // The root redirect, and only the root.
    let (status, text) = ask(front, &get("dash.example", "/", "")).await;
    assert_eq!(status, 301, "{text}");
    assert!(text.contains("location: /dashboard"), "{text}");
    let (status, text) = ask(front, &get("dash.example", "/dashboard", "")).await;
    assert_eq!(status, 200, "{text}");
    // HSTS on HTTPS only.
    assert!(!text.contains("strict-transport-security"), "{text}");
    let https = r.https.clone().expect("https listener");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        // HTTP/2 would send 127.0.0.1 as :authority beside the Host asked for (a 400).
        .http1_only()
        .build()
        .expect("client");
    let resp = client
        .get(format!("{https}/dashboard"))
        .header("Host", "dash.example")
        .send()
        .await
        .expect("https answers");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=15768000")
    );

    // Weight.
    let (status, text) = ask(front, &get("same.example", "/", "")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("/b-heavy "), "{text}");

    // balance source: one client, one task, connection after connection.
    let task = |text: &str| {
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let first = task(&ask(front, &get("sourced.example", "/", "")).await.1);
    assert!(first.starts_with("/sourced "), "{first}");
    for _ in 0..10 {
        assert_eq!(
            task(&ask(front, &get("sourced.example", "/", "")).await.1),
            first
        );
    }

    // A rule stored through the API reaches the same features by its config keys.
    let rule = format!(
        r#"{{"id":"/a-light","acl":"hdr(host) -i api.example","config":{{"allowed_networks":"10.0.0.0/8","auth":"{auth}"}}}}"#
    );
    let (status, body) = common::send(
        "POST",
        &format!("{}/api/services", r.api),
        Some(&rule),
        None,
    )
    .await;
    assert!(status < 300, "{status} {body}");
    r.wait_until("applied the stored rule's allow list", async || {
        ask(front, &get("api.example", "/", "")).await.0 == 403
    })
    .await;
    let right = format!("Authorization: Basic {}\r\n", basic("alice", "s3cret"));
    let both = format!("{forwarded}{right}");
    assert_eq!(ask(front, &get("api.example", "/", forwarded)).await.0, 401);
    let (status, text) = ask(front, &get("api.example", "/", &both)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("/a-light "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_rule_that_does_not_compile_leaves_the_app_its_route() {
    let m = cluster().await;
    app(
        &m,
        "/labelled",
        false,
        &[("HAPROXY_0_VHOST", "labelled.example")],
    )
    .await;
    app(&m, "/plain", false, &[]).await;
    // Written by someone else (Bamboo on the same store): valid HAProxy, outside what the proxy compiles.
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("rules.json"),
        r#"{"/labelled":{"Id":"/labelled","Acl":"req.ver 1.1","Config":{"Acl":"req.ver 1.1"}},
            "/plain":{"Id":"/plain","Acl":"nbsrv(other) gt 0","Config":{"Acl":"nbsrv(other) gt 0"}}}"#,
    )
    .expect("write rules");
    let dir = data.path().display().to_string();
    let r = start_against(&m.url(), &["--data-dir", &dir]);
    let front = port_of(&r.proxy);
    let get = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    // Each keeps the route it has without the rule: the label's, Bamboo's default.
    let mut text = String::new();
    r.wait_until("routed both apps", async || {
        let (a, got) = ask(front, &get("labelled.example", "/")).await;
        text = got;
        a == 200 && ask(front, &get("x", "/plain/y")).await.0 == 200
    })
    .await;
    assert!(text.contains("/labelled "), "{text}");
    let (_, routes) = r.get("/api/routes").await;
    assert!(
        routes.contains("req.ver 1.1") && routes.contains("keeps its label or default route"),
        "{routes}"
    );
    wait_metric(&r, "rattan_route_errors", 2.0).await;
}

/// The certificate the server presented (the client needs `tls_info(true)`).
fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_cert_labels_join_the_sni_set() {
    let m = cluster().await;
    let c = rcgen::generate_simple_self_signed(vec!["labelled.example".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("labelled.pem");
    std::fs::write(
        &file,
        format!("{}{}", c.cert.pem(), c.key_pair.serialize_pem()),
    )
    .expect("write cert");
    let path = file.display().to_string();
    let own = free_port();
    app(
        &m,
        "/tls",
        false,
        &[
            ("HAPROXY_0_VHOST", "labelled.example"),
            ("HAPROXY_0_SSL_CERT", &path),
            ("HAPROXY_0_PORT", &own.to_string()),
        ],
    )
    .await;
    // A label naming something that is not a certificate: reported, nothing else changes.
    app(
        &m,
        "/odd",
        false,
        &[
            ("HAPROXY_0_VHOST", "odd.example"),
            ("HAPROXY_0_SSL_CERT", "/dev/zero"),
        ],
    )
    .await;
    let r = start_against(&m.url(), &["--https-bind", "127.0.0.1:0"]);
    let port = port_of(r.https.as_deref().expect("https"));
    // A new client each time: a new handshake, no session resumed from before the label was read.
    let client = || {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .tls_info(true)
            .resolve(
                "labelled.example",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .build()
            .expect("client")
    };
    let want = c.cert.der().to_vec();
    let mut answer = (0, String::new());
    r.wait_until("served the label's certificate", async || {
        let Ok(resp) = client()
            .get(format!("https://labelled.example:{port}/"))
            .send()
            .await
        else {
            return false;
        };
        let served = served_cert(&resp);
        if served != want {
            return false;
        }
        answer = (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        );
        true
    })
    .await;
    assert_eq!(answer.0, 200);
    assert!(answer.1.starts_with("/tls "), "{}", answer.1);
    r.wait_log("/dev/zero", 5).await;

    // The app's own port is TLS with that certificate too (marathon-lb's `bind … ssl crt`), HTTP/2 included,
    // and its requests are marked as HTTPS for the backend.
    let own_client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(
            "labelled.example",
            std::net::SocketAddr::from(([127, 0, 0, 1], own)),
        )
        .build()
        .expect("client");
    let mut seen = None;
    r.wait_until("TLS on the app's own port", async || {
        let Ok(resp) = own_client
            .get(format!("https://labelled.example:{own}/x"))
            .send()
            .await
        else {
            return false;
        };
        let served = served_cert(&resp);
        let proto = resp
            .headers()
            .get("x-req-x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen = Some((
            resp.status().as_u16(),
            served == want,
            proto,
            resp.version(),
        ));
        true
    })
    .await;
    assert_eq!(
        seen,
        Some((
            200,
            true,
            Some("https".to_string()),
            reqwest::Version::HTTP_2
        ))
    );
    // Never plain HTTP there.
    let plain = get_on(own, "labelled.example").await;
    assert!(!plain.contains("/tls "), "{plain}");
}

/// Idle HTTP ports must not hold the hand-off to the proxy away from busy ones: more ports than its places.
#[tokio::test(flavor = "multi_thread")]
async fn many_http_ports_are_all_served() {
    let m = cluster().await;
    let ports: Vec<u16> = (0..24).map(|_| free_port()).collect();
    for (i, p) in ports.iter().enumerate() {
        app(
            &m,
            &format!("/many/a{i:02}"),
            false,
            &[
                ("HAPROXY_0_MODE", "http"),
                ("HAPROXY_0_PORT", &p.to_string()),
            ],
        )
        .await;
    }
    let r = start_against(&m.url(), &["--tcp-bind-address", "127.0.0.1"]);
    wait_metric(&r, "rattan_http_port_listeners", 24.0).await;
    for (i, p) in ports.iter().enumerate().rev() {
        wait_served(*p, &format!("/many/a{i:02}"), &r).await;
    }
}

/// TCP-mode connections count against --max-connections, as HTTP ones do.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_ports_share_the_connection_limit() {
    let m = cluster().await;
    let port = free_port();
    app(
        &m,
        "/db",
        false,
        &[
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_PORT", &port.to_string()),
        ],
    )
    .await;
    // Three: one waits with the shared HTTP listener, two are left for clients.
    let r = start_against(
        &m.url(),
        &["--tcp-bind-address", "127.0.0.1", "--max-connections", "3"],
    );
    wait_tcp(port, &r, true).await;
    // The probe's connection is gone once the metric is back at zero.
    wait_metric(&r, "rattan_tcp_connections_active", 0.0).await;
    let req = b"GET / HTTP/1.1\r\nHost: db\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(req).await.expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("served")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("/db "));
        held.push(s);
    }
    // Past the limit: accepted by the kernel, not served.
    let mut third = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    third.write_all(req).await.expect("write");
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "served past the limit"
    );
    // One closes: the waiting one is served.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a place is free")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("/db "));
}
