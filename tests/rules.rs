//! Rules end to end: the real binary, a real ZooKeeper, the Marathon simulator.

mod common;

use common::{cpu_seconds, send, Rattan, Zk};
use rattan::dev::simulator::{AppSpec, SimOptions, Simulator};
use serde_json::Value;
use std::time::{Duration, Instant};
use zookeeper_client as zkc;

const BASE: &str = "/bamboo/services";

async fn sim_with(apps: &[&str]) -> Simulator {
    let m = Simulator::start(SimOptions::default()).await.unwrap();
    for id in apps {
        m.create_app(AppSpec {
            id: id.to_string(),
            instances: 1,
            ..AppSpec::default()
        })
        .await;
    }
    m
}

fn start(marathon: &str, extra: &[&str]) -> Rattan {
    common::start_against(marathon, extra)
}

async fn routes(r: &Rattan) -> Value {
    serde_json::from_str(&r.get("/api/routes").await.1).unwrap()
}

fn route_of<'a>(routes: &'a Value, app: &str) -> Option<&'a Value> {
    routes["routes"]
        .as_array()?
        .iter()
        .find(|x| x["app"] == app)
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

async fn children(zk: &zkc::Client) -> Vec<String> {
    let mut c = zk.list_children(BASE).await.unwrap_or_default();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_rules_through_zookeeper() {
    let zk = Zk::start();
    let m = sim_with(&["/grp/web", "/other"]).await;
    let url = m.url();
    let hosts = zk.hosts();
    let zk_args = ["--zk", hosts.as_str(), "--zk-path", BASE];
    let a = start(&url, &zk_args);
    let b = start(&url, &zk_args);
    let client = zkc::Client::connect(&hosts).await.unwrap();
    // Ready for writes once each instance has armed its session (the base znode alone comes earlier).
    wait_for("both instances connected to ZooKeeper", 15, async || {
        [&a, &b]
            .iter()
            .all(|r| r.log().contains("ZooKeeper connected; rules loaded"))
    })
    .await;
    assert!(
        client.check_stat(BASE).await.unwrap().is_some(),
        "base path created"
    );
    wait_for("both see the apps", 10, async || {
        route_of(&routes(&a).await, "/grp/web").is_some()
            && route_of(&routes(&b).await, "/grp/web").is_some()
    })
    .await;

    // Written on A (the UI's body shape), routed on B.
    let (status, body) = send(
        "POST",
        &format!("{}/api/services", a.api),
        Some(r#"{"id":"/grp/web","config":{"Acl":"hdr(host) -i web.example.com"}}"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"Id":"/grp/web","Acl":"","Config":{"Acl":"hdr(host) -i web.example.com"}}"#
    );
    let took = wait_for("rule routes on B", 5, async || {
        route_of(&routes(&b).await, "/grp/web").is_some_and(|r| r["source"] == "api")
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "B converged in {took:?}; Bamboo waits ReportingDelay (5 s)"
    );
    eprintln!("convergence A -> B: {took:?}");

    // Exactly Bamboo's child name and body bytes.
    assert_eq!(children(&client).await, vec!["%2Fgrp%2Fweb".to_string()]);
    let (data, _) = client
        .get_data(&format!("{BASE}/%2Fgrp%2Fweb"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(data).unwrap(),
        r#"{"version":"2","config":{"Acl":"hdr(host) -i web.example.com"}}"#
    );

    // An update touches the parent so Bamboo instances (parent data watch only) notice.
    let (_, parent_before) = client.get_data(BASE).await.unwrap();
    let (status, _) = send(
        "PUT",
        &format!("{}/api/services/%2Fgrp%2Fweb", b.api),
        Some(r#"{"id":"/grp/web","acl":"hdr(host) -i www.example.com","config":{"balance":"roundrobin"}}"#),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, parent_after) = client.get_data(BASE).await.unwrap();
    assert!(parent_after.mzxid > parent_before.mzxid, "parent touched");
    let (data, _) = client
        .get_data(&format!("{BASE}/%2Fgrp%2Fweb"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(data).unwrap(),
        r#"{"version":"2","config":{"Acl":"hdr(host) -i www.example.com","balance":"roundrobin"}}"#
    );
    wait_for("update on A", 5, async || {
        route_of(&routes(&a).await, "/grp/web").is_some_and(|r| r["balance"] == "roundrobin")
    })
    .await;

    // A V1 node written by hand (a raw ACL string), created after start: read by both.
    client
        .create(
            &format!("{BASE}/%2Fother"),
            b"path_beg /legacy",
            &zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all()),
        )
        .await
        .unwrap();
    for r in [&a, &b] {
        wait_for("V1 node", 5, async || {
            route_of(&routes(r).await, "/other").is_some_and(|x| x["acl"][0] == "path_beg /legacy")
        })
        .await;
    }
    let (_, services) = r_get(&b, "/api/services").await;
    let services: Value = serde_json::from_str(&services).unwrap();
    assert_eq!(services["/other"]["Acl"], "path_beg /legacy");
    assert_eq!(services["/other"]["Config"]["Acl"], "path_beg /legacy");

    // Bad input changes nothing in ZooKeeper.
    let before = children(&client).await;
    let (before_data, _) = client
        .get_data(&format!("{BASE}/%2Fgrp%2Fweb"))
        .await
        .unwrap();
    for (body, expect) in [
        (
            r#"{"id":"/grp/web","acl":"path_beg"}"#,
            "invalid ACL for /grp/web: ACL error at column 9: 'path_beg' has no value to match\n",
        ),
        (
            r#"{"id":"/new","acl":"host(x) -i a"}"#,
            "unknown fetch 'host(x)'",
        ),
        (
            r#"{"id":"/grp/web","acl":"path /x","config":{"balance":"random"}}"#,
            "balance 'random' is not supported",
        ),
        (
            r#"{"id": "/grp/web", "acl": "path /x""#,
            "Unable to decode JSON request\n",
        ),
        (r#"{"acl":"path /x"}"#, "can not use empty ID\n"),
    ] {
        let (status, text) =
            send("POST", &format!("{}/api/services", a.api), Some(body), None).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            text.contains(expect) && text.ends_with('\n'),
            "{body}: {text}"
        );
    }
    assert_eq!(children(&client).await, before);
    assert_eq!(
        client
            .get_data(&format!("{BASE}/%2Fgrp%2Fweb"))
            .await
            .unwrap()
            .0,
        before_data
    );

    // Delete on B, gone on A; unknown ids answer as Bamboo.
    assert_eq!(
        send(
            "DELETE",
            &format!("{}/api/services//other", b.api),
            None,
            None
        )
        .await,
        (200, "null".into())
    );
    wait_for("delete seen on A", 5, async || {
        route_of(&routes(&a).await, "/other").is_some_and(|x| x["source"] == "default")
    })
    .await;
    assert_eq!(
        send(
            "DELETE",
            &format!("{}/api/services/nope", a.api),
            None,
            None
        )
        .await,
        (400, "zk: node does not exist\n".into())
    );
}

/// POSTs a rule `{"id":…,"acl":…}` to an instance; returns the status.
async fn post_rule(r: &Rattan, id: &str, acl: &str) -> u16 {
    let body = serde_json::json!({ "id": id, "acl": acl }).to_string();
    send(
        "POST",
        &format!("{}/api/services", r.api),
        Some(&body),
        None,
    )
    .await
    .0
}

async fn r_get(r: &Rattan, path: &str) -> (u16, String) {
    r.get(path).await
}

#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_outage_keeps_rules_and_idles() {
    let mut zk = Zk::start();
    let m = sim_with(&["/svc"]).await;
    let url = m.url();
    let hosts = zk.hosts();
    let a = start(
        &url,
        &[
            "--zk",
            hosts.as_str(),
            "--zk-path",
            BASE,
            "--zk-session-timeout",
            "2s",
        ],
    );
    let b = start(&url, &["--zk", hosts.as_str(), "--zk-path", BASE]);
    wait_for("connected", 15, async || {
        post_rule(&a, "/svc", "path_beg /svc-rule").await == 200
    })
    .await;
    assert_eq!(a.metric("rattan_zookeeper_connected").await, 1.0);

    zk.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Writes are refused with a clear error; the last rules keep routing.
    let (status, text) = send(
        "POST",
        &format!("{}/api/services", a.api),
        Some(r#"{"id":"/svc","acl":"path_beg /x"}"#),
        None,
    )
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("ZooKeeper") && text.contains("unavailable"),
        "{text}"
    );
    assert_eq!(
        route_of(&routes(&a).await, "/svc").unwrap()["acl"][0],
        "path_beg /svc-rule"
    );

    common::wait_metric(&a, "rattan_zookeeper_connected", 0.0).await;
    // Near-idle while ZooKeeper is gone (zookeeper-async spun both cores here).
    let before = cpu_seconds(a.pid());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = cpu_seconds(a.pid()) - before;
    eprintln!(
        "CPU while ZooKeeper is down: {used:.2} s over 4 s ({:.1}%)",
        used / 4.0 * 100.0
    );
    assert!(
        used < 0.4,
        "{used} CPU-seconds in 4 s while ZooKeeper is down"
    );
    assert_eq!(
        route_of(&routes(&a).await, "/svc").unwrap()["acl"][0],
        "path_beg /svc-rule"
    );

    zk.restart();
    wait_for("writes work again", 30, async || {
        post_rule(&a, "/svc", "path_beg /after").await == 200
    })
    .await;
    wait_for("B sees writes after the restart", 10, async || {
        route_of(&routes(&b).await, "/svc").is_some_and(|x| x["acl"][0] == "path_beg /after")
    })
    .await;
    // A's 2 s session expired during the outage: a new session, everything re-read. B's 10 s session survived the
    // restart: its watch was re-armed. Both paths then carry writes either way.
    a.wait_log("session ended; starting a new one", 5).await;
    b.wait_log("re-arming the watch", 5).await;
    assert_eq!(post_rule(&b, "/svc", "path_beg /from-b").await, 200);
    wait_for("A (new session) sees B's write", 10, async || {
        route_of(&routes(&a).await, "/svc").is_some_and(|x| x["acl"][0] == "path_beg /from-b")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_auth_protects_created_nodes() {
    let zk = Zk::start();
    let m = sim_with(&["/private"]).await;
    let url = m.url();
    let hosts = zk.hosts();
    let a = start(
        &url,
        &[
            "--zk",
            hosts.as_str(),
            "--zk-path",
            "/secure",
            "--zk-auth",
            "ops:s3cret",
        ],
    );
    wait_for("write with auth", 15, async || {
        post_rule(&a, "/private", "path_beg /p").await == 200
    })
    .await;
    let anonymous = zkc::Client::connect(&hosts).await.unwrap();
    assert!(matches!(
        anonymous.get_data("/secure/%2Fprivate").await,
        Err(zkc::Error::NoAuth)
    ));
    let mut c = zkc::Client::connector();
    c.auth("digest".into(), b"ops:s3cret".to_vec());
    let authed = c.connect(&hosts).await.unwrap();
    assert!(authed.get_data("/secure/%2Fprivate").await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn file_store_api_like_bamboo_with_optional_auth() {
    let m = sim_with(&["/app"]).await;
    let url = m.url();
    let open = start(&url, &[]);
    let api = open.api.clone();
    assert_eq!(
        send("GET", &format!("{api}/api/services"), None, None).await,
        (200, "{}".into())
    );
    let (s, body) = send(
        "POST",
        &format!("{api}/api/services"),
        Some(r#"{"id":"app","acl":"path_beg /a&b"}"#),
        None,
    )
    .await;
    assert_eq!(
        (s, body.as_str()),
        (
            200,
            r#"{"Id":"/app","Acl":"path_beg /a\u0026b","Config":null}"#
        )
    );
    let (s, one) = send("GET", &format!("{api}/api/services/%2Fapp"), None, None).await;
    assert_eq!(s, 200);
    assert!(one.contains(r#""Acl":"path_beg /a\u0026b""#));
    assert_eq!(
        send("GET", &format!("{api}/api/services/%2Fmissing"), None, None)
            .await
            .0,
        404
    );
    // Bamboo stores rules of any size: a 100 KiB one is taken; past --api-max-body (1 MiB) is refused.
    let hosts: Vec<String> = (0..9000).map(|i| format!("h{i}.example")).collect();
    let large = format!(
        r#"{{"id":"/large","acl":"hdr(host) -i {}"}}"#,
        hosts.join(" ")
    );
    assert!(large.len() > 100 * 1024);
    let (s, body) = send("POST", &format!("{api}/api/services"), Some(&large), None).await;
    assert_eq!(s, 200, "{body}");
    let big = format!(r#"{{"id":"/app","acl":"{}"}}"#, "a".repeat(1100 * 1024));
    assert_eq!(
        send("POST", &format!("{api}/api/services"), Some(&big), None)
            .await
            .0,
        413
    );
    assert_eq!(
        send("PATCH", &format!("{api}/api/services/app"), None, None).await,
        (404, "404 page not found\n".into())
    );
    open.wait_log("rules API is open", 5).await;
    drop(open);

    let guarded = start(&url, &["--api-token", "t0k"]);
    let api = guarded.api.clone();
    let body = Some(r#"{"id":"/app","acl":"path_beg /x"}"#);
    assert_eq!(
        send("POST", &format!("{api}/api/services"), body, None)
            .await
            .0,
        401
    );
    assert_eq!(
        send(
            "POST",
            &format!("{api}/api/services"),
            body,
            Some("Bearer nope")
        )
        .await
        .0,
        401
    );
    assert_eq!(
        send(
            "POST",
            &format!("{api}/api/services"),
            body,
            Some("Bearer t0k")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send("GET", &format!("{api}/api/services"), None, None)
            .await
            .0,
        200,
        "reads stay open"
    );
    drop(guarded);

    let all = start(&url, &["--api-basic", "ops:pw", "--api-auth-reads", "true"]);
    assert_eq!(
        send("GET", &format!("{}/api/services", all.api), None, None)
            .await
            .0,
        401
    );
    // The page is static and loads (it asks for credentials itself); its data stays protected.
    assert_eq!(
        send("GET", &format!("{}/", all.api), None, None).await.0,
        200
    );
    assert_eq!(
        send("GET", &format!("{}/api/routes", all.api), None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        send(
            "GET",
            &format!("{}/api/services", all.api),
            None,
            Some("Basic b3BzOnB3")
        )
        .await
        .0,
        200
    );
    // Health endpoints are never behind credentials (a load balancer in front has none).
    for path in ["/status", "/readyz", "/healthz"] {
        let (s, _) = send("GET", &format!("{}{path}", all.api), None, None).await;
        assert_ne!(s, 401, "{path}");
    }
}

async fn rule_count(r: &Rattan) -> usize {
    let (_, body) = r.get("/api/services").await;
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.len()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_rules_load_change_one_by_one_and_shut_down_cleanly() {
    let zk = Zk::start();
    let hosts = zk.hosts();
    let client = zkc::Client::connect(&hosts).await.unwrap();
    const N: usize = 12_000;
    common::seed_rules(&client, BASE, N).await;
    let m = sim_with(&["/bulk-1"]).await;
    let mut a = start(&m.url(), &["--zk", &hosts, "--zk-path", BASE]);
    wait_for("every rule loaded", 60, async || rule_count(&a).await == N).await;

    // Changes made by others arrive node by node: one changed, one deleted, one created.
    let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    let body = |acl: &str| rattan::store::encode_v2(&[("Acl".to_string(), acl.to_string())].into());
    client
        .set_data(
            &format!("{BASE}/%2Fbulk-1"),
            &body("hdr(host) -i changed.example"),
            None,
        )
        .await
        .unwrap();
    client
        .delete(&format!("{BASE}/%2Fbulk-2"), None)
        .await
        .unwrap();
    client
        .create(
            &format!("{BASE}/%2Fnew"),
            &body("hdr(host) -i new.example"),
            &opts,
        )
        .await
        .unwrap();
    wait_for("the three changes", 10, async || {
        let (_, s) = a.get("/api/services").await;
        let v: Value = serde_json::from_str(&s).unwrap_or_default();
        v["/bulk-1"]["Acl"] == "hdr(host) -i changed.example"
            && v.get("/bulk-2").is_none()
            && v["/new"]["Acl"] == "hdr(host) -i new.example"
    })
    .await;
    assert!(route_of(&routes(&a).await, "/bulk-1")
        .is_some_and(|r| r["acl"][0] == "hdr(host) -i changed.example"));
    // A write through the API at this size routes at once.
    assert_eq!(
        post_rule(&a, "/bulk-1", "hdr(host) -i api.example").await,
        200
    );
    assert!(route_of(&routes(&a).await, "/bulk-1")
        .is_some_and(|r| r["acl"][0] == "hdr(host) -i api.example"));
    assert_eq!(rule_count(&a).await, N);

    // SIGTERM while others keep changing rules: the session closes in order; nothing panics.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let acl = format!("hdr(host) -i churn-{i}.example");
                let _ = client
                    .set_data(&format!("{BASE}/%2Fbulk-{}", i % N), &body(&acl), None)
                    .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only shutdown is judged here: zookeeper-client's own session task has been seen dying under a loaded
    // machine mid-run (its watcher then panics on a closed channel; rattan catches that and starts a new session).
    let before = a.log().len();
    a.signal("TERM");
    let status = a.wait_exit(15).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    writer.abort();
    let shutdown = a.log()[before..].to_string();
    assert!(!shutdown.contains("panicked"), "{shutdown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_rule_nodes_load_too() {
    // 300 nodes of 60 KiB each: a multi-read of them all would pass ZooKeeper's 1 MiB reply limit.
    let zk = Zk::start();
    let hosts = zk.hosts();
    let client = zkc::Client::connect(&hosts).await.unwrap();
    let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    client.mkdir(BASE, &opts).await.unwrap();
    for i in 0..300 {
        let body = rattan::store::encode_v2(
            &[
                ("Acl".to_string(), format!("hdr(host) -i big-{i}.example")),
                ("note".to_string(), "n".repeat(60 << 10)),
            ]
            .into(),
        );
        client
            .create(&format!("{BASE}/%2Fbig-{i}"), &body, &opts)
            .await
            .unwrap();
    }
    let m = sim_with(&[]).await;
    let a = start(&m.url(), &["--zk", &hosts, "--zk-path", BASE]);
    wait_for("every large rule loaded", 30, async || {
        rule_count(&a).await == 300
    })
    .await;
}
