//! marathon-lb's service-port listeners end to end: the real binary, the simulator's apps with marathon-lb labels,
//! their tasks real HTTP servers that echo each request header back as `x-req-<name>`.

mod common;

use common::{cluster, free_port, labels, start_against, wait_metric, wait_tcp, Rattan};
use rattan::dev::simulator::{AppSpec, Simulator};
use std::time::{Duration, Instant};
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
    let t = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            let got = get_on(port, "anything.example").await;
            if got.contains(&format!("\r\n\r\n{app} ")) {
                return got;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "port {port} never served {app}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let r = start_against(
        &m.url(),
        &["--group", "external", "--tcp-bind-address", "127.0.0.1"],
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
