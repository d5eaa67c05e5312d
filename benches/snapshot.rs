//! Discovery benchmarks (run with `cargo bench --bench snapshot`):
//! 1. snapshot build from a 10,000-app × 3-task `/v2/apps` body: parse + derive views + swap (goal < 300 ms,
//!    peak RSS < 150 MB);
//! 2. event → snapshot swap latency at 1,000 apps, through the real discovery loop (goal p99 < 5 ms);
//! 3. haproxy.cfg rendered from that snapshot with the built-in template (goal < 0.3 s).

use rattan::dev::simulator::{SimOptions, Simulator};
use rattan::discovery::{self, Discovery, Policy, ResyncTiming};
use rattan::marathon::api::MarathonClient;
use rattan::marathon::events::Change;
use rattan::marathon::model::parse_apps;
use rattan::snapshot::Publisher;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn apps_body(apps: usize, tasks: usize) -> String {
    let list: Vec<Value> = (0..apps)
        .map(|i| {
            let id = format!("/team{}/app{i}", i % 50);
            let ts: Vec<Value> = (0..tasks)
                .map(|t| {
                    json!({"id": format!("team{}_app{i}.instance-{i:08x}-{t:04x}-11e8-a129-70b3d5800001._app.1", i % 50),
                        "appId": id, "host": format!("10.0.{}.{}", t, i % 250), "ports": [31000 + t as u32, 32000 + t as u32],
                        "ipAddresses": [{"ipAddress": format!("10.0.{}.{}", t, i % 250), "protocol": "IPv4"}],
                        "state": "TASK_RUNNING", "startedAt": "2019-05-02T10:11:20.001Z", "stagedAt": "2019-05-02T10:11:19.001Z",
                        "version": "2019-05-02T10:11:12.345Z", "slaveId": "agent-S1",
                        "healthCheckResults": [{"alive": true, "consecutiveFailures": 0, "firstSuccess": "2019-05-02T10:11:25.000Z",
                            "lastSuccess": "2019-05-02T10:12:25.000Z", "lastFailure": null, "lastFailureCause": null,
                            "instanceId": format!("team{}_app{i}.instance-{i:08x}-{t:04x}", i % 50)}]})
                })
                .collect();
            json!({"id": id, "instances": tasks, "cmd": "./server", "cpus": 0.25, "mem": 128,
                "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": format!("app{i}.example.org")},
                "env": {"LOG_LEVEL": "info", "DB": {"secret": "db"}}, "networks": [{"mode": "host"}],
                "portDefinitions": [{"port": 10000 + i as u32 % 9000, "name": "http", "protocol": "tcp"},
                                    {"port": 20000 + i as u32 % 9000, "name": "admin", "protocol": "tcp"}],
                "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 300,
                    "intervalSeconds": 60, "timeoutSeconds": 20, "maxConsecutiveFailures": 3}],
                "version": "2019-05-02T10:11:12.345Z", "deployments": [], "tasksRunning": tasks, "tasks": ts})
        })
        .collect();
    json!({ "apps": list }).to_string()
}

fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs in a child process (see `main`) so the peak RSS is the build's own, not the body generator's.
fn snapshot_build(path: &str) {
    let body = std::fs::read(path).expect("body file");
    if std::env::var_os("RATTAN_BENCH_SPLIT").is_some() {
        println!("  body read, RSS high-water {:.1} MB", vm_hwm_mb());
    }
    let mut times = Vec::new();
    let mut keep = None;
    for _ in 0..5 {
        // The previous snapshot is dropped first: peak RSS is one build plus the body, as in a real resync.
        drop(keep.take());
        let publisher = Arc::new(Publisher::default());
        let mut d = Discovery::new(Policy::default(), publisher.clone());
        let t = Instant::now();
        let parsed = parse_apps(&body).expect("body parses");
        let parsed_at = t.elapsed();
        d.apply_snapshot(parsed.apps);
        times.push(t.elapsed());
        if std::env::var_os("RATTAN_BENCH_SPLIT").is_some() {
            println!(
                "  parse {:.1} ms, views + swap {:.1} ms, RSS high-water {:.1} MB",
                parsed_at.as_secs_f64() * 1e3,
                (t.elapsed() - parsed_at).as_secs_f64() * 1e3,
                vm_hwm_mb()
            );
        }
        assert_eq!(publisher.load().apps.len(), 10_000);
        keep = Some((d, publisher));
    }
    times.sort();
    println!(
        "snapshot build, 10,000 apps x 3 tasks ({:.1} MB body): median {:.1} ms, min {:.1} ms (goal < 300 ms); peak RSS {:.1} MB (goal < 150 MB)",
        body.len() as f64 / 1e6,
        pct(&times, 0.5).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        vm_hwm_mb()
    );
    if let Some((_, publisher)) = &keep {
        render_default_template(publisher);
    }
}

