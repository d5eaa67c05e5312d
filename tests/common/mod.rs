//! Test harness: runs the real `rattan` binary on port 0 and reads back the address it bound.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Rattan {
    child: Child,
    pub api: String,
    pub log: Arc<Mutex<String>>,
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

impl Rattan {
    pub fn start(args: &[&str]) -> Rattan {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Rattan {
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
        let mut child = cmd.spawn().expect("spawn rattan");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("rattan: api listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let api = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("rattan did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Rattan {
            child,
            api,
            log,
            _data: data,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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

    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
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
