//! marathon-lb's blue/green deployments end to end: the real binary, the simulator's apps labelled as `zdd.py`
//! labels them, their tasks real HTTP servers answering `<app> <task>`, load running throughout, and the stats
//! port `zdd.py` watches.

mod common;

use common::{cluster, free_port, labels, start_against, Rattan};
use rattan::dev::simulator::{AppSpec, Simulator};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One stats row, by column, as `zdd.py` reads the CSV.
type Row = BTreeMap<String, String>;

async fn stats_csv(stats: u16) -> Vec<Row> {
    let text = reqwest::get(format!("http://127.0.0.1:{stats}/haproxy?stats;csv"))
        .await
        .expect("stats answer")
        .text()
        .await
        .expect("stats body");
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .expect("header")
        .trim_start_matches("# ")
        .trim_end_matches(',')
        .split(',')
        .map(str::to_string)
        .collect();
    assert!(
        !head.contains(&"-".to_string()),
        "a column zdd.py cannot name"
    );
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(
                cells.len(),
                head.len() + 1,
                "every row ends in a comma: {l}"
            );
            head.iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

/// The server rows of one backend: svname → (status, scur).
async fn servers(stats: u16, px: &str) -> BTreeMap<String, (String, u64)> {
    stats_csv(stats)
        .await
        .into_iter()
        .filter(|r| r["pxname"] == px && r["svname"] != "FRONTEND" && r["svname"] != "BACKEND")
        .map(|r| {
            (
                r["svname"].clone(),
                (r["status"].clone(), r["scur"].parse().unwrap_or(u64::MAX)),
            )
        })
        .collect()
}

/// Task id → the stats name of its server (`127_0_0_1_<port>`), in task-id order.
fn svnames(m: &Simulator, app: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = m
        .tasks(app)
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                format!("127_0_0_1_{}", t["ports"][0]),
            )
        })
        .collect();
    out.sort();
    out
}

fn colour(id: &str, started: &str, service: u16, port: u16) -> AppSpec {
    AppSpec {
        id: id.into(),
        instances: 0,
        labels: labels(&[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_DEPLOYMENT_GROUP", "web"),
            ("HAPROXY_DEPLOYMENT_STARTED_AT", started),
            ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "3"),
            ("HAPROXY_0_PORT", &port.to_string()),
            ("HAPROXY_0_MODE", "http"),
        ]),
        service_ports: vec![u32::from(service)],
        ..AppSpec::default()
    }
}

