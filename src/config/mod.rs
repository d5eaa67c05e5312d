//! Settings from a TOML file or a Bamboo JSON file, the environment (Bamboo's names too) and the command line.
//! Precedence: command line, then environment, then file, then defaults. Every invalid value fails at start with
//! one line naming the key.

//!
//! | file | owns |
//! |---|---|
//! | `cli` | the flags and the environment variables they read |
//! | `file` | the TOML file and Bamboo's JSON file |
//! | `value` | how durations, sizes, addresses and booleans are spelled |
//! | `mod` | resolution: each setting from the first layer that has it, else its subsystem's default |

mod cli;
mod file;
mod value;

pub use cli::{Cli, Command, EventMode, HaproxyOpts, LogFormat, Mode, Opts};
pub use file::load_file;
pub use value::{parse_bind, parse_duration, parse_size, valid_callback_token, ConfigError};

use crate::proxy::AccessLog;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;
use value::{bad, go_bool, nonempty, parse_url};

#[derive(Debug, Clone)]
pub struct Settings {
    pub marathon: Vec<Url>,
    pub marathon_auth: Option<(String, String)>,
    pub events: EventMode,
    pub callback_url: Option<Url>,
    pub api_bind: SocketAddr,
    pub http_bind: SocketAddr,
    pub zk: Option<String>,
    pub zk_path: String,
    pub zk_auth: Option<(String, String)>,
    pub zk_session_timeout: Duration,
    pub api_auth: crate::api::ApiAuth,
    pub limits: Limits,
    pub route_options: crate::rules::table::RouteOptions,
    pub data_dir: PathBuf,
    /// The full snapshot's timing; `retry_min`/`retry_max` are the reconnect back-off of the event stream too.
    pub resync: crate::discovery::ResyncTiming,
    pub poll_interval: Duration,
    pub sse_idle_timeout: Duration,
    pub marathon_timeout: Duration,
    pub callback_check_interval: Duration,
    pub drain_timeout: Duration,
    pub ignore_health: bool,
    pub prefer_host_port: bool,
    /// The proxy's own options, as it takes them (its connection cap is then fitted to the descriptors).
    pub http: crate::proxy::ProxyOptions,
    pub proxy: ProxySettings,
    pub haproxy: HaproxySettings,
    /// `--max-staleness`: `None` is off.
    pub max_staleness: Option<Duration>,
    pub marathon_tls: MarathonTls,
    /// Where the access log goes; `None` is stdout.
    pub access_log_file: Option<PathBuf>,
}

pub use crate::marathon::tls::MarathonTls;

/// What the logger needs, read before anything else starts (so a bad setting is reported on stderr as text).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `--log-level`; `None`: `RUST_LOG`, else `info`.
    pub filter: Option<String>,
}

/// The logging settings alone, from every layer.
pub fn log_settings(opts: &Opts) -> Result<LogSettings, ConfigError> {
    let file = match &opts.config {
        Some(p) => load_file(p)?,
        None => Opts::default(),
    };
    let o = layered(opts, file)?;
    let filter = nonempty(o.log_level);
    if let Some(f) = &filter {
        tracing_subscriber::EnvFilter::try_new(f).map_err(|e| {
            bad(
                "log-level",
                format!(
                    "'{f}' is not a level or filter ({e}); use e.g. info, debug, warn,rattan=debug"
                ),
            )
        })?;
    }
    Ok(LogSettings {
        format: o.log_format.unwrap_or_default(),
        filter,
    })
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub https_bind: Option<SocketAddr>,
    pub appid_bind: Option<SocketAddr>,
    /// marathon-lb's stats port (`--stats-bind`).
    pub stats_bind: Option<SocketAddr>,
    pub tls_cert_dir: Option<PathBuf>,
    pub tcp_bind_address: std::net::IpAddr,
    pub eject_after: u32,
    pub eject_for: Duration,
}

/// What a hostile peer could make rattan hold without them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub callback_token: Option<String>,
    pub marathon_max_event_size: usize,
    pub marathon_max_body: usize,
    pub api_max_connections: usize,
    pub api_max_body: usize,
}

