//! The Prometheus registry and every metric name rattan exports.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, PullingGauge,
    Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

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
    pub callback_refused: IntCounter,
    pub accept_failures: prometheus::IntCounterVec,
    pub marathon_oversized: prometheus::IntCounterVec,
    pub http_in_flight: Arc<ShardedGauge>,
    pub http_connections: IntGauge,
    pub backend_ejections: IntCounter,
    pub http_rejected: IntCounterVec,
    pub tls_certificates: IntGauge,
    pub tls_handshake_failures: IntCounter,
    pub tcp_bytes: IntCounterVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_active: IntGauge,
    pub tcp_listeners: IntGauge,
    pub http_port_listeners: IntGauge,
    pub port_errors: IntGauge,
    pub route_errors: IntGauge,
    pub haproxy_reloads: IntCounterVec,
    pub haproxy_render_duration: Histogram,
    pub haproxy_reload_duration: Histogram,
    pub haproxy_last_success: prometheus::Gauge,
    pub zk_connected: IntGauge,
    pub zk_session_expiries: IntCounter,
    pub tls_cert_not_after: prometheus::GaugeVec,
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
        r.register(Box::new(HttpCollector::new()))
            .expect("unique metric name");
        let http_in_flight = Arc::new(ShardedGauge::default());
        {
            let g = http_in_flight.clone();
            r.register(Box::new(
                PullingGauge::new(
                    "rattan_http_requests_in_flight",
                    "HTTP requests being proxied now",
                    Box::new(move || g.get() as f64),
                )
                .expect("static metric definition"),
            ))
            .expect("unique metric name");
        }
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
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric name");
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "rattan_build_info",
                "Always 1: the version and the commit this binary was built from",
            ),
            &["version", "commit"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("RATTAN_COMMIT")])
            .set(1);
        r.register(Box::new(build_info))
            .expect("unique metric name");
        let tls_cert_not_after = prometheus::GaugeVec::new(
            Opts::new(
                "rattan_tls_certificate_not_after_timestamp_seconds",
                "Expiry (Unix time) of each certificate file loaded (--tls-cert-dir, SSL_CERT labels), by file and first name",
            ),
            &["file", "name"],
        )
        .expect("static metric definition");
        r.register(Box::new(tls_cert_not_after.clone()))
            .expect("unique metric name");
        Metrics {
            tls_cert_not_after,
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
                "TCP-mode connections, by app and outcome (proxied, no_backend, connect_failed, denied)",
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
            http_port_listeners: gauge(
                &r,
                "rattan_http_port_listeners",
                "HTTP-mode service ports listening now (each an app's own frontend)",
            ),
            route_errors: gauge(
                &r,
                "rattan_route_errors",
                "Rules and labels that do not compile (see /api/routes)",
            ),
            port_errors: gauge(
                &r,
                "rattan_port_errors",
                "Service ports not served: claimed by another app, or a label that does not parse (see /api/routes)",
            ),
            http_in_flight,
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
            accept_failures: counter_vec(
                &r,
                "rattan_accept_failures_total",
                "Failed accepts (out of file descriptors, mostly), by listener",
                &["listener"],
            ),
            callback_refused: counter(
                &r,
                "rattan_marathon_callback_refused_total",
                "Event callbacks refused for a missing or wrong token",
            ),
            marathon_oversized: counter_vec(
                &r,
                "rattan_marathon_oversized_total",
                "Marathon responses or events dropped for exceeding their size cap, by kind (event, body)",
                &["kind"],
            ),
            zk_connected: gauge(
                &r,
                "rattan_zookeeper_connected",
                "1 while the ZooKeeper session is connected and the rules watch armed, else 0 (absent without --zk)",
            ),
            zk_session_expiries: counter(
                &r,
                "rattan_zookeeper_session_expiries_total",
                "ZooKeeper sessions that ended (expired, closed, auth failed) and were started anew",
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

/// Upper bounds of `rattan_http_request_duration_seconds`' buckets.
const HTTP_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Metrics written by every request are kept in shards, one per worker thread (up to 16), each on its own cache
/// line, and summed when scraped: with one prometheus counter per app, every core would write the same lines on
/// every request (`cargo bench --bench balance` measures both).
fn shards() -> usize {
    static N: LazyLock<usize> = LazyLock::new(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .next_power_of_two()
            .min(16)
    });
    *N
}

/// The calling thread's shard: threads take them in turn.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    MINE.with(|i| *i) & (shards() - 1)
}

