//! The simulated cluster and the changes made to it.

use super::task_server::serve_task;
use super::wire::{instance_of, now_ts, split_tasks};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub bind: SocketAddr,
    /// Start a real HTTP server on loopback for every task (answers `<app id> <task id>`).
    pub serve_tasks: bool,
    /// Mark new tasks of apps with health checks healthy at once (as a check would shortly after start).
    pub auto_healthy: bool,
    pub keepalive: Duration,
    pub callbacks_enabled: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            serve_tasks: false,
            auto_healthy: true,
            keepalive: Duration::from_secs(10),
            callbacks_enabled: false,
        }
    }
}

/// What a test or the dev command asks for when creating an app.
#[derive(Debug, Clone, Default)]
pub struct AppSpec {
    pub id: String,
    pub instances: usize,
    pub health_check: bool,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Service ports to declare (allocated when empty: one port).
    pub ports: usize,
    /// These service ports instead of allocated ones.
    pub service_ports: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    pub path_and_query: String,
    pub accept: Vec<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) apps: BTreeMap<String, Value>,
    pub(super) tasks: BTreeMap<String, Vec<Value>>,
    pub(super) fail_status: Option<u16>,
    pub(super) credentials: Option<(String, String)>,
    pub(super) redirect_events_to: Option<String>,
    pub(super) callbacks_enabled: bool,
    pub(super) subscribers: BTreeSet<String>,
    pub(super) stalled: bool,
    pub(super) task_servers: HashMap<String, tokio::task::AbortHandle>,
    pub(super) next_task: u64,
    pub(super) next_service_port: u32,
    pub(super) next_host_port: u32,
    pub(super) requests: Vec<RequestLog>,
}

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    pub(super) events: broadcast::Sender<(String, String)>,
    /// Bumped to end every open event stream.
    pub(super) generation: watch::Sender<u64>,
    pub(super) opts: SimOptions,
    pub(super) addr: SocketAddr,
    pub(super) http: reqwest::Client,
}

#[derive(Clone)]
pub struct Simulator {
    pub(super) inner: Arc<Inner>,
}

