//! The web UI in real headless Chromium (Debian's `chromium`), driven over the DevTools protocol: load the page,
//! create a rule through the form, see it listed, see a parse error inline.

mod common;

use common::{Rattan, FAST};
use futures_util::{SinkExt, StreamExt};
use rattan::dev::simulator::{AppSpec, SimOptions, Simulator};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts headless Chromium and returns it with its DevTools port.
fn chromium() -> (Browser, u16) {
    let profile = tempfile::tempdir().unwrap();
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new("which").arg(b).output().is_ok_and(|o| o.status.success()))
        .expect("Chromium is needed for the UI test (apt-get install chromium; bash tests/run.sh does it)");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                let port: u16 = rest.split('/').next().unwrap_or("").parse().unwrap_or(0);
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium DevTools port");
    (
        Browser {
            child,
            _profile: profile,
        },
        port,
    )
}

struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws
            .send(Message::Text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .await
            .unwrap();
        while let Some(msg) = self.ws.next().await {
            if let Ok(Message::Text(t)) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        }
        panic!("DevTools connection closed");
    }

    /// Evaluates an async expression in the page and returns its (string) value.
    async fn eval(&mut self, expr: &str) -> String {
        let v = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(ex) = v["result"].get("exceptionDetails") {
            panic!("page script failed: {ex}");
        }
        v["result"]["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

const HELPERS: &str = "const until = async (f, ms = 10000) => { const t = Date.now(); \
  while (!f()) { if (Date.now() - t > ms) throw new Error('timeout: ' + f); await new Promise(r => setTimeout(r, 50)); } }; \
  const row = (id) => document.querySelector(`#routes tr[data-app=\"${id}\"]`);";

#[tokio::test(flavor = "multi_thread")]
async fn ui_lists_apps_creates_rules_and_shows_errors() {
    let m = Simulator::start(SimOptions::default()).await.unwrap();
    m.create_app(AppSpec {
        id: "/web".into(),
        instances: 2,
        ..AppSpec::default()
    })
    .await;
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str()];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);

    let (_browser, mut page) = open(&format!("{}/", r.api)).await;

    // Loaded: the app is listed with Bamboo's default rule and its health.
    let listed = page
        .eval(&format!(
            "(async () => {{ {HELPERS} await until(() => row('/web')); return row('/web').textContent; }})()"
        ))
        .await;
    assert!(
        listed.contains("path_beg -i /web")
            && listed.contains("default")
            && listed.contains("2 / 2"),
        "{listed}"
    );

    // Create a rule through the form: it is stored and listed as coming from the API.
    let created = page
        .eval(&format!(
            "(async () => {{ {HELPERS}
                document.getElementById('app').value = '/web';
                document.getElementById('acl').value = 'hdr(host) -i web.example.com';
                document.getElementById('save').click();
                await until(() => document.body.dataset.lastSave === 'ok');
                await until(() => row('/web').textContent.includes('web.example.com'));
                return row('/web').textContent; }})()"
        ))
        .await;
    assert!(
        created.contains("hdr(host) -i web.example.com") && created.contains("api"),
        "{created}"
    );
    let (_, services) = r.get("/api/services").await;
    assert!(
        services.contains(r#""Acl":"hdr(host) -i web.example.com""#),
        "{services}"
    );

    // A rule that does not parse: the error is shown inline and nothing changes.
    let error = page
        .eval(&format!(
            "(async () => {{ {HELPERS}
                document.getElementById('acl').value = 'path_beg';
                document.getElementById('save').click();
                await until(() => document.body.dataset.lastSave === 'error');
                return document.getElementById('error').textContent; }})()"
        ))
        .await;
    assert!(
        error.contains("column 9") && error.contains("no value to match"),
        "{error}"
    );
    assert_eq!(r.get("/api/services").await.1, services);
}