/// A cache line to itself.
#[derive(Default)]
#[repr(align(64))]
struct Line<T>(T);

fn lines<T: Default>() -> Box<[Line<T>]> {
    (0..shards()).map(|_| Line::default()).collect()
}

/// An up-down count written from every worker (requests in flight).
pub struct ShardedGauge(Box<[Line<AtomicI64>]>);

impl Default for ShardedGauge {
    fn default() -> Self {
        ShardedGauge(lines())
    }
}

impl ShardedGauge {
    pub fn inc(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0[shard()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum of the shards (a request may be counted up on one thread and down on another).
    pub fn get(&self) -> i64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// The `method` label's values: the standard methods, then `OTHER` for any other token (a client cannot grow the
/// label set).
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// A method's index in [`METHODS`].
pub fn method_index(m: &[u8]) -> u8 {
    match m {
        b"GET" => 0,
        b"HEAD" => 1,
        b"POST" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"CONNECT" => 5,
        b"OPTIONS" => 6,
        b"TRACE" => 7,
        b"PATCH" => 8,
        _ => 9,
    }
}

/// (method, status code) pairs one shard of an app counts apart; an app rarely sees a dozen. Past that, requests
/// count under `code="other"`, so the series an app can have stay bounded whatever its backends answer.
const CODE_SLOTS: usize = 32;

#[derive(Default)]
struct CodeSlot {
    /// `(method + 1) << 10 | status`; 0 is free.
    key: std::sync::atomic::AtomicU32,
    n: AtomicU64,
}

/// One shard of an app's counters.
#[derive(Default)]
struct AppShard {
    /// Requests by (method, status code), open-addressed.
    codes: [CodeSlot; CODE_SLOTS],
    /// Requests whose pair found no free slot.
    overflow: [AtomicU64; METHODS.len()],
    /// Requests per duration bucket (not cumulative; beyond the last bound: only in the count).
    buckets: [AtomicU64; HTTP_BUCKETS.len()],
    sum_ns: AtomicU64,
    /// Backends tried again after a failed connect or a dead reused connection.
    retries: AtomicU64,
}

impl AppShard {
    fn count(&self, method: u8, status: u16) {
        let key = (u32::from(method) + 1) << 10 | u32::from(status.clamp(100, 999));
        let start = (key.wrapping_mul(0x9e37_79b1) >> 27) as usize;
        for i in 0..CODE_SLOTS {
            let slot = &self.codes[(start + i) % CODE_SLOTS];
            let k = slot.key.load(Ordering::Relaxed);
            let mine = k == key
                || (k == 0
                    && match slot
                        .key
                        .compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed)
                    {
                        Ok(_) => true,
                        Err(other) => other == key,
                    });
            if mine {
                slot.n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.overflow[usize::from(method).min(METHODS.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }
}

/// One app's request counters by method and status code, its retries and its duration histogram:
/// `rattan_http_requests_total`, `rattan_http_retries_total` and `rattan_http_request_duration_seconds`. One per app
/// for the life of the process, as a labelled prometheus child would be, so routes rebuilt for the same app keep
/// counting on.
pub struct AppMetrics {
    app: String,
    shards: Box<[Line<AppShard>]>,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics")
            .field("app", &self.app)
            .finish()
    }
}

fn apps() -> &'static Mutex<BTreeMap<String, Arc<AppMetrics>>> {
    static APPS: LazyLock<Mutex<BTreeMap<String, Arc<AppMetrics>>>> =
        LazyLock::new(Default::default);
    &APPS
}

/// What an app's shards add up to when scraped.
struct Totals {
    /// ((method, code or None for the overflow), requests)
    codes: BTreeMap<(u8, Option<u16>), u64>,
    buckets: [u64; HTTP_BUCKETS.len()],
    count: u64,
    sum: f64,
    retries: u64,
}

impl AppMetrics {
    /// The app's metrics (empty: requests with no route), made on first use.
    pub fn for_app(app: &str) -> Arc<AppMetrics> {
        let mut all = apps().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = all.get(app) {
            return m.clone();
        }
        let m = Arc::new(AppMetrics {
            app: app.to_string(),
            shards: lines(),
        });
        all.insert(app.to_string(), m.clone());
        m
    }

    pub fn record(&self, method: u8, status: u16, elapsed: std::time::Duration, retries: u32) {
        let s = &self.shards[shard()].0;
        s.count(method, status);
        if retries > 0 {
            s.retries.fetch_add(u64::from(retries), Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        if let Some(b) = HTTP_BUCKETS.iter().position(|bound| secs <= *bound) {
            s.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        s.sum_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn totals(&self) -> Totals {
        let mut t = Totals {
            codes: BTreeMap::new(),
            buckets: [0; HTTP_BUCKETS.len()],
            count: 0,
            sum: 0.0,
            retries: 0,
        };
        let mut ns = 0u64;
        for Line(s) in self.shards.iter() {
            for slot in &s.codes {
                let key = slot.key.load(Ordering::Relaxed);
                let n = slot.n.load(Ordering::Relaxed);
                if key != 0 && n != 0 {
                    let method = ((key >> 10) - 1) as u8;
                    *t.codes
                        .entry((method, Some((key & 0x3ff) as u16)))
                        .or_default() += n;
                    t.count += n;
                }
            }
            for (m, o) in s.overflow.iter().enumerate() {
                let n = o.load(Ordering::Relaxed);
                if n != 0 {
                    *t.codes.entry((m as u8, None)).or_default() += n;
                    t.count += n;
                }
            }
            for (tb, b) in t.buckets.iter_mut().zip(&s.buckets) {
                *tb += b.load(Ordering::Relaxed);
            }
            ns = ns.saturating_add(s.sum_ns.load(Ordering::Relaxed));
            t.retries += s.retries.load(Ordering::Relaxed);
        }
        t.sum = ns as f64 / 1e9;
        t
    }
}

/// Exposes every app's [`AppMetrics`] as the two families a `IntCounterVec` and a `HistogramVec` would.
struct HttpCollector {
    descs: Vec<Desc>,
}

const REQUESTS: (&str, &str) = (
    "rattan_http_requests_total",
    "Proxied HTTP requests by app (empty: no route), status code (`other` past 32 method/code pairs per app), method (standard ones, else OTHER) and status class",
);
const RETRIES: (&str, &str) = (
    "rattan_http_retries_total",
    "Requests sent again to another backend (connect failed) or on a new connection (a reused one was dead), by app",
);
const DURATION: (&str, &str) = (
    "rattan_http_request_duration_seconds",
    "Time from a request's arrival to its response head, by app",
);

impl HttpCollector {
    fn new() -> HttpCollector {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("static metric definition")
        };
        HttpCollector {
            descs: vec![
                desc(REQUESTS, &["app", "class", "code", "method"]),
                desc(RETRIES, &["app"]),
                desc(DURATION, &["app"]),
            ],
        }
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut l = proto::LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn family(
    (name, help): (&str, &str),
    kind: MetricType,
    metrics: Vec<proto::Metric>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let all: Vec<Arc<AppMetrics>> = apps()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let (mut requests, mut retries, mut durations) = (Vec::new(), Vec::new(), Vec::new());
        let counter = |labels: Vec<proto::LabelPair>, n: u64| {
            let mut c = proto::Counter::default();
            c.set_value(n as f64);
            let mut m = proto::Metric::default();
            m.set_label(labels);
            m.set_counter(c);
            m
        };
        for a in &all {
            let t = a.totals();
            for ((method, code), n) in &t.codes {
                let (code, class) = match code {
                    Some(c) => (c.to_string(), format!("{}xx", c / 100)),
                    None => ("other".to_string(), "other".to_string()),
                };
                requests.push(counter(
                    // In name order, as the prometheus crate writes its own.
                    vec![
                        label("app", &a.app),
                        label("class", &class),
                        label("code", &code),
                        label(
                            "method",
                            METHODS[usize::from(*method).min(METHODS.len() - 1)],
                        ),
                    ],
                    *n,
                ));
            }
            retries.push(counter(vec![label("app", &a.app)], t.retries));
            let (buckets, count, sum) = (t.buckets, t.count, t.sum);
            let mut h = proto::Histogram::default();
            let mut cumulative = 0;
            h.set_bucket(
                HTTP_BUCKETS
                    .iter()
                    .zip(buckets)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect(),
            );
            h.set_sample_count(count);
            h.set_sample_sum(sum);
            let mut m = proto::Metric::default();
            m.set_label(vec![label("app", &a.app)]);
            m.set_histogram(h);
            durations.push(m);
        }
        vec![
            family(REQUESTS, MetricType::COUNTER, requests),
            family(RETRIES, MetricType::COUNTER, retries),
            family(DURATION, MetricType::HISTOGRAM, durations),
        ]
    }
}

pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(families: &[MetricFamily]) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(families, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// A backend answering every status code there is, to every method, cannot grow an app's series without end:
    /// past 32 (method, code) pairs per shard the rest count as `code="other"`, and nothing is lost.
    #[test]
    fn codes_per_app_are_bounded_and_counted() {
        let app = "/hostile-codes";
        let m = AppMetrics::for_app(app);
        let mut n = 0u64;
        for status in 0..1200u16 {
            for method in 0..12u8 {
                m.record(method, status, std::time::Duration::from_micros(1), 0);
                n += 1;
            }
        }
        let r = Registry::new();
        r.register(Box::new(HttpCollector::new())).unwrap();
        let out = text(&r.gather());
        let series: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("rattan_http_requests_total{") && l.contains(app))
            .collect();
        // One shard here: 32 pairs, plus one overflow series per method label.
        assert!(
            series.len() <= CODE_SLOTS + METHODS.len(),
            "{}",
            series.len()
        );
        assert!(series.iter().any(|l| l.contains("code=\"other\"")));
        let total: f64 = series
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total as u64, n);
    }

    /// The sharded counters read exactly as the prometheus vectors they replace would, for requests recorded
    /// from several threads: same names, help, types, labels, buckets and counts.
    #[test]
    fn sharded_http_metrics_read_as_prometheus_vectors_would() {
        let app = "/metrics-test";
        let r = Registry::new();
        let counts = IntCounterVec::new(
            Opts::new(REQUESTS.0, REQUESTS.1),
            &["app", "code", "method", "class"],
        )
        .unwrap();
        let durations = prometheus::HistogramVec::new(
            HistogramOpts::new(DURATION.0, DURATION.1).buckets(HTTP_BUCKETS.to_vec()),
            &["app"],
        )
        .unwrap();
        r.register(Box::new(counts.clone())).unwrap();
        r.register(Box::new(durations.clone())).unwrap();
        let retries = IntCounterVec::new(Opts::new(RETRIES.0, RETRIES.1), &["app"]).unwrap();
        r.register(Box::new(retries.clone())).unwrap();
        let seen: Vec<(u16, Duration)> = [99u16, 101, 200, 204, 302, 404, 503, 600]
            .into_iter()
            .zip([0, 400, 500, 501, 2_500, 90_000, 10_000_000, 30_000_000])
            .map(|(s, us)| (s, Duration::from_micros(us)))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let ours = AppMetrics::for_app(app);
                    for (status, took) in &seen {
                        let method = (*status % 3) as u8;
                        ours.record(method, *status, *took, 1);
                        let code = status.clamp(&100, &999);
                        counts
                            .with_label_values(&[
                                app,
                                &code.to_string(),
                                METHODS[usize::from(method)],
                                &format!("{}xx", code / 100),
                            ])
                            .inc();
                        retries.with_label_values(&[app]).inc();
                        durations
                            .with_label_values(&[app])
                            .observe(took.as_secs_f64());
                    }
                });
            }
        });
        let mine = |t: String| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with('#') || l.contains("app=\"/metrics-test\""))
                .map(str::to_string)
                .collect()
        };
        let ours_r = Registry::new();
        ours_r.register(Box::new(HttpCollector::new())).unwrap();
        let ours = mine(text(&ours_r.gather()));
        let theirs = mine(text(&r.gather()));
        // The sums are added in a different order (and ours in nanoseconds): equal to the last few digits.
        let (sums, rest): (Vec<_>, Vec<_>) = ours.into_iter().partition(|l| l.contains("_sum{"));
        let (their_sums, their_rest): (Vec<_>, Vec<_>) =
            theirs.into_iter().partition(|l| l.contains("_sum{"));
        assert_eq!(rest, their_rest);
        let value = |l: &String| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        assert_eq!(sums.len(), 1);
        assert!(
            (value(&sums[0]) - value(&their_sums[0])).abs() < 1e-9,
            "{sums:?} {their_sums:?}"
        );
        assert!(
            rest.iter()
                .any(|l| l.ends_with("_count{app=\"/metrics-test\"} 32")),
            "{rest:#?}"
        );
    }

    #[test]
    fn the_sharded_gauge_sums_across_threads() {
        let g = ShardedGauge::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| g.inc()));
            }
        });
        // Down on other threads than up.
        std::thread::scope(|s| {
            s.spawn(|| (0..2500).for_each(|_| g.dec()));
        });
        assert_eq!(g.get(), 1500);
    }
}
