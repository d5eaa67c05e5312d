//! `rattan dev`: the whole thing on embedded defaults, no Marathon or ZooKeeper needed.

pub mod simulator;

use crate::config::{Opts, Settings};
use simulator::{AppSpec, SimOptions, Simulator};
use std::collections::BTreeMap;

/// A demo app: id, instances, whether it has an HTTP health check, its labels.
type Demo = (
    &'static str,
    usize,
    bool,
    &'static [(&'static str, &'static str)],
);

/// `--stats-bind` in dev.
const DEV_STATS: &str = "127.0.0.1:18090";

pub async fn run(opts: &Opts) -> Result<(), String> {
    let sim = Simulator::start(SimOptions {
        serve_tasks: true,
        ..SimOptions::default()
    })
    .await
    .map_err(|e| format!("cannot start the Marathon simulator: {e}"))?;
    // marathon-lb's labels: a vhost; basic auth (user admin, password admin) on a vhost and the app's own HTTP
    // port; a TCP port; a blue/green pair mid-deployment (one green task serves, so one blue task drains).
    const ADMIN: &str = "demo:admin:$6$rattandev$XwTlhvgBsqYQ5VxsNxiOp6u.AByrFoggG2c/kIK4e1F93BooHwPC2Gzj4kNK1wz.nTqiUIOTRYKQVn6ELL6X/1";
    const BLUE: &[(&str, &str)] = &[
        ("HAPROXY_0_VHOST", "shop.localhost"),
        ("HAPROXY_DEPLOYMENT_GROUP", "demo/shop"),
        ("HAPROXY_DEPLOYMENT_STARTED_AT", "2026-01-01T00:00:00Z"),
        ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "2"),
    ];
    const GREEN: &[(&str, &str)] = &[
        ("HAPROXY_0_VHOST", "shop.localhost"),
        ("HAPROXY_DEPLOYMENT_GROUP", "demo/shop"),
        ("HAPROXY_DEPLOYMENT_STARTED_AT", "2026-02-01T00:00:00Z"),
        ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "2"),
    ];
    let demo: [Demo; 7] = [
        (
            "/demo/web",
            2,
            false,
            &[("HAPROXY_0_VHOST", "web.localhost")],
        ),
        ("/demo/api", 3, true, &[]),
        ("/shop/cart", 1, false, &[]),
        (
            "/demo/admin",
            1,
            false,
            &[
                ("HAPROXY_0_VHOST", "admin.localhost"),
                ("HAPROXY_0_AUTH", ADMIN),
                ("HAPROXY_0_PORT", "18081"),
            ],
        ),
        (
            "/demo/tcp",
            1,
            false,
            &[("HAPROXY_0_MODE", "tcp"), ("HAPROXY_0_PORT", "18082")],
        ),
        ("/demo/shop-blue", 2, false, BLUE),
        ("/demo/shop-green", 1, false, GREEN),
    ];
    let apps = demo.len();
    let tasks: usize = demo.iter().map(|d| d.1).sum();
    for (id, n, health, pairs) in demo {
        let labels: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sim.create_app(AppSpec {
            id: id.into(),
            instances: n,
            health_check: health,
            labels,
            ..AppSpec::default()
        })
        .await;
    }

    let mut o = opts.clone();
    if o.marathon.is_none() {
        o.marathon = Some(vec![sim.url()]);
    }
    o.api_bind.get_or_insert_with(|| "127.0.0.1:8000".into());
    o.http_bind.get_or_insert_with(|| "127.0.0.1:8080".into());
    o.data_dir.get_or_insert_with(|| ".rattan".into());
    // The demo's service ports, on loopback like the rest.
    o.tcp_bind_address.get_or_insert_with(|| "127.0.0.1".into());
    // marathon-lb's stats port, off its :9090 (Prometheus' port).
    o.stats_bind.get_or_insert_with(|| DEV_STATS.into());
    let settings = Settings::resolve(&o, true).map_err(|e| e.to_string())?;
    let running = crate::server::start(&settings).await?;
    let api = format!("http://{}", running.api_addr);
    let proxy = running
        .proxy_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| "(proxy disabled)".into());
    eprintln!(
        "\nrattan dev is up: a simulated Marathon at {} with {apps} demo apps ({tasks} tasks, real HTTP servers).\n\
         Try:\n  curl {proxy}/demo/api          # through the proxy: Bamboo's default rule path_beg -i /demo/api\n  \
         curl {api}/api/state          # apps and tasks as Bamboo's /api/state\n  \
         curl {api}/metrics            # Prometheus metrics\n  \
         curl -X POST {api}/api/services -d '{{\"id\":\"/demo/web\",\"acl\":\"hdr(host) -i web.localhost\"}}'\n  \
         curl -H 'Host: web.localhost' {proxy}/    # routed by the rule you just wrote\n  \
         curl -u admin:admin -H 'Host: admin.localhost' {proxy}/   # marathon-lb labels: a vhost with basic auth\n  \
         curl -u admin:admin http://127.0.0.1:18081/   # the same app on its own HTTP port (HAPROXY_0_PORT)\n  \
         curl http://127.0.0.1:18082/   # a TCP-mode port (HAPROXY_0_MODE=tcp)\n  \
         curl -H 'Host: shop.localhost' {proxy}/   # a blue/green group: green and one blue task serve\n  \
         curl 'http://{DEV_STATS}/haproxy?stats;csv'   # marathon-lb's stats, as zdd.py reads them\n  \
         open {api}/                   # the web UI: routes, rules, health\n\
         Rules are kept in {}. Ctrl-C stops everything.\n",
        sim.url(),
        settings.data_dir.display()
    );
    crate::server::shutdown_signal().await;
    Ok(())
}
