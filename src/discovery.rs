//! The last good view of Marathon's apps and tasks. Applies `Change`s at once where an event says enough (a task
//! gone, a health flip, an app removed), and reconciles with debounced full snapshots. A failed fetch never
//! replaces the last good view.

use crate::apps::{AppView, Apps, HealthCheckView, TaskView};
use crate::marathon::address::{self, Endpoint};
use crate::marathon::api::MarathonClient;
use crate::marathon::events::Change;
use crate::marathon::model::{parse_timestamp, App, Task};
use crate::snapshot::Publisher;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub ignore_health: bool,
    pub prefer_host_port: bool,
}

struct Entry {
    /// The app definition without its tasks.
    app: App,
    tasks: Vec<Task>,
    /// Last known health per task id: results vanish after a Marathon leader failover, and a task that was
    /// healthy a moment ago should not drop out for a check interval.
    known_health: HashMap<String, bool>,
    view: Arc<AppView>,
}

pub struct Discovery {
    entries: BTreeMap<String, Entry>,
    policy: Policy,
    publisher: Arc<Publisher>,
}

/// Bamboo's `Id`: one leading `/` stripped, then `/` prepended.
fn bamboo_id(raw: &str) -> String {
    format!("/{}", raw.strip_prefix('/').unwrap_or(raw))
}

fn mesos_dns_id(raw: &str) -> String {
    raw.split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .collect::<Vec<_>>()
        .join("-")
}

fn task_health(app: &App, task: &Task, known: &HashMap<String, bool>) -> bool {
    if app.health_checks.is_empty() {
        return true;
    }
    match &task.health_check_results {
        Some(results) if !results.is_empty() => results.iter().all(|r| r.alive),
        _ => known.get(&task.id).copied().unwrap_or(false),
    }
}

fn task_ready(app: &App, task: &Task, now: time::OffsetDateTime) -> bool {
    if !address::is_running(task) {
        return false;
    }
    let Some(check) = app.readiness_checks.first() else {
        return true;
    };
    if !app.has_deployments() {
        return true;
    }
    if let Some(r) = app
        .readiness_check_results
        .iter()
        .find(|r| r.task_id.as_deref() == Some(task.id.as_str()))
    {
        return r.ready;
    }
    // Bamboo's fallback: no result yet, so the task counts as ready once it has been up longer than the check
    // could take.
    let grace = match check.timeout_seconds.unwrap_or(0) {
        0 => 10,
        t => i64::from(t) + 5,
    };
    match task.started_at.as_deref().and_then(parse_timestamp) {
        Some(started) => (now - started).whole_seconds() >= grace,
        None => false,
    }
}

