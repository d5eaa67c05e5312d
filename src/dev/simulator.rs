//! An in-process Marathon stand-in with Marathon's wire formats (see the reference in `tests/fixtures/marathon`):
//! `/v2/apps` with embeds, `/v2/apps/{id}`, the `/v2/events` stream framed byte for byte (CRLF lines, a bare CRLF
//! keep-alive written as `\r` then `\n`), the 405 on a wrong `Accept`, 302 redirects of the stream, 401 with basic
//! auth, 503 outages, and HTTP callback subscriptions. `rattan dev` runs it with demo apps whose tasks are real HTTP
//! servers; the tests drive it directly.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

const JETTY_405: &str = "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/><title>Error 405 </title></head>\n<body><h2>HTTP ERROR: 405</h2><p>Problem accessing /v2/events. Reason:<pre>    HTTP method GET is not supported by this URL</pre></p>\n<hr /><a href=\"http://eclipse.org/jetty\">Powered by Jetty:// 9.3.z-SNAPSHOT</a><hr/></body></html>\n";
const CALLBACKS_OFF: &str = "{\"message\":\"http event callback system is not running on this Marathon instance. Please re-start this instance with\\n\\\"--event_subscriber http_callback\\\".\"}";

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
}

#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    pub path_and_query: String,
    pub accept: Vec<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    apps: BTreeMap<String, Value>,
    tasks: BTreeMap<String, Vec<Value>>,
    fail_status: Option<u16>,
    credentials: Option<(String, String)>,
    redirect_events_to: Option<String>,
    callbacks_enabled: bool,
    subscribers: BTreeSet<String>,
    stalled: bool,
    task_servers: HashMap<String, tokio::task::AbortHandle>,
    next_task: u64,
    next_service_port: u32,
    next_host_port: u32,
    requests: Vec<RequestLog>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<(String, String)>,
    /// Bumped to end every open event stream.
    generation: watch::Sender<u64>,
    opts: SimOptions,
    addr: SocketAddr,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

