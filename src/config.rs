//! Settings from a TOML file or a Bamboo JSON file, the environment (Bamboo's names too) and the command line.
//! Precedence: command line, then environment, then file, then defaults. Every invalid value fails at start with
//! one line naming the key.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::Value;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

use crate::proxy::AccessLog;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "rattan",
    version,
    // The last occurrence of a flag wins (a wrapper script's defaults can be overridden by appending).
    args_override_self = true,
    about = "Service-discovery load balancer for Marathon/Mesos"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch Marathon and serve (the default).
    Run,
    /// Everything on embedded defaults: a Marathon simulator with demo apps, rules in a local file.
    Dev,
    /// Fetch Marathon and the rules once, print the rendered haproxy.cfg, exit (marathon-lb's `--dry`).
    Render {
        /// Template to render [default: --haproxy-template, else the built-in config/haproxy_template.cfg].
        #[arg(long)]
        template: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The built-in proxy routes the traffic.
    #[default]
    Proxy,
    /// Render haproxy.cfg and reload HAProxy; no built-in proxy listeners.
    Haproxy,
    /// Both.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    /// Server-sent events from `/v2/events`.
    Sse,
    /// Marathon POSTs events to `/api/marathon/event_callback` (Marathon < 1.5).
    Callback,
    /// No events: poll `/v2/apps` every `--poll-interval`.
    Poll,
}