/// Derives the view of one app: Bamboo's fields plus routable backends per port index.
pub fn build_view(
    app: &App,
    tasks: &[Task],
    known: &HashMap<String, bool>,
    policy: Policy,
) -> AppView {
    let now = time::OffsetDateTime::now_utc();
    let health_checks: Vec<HealthCheckView> = app
        .health_checks
        .iter()
        .map(|h| HealthCheckView {
            protocol: h.protocol.clone().unwrap_or_default(),
            path: h.path.clone().unwrap_or_default(),
            port_index: h.port_index.unwrap_or(0),
        })
        .collect();
    let http_check = health_checks
        .iter()
        .find(|h| h.protocol == "HTTP" || h.protocol == "HTTPS");
    let service_ports = address::service_ports(app);
    let port_names: Vec<String> = if !app.port_definitions.is_empty() {
        app.port_definitions
            .iter()
            .map(|p| p.name.clone().unwrap_or_default())
            .collect()
    } else {
        app.port_mappings()
            .iter()
            .map(|m| m.name.clone().unwrap_or_default())
            .collect()
    };

    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut views = Vec::with_capacity(sorted.len());
    let mut backends: Vec<Vec<Endpoint>> = Vec::new();
    for task in sorted {
        let endpoints = address::endpoints(app, task, policy.prefer_host_port);
        let alive = task_health(app, task, known);
        let ready = task_ready(app, task, now);
        let routable = address::is_running(task) && ready && (alive || policy.ignore_health);
        if routable {
            if backends.len() < endpoints.len() {
                backends.resize_with(endpoints.len(), Vec::new);
            }
            for (i, e) in endpoints.iter().enumerate() {
                if let Some(e) = e {
                    backends[i].push(e.clone());
                }
            }
        }
        let (host, port) = match endpoints.first().cloned().flatten() {
            Some(e) => (e.host, u32::from(e.port)),
            None => (
                Arc::from(task.host.as_str()),
                task.ports.first().copied().unwrap_or(0),
            ),
        };
        views.push(TaskView {
            id: task.id.clone(),
            host,
            port,
            ports: task.ports.clone(),
            state: task.state.clone().unwrap_or_else(|| {
                if address::is_running(task) {
                    "TASK_RUNNING".into()
                } else {
                    String::new()
                }
            }),
            alive,
            ready,
            routable,
            draining: false,
            endpoints,
        });
    }
    AppView {
        id: bamboo_id(&app.id),
        escaped_id: app.id.replace('/', "::"),
        mesos_dns_id: mesos_dns_id(&app.id),
        split_id: app.id.split('/').map(str::to_string).collect(),
        labels: app.labels.clone(),
        env: app.env.vars.clone(),
        health_check_path: http_check.map(|h| h.path.clone()).unwrap_or_default(),
        health_check_protocol: http_check.map(|h| h.protocol.clone()).unwrap_or_default(),
        health_checks,
        readiness_check_path: app
            .readiness_checks
            .first()
            .and_then(|r| r.path.clone())
            .unwrap_or_default(),
        service_ports,
        port_names,
        discovery_ports: app
            .ip_address
            .as_ref()
            .and_then(|a| a.discovery.as_ref())
            .map(|d| d.ports.clone())
            .unwrap_or_default(),
        tasks: views,
        backends,
        instances: app.instances,
        deployment_group: app
            .labels
            .get(crate::bluegreen::GROUP)
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty()),
        deployment: None,
    }
}

impl Discovery {
    pub fn new(policy: Policy, publisher: Arc<Publisher>) -> Discovery {
        Discovery {
            entries: BTreeMap::new(),
            policy,
            publisher,
        }
    }

    fn refresh_view(&mut self, id: &str) {
        let policy = self.policy;
        if let Some(e) = self.entries.get_mut(id) {
            e.view = derive_view(&e.app, &e.tasks, &mut e.known_health, policy);
        }
    }

