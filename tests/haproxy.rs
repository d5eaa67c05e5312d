//! The HAProxy sidecar end to end: `rattan render` and `--mode haproxy` against the Marathon simulator, checked
//! with the real Debian `haproxy` (`haproxy -c`, and a running instance on loopback).

mod common;

use common::{cluster, free_port, labeled_app, labels, plain_app, start_against, Rattan, FAST};
use rattan::dev::simulator::AppSpec;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `rattan render` with these arguments: (exit success, stdout, stderr).
fn render(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rattan"))
        .arg("render")
        .args(args)
        .env_remove("MARATHON_ENDPOINT")
        .env_remove("CONFIG_PATH")
        .output()
        .expect("run rattan render");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rattan render` of `template` against Marathon at `url` with the rules file in `data`.
fn render_template(url: &str, data: &Path, template: &Path) -> (bool, String, String) {
    render(&[
        "--marathon",
        url,
        "--data-dir",
        &data.display().to_string(),
        "--template",
        &template.display().to_string(),
    ])
}

/// `haproxy -c` on a config: Ok or HAProxy's message.
fn haproxy_check(cfg: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy is installed (tests/run.sh installs it)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}\n--- config ---\n{cfg}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["web.test".to_string()]).unwrap();
    std::fs::write(
        dir.path().join("web.pem"),
        format!("{}{}", c.cert.pem(), c.key_pair.serialize_pem()),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_configs_pass_haproxy_check() {
    let m = cluster().await;
    let tcp_port = free_port();
    labeled_app(
        &m,
        "/web",
        2,
        &[
            ("HAPROXY_0_VHOST", "web.test,www.web.test"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
            ("HAPROXY_0_STICKY", "true"),
        ],
    )
    .await;
    m.create_app(AppSpec {
        id: "/api/v1".into(),
        instances: 2,
        health_check: true,
        labels: labels(&[
            ("HAPROXY_0_PATH", "/v1"),
            ("HAPROXY_0_BALANCE", "roundrobin"),
        ]),
        ..AppSpec::default()
    })
    .await;
    labeled_app(
        &m,
        "/db",
        1,
        &[
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_PORT", &tcp_port.to_string()),
        ],
    )
    .await;
    plain_app(&m, "/plain", 0).await;
    plain_app(&m, "/versioned", 1).await;
    // marathon-lb's functional labels, and an app's own HTTP port.
    let hash = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
    let guarded = format!("ops:alice:{hash}");
    let (own_port, denied_port) = (free_port(), free_port());
    labeled_app(
        &m,
        "/zz-guarded",
        1,
        &[
            ("HAPROXY_0_VHOST", "guarded.test"),
            ("HAPROXY_0_AUTH", &guarded),
            (
                "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
                "10.0.0.0/8 192.168.1.1",
            ),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/api.v2"),
            ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/api.v2"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/home"),
            ("HAPROXY_0_USE_HSTS", "true"),
            ("HAPROXY_0_BALANCE", "source"),
            ("HAPROXY_0_PORT", &own_port.to_string()),
        ],
    )
    .await;
    labeled_app(
        &m,
        "/private-db",
        1,
        &[
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/8"),
            ("HAPROXY_0_PORT", &denied_port.to_string()),
        ],
    )
    .await;
    // A blue/green pair (marathon-lb's zdd): one green task serves, so one blue task drains.
    for (id, n, started) in [
        ("/zdd-blue", 2, "2026-12-01T00:00:00Z"),
        ("/zdd-green", 1, "2026-12-02T00:00:00Z"),
    ] {
        labeled_app(
            &m,
            id,
            n,
            &[
                ("HAPROXY_0_VHOST", "zdd.test"),
                ("HAPROXY_DEPLOYMENT_GROUP", "zdd"),
                ("HAPROXY_DEPLOYMENT_STARTED_AT", started),
                ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "2"),
            ],
        )
        .await;
    }
    let data = tempfile::tempdir().unwrap();
    // A rule from the API store (the file store here), with a longer path than the label route.
    std::fs::write(
        data.path().join("rules.json"),
        r#"{"/plain":{"Id":"/plain","Acl":"path_beg /v1/plain","Config":{"Acl":"path_beg /v1/plain"}},
            "/versioned":{"Id":"/versioned","Acl":"req.ver 1.0","Config":{"Acl":"req.ver 1.0"}}}"#,
    )
    .unwrap();
    let certs = cert_dir();
    let url = m.url();
    let (http, https, stats) = (free_port(), free_port(), free_port());
    let (ok, cfg, err) = render(&[
        "--marathon",
        &url,
        "--data-dir",
        &data.path().display().to_string(),
        "--http-bind",
        &format!("127.0.0.1:{http}"),
        "--https-bind",
        &format!("127.0.0.1:{https}"),
        "--tls-cert-dir",
        &certs.path().display().to_string(),
        "--tcp-bind-address",
        "127.0.0.1",
        "--haproxy-stats-bind",
        &format!("127.0.0.1:{stats}"),
    ]);
    assert!(ok, "{err}");
    haproxy_check(&cfg).unwrap();
    for want in [
        format!("bind 127.0.0.1:{https} ssl crt {}", certs.path().display()),
        "acl route-0-0 hdr(host) -i web.test www.web.test".to_string(),
        "http-request redirect scheme https code 301 if !{ ssl_fc }\n".to_string(),
        "cookie mesosphere_server_id insert indirect nocache".to_string(),
        "option httpchk GET /health".to_string(),
        "balance roundrobin".to_string(),
        format!("bind 127.0.0.1:{tcp_port}\n  mode tcp"),
        format!("listen stats\n  bind 127.0.0.1:{stats}"),
        "userlist users-route-".to_string(),
        format!("user alice password {hash}"),
        "http-request auth realm ops if !{ http_auth(users-route-".to_string(),
        "!{ src 10.0.0.0/8 192.168.1.1/32 }".to_string(),
        "http-request redirect location /home code 301 if { path / }".to_string(),
        "http-request replace-path ^/api\\.v2(/|$)(.*) /\\2".to_string(),
        "http-response replace-header Location ^((?!/api\\.v2(?:/|$))/.*)$ /api.v2\\1".to_string(),
        "http-response set-header Strict-Transport-Security max-age=15768000 if { ssl_fc }"
            .to_string(),
        "balance source".to_string(),
        format!("listen ::zz-guarded-http-{own_port}\n  bind 127.0.0.1:{own_port}\n  mode http"),
        format!("bind 127.0.0.1:{denied_port}\n  mode tcp"),
        "tcp-request connection reject if !{ src 10.0.0.0/8 }".to_string(),
        "monitor-uri /_haproxy_health_check".to_string(),
        // An ACL rattan's proxy does not compile, passed to HAProxy as written.
        "-0 req.ver 1.0\n  use_backend ::versioned-cluster".to_string(),
        "use_backend ::zdd-cluster if".to_string(),
    ] {
        assert!(cfg.contains(&want), "missing {want:?} in\n{cfg}");
    }
    assert!(!cfg.contains("stats auth"), "no default credentials");
    // The same precedence as the built-in proxy: the longer path first.
    let plain = cfg.find("use_backend ::plain-cluster").expect("rule route");
    let v1 = cfg
        .find("use_backend ::api::v1-cluster")
        .expect("label route");
    assert!(plain < v1, "{cfg}");
    // Only routable tasks: /plain has none, so its backend has no server.
    let plain_backend = &cfg[cfg.find("backend ::plain-cluster").unwrap()..];
    let plain_backend = &plain_backend[..plain_backend.find("\n\n").unwrap_or(plain_backend.len())];
    assert!(!plain_backend.contains("server "), "{plain_backend}");

    // The group is one backend: the green task and the second blue one serve, the first blue one drains.
    let zdd = &cfg[cfg.find("\nbackend ::zdd-cluster").expect("group backend") + 1..];
    let zdd = &zdd[..zdd.find("\n\n").unwrap_or(zdd.len())];
    let servers: Vec<&str> = zdd.lines().filter(|l| l.contains("server ")).collect();
    assert_eq!(servers.len(), 3, "{zdd}");
    assert_eq!(
        servers
            .iter()
            .filter(|l| l.ends_with(" disabled weight 0"))
            .count(),
        1,
        "{zdd}"
    );
    assert!(
        !cfg.contains("zdd-blue") && !cfg.contains("zdd-green"),
        "{cfg}"
    );

    // Errors: a clear message and a non-zero exit.
    let (ok, _, err) = render(&[
        "--marathon",
        "http://127.0.0.1:9",
        "--data-dir",
        &data.path().display().to_string(),
    ]);
    assert!(
        !ok && err.contains("cannot fetch apps from Marathon"),
        "{err}"
    );
    let bad = data.path().join("bad.tmpl");
    std::fs::write(&bad, "{{ range .Apps }}").unwrap();
    let (ok, _, err) = render_template(&url, data.path(), &bad);
    assert!(!ok && err.contains("does not parse"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bamboo_template_renders_and_validates() {
    let m = cluster().await;
    let tcp_port = free_port();
    m.create_app(AppSpec {
        id: "/grp/web".into(),
        instances: 2,
        health_check: true,
        labels: labels(&[("team", "a")]),
        env: labels(&[("BAMBOO_TCP_PORT", &tcp_port.to_string()), ("X", "1")]),
        ports: 2,
        ..AppSpec::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("rules.json"),
        r#"{"/grp/web":{"Id":"/grp/web","Acl":"hdr(host) -i web.example.com","Config":{"Acl":"hdr(host) -i web.example.com"}}}"#,
    )
    .unwrap();
    let tmpl = data.path().join("bamboo.cfg");
    let port = free_port();
    std::fs::write(
        &tmpl,
        common::fixture_file("bamboo_template.cfg")
            .replace("BIND_ADDRESS", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let url = m.url();
    let (ok, cfg, err) = render_template(&url, data.path(), &tmpl);
    assert!(ok, "{err}");
    haproxy_check(&cfg).unwrap();
    for want in [
        "acl ::grp::web-aclrule hdr(host) -i web.example.com",
        "use_backend ::grp::web-cluster if ::grp::web-aclrule",
        "listen ::grp::web-cluster-tcp",
        "option httpchk GET /health",
        "# id=/grp/web dns=web-grp split=/grp/web proto=HTTP ready= port=",
        "checks=1 HTTP:/health:0",
        "# labels: team=a",
        "missing=[]",
        "# funcs: UP low _grp_web true grp 7 x-3 ok &lt;&amp;&gt; a\\'b a+b p",
        "check inter 30000",
        "alive=true state=TASK_RUNNING",
    ] {
        assert!(cfg.contains(want), "missing {want:?} in\n{cfg}");
    }
    assert!(cfg.contains(&format!("bind 127.0.0.1:{tcp_port}")), "{cfg}");
    assert!(
        cfg.contains(&format!("env: BAMBOO_TCP_PORT={tcp_port} X=1")),
        "{cfg}"
    );
    assert_eq!(
        cfg.matches("\n  server ::grp::web-127.0.0.1-").count(),
        4,
        "2 TCP + 2 HTTP servers\n{cfg}"
    );
    // Map ranges are in key order: the same input renders the same bytes.
    let (_, again, _) = render_template(&url, data.path(), &tmpl);
    assert_eq!(cfg, again);
}

struct Sidecar {
    dir: tempfile::TempDir,
    port: u16,
}

impl Sidecar {
    fn output(&self) -> std::path::PathBuf {
        self.dir.path().join("haproxy.cfg")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // Every HAProxy this test's reload command started (old ones linger with -sf until idle).
        let _ = Command::new("pkill")
            .args(["-f", &self.output().display().to_string()])
            .status();
    }
}

/// GET through HAProxy: (status, body).
async fn via_haproxy(port: u16, host: &str, path: &str) -> (u16, String) {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match c
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host)
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn until(what: &str, r: &Rattan, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what} did not happen within {secs} s\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sidecar_args(s: &Sidecar, template: &Path, extra: &[&str]) -> Vec<String> {
    let out = s.output().display().to_string();
    let pid = s.dir.path().join("haproxy.pid").display().to_string();
    let mut v: Vec<String> = [
        "--mode",
        "haproxy",
        "--haproxy-template",
        &template.display().to_string(),
        "--haproxy-output",
        &out,
        "--haproxy-validation-cmd",
        "haproxy -c -f {{.}}",
        // Bamboo's reload: a new HAProxy takes over from the old one (-sf); the first call starts it.
        "--haproxy-reload-cmd",
        &format!("haproxy -f {out} -p {pid} -D -sf $(cat {pid} 2>/dev/null)"),
        "--haproxy-min-interval",
        "300ms",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_routes_after_scale_and_rule_changes_and_keeps_serving_on_invalid_config() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let s = Sidecar {
        dir: tempfile::tempdir().unwrap(),
        port: free_port(),
    };
    let tmpl = s.dir.path().join("bamboo.cfg");
    std::fs::write(
        &tmpl,
        common::fixture_file("bamboo_template.cfg")
            .replace("BIND_ADDRESS", &format!("127.0.0.1:{}", s.port)),
    )
    .unwrap();
    let url = m.url();
    let mut args = vec!["--marathon".to_string(), url.clone()];
    args.extend(sidecar_args(&s, &tmpl, &[]));
    args.extend(FAST.iter().map(|x| x.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = Rattan::start(&argv);
    let port = s.port;
    until("HAProxy routes /web", &r, 15, async || {
        via_haproxy(port, "x", "/web").await.1.starts_with("/web ")
    })
    .await;

    // Scale: the new task is reached through HAProxy.
    m.scale("/web", 2).await;
    let mut seen = std::collections::HashSet::new();
    until("both tasks reached", &r, 15, async || {
        seen.insert(via_haproxy(port, "x", "/web").await.1);
        seen.iter().filter(|b| b.starts_with("/web ")).count() >= 2
    })
    .await;

    // A rule change: the API rule replaces the default path rule.
    let c = reqwest::Client::new();
    let resp = c
        .post(format!("{}/api/services", r.api))
        .body(r#"{"id":"/web","acl":"hdr(host) -i web.example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    until("host rule applied", &r, 15, async || {
        via_haproxy(port, "web.example.com", "/anything")
            .await
            .1
            .starts_with("/web ")
    })
    .await;
    let applied = r
        .metric("rattan_haproxy_reloads_total{outcome=\"applied\"}")
        .await;
    let good = std::fs::read_to_string(s.output()).unwrap();

    // A rule whose config the template copies verbatim and HAProxy rejects: validation fails, the file and the
    // running HAProxy stay as they were, and the reason is reported.
    let resp = c
        .post(format!("{}/api/services", r.api))
        .body(r#"{"id":"/web","acl":"hdr(host) -i web.example.com","config":{"extra":"no-such-directive 1"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    until("validation failure reported", &r, 15, async || {
        r.get("/status").await.1.contains("no-such-directive")
    })
    .await;
    assert!(
        r.metric("rattan_haproxy_reloads_total{outcome=\"invalid\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        std::fs::read_to_string(s.output()).unwrap(),
        good,
        "the running config stays"
    );
    assert!(
        via_haproxy(port, "web.example.com", "/")
            .await
            .1
            .starts_with("/web "),
        "still serving"
    );
    assert_eq!(
        r.metric("rattan_haproxy_reloads_total{outcome=\"applied\"}")
            .await,
        applied
    );
    let (_, st) = r.get("/api/haproxy").await;
    assert!(st.contains("\"last_outcome\":\"invalid\""), "{st}");

    // Fixed: applied again.
    let resp = c
        .delete(format!("{}/api/services/web", r.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    until("fixed config applied", &r, 15, async || {
        r.get("/status").await.1.trim() == "OK"
            && via_haproxy(port, "x", "/web").await.1.starts_with("/web ")
    })
    .await;
    // An ACL the built-in proxy does not compile (`req.ver`) is HAProxy's to judge here: stored, rendered,
    // and routing through HAProxy.
    let resp = c
        .post(format!("{}/api/services", r.api))
        .body(r#"{"id":"/web","acl":"req.ver 1.0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // HTTP/1.0, which `req.ver 1.0` takes (a retiring HAProxy may still answer the first tries).
    async fn http10(port: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return String::new();
        };
        let _ = s
            .write_all(b"GET /anything HTTP/1.0\r\nHost: x\r\n\r\n")
            .await;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        answer
    }
    until("req.ver rule routes through HAProxy", &r, 15, async || {
        std::fs::read_to_string(s.output())
            .unwrap_or_default()
            .contains("-aclrule req.ver 1.0")
            && http10(port).await.contains("\r\n\r\n/web ")
    })
    .await;
    // The same rule with the built-in proxy serving: refused, with the reason.
    let proxy = start_against(&url, &[]);
    let resp = c
        .post(format!("{}/api/services", proxy.api))
        .body(r#"{"id":"/web","acl":"req.ver 1.0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("unknown fetch 'req.ver'"));

    // The temp files are gone.
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".rattan-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            let mut f = after.split_whitespace();
            let state = f.next();
            let ppid = f.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && ppid == Some(pid)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_reload_is_killed_and_retried_and_storms_are_merged() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("haproxy.cfg");
    let once = dir.path().join("hung-once");
    let log = dir.path().join("reloads.log");
    // The first reload hangs (until killed); later ones succeed and are counted in a file.
    let reload = format!(
        "if [ -f {o} ]; then echo reload >> {l}; else touch {o}; sleep 37.5; fi",
        o = once.display(),
        l = log.display()
    );
    let url = m.url();
    let stats = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let out_s = out.display().to_string();
    let args = vec![
        "--mode",
        "haproxy",
        "--haproxy-output",
        &out_s,
        "--haproxy-validation-cmd",
        "haproxy -c -f {{.}}",
        "--haproxy-reload-cmd",
        &reload,
        "--haproxy-command-timeout",
        "700ms",
        "--haproxy-stats-bind",
        &stats,
        "--http-bind",
        &http,
    ];
    let r = start_against(&url, &args);
    until(
        "the hung reload is killed and retried",
        &r,
        20,
        async || {
            r.metric("rattan_haproxy_reloads_total{outcome=\"applied\"}")
                .await
                >= 1.0
        },
    )
    .await;
    assert!(
        r.metric("rattan_haproxy_reloads_total{outcome=\"failed\"}")
            .await
            >= 1.0
    );
    r.wait_log("did not finish within", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(zombies_of(r.pid()), 0, "children are reaped");
    let hung = Command::new("pgrep")
        .args(["-x", "-f", "sleep 37.5"])
        .output()
        .unwrap();
    assert!(
        hung.stdout.is_empty(),
        "the hung command's process group is gone"
    );

    // 50 changes within one second: merged into a few reloads (min interval 1 s, the default).
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    for i in 0..50 {
        m.scale("/web", if i % 2 == 0 { 2 } else { 1 }).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.scale("/web", 3).await;
    until("the final state rendered", &r, 15, async || {
        std::fs::read_to_string(&out)
            .map(|c| c.matches("\n  server ").count() == 3)
            .unwrap_or(false)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reloads = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        - before;
    assert!(
        (1..=4).contains(&reloads),
        "{reloads} reloads for 51 changes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_template_is_reported_and_a_fixed_one_is_picked_up() {
    let m = cluster().await;
    plain_app(&m, "/web", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("haproxy.cfg");
    let tmpl = dir.path().join("t.cfg");
    // Parses, but fails while executing (ToInt aborts on a non-number, as in Bamboo).
    std::fs::write(&tmpl, "{{ range .Apps }}{{ ToInt .Id }}{{ end }}").unwrap();
    let url = m.url();
    let (out_s, tmpl_s) = (out.display().to_string(), tmpl.display().to_string());
    let args = vec![
        "--mode",
        "haproxy",
        "--haproxy-output",
        &out_s,
        "--haproxy-template",
        &tmpl_s,
    ];
    let r = start_against(&url, &args);
    until("the render failure is reported", &r, 15, async || {
        r.get("/status")
            .await
            .1
            .contains("template execution failed")
    })
    .await;
    assert!(
        r.metric("rattan_haproxy_reloads_total{outcome=\"invalid\"}")
            .await
            >= 1.0
    );
    assert!(!out.exists(), "nothing written");
    // A template that does not even parse: reported too, the process lives on.
    std::fs::write(&tmpl, "{{ range .Apps }").unwrap();
    until("the parse failure is reported", &r, 15, async || {
        r.get("/status").await.1.contains("does not parse")
    })
    .await;
    // Fixed on disk, no Marathon change needed: rendered and applied.
    std::fs::write(&tmpl, "# {{ range .Apps }}{{ .Id }} {{ end }}\n").unwrap();
    until("the fixed template is applied", &r, 15, async || {
        std::fs::read_to_string(&out).is_ok_and(|c| c.contains("/web"))
    })
    .await;
    assert_eq!(r.get("/status").await.1.trim(), "OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_never_reach_haproxy_cfg() {
    // Rules written by others (a hand edit, another tool writing ZooKeeper) and Marathon labels and env carrying
    // a newline: the config HAProxy gets has no directive of theirs; the honest parts still render.
    let m = cluster().await;
    m.create_app(AppSpec {
        id: "/grp/web".into(),
        instances: 1,
        labels: labels(&[("team", "a\nlisten from_label\n  bind :1")]),
        env: labels(&[("CERT", "line1\nline2"), ("X", "1")]),
        ..AppSpec::default()
    })
    .await;
    plain_app(&m, "/grp/evil", 1).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("rules.json"),
        r#"{"/grp/web":{"Id":"/grp/web","Acl":"hdr(host) -i web.example.com","Config":{"Acl":"hdr(host) -i web.example.com"}},
            "/grp/evil":{"Id":"/grp/evil","Acl":"hdr(host) -i a\nlisten injected\n  bind 127.0.0.1:1","Config":{"Acl":"hdr(host) -i a\nlisten injected\n  bind 127.0.0.1:1","note":"x\r\nlisten also"}}}"#,
    )
    .unwrap();
    let tmpl = data.path().join("bamboo.cfg");
    std::fs::write(
        &tmpl,
        common::fixture_file("bamboo_template.cfg")
            .replace("BIND_ADDRESS", &format!("127.0.0.1:{}", free_port())),
    )
    .unwrap();
    let (ok, cfg, err) = render_template(&m.url(), data.path(), &tmpl);
    assert!(ok, "{err}");
    haproxy_check(&cfg).unwrap();
    for gone in ["injected", "from_label", "listen also", "line2"] {
        assert!(!cfg.contains(gone), "{gone} reached the config:\n{cfg}");
    }
    assert!(
        cfg.contains("acl ::grp::web-aclrule hdr(host) -i web.example.com"),
        "{cfg}"
    );
    assert!(cfg.contains("X=1"), "{cfg}");
    assert!(err.contains("control character"), "{err}");
    // rattan's own template too.
    let (ok, cfg, err) = render(&[
        "--marathon",
        &m.url(),
        "--data-dir",
        &data.path().display().to_string(),
    ]);
    assert!(ok, "{err}");
    haproxy_check(&cfg).unwrap();
    assert!(!cfg.contains("injected"), "{cfg}");
}

/// The default template with a real HAProxy: a route's guard applies only to the requests that route takes (an
/// open `/api/public` beside an `/api` behind basic auth), and a blue/green group's draining task gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn default_template_guards_routes_alone_and_drains_blue_tasks() {
    let m = cluster().await;
    // Password "admin" (the `rattan dev` demo's hash).
    let auth = "ops:admin:$6$rattandev$XwTlhvgBsqYQ5VxsNxiOp6u.AByrFoggG2c/kIK4e1F93BooHwPC2Gzj4kNK1wz.nTqiUIOTRYKQVn6ELL6X/1";
    labeled_app(
        &m,
        "/guarded",
        1,
        &[
            ("HAPROXY_0_VHOST", "g.test"),
            ("HAPROXY_0_PATH", "/api"),
            ("HAPROXY_0_AUTH", auth),
        ],
    )
    .await;
    labeled_app(
        &m,
        "/public",
        1,
        &[
            ("HAPROXY_0_VHOST", "g.test"),
            ("HAPROXY_0_PATH", "/api/public"),
        ],
    )
    .await;
    for (id, n, started) in [
        ("/z-blue", 2, "2026-12-01T00:00:00Z"),
        ("/z-green", 1, "2026-12-02T00:00:00Z"),
    ] {
        labeled_app(
            &m,
            id,
            n,
            &[
                ("HAPROXY_0_VHOST", "z.test"),
                ("HAPROXY_DEPLOYMENT_GROUP", "z"),
                ("HAPROXY_DEPLOYMENT_STARTED_AT", started),
                ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "2"),
            ],
        )
        .await;
    }
    let s = Sidecar {
        dir: tempfile::tempdir().unwrap(),
        port: free_port(),
    };
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/haproxy_template.cfg");
    let (bind, stats) = (
        format!("127.0.0.1:{}", s.port),
        format!("127.0.0.1:{}", free_port()),
    );
    let url = m.url();
    let mut args = vec!["--marathon".to_string(), url];
    args.extend(sidecar_args(
        &s,
        &template,
        &[
            "--haproxy-bind",
            &bind,
            "--haproxy-stats-bind",
            &stats,
            "--tcp-bind-address",
            "127.0.0.1",
        ],
    ));
    args.extend(FAST.iter().map(|x| x.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = Rattan::start(&argv);
    let port = s.port;
    until("HAProxy routes /api/public", &r, 15, async || {
        via_haproxy(port, "g.test", "/api/public/x")
            .await
            .1
            .starts_with("/public ")
    })
    .await;
    // The open route is not asked for credentials; the guarded one is, and lets the right ones through.
    assert_eq!(via_haproxy(port, "g.test", "/api/x").await.0, 401);
    let c = reqwest::Client::new();
    let with = c
        .get(format!("http://127.0.0.1:{port}/api/x"))
        .header("Host", "g.test")
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    assert!(with.text().await.unwrap().starts_with("/guarded "));

    // The group: the green task and the second blue task serve, the first blue task (lowest id) drains.
    let mut blue = m.task_ids("/z-blue");
    blue.sort();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, body) = via_haproxy(port, "z.test", "/").await;
        assert_eq!(status, 200, "{body}");
        seen.insert(
            body.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        !seen.contains(&blue[0]),
        "a draining task was sent requests: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    let health = reqwest::get(format!("http://{stats}/_haproxy_health_check"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