/// Every flag also reads an environment variable; values given here beat the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct Opts {
    /// TOML config file, or a Bamboo JSON config file (`{"Marathon":…,"Bamboo":…,"HAProxy":…}`).
    #[arg(long, global = true, env = "CONFIG_PATH")]
    pub config: Option<PathBuf>,
    /// Marathon base URLs, comma-separated, tried in order.
    #[arg(long, global = true, env = "MARATHON_ENDPOINT", value_delimiter = ',')]
    pub marathon: Option<Vec<String>>,
    #[arg(long, global = true, env = "MARATHON_USER")]
    pub marathon_user: Option<String>,
    #[arg(long, global = true, env = "MARATHON_PASSWORD", hide_env_values = true)]
    pub marathon_password: Option<String>,
    /// How Marathon events arrive [default: sse].
    #[arg(long, global = true, value_enum, env = "RATTAN_EVENTS")]
    pub events: Option<EventMode>,
    /// Bamboo's switch: true = sse, false = callback.
    #[arg(long, global = true, env = "MARATHON_USE_EVENT_STREAM", hide = true)]
    pub marathon_use_event_stream: Option<String>,
    /// This instance's base URL as Marathon reaches it (callback mode).
    #[arg(long, global = true, env = "BAMBOO_ENDPOINT")]
    pub callback_url: Option<String>,
    /// REST API, /api/state, /metrics and the UI [default: 0.0.0.0:8000].
    #[arg(long, global = true, env = "BIND")]
    pub api_bind: Option<String>,
    /// HTTP proxy listener [default: 0.0.0.0:80].
    #[arg(long, global = true, env = "RATTAN_HTTP_BIND")]
    pub http_bind: Option<String>,
    /// ZooKeeper hosts, comma-separated (rules store); without it rules live in --data-dir.
    #[arg(long, global = true, env = "BAMBOO_ZK_HOST")]
    pub zk: Option<String>,
    /// Base znode of the rules [default: /marathon-haproxy/state].
    #[arg(long, global = true, env = "BAMBOO_ZK_PATH")]
    pub zk_path: Option<String>,
    /// ZooKeeper session timeout (Bamboo's is 10 s) [default: 10s].
    #[arg(long, global = true, env = "RATTAN_ZK_SESSION_TIMEOUT")]
    pub zk_session_timeout: Option<String>,
    /// ZooKeeper digest credentials `user:password`; nodes rattan creates are then readable by that user only.
    #[arg(long, global = true, env = "RATTAN_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Require `Authorization: Bearer <token>` for rule changes.
    #[arg(long, global = true, env = "RATTAN_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Require basic auth `user:password` for rule changes.
    #[arg(long, global = true, env = "RATTAN_API_BASIC", hide_env_values = true)]
    pub api_basic: Option<String>,
    /// Secret Marathon must present on the event callback (carried in the registered callback URL as `?token=`)
    /// [default: generated once and kept in --data-dir/callback.token].
    #[arg(
        long,
        global = true,
        env = "RATTAN_CALLBACK_TOKEN",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,
    /// Largest Marathon SSE event (or line) read; a longer one drops the stream [default: 16MiB].
    #[arg(long, global = true, env = "RATTAN_MARATHON_MAX_EVENT_SIZE")]
    pub marathon_max_event_size: Option<String>,
    /// Largest Marathon REST response read (`/v2/apps`); a larger one fails the fetch [default: 512MiB].
    #[arg(long, global = true, env = "RATTAN_MARATHON_MAX_BODY")]
    pub marathon_max_body: Option<String>,
    /// A client that takes no response bytes (or sends no body bytes) for this long while its request is in flight
    /// is cut off, on every path [default: 60s].
    #[arg(long, global = true, env = "RATTAN_CLIENT_TIMEOUT")]
    pub client_timeout: Option<String>,
    /// Open connections to the API port at most; past it new ones wait in the kernel's backlog [default: 256].
    #[arg(long, global = true, env = "RATTAN_API_MAX_CONNECTIONS")]
    pub api_max_connections: Option<usize>,
    /// Protect reads (the UI, /api/state, /api/services) too.
    #[arg(long, global = true, env = "RATTAN_API_AUTH_READS")]
    pub api_auth_reads: Option<bool>,
    /// Route for apps without a rule or labels: path (`path_beg -i <app id>`, Bamboo's), vhost, none [default: path].
    #[arg(long, global = true, env = "RATTAN_DEFAULT_RULE")]
    pub default_rule: Option<String>,
    /// Domain of `--default-rule vhost`: `<app>.<domain>`.
    #[arg(long, global = true, env = "RATTAN_DEFAULT_DOMAIN")]
    pub default_domain: Option<String>,
    /// marathon-lb groups to expose by labels (`HAPROXY_GROUP`), comma-separated; `*` for all [default: all].
    #[arg(long, global = true, env = "RATTAN_GROUP", value_delimiter = ',')]
    pub group: Option<Vec<String>>,
    /// Directory of the embedded rule file when no --zk is given [default: ./rattan-data].
    #[arg(long, global = true, env = "RATTAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Full snapshot even when events flow, e.g. `5m` [default: 5m].
    #[arg(long, global = true, env = "RATTAN_RESYNC_INTERVAL")]
    pub resync_interval: Option<String>,
    /// Poll period in `--events poll` mode [default: 5s].
    #[arg(long, global = true, env = "RATTAN_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// Quiet time after an event before the reconciling fetch [default: 250ms].
    #[arg(long, global = true, env = "RATTAN_RESYNC_DEBOUNCE")]
    pub resync_debounce: Option<String>,
    /// Longest an event waits for its reconciling fetch during a storm [default: 2s].
    #[arg(long, global = true, env = "RATTAN_RESYNC_MAX_WAIT")]
    pub resync_max_wait: Option<String>,
    /// An event stream silent this long is dead (3× Marathon's 10 s keep-alive) [default: 30s].
    #[arg(long, global = true, env = "RATTAN_SSE_IDLE_TIMEOUT")]
    pub sse_idle_timeout: Option<String>,
    /// First reconnect delay; doubles up to --reconnect-max [default: 500ms].
    #[arg(long, global = true, env = "RATTAN_RECONNECT_MIN")]
    pub reconnect_min: Option<String>,
    #[arg(long, global = true, env = "RATTAN_RECONNECT_MAX")]
    pub reconnect_max: Option<String>,
    /// Timeout of one Marathon REST call [default: 10s].
    #[arg(long, global = true, env = "RATTAN_MARATHON_TIMEOUT")]
    pub marathon_timeout: Option<String>,
    /// How often callback subscriptions are checked and re-registered [default: 30s].
    #[arg(long, global = true, env = "RATTAN_CALLBACK_CHECK_INTERVAL")]
    pub callback_check_interval: Option<String>,
    /// Runtime threads: 1 runs everything on one current-thread runtime (least cross-thread wake-ups); more
    /// uses a multi-thread runtime with that many workers [default: one per CPU].
    #[arg(long, global = true, env = "RATTAN_WORKERS")]
    pub workers: Option<usize>,
    /// Slowloris guard: a client must send its request headers within this time [default: 10s].
    #[arg(long, global = true, env = "RATTAN_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// How long a client connection may wait idle for its next request (HTTP/1.x keep-alive; HTTP/2 then gets a
    /// GOAWAY) [default: 60s].
    #[arg(long, global = true, env = "RATTAN_KEEP_ALIVE_TIMEOUT")]
    pub keep_alive_timeout: Option<String>,
    /// On SIGTERM, how long in-flight requests may take before the process exits anyway [default: 30s].
    #[arg(long, global = true, env = "RATTAN_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// HTTPS proxy listener, e.g. `:443` (TLS by rustls; certificates from --tls-cert-dir).
    #[arg(long, global = true, env = "RATTAN_HTTPS_BIND")]
    pub https_bind: Option<String>,
    /// PEM files (cert chain + key in one file, or `name.crt`/`name.pem` + `name.key`), chosen by SNI from the
    /// names they cover (wildcards too); `default.pem`, else the first file, answers unknown names. Re-read when
    /// the directory changes.
    #[arg(long, global = true, env = "RATTAN_TLS_CERT_DIR")]
    pub tls_cert_dir: Option<PathBuf>,
    /// Proxy every app service port as TCP (besides HAPROXY_n_MODE=tcp and BAMBOO_TCP_PORT).
    #[arg(long, global = true, env = "RATTAN_TCP_SERVICE_PORTS")]
    pub tcp_service_ports: Option<bool>,
    /// Address TCP-mode service ports listen on [default: 0.0.0.0].
    #[arg(long, global = true, env = "RATTAN_TCP_BIND_ADDRESS")]
    pub tcp_bind_address: Option<String>,
    /// One line per proxied request on stdout: off, json, clf (common log format) [default: off].
    #[arg(long, global = true, env = "RATTAN_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// Client connections served at once (HTTP and HTTPS); more wait in the kernel's backlog [default: 10000].
    #[arg(long, global = true, env = "RATTAN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Backend connect timeout [default: 5s].
    #[arg(long, global = true, env = "RATTAN_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Longest wait for a backend's response head; then 504 [default: 60s].
    #[arg(long, global = true, env = "RATTAN_BACKEND_TIMEOUT")]
    pub backend_timeout: Option<String>,
    /// Idle pooled backend connections close after this [default: 90s].
    #[arg(long, global = true, env = "RATTAN_BACKEND_IDLE_TIMEOUT")]
    pub backend_idle_timeout: Option<String>,
    /// Largest request head accepted, in bytes [default: 65536].
    #[arg(long, global = true, env = "RATTAN_MAX_HEADER_SIZE")]
    pub max_header_size: Option<usize>,
    /// Add `Via: 1.1 rattan` to requests and responses.
    #[arg(long, global = true, env = "RATTAN_VIA")]
    pub via: Option<bool>,
    /// Connect failures in a row that take a backend out of rotation [default: 3].
    #[arg(long, global = true, env = "RATTAN_EJECT_AFTER")]
    pub eject_after: Option<u32>,
    /// How long an ejected backend stays out [default: 10s].
    #[arg(long, global = true, env = "RATTAN_EJECT_FOR")]
    pub eject_for: Option<String>,
    /// Who carries the traffic: the built-in proxy, HAProxy (rattan renders and reloads it), or both [default: proxy].
    #[arg(long, global = true, value_enum, env = "RATTAN_MODE")]
    pub mode: Option<Mode>,
    /// Go text/template for haproxy.cfg (Bamboo's templates work) [default: the built-in one].
    #[arg(long, global = true, env = "HAPROXY_TEMPLATE_PATH")]
    pub haproxy_template: Option<PathBuf>,
    /// Where haproxy.cfg is written [default: /etc/haproxy/haproxy.cfg].
    #[arg(long, global = true, env = "HAPROXY_OUTPUT_PATH")]
    pub haproxy_output: Option<PathBuf>,
    /// Reloads HAProxy after a new config is installed, e.g. `systemctl reload haproxy`.
    #[arg(long, global = true, env = "HAPROXY_RELOAD_CMD")]
    pub haproxy_reload_cmd: Option<String>,
    /// Checks a candidate config before it is installed; `{{.}}` is its path, e.g. `haproxy -c -f {{.}}`.
    #[arg(long, global = true, env = "HAPROXY_RELOAD_VALIDATION_CMD")]
    pub haproxy_validation_cmd: Option<String>,
    /// Runs after every reload attempt.
    #[arg(long, global = true, env = "HAPROXY_RELOAD_CLEANUP_CMD")]
    pub haproxy_cleanup_cmd: Option<String>,
    /// Each of those commands is killed after this [default: 30s].
    #[arg(long, global = true, env = "RATTAN_HAPROXY_COMMAND_TIMEOUT")]
    pub haproxy_command_timeout: Option<String>,
    /// Least time between two reloads; changes in between are merged [default: 1s].
    #[arg(long, global = true, env = "RATTAN_HAPROXY_MIN_INTERVAL")]
    pub haproxy_min_interval: Option<String>,
    /// The default template's stats listener, without credentials; `off` for none [default: 127.0.0.1:9090].
    #[arg(long, global = true, env = "RATTAN_HAPROXY_STATS_BIND")]
    pub haproxy_stats_bind: Option<String>,
    /// Where the rendered config's HTTP frontend binds (`.Settings.HttpBind`) [default: --http-bind; must differ
    /// from it in --mode both, where the built-in proxy holds --http-bind].
    #[arg(long, global = true, env = "RATTAN_HAPROXY_BIND")]
    pub haproxy_bind: Option<String>,
    /// Route tasks whatever Marathon's health checks say (like Traefik).
    #[arg(long, global = true, env = "RATTAN_IGNORE_HEALTH")]
    pub ignore_health: Option<bool>,
    /// In container networking, reach tasks at the agent's host:hostPort where a host port exists.
    #[arg(long, global = true, env = "RATTAN_PREFER_HOST_PORT")]
    pub prefer_host_port: Option<bool>,
}