    fn publish(&self) {
        let mut apps: Apps = self
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.view.clone()))
            .collect();
        crate::bluegreen::merge(&mut apps);
        self.publisher.set_apps(Arc::new(apps));
    }

    /// An app as Marathon lists it, its tasks taken out, with the health its tasks reported before.
    fn entry(&self, mut app: App, mut known_health: HashMap<String, bool>) -> Entry {
        let tasks = std::mem::take(&mut app.tasks);
        let view = derive_view(&app, &tasks, &mut known_health, self.policy);
        Entry {
            app,
            tasks,
            known_health,
            view,
        }
    }

    /// Replaces the whole view with a fresh Marathon snapshot.
    pub fn apply_snapshot(&mut self, apps: Vec<App>) {
        let mut old = std::mem::take(&mut self.entries);
        for app in apps {
            let id = bamboo_id(&app.id);
            let known_health = old.remove(&id).map(|e| e.known_health).unwrap_or_default();
            let entry = self.entry(app, known_health);
            self.entries.insert(id, entry);
        }
        self.publisher
            .marathon_synced
            .store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Replaces one app (`None`: it is gone) from its own fetch, as a snapshot would; the others stay as they are.
    pub fn apply_app(&mut self, id: &str, app: Option<App>) {
        let id = bamboo_id(id);
        match app {
            Some(app) => {
                let known_health = self
                    .entries
                    .remove(&id)
                    .map(|e| e.known_health)
                    .unwrap_or_default();
                let entry = self.entry(app, known_health);
                self.entries.insert(id, entry);
            }
            None => {
                if self.entries.remove(&id).is_none() {
                    return;
                }
            }
        }
        self.publish();
    }

    /// Applies what an event says on its own. Returns whether the snapshot changed.
    pub fn apply_event(&mut self, change: &Change) -> bool {
        match change {
            Change::TaskStatus {
                app_id,
                task_id,
                state,
                host,
                ports,
                ip_addresses,
                timestamp,
            } => {
                let id = bamboo_id(app_id);
                let Some(entry) = self.entries.get_mut(&id) else {
                    return false;
                };
                let pos = entry.tasks.iter().position(|t| &t.id == task_id);
                if address::is_terminal_or_leaving(state) {
                    match pos {
                        Some(p) => {
                            entry.tasks.remove(p);
                        }
                        None => return false,
                    }
                } else {
                    // An event never brings an address of its own (a forged callback could point traffic anywhere):
                    // a task Marathon has not listed, or a known task at another address, waits for the fetch
                    // the event schedules. Only the state of a task as Marathon listed it changes here.
                    let Some(p) = pos else { return false };
                    let t = &mut entry.tasks[p];
                    let moved = (!host.is_empty() && *host != t.host)
                        || (!ports.is_empty() && *ports != t.ports)
                        || (!ip_addresses.is_empty() && *ip_addresses != t.ip_addresses);
                    if moved || t.state.as_deref() == Some(state.as_str()) {
                        return false;
                    }
                    t.state = Some(state.clone());
                    if t.started_at.is_none() {
                        t.started_at = timestamp.clone();
                    }
                }
                self.refresh_view(&id);
                self.publish();
                true
            }
            Change::Health {
                app_id,
                id: hid,
                alive,
            } => {
                let Some(alive) = alive else { return false };
                let id = bamboo_id(app_id);
                let Some(entry) = self.entries.get_mut(&id) else {
                    return false;
                };
                let checks = entry.app.health_checks.len().max(1);
                let mut hit = false;
                for t in entry.tasks.iter_mut() {
                    if &t.id == hid || address::instance_id(&t.id).as_deref() == Some(hid.as_str())
                    {
                        t.health_check_results = Some(
                            (0..checks)
                                .map(|_| crate::marathon::model::HealthResult { alive: *alive })
                                .collect(),
                        );
                        hit = true;
                    }
                }
                if hit {
                    self.refresh_view(&id);
                    self.publish();
                }
                hit
            }
            Change::AppTerminated { app_id } => {
                if self.entries.remove(&bamboo_id(app_id)).is_some() {
                    self.publish();
                    true
                } else {
                    false
                }
            }
            Change::Connected | Change::Invalidate { .. } | Change::Disconnected { .. } => false,
        }
    }
}

/// Remembers the health of tasks that report results (and forgets tasks that are gone), then builds the view.
fn derive_view(
    app: &App,
    tasks: &[Task],
    known_health: &mut HashMap<String, bool>,
    policy: Policy,
) -> Arc<AppView> {
    for t in tasks {
        if let Some(results) = t.health_check_results.as_ref().filter(|r| !r.is_empty()) {
            known_health.insert(t.id.clone(), results.iter().all(|r| r.alive));
        }
    }
    let live: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    known_health.retain(|k, _| live.contains(k.as_str()));
    Arc::new(build_view(app, tasks, known_health, policy))
}

