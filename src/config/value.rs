//! Values as flags, the environment and files spell them: durations, sizes, addresses, URLs, booleans.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use url::Url;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

pub(crate) fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// `500ms`, `5s`, `2m`, `1h 30m`; a bare number is seconds.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        bad(
            key,
            format!("'{s}' is not a duration ({e}); use e.g. 500ms, 5s, 2m"),
        )
    })
}

/// A callback token travels unescaped in the URL Marathon is given: at least 16 characters of `A-Z a-z 0-9 - _ . ~`.
pub fn valid_callback_token(t: &str) -> bool {
    t.len() >= 16
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// `65536`, `64KiB`, `16MiB`, `1GiB` (`K`, `M`, `G`, `KB`… are binary too); at least 1 KiB.
/// A duration as `--help` shows it: `250ms`, `30s`, `5m`.
pub fn show_duration(d: Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    if ms != 0 || secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs >= 300 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A size as `--help` shows it: `16MiB`, `64KiB`, or bytes.
pub fn show_size(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

pub fn parse_size(key: &str, s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(bad(
                key,
                format!("'{s}' is not a size; use e.g. 65536, 64KiB, 16MiB"),
            ))
        }
    };
    let n: usize = num.parse().map_err(|_| {
        bad(
            key,
            format!("'{s}' is not a size; use e.g. 65536, 64KiB, 16MiB"),
        )
    })?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| bad(key, format!("'{s}' is too large")))?;
    if bytes < 1024 {
        return Err(bad(key, "must be at least 1KiB"));
    }
    Ok(bytes)
}

/// Accepts `host:port`, `:port` (Bamboo's `BIND=:8000`) and `[v6]:port`.
pub fn parse_bind(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            bad(
                key,
                format!("'{s}' is not an address like 0.0.0.0:8000 or :8000"),
            )
        })
}

pub(super) fn parse_url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s.trim()).map_err(|e| bad(key, format!("'{s}' is not a URL ({e})")))?;
    match u.scheme() {
        "http" | "https" if u.host_str().is_some() => Ok(u),
        _ => Err(bad(key, format!("'{s}' is not an http(s) URL with a host"))),
    }
}

/// Go's `strconv.ParseBool`, but an invalid value is an error (Bamboo silently took it as false).
pub(super) fn go_bool(key: &str, s: &str) -> Result<bool, ConfigError> {
    crate::boolean::parse(s, crate::boolean::Spelling::Go)
        .ok_or_else(|| bad(key, format!("'{s}' is not true or false")))
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}
