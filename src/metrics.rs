//! The Prometheus registry and every metric name rattan exports.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub snapshot_version: IntGauge,
    pub snapshot_built_unix: prometheus::Gauge,
    pub snapshot_apps: IntGauge,
    pub events: IntCounterVec,
    pub sse_connects: IntCounter,
    pub sse_reconnects: IntCounter,
    pub fetches: IntCounter,
    pub fetch_failures: IntCounterVec,
    pub fetch_duration: Histogram,
    pub apps_rejected: IntCounter,
    pub callback_registrations: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_duration: prometheus::HistogramVec,
    pub http_in_flight: IntGauge,
    pub http_connections: IntGauge,
    pub backend_ejections: IntCounter,
    pub http_rejected: IntCounterVec,
    pub tls_certificates: IntGauge,
    pub tls_handshake_failures: IntCounter,
    pub tcp_bytes: IntCounterVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_active: IntGauge,
    pub tcp_listeners: IntGauge,
    pub haproxy_reloads: IntCounterVec,
    pub haproxy_render_duration: Histogram,
    pub haproxy_reload_duration: Histogram,
    pub haproxy_last_success: prometheus::Gauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let snapshot_built_unix = prometheus::Gauge::new(
            "rattan_snapshot_built_timestamp_seconds",
            "Unix time the current routing snapshot was built",
        )
        .expect("static metric definition");
        r.register(Box::new(snapshot_built_unix.clone()))
            .expect("unique metric name");
        let fetch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rattan_marathon_fetch_duration_seconds",
                "Duration of a full /v2/apps snapshot fetch, parse included",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("static metric definition");
        r.register(Box::new(fetch_duration.clone()))
            .expect("unique metric name");
        let http_duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "rattan_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by app",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["app"],
        )
        .expect("static metric definition");
        r.register(Box::new(http_duration.clone()))
            .expect("unique metric name");
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]))
            .expect("static metric definition");
            r.register(Box::new(h.clone())).expect("unique metric name");
            h
        };
        let haproxy_last_success = prometheus::Gauge::new(
            "rattan_haproxy_last_success_timestamp_seconds",
            "Unix time of the last haproxy.cfg applied with a successful reload",
        )
        .expect("static metric definition");
        r.register(Box::new(haproxy_last_success.clone()))
            .expect("unique metric name");
        Metrics {
            haproxy_reloads: counter_vec(
                &r,
                "rattan_haproxy_reloads_total",
                "haproxy.cfg pipeline runs by outcome: applied, skipped (identical), invalid (template or validation), failed (write or reload; retried)",
                &["outcome"],
            ),
            haproxy_render_duration: histogram(
                "rattan_haproxy_render_duration_seconds",
                "Template read, parse and render of haproxy.cfg",
            ),
            haproxy_reload_duration: histogram(
                "rattan_haproxy_reload_duration_seconds",
                "Validation, install, reload and cleanup of haproxy.cfg",
            ),
            haproxy_last_success,
            http_requests: counter_vec(
                &r,
                "rattan_http_requests_total",
                "Proxied HTTP requests by app (empty: no route) and status class",
                &["app", "class"],
            ),
            http_duration,
            backend_ejections: counter(
                &r,
                "rattan_backend_ejections_total",
                "Backends taken out of rotation after repeated connect failures (passive health)",
            ),
            http_rejected: counter_vec(
                &r,
                "rattan_http_rejected_total",
                "Requests refused before routing, by reason (smuggling = conflicting Content-Length and Transfer-Encoding)",
                &["reason"],
            ),
            tls_certificates: gauge(
                &r,
                "rattan_tls_certificates",
                "Certificate files loaded from --tls-cert-dir",
            ),
            tls_handshake_failures: counter(
                &r,
                "rattan_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out",
            ),
            tcp_bytes: counter_vec(
                &r,
                "rattan_tcp_bytes_total",
                "Bytes proxied by TCP-mode listeners, by app and direction (in: client to backend)",
                &["app", "direction"],
            ),
            tcp_connections: counter_vec(
                &r,
                "rattan_tcp_connections_total",
                "TCP-mode connections, by app and outcome (proxied, no_backend, connect_failed)",
                &["app", "outcome"],
            ),
            tcp_active: gauge(
                &r,
                "rattan_tcp_connections_active",
                "Open TCP-mode client connections",
            ),
            tcp_listeners: gauge(
                &r,
                "rattan_tcp_listeners",
                "TCP-mode ports listening now",
            ),
            http_in_flight: gauge(
                &r,
                "rattan_http_requests_in_flight",
                "HTTP requests being proxied now",
            ),
            http_connections: gauge(
                &r,
                "rattan_http_connections_active",
                "Open client connections to the proxy",
            ),
            snapshot_version: gauge(
                &r,
                "rattan_snapshot_version",
                "Version of the current routing snapshot",
            ),
            snapshot_apps: gauge(
                &r,
                "rattan_snapshot_apps",
                "Apps in the current routing snapshot",
            ),
            events: counter_vec(
                &r,
                "rattan_marathon_events_total",
                "Marathon events received, by type",
                &["type"],
            ),
            sse_connects: counter(
                &r,
                "rattan_marathon_sse_connects_total",
                "Event stream connections established",
            ),
            sse_reconnects: counter(
                &r,
                "rattan_marathon_sse_reconnects_total",
                "Event stream reconnect attempts after a failure or end of stream",
            ),
            fetches: counter(
                &r,
                "rattan_marathon_fetches_total",
                "Full /v2/apps snapshots fetched successfully",
            ),
            fetch_failures: counter_vec(
                &r,
                "rattan_marathon_fetch_failures_total",
                "Failed /v2/apps fetches, by endpoint",
                &["endpoint"],
            ),
            apps_rejected: counter(
                &r,
                "rattan_marathon_apps_rejected_total",
                "Apps skipped because their JSON did not parse",
            ),
            callback_registrations: counter(
                &r,
                "rattan_marathon_callback_registrations_total",
                "Event callback subscriptions registered with Marathon",
            ),
            snapshot_built_unix,
            fetch_duration,
            registry: r,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

/// One app's request counters by status class (1xx..5xx) and its duration histogram.
#[derive(Debug, Clone)]
pub struct AppMetrics {
    pub by_class: [IntCounter; 5],
    pub duration: Histogram,
}

impl AppMetrics {
    pub fn new(app: &str) -> AppMetrics {
        let m = metrics();
        let class = |c: &str| m.http_requests.with_label_values(&[app, c]);
        AppMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: m.http_duration.with_label_values(&[app]),
        }
    }

    pub fn record(&self, status: u16, elapsed: std::time::Duration) {
        let i = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_class[i].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}
