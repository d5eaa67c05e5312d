//! What an on-call engineer leans on, end to end through the real binary: honest readiness, Marathon over HTTPS
//! with a private CA and client certificates, errors that name their cause, logs and metrics pipelines can use.

mod common;

use common::{cluster, free_port, plain_app, start_against, Rattan, FAST};
use rattan::dev::simulator::AppSpec;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `path` on the API until `pred(status, body)` holds (10 s), and returns what it saw.
async fn wait_api(r: &Rattan, path: &str, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let t = Instant::now();
    loop {
        let (s, b) = r.get(path).await;
        if pred(s, &b) {
            return (s, b);
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{path}: {s} {b}\nlog:\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check<'a>(readyz: &'a Value, name: &str) -> &'a Value {
    readyz["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {readyz}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_says_why_and_never_drops_traffic() {
    // Marathon never reached: every request would 404, so not ready, and the cause named.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = start_against(&dead, &[]);
    let (_, body) = wait_api(&r, "/status", |s, b| s == 503 && b.contains("refused")).await;
    assert!(body.starts_with("NOT READY\n"), "{body}");
    assert!(body.contains("marathon: no snapshot yet"), "{body}");
    assert_eq!(r.get("/healthz").await.0, 200);
    let (s, b) = r.get("/readyz").await;
    assert_eq!(s, 503);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["ready"], false);
    let m = check(&v, "marathon");
    assert_eq!(
        (m["state"].as_str(), m["blocks"].as_bool()),
        (Some("failing"), Some(true))
    );
    assert!(m["since"].as_f64().unwrap() > 1.7e9, "{m}");
    assert!(m["last_ok"].is_null());
    assert_eq!(check(&v, "rules")["state"], "ok");
    assert_eq!(r.metric("rattan_ready").await, 0.0);
    drop(r);

    // A damaged rules file: not ready, though Marathon is fine.
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("rules.json"), "{not json").unwrap();
    let dir = data.path().to_str().unwrap();
    let r = start_against(&m.url(), &["--data-dir", dir]);
    let (_, body) = wait_api(&r, "/status", |s, b| s == 503 && !b.contains("marathon")).await;
    assert!(
        body.contains("rules: rules file") && body.contains("damaged"),
        "{body}"
    );
    drop(r);

    // Stale: Marathon answers 503 for longer than --max-staleness. Not ready, and the last table still routes.
    let r = start_against(&m.url(), &["--max-staleness", "1s"]);
    wait_api(&r, "/status", |s, b| s == 200 && b == "OK").await;
    assert_eq!(r.metric("rattan_ready").await, 1.0);
    let through = |r: &Rattan| {
        let url = format!("{}/web", r.proxy);
        async move {
            reqwest::get(url)
                .await
                .map(|x| x.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(through(&r).await, 200);
    m.fail_with(Some(503));
    let (_, b) = wait_api(&r, "/readyz", |s, _| s == 503).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    let mc = check(&v, "marathon");
    assert_eq!(mc["state"], "degraded");
    let detail = mc["detail"].as_str().unwrap();
    assert!(
        detail.contains("--max-staleness") && detail.contains("HTTP 503"),
        "{detail}"
    );
    assert_eq!(through(&r).await, 200, "the last good table keeps routing");
    m.fail_with(None);
    wait_api(&r, "/status", |s, _| s == 200).await;
}

/// A CA, and certificates it signs: (CA PEM, [(cert PEM, key PEM)]) for `subjects` (first name is the CN).
fn pki(subjects: &[&str]) -> (String, Vec<(String, String)>) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rattan test CA");
    ca_params.distinguished_name = dn;
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaves = subjects
        .iter()
        .map(|s| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![s.to_string()]).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, *s);
            p.distinguished_name = dn;
            let c = p.signed_by(&key, &ca, &ca_key).unwrap();
            (c.pem(), key.serialize_pem())
        })
        .collect();
    (ca.pem(), leaves)
}

