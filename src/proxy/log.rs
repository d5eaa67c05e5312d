//! What is recorded of each request: its metrics by app and status, and the access log line.

use crate::marathon::address::Endpoint;
use crate::rules::table::Route;
use http::{Method, Version};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `--access-log`: one line per request on stdout, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Json,
    Clf,
    /// CLF with the referer and the user agent (Apache's and nginx's `combined`).
    Combined,
}

/// Counts the request by app, method and status, with its time to the response head and its retries; returns the
/// time now.
pub(crate) fn record(
    route: Option<&Route>,
    (method, status): (u8, u16),
    started: Instant,
    retries: u32,
) -> Instant {
    let now = Instant::now();
    let took = now.saturating_duration_since(started);
    match route {
        Some(route) => route
            .metrics
            .get_or_init(|| crate::metrics::AppMetrics::for_app(&route.app_id))
            .record(method, status, took, retries),
        None => {
            static NO_ROUTE: std::sync::OnceLock<std::sync::Arc<crate::metrics::AppMetrics>> =
                std::sync::OnceLock::new();
            NO_ROUTE
                .get_or_init(|| crate::metrics::AppMetrics::for_app(""))
                .record(method, status, took, retries)
        }
    }
    now
}

pub(crate) struct AccessEntry<'a> {
    pub peer: SocketAddr,
    pub method: &'a Method,
    pub uri: &'a http::Uri,
    pub version: Version,
    /// `Host`, or HTTP/2's `:authority`.
    pub host: Option<&'a str>,
    pub status: u16,
    /// The request body's declared length.
    pub bytes_in: Option<u64>,
    /// The response body's declared length (the line is written at the response head).
    pub bytes_out: Option<u64>,
    pub app: &'a str,
    pub backend: Option<&'a Endpoint>,
    pub tls: bool,
    pub timing: Timing,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Where a request's time went, from its arrival: the backend connection ready (reused or new), the response's
/// first byte, the response head out (`total`); and the backends tried again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timing {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub total: Duration,
    pub retries: u32,
}

/// Moments of one request the exchange marks as it goes (the access log reads them at the end). Atomics, not
/// cells: the request's context is shared across awaits of a `Send` future.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    connect_us: std::sync::atomic::AtomicU64,
    first_byte_us: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU32,
}

