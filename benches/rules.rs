//! Matching a request against 1,000 rules (goal: median under 1 µs). `cargo bench --bench rules`.
//! Scenario "typical": 500 exact hosts + 500 path prefixes (what Bamboo and marathon-lb users write).
//! Scenario "mixed": 450 hosts, 450 prefixes, 50 host suffixes, 50 regex/sub rules that no index covers.

use rattan::apps::Apps;
use rattan::discovery::{build_view, Policy};
use rattan::marathon::model::parse_apps;
use rattan::rules::acl::Request;
use rattan::rules::table::{RouteOptions, RouteTable};
use rattan::rules::Service;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn table(kind: &str) -> RouteTable {
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("/team{}/app{i}", i % 20))
        .collect();
    let body = format!(
        "{{\"apps\":[{}]}}",
        ids.iter()
            .map(|id| format!("{{\"id\":\"{id}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let apps: Apps = parse_apps(body.as_bytes())
        .expect("apps")
        .apps
        .iter()
        .map(|a| {
            let v = build_view(a, &a.tasks, &Default::default(), Policy::default());
            (v.id.clone(), Arc::new(v))
        })
        .collect();
    let mut services = rattan::rules::ServiceMap::new();
    for (i, id) in ids.iter().enumerate() {
        let acl = match (kind, i % 20) {
            ("mixed", 0) => format!("hdr_dom(host) -i zone{i}.example.net"),
            ("mixed", 1) => format!("path_reg ^/r{i}/[0-9]+$"),
            (_, n) if n % 2 == 0 => format!("hdr(host) -i app{i}.example.com"),
            _ => format!("path_beg -i /app{i}/"),
        };
        services.insert(
            id.clone(),
            Service {
                id: id.clone(),
                acl: acl.clone(),
                config: Some([("Acl".into(), acl)].into()),
            },
        );
    }
    RouteTable::build(&apps, &services, &RouteOptions::default())
}

fn measure(kind: &str) {
    let t = table(kind);
    let headers = http::HeaderMap::new();
    let reqs: Vec<(String, String)> = (0..1000)
        .map(|i| match i % 4 {
            0 => (
                format!("app{}.example.com", (i * 7) % 1000),
                "/index.html".to_string(),
            ),
            1 => (
                "www.example.org".to_string(),
                format!("/app{}/api/v1/items", (i * 13) % 1000),
            ),
            2 => ("www.example.org".to_string(), "/no/route/here".to_string()),
            _ => (
                format!("APP{}.EXAMPLE.COM", (i * 3) % 1000),
                "/".to_string(),
            ),
        })
        .collect();
    let mut per_req = Vec::new();
    let mut hits = 0usize;
    for _ in 0..200 {
        let start = Instant::now();
        for (host, path) in &reqs {
            let r = Request::plain(path, Some(host), (&headers).into());
            if black_box(t.find(black_box(&r))).is_some() {
                hits += 1;
            }
        }
        per_req.push(start.elapsed().as_nanos() as f64 / reqs.len() as f64);
    }
    per_req.sort_by(|a, b| a.total_cmp(b));
    println!(
        "match against {} rules ({kind}): median {:.0} ns, p90 {:.0} ns per request ({} hits of {}; goal median < 1000 ns)",
        t.routes.len(),
        per_req[per_req.len() / 2],
        per_req[per_req.len() * 9 / 10],
        hits / 200,
        reqs.len()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rules bench: run with `cargo bench --bench rules`");
        return;
    }
    measure("typical");
    measure("mixed");
}