fn now_ts() -> String {
    let fmt = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
    );
    match fmt {
        Ok(f) => time::OffsetDateTime::now_utc()
            .format(&f)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json; qs=2", v.to_string())
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- controls (fault injection: the tests', behind the `sim-faults` feature) ---------------------------

    /// Every request answers this status (e.g. 503 for "no leader"); `None` restores service.
    #[cfg(feature = "sim-faults")]
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_status = status;
        if status.is_some() {
            self.drop_streams();
        }
    }

    /// Built-in basic auth, as `--http_credentials`.
    #[cfg(feature = "sim-faults")]
    pub fn require_auth(&self, user: &str, password: &str) {
        self.lock().credentials = Some((user.into(), password.into()));
    }

    /// Answer `/v2/events` with a 302 to another Marathon (a 1.7+ standby).
    #[cfg(feature = "sim-faults")]
    pub fn redirect_events_to(&self, leader: Option<String>) {
        self.lock().redirect_events_to = leader;
    }

    /// Closes every open event stream (a leader change, a network cut).
    #[cfg(feature = "sim-faults")]
    pub fn drop_streams(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Keeps streams open but sends nothing, not even keep-alives (a half-open connection).
    #[cfg(feature = "sim-faults")]
    pub fn stall_streams(&self, stalled: bool) {
        self.lock().stalled = stalled;
    }

    /// A Marathon restart: subscriptions are lost, streams drop.
    #[cfg(feature = "sim-faults")]
    pub fn restart(&self) {
        self.lock().subscribers.clear();
        self.drop_streams();
    }

    #[cfg(feature = "sim-faults")]
    pub fn subscribers(&self) -> Vec<String> {
        self.lock().subscribers.iter().cloned().collect()
    }

    #[cfg(feature = "sim-faults")]
    pub fn requests(&self) -> Vec<RequestLog> {
        self.lock().requests.clone()
    }

    #[cfg(feature = "sim-faults")]
    pub fn open_streams(&self) -> usize {
        self.inner.events.receiver_count()
    }

    // ---- cluster changes ------------------------------------------------------------------------------------

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
        let ports = spec.ports.max(1);
        let app = {
            let mut st = self.lock();
            let defs: Vec<Value> = (0..ports)
                .map(|i| {
                    let p = st.next_service_port;
                    st.next_service_port += 1;
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

    /// The task's server dies but Marathon has not noticed yet (no event, still listed as running).
    #[cfg(feature = "sim-faults")]
    pub fn crash_task_server(&self, task_id: &str) {
        if let Some(h) = self.lock().task_servers.remove(task_id) {
            h.abort();
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

    // ---- HTTP -----------------------------------------------------------------------------------------------

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let accept: Vec<String> = req
            .headers()
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (fail, creds, redirect) = {
            let mut st = self.lock();
            st.requests.push(RequestLog {
                method: req.method().to_string(),
                path_and_query: if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{query}")
                },
                accept: accept.clone(),
                authorization: authorization.clone(),
            });
            (
                st.fail_status,
                st.credentials.clone(),
                st.redirect_events_to.clone(),
            )
        };
        if let Some((u, p)) = creds {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if authorization.as_deref() != Some(expected.as_str()) {
                let mut r = full(
                    StatusCode::UNAUTHORIZED,
                    "text/html;charset=iso-8859-1",
                    "<html><body><h2>HTTP ERROR 401</h2><p>Problem accessing. Reason:<pre>    Unauthorized</pre></p></body></html>",
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Basic realm=\"Mesosphere\""),
                );
                return r;
            }
        }
        if let Some(code) = fail {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return json_resp(
                status,
                &json!({"message": "Could not determine the current leader"}),
            );
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/ping") => full(StatusCode::OK, "text/plain", "pong"),
            (&Method::GET, "/v2/info") => json_resp(
                StatusCode::OK,
                &json!({"name":"marathon","version":"1.10.17","elected":true,"leader":self.inner.addr.to_string(),
                        "frameworkId":"sim","marathon_config":{"local_port_min":10000,"local_port_max":20000}}),
            ),
            (&Method::GET, "/v2/events") => {
                if let Some(leader) = redirect {
                    let mut r = full(StatusCode::FOUND, "text/plain", "");
                    let loc = format!("{}/v2/events?{query}", leader.trim_end_matches('/'));
                    if let Ok(v) = loc.parse() {
                        r.headers_mut().insert(hyper::header::LOCATION, v);
                    }
                    return r;
                }
                // Jetty's EventSourceServlet compares each Accept value for string equality.
                if accept.is_empty() || accept.iter().any(|a| a != "text/event-stream") {
                    return full(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "text/html;charset=ISO-8859-1",
                        JETTY_405,
                    );
                }
                self.event_stream(&query)
            }
            (&Method::GET, "/v2/apps") => {
                let embed_tasks = query
                    .split('&')
                    .any(|kv| kv.starts_with("embed=") && kv.ends_with(".tasks"));
                let st = self.lock();
                let apps: Vec<Value> = st
                    .apps
                    .iter()
                    .map(|(id, a)| with_tasks(a, st.tasks.get(id), embed_tasks))
                    .collect();
                json_resp(StatusCode::OK, &json!({ "apps": apps }))
            }
            (&Method::GET, p) if p.starts_with("/v2/apps/") => {
                let id = &p["/v2/apps".len()..];
                let st = self.lock();
                match st.apps.get(id) {
                    Some(a) => json_resp(
                        StatusCode::OK,
                        &json!({"app": with_tasks(a, st.tasks.get(id), true)}),
                    ),
                    None => json_resp(
                        StatusCode::NOT_FOUND,
                        &json!({"message": format!("App '{id}' does not exist")}),
                    ),
                }
            }
            (m, "/v2/eventSubscriptions") => self.subscriptions(m.clone(), &query),
            _ => json_resp(StatusCode::NOT_FOUND, &json!({"message": "Not found"})),
        }
    }

    fn subscriptions(&self, method: Method, query: &str) -> Response<Body> {
        let mut st = self.lock();
        if !st.callbacks_enabled {
            return full(StatusCode::BAD_REQUEST, "application/json", CALLBACKS_OFF);
        }
        let callback = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "callbackUrl")
            .map(|(_, v)| v.into_owned());
        match (method, callback) {
            (Method::GET, _) => json_resp(
                StatusCode::OK,
                &json!({"callbackUrls": st.subscribers.iter().collect::<Vec<_>>()}),
            ),
            (Method::POST, Some(cb)) => {
                if url::Url::parse(&cb).is_err() {
                    return json_resp(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"message":"Object is not valid","details":[{"path":"/callbackUrl","errors":["invalid URL"]}]}),
                    );
                }
                st.subscribers.insert(cb.clone());
                json_resp(
                    StatusCode::OK,
                    &json!({"clientIp":"127.0.0.1","callbackUrl":cb,"eventType":"subscribe_event","timestamp":now_ts()}),
                )
            }
            (Method::DELETE, Some(cb)) => {
                st.subscribers.remove(&cb);
                json_resp(
                    StatusCode::OK,
                    &json!({"clientIp":"127.0.0.1","callbackUrl":cb,"eventType":"unsubscribe_event","timestamp":now_ts()}),
                )
            }
            _ => json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"message": "callbackUrl is required"}),
            ),
        }
    }

    fn event_stream(&self, query: &str) -> Response<Body> {
        let filter: BTreeSet<String> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "event_type")
            .map(|(_, v)| v.into_owned())
            .collect();
        let wanted = move |kind: &str| filter.is_empty() || filter.contains(kind);
        let mut rx = self.inner.events.subscribe();
        let mut generation = self.inner.generation.subscribe();
        generation.mark_unchanged();
        let (tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let keepalive = self.inner.opts.keepalive;
        let sim = self.clone();
        tokio::spawn(async move {
            let frame = |s: String| Ok(Frame::data(Bytes::from(s)));
            let attach = json!({"remoteAddress":"127.0.0.1","eventType":"event_stream_attached","timestamp":now_ts()});
            if wanted("event_stream_attached")
                && tx
                    .send(frame(format!(
                        "event: event_stream_attached\r\ndata: {attach}\r\n\r\n"
                    )))
                    .await
                    .is_err()
            {
                return;
            }
            let mut tick = tokio::time::interval(keepalive);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = generation.changed() => return,
                    ev = rx.recv() => match ev {
                        Ok((kind, data)) => {
                            if sim.lock().stalled || !wanted(&kind) { continue; }
                            if tx.send(frame(format!("event: {kind}\r\ndata: {data}\r\n\r\n"))).await.is_err() { return; }
                        }
                        // A slow reader loses the connection, as on Marathon 1.8+.
                        Err(_) => return,
                    },
                    _ = tick.tick() => {
                        if sim.lock().stalled { continue; }
                        // Written as "\r", flush, "\n", flush: it may arrive split.
                        if tx.send(frame("\r".into())).await.is_err() { return; }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if tx.send(frame("\n".into())).await.is_err() { return; }
                    }
                }
            }
        });
        let stream = tokio_stream_from(body_rx);
        let mut r = Response::new(StreamBody::new(stream).boxed());
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream;charset=UTF-8"),
        );
        h.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        r
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn with_tasks(app: &Value, tasks: Option<&Vec<Value>>, embed: bool) -> Value {
    let mut a = app.clone();
    if embed {
        a["tasks"] = Value::Array(tasks.cloned().unwrap_or_default());
    }
    let running = tasks.map(Vec::len).unwrap_or(0);
    a["tasksRunning"] = json!(running);
    a
}

/// An app's JSON as (id, definition without tasks, tasks if it listed any).
fn split_tasks(mut app: Value) -> (String, Value, Option<Vec<Value>>) {
    let id = app
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tasks = app
        .as_object_mut()
        .and_then(|o| o.remove("tasks"))
        .and_then(|t| t.as_array().cloned());
    (id, app, tasks)
}

fn instance_of(task_id: &str) -> String {
    crate::marathon::address::instance_id(task_id).unwrap_or_else(|| task_id.to_string())
}

/// A real HTTP server standing in for a task: answers every request with `<app id> <task id>\n`, and echoes
/// each request header back as `x-req-<name>` so tests can see what reached the backend.
async fn serve_task(
    app_id: String,
    task_id: String,
) -> std::io::Result<(u16, tokio::task::AbortHandle)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let body = Bytes::from(format!("{app_id} {task_id}\n"));
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut r = full(StatusCode::OK, "text/plain", body.clone());
                    for (name, value) in req.headers() {
                        if let Ok(n) = hyper::header::HeaderName::from_bytes(
                            format!("x-req-{name}").as_bytes(),
                        ) {
                            r.headers_mut().append(n, value.clone());
                        }
                    }
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((port, handle.abort_handle()))
}
