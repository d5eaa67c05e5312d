//! `rattan dev`: the whole thing on embedded defaults, no Marathon or ZooKeeper needed.

pub mod simulator;

use crate::config::{Opts, Settings};
use simulator::{AppSpec, SimOptions, Simulator};
use std::collections::BTreeMap;

pub async fn run(opts: &Opts) -> Result<(), String> {
    let sim = Simulator::start(SimOptions {
        serve_tasks: true,
        ..SimOptions::default()
    })
    .await
    .map_err(|e| format!("cannot start the Marathon simulator: {e}"))?;
    let demo = [
        ("/demo/web", 2, false, Some("web.localhost")),
        ("/demo/api", 3, true, None),
        ("/shop/cart", 1, false, None),
    ];
    for (id, n, health, vhost) in demo {
        let mut labels = BTreeMap::new();
        if let Some(v) = vhost {
            labels.insert("HAPROXY_0_VHOST".to_string(), v.to_string());
        }
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
    let settings = Settings::resolve(&o, true).map_err(|e| e.to_string())?;
    let running = crate::server::start(&settings).await?;
    let api = format!("http://{}", running.api_addr);
    let proxy = running
        .proxy_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| "(proxy disabled)".into());
    println!(
        "\nrattan dev is up: a simulated Marathon at {} with 3 demo apps (6 tasks, real HTTP servers).\n\
         Try:\n  curl {proxy}/demo/api          # through the proxy: Bamboo's default rule path_beg -i /demo/api\n  \
         curl {api}/api/state          # apps and tasks as Bamboo's /api/state\n  \
         curl {api}/metrics            # Prometheus metrics\n  \
         curl -X POST {api}/api/services -d '{{\"id\":\"/demo/web\",\"acl\":\"hdr(host) -i web.localhost\"}}'\n  \
         curl -H 'Host: web.localhost' {proxy}/    # routed by the rule you just wrote\n  \
         open {api}/                   # the web UI: routes, rules, health\n\
         Rules are kept in {}. Ctrl-C stops everything.\n",
        sim.url(),
        settings.data_dir.display()
    );
    crate::server::shutdown_signal().await;
    Ok(())
}
