//! Marathon REST calls: endpoints in order with failover, basic auth, the snapshot GET, callback subscriptions.

use super::model::{parse_apps, ParsedApps};
use crate::metrics::metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// `--marathon-timeout` and `--marathon-max-body`: the defaults.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const MAX_BODY: usize = 512 << 20;

pub const APPS_PATH: &str = "/v2/apps?embed=apps.tasks&embed=apps.readiness&embed=apps.deployments";

/// Why one call to one endpoint failed. Every kind moves on to the next endpoint; none empties the routing table.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{endpoint}: request failed: {}", super::tls::chain(.source))]
    Connect {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("{endpoint}: timed out")]
    Timeout { endpoint: String },
    #[error("{endpoint}: HTTP {status} from Marathon: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: unreadable response: {reason}")]
    Body { endpoint: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
#[error("every Marathon endpoint failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct AllFailed(pub Vec<CallError>);

pub struct MarathonClient {
    endpoints: Vec<Url>,
    auth: Option<(String, String)>,
    http: reqwest::Client,
    /// The endpoint that answered last; tried first next time.
    preferred: AtomicUsize,
    /// Largest response body read; a larger one fails the call (a hostile or broken Marathon cannot fill memory).
    max_body: usize,
    timeout: Duration,
    /// The TLS settings the event stream uses too.
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn http_client(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // Non-2xx must stay visible; redirects on REST calls are not part of Marathon's API.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(c) = tls {
        b = b.use_preconfigured_tls((*c).clone());
    }
    b.build().unwrap_or_default()
}

pub fn base(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

impl MarathonClient {
    pub fn new(
        endpoints: Vec<Url>,
        auth: Option<(String, String)>,
        timeout: Duration,
    ) -> MarathonClient {
        MarathonClient {
            endpoints,
            auth,
            http: http_client(timeout, None),
            preferred: AtomicUsize::new(0),
            max_body: 512 << 20,
            timeout,
            tls: None,
        }
    }

    /// Talks TLS with `config` (trust and client certificate), on REST calls and the event stream alike.
    pub fn with_tls(mut self, config: rustls::ClientConfig) -> MarathonClient {
        let config = Arc::new(config);
        self.http = http_client(self.timeout, Some(config.clone()));
        self.tls = Some(config);
        self
    }

    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// Caps response bodies at `bytes` (`--marathon-max-body`).
    pub fn with_max_body(mut self, bytes: usize) -> MarathonClient {
        self.max_body = bytes;
        self
    }

    pub fn endpoints(&self) -> &[Url] {
        &self.endpoints
    }

    pub fn auth(&self) -> Option<&(String, String)> {
        self.auth.as_ref()
    }

    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, url)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json");
        if let Some((u, p)) = &self.auth {
            rb = rb.basic_auth(u, Some(p));
        }
        rb
    }

    async fn call(
        &self,
        idx: usize,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Result<Vec<u8>, CallError> {
        let endpoint = base(&self.endpoints[idx]);
        let url = format!("{endpoint}{path_and_query}");
        let resp = self.request(method, &url).send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout {
                    endpoint: endpoint.clone(),
                }
            } else {
                CallError::Connect {
                    endpoint: endpoint.clone(),
                    source: e,
                }
            }
        })?;
        let status = resp.status();
        let body = self.read_body(resp, &endpoint).await?;
        if !status.is_success() {
            // Marathon explains itself in `{"message": …}`; anything else is shown as it came, cut short.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                });
            let text: String = message
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
                .chars()
                .take(200)
                .collect();
            return Err(CallError::Status {
                endpoint,
                status: status.as_u16(),
                body: text.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        Ok(body)
    }

    /// The body, piece by piece, failing as soon as it passes `max_body` (before it is all in memory).
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        endpoint: &str,
    ) -> Result<Vec<u8>, CallError> {
        let too_large = |endpoint: &str| {
            metrics()
                .marathon_oversized
                .with_label_values(&["body"])
                .inc();
            CallError::Body {
                endpoint: endpoint.to_string(),
                reason: format!("larger than --marathon-max-body ({} bytes)", self.max_body),
            }
        };
        let declared = resp.content_length().unwrap_or(0);
        if declared > self.max_body as u64 {
            return Err(too_large(endpoint));
        }
        // Grown as bytes arrive: a declared length is a claim, not memory to set aside before they do.
        let mut body = Vec::with_capacity(declared.min(8 << 20) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(piece)) => {
                    if body.len() + piece.len() > self.max_body {
                        return Err(too_large(endpoint));
                    }
                    body.extend_from_slice(&piece);
                }
                Ok(None) => return Ok(body),
                Err(e) if e.is_timeout() => {
                    return Err(CallError::Timeout {
                        endpoint: endpoint.to_string(),
                    })
                }
                Err(e) => {
                    return Err(CallError::Body {
                        endpoint: endpoint.to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// The full snapshot, from the first endpoint that answers 2xx with a body that parses. A 503 or 401 body is
    /// never taken for "zero apps".
    pub async fn fetch_apps(&self) -> Result<ParsedApps, AllFailed> {
        let n = self.endpoints.len();
        let start = self.preferred();
        let mut errors = Vec::new();
        let m = metrics();
        for k in 0..n {
            let idx = (start + k) % n;
            let began = Instant::now();
            let result = self
                .call(idx, reqwest::Method::GET, APPS_PATH)
                .await
                .and_then(|body| {
                    parse_apps(&body).map_err(|reason| CallError::Body {
                        endpoint: base(&self.endpoints[idx]),
                        reason,
                    })
                });
            match result {
                Ok(parsed) => {
                    m.fetch_duration.observe(began.elapsed().as_secs_f64());
                    m.fetches.inc();
                    if idx != start {
                        tracing::warn!(from = %base(&self.endpoints[start]), to = %base(&self.endpoints[idx]), "marathon failover");
                    }
                    self.preferred.store(idx, Ordering::Relaxed);
                    for r in &parsed.rejected {
                        tracing::warn!(endpoint = %base(&self.endpoints[idx]), app = %r, "skipping app that does not parse");
                    }
                    m.apps_rejected.inc_by(parsed.rejected.len() as u64);
                    return Ok(parsed);
                }
                Err(e) => {
                    m.fetch_failures
                        .with_label_values(&[&base(&self.endpoints[idx])])
                        .inc();
                    tracing::warn!(endpoint = %base(&self.endpoints[idx]), error = %e, "marathon fetch failed");
                    errors.push(e);
                }
            }
        }
        Err(AllFailed(errors))
    }

    /// One app with its tasks (`GET /v2/apps/<id>?embed=app.tasks…`), from the first endpoint that answers: `None`
    /// when Marathon says it does not exist. For an event about one app, so it applies without waiting for the
    /// debounced full snapshot. An id that is not a Marathon path (a hostile event) is refused, never sent.
    pub async fn fetch_app(&self, id: &str) -> Result<Option<super::model::App>, String> {
        let valid = id.starts_with('/')
            && id.len() > 1
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-./_".contains(&b))
            && !id.split('/').any(|seg| seg == "." || seg == "..");
        if !valid {
            return Err(format!("{id:?} is not a Marathon app id"));
        }
        let path =
            format!("/v2/apps{id}?embed=app.tasks&embed=app.readiness&embed=app.deployments");
        let n = self.endpoints.len();
        let start = self.preferred();
        let mut errors = Vec::new();
        for k in 0..n {
            let idx = (start + k) % n;
            match self.call(idx, reqwest::Method::GET, &path).await {
                Ok(body) => {
                    let parsed = parse_apps(&body)
                        .map_err(|e| format!("{}: {e}", base(&self.endpoints[idx])))?;
                    return Ok(parsed
                        .apps
                        .into_iter()
                        .find(|a| format!("/{}", a.id.trim_start_matches('/')) == id));
                }
                Err(CallError::Status { status: 404, .. }) => return Ok(None),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(errors.join("; "))
    }

    /// Callback URLs Marathon at endpoint `idx` currently delivers to.
    pub async fn subscriptions(&self, idx: usize) -> Result<Vec<String>, CallError> {
        let body = self
            .call(idx, reqwest::Method::GET, "/v2/eventSubscriptions")
            .await?;
        #[derive(serde::Deserialize)]
        struct Subs {
            #[serde(default, rename = "callbackUrls")]
            callback_urls: Option<Vec<String>>,
        }
        let subs: Subs = serde_json::from_slice(&body).map_err(|e| CallError::Body {
            endpoint: base(&self.endpoints[idx]),
            reason: e.to_string(),
        })?;
        Ok(subs.callback_urls.unwrap_or_default())
    }

    /// Removes `callback` at endpoint `idx`.
    pub async fn unsubscribe(&self, idx: usize, callback: &str) -> Result<(), CallError> {
        self.subscription(idx, reqwest::Method::DELETE, callback)
            .await
    }

    /// Registers `callback` at endpoint `idx`; the URL is query-encoded (Bamboo concatenated it raw).
    pub async fn subscribe(&self, idx: usize, callback: &str) -> Result<(), CallError> {
        self.subscription(idx, reqwest::Method::POST, callback)
            .await
    }

    async fn subscription(
        &self,
        idx: usize,
        method: reqwest::Method,
        callback: &str,
    ) -> Result<(), CallError> {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("callbackUrl", callback)
            .finish();
        self.call(idx, method, &format!("/v2/eventSubscriptions?{q}"))
            .await
            .map(|_| ())
    }
}