/// The config file, in rattan's TOML form (keys are the long flag names with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub marathon: Option<StringOrList>,
    pub marathon_user: Option<String>,
    pub marathon_password: Option<String>,
    pub events: Option<EventMode>,
    pub callback_url: Option<String>,
    pub api_bind: Option<String>,
    pub http_bind: Option<String>,
    pub zk: Option<String>,
    pub zk_path: Option<String>,
    pub zk_reporting_delay: Option<u64>,
    pub zk_auth: Option<String>,
    pub zk_session_timeout: Option<String>,
    pub api_token: Option<String>,
    pub api_basic: Option<String>,
    pub callback_token: Option<String>,
    pub marathon_max_event_size: Option<String>,
    pub marathon_max_body: Option<String>,
    pub api_max_connections: Option<usize>,
    pub client_timeout: Option<String>,
    pub api_auth_reads: Option<bool>,
    pub default_rule: Option<String>,
    pub default_domain: Option<String>,
    pub group: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub resync_interval: Option<String>,
    pub poll_interval: Option<String>,
    pub resync_debounce: Option<String>,
    pub resync_max_wait: Option<String>,
    pub sse_idle_timeout: Option<String>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
    pub marathon_timeout: Option<String>,
    pub callback_check_interval: Option<String>,
    pub drain_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub keep_alive_timeout: Option<String>,
    pub ignore_health: Option<bool>,
    pub prefer_host_port: Option<bool>,
    pub https_bind: Option<String>,
    pub tls_cert_dir: Option<PathBuf>,
    pub tcp_service_ports: Option<bool>,
    pub tcp_bind_address: Option<String>,
    pub access_log: Option<String>,
    pub max_connections: Option<usize>,
    pub connect_timeout: Option<String>,
    pub backend_timeout: Option<String>,
    pub backend_idle_timeout: Option<String>,
    pub max_header_size: Option<usize>,
    pub via: Option<bool>,
    pub eject_after: Option<u32>,
    pub eject_for: Option<String>,
    pub mode: Option<Mode>,
    #[serde(default)]
    pub haproxy: HaproxyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyFile {
    pub template_path: Option<PathBuf>,
    pub output_path: Option<PathBuf>,
    pub reload_command: Option<String>,
    pub reload_validation_command: Option<String>,
    pub reload_cleanup_command: Option<String>,
    pub command_timeout: Option<String>,
    pub min_interval: Option<String>,
    pub stats_bind: Option<String>,
    pub bind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_list(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split(',').map(str::to_string).collect(),
            StringOrList::Many(v) => v,
        }
    }
}

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
    pub zk_reporting_delay: Duration,
    pub zk_auth: Option<(String, String)>,
    pub zk_session_timeout: Duration,
    pub api_auth: crate::api::ApiAuth,
    pub limits: Limits,
    pub route_options: crate::rules::table::RouteOptions,
    pub data_dir: PathBuf,
    pub resync_interval: Duration,
    pub poll_interval: Duration,
    pub resync_debounce: Duration,
    pub resync_max_wait: Duration,
    pub sse_idle_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub marathon_timeout: Duration,
    pub callback_check_interval: Duration,
    pub drain_timeout: Duration,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub ignore_health: bool,
    pub prefer_host_port: bool,
    pub proxy: ProxySettings,
    pub haproxy: HaproxySettings,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub https_bind: Option<SocketAddr>,
    pub tls_cert_dir: Option<PathBuf>,
    pub tcp_bind_address: std::net::IpAddr,
    pub access_log: AccessLog,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub backend_timeout: Duration,
    pub backend_idle_timeout: Duration,
    pub max_header_size: usize,
    pub via: bool,
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
    pub client_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HaproxySettings {
    pub mode: Mode,
    pub template_path: Option<PathBuf>,
    pub output_path: PathBuf,
    pub reload_command: Option<String>,
    pub reload_validation_command: Option<String>,
    pub reload_cleanup_command: Option<String>,
    pub command_timeout: Duration,
    pub min_interval: Duration,
    pub stats_bind: Option<String>,
    pub http_bind: SocketAddr,
}