impl Marks {
    fn mark(slot: &std::sync::atomic::AtomicU64, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        slot.store(us, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn connected(&self, started: Instant) {
        Self::mark(&self.connect_us, started);
    }

    pub fn first_byte(&self, started: Instant) {
        Self::mark(&self.first_byte_us, started);
    }

    pub fn retried(&self) {
        self.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn timing(&self, total: Duration) -> Timing {
        let get = |slot: &std::sync::atomic::AtomicU64| match slot
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            us => Some(Duration::from_micros(us)),
        };
        Timing {
            connect: get(&self.connect_us),
            first_byte: get(&self.first_byte_us),
            total,
            retries: self.retries(),
        }
    }
}

/// Where access log lines go: stdout (nothing else is written there), or a file opened for appending.
static SINK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Sends the access log to `path` (appended; each line one `write`, so rotation by copytruncate loses nothing).
pub fn to_file(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = SINK.set(f);
    Ok(())
}

/// One line per request: JSON, the common log format or the combined one (`-` for what they have no value for).
pub(crate) fn access_log(format: AccessLog, e: &AccessEntry<'_>) {
    use std::io::Write;
    if let Some(mut line) = access_line(format, e, time::OffsetDateTime::now_utc()) {
        line.push('\n');
        match SINK.get() {
            Some(mut f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
        }
    }
}

/// Milliseconds with microsecond precision, as a JSON number (`3.587`, not `3.5870000000000002`).
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A CLF quoted field: `"` and `\` escaped, control bytes as `\xNN` (a client's header cannot forge a line).
fn quoted(v: Option<&str>) -> String {
    let Some(v) = v else { return "\"-\"".into() };
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn access_line(
    format: AccessLog,
    e: &AccessEntry<'_>,
    now: time::OffsetDateTime,
) -> Option<String> {
    let path = e.uri.path_and_query().map_or("/", |p| p.as_str());
    let line = match format {
        AccessLog::Off => return None,
        AccessLog::Json => {
            let ts = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let t = &e.timing;
            serde_json::json!({
                "time": ts,
                "client": e.peer.ip().to_string(),
                "method": e.method.as_str(),
                "host": e.host,
                "path": path,
                "protocol": protocol(e.version),
                "tls": e.tls,
                "status": e.status,
                "bytes_in": e.bytes_in,
                "bytes_out": e.bytes_out,
                "app": e.app,
                "backend": e.backend.map(|b| b.to_string()),
                "connect_ms": t.connect.map(ms),
                "first_byte_ms": t.first_byte.map(ms),
                "duration_ms": ms(t.total),
                "retries": t.retries,
                "user_agent": e.user_agent,
                "request_id": e.request_id,
            })
            .to_string()
        }
        AccessLog::Clf | AccessLog::Combined => {
            const FMT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            );
            let mut line = format!(
                "{} - - [{}] {} {} {}",
                e.peer.ip(),
                now.format(FMT).unwrap_or_default(),
                quoted(Some(&format!(
                    "{} {} {}",
                    e.method,
                    path,
                    protocol(e.version)
                ))),
                e.status,
                e.bytes_out.map_or("-".to_string(), |s| s.to_string())
            );
            if format == AccessLog::Combined {
                line.push(' ');
                line.push_str(&quoted(e.referer));
                line.push(' ');
                line.push_str(&quoted(e.user_agent));
            }
            line
        }
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's header cannot forge a CLF line or a field: quotes and backslashes escaped, control bytes as
    /// `\xNN`.
    #[test]
    fn quoted_fields_are_escaped() {
        assert_eq!(
            quoted(Some("a\tb\"c\\d\u{1b}[31m")),
            "\"a\\x09b\\\"c\\\\d\\x1b[31m\""
        );
        assert_eq!(quoted(None), "\"-\"");
    }

    #[test]
    fn access_log_lines() {
        let uri: http::Uri = "/shop/cart?x=1".parse().unwrap();
        let backend = Endpoint {
            host: "10.0.0.7".into(),
            port: 31001,
        };
        let e = AccessEntry {
            peer: "192.0.2.9:5555".parse().unwrap(),
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            host: Some("shop.example.com"),
            status: 200,
            bytes_in: Some(0),
            bytes_out: Some(1234),
            app: "/shop/cart",
            backend: Some(&backend),
            tls: false,
            timing: Timing {
                connect: Some(Duration::from_micros(120)),
                first_byte: Some(Duration::from_micros(3587)),
                total: Duration::from_micros(3_600),
                retries: 1,
            },
            user_agent: Some("curl/8.\"1\""),
            referer: None,
            request_id: Some("abc"),
        };
        let now = time::macros::datetime!(2026-11-30 06:05:04 UTC);
        assert_eq!(
            access_line(AccessLog::Clf, &e, now).unwrap(),
            "192.0.2.9 - - [30/Nov/2026:06:05:04 +0000] \"GET /shop/cart?x=1 HTTP/1.1\" 200 1234"
        );
        let j: serde_json::Value =
            serde_json::from_str(&access_line(AccessLog::Json, &e, now).unwrap()).unwrap();
        assert_eq!(j["app"], "/shop/cart");
        assert_eq!(j["backend"], "10.0.0.7:31001");
        assert_eq!(j["status"], 200);
        assert_eq!(j["time"], "2026-11-30T06:05:04Z");
        // Numbers as numbers, in milliseconds to the microsecond.
        assert_eq!(j["first_byte_ms"].to_string(), "3.587");
        assert_eq!(j["duration_ms"].to_string(), "3.6");
        assert_eq!(j["connect_ms"].to_string(), "0.12");
        assert_eq!(j["retries"], 1);
        assert_eq!(j["request_id"], "abc");
        assert_eq!(j["protocol"], "HTTP/1.1");
        assert_eq!(
            access_line(AccessLog::Combined, &e, now).unwrap(),
            "192.0.2.9 - - [30/Nov/2026:06:05:04 +0000] \"GET /shop/cart?x=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8.\\\"1\\\"\""
        );
        assert!(access_line(AccessLog::Off, &e, now).is_none());
    }
}