/// 3. haproxy.cfg from the same snapshot with the built-in template (goal < 0.3 s; marathon-lb ~41 s).
fn render_default_template(publisher: &Publisher) {
    let extra = rattan::haproxy::template::Extra {
        http_bind: "0.0.0.0:80".into(),
        tcp_bind_address: "0.0.0.0".into(),
        stats_bind: Some("127.0.0.1:9090".into()),
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut cfg = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        cfg = rattan::haproxy::render_once(publisher, None, &extra).expect("renders");
        times.push(t.elapsed());
    }
    times.sort();
    if std::env::var_os("RATTAN_BENCH_SPLIT").is_some() {
        let snap = publisher.load_full();
        let t = Instant::now();
        let data = rattan::haproxy::template::data(&snap, &extra);
        let built = t.elapsed();
        let r = rattan::haproxy::load_template(None).expect("template");
        let t = Instant::now();
        let _ = r.render_value(data);
        println!(
            "  template data {:.1} ms, execution {:.1} ms",
            built.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!(
        "render haproxy.cfg, 10,000 apps x 3 tasks, built-in template ({:.1} MB, {} servers): median {:.1} ms, min {:.1} ms (goal < 300 ms)",
        cfg.len() as f64 / 1e6,
        cfg.matches("\n  server ").count(),
        pct(&times, 0.5).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
    let path = std::env::temp_dir().join(format!("rattan-bench-{}.cfg", std::process::id()));
    if std::fs::write(&path, &cfg).is_ok() {
        let t = Instant::now();
        if let Ok(out) = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(&path)
            .output()
        {
            println!(
                "  haproxy -c on it: {} in {:.1} s",
                if out.status.success() {
                    "valid"
                } else {
                    "INVALID"
                },
                t.elapsed().as_secs_f64()
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

async fn event_to_swap() {
    let sim = Simulator::start(SimOptions::default())
        .await
        .expect("simulator");
    sim.load_apps_body(&apps_body(1_000, 3)).expect("body");
    let publisher = Arc::new(Publisher::default());
    let client = Arc::new(MarathonClient::new(
        vec![sim.url().parse().expect("url")],
        None,
        Duration::from_secs(10),
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    // Reconciling fetches pushed out of the measurement window: only the incremental path is timed.
    let timing = ResyncTiming {
        debounce: Duration::from_secs(3600),
        max_wait: Duration::from_secs(3600),
        interval: Duration::from_secs(3600),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(1),
    };
    tokio::spawn(discovery::run(
        client,
        Discovery::new(Policy::default(), publisher.clone()),
        rx,
        timing,
    ));
    while publisher.load().apps.len() < 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lat = Vec::with_capacity(5_000);
    for i in 0..5_000usize {
        let app = i % 1_000;
        let task_id = format!(
            "team{}_app{app}.instance-{app:08x}-{:04x}-11e8-a129-70b3d5800001._app.1",
            app % 50,
            0
        );
        let state = if (i / 1_000) % 2 == 0 {
            "TASK_KILLED"
        } else {
            "TASK_RUNNING"
        };
        let change = Change::TaskStatus {
            app_id: format!("/team{}/app{app}", app % 50),
            task_id,
            state: state.into(),
            host: format!("10.0.0.{}", app % 250),
            ports: vec![31000, 32000],
            ip_addresses: vec![],
            timestamp: None,
        };
        let v = publisher.load().version;
        let t = Instant::now();
        tx.send(change).await.expect("discovery alive");
        while publisher.load().version == v {
            tokio::task::yield_now().await;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "event -> snapshot swap, 1,000 apps: p50 {:.0} us, p99 {:.0} us, max {:.0} us over {} events (goal p99 < 5 ms)",
        pct(&lat, 0.5).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6,
        lat.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test` runs benches without --bench; keep that quick.
    if !args.iter().any(|a| a == "--bench") {
        println!("snapshot bench: run with `cargo bench --bench snapshot`");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--build") {
        snapshot_build(&args[i + 1]);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("apps.json");
    std::fs::write(&path, apps_body(10_000, 3)).expect("write body");
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--bench", "--build"])
        .arg(&path)
        .status()
        .expect("child bench");
    assert!(status.success());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(event_to_swap());
}