/// Opens `url` in a new headless Chromium: the browser (kept alive) and the page's DevTools session.
async fn open(url: &str) -> (Browser, Page) {
    let (browser, port) = chromium();
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws_url = targets
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut page = Page { ws, next: 0 };
    page.call("Page.navigate", json!({"url": url})).await;
    // Navigation is asynchronous: wait for the new document (an evaluation may meet the old one, or none).
    let t = std::time::Instant::now();
    loop {
        let v = page
            .call(
                "Runtime.evaluate",
                json!({"expression": "location.href + ' ' + document.readyState", "returnByValue": true}),
            )
            .await;
        let state = v["result"]["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == format!("{url} complete") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "page never loaded: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (browser, page)
}

/// With reads protected the page still loads and asks for credentials; editing a rule keeps every key the form
/// does not show (sticky, hsts, weight); the filter hides what does not match; backends and inputs are shown.
#[tokio::test(flavor = "multi_thread")]
async fn ui_asks_for_credentials_keeps_keys_and_filters() {
    let m = Simulator::start(SimOptions::default()).await.unwrap();
    for id in ["/web", "/api"] {
        m.create_app(AppSpec {
            id: id.into(),
            instances: 1,
            ..AppSpec::default()
        })
        .await;
    }
    let url = m.url();
    let mut args = vec![
        "--marathon",
        url.as_str(),
        "--api-basic",
        "ops:pw",
        "--api-auth-reads",
        "true",
    ];
    args.extend_from_slice(FAST);
    let r = Rattan::start(&args);
    let rule = r#"{"id":"/web","config":{"Acl":"path_beg /web","sticky":"true","hsts":"true","weight":"5"}}"#;
    let (s, body) = common::send(
        "PUT",
        &format!("{}/api/services/web", r.api),
        Some(rule),
        Some("Basic b3BzOnB3"),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let (_browser, mut page) = open(&format!("{}/", r.api)).await;
    // The page loads without credentials and asks for them; signing in shows the routes.
    let listed = page
        .eval(&format!(
            "(async () => {{ {HELPERS}
                await until(() => document.body.dataset.auth === 'asked' && !document.getElementById('login').hidden);
                document.getElementById('login-user').value = 'ops';
                document.getElementById('login-password').value = 'pw';
                document.getElementById('login-go').click();
                await until(() => document.body.dataset.auth === 'ok' && row('/web') && row('/api'));
                await until(() => document.getElementById('inputs').textContent.includes('marathon: ok'));
                return row('/web').textContent + ' | ' + document.getElementById('inputs').textContent; }})()"
        ))
        .await;
    assert!(
        listed.contains("path_beg /web")
            && listed.contains("sticky")
            && listed.contains("127.0.0.1:"),
        "{listed}"
    );

    // The filter hides rows that do not match.
    let filtered = page
        .eval(&format!(
            "(async () => {{ {HELPERS}
                const f = document.getElementById('filter');
                f.value = '/api'; f.dispatchEvent(new Event('input'));
                const shown = [row('/web').hidden, row('/api').hidden].join(',');
                f.value = ''; f.dispatchEvent(new Event('input'));
                return shown + ';' + [row('/web').hidden, row('/api').hidden].join(','); }})()"
        ))
        .await;
    assert_eq!(filtered, "true,false;false,false");

    // Edit: the form shows sticky, the other keys are kept, "saved" is said.
    let saved = page
        .eval(&format!(
            "(async () => {{ {HELPERS}
                row('/web').querySelector('button[data-edit]').click();
                await until(() => document.body.dataset.editing === '/web');
                const sticky = document.getElementById('sticky').checked;
                document.getElementById('acl').value = 'path_beg /w2';
                document.getElementById('redirect').checked = false;
                document.getElementById('save').click();
                await until(() => document.body.dataset.lastSave);
                return sticky + ',' + document.body.dataset.lastSave + ',' + document.getElementById('saved').textContent
                  + ',' + document.getElementById('error').textContent; }})()"
        ))
        .await;
    assert_eq!(saved, "true,ok,saved,", "{saved}");
    let (_, stored) = common::send(
        "GET",
        &format!("{}/api/services/web", r.api),
        None,
        Some("Basic b3BzOnB3"),
    )
    .await;
    let v: Value = serde_json::from_str(&stored).unwrap();
    let c = &v["Config"];
    assert_eq!(
        (
            c["Acl"].as_str(),
            c["sticky"].as_str(),
            c["hsts"].as_str(),
            c["weight"].as_str()
        ),
        (Some("path_beg /w2"), Some("true"), Some("true"), Some("5")),
        "{stored}"
    );
}