/// Clients looping on the port: every answer's task is recorded, every failure counted.
struct Load {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (seen, ok, failed, stop) =
                    (seen.clone(), ok.clone(), failed.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let url = format!("http://127.0.0.1:{port}/");
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let body = r.text().await.unwrap_or_default();
                                let task = body.split_whitespace().nth(1).unwrap_or("").to_string();
                                *seen.lock().unwrap().entry(task).or_default() += 1;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failed
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            seen,
            ok,
            failed,
            stop,
            tasks,
        }
    }

    /// The tasks that answered during `window`, from requests started after its beginning.
    async fn sample(&self, window: Duration) -> BTreeSet<String> {
        // Requests picked before the last change may still be answering: let them finish first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.seen.lock().unwrap().clear();
        tokio::time::sleep(window).await;
        self.seen.lock().unwrap().keys().cloned().collect()
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// Waits until the backend shows `maint` draining servers and `up` serving ones.
async fn wait_servers(r: &Rattan, (stats, px): (u16, &str), up: usize, maint: usize) {
    r.wait_until(&format!("{up} UP and {maint} MAINT"), async || {
        let s = servers(stats, px).await;
        s.values().filter(|(st, _)| st == "UP").count() == up
            && s.values().filter(|(st, _)| st == "MAINT").count() == maint
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zdd_walk_drains_blue_as_green_serves_and_loses_nothing() {
    let m = cluster().await;
    let (port, stats) = (free_port(), free_port());
    let (blue_sp, green_sp) = (free_port(), free_port());
    let px = &format!("web_{port}");
    m.create_app(colour(
        "/web-blue",
        "2026-12-01T10:00:00.000Z",
        blue_sp,
        port,
    ))
    .await;
    m.scale("/web-blue", 3).await;
    let stats_bind = format!("127.0.0.1:{stats}");
    let r = start_against(
        &m.url(),
        &["--group", "external", "--stats-bind", &stats_bind],
    );
    wait_servers(&r, (stats, px), 3, 0).await;

    // What zdd.py asks first: one process (no reload in progress), and the health check.
    let pids = reqwest::get(format!("http://127.0.0.1:{stats}/_haproxy_getpids"))
        .await
        .expect("getpids")
        .text()
        .await
        .expect("body");
    assert_eq!(
        pids.split_whitespace().collect::<Vec<_>>(),
        [r.pid().to_string()]
    );
    let health = reqwest::get(format!("http://127.0.0.1:{stats}/_haproxy_health_check"))
        .await
        .expect("health check");
    assert_eq!(health.status(), 200);
    let rows = stats_csv(stats).await;
    let kinds: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| &r["pxname"] == px)
        .map(|r| {
            (
                r["svname"].as_str(),
                r["type"].as_str(),
                r["status"].as_str(),
            )
        })
        .collect();
    assert_eq!(kinds.first(), Some(&("FRONTEND", "0", "OPEN")), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&("BACKEND", "1", "UP")), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| k.1 == "2").count(), 3);

    let load = Load::start(port, 8);
    let blue = svnames(&m, "/web-blue");
    let blue_ids: Vec<&str> = blue.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(load.sample(Duration::from_millis(300)).await.len(), 3);

    // Green (zdd.py's new colour: a later start, the same frontend port, its own service port) scaled 1 → 3.
    m.create_app(colour(
        "/web-green",
        "2026-12-06T10:00:00.000Z",
        green_sp,
        port,
    ))
    .await;
    let mut slow = Vec::new();
    for step in 1..=3usize {
        if step == 3 {
            // Requests in flight on the last blue task when it drains must still complete.
            for _ in 0..6 {
                slow.push(tokio::spawn(async move {
                    let r = reqwest::get(format!("http://127.0.0.1:{port}/slow"))
                        .await
                        .expect("slow request answered");
                    (r.status().as_u16(), r.text().await.unwrap_or_default())
                }));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        m.scale("/web-green", step).await;
        wait_servers(&r, (stats, px), 3, step).await;
        let green: Vec<String> = svnames(&m, "/web-green").into_iter().map(|t| t.0).collect();
        // Lowest blue task ids drain first; each step's traffic only reaches the tasks still serving.
        let serving: BTreeSet<String> = blue_ids[step..]
            .iter()
            .map(|s| s.to_string())
            .chain(green.iter().cloned())
            .collect();
        let seen = load.sample(Duration::from_millis(400)).await;
        assert_eq!(seen, serving, "step {step}: traffic on draining tasks");
        let rows = servers(stats, px).await;
        for (id, sv) in &blue {
            let drained = blue_ids[..step].contains(&id.as_str());
            assert_eq!(
                rows[sv].0,
                if drained { "MAINT" } else { "UP" },
                "{id} at step {step}"
            );
        }
    }
    // The last blue task is draining with requests still in flight: MAINT with scur > 0, as zdd.py waits on.
    let last = &blue[2].1;
    let in_flight = servers(stats, px).await[last].clone();
    assert_eq!(in_flight.0, "MAINT");
    assert!(
        in_flight.1 > 0,
        "slow requests in flight on {last}: {in_flight:?}"
    );
    let mut on_blue = 0;
    for s in slow {
        let (status, body) = s.await.expect("slow task");
        assert_eq!(status, 200, "{body}");
        on_blue += usize::from(body.contains(blue_ids[2]));
    }
    assert!(on_blue > 0, "no slow request went to the last blue task");
    r.wait_until("drained blue task has nothing in flight", async || {
        servers(stats, px).await[last].1 == 0
    })
    .await;

    // zdd.py then kills the drained tasks and deletes blue: green alone keeps the port and the group's name.
    for id in &blue_ids {
        m.kill_task(id);
    }
    m.remove_app("/web-blue");
    wait_servers(&r, (stats, px), 3, 0).await;
    let seen = load.sample(Duration::from_millis(300)).await;
    let green: BTreeSet<String> = svnames(&m, "/web-green").into_iter().map(|t| t.0).collect();
    assert_eq!(seen, green);
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests ran");
}