impl Simulator {
    pub async fn start(opts: SimOptions) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let (generation, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                callbacks_enabled: opts.callbacks_enabled,
                next_service_port: 10000,
                next_host_port: 31000,
                ..State::default()
            }),
            events,
            generation,
            opts,
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        });
        let sim = Simulator { inner };
        let server = sim.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sim = server.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sim = sim.clone();
                        async move { Ok::<_, Infallible>(sim.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(sim)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the apps with those of a `/v2/apps` body (tasks included), as-is.
    pub fn load_apps_body(&self, body: &str) -> Result<(), serde_json::Error> {
        let v: Value = serde_json::from_str(body)?;
        let mut st = self.lock();
        st.apps.clear();
        st.tasks.clear();
        for app in v
            .get("apps")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let (id, app, tasks) = split_tasks(app);
            st.tasks.insert(id.clone(), tasks.unwrap_or_default());
            st.apps.insert(id, app);
        }
        drop(st);
        self.emit(json!({"eventType":"group_change_success","groupId":"/","version":now_ts(),"timestamp":now_ts()}));
        Ok(())
    }

    /// Adds or replaces one app definition (raw JSON, tasks included if present) and announces it.
    pub fn put_app_json(&self, app: Value) {
        let (id, app, tasks) = split_tasks(app);
        {
            let mut st = self.lock();
            if let Some(tasks) = tasks {
                st.tasks.insert(id.clone(), tasks);
            }
            st.apps.insert(id.clone(), app.clone());
        }
        self.emit(
            json!({"clientIp":"127.0.0.1","uri":format!("/v2/apps{id}"),"appDefinition":app,
            "eventType":"api_post_event","timestamp":now_ts()}),
        );
    }

    pub async fn create_app(&self, spec: AppSpec) -> String {
        let ports = spec.ports.max(spec.service_ports.len()).max(1);
        let app = {
            let mut st = self.lock();
            let defs: Vec<Value> = (0..ports)
                .map(|i| {
                    let p = match spec.service_ports.get(i) {
                        Some(p) => *p,
                        None => {
                            st.next_service_port += 1;
                            st.next_service_port - 1
                        }
                    };
                    json!({"port": p, "protocol": "tcp", "name": if i == 0 { "http".to_string() } else { format!("p{i}") }, "labels": {}})
                })
                .collect();
            let mut app = json!({
                "id": spec.id, "instances": spec.instances, "cmd": "demo", "cpus": 0.1, "mem": 32,
                "labels": spec.labels, "env": spec.env, "networks": [{"mode": "host"}],
                "portDefinitions": defs, "requirePorts": false, "version": now_ts(),
                "healthChecks": [], "deployments": [], "unreachableStrategy": "disabled",
            });
            if spec.health_check {
                app["healthChecks"] = json!([{"protocol":"HTTP","path":"/health","portIndex":0,
                    "gracePeriodSeconds":5,"intervalSeconds":2,"timeoutSeconds":1,"maxConsecutiveFailures":3}]);
            }
            st.apps.insert(spec.id.clone(), app.clone());
            st.tasks.entry(spec.id.clone()).or_default();
            app
        };
        self.emit(
            json!({"clientIp":"127.0.0.1","uri":"/v2/apps","appDefinition":app,
            "eventType":"api_post_event","timestamp":now_ts()}),
        );
        self.scale(&spec.id, spec.instances).await;
        spec.id
    }

    fn ports_of(&self, app_id: &str) -> usize {
        self.lock()
            .apps
            .get(app_id)
            .and_then(|a| a.get("portDefinitions"))
            .and_then(Value::as_array)
            .map(|d| d.len())
            .unwrap_or(1)
    }

    async fn task_port(&self, app_id: &str, task_id: &str) -> u32 {
        if self.inner.opts.serve_tasks {
            if let Ok((port, abort)) = serve_task(app_id.to_string(), task_id.to_string()).await {
                self.lock().task_servers.insert(task_id.to_string(), abort);
                return u32::from(port);
            }
        }
        let mut st = self.lock();
        st.next_host_port += 1;
        st.next_host_port
    }

    /// Starts or kills tasks until the app has `n`, announcing each change as Marathon does.
    pub async fn scale(&self, app_id: &str, n: usize) {
        let current = self.tasks(app_id).len();
        if n < current {
            let doomed: Vec<String> = self.tasks(app_id)[n..]
                .iter()
                .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
                .collect();
            for t in doomed {
                self.kill_task(&t);
            }
        }
        let nports = self.ports_of(app_id);
        let has_checks = self
            .lock()
            .apps
            .get(app_id)
            .and_then(|a| a.get("healthChecks"))
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        for _ in current..n {
            let task_id = {
                let mut st = self.lock();
                st.next_task += 1;
                format!(
                    "{}.instance-{:08x}-caaa-11e8-a129-{:012x}._app.1",
                    app_id.trim_start_matches('/').replace('/', "_"),
                    st.next_task,
                    rand::random::<u64>() & 0xffff_ffff_ffff
                )
            };
            let mut ports = Vec::with_capacity(nports);
            for _ in 0..nports {
                ports.push(self.task_port(app_id, &task_id).await);
            }
            let version = self
                .lock()
                .apps
                .get(app_id)
                .and_then(|a| a.get("version").cloned())
                .unwrap_or(Value::Null);
            let mut task = json!({
                "id": task_id, "appId": app_id, "host": "127.0.0.1", "ports": ports,
                "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
                "state": "TASK_RUNNING", "stagedAt": now_ts(), "startedAt": now_ts(),
                "version": version, "slaveId": "sim-S0", "localVolumes": []
            });
            let healthy_now = has_checks && self.inner.opts.auto_healthy;
            if healthy_now {
                task["healthCheckResults"] = json!([{"alive": true, "consecutiveFailures": 0,
                    "firstSuccess": now_ts(), "lastSuccess": now_ts(), "lastFailure": null,
                    "lastFailureCause": null, "instanceId": instance_of(&task_id)}]);
            }
            self.lock()
                .tasks
                .entry(app_id.to_string())
                .or_default()
                .push(task);
            self.emit(json!({"slaveId":"sim-S0","taskId":task_id,"taskStatus":"TASK_RUNNING","message":"",
                "appId":app_id,"host":"127.0.0.1","ipAddresses":[{"ipAddress":"127.0.0.1","protocol":"IPv4"}],
                "ports":ports,"version":version,"eventType":"status_update_event","timestamp":now_ts()}));
            if healthy_now {
                self.emit(json!({"appId":app_id,"instanceId":instance_of(&task_id),"version":version,"alive":true,
                    "eventType":"health_status_changed_event","timestamp":now_ts()}));
            }
        }
        if let Some(app) = self.lock().apps.get_mut(app_id) {
            app["instances"] = json!(n);
        }
        self.emit(json!({"id":format!("sim-deploy-{n}"),"plan":{"id":"sim","steps":[{"actions":[{"action":"ScaleApplication","app":app_id}]}],"version":now_ts()},
            "eventType":"deployment_success","timestamp":now_ts()}));
    }

    pub fn tasks(&self, app_id: &str) -> Vec<Value> {
        self.lock().tasks.get(app_id).cloned().unwrap_or_default()
    }

    pub fn task_ids(&self, app_id: &str) -> Vec<String> {
        self.tasks(app_id)
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// The task disappears and a `TASK_KILLED` status update is sent.
    pub fn kill_task(&self, task_id: &str) {
        let mut found = None;
        {
            let mut st = self.lock();
            for (app, tasks) in st.tasks.iter_mut() {
                if let Some(pos) = tasks
                    .iter()
                    .position(|t| t.get("id").and_then(Value::as_str) == Some(task_id))
                {
                    found = Some((app.clone(), tasks.remove(pos)));
                    break;
                }
            }
            if let Some(h) = st.task_servers.remove(task_id) {
                h.abort();
            }
        }
        if let Some((app_id, task)) = found {
            self.emit(json!({"slaveId":"sim-S0","taskId":task_id,"taskStatus":"TASK_KILLED","message":"",
                "appId":app_id,"host":task.get("host"),"ipAddresses":task.get("ipAddresses"),
                "ports":task.get("ports"),"version":task.get("version"),"eventType":"status_update_event",
                "timestamp":now_ts()}));
        }
    }

    /// Sets every health result of a task and sends the 1.4+ health event.
    pub fn set_health(&self, task_id: &str, alive: bool) {
        let mut app_id = None;
        {
            let mut st = self.lock();
            for (app, tasks) in st.tasks.iter_mut() {
                for t in tasks.iter_mut() {
                    if t.get("id").and_then(Value::as_str) == Some(task_id) {
                        t["healthCheckResults"] = json!([{"alive": alive, "consecutiveFailures": if alive {0} else {3},
                            "instanceId": instance_of(task_id), "lastFailureCause": if alive { Value::Null } else { json!("503") }}]);
                        app_id = Some(app.clone());
                    }
                }
            }
        }
        if let Some(app_id) = app_id {
            self.emit(json!({"appId":app_id,"instanceId":instance_of(task_id),"version":now_ts(),"alive":alive,
                "eventType":"health_status_changed_event","timestamp":now_ts()}));
        }
    }

    /// Stops an app: its tasks go, then `app_terminated_event`.
    pub fn remove_app(&self, app_id: &str) {
        let aborts: Vec<tokio::task::AbortHandle> = {
            let mut st = self.lock();
            st.apps.remove(app_id);
            let tasks = st.tasks.remove(app_id).unwrap_or_default();
            tasks
                .iter()
                .filter_map(|t| t.get("id").and_then(Value::as_str))
                .filter_map(|id| st.task_servers.remove(id))
                .collect()
        };
        for a in aborts {
            a.abort();
        }
        self.emit(json!({"appId":app_id,"eventType":"app_terminated_event","timestamp":now_ts()}));
    }

    /// Publishes an event to every stream and callback subscriber.
    pub fn emit(&self, event: Value) {
        let kind = event
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let data = event.to_string();
        let _ = self.inner.events.send((kind, data.clone()));
        let subscribers: Vec<String> = {
            let st = self.lock();
            if st.callbacks_enabled {
                st.subscribers.iter().cloned().collect()
            } else {
                Vec::new()
            }
        };
        for url in subscribers {
            let http = self.inner.http.clone();
            let data = data.clone();
            // Marathon posts concurrently and unordered.
            tokio::spawn(async move {
                let _ = http
                    .post(url)
                    .header("Content-Type", "application/json; charset=UTF-8")
                    .body(data)
                    .send()
                    .await;
            });
        }
    }
}