/// Reads the config file: TOML, or Bamboo's JSON when it starts with `{` (keys matched case-insensitively).
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            bad(
                "config",
                format!("{} is not valid JSON: {e}", path.display()),
            )
        })?;
        bamboo_json(&v)
    } else {
        toml::from_str(&text).map_err(|e| {
            // toml's message names the key (`unknown field `x``) and the line; keep it on one line.
            let msg = e.message().to_string();
            let key = msg
                .split('`')
                .nth(1)
                .filter(|_| msg.starts_with("unknown field"))
                .unwrap_or("config")
                .to_string();
            let line = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            bad(&key, format!("{}{line}", msg.replace('\n', " ")))
        })
    }
}

fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Maps Bamboo's `{"Marathon":{…},"Bamboo":{…},"HAProxy":{…}}` onto the same settings. Unknown keys are ignored,
/// as Bamboo ignores them; a value of the wrong type is an error naming the key.
fn bamboo_json(v: &Value) -> Result<FileConfig, ConfigError> {
    let v = lower_keys(v);
    let get = |path: &[&str]| -> Option<&Value> {
        let mut cur = &v;
        for p in path {
            cur = cur.get(p)?;
        }
        Some(cur)
    };
    let string = |path: &[&str]| -> Result<Option<String>, ConfigError> {
        match get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(
                &path.join("."),
                format!("expected a string, got {other}"),
            )),
        }
    };
    let mut f = FileConfig {
        marathon: string(&["marathon", "endpoint"])?.map(StringOrList::One),
        marathon_user: string(&["marathon", "user"])?,
        marathon_password: string(&["marathon", "password"])?,
        callback_url: string(&["bamboo", "endpoint"])?,
        zk: string(&["bamboo", "zookeeper", "host"])?,
        zk_path: string(&["bamboo", "zookeeper", "path"])?,
        ..FileConfig::default()
    };
    match get(&["marathon", "useeventstream"]) {
        None | Some(Value::Null) => f.events = Some(EventMode::Callback),
        Some(Value::Bool(true)) => f.events = Some(EventMode::Sse),
        Some(Value::Bool(false)) => f.events = Some(EventMode::Callback),
        Some(other) => {
            return Err(bad(
                "Marathon.UseEventStream",
                format!("expected true or false, got {other}"),
            ))
        }
    }
    match get(&["bamboo", "zookeeper", "reportingdelay"]) {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => f.zk_reporting_delay = n.as_u64(),
        Some(other) => {
            return Err(bad(
                "Bamboo.Zookeeper.ReportingDelay",
                format!("expected whole seconds, got {other}"),
            ))
        }
    }
    f.haproxy = HaproxyFile {
        template_path: string(&["haproxy", "templatepath"])?.map(PathBuf::from),
        output_path: string(&["haproxy", "outputpath"])?.map(PathBuf::from),
        reload_command: string(&["haproxy", "reloadcommand"])?,
        reload_validation_command: string(&["haproxy", "reloadvalidationcommand"])?,
        reload_cleanup_command: string(&["haproxy", "reloadcleanupcommand"])?,
        ..HaproxyFile::default()
    };
    Ok(f)
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