#[derive(Debug, Clone, Copy)]
pub struct ResyncTiming {
    /// Quiet time after the last event before fetching.
    pub debounce: Duration,
    /// Longest wait since the first pending event.
    pub max_wait: Duration,
    /// Safety resync even when events flow.
    pub interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for ResyncTiming {
    fn default() -> Self {
        ResyncTiming {
            debounce: Duration::from_millis(250),
            max_wait: Duration::from_secs(2),
            interval: Duration::from_secs(300),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// One app's own fetches in flight at most; past it, events wait for the full snapshot.
const APP_FETCHES: usize = 8;

/// One app is fetched on its own at most this often (or once per debounce, when that is shorter).
const APP_REFETCH: Duration = Duration::from_millis(250);

/// The app an event calls for a fetch of, at once: a task that is running but not yet listed (or moved), which
/// an event alone never routes to; an app whose definition changed. The debounced full snapshot still follows.
fn app_to_fetch(change: &Change, applied: bool) -> Option<String> {
    match change {
        Change::TaskStatus { app_id, state, .. }
            if !applied && !address::is_terminal_or_leaving(state) =>
        {
            Some(bamboo_id(app_id))
        }
        Change::Invalidate { app_id: Some(id) } => Some(bamboo_id(id)),
        _ => None,
    }
}

/// Runs discovery: applies changes from `rx`, schedules debounced full snapshots, publishes.
pub async fn run(
    client: Arc<MarathonClient>,
    mut discovery: Discovery,
    mut rx: mpsc::Receiver<Change>,
    timing: ResyncTiming,
) {
    let (fetched_tx, mut fetched_rx) = mpsc::channel::<(u64, Result<Vec<App>, String>)>(1);
    // One app's own fetches (an event about an app that cannot apply alone): (app id, the full fetches started
    // before it, the app).
    let (app_tx, mut app_rx) =
        mpsc::channel::<(String, u64, Result<Option<App>, String>)>(APP_FETCHES);
    let mut app_fetching: std::collections::HashSet<String> = Default::default();
    // When each app was last fetched on its own: at most once per debounce interval, so a storm of events about
    // one app costs a few fetches, and the rest waits for the (debounced) full snapshot.
    let mut app_fetched: HashMap<String, Instant> = HashMap::new();
    // Full fetches started, and the one whose result is in: an app fetched before a full snapshot that came in
    // after it is older than that snapshot, and is dropped.
    let (mut full_started, mut full_applied) = (0u64, 0u64);
    let mut fetching = false;
    // Start with a fetch right away.
    let mut due: Option<Instant> = Some(Instant::now());
    let mut first_pending: Option<Instant> = None;
    let mut urgent = false;
    let mut retry = crate::backoff::Backoff::new(timing.retry_min, timing.retry_max);
    let mut next_periodic = Instant::now() + timing.interval;

    loop {
        let wake = match (due, fetching) {
            (Some(d), false) => d.min(next_periodic),
            _ => next_periodic,
        };
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { return };
                let applied = discovery.apply_event(&change);
                let now = Instant::now();
                if let Some(id) = app_to_fetch(&change, applied) {
                    let every = timing.debounce.min(APP_REFETCH);
                    let recent = app_fetched
                        .get(&id)
                        .is_some_and(|t| now.saturating_duration_since(*t) < every);
                    if !recent && app_fetching.len() < APP_FETCHES && app_fetching.insert(id.clone()) {
                        if app_fetched.len() >= 4096 {
                            app_fetched.retain(|_, t| now.saturating_duration_since(*t) < every);
                        }
                        app_fetched.insert(id.clone(), now);
                        let (client, tx, started) = (client.clone(), app_tx.clone(), full_started);
                        tokio::spawn(async move {
                            let r = client.fetch_app(&id).await;
                            let _ = tx.send((id, started, r)).await;
                        });
                    }
                }
                if let Change::Disconnected { why } = &change {
                    // Blind until the stream is back: a fetch tells whether Marathon itself is reachable (and keeps
                    // the table fresh if it is); the stream's back-off paces these.
                    if discovery.publisher.marathon_synced.load(std::sync::atomic::Ordering::Relaxed) {
                        discovery.publisher.health.report(
                            crate::health::MARATHON,
                            crate::health::State::Degraded,
                            format!("event stream down: {why}"),
                        );
                    }
                    if !fetching {
                        due = Some(due.map_or(now, |d| d.min(now)));
                    }
                } else if change == Change::Connected {
                    // Events may have been missed: fetch now, not after the debounce.
                    due = Some(now);
                    urgent = true;
                } else if !urgent {
                    // Trailing debounce capped by max-wait: a storm gives one fetch per max-wait, not one per event.
                    let first = *first_pending.get_or_insert(now);
                    due = Some((now + timing.debounce).min(first + timing.max_wait));
                }
            }
            Some((id, started, result)) = app_rx.recv() => {
                app_fetching.remove(&id);
                match result {
                    Ok(app) if started >= full_applied => discovery.apply_app(&id, app),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(app = %id, error = %e, "app fetch failed; the full snapshot follows"),
                }
            }
            result = fetched_rx.recv() => {
                fetching = false;
                let publisher = discovery.publisher.clone();
                let health = &publisher.health;
                let (gen, result) = result.unwrap_or((0, Err("fetch task ended".into())));
                match result {
                    Ok(apps) => {
                        full_applied = full_applied.max(gen);
                        retry.reset();
                        let n = apps.len();
                        discovery.apply_snapshot(apps);
                        health.report(crate::health::MARATHON, crate::health::State::Ok, format!("snapshot of {n} apps"));
                    }
                    Err(e) => {
                        let synced = publisher.marathon_synced.load(std::sync::atomic::Ordering::Relaxed);
                        let (state, detail) = if synced {
                            (crate::health::State::Degraded, format!("unreachable, serving the last good snapshot: {e}"))
                        } else {
                            (crate::health::State::Failing, format!("no snapshot yet: {e}"))
                        };
                        health.report(crate::health::MARATHON, state, detail);
                        // Keep serving the last good view; try again later.
                        let d = retry.next_delay();
                        due = Some(due.map_or(Instant::now() + d, |x| x.min(Instant::now() + d)));
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_periodic {
                    next_periodic = now + timing.interval;
                    due.get_or_insert(now);
                }
                if let (Some(d), false) = (due, fetching) {
                    if now >= d {
                        due = None;
                        first_pending = None;
                        urgent = false;
                        fetching = true;
                        let client = client.clone();
                        let tx = fetched_tx.clone();
                        full_started += 1;
                        let gen = full_started;
                        tokio::spawn(async move {
                            let r = client.fetch_apps().await.map(|p| p.apps).map_err(|e| e.to_string());
                            let _ = tx.send((gen, r)).await;
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::model::parse_apps;

    fn fixture_apps(name: &str) -> Vec<App> {
        let path = format!(
            "{}/tests/fixtures/marathon/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_apps(&std::fs::read(path).unwrap()).unwrap().apps
    }

    fn discovery() -> (Discovery, Arc<Publisher>) {
        let p = Arc::new(Publisher::default());
        (Discovery::new(Policy::default(), p.clone()), p)
    }

    #[test]
    fn unhealthy_task_is_listed_but_not_routed() {
        let (mut d, p) = discovery();
        d.apply_snapshot(fixture_apps(
            "v2_apps.embed_tasks.1.5plus-host.code-derived.json",
        ));
        let snap = p.load();
        let app = snap.apps.get("/api").expect("app /api");
        assert_eq!(app.tasks.len(), 2);
        assert_eq!(app.tasks.iter().filter(|t| t.alive).count(), 1);
        assert_eq!(app.healthy_backends(0).len(), 1);
        assert_eq!(app.healthy_backends(1).len(), 1);
    }

    #[test]
    fn status_and_health_events_apply_at_once() {
        let (mut d, p) = discovery();
        d.apply_snapshot(fixture_apps(
            "v2_apps.embed_tasks.1.5plus-host.code-derived.json",
        ));
        let v0 = p.load().version;
        let app = p.load().apps.get("/api").unwrap().clone();
        let healthy = app.tasks.iter().find(|t| t.alive).unwrap().id.clone();
        let sick = app.tasks.iter().find(|t| !t.alive).unwrap().id.clone();

        assert!(d.apply_event(&Change::Health {
            app_id: "/api".into(),
            id: sick.clone(),
            alive: Some(true)
        }));
        assert_eq!(p.load().apps["/api"].healthy_backends(0).len(), 2);

        assert!(d.apply_event(&Change::TaskStatus {
            app_id: "/api".into(),
            task_id: healthy,
            state: "TASK_KILLED".into(),
            host: String::new(),
            ports: vec![],
            ip_addresses: vec![],
            timestamp: None,
        }));
        let snap = p.load();
        assert_eq!(snap.apps["/api"].tasks.len(), 1);
        assert_eq!(snap.apps["/api"].healthy_backends(0).len(), 1);
        assert!(snap.version > v0);

        assert!(d.apply_event(&Change::AppTerminated {
            app_id: "/api".into()
        }));
        assert!(p.load().apps.is_empty());
    }

    #[test]
    fn an_event_never_brings_an_address() {
        let (mut d, p) = discovery();
        d.apply_snapshot(fixture_apps(
            "v2_apps.embed_tasks.1.5plus-host.code-derived.json",
        ));
        let before = p.load().apps["/api"].clone();
        let known = before.tasks[0].id.clone();
        let event = |task_id: &str, host: &str, ports: Vec<u32>| Change::TaskStatus {
            app_id: "/api".into(),
            task_id: task_id.into(),
            state: "TASK_RUNNING".into(),
            host: host.into(),
            ports,
            ip_addresses: vec![],
            timestamp: None,
        };
        // A task Marathon never listed, and a listed one moved elsewhere: nothing routes to the new address.
        assert!(!d.apply_event(&event("api.evil", "203.0.113.9", vec![6666])));
        assert!(!d.apply_event(&event(&known, "203.0.113.9", vec![6666])));
        let after = p.load().apps["/api"].clone();
        assert_eq!(after.tasks.len(), before.tasks.len());
        for b in after.healthy_backends(0) {
            assert!(!b.to_string().contains("203.0.113.9"), "{b}");
        }
    }

    #[test]
    fn health_survives_a_snapshot_without_results() {
        let (mut d, p) = discovery();
        let mut apps = fixture_apps("v2_apps.embed_tasks.1.5plus-host.code-derived.json");
        d.apply_snapshot(apps.clone());
        // After a Marathon leader failover every result is missing for a while.
        for t in apps[0].tasks.iter_mut() {
            t.health_check_results = None;
        }
        d.apply_snapshot(apps);
        assert_eq!(p.load().apps["/api"].healthy_backends(0).len(), 1);
    }

    #[test]
    fn bamboo_ids() {
        assert_eq!(bamboo_id("app1"), "/app1");
        assert_eq!(bamboo_id("/grp/web"), "/grp/web");
        assert_eq!(mesos_dns_id("/a/b/app"), "app-b-a");
    }

    #[test]
    fn readiness_during_deployment() {
        let body = br#"{"apps":[{"id":"/r","deployments":[{"id":"d1"}],
          "readinessChecks":[{"name":"ready","path":"/ready","timeoutSeconds":10}],
          "readinessCheckResults":[{"taskId":"r.1","ready":false},{"taskId":"r.2","ready":true}],
          "tasks":[{"id":"r.1","host":"h","ports":[1],"state":"TASK_RUNNING","startedAt":"2015-01-01T00:00:00Z"},
                   {"id":"r.2","host":"h","ports":[2],"state":"TASK_RUNNING","startedAt":"2015-01-01T00:00:00Z"},
                   {"id":"r.3","host":"h","ports":[3],"state":"TASK_RUNNING","startedAt":"2015-01-01T00:00:00.5Z"}]}]}"#;
        let (mut d, p) = discovery();
        d.apply_snapshot(parse_apps(body).unwrap().apps);
        let ready: Vec<bool> = p.load().apps["/r"].tasks.iter().map(|t| t.ready).collect();
        // r.3 has no result but started long ago: Bamboo's fallback says ready.
        assert_eq!(ready, vec![false, true, true]);
    }
}
