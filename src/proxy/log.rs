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
}

/// Counts the request by app and status class, with its time to the response head; returns the time now.
pub(crate) fn record(route: Option<&Route>, status: u16, started: Instant) -> Instant {
    let now = Instant::now();
    let took = now.saturating_duration_since(started);
    match route {
        Some(route) => route
            .metrics
            .get_or_init(|| crate::metrics::AppMetrics::for_app(&route.app_id))
            .record(status, took),
        None => {
            static NO_ROUTE: std::sync::OnceLock<std::sync::Arc<crate::metrics::AppMetrics>> =
                std::sync::OnceLock::new();
            NO_ROUTE
                .get_or_init(|| crate::metrics::AppMetrics::for_app(""))
                .record(status, took)
        }
    }
    now
}

pub(crate) struct AccessEntry<'a> {
    pub peer: SocketAddr,
    pub method: &'a Method,
    pub uri: &'a http::Uri,
    pub version: Version,
    pub host: Option<&'a str>,
    pub status: u16,
    pub size: Option<u64>,
    pub app: &'a str,
    pub backend: Option<&'a Endpoint>,
    pub tls: bool,
    pub duration: Duration,
}

/// One line on stdout per request: JSON, or the common log format (`-` for what CLF has no field for).
pub(crate) fn access_log(format: AccessLog, e: &AccessEntry<'_>) {
    use std::io::Write;
    if let Some(line) = access_line(format, e, time::OffsetDateTime::now_utc()) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
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
            serde_json::json!({
                "time": ts,
                "client": e.peer.ip().to_string(),
                "method": e.method.as_str(),
                "host": e.host,
                "path": path,
                "protocol": format!("{:?}", e.version),
                "tls": e.tls,
                "status": e.status,
                "bytes": e.size,
                "app": e.app,
                "backend": e.backend.map(|b| b.to_string()),
                "duration_ms": e.duration.as_secs_f64() * 1000.0,
            })
            .to_string()
        }
        AccessLog::Clf => {
            const FMT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            );
            format!(
                "{} - - [{}] \"{} {} {:?}\" {} {}",
                e.peer.ip(),
                now.format(FMT).unwrap_or_default(),
                e.method,
                path,
                e.version,
                e.status,
                e.size.map_or("-".to_string(), |s| s.to_string())
            )
        }
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            size: Some(1234),
            app: "/shop/cart",
            backend: Some(&backend),
            tls: false,
            duration: Duration::from_micros(1500),
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
        assert!(access_line(AccessLog::Off, &e, now).is_none());
    }
}