#[derive(Debug, Clone)]
pub struct HaproxySettings {
    pub mode: Mode,
    /// The reload pipeline's options (`extra`, the listeners, is filled from the other settings at start).
    pub pipeline: crate::haproxy::HaproxyOptions,
    pub stats_bind: Option<String>,
    pub http_bind: SocketAddr,
}

/// The command line (with the environment) laid over the file: a value given on the command line wins; an empty
/// one (an environment variable set to "", as Bamboo's images do) gives way, as in Bamboo.
fn layered(cli: &Opts, file: Opts) -> Result<Opts, ConfigError> {
    use serde_json::Value;
    fn given(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            Value::Array(a) => a.iter().any(given),
            _ => true,
        }
    }
    fn over(base: &mut Value, top: Value) {
        match (base, top) {
            (Value::Object(b), Value::Object(t)) => {
                for (k, v) in t {
                    match b.get_mut(&k) {
                        Some(slot) if v.is_object() => over(slot, v),
                        Some(slot) if given(&v) => *slot = v,
                        _ => {}
                    }
                }
            }
            (b, t) => *b = t,
        }
    }
    let internal = |e: serde_json::Error| bad("config", format!("cannot merge settings: {e}"));
    let mut merged = serde_json::to_value(&file).map_err(internal)?;
    over(&mut merged, serde_json::to_value(cli).map_err(internal)?);
    let mut o: Opts = serde_json::from_value(merged).map_err(internal)?;
    // Not in the file, so not in the merge: the command line's own.
    o.config.clone_from(&cli.config);
    o.workers = cli.workers;
    Ok(o)
}

impl Settings {
    /// Resolves the layers. `dev` relaxes what the dev command fills in itself (Marathon URL).
    pub fn resolve(opts: &Opts, dev: bool) -> Result<Settings, ConfigError> {
        let mut cli = opts.clone();
        // Bamboo's switch is an environment variable: below --events, above the file.
        if cli.events.is_none() {
            cli.events = match nonempty(cli.marathon_use_event_stream.take()) {
                Some(s) if go_bool("MARATHON_USE_EVENT_STREAM", s.trim())? => Some(EventMode::Sse),
                Some(_) => Some(EventMode::Callback),
                None => None,
            };
        }
        let file = match &opts.config {
            Some(p) => load_file(p)?,
            None => Opts::default(),
        };
        // Bamboo's configuration, unchanged (its JSON file, or its reload command) and no --mode: run as Bamboo ran.
        let as_bamboo = opts.mode.is_none()
            && file.mode.is_none()
            && (opts.config.as_deref().is_some_and(file::is_bamboo_json)
                || opts
                    .haproxy
                    .reload_command
                    .as_deref()
                    .is_some_and(|c| !c.trim().is_empty()));
        let o = layered(&cli, file)?;

        let mut marathon = Vec::new();
        for s in o
            .marathon
            .iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            marathon.push(parse_url("marathon", s)?);
        }
        if marathon.is_empty() && !dev {
            return Err(bad(
                "marathon",
                "no Marathon endpoint given (--marathon, MARATHON_ENDPOINT or Marathon.Endpoint)",
            ));
        }