fn parse_url(key: &str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s.trim()).map_err(|e| bad(key, format!("'{s}' is not a URL ({e})")))?;
    match u.scheme() {
        "http" | "https" if u.host_str().is_some() => Ok(u),
        _ => Err(bad(key, format!("'{s}' is not an http(s) URL with a host"))),
    }
}

/// Go's `strconv.ParseBool`, but an invalid value is an error (Bamboo silently took it as false).
fn go_bool(key: &str, s: &str) -> Result<bool, ConfigError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(bad(key, format!("'{s}' is not true or false"))),
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Settings {
    /// Resolves the layers. `dev` relaxes what the dev command fills in itself (Marathon URL).
    pub fn resolve(opts: &Opts, dev: bool) -> Result<Settings, ConfigError> {
        let file = match &opts.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let o = opts.clone();

        // An empty environment value means "no override", as in Bamboo.
        let marathon_raw: Vec<String> = match o
            .marathon
            .filter(|v| v.iter().any(|s| !s.trim().is_empty()))
        {
            Some(v) => v,
            None => file
                .marathon
                .map(StringOrList::into_list)
                .unwrap_or_default(),
        };
        let mut marathon = Vec::new();
        for s in marathon_raw
            .iter()
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

        let user = nonempty(o.marathon_user).or(file.marathon_user);
        let password = nonempty(o.marathon_password).or(file.marathon_password);
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

        let bamboo_switch = match nonempty(o.marathon_use_event_stream) {
            Some(s) => Some(if go_bool("MARATHON_USE_EVENT_STREAM", s.trim())? {
                EventMode::Sse
            } else {
                EventMode::Callback
            }),
            None => None,
        };
        let events = o
            .events
            .or(bamboo_switch)
            .or(file.events)
            .unwrap_or(EventMode::Sse);

        let callback_url = match nonempty(o.callback_url).or(file.callback_url) {
            Some(s) => Some(parse_url("callback-url", &s)?),
            None => None,
        };
        if events == EventMode::Callback && callback_url.is_none() && !dev {
            return Err(bad(
                "callback-url",
                "required with --events callback (BAMBOO_ENDPOINT: this instance's URL as Marathon reaches it)",
            ));
        }

        let dur = |key: &str, cli: Option<String>, file: Option<String>, default: &str| {
            let v = nonempty(cli)
                .or(file)
                .unwrap_or_else(|| default.to_string());
            parse_duration(key, &v)
        };
        let resync_interval = dur(
            "resync-interval",
            o.resync_interval,
            file.resync_interval,
            "5m",
        )?;
        let poll_interval = dur("poll-interval", o.poll_interval, file.poll_interval, "5s")?;
        let resync_debounce = dur(
            "resync-debounce",
            o.resync_debounce,
            file.resync_debounce,
            "250ms",
        )?;
        let resync_max_wait = dur(
            "resync-max-wait",
            o.resync_max_wait,
            file.resync_max_wait,
            "2s",
        )?;
        let sse_idle_timeout = dur(
            "sse-idle-timeout",
            o.sse_idle_timeout,
            file.sse_idle_timeout,
            "30s",
        )?;
        let reconnect_min = dur(
            "reconnect-min",
            o.reconnect_min,
            file.reconnect_min,
            "500ms",
        )?;
        let reconnect_max = dur("reconnect-max", o.reconnect_max, file.reconnect_max, "30s")?;
        let marathon_timeout = dur(
            "marathon-timeout",
            o.marathon_timeout,
            file.marathon_timeout,
            "10s",
        )?;
        let callback_check_interval = dur(
            "callback-check-interval",
            o.callback_check_interval,
            file.callback_check_interval,
            "30s",
        )?;
        let drain_timeout = dur("drain-timeout", o.drain_timeout, file.drain_timeout, "30s")?;
        let header_read_timeout = dur(
            "header-read-timeout",
            o.header_read_timeout,
            file.header_read_timeout,
            "10s",
        )?;
        let keep_alive_timeout = dur(
            "keep-alive-timeout",
            o.keep_alive_timeout,
            file.keep_alive_timeout,
            "60s",
        )?;
        let client_timeout = dur(
            "client-timeout",
            o.client_timeout,
            file.client_timeout,
            "60s",
        )?;
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
            &nonempty(o.api_bind)
                .or(file.api_bind)
                .unwrap_or_else(|| "0.0.0.0:8000".into()),
        )?;
        let http_bind = parse_bind(
            "http-bind",
            &nonempty(o.http_bind)
                .or(file.http_bind)
                .unwrap_or_else(|| "0.0.0.0:80".into()),
        )?;

        let zk = nonempty(o.zk).or(file.zk);
        let zk_path = nonempty(o.zk_path)
            .or(file.zk_path)
            .unwrap_or_else(|| "/marathon-haproxy/state".into());
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
        let zk_auth = pair("zk-auth", nonempty(o.zk_auth).or(file.zk_auth))?;
        let zk_session_timeout = dur(
            "zk-session-timeout",
            o.zk_session_timeout,
            file.zk_session_timeout,
            "10s",
        )?;
        if zk_session_timeout < Duration::from_secs(1) {
            return Err(bad("zk-session-timeout", "must be at least 1s"));
        }
        let api_auth = crate::api::ApiAuth {
            token: nonempty(o.api_token).or(file.api_token),
            basic: pair("api-basic", nonempty(o.api_basic).or(file.api_basic))?,
            reads: o.api_auth_reads.or(file.api_auth_reads).unwrap_or(false),
        };
        if api_auth.reads && !api_auth.enabled() {
            return Err(bad("api-auth-reads", "needs --api-token or --api-basic"));
        }
        let size = |key: &str, cli: Option<String>, file: Option<String>, default: &str| {
            let v = nonempty(cli)
                .or(file)
                .unwrap_or_else(|| default.to_string());
            parse_size(key, &v)
        };
        let limits = Limits {
            callback_token: nonempty(o.callback_token).or(file.callback_token),
            marathon_max_event_size: size(
                "marathon-max-event-size",
                o.marathon_max_event_size,
                file.marathon_max_event_size,
                "16MiB",
            )?,
            marathon_max_body: size(
                "marathon-max-body",
                o.marathon_max_body,
                file.marathon_max_body,
                "512MiB",
            )?,
            api_max_connections: o
                .api_max_connections
                .or(file.api_max_connections)
                .unwrap_or(256),
            client_timeout,
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
        let default_rule = match nonempty(o.default_rule).or(file.default_rule).as_deref() {
            None | Some("path") => DefaultRule::Path,
            Some("vhost") => DefaultRule::Vhost,
            Some("none") => DefaultRule::None,
            Some(other) => {
                return Err(bad(
                    "default-rule",
                    format!("'{other}' is not path, vhost or none"),
                ))
            }
        };
        let domain = nonempty(o.default_domain)
            .or(file.default_domain)
            .unwrap_or_default();
        if default_rule == DefaultRule::Vhost && domain.is_empty() {
            return Err(bad("default-domain", "required with --default-rule vhost"));
        }
        let route_options = RouteOptions {
            default_rule,
            domain,
            groups: o
                .group
                .or(file.group)
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
            tcp_service_ports: o
                .tcp_service_ports
                .or(file.tcp_service_ports)
                .unwrap_or(false),
        };

        let https_bind = match nonempty(o.https_bind).or(file.https_bind) {
            Some(b) => Some(parse_bind("https-bind", &b)?),
            None => None,
        };
        let tls_cert_dir = o.tls_cert_dir.or(file.tls_cert_dir);
        if let Some(d) = &tls_cert_dir {
            if !d.is_dir() {
                return Err(bad(
                    "tls-cert-dir",
                    format!("{} is not a directory", d.display()),
                ));
            }
        }
        let tcp_bind_address = {
            let v = nonempty(o.tcp_bind_address)
                .or(file.tcp_bind_address)
                .unwrap_or_else(|| "0.0.0.0".into());
            v.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad("tcp-bind-address", format!("'{v}' is not an IP address")))?
        };
        let access_log = match nonempty(o.access_log)
            .or(file.access_log)
            .as_deref()
            .map(str::trim)
        {
            None | Some("off") | Some("false") => AccessLog::Off,
            Some("json") => AccessLog::Json,
            Some("clf") | Some("common") => AccessLog::Clf,
            Some(other) => {
                return Err(bad(
                    "access-log",
                    format!("'{other}' is not off, json or clf"),
                ))
            }
        };
        let max_connections = o.max_connections.or(file.max_connections).unwrap_or(10_000);
        if max_connections == 0 {
            return Err(bad("max-connections", "must be greater than zero"));
        }
        let max_header_size = o
            .max_header_size
            .or(file.max_header_size)
            .unwrap_or(64 * 1024);
        if max_header_size < 1024 {
            return Err(bad("max-header-size", "must be at least 1024"));
        }
        let eject_after = o.eject_after.or(file.eject_after).unwrap_or(3);
        if eject_after == 0 {
            return Err(bad("eject-after", "must be greater than zero"));
        }
        let proxy = ProxySettings {
            https_bind,
            tls_cert_dir,
            tcp_bind_address,
            access_log,
            max_connections,
            connect_timeout: dur(
                "connect-timeout",
                o.connect_timeout,
                file.connect_timeout,
                "5s",
            )?,
            backend_timeout: dur(
                "backend-timeout",
                o.backend_timeout,
                file.backend_timeout,
                "60s",
            )?,
            backend_idle_timeout: dur(
                "backend-idle-timeout",
                o.backend_idle_timeout,
                file.backend_idle_timeout,
                "90s",
            )?,
            max_header_size,
            via: o.via.or(file.via).unwrap_or(false),
            eject_after,
            eject_for: dur("eject-for", o.eject_for, file.eject_for, "10s")?,
        };
        for (key, d) in [
            ("connect-timeout", proxy.connect_timeout),
            ("backend-timeout", proxy.backend_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be greater than zero"));
            }
        }

        let h = file.haproxy;
        let haproxy = HaproxySettings {
            mode: o.mode.or(file.mode).unwrap_or_default(),
            template_path: o.haproxy_template.or(h.template_path),
            output_path: o
                .haproxy_output
                .or(h.output_path)
                .unwrap_or_else(|| PathBuf::from("/etc/haproxy/haproxy.cfg")),
            reload_command: nonempty(o.haproxy_reload_cmd).or(h.reload_command),
            reload_validation_command: nonempty(o.haproxy_validation_cmd)
                .or(h.reload_validation_command),
            reload_cleanup_command: nonempty(o.haproxy_cleanup_cmd).or(h.reload_cleanup_command),
            command_timeout: dur(
                "haproxy-command-timeout",
                o.haproxy_command_timeout,
                h.command_timeout,
                "30s",
            )?,
            min_interval: dur(
                "haproxy-min-interval",
                o.haproxy_min_interval,
                h.min_interval,
                "1s",
            )?,
            http_bind: match nonempty(o.haproxy_bind).or(h.bind) {
                Some(b) => parse_bind("haproxy-bind", &b)?,
                None => http_bind,
            },
            stats_bind: match nonempty(o.haproxy_stats_bind)
                .or(h.stats_bind)
                .unwrap_or_else(|| "127.0.0.1:9090".into())
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
        if haproxy.command_timeout.is_zero() {
            return Err(bad("haproxy-command-timeout", "must be greater than zero"));
        }
        if let Some(t) = &haproxy.template_path {
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
            zk_reporting_delay: Duration::from_secs(file.zk_reporting_delay.unwrap_or(0)),
            zk_auth,
            zk_session_timeout,
            api_auth,
            limits,
            route_options,
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("rattan-data")),
            resync_interval,
            poll_interval,
            resync_debounce,
            resync_max_wait,
            sse_idle_timeout,
            reconnect_min,
            reconnect_max,
            marathon_timeout,
            callback_check_interval,
            drain_timeout,
            header_read_timeout,
            keep_alive_timeout,
            ignore_health: o.ignore_health.or(file.ignore_health).unwrap_or(false),
            prefer_host_port: o
                .prefer_host_port
                .or(file.prefer_host_port)
                .unwrap_or(false),
            proxy,
            haproxy,
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
        assert_eq!(s.zk_reporting_delay, Duration::from_secs(5));
        assert_eq!(s.callback_url.unwrap().as_str(), "http://lb:8000/");
        assert_eq!(
            s.haproxy.reload_validation_command.as_deref(),
            Some("haproxy -c -f {{.}}")
        );
    }

    #[test]
    fn shipped_example_configs_load() {
        for name in ["rattan.example.toml", "bamboo.example.json"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
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
                    haproxy_command_timeout: Some("0s".into()),
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