/// A TLS front for `upstream` (Marathon as an HTTPS endpoint): serves `cert`, and with `client_ca` asks every
/// client for a certificate that CA signed (mutual TLS). Returns its port.
async fn tls_front(cert: &(String, String), client_ca: Option<&str>, upstream: String) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_slice(cert.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn marathon_over_https_with_a_private_ca_and_client_certificates() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let upstream = m
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (ca, leaves) = pki(&["localhost", "rattan-client"]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (ca_file, cert, key) = (
        path("ca.pem", &ca),
        path("client.pem", &leaves[1].0),
        path("client.key", &leaves[1].1),
    );
    let port = tls_front(&leaves[0], Some(&ca), upstream).await;
    let marathon = format!("https://localhost:{port}");

    // The CA and the client certificate: the snapshot (REST) and the event stream both come over TLS.
    let r = start_against(
        &marathon,
        &[
            "--marathon-ca",
            &ca_file,
            "--marathon-client-cert",
            &cert,
            "--marathon-client-key",
            &key,
        ],
    );
    wait_api(&r, "/status", |s, _| s == 200).await;
    r.wait_stream().await;
    assert!(r.metric("rattan_marathon_sse_connects_total").await >= 1.0);
    m.scale("/web", 2).await;
    r.wait_state("the event over TLS", 10, |s| {
        common::task_count(s, "/web") == 2
    })
    .await;
    drop(r);

    // No CA: verification fails, and the error names the certificate and why.
    let r = start_against(
        &marathon,
        &[
            "--marathon-client-cert",
            &cert,
            "--marathon-client-key",
            &key,
        ],
    );
    let (_, body) = wait_api(&r, "/status", |s, b| s == 503 && b.contains("TLS")).await;
    assert!(
        body.contains("TLS verification of localhost (CN=localhost) failed")
            && body.contains("UnknownIssuer"),
        "{body}"
    );
    r.wait_log("marathon event stream failed", 10).await;
    assert!(r.log().contains("CN=localhost"), "{}", r.log());
    drop(r);

    // The CA but no client certificate: Marathon refuses the handshake, and that is what is said.
    let r = start_against(&marathon, &["--marathon-ca", &ca_file]);
    let (_, body) = wait_api(&r, "/status", |s, b| {
        s == 503 && b.contains("no snapshot yet")
    })
    .await;
    assert!(body.to_lowercase().contains("certificate"), "{body}");
    drop(r);

    // A file that is not there is refused at start, named.
    let mut bad = Rattan::try_start(&[
        "--marathon",
        &marathon,
        "--marathon-ca",
        "/nonexistent/ca.pem",
    ]);
    assert!(bad.wait_exit(10).is_some_and(|s| !s.success()));
    assert!(
        bad.log().contains("--marathon-ca /nonexistent/ca.pem"),
        "{}",
        bad.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_trouble_is_named_at_once() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let refused = format!("127.0.0.1:{}", free_port());
    let r = start_against(&m.url(), &["--zk", &refused]);
    // At once, not after the session timeout: the first attempt is logged with its cause.
    r.wait_log("ZooKeeper unreachable", 3).await;
    assert!(r.log().contains("refused"), "{}", r.log());
    let (_, b) = wait_api(&r, "/readyz", |s, _| s == 503).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(check(&v, "rules")["state"], "failing");
    assert!(
        check(&v, "zookeeper")["detail"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{v}"
    );
    assert_eq!(r.metric("rattan_zookeeper_connected").await, 0.0);
    drop(r);
    let r = start_against(&m.url(), &["--zk", "no-such-host.invalid:2181"]);
    r.wait_log("DNS lookup failed", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_request_ids_json_logs_and_metrics() {
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/web".into(),
        instances: 2,
        ports: 2,
        ..AppSpec::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let file_arg = file.to_str().unwrap().to_string();
    let mut args = vec!["--marathon", m.url().leak() as &str];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&[
        "--access-log",
        "json",
        "--access-log-file",
        &file_arg,
        "--log-format",
        "json",
    ]);
    let r = Rattan::start(&args);
    wait_api(&r, "/status", |s, _| s == 200).await;
    let c = reqwest::Client::new();
    let url = format!("{}/web", r.proxy);
    // A request id the client sent goes on as it is; one is made for a request without.
    let resp = c
        .get(&url)
        .header("x-request-id", "client-chosen-1")
        .header("user-agent", "ops-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-req-x-request-id"], "client-chosen-1");
    let resp = c.get(&url).send().await.unwrap();
    let made = resp.headers()["x-req-x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    assert_eq!(c.post(&url).body("x").send().await.unwrap().status(), 200);
    // HTTP/2 (prior knowledge): the host is :authority.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert_eq!(h2.get(&url).send().await.unwrap().status(), 200);

    let t = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 4 || t.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["request_id"], "client-chosen-1");
    assert_eq!(first["user_agent"], "ops-test/1");
    assert_eq!(
        (first["status"].as_u64(), first["method"].as_str()),
        (Some(200), Some("GET"))
    );
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["app"], "/web");
    assert!(first["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    for key in ["connect_ms", "first_byte_ms", "duration_ms"] {
        let v = first[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {first}"));
        // Milliseconds to the microsecond: never a float's long tail.
        assert!(
            first[key]
                .to_string()
                .split('.')
                .nth(1)
                .is_none_or(|d| d.len() <= 3),
            "{first}"
        );
        assert!(v >= 0.0);
    }
    assert_eq!(first["retries"], 0);
    assert_eq!(lines[1]["request_id"], made.as_str());
    assert_eq!(
        (lines[2]["method"].as_str(), lines[2]["bytes_in"].as_u64()),
        (Some("POST"), Some(1))
    );
    let h2_line = &lines[3];
    assert_eq!(h2_line["protocol"], "HTTP/2.0");
    assert!(
        h2_line["host"]
            .as_str()
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{h2_line}"
    );
    assert!(
        h2_line["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 16),
        "{h2_line}"
    );
    assert!(h2_line["first_byte_ms"].as_f64().is_some(), "{h2_line}");

    // Nothing on stdout (the access log went to the file); every stderr line is a JSON object.
    assert_eq!(r.out.lock().unwrap().as_str(), "");
    let log = r.log();
    assert!(!log.is_empty());
    for l in log.lines() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not JSON: {l}");
    }

    // Metrics: by code and method (OTHER for anything else), build info, the process, every port index.
    assert!(
        r.metric("rattan_http_requests_total{app=\"/web\",code=\"200\",method=\"GET\"}")
            .await
            >= 3.0
    );
    assert_eq!(
        r.metric("rattan_http_requests_total{app=\"/web\",code=\"200\",method=\"POST\"}")
            .await,
        1.0
    );
    let (s, _) = common::send("BREW", &format!("{}/web", r.proxy), None, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        r.metric("rattan_http_requests_total{app=\"/web\",method=\"OTHER\"}")
            .await,
        1.0
    );
    assert_eq!(
        r.metric(&format!(
            "rattan_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ))
        .await,
        1.0
    );
    assert!(r.metric("process_resident_memory_bytes").await > 1e6);
    assert!(r.metric("process_open_fds").await > 5.0);
    for idx in ["0", "1"] {
        assert_eq!(
            r.metric(&format!(
                "rattan_app_healthy_backends{{app=\"/web\",port_index=\"{idx}\"}}"
            ))
            .await,
            2.0
        );
    }

    // A backend that refuses connections: the request goes to the other one, counted as a retry.
    let live = m.tasks("/web")[0]["ports"][0].as_u64().unwrap() as u16;
    common::app_at(&m, "/retry", free_port(), &[free_port(), live]);
    m.emit(serde_json::json!({"eventType": "api_post_event", "appDefinition": {"id": "/retry"}}));
    let retry_url = format!("{}/retry", r.proxy);
    let t = Instant::now();
    while r.metric("rattan_http_retries_total{app=\"/retry\"}").await < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no retry counted");
        let _ = c.get(&retry_url).send().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.contains("\"/retry\"") && l.contains("\"retries\":1") && l.contains("\"status\":200")
        })
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no retry in the access log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An audit line for every rule change: who, what, before and after.
    let api = format!("{}/api/services", r.api);
    let rule = r#"{"id":"/web","acl":"path_beg /web","config":{"sticky":"true"}}"#;
    for body in [rule, r#"{"id":"/web","acl":"path_beg /w"}"#] {
        let resp = c
            .post(&api)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        c.delete(format!("{api}/web"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let t = Instant::now();
    let audit: Vec<Value> = loop {
        let found: Vec<Value> = r
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "rattan::audit")
            .collect();
        if found.len() >= 3 || t.elapsed() > Duration::from_secs(5) {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let actions: Vec<&str> = audit.iter().filter_map(|v| v["action"].as_str()).collect();
    assert_eq!(actions, ["create", "update", "delete"], "{audit:?}");
    assert_eq!(audit[0]["who"], "127.0.0.1");
    assert_eq!(audit[0]["before"], "null");
    assert!(
        audit[1]["before"].as_str().unwrap().contains("sticky"),
        "{:?}",
        audit[1]
    );
    assert!(
        audit[1]["after"].as_str().unwrap().contains("path_beg /w"),
        "{:?}",
        audit[1]
    );
    assert_eq!(audit[2]["after"], "null");
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_access_log_on_stdout_and_banners_on_stderr() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let r = start_against(&m.url(), &["--access-log", "combined"]);
    wait_api(&r, "/status", |s, _| s == 200).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/web?q=1", r.proxy))
        .header("referer", "http://example.com/\"x\"")
        .header("user-agent", "ua/1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t = Instant::now();
    while r.out.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = r.out.lock().unwrap().clone();
    assert_eq!(
        out.lines().count(),
        1,
        "stdout is the access log only: {out}"
    );
    let line = out.lines().next().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with(
            "\"GET /web?q=1 HTTP/1.1\" 200 19 \"http://example.com/\\\"x\\\"\" \"ua/1\""
        ) || line.contains("\"GET /web?q=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        line.ends_with(" \"http://example.com/\\\"x\\\"\" \"ua/1\""),
        "{line}"
    );
    assert!(
        r.log().contains("rattan: api listening on http://"),
        "{}",
        r.log()
    );
}

#[test]
fn bad_logging_settings_are_refused_by_name() {
    for (args, key) in [
        (&["--log-level", "rattan=loud"][..], "log-level"),
        (&["--log-format", "xml"][..], "log-format"),
        (&["--max-staleness", "0s"][..], "max-staleness"),
        (&["--access-log", "fancy"][..], "access-log"),
        (
            &["--marathon-client-cert", "/x.pem"][..],
            "marathon-client-key",
        ),
    ] {
        // `timeout`: a setting wrongly accepted must fail the test, not hang it.
        let out = std::process::Command::new("timeout")
            .args([
                "10",
                env!("CARGO_BIN_EXE_rattan"),
                "--marathon",
                "http://127.0.0.1:1",
            ])
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{args:?}: {err}");
    }
}

#[test]
fn completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rattan"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["completions", "bash"]).contains("--marathon-client-cert"));
    assert!(run(&["completions", "zsh"]).contains("#compdef rattan"));
    assert!(run(&["completions", "fish"]).contains("complete -c rattan"));
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH rattan"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("max\\-staleness") || man.contains("max-staleness"));
}

/// A config file's relative paths name files beside it: the example Bamboo config starts from any directory.
#[test]
fn a_config_file_works_from_another_directory() {
    let example = format!("{}/config/bamboo.example.json", env!("CARGO_MANIFEST_DIR"));
    let elsewhere = tempfile::tempdir().unwrap();
    for mode in [&["--mode", "proxy"][..], &[][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rattan"))
            .current_dir(elsewhere.path())
            .args([
                "--config",
                &example,
                "--api-bind",
                "127.0.0.1:0",
                "--http-bind",
                "127.0.0.1:0",
            ])
            .args([
                "--haproxy-output",
                elsewhere.path().join("haproxy.cfg").to_str().unwrap(),
            ])
            .args(["--data-dir", elsewhere.path().to_str().unwrap()])
            .args(mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let mut seen = String::new();
        let started = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l.starts_with("rattan: api listening") => break true,
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                Err(_) => break false,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            started,
            "{mode:?}: did not start from another directory:\n{seen}"
        );
    }
}

/// A stored rule this proxy cannot compile (written by Bamboo or a sidecar instance) does not silently take the
/// app's label route away: the label route serves, and the route list says which source and why.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_rule_that_does_not_compile_keeps_the_label_route_and_says_so() {
    let m = cluster().await;
    common::labeled_app(&m, "/web", 1, &[("HAPROXY_0_VHOST", "web.example.com")]).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("rules.json"),
        r#"{"/web":{"Id":"/web","Acl":"nbsrv(web) gt 0","Config":{"Acl":"nbsrv(web) gt 0"}}}"#,
    )
    .unwrap();
    let r = start_against(&m.url(), &["--data-dir", data.path().to_str().unwrap()]);
    wait_api(&r, "/status", |s, _| s == 200).await;
    let (_, body) = wait_api(&r, "/api/routes", |_, b| b.contains("web.example.com")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let route = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["app"] == "/web")
        .unwrap();
    assert_eq!(route["source"], "label", "{v}");
    let why = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["app_id"] == "/web")
        .unwrap_or_else(|| panic!("no error for /web: {v}"));
    let why = why["error"].as_str().unwrap();
    assert!(
        why.contains("stored rule not used") && why.contains("nbsrv"),
        "{why}"
    );
    assert!(r.metric("rattan_app_rule_errors{app=\"/web\"}").await >= 1.0);
    let resp = reqwest::Client::new()
        .get(format!("{}/", r.proxy))
        .header("host", "web.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().starts_with("/web "));
}

/// `redirect_https` without an HTTPS listener would send clients where nothing listens: reported, not done.
#[tokio::test(flavor = "multi_thread")]
async fn redirect_https_without_an_https_listener_is_reported() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let r = start_against(&m.url(), &[]);
    wait_api(&r, "/status", |s, _| s == 200).await;
    let (s, body) = common::send(
        "POST",
        &format!("{}/api/services", r.api),
        Some(r#"{"id":"/web","acl":"path_beg /web","config":{"redirect_https":"true"}}"#),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (_, body) = wait_api(&r, "/api/routes", |_, b| b.contains("--https-bind")).await;
    assert!(
        body.contains("redirect_https is set but this proxy has no HTTPS listener"),
        "{body}"
    );
    r.wait_log("redirect_https is set", 5).await;
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/web", r.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "served, not redirected to a closed port"
    );
}