        let user = o.marathon_user;
        let password = o.marathon_password;
        let marathon_auth = match (user, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(_), None) => {
                return Err(bad(
                    "marathon-password",
                    "marathon-user is set but no password",
                ))
            }
            (None, Some(_)) => {
                return Err(bad("marathon-user", "marathon-password is set but no user"))
            }
            (None, None) => None,
        };

        let events = o.events.unwrap_or(EventMode::Sse);

        let callback_url = match o.callback_url {
            Some(s) => Some(parse_url("callback-url", &s)?),
            None => None,
        };
        if events == EventMode::Callback && callback_url.is_none() && !dev {
            return Err(bad(
                "callback-url",
                "required with --events callback (BAMBOO_ENDPOINT: this instance's URL as Marathon reaches it)",
            ));
        }

        // Defaults are the subsystems' own: their options' `Default`, or a constant beside the code that uses it.
        let proxy_d = crate::proxy::ProxyOptions::default();
        let timing_d = crate::discovery::ResyncTiming::default();
        let haproxy_d = crate::haproxy::HaproxyOptions::default();
        let dur = |key: &str, v: Option<String>, default: Duration| {
            v.map_or(Ok(default), |v| parse_duration(key, &v))
        };
        let resync_interval = dur("resync-interval", o.resync_interval, timing_d.interval)?;
        let poll_interval = dur(
            "poll-interval",
            o.poll_interval,
            crate::marathon::events::POLL_INTERVAL,
        )?;
        let resync_debounce = dur("resync-debounce", o.resync_debounce, timing_d.debounce)?;
        let resync_max_wait = dur("resync-max-wait", o.resync_max_wait, timing_d.max_wait)?;
        let sse_idle_timeout = dur(
            "sse-idle-timeout",
            o.sse_idle_timeout,
            crate::marathon::events::SSE_IDLE_TIMEOUT,
        )?;
        let reconnect_min = dur("reconnect-min", o.reconnect_min, timing_d.retry_min)?;
        let reconnect_max = dur("reconnect-max", o.reconnect_max, timing_d.retry_max)?;
        let marathon_timeout = dur(
            "marathon-timeout",
            o.marathon_timeout,
            crate::marathon::api::TIMEOUT,
        )?;
        let callback_check_interval = dur(
            "callback-check-interval",
            o.callback_check_interval,
            crate::marathon::events::CALLBACK_CHECK_INTERVAL,
        )?;
        let drain_timeout = dur(
            "drain-timeout",
            o.drain_timeout,
            crate::server::DRAIN_TIMEOUT,
        )?;
        let header_read_timeout = dur(
            "header-read-timeout",
            o.header_read_timeout,
            proxy_d.header_read_timeout,
        )?;
        let keep_alive_timeout = dur(
            "keep-alive-timeout",
            o.keep_alive_timeout,
            proxy_d.keep_alive_timeout,
        )?;
        let client_timeout = dur("client-timeout", o.client_timeout, proxy_d.client_timeout)?;
        for (key, d) in [
            ("resync-interval", resync_interval),
            ("poll-interval", poll_interval),
            ("sse-idle-timeout", sse_idle_timeout),
            ("marathon-timeout", marathon_timeout),
            ("callback-check-interval", callback_check_interval),
            ("reconnect-min", reconnect_min),
            ("header-read-timeout", header_read_timeout),
            ("keep-alive-timeout", keep_alive_timeout),
            ("client-timeout", client_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be greater than zero"));
            }
        }
        if resync_max_wait < resync_debounce {
            return Err(bad(
                "resync-max-wait",
                "must not be shorter than resync-debounce",
            ));
        }
        if reconnect_max < reconnect_min {
            return Err(bad(
                "reconnect-max",
                "must not be shorter than reconnect-min",
            ));
        }

        let api_bind = parse_bind(
            "api-bind",
            &o.api_bind
                .unwrap_or_else(|| crate::api::DEFAULT_BIND.into()),
        )?;
        let http_bind = parse_bind(
            "http-bind",
            &o.http_bind
                .unwrap_or_else(|| crate::proxy::DEFAULT_HTTP_BIND.into()),
        )?;

        let zk = o.zk;
        let zk_path = o
            .zk_path
            .unwrap_or_else(|| crate::store::DEFAULT_ZK_PATH.into());
        if !zk_path.starts_with('/') || (zk_path.len() > 1 && zk_path.ends_with('/')) {
            return Err(bad(
                "zk-path",
                format!("'{zk_path}' must start with / and not end with /"),
            ));
        }

        let pair =
            |key: &str, v: Option<String>| -> Result<Option<(String, String)>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) => match s.split_once(':') {
                        Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                            Ok(Some((u.to_string(), p.to_string())))
                        }
                        _ => Err(bad(key, "expected user:password")),
                    },
                }
            };
        let zk_auth = pair("zk-auth", o.zk_auth)?;
        let zk_session_timeout = dur(
            "zk-session-timeout",
            o.zk_session_timeout,
            crate::store::ZK_SESSION_TIMEOUT,
        )?;
        if zk_session_timeout < Duration::from_secs(1) {
            return Err(bad("zk-session-timeout", "must be at least 1s"));
        }
        let api_auth = crate::api::ApiAuth {
            token: o.api_token,
            basic: pair("api-basic", o.api_basic)?,
            reads: o.api_auth_reads.unwrap_or(false),
        };
        if api_auth.reads && !api_auth.enabled() {
            return Err(bad("api-auth-reads", "needs --api-token or --api-basic"));
        }
        let size = |key: &str, v: Option<String>, default: usize| {
            v.map_or(Ok(default), |v| parse_size(key, &v))
        };
        let limits = Limits {
            callback_token: o.callback_token,
            marathon_max_event_size: size(
                "marathon-max-event-size",
                o.marathon_max_event_size,
                crate::marathon::events::MAX_EVENT,
            )?,
            marathon_max_body: size(
                "marathon-max-body",
                o.marathon_max_body,
                crate::marathon::api::MAX_BODY,
            )?,
            api_max_connections: o.api_max_connections.unwrap_or(crate::api::MAX_CONNECTIONS),
            api_max_body: size(
                "api-max-body",
                o.api_max_body,
                crate::api::services::MAX_BODY,
            )?,
        };
        if limits.api_max_connections == 0 {
            return Err(bad("api-max-connections", "must be greater than zero"));
        }
        if let Some(t) = &limits.callback_token {
            if !valid_callback_token(t) {
                return Err(bad(
                    "callback-token",
                    "must be at least 16 characters of A-Z a-z 0-9 - _ . ~ (it travels in a URL)",
                ));
            }
        }
        use crate::rules::table::{DefaultRule, RouteOptions};
        let default_rule = match o.default_rule.as_deref() {
            None => DefaultRule::default(),
            Some("path") => DefaultRule::Path,
            Some("vhost") => DefaultRule::Vhost,
            Some("none") => DefaultRule::None,
            Some(other) => {
                return Err(bad(
                    "default-rule",
                    format!("'{other}' is not path, vhost or none"),
                ))
            }
        };
        let domain = o.default_domain.unwrap_or_default();
        if default_rule == DefaultRule::Vhost && domain.is_empty() {
            return Err(bad("default-domain", "required with --default-rule vhost"));
        }
        let route_options = RouteOptions {
            default_rule,
            domain,
            groups: o
                .group
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
            tcp_service_ports: o.tcp_service_ports.unwrap_or(false),
            pass_through_acls: false,
            no_https: o.https_bind.is_none(),
        };

        let https_bind = match o.https_bind {
            Some(b) => Some(parse_bind("https-bind", &b)?),
            None => None,
        };
        let tls_cert_dir = o.tls_cert_dir;
        if let Some(d) = &tls_cert_dir {
            if !d.is_dir() {
                return Err(bad(
                    "tls-cert-dir",
                    format!("{} is not a directory", d.display()),
                ));
            }
        }
        let tcp_bind_address = {
            let v = o
                .tcp_bind_address
                .unwrap_or_else(|| crate::proxy::tcp::DEFAULT_BIND.into());
            v.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad("tcp-bind-address", format!("'{v}' is not an IP address")))?
        };
        let access_log = match o.access_log.as_deref().map(str::trim) {
            None | Some("off") | Some("false") => AccessLog::Off,
            Some("json") => AccessLog::Json,
            Some("clf") | Some("common") => AccessLog::Clf,
            Some("combined") => AccessLog::Combined,
            Some(other) => {
                return Err(bad(
                    "access-log",
                    format!("'{other}' is not off, json, clf or combined"),
                ))
            }
        };
        let max_staleness = match nonempty(o.max_staleness).as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(v) => {
                let d = parse_duration("max-staleness", v)?;
                if d.is_zero() {
                    return Err(bad("max-staleness", "must be greater than zero (or off)"));
                }
                Some(d)
            }
        };
        let marathon_tls = MarathonTls {
            ca: o.marathon_ca,
            client: match (o.marathon_client_cert, o.marathon_client_key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(bad(
                        "marathon-client-key",
                        "--marathon-client-cert needs its key",
                    ))
                }
                (None, Some(_)) => {
                    return Err(bad(
                        "marathon-client-cert",
                        "--marathon-client-key needs its certificate",
                    ))
                }
            },
        };
        let access_log_file = o.access_log_file;
        let max_connections = o.max_connections.unwrap_or(proxy_d.max_connections);
        if max_connections == 0 {
            return Err(bad("max-connections", "must be greater than zero"));
        }
        let max_header_size = o.max_header_size.unwrap_or(proxy_d.max_header_bytes);
        if max_header_size < 1024 {
            return Err(bad("max-header-size", "must be at least 1024"));
        }
        if max_header_size > crate::proxy::MAX_HEADER_LIMIT {
            return Err(bad(
                "max-header-size",
                format!(
                    "must be at most {} (a head is held whole in memory, per connection)",
                    crate::proxy::MAX_HEADER_LIMIT
                ),
            ));
        }
        if o.workers == Some(0) {
            return Err(bad("workers", "must be at least 1"));
        }
        let eject_after = o.eject_after.unwrap_or(crate::proxy::balance::EJECT_AFTER);
        if eject_after == 0 {
            return Err(bad("eject-after", "must be greater than zero"));
        }
        let http = crate::proxy::ProxyOptions {
            connect_timeout: dur(
                "connect-timeout",
                o.connect_timeout,
                proxy_d.connect_timeout,
            )?,
            header_read_timeout,
            keep_alive_timeout,
            idle_timeout: dur(
                "backend-idle-timeout",
                o.backend_idle_timeout,
                proxy_d.idle_timeout,
            )?,
            backend_timeout: dur(
                "backend-timeout",
                o.backend_timeout,
                proxy_d.backend_timeout,
            )?,
            client_timeout,
            max_header_bytes: max_header_size,
            max_connections,
            via: o.via.unwrap_or(proxy_d.via),
            access_log,
            trusted_proxies: match &o.trusted_proxies {
                Some(t) => Some(
                    crate::rules::table::Networks::parse(t)
                        .map_err(|e| bad("trusted-proxies", e))?,
                ),
                None => None,
            },
        };
        for (key, d) in [
            ("connect-timeout", http.connect_timeout),
            ("backend-timeout", http.backend_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be greater than zero"));
            }
        }
        let proxy = ProxySettings {
            https_bind,
            appid_bind: match &o.http_appid_bind {
                Some(b) => Some(parse_bind("http-appid-bind", b)?),
                None => None,
            },
            stats_bind: match &o.stats_bind {
                Some(b) => Some(parse_bind("stats-bind", b)?),
                None => None,
            },
            tls_cert_dir,
            tcp_bind_address,
            eject_after,
            eject_for: dur("eject-for", o.eject_for, crate::proxy::balance::EJECT_FOR)?,
        };

        let h = o.haproxy;
        let pipeline = crate::haproxy::HaproxyOptions {
            template: h.template_path,
            output: h.output_path.unwrap_or(haproxy_d.output),
            reload_command: h.reload_command,
            validation_command: h.reload_validation_command,
            cleanup_command: h.reload_cleanup_command,
            command_timeout: dur(
                "haproxy-command-timeout",
                h.command_timeout,
                haproxy_d.command_timeout,
            )?,
            min_interval: dur(
                "haproxy-min-interval",
                h.min_interval,
                haproxy_d.min_interval,
            )?,
            extra: Default::default(),
        };
        let haproxy = HaproxySettings {
            mode: match o.mode {
                Some(m) => m,
                None if as_bamboo => {
                    tracing::info!("Bamboo's configuration and no --mode: rendering haproxy.cfg and reloading HAProxy, as Bamboo does (--mode proxy serves with the built-in proxy)");
                    Mode::Haproxy
                }
                None => Mode::default(),
            },
            pipeline,
            http_bind: match h.bind {
                Some(b) => parse_bind("haproxy-bind", &b)?,
                None => http_bind,
            },
            stats_bind: match h
                .stats_bind
                .unwrap_or_else(|| crate::haproxy::STATS_BIND.into())
                .trim()
            {
                "off" | "none" | "false" => None,
                b => Some(parse_bind("haproxy-stats-bind", b)?.to_string()),
            },
        };
        if haproxy.mode == Mode::Both && haproxy.http_bind == http_bind {
            return Err(bad(
                "haproxy-bind",
                format!("in --mode both the built-in proxy holds {http_bind}; give HAProxy another address"),
            ));
        }
        if haproxy.pipeline.command_timeout.is_zero() {
            return Err(bad("haproxy-command-timeout", "must be greater than zero"));
        }
        // Read only where HAProxy is driven (`render` reads it itself and says so when it cannot).
        if let Some(t) = haproxy
            .pipeline
            .template
            .as_ref()
            .filter(|_| haproxy.mode != Mode::Proxy)
        {
            if !t.is_file() {
                return Err(bad(
                    "haproxy-template",
                    format!("{} is not a readable file", t.display()),
                ));
            }
        }

        Ok(Settings {
            marathon,
            marathon_auth,
            events,
            callback_url,
            api_bind,
            http_bind,
            zk,
            zk_path,
            zk_auth,
            zk_session_timeout,
            api_auth,
            limits,
            route_options: RouteOptions {
                pass_through_acls: haproxy.mode == Mode::Haproxy,
                // HAProxy redirects by its own config (the template's HTTPS frontend).
                no_https: route_options.no_https && haproxy.mode == Mode::Proxy,
                ..route_options
            },
            data_dir: o
                .data_dir
                .unwrap_or_else(|| PathBuf::from(crate::store::DEFAULT_DATA_DIR)),
            resync: crate::discovery::ResyncTiming {
                debounce: resync_debounce,
                max_wait: resync_max_wait,
                interval: resync_interval,
                retry_min: reconnect_min,
                retry_max: reconnect_max,
            },
            poll_interval,
            sse_idle_timeout,
            marathon_timeout,
            callback_check_interval,
            drain_timeout,
            ignore_health: o.ignore_health.unwrap_or(false),
            prefer_host_port: o.prefer_host_port.unwrap_or(false),
            http,
            proxy,
            haproxy,
            max_staleness,
            marathon_tls,
            access_log_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("k", "65536").unwrap(), 65536);
        assert_eq!(parse_size("k", "16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("k", "2 G").unwrap(), 2 << 30);
        assert_eq!(parse_size("k", "64k").unwrap(), 64 << 10);
        for bad in [
            "",
            "12",
            "MiB",
            "1.5MiB",
            "-1",
            "99999999999999999999G",
            "1TB",
        ] {
            assert!(parse_size("k", bad).is_err(), "{bad}");
        }
    }

    fn opts_with_file(body: &str, ext: &str) -> (Opts, tempfile::NamedTempFile) {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        let opts = Opts {
            config: Some(f.path().to_path_buf()),
            ..Opts::default()
        };
        (opts, f)
    }

    #[test]
    fn bamboo_json_file_is_accepted_case_insensitively() {
        let (opts, _f) = opts_with_file(
            r#"{"marathon":{"ENDPOINT":"http://m1:8080,http://m2:8080","UseEventStream":true,"user":"u","Password":"p"},
               "Bamboo":{"Endpoint":"http://lb:8000","Zookeeper":{"Host":"zk1:2181","Path":"/bamboo","ReportingDelay":5}},
               "HAProxy":{"TemplatePath":"config/haproxy_template.cfg","OutputPath":"/etc/haproxy/haproxy.cfg",
                          "ReloadCommand":"true","ReloadValidationCommand":"haproxy -c -f {{.}}"},
               "StatsD":{"Enabled":false}}"#,
            ".json",
        );
        let s = Settings::resolve(&opts, false).unwrap();
        assert_eq!(s.marathon.len(), 2);
        assert_eq!(s.events, EventMode::Sse);
        assert_eq!(s.marathon_auth, Some(("u".into(), "p".into())));
        assert_eq!(s.zk.as_deref(), Some("zk1:2181"));
        assert_eq!(s.zk_path, "/bamboo");
        assert_eq!(s.callback_url.unwrap().as_str(), "http://lb:8000/");
        assert_eq!(
            s.haproxy.pipeline.validation_command.as_deref(),
            Some("haproxy -c -f {{.}}")
        );
    }

    #[test]
    fn shipped_example_configs_load() {
        for name in ["rattan.example.toml", "bamboo.example.json"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name);
            let opts = Opts {
                config: Some(path),
                ..Opts::default()
            };
            let s = Settings::resolve(&opts, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.marathon.len(), 2, "{name}");
            assert_eq!(s.events, EventMode::Sse, "{name}");
        }
    }

    #[test]
    fn bamboo_json_without_use_event_stream_means_callbacks() {
        let (opts, _f) = opts_with_file(
            r#"{"Marathon":{"Endpoint":"http://m1:8080"},"Bamboo":{"Endpoint":"http://lb:8000"}}"#,
            ".json",
        );
        assert_eq!(
            Settings::resolve(&opts, false).unwrap().events,
            EventMode::Callback
        );
    }

    #[test]
    fn cli_beats_file() {
        let (mut opts, _f) = opts_with_file(
            "marathon = \"http://file:8080\"\napi_bind = \"127.0.0.1:9000\"\n",
            ".toml",
        );
        opts.marathon = Some(vec!["http://cli:8080".into()]);
        let s = Settings::resolve(&opts, false).unwrap();
        assert_eq!(s.marathon[0].host_str(), Some("cli"));
        assert_eq!(s.api_bind.port(), 9000);
    }

    #[test]
    fn unknown_toml_key_is_named() {
        let (opts, _f) = opts_with_file(
            "marathon = \"http://m:8080\"\nmarathn_user = \"x\"\n",
            ".toml",
        );
        let e = Settings::resolve(&opts, false).unwrap_err();
        assert_eq!(e.key, "marathn_user");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn bad_values_are_named() {
        let base = Opts {
            marathon: Some(vec!["http://m:8080".into()]),
            ..Opts::default()
        };
        let cases: Vec<(Opts, &str)> = vec![
            (
                Opts {
                    marathon: Some(vec!["m:8080".into()]),
                    ..Opts::default()
                },
                "marathon",
            ),
            (
                Opts {
                    resync_interval: Some("soon".into()),
                    ..base.clone()
                },
                "resync-interval",
            ),
            (
                Opts {
                    mode: Some(Mode::Both),
                    ..base.clone()
                },
                "haproxy-bind",
            ),
            (
                Opts {
                    access_log: Some("xml".into()),
                    ..base.clone()
                },
                "access-log",
            ),
            (
                Opts {
                    haproxy: HaproxyOpts {
                        command_timeout: Some("0s".into()),
                        ..HaproxyOpts::default()
                    },
                    ..base.clone()
                },
                "haproxy-command-timeout",
            ),
            (
                Opts {
                    keep_alive_timeout: Some("0s".into()),
                    ..base.clone()
                },
                "keep-alive-timeout",
            ),
            (
                Opts {
                    api_bind: Some("nowhere".into()),
                    ..base.clone()
                },
                "api-bind",
            ),
            (
                Opts {
                    marathon_use_event_stream: Some("yes".into()),
                    ..base.clone()
                },
                "MARATHON_USE_EVENT_STREAM",
            ),
            (
                Opts {
                    events: Some(EventMode::Callback),
                    ..base.clone()
                },
                "callback-url",
            ),
            (
                Opts {
                    marathon_user: Some("u".into()),
                    ..base.clone()
                },
                "marathon-password",
            ),
            (Opts::default(), "marathon"),
        ];
        for (opts, key) in cases {
            let e = Settings::resolve(&opts, false).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn every_shown_default_names_a_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for (id, default) in cli::shown_defaults() {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == id),
                "{id} is not an argument"
            );
            assert!(!default.is_empty(), "{id}");
        }
    }

    #[test]
    fn flags_and_the_file_meet_in_one_struct() {
        let (mut opts, _f) = opts_with_file(
            "marathon = [\"http://m1:8080\", \"http://m2:8080\"]\nhttp_bind = \"127.0.0.1:81\"\n[haproxy]\ncommand_timeout = \"5s\"\nmin_interval = \"2s\"\n",
            ".toml",
        );
        // An environment variable set to "" gives way to the file; a flag beats it, in the [haproxy] table too.
        opts.http_bind = Some(String::new());
        opts.haproxy.min_interval = Some("3s".into());
        let s = Settings::resolve(&opts, false).unwrap();
        assert_eq!(s.marathon.len(), 2);
        assert_eq!(s.http_bind, "127.0.0.1:81".parse().unwrap());
        assert_eq!(s.haproxy.pipeline.command_timeout, Duration::from_secs(5));
        assert_eq!(s.haproxy.pipeline.min_interval, Duration::from_secs(3));
        // Without a file, "" is no value at all: the default.
        let opts = Opts {
            marathon: Some(vec!["http://m:8080".into()]),
            http_bind: Some(" ".into()),
            ..Opts::default()
        };
        let s = Settings::resolve(&opts, false).unwrap();
        assert_eq!(s.http_bind, "0.0.0.0:80".parse().unwrap());
        // What only the command line has is not written in the file.
        let (opts, _f) = opts_with_file("marathon = \"http://m:8080\"\nworkers = 2\n", ".toml");
        assert_eq!(Settings::resolve(&opts, false).unwrap_err().key, "workers");
    }

    #[test]
    fn bamboos_configuration_runs_as_bamboo_ran() {
        let (mut opts, _f) = opts_with_file(
            r#"{"Marathon":{"Endpoint":"http://m1:8080"},"Bamboo":{"Endpoint":"http://lb:8000"}}"#,
            ".json",
        );
        assert_eq!(
            Settings::resolve(&opts, false).unwrap().haproxy.mode,
            Mode::Haproxy
        );
        opts.mode = Some(Mode::Proxy);
        assert_eq!(
            Settings::resolve(&opts, false).unwrap().haproxy.mode,
            Mode::Proxy
        );
        let reload = Opts {
            marathon: Some(vec!["http://m:8080".into()]),
            haproxy: HaproxyOpts {
                reload_command: Some("systemctl reload haproxy".into()),
                ..HaproxyOpts::default()
            },
            ..Opts::default()
        };
        assert_eq!(
            Settings::resolve(&reload, false).unwrap().haproxy.mode,
            Mode::Haproxy
        );
        let plain = Opts {
            marathon: Some(vec!["http://m:8080".into()]),
            ..Opts::default()
        };
        assert_eq!(
            Settings::resolve(&plain, false).unwrap().haproxy.mode,
            Mode::Proxy
        );
    }

    #[test]
    fn bamboo_bind_and_switch() {
        let opts = Opts {
            marathon: Some(vec!["http://m:8080".into()]),
            api_bind: Some(":8000".into()),
            marathon_use_event_stream: Some("false".into()),
            callback_url: Some("http://lb:8000".into()),
            ..Opts::default()
        };
        let s = Settings::resolve(&opts, false).unwrap();
        assert_eq!(s.api_bind, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.events, EventMode::Callback);
        // The proxy's own default, as an edge node runs it.
        assert_eq!(s.http_bind, "0.0.0.0:80".parse().unwrap());
    }
}
