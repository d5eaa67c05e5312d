//! The command line (and the environment variables each flag reads, Bamboo's names among them).

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::PathBuf;

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
    #[arg(long, global = true, env = "RATTAN_API_AUTH_READS", value_parser = crate::boolean::arg)]
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
    #[arg(long, global = true, env = "RATTAN_TCP_SERVICE_PORTS", value_parser = crate::boolean::arg)]
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
    #[arg(long, global = true, env = "RATTAN_VIA", value_parser = crate::boolean::arg)]
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
    #[arg(long, global = true, env = "RATTAN_IGNORE_HEALTH", value_parser = crate::boolean::arg)]
    pub ignore_health: Option<bool>,
    /// In container networking, reach tasks at the agent's host:hostPort where a host port exists.
    #[arg(long, global = true, env = "RATTAN_PREFER_HOST_PORT", value_parser = crate::boolean::arg)]
    pub prefer_host_port: Option<bool>,
}
