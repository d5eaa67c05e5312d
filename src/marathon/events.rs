//! Marathon events → `Change`s: the SSE reader, the callback receiver's parser, and the poller.
//!
//! Events invalidate; they are never replicated as truth (Marathon does not order them). The few that tell us a
//! task is gone or changed health are applied at once so traffic moves before the reconciling fetch returns.

use super::api::{base, MarathonClient};
use super::model::IpAddr;
use crate::backoff::Backoff;
use crate::metrics::metrics;
use eventsource_client as es;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The events that matter for routing (server-side filter, 1.3.7+; re-checked client side).
/// `--poll-interval`, `--sse-idle-timeout` (3× Marathon's keep-alive), `--callback-check-interval`,
/// `--marathon-max-event-size`: the defaults.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
pub const SSE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CALLBACK_CHECK_INTERVAL: Duration = Duration::from_secs(30);
pub const MAX_EVENT: usize = 16 << 20;

pub const EVENT_TYPES: &[&str] = &[
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_success",
    "deployment_failed",
    "group_change_success",
    "unhealthy_task_kill_event",
    "unhealthy_instance_kill_event",
    "event_stream_attached",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An event source (re)connected: events may have been missed, take a full snapshot now.
    Connected,
    TaskStatus {
        app_id: String,
        task_id: String,
        state: String,
        host: String,
        ports: Vec<u32>,
        ip_addresses: Vec<IpAddr>,
        timestamp: Option<String>,
    },
    /// `id` is a task id (≤ 1.3) or an instance id (1.4+); `alive: None` = unknown.
    Health {
        app_id: String,
        id: String,
        alive: Option<bool>,
    },
    AppTerminated {
        app_id: String,
    },
    /// Something about this app (or, with `None`, anything) changed: reconcile.
    Invalidate {
        app_id: Option<String>,
    },
    /// The event stream is down (`why`): changes go unseen until it is back, so the snapshot is fetched meanwhile.
    Disconnected {
        why: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawEvent {
    event_type: Option<String>,
    app_id: Option<String>,
    run_spec_id: Option<String>,
    task_id: Option<String>,
    instance_id: Option<String>,
    task_status: Option<String>,
    host: Option<String>,
    ports: Option<Vec<Value>>,
    ip_addresses: Option<Vec<IpAddr>>,
    alive: Option<bool>,
    healthy: Option<bool>,
    timestamp: Option<String>,
    app_definition: Option<Value>,
}

/// Parses one event body. Returns its type (for metrics; `None` when it is not JSON with an `eventType`) and the
/// change it implies, if any.
pub fn classify(data: &str) -> (Option<String>, Option<Change>) {
    let ev: RawEvent = match serde_json::from_str(data) {
        Ok(ev) => ev,
        Err(_) => return (None, None),
    };
    let Some(kind) = ev.event_type.clone() else {
        return (None, None);
    };
    let app = ev.app_id.clone().filter(|s| !s.is_empty());
    let change = match kind.as_str() {
        "status_update_event" => match (app.clone(), ev.task_id.clone(), ev.task_status.clone()) {
            (Some(app_id), Some(task_id), Some(state)) => Some(Change::TaskStatus {
                app_id,
                task_id,
                state,
                host: ev.host.clone().unwrap_or_default(),
                ports: ev
                    .ports
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| p.as_u64().or_else(|| p.as_f64().map(|f| f as u64)))
                    .filter_map(|p| u32::try_from(p).ok())
                    .collect(),
                ip_addresses: ev.ip_addresses.unwrap_or_default(),
                timestamp: ev.timestamp,
            }),
            _ => Some(Change::Invalidate { app_id: app }),
        },
        "health_status_changed_event" => match (app.clone(), ev.instance_id.or(ev.task_id)) {
            (Some(app_id), Some(id)) => Some(Change::Health {
                app_id,
                id,
                alive: ev.alive,
            }),
            _ => Some(Change::Invalidate { app_id: app }),
        },
        "instance_health_changed_event" => match (ev.run_spec_id.clone(), ev.instance_id) {
            (Some(app_id), Some(id)) => Some(Change::Health {
                app_id,
                id,
                alive: ev.healthy,
            }),
            _ => Some(Change::Invalidate {
                app_id: ev.run_spec_id,
            }),
        },
        "app_terminated_event" => match app {
            Some(app_id) => Some(Change::AppTerminated { app_id }),
            None => Some(Change::Invalidate { app_id: None }),
        },
        "api_post_event" => Some(Change::Invalidate {
            app_id: ev
                .app_definition
                .as_ref()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        "unhealthy_task_kill_event" | "unhealthy_instance_kill_event" => {
            Some(Change::Invalidate { app_id: app })
        }
        "deployment_success" | "deployment_failed" | "group_change_success" => {
            Some(Change::Invalidate { app_id: None })
        }
        _ => None,
    };
    (Some(kind), change)
}

/// Counts the event and forwards its change. Used by the SSE reader and the callback receiver alike.
pub fn dispatch(data: &str, tx: &mpsc::Sender<Change>) {
    let (kind, change) = classify(data);
    metrics()
        .events
        .with_label_values(&[kind.as_deref().unwrap_or("unparsable")])
        .inc();
    if let Some(change) = change {
        if tx.try_send(change).is_err() {
            // Queue full: the discovery loop is behind. A resync covers whatever we drop here.
            let _ = tx.try_send(Change::Invalidate { app_id: None });
        }
    }
}

pub struct SseOptions {
    pub idle_timeout: Duration,
    /// Longest event (or line without an end) read before the stream is dropped.
    pub max_event: usize,
    pub backoff: Backoff,
}

enum StreamEnd {
    Redirect(String),
    Ended,
    Failed(String),
}

fn events_url(base_url: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for t in EVENT_TYPES {
        q.append_pair("event_type", t);
    }
    q.append_pair("plan-format", "light");
    format!("{base_url}/v2/events?{}", q.finish())
}

/// One connection. `eventsource-client` sends `Accept: text/event-stream` exactly, frames CR/LF/CRLF and
/// multi-line `data:`; its read timeout is our stall detector (keep-alives reset it). It follows only 301/307,
/// so Marathon's 302 (1.7+) comes back to us as an unexpected response, and we follow it with the same headers.
async fn stream_once(
    url: &str,
    client: &MarathonClient,
    opts: &SseOptions,
    tx: &mpsc::Sender<Change>,
) -> StreamEnd {
    let builder = launchdarkly_sdk_transport::HyperTransport::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(opts.idle_timeout)
        .disable_proxy();
    // The REST client's TLS settings (system roots, --marathon-ca, client certificate), so both trust alike.
    let built = match client.tls() {
        Some(config) => builder.build_with_connector(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((**config).clone())
                .https_or_http()
                .enable_http1()
                .build(),
        ),
        None => builder.build_https(),
    };
    let transport = match built {
        Ok(t) => t,
        Err(e) => return StreamEnd::Failed(format!("transport: {e}")),
    };
    let transport = Capped {
        inner: transport,
        max: opts.max_event,
    };
    let mut builder = match es::ClientBuilder::for_url(url) {
        Ok(b) => b,
        Err(e) => return StreamEnd::Failed(format!("bad URL: {e:?}")),
    };
    builder = builder.reconnect(es::ReconnectOptions::reconnect(false).build());
    if let Some((u, p)) = client.auth() {
        builder = match builder.basic_auth(u, p) {
            Ok(b) => b,
            Err(e) => return StreamEnd::Failed(format!("auth header: {e:?}")),
        };
    }
    let sse = builder.build_with_transport(transport);
    let mut stream = es::Client::stream(&sse);
    while let Some(item) = stream.next().await {
        match item {
            Ok(es::SSE::Connected(_)) => {
                metrics().sse_connects.inc();
                tracing::info!(url = %url, "marathon event stream connected");
                let _ = tx.send(Change::Connected).await;
            }
            Ok(es::SSE::Event(ev)) => {
                // No `event:` line before Marathon 0.11; the JSON's eventType is what counts.
                dispatch(&ev.data, tx);
            }
            Ok(es::SSE::Comment(_)) => {}
            Err(es::Error::UnexpectedResponse(resp, _)) => {
                let status = resp.status();
                if matches!(status, 302 | 303 | 308) {
                    if let Ok(Some(loc)) = resp.get_header_value("location") {
                        return StreamEnd::Redirect(loc.to_string());
                    }
                }
                return StreamEnd::Failed(format!("HTTP {status}"));
            }
            Err(es::Error::Eof) => return StreamEnd::Ended,
            Err(e) => return StreamEnd::Failed(describe(&e)),
        }
    }
    StreamEnd::Ended
}

/// The SSE transport with a cap on one event: eventsource-client keeps an unfinished line (and event) in memory
/// however long it grows, so a stream that never ends a line would take all of it. The count runs from the end of
/// the last event (a blank line) and the stream fails as soon as it passes `max`.
#[derive(Clone)]
struct Capped<T> {
    inner: T,
    max: usize,
}

/// Where the reader is in the event stream, byte by byte.
#[derive(Default)]
struct EventBytes {
    /// Bytes of the event so far.
    event: usize,
    /// Bytes of the current line so far.
    line: usize,
    /// The last byte was CR (a LF right after it ends the same line).
    cr: bool,
}

impl EventBytes {
    /// Follows `data`; `false` once an event passes `max`.
    fn feed(&mut self, data: &[u8], max: usize) -> bool {
        for &b in data {
            match b {
                b'\n' if self.cr => self.cr = false,
                b'\r' | b'\n' => {
                    self.cr = b == b'\r';
                    if self.line == 0 {
                        self.event = 0;
                    }
                    self.line = 0;
                }
                _ => {
                    self.cr = false;
                    self.line += 1;
                    self.event += 1;
                    if self.event > max {
                        return false;
                    }
                }
            }
        }
        true
    }
}

impl<T: launchdarkly_sdk_transport::HttpTransport> launchdarkly_sdk_transport::HttpTransport
    for Capped<T>
{
    fn request(
        &self,
        request: http::Request<Option<bytes::Bytes>>,
    ) -> launchdarkly_sdk_transport::ResponseFuture {
        let (inner, max) = (self.inner.request(request), self.max);
        Box::pin(async move {
            let resp = inner.await?;
            let (parts, body) = resp.into_parts();
            let mut seen = EventBytes::default();
            let mut over = false;
            let body = body.map(move |item| {
                let data = item?;
                if over || !seen.feed(&data, max) {
                    over = true;
                    metrics()
                        .marathon_oversized
                        .with_label_values(&["event"])
                        .inc();
                    return Err(launchdarkly_sdk_transport::TransportError::new(
                        std::io::Error::other(format!(
                            "an event longer than --marathon-max-event-size ({max} bytes)"
                        )),
                    ));
                }
                Ok(data)
            });
            Ok(http::Response::from_parts(
                parts,
                Box::pin(body) as launchdarkly_sdk_transport::ByteStream,
            ))
        })
    }
}

const STALLED: &str = "no data within the idle timeout (stream stalled)";

fn describe(e: &es::Error) -> String {
    match e {
        es::Error::TimedOut => STALLED.into(),
        es::Error::Transport(t) => {
            // The read timeout surfaces as an io::ErrorKind::TimedOut somewhere down the transport's error chain.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(t.inner());
            while let Some(err) = cur {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    if io.kind() == std::io::ErrorKind::TimedOut {
                        return STALLED.into();
                    }
                }
                cur = err.source();
            }
            format!("transport: {}", super::tls::chain(t.inner()))
        }
        other => format!("{other:?}"),
    }
}

/// Keeps an event stream open against the endpoints in turn, forever.
pub async fn run_sse(client: Arc<MarathonClient>, mut opts: SseOptions, tx: mpsc::Sender<Change>) {
    let n = client.endpoints().len();
    let mut idx = client.preferred();
    loop {
        let endpoint = base(&client.endpoints()[idx % n]);
        let mut url = events_url(&endpoint);
        let began = Instant::now();
        let mut end = stream_once(&url, &client, &opts, &tx).await;
        if let StreamEnd::Redirect(loc) = &end {
            // Marathon ≥ 1.7 standbys answer 302 to the leader: follow one hop, credentials kept.
            tracing::info!(from = %endpoint, to = %loc, "marathon event stream redirected to the leader");
            url = loc.clone();
            end = stream_once(&url, &client, &opts, &tx).await;
        }
        let lived = began.elapsed();
        if lived > Duration::from_secs(60) {
            opts.backoff.reset();
        }
        match &end {
            StreamEnd::Ended => {
                tracing::warn!(url = %url, lived_ms = lived.as_millis() as u64, "marathon event stream closed")
            }
            StreamEnd::Failed(e) => {
                tracing::warn!(url = %url, error = %e, "marathon event stream failed")
            }
            StreamEnd::Redirect(loc) => {
                tracing::warn!(url = %url, to = %loc, "marathon event stream redirected twice; giving up on this endpoint")
            }
        }
        metrics().sse_reconnects.inc();
        let why = match &end {
            StreamEnd::Ended => "closed by Marathon".to_string(),
            StreamEnd::Failed(e) => e.clone(),
            StreamEnd::Redirect(loc) => format!("redirected twice (to {loc})"),
        };
        let _ = tx.send(Change::Disconnected { why }).await;
        // Rotate only when this endpoint did not hold a stream: a leader that closes a long-lived stream is
        // still the leader.
        if lived < Duration::from_secs(5) || !matches!(end, StreamEnd::Ended) {
            idx = (idx + 1) % n;
        }
        let delay = opts.backoff.next_delay();
        tokio::time::sleep(delay).await;
    }
}

/// Callback mode: keep this instance subscribed on every endpoint, re-registering when a Marathon restart lost
/// the subscription (Bamboo registered once and never again). A fresh registration means missed events: resync.
///
/// `receiver` is the callback path without its query; Marathon is given it with `?token=<token>`. Subscriptions of
/// the same receiver with another token or none (Bamboo's, an older token) are removed: they only get 401s.
pub async fn run_callback_registration(
    client: Arc<MarathonClient>,
    receiver: String,
    token: String,
    check_every: Duration,
    tx: mpsc::Sender<Change>,
) {
    let callback = format!("{receiver}?token={token}");
    loop {
        let mut registered_any = false;
        for idx in 0..client.endpoints().len() {
            let endpoint = base(&client.endpoints()[idx]);
            match client.subscriptions(idx).await {
                Ok(urls) => {
                    for stale in urls.iter().filter(|u| {
                        *u != &callback
                            && (*u == &receiver || u.starts_with(&format!("{receiver}?")))
                    }) {
                        match client.unsubscribe(idx, stale).await {
                            Ok(()) => {
                                tracing::info!(endpoint = %endpoint, "removed a stale event callback of this instance (no or another token)")
                            }
                            Err(e) => {
                                tracing::warn!(endpoint = %endpoint, error = %e, "cannot remove a stale event callback")
                            }
                        }
                    }
                    if urls.iter().any(|u| u == &callback) {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, error = %e, "cannot list event subscriptions");
                    continue;
                }
            }
            match client.subscribe(idx, &callback).await {
                Ok(()) => {
                    metrics().callback_registrations.inc();
                    tracing::info!(endpoint = %endpoint, callback = %receiver, "registered event callback");
                    registered_any = true;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, error = %e, "event callback registration failed")
                }
            }
        }
        if registered_any {
            let _ = tx.send(Change::Connected).await;
        }
        tokio::time::sleep(check_every).await;
    }
}

/// Poll mode: no events at all, just a reconciling fetch every `every`.
pub async fn run_poll(every: Duration, tx: mpsc::Sender<Change>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // A tick is the only news there is: fetch now. (An `Invalidate` would be debounced, and ticks shorter than
        // the debounce would push every fetch out to --resync-max-wait.)
        if tx.send(Change::Connected).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/marathon/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_sample_event_classifies_without_panicking() {
        let dir = format!("{}/tests/fixtures/marathon", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with("event.") {
                let (kind, _) = classify(&fixture(&name));
                let expected = name.split('.').nth(1).unwrap();
                assert_eq!(kind.as_deref(), Some(expected), "{name}");
                n += 1;
            }
        }
        assert!(n > 40);
    }

    #[test]
    fn status_update_container_network() {
        let (_, c) = classify(&fixture(
            "event.status_update_event.TASK_RUNNING.container-network-1.8plus.code-derived.json",
        ));
        match c {
            Some(Change::TaskStatus {
                state,
                ip_addresses,
                ports,
                ..
            }) => {
                assert_eq!(state, "TASK_RUNNING");
                assert!(ports.is_empty());
                assert!(!ip_addresses.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn health_events_both_eras() {
        let (_, old) = classify(&fixture("event.health_status_changed_event.docs-1.1.json"));
        assert!(matches!(old, Some(Change::Health { .. })));
        let (_, new) = classify(&fixture(
            "event.instance_health_changed_event.docs-head.json",
        ));
        match new {
            Some(Change::Health { app_id, .. }) => assert!(app_id.starts_with('/')),
            other => panic!("{other:?}"),
        }
        let (_, t) = classify(&fixture("event.app_terminated_event.docs-head.json"));
        assert!(matches!(t, Some(Change::AppTerminated { .. })));
        let (k, c) = classify(&fixture("event.framework_message_event.code-derived.json"));
        assert_eq!(k.as_deref(), Some("framework_message_event"));
        assert_eq!(c, None);
    }

    #[test]
    fn event_size_is_counted_from_the_last_blank_line() {
        let mut e = EventBytes::default();
        // Many short events, each under the cap, in any line ending: never over.
        for _ in 0..1000 {
            assert!(e.feed(b"data: 12345\r\n\r\n", 11));
            assert!(e.feed(b"data: 1234\n\n", 11));
            assert!(e.feed(b"data: 123\r\r", 11));
        }
        // An event of several lines counts all of them; a line that never ends too.
        let mut e = EventBytes::default();
        assert!(e.feed(b"data: 1\ndata: 2\n", 16));
        assert!(!e.feed(b"data: 3\n", 16));
        let mut e = EventBytes::default();
        assert!(e.feed(&[b'x'; 100], 100));
        assert!(!e.feed(b"x", 100));
    }

    /// Seeded fuzzing in CI: random streams in every line ending, fed in random pieces. The cap trips exactly when
    /// a reference count over the whole stream passes it, wherever the pieces are cut.
    #[test]
    fn event_cap_fuzz() {
        use rand::{Rng, SeedableRng};
        fn reference(s: &[u8], max: usize) -> Option<usize> {
            // Byte index at which the running event length first passes `max`.
            let (mut event, mut line, mut cr) = (0usize, 0usize, false);
            for (i, &b) in s.iter().enumerate() {
                match b {
                    b'\n' if cr => cr = false,
                    b'\r' | b'\n' => {
                        cr = b == b'\r';
                        if line == 0 {
                            event = 0;
                        }
                        line = 0;
                    }
                    _ => {
                        cr = false;
                        line += 1;
                        event += 1;
                        if event > max {
                            return Some(i);
                        }
                    }
                }
            }
            None
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let alphabet = b"data: x\r\n";
        let mut tripped = 0;
        for _ in 0..20_000 {
            let s: Vec<u8> = (0..rng.gen_range(0..200))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let max = rng.gen_range(1..40);
            let want = reference(&s, max);
            let mut e = EventBytes::default();
            let mut at = 0;
            let mut got = None;
            while at < s.len() && got.is_none() {
                let to = (at + rng.gen_range(1..20)).min(s.len());
                if !e.feed(&s[at..to], max) {
                    got = Some(to);
                }
                at = to;
            }
            match (want, got) {
                (None, None) => {}
                // Tripped in the piece that holds the byte that passed the cap.
                (Some(i), Some(end)) => {
                    tripped += 1;
                    assert!(i < end, "{i} {end}");
                }
                other => panic!("{other:?} for {:?} max {max}", String::from_utf8_lossy(&s)),
            }
        }
        assert!(tripped > 1_000);
    }

    #[test]
    fn garbage_is_not_an_event() {
        assert_eq!(classify("not json"), (None, None));
        assert_eq!(classify("{}"), (None, None));
    }
}
