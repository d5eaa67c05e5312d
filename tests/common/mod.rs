//! Test harness: runs the real `rattan` binary on port 0 and reads back the address it bound.
#![allow(dead_code)]

pub mod raw;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Rattan {
    child: Child,
    pub api: String,
    pub proxy: String,
    /// `https://addr` when started with --https-bind.
    pub https: Option<String>,
    pub log: Arc<Mutex<String>>,
    /// Everything on stdout (the access log goes there).
    pub out: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

/// Flags that make the timing-dependent paths quick in tests.
pub const FAST: &[&str] = &[
    "--resync-debounce",
    "100ms",
    "--resync-max-wait",
    "1s",
    "--reconnect-min",
    "100ms",
    "--reconnect-max",
    "1s",
];

/// A listener banner on stderr: (what, address).
fn banner(line: &str) -> Option<(&'static str, String)> {
    if line.starts_with("rattan: proxy disabled") {
        return Some(("proxy", "disabled".to_string()));
    }
    if let Some(addr) = line.strip_prefix("rattan: proxy listening on https://") {
        return Some(("https", format!("https://{addr}")));
    }
    for what in ["api", "proxy"] {
        if let Some(addr) = line.strip_prefix(&format!("rattan: {what} listening on ")) {
            return Some((what, addr.to_string()));
        }
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let addr = v["addr"].as_str()?;
    match v["message"].as_str()? {
        "api listening" => Some(("api", format!("http://{addr}"))),
        "proxy listening" => Some(("proxy", format!("http://{addr}"))),
        "https proxy listening" => Some(("https", format!("https://{addr}"))),
        _ => None,
    }
}

impl Rattan {
    pub fn start(args: &[&str]) -> Rattan {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Rattan {
        Self::start_full(args, env, None)
    }

    /// Runs the binary without requiring it to come up (a start that must fail): the addresses stay empty.
    pub fn try_start(args: &[&str]) -> Rattan {
        Self::start_inner(args, &[], None, false)
    }

    /// With `RLIMIT_NOFILE` set to (soft, hard) before the binary runs.
    pub fn start_with_nofile(args: &[&str], soft: u64, hard: u64) -> Rattan {
        Self::start_full(args, &[], Some((soft, hard)))
    }

    fn start_full(args: &[&str], env: &[(&str, &str)], nofile: Option<(u64, u64)>) -> Rattan {
        Self::start_inner(args, env, nofile, true)
    }

    fn start_inner(
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<(u64, u64)>,
        must_start: bool,
    ) -> Rattan {
        let data = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rattan"));
        cmd.args(["--api-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env("RUST_LOG", "info,rattan=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Tests must not inherit a developer's Bamboo environment.
        for v in [
            "MARATHON_ENDPOINT",
            "MARATHON_USER",
            "MARATHON_PASSWORD",
            "MARATHON_USE_EVENT_STREAM",
            "BAMBOO_ENDPOINT",
            "BAMBOO_ZK_HOST",
            "BAMBOO_ZK_PATH",
            "BIND",
            "CONFIG_PATH",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn rattan");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // The listener banners are on stderr (stdout is the access log's alone): `rattan: api listening on …`, or
        // with --log-format json the log event that says the same.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut l = l2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(found) = banner(&line) {
                    let _ = tx.send(found);
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(String::new()));
        let o2 = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut o = o2.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let (mut api, mut proxy, mut https) = (String::new(), String::new(), None);
        while api.is_empty() || proxy.is_empty() {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(("api", a)) => api = a,
                Ok(("https", a)) => https = Some(a),
                Ok((_, p)) => proxy = p,
                Err(_) if !must_start => break,
                Err(_) => {
                    let _ = child.kill();
                    panic!("rattan did not start; log:\n{}", log.lock().unwrap());
                }
            }
        }
        Rattan {
            child,
            api,
            proxy,
            https,
            log,
            out,
            _data: data,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `secs` for `needle` in the log (stderr is read by a thread; a line can trail what caused it).
    pub async fn wait_log(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `ready` every 50 ms until it holds; fails after 10 s naming `what`, with rattan's log.
    pub async fn wait_until(&self, what: &str, mut ready: impl AsyncFnMut() -> bool) {
        let t = Instant::now();
        while !ready().await {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "never {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.api))
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    pub async fn state(&self) -> Value {
        let (status, body) = self.get("/api/state").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("/api/state is JSON")
    }

    /// The sum of every series of `name{label="value",…}` that carries those labels (others may be there too).
    pub async fn metric(&self, selector: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        let (name, labels) = match selector.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (selector, ""),
        };
        let wanted: Vec<&str> = labels.split("\",").filter(|p| !p.is_empty()).collect();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let series = l.rsplit_once(' ').map_or(*l, |(s, _)| s);
                let (n, ls) = series.split_once('{').unwrap_or((series, ""));
                let have: Vec<String> = ls
                    .trim_end_matches('}')
                    .split("\",")
                    .map(|p| p.trim_end_matches('"').to_string())
                    .collect();
                n == name
                    && wanted
                        .iter()
                        .all(|w| have.iter().any(|h| h == w.trim_end_matches('"')))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `/api/state` until `pred` holds; panics with the last state and the log after `secs`.
    pub async fn wait_state(&self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.state().await;
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; state: {s}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this instance's event stream is attached, so the next events are seen live.
    pub async fn wait_stream(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .metric("rattan_marathon_events_total{type=\"event_stream_attached\"}")
            .await
            < 1.0
        {
            assert!(
                Instant::now() < deadline,
                "event stream never attached:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Rattan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn app<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state["Apps"].as_array()?.iter().find(|a| a["Id"] == id)
}

pub fn task_count(state: &Value, id: &str) -> usize {
    app(state, id)
        .and_then(|a| a["Tasks"].as_array())
        .map(Vec::len)
        .unwrap_or(usize::MAX)
}

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/marathon/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The binary against Marathon at `marathon`, with `extra` flags (later flags win) and the FAST timings.
pub fn start_against(marathon: &str, extra: &[&str]) -> Rattan {
    let mut args = vec!["--marathon", marathon];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    Rattan::start(&args)
}

/// A Marathon simulator whose tasks are real HTTP servers answering `<app> <task>`.
pub async fn cluster() -> rattan::dev::simulator::Simulator {
    rattan::dev::simulator::Simulator::start(rattan::dev::simulator::SimOptions {
        serve_tasks: true,
        keepalive: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("simulator starts")
}

/// An app with `n` tasks and nothing else set.
pub async fn plain_app(m: &rattan::dev::simulator::Simulator, id: &str, n: usize) {
    m.create_app(rattan::dev::simulator::AppSpec {
        id: id.into(),
        instances: n,
        ..Default::default()
    })
    .await;
}

/// An app with `n` tasks and these marathon-lb labels.
pub async fn labeled_app(
    m: &rattan::dev::simulator::Simulator,
    id: &str,
    n: usize,
    pairs: &[(&str, &str)],
) {
    m.create_app(rattan::dev::simulator::AppSpec {
        id: id.into(),
        instances: n,
        labels: labels(pairs),
        ..Default::default()
    })
    .await;
}

pub fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A file under `tests/fixtures/`.
pub fn fixture_file(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A real ZooKeeper server (Debian's package) on a free loopback port, with its own data directory.
pub struct Zk {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// A loopback port free now, for a listener the test names in advance. Below the kernel's ephemeral range
/// (32768–60999 by default): a port from there can be taken meanwhile as the local end of any outgoing
/// connection of the parallel tests, and the listener would then fail to bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread over the range by process, so parallel test binaries rarely try the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 500) as u16 * 24;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Zk {
    pub fn start() -> Zk {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = format!(
            "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\nmaxSessionTimeout=20000\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("zoo.cfg"), cfg).unwrap();
        let mut zk = Zk {
            child: None,
            port,
            dir,
        };
        zk.spawn();
        zk
    }

    fn spawn(&mut self) {
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-cp",
                "/usr/share/java/*:/usr/share/zookeeper/*",
            ])
            .arg("-Dzookeeper.log.dir=".to_string() + &self.dir.path().display().to_string())
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java (install the zookeeper package: bash tests/run.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                // A server still starting may accept and never answer: never wait on one probe for long.
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"srvr");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.contains("Mode") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same port, same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Zk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

pub async fn send(
    method: &str,
    url: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut rb = client.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Registers `port` on loopback as the one running task of app `id`.
pub fn app_on(m: &rattan::dev::simulator::Simulator, id: &str, port: u16) {
    app_at(m, id, 10999, &[port]);
}

/// Puts app `id`, service port `service`, with one running task on loopback per port of `ports` (the task named
/// by its port, so it keeps its id when the app is put again with other tasks).
pub fn app_at(m: &rattan::dev::simulator::Simulator, id: &str, service: u16, ports: &[u16]) {
    let name = id.trim_start_matches('/');
    let tasks: Vec<_> = ports
        .iter()
        .map(|p| {
            serde_json::json!({"id": format!("{name}.{p}"), "host": "127.0.0.1", "ports": [p],
                "state": "TASK_RUNNING", "startedAt": "2019-05-02T10:11:20.001Z"})
        })
        .collect();
    m.put_app_json(
        serde_json::json!({"id": id, "portDefinitions": [{"port": service}], "tasks": tasks}),
    );
}

/// Creates `n` rule nodes `/bulk-<i>` directly in ZooKeeper (as another tool or Bamboo would), many at once.
pub async fn seed_rules(client: &zookeeper_client::Client, base: &str, n: usize) {
    use futures_util::StreamExt;
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let _ = client.mkdir(base, &opts).await;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let path = format!("{base}/%2Fbulk-{i}");
            let body = rattan::store::encode_v2(
                &[("Acl".to_string(), format!("hdr(host) -i bulk-{i}.example"))].into(),
            );
            let (client, opts) = (client.clone(), opts.clone());
            async move { client.create(&path, &body, &opts).await.map(|_| ()) }
        })
        .buffer_unordered(512)
        .for_each(|r| async move { r.expect("seed a rule") })
        .await;
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, ...); 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (10 s at most) for a metric to read `want`.
pub async fn wait_metric(r: &Rattan, name: &str, want: f64) {
    let t = Instant::now();
    loop {
        let got = r.metric(name).await;
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name} is {got}, not {want}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) for a loopback port to accept connections (`open`) or refuse them.
pub async fn wait_tcp(port: u16, r: &Rattan, open: bool) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
        != open
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "port {port} never {}\n{}",
            if open { "opened" } else { "closed" },
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
