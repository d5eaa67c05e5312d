//! ZooKeeper rule store at scale (run with `cargo bench --bench zk_rules`; `RULES=40000` to change the size):
//! a real ZooKeeper seeded with N rule nodes, then the release binary started against it.
//! 1. full load: start to "rules loaded" (goal at 100,000 rules: < 5 s on loopback);
//! 2. a rule write through the API at that size, 50 in a row (goal p50 < 50 ms);
//! 3. a change written by another tool, to its route on this instance, 20 in a row.
//!
//! `RTT_MS=1` puts rattan's ZooKeeper connection behind a relay that holds every piece of data half that long each
//! way: a real network's round trip, with pipelining kept (this machine's kernel has no netem).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};
use zookeeper_client as zkc;

const BASE: &str = "/bench/rules";

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A TCP relay to `to` that delivers every piece `delay` after it was read, in order, each way.
async fn slow_relay(to: String, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&to).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut r, mut w) in [(cr, sw), (sr, cw)].map(|(r, w)| (r, w)) {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0
                            || tx
                                .send((Instant::now() + delay, buf[..n].to_vec()))
                                .is_err()
                        {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, data)) = rx.recv().await {
                        tokio::time::sleep_until(due.into()).await;
                        if w.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("zk_rules bench: run with `cargo bench --bench zk_rules`");
        return;
    }
    let n: usize = std::env::var("RULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let zk = common::Zk::start();
    let hosts = zk.hosts();
    let client = zkc::Client::connect(&hosts).await.expect("connect");
    let t = Instant::now();
    common::seed_rules(&client, BASE, n).await;
    println!("seeded {n} rules in {:.2?}", t.elapsed());

    let m = common::cluster().await;
    common::plain_app(&m, "/bulk-1", 1).await;
    let rtt: f64 = std::env::var("RTT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let zk_for_rattan = if rtt > 0.0 {
        println!("rattan reaches ZooKeeper over a {rtt} ms round trip");
        slow_relay(hosts.clone(), Duration::from_secs_f64(rtt / 2000.0)).await
    } else {
        hosts.clone()
    };
    let started = Instant::now();
    let r = common::Rattan::start(&[
        "--marathon",
        &m.url(),
        "--zk",
        &zk_for_rattan,
        "--zk-path",
        BASE,
    ]);
    let want = format!("rules={n}");
    r.wait_log("ZooKeeper connected; rules loaded", 120).await;
    let load = started.elapsed();
    assert!(r.log().contains(&want), "{}", r.log());
    println!("full load of {n} rules: {load:.2?} (start to loaded, process start included)");
    // From the session's start to the rules published, by rattan's own clock.
    let stamp = |needle: &str| {
        r.log()
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
    };
    if let (Some(a), Some(b)) = (
        stamp("succeeds to establish session"),
        stamp("ZooKeeper connected; rules loaded"),
    ) {
        println!(
            "  of which session established to rules published: {:.2?}",
            (b - a).unsigned_abs()
        );
    }
    let cpu = common::cpu_seconds(r.pid());

    let c = reqwest::Client::new();
    let mut writes = Vec::new();
    for i in 0..50 {
        let body = format!(r#"{{"id":"/bulk-1","acl":"hdr(host) -i w{i}.example"}}"#);
        let t = Instant::now();
        let resp = c
            .post(format!("{}/api/services", r.api))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("write");
        assert_eq!(resp.status(), 200);
        writes.push(t.elapsed());
    }
    println!(
        "API write at {n} rules: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(&mut writes, 0.5),
        pct(&mut writes, 0.99),
        pct(&mut writes, 1.0)
    );

    let mut seen = Vec::new();
    for i in 0..20 {
        let acl = format!("hdr(host) -i other{i}.example");
        let body = rattan::store::encode_v2(&[("Acl".to_string(), acl.clone())].into());
        let t = Instant::now();
        client
            .set_data(&format!("{BASE}/%2Fbulk-1"), &body, None)
            .await
            .expect("set");
        loop {
            let (_, routes) = r.get("/api/routes").await;
            if routes.contains(&acl) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "change never routed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.push(t.elapsed());
    }
    println!(
        "another tool's change to routing at {n} rules: p50 {:.2?}, p99 {:.2?}",
        pct(&mut seen, 0.5),
        pct(&mut seen, 0.99)
    );
    println!(
        "rattan CPU: {cpu:.2} s through the load, {:.2} s in all",
        common::cpu_seconds(r.pid())
    );
}
