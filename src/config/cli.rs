//! The command line (and the environment variables each flag reads, Bamboo's names among them).

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    // `Cli::read` adds each setting's default to its help.
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
    /// Print a shell completion script: `rattan completions bash > /etc/bash_completion.d/rattan`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `rattan man > /usr/local/share/man/man1/rattan.1`.
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    /// Server-sent events from `/v2/events`.
    #[default]
    Sse,
    /// Marathon POSTs events to `/api/marathon/event_callback` (Marathon < 1.5).
    Callback,
    /// No events: poll `/v2/apps` every `--poll-interval`.
    Poll,
}

/// Every setting, declared once: its flag, the environment variable the flag reads, and its key in the TOML file
/// (the field's name; Bamboo's JSON file is mapped onto the same struct by [`super::file`]). Values given on the
/// command line beat the environment, which beats the file; what none gives is the owning subsystem's default.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// TOML config file, or a Bamboo JSON config file (`{"Marathon":…,"Bamboo":…,"HAProxy":…}`).
    #[arg(long, global = true, env = "CONFIG_PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Marathon base URLs, comma-separated, tried in order.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "MARATHON_ENDPOINT",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "super::file::string_or_list")]
    pub marathon: Option<Vec<String>>,
    /// Marathon basic-auth user (`--http_credentials` there).
    #[arg(help_heading = "Marathon", long, global = true, env = "MARATHON_USER")]
    pub marathon_user: Option<String>,
    /// Marathon basic-auth password.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "MARATHON_PASSWORD",
        hide_env_values = true
    )]
    pub marathon_password: Option<String>,
    /// How Marathon events arrive.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        value_enum,
        env = "RATTAN_EVENTS"
    )]
    pub events: Option<EventMode>,
    /// Bamboo's switch: true = sse, false = callback.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "MARATHON_USE_EVENT_STREAM",
        hide = true
    )]
    #[serde(skip)]
    pub marathon_use_event_stream: Option<String>,
    /// This instance's base URL as Marathon reaches it (callback mode).
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "BAMBOO_ENDPOINT"
    )]
    pub callback_url: Option<String>,
    /// REST API, /api/state, /metrics and the UI.
    #[arg(help_heading = "API", long, global = true, env = "BIND")]
    pub api_bind: Option<String>,
    /// HTTP proxy listener.
    #[arg(help_heading = "Proxy", long, global = true, env = "RATTAN_HTTP_BIND")]
    pub http_bind: Option<String>,
    /// ZooKeeper hosts, comma-separated (rules store); without it rules live in --data-dir.
    #[arg(help_heading = "Rules", long, global = true, env = "BAMBOO_ZK_HOST")]
    pub zk: Option<String>,
    /// Base znode of the rules.
    #[arg(help_heading = "Rules", long, global = true, env = "BAMBOO_ZK_PATH")]
    pub zk_path: Option<String>,
    /// ZooKeeper session timeout (Bamboo's is 10 s).
    #[arg(
        help_heading = "Rules",
        long,
        global = true,
        env = "RATTAN_ZK_SESSION_TIMEOUT"
    )]
    pub zk_session_timeout: Option<String>,
    /// Bamboo's `Zookeeper.ReportingDelay`, from its JSON file: checked and accepted, not used (rule changes apply
    /// as the watch reports them).
    #[arg(skip)]
    pub zk_reporting_delay: Option<u64>,
    /// ZooKeeper digest credentials `user:password`; nodes rattan creates are then readable by that user only.
    #[arg(
        help_heading = "Rules",
        long,
        global = true,
        env = "RATTAN_ZK_AUTH",
        hide_env_values = true
    )]
    pub zk_auth: Option<String>,
    /// Require `Authorization: Bearer <token>` for rule changes.
    #[arg(
        help_heading = "API",
        long,
        global = true,
        env = "RATTAN_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Require basic auth `user:password` for rule changes.
    #[arg(
        help_heading = "API",
        long,
        global = true,
        env = "RATTAN_API_BASIC",
        hide_env_values = true
    )]
    pub api_basic: Option<String>,
    /// Secret Marathon must present on the event callback (carried in the registered callback URL as `?token=`)
    /// [default: generated once and kept in --data-dir/callback.token].
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_CALLBACK_TOKEN",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,
    /// Largest Marathon SSE event (or line) read; a longer one drops the stream.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_MARATHON_MAX_EVENT_SIZE"
    )]
    pub marathon_max_event_size: Option<String>,
    /// Largest Marathon REST response read (`/v2/apps`); a larger one fails the fetch.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_MARATHON_MAX_BODY"
    )]
    pub marathon_max_body: Option<String>,
    /// A client that takes no response bytes (or sends no body bytes) for this long while its request is in flight
    /// is cut off, on every path.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_CLIENT_TIMEOUT"
    )]
    pub client_timeout: Option<String>,
    /// Open connections to the API port at most; past it new ones wait in the kernel's backlog.
    #[arg(
        help_heading = "API",
        long,
        global = true,
        env = "RATTAN_API_MAX_CONNECTIONS"
    )]
    pub api_max_connections: Option<usize>,
    /// Largest rule write (`POST`/`PUT /api/services`) accepted; Bamboo has no limit.
    #[arg(help_heading = "API", long, global = true, env = "RATTAN_API_MAX_BODY")]
    pub api_max_body: Option<String>,
    /// Protect reads (the UI, /api/state, /api/services) too.
    #[arg(help_heading = "API", long, global = true, env = "RATTAN_API_AUTH_READS", value_parser = crate::boolean::arg)]
    pub api_auth_reads: Option<bool>,
    /// Route for apps without a rule or labels: path (`path_beg -i <app id>`, Bamboo's), vhost, none.
    #[arg(
        help_heading = "Rules",
        long,
        global = true,
        env = "RATTAN_DEFAULT_RULE"
    )]
    pub default_rule: Option<String>,
    /// Domain of `--default-rule vhost`: `<app>.<domain>`.
    #[arg(
        help_heading = "Rules",
        long,
        global = true,
        env = "RATTAN_DEFAULT_DOMAIN"
    )]
    pub default_domain: Option<String>,
    /// marathon-lb groups to expose by labels (`HAPROXY_GROUP`), comma-separated; `*` for all [default: all].
    #[arg(
        help_heading = "Rules",
        long,
        global = true,
        env = "RATTAN_GROUP",
        value_delimiter = ','
    )]
    pub group: Option<Vec<String>>,
    /// Directory of the embedded rule file when no --zk is given.
    #[arg(help_heading = "Rules", long, global = true, env = "RATTAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Full snapshot even when events flow, e.g. `5m`.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_RESYNC_INTERVAL"
    )]
    pub resync_interval: Option<String>,
    /// Poll period in `--events poll` mode.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_POLL_INTERVAL"
    )]
    pub poll_interval: Option<String>,
    /// Quiet time after an event before the reconciling fetch.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_RESYNC_DEBOUNCE"
    )]
    pub resync_debounce: Option<String>,
    /// Longest an event waits for its reconciling fetch during a storm.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_RESYNC_MAX_WAIT"
    )]
    pub resync_max_wait: Option<String>,
    /// An event stream silent this long is dead (3× Marathon's 10 s keep-alive).
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_SSE_IDLE_TIMEOUT"
    )]
    pub sse_idle_timeout: Option<String>,
    /// First reconnect delay; doubles up to --reconnect-max.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_RECONNECT_MIN"
    )]
    pub reconnect_min: Option<String>,
    /// Longest reconnect delay.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_RECONNECT_MAX"
    )]
    pub reconnect_max: Option<String>,
    /// Timeout of one Marathon REST call.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_MARATHON_TIMEOUT"
    )]
    pub marathon_timeout: Option<String>,
    /// How often callback subscriptions are checked and re-registered.
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_CALLBACK_CHECK_INTERVAL"
    )]
    pub callback_check_interval: Option<String>,
    /// Readiness (`/status`, `/readyz`) fails once Marathon has been unreachable and the last good snapshot is
    /// older than this, e.g. `10m`; routing goes on with that snapshot either way [default: off].
    #[arg(
        help_heading = "Marathon",
        long,
        global = true,
        env = "RATTAN_MAX_STALENESS"
    )]
    pub max_staleness: Option<String>,
    /// PEM bundle of CAs Marathon's HTTPS certificate may chain to, besides the system's trust store.
    #[arg(
        help_heading = "Marathon TLS",
        long,
        global = true,
        env = "RATTAN_MARATHON_CA"
    )]
    pub marathon_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) rattan presents to Marathon (mutual TLS, as DC/OS strict mode asks).
    #[arg(
        help_heading = "Marathon TLS",
        long,
        global = true,
        env = "RATTAN_MARATHON_CLIENT_CERT"
    )]
    pub marathon_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        help_heading = "Marathon TLS",
        long,
        global = true,
        env = "RATTAN_MARATHON_CLIENT_KEY"
    )]
    pub marathon_client_key: Option<PathBuf>,
    /// Log lines on stderr: text, or json (one object per line).
    #[arg(
        help_heading = "Logging",
        long,
        global = true,
        value_enum,
        env = "RATTAN_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,
    /// Log level or filter, e.g. `debug` or `warn,rattan=info` [default: RUST_LOG, else info].
    #[arg(
        help_heading = "Logging",
        long,
        global = true,
        env = "RATTAN_LOG_LEVEL"
    )]
    pub log_level: Option<String>,
    /// File the access log is appended to (reopen-free: rotate with copytruncate) [default: stdout].
    #[arg(
        help_heading = "Logging",
        long,
        global = true,
        env = "RATTAN_ACCESS_LOG_FILE"
    )]
    pub access_log_file: Option<PathBuf>,
    /// Runtime threads: 1 runs everything on one current-thread runtime (least cross-thread wake-ups); more
    /// uses a multi-thread runtime with that many workers [default: one per CPU].
    #[arg(help_heading = "Proxy", long, global = true, env = "RATTAN_WORKERS")]
    #[serde(skip)]
    pub workers: Option<usize>,
    /// Slowloris guard: a client must send its request headers within this time.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_HEADER_READ_TIMEOUT"
    )]
    pub header_read_timeout: Option<String>,
    /// How long a client connection may wait idle for its next request (HTTP/1.x keep-alive; HTTP/2 then gets a
    /// GOAWAY).
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_KEEP_ALIVE_TIMEOUT"
    )]
    pub keep_alive_timeout: Option<String>,
    /// On SIGTERM, how long in-flight requests may take before the process exits anyway.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_DRAIN_TIMEOUT"
    )]
    pub drain_timeout: Option<String>,
    /// HTTPS proxy listener, e.g. `:443` (TLS by rustls; certificates from --tls-cert-dir).
    #[arg(help_heading = "TLS", long, global = true, env = "RATTAN_HTTPS_BIND")]
    pub https_bind: Option<String>,
    /// PEM files (cert chain + key in one file, or `name.crt`/`name.pem` + `name.key`), chosen by SNI from the
    /// names they cover (wildcards too); `default.pem`, else the first file, answers unknown names. Re-read when
    /// the directory changes.
    #[arg(help_heading = "TLS", long, global = true, env = "RATTAN_TLS_CERT_DIR")]
    pub tls_cert_dir: Option<PathBuf>,
    /// Proxy every app service port as TCP (besides HAPROXY_n_MODE=tcp and BAMBOO_TCP_PORT).
    #[arg(help_heading = "TCP", long, global = true, env = "RATTAN_TCP_SERVICE_PORTS", value_parser = crate::boolean::arg)]
    pub tcp_service_ports: Option<bool>,
    /// marathon-lb's app-id frontend (`:9091` there): routes by the `X-Marathon-App-Id` request header to that
    /// app's first HTTP port; off unless given.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_HTTP_APPID_BIND"
    )]
    pub http_appid_bind: Option<String>,
    /// marathon-lb's stats port (`:9090` there), for its deploy script `zdd.py`: `/haproxy?stats;csv` (HAProxy's
    /// CSV: a FRONTEND, BACKEND and one row per server of every app port), `/_haproxy_getpids`,
    /// `/_haproxy_health_check`; off unless given.
    #[arg(
        help_heading = "Proxy",
        id = "proxy_stats_bind",
        long = "stats-bind",
        global = true,
        env = "RATTAN_STATS_BIND"
    )]
    pub stats_bind: Option<String>,
    /// Address TCP-mode service ports listen on.
    #[arg(
        help_heading = "TCP",
        long,
        global = true,
        env = "RATTAN_TCP_BIND_ADDRESS"
    )]
    pub tcp_bind_address: Option<String>,
    /// One line per proxied request, on stdout or --access-log-file: off, json, clf (common log format), combined
    /// (CLF with referer and user agent).
    #[arg(
        help_heading = "Logging",
        long,
        global = true,
        env = "RATTAN_ACCESS_LOG"
    )]
    pub access_log: Option<String>,
    /// Client connections served at once (HTTP, HTTPS, service ports, TCP mode too); more wait in the kernel's backlog.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_MAX_CONNECTIONS"
    )]
    pub max_connections: Option<usize>,
    /// Backend connect timeout.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_CONNECT_TIMEOUT"
    )]
    pub connect_timeout: Option<String>,
    /// Longest wait for a backend's response head; then 504.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_BACKEND_TIMEOUT"
    )]
    pub backend_timeout: Option<String>,
    /// Idle pooled backend connections close after this.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_BACKEND_IDLE_TIMEOUT"
    )]
    pub backend_idle_timeout: Option<String>,
    /// Largest request head accepted, in bytes.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_MAX_HEADER_SIZE"
    )]
    pub max_header_size: Option<usize>,
    /// Proxies in front of rattan (IPs and CIDR blocks, comma-separated) whose `X-Forwarded-For` names the client
    /// that allow lists (`HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL`) judge; from other peers it is not believed.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_TRUSTED_PROXIES"
    )]
    pub trusted_proxies: Option<String>,
    /// Add `Via: 1.1 rattan` to requests and responses.
    #[arg(help_heading = "Proxy", long, global = true, env = "RATTAN_VIA", value_parser = crate::boolean::arg)]
    pub via: Option<bool>,
    /// Connect failures in a row that take a backend out of rotation.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        env = "RATTAN_EJECT_AFTER"
    )]
    pub eject_after: Option<u32>,
    /// How long an ejected backend stays out.
    #[arg(help_heading = "Proxy", long, global = true, env = "RATTAN_EJECT_FOR")]
    pub eject_for: Option<String>,
    /// Who carries the traffic: the built-in proxy, HAProxy (rattan renders and reloads it), or both.
    #[arg(
        help_heading = "Proxy",
        long,
        global = true,
        value_enum,
        env = "RATTAN_MODE"
    )]
    pub mode: Option<Mode>,
    #[command(flatten)]
    #[serde(default)]
    pub haproxy: HaproxyOpts,
    /// Route tasks whatever Marathon's health checks say (like Traefik).
    #[arg(help_heading = "Marathon", long, global = true, env = "RATTAN_IGNORE_HEALTH", value_parser = crate::boolean::arg)]
    pub ignore_health: Option<bool>,
    /// In container networking, reach tasks at the agent's host:hostPort where a host port exists.
    #[arg(help_heading = "Marathon", long, global = true, env = "RATTAN_PREFER_HOST_PORT", value_parser = crate::boolean::arg)]
    pub prefer_host_port: Option<bool>,
}

/// HAProxy's settings: `--haproxy-*` on the command line, the `[haproxy]` table in the file.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyOpts {
    /// Go text/template for haproxy.cfg (Bamboo's templates work) [default: the built-in one].
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-template",
        global = true,
        env = "HAPROXY_TEMPLATE_PATH"
    )]
    pub template_path: Option<PathBuf>,
    /// Where haproxy.cfg is written.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-output",
        global = true,
        env = "HAPROXY_OUTPUT_PATH"
    )]
    pub output_path: Option<PathBuf>,
    /// Reloads HAProxy after a new config is installed, e.g. `systemctl reload haproxy`.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-reload-cmd",
        global = true,
        env = "HAPROXY_RELOAD_CMD"
    )]
    pub reload_command: Option<String>,
    /// Checks a candidate config before it is installed; `{{.}}` is its path, e.g. `haproxy -c -f {{.}}`.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-validation-cmd",
        global = true,
        env = "HAPROXY_RELOAD_VALIDATION_CMD"
    )]
    pub reload_validation_command: Option<String>,
    /// Runs after every reload attempt.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-cleanup-cmd",
        global = true,
        env = "HAPROXY_RELOAD_CLEANUP_CMD"
    )]
    pub reload_cleanup_command: Option<String>,
    /// Each of those commands is killed after this.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-command-timeout",
        global = true,
        env = "RATTAN_HAPROXY_COMMAND_TIMEOUT"
    )]
    pub command_timeout: Option<String>,
    /// Least time between two reloads; changes in between are merged.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-min-interval",
        global = true,
        env = "RATTAN_HAPROXY_MIN_INTERVAL"
    )]
    pub min_interval: Option<String>,
    /// The default template's stats listener, without credentials; `off` for none.
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-stats-bind",
        global = true,
        env = "RATTAN_HAPROXY_STATS_BIND"
    )]
    pub stats_bind: Option<String>,
    /// Where the rendered config's HTTP frontend binds (`.Settings.HttpBind`) [default: --http-bind; must differ
    /// from it in --mode both, where the built-in proxy holds --http-bind].
    #[arg(
        help_heading = "HAProxy",
        long = "haproxy-bind",
        global = true,
        env = "RATTAN_HAPROXY_BIND"
    )]
    pub bind: Option<String>,
}

impl Cli {
    /// The command line, with `--help` showing each setting's default as its subsystem defines it.
    pub fn read() -> Cli {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&Cli::full_command().get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// The command as `--help`, the completions and the man page show it: each setting's default in its help,
    /// and each subcommand's help with only the settings that apply to it.
    pub fn full_command() -> clap::Command {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        for (id, default) in shown_defaults() {
            cmd = cmd.mut_arg(id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                a.help(format!("{help} [default: {default}]"))
            });
        }
        // A global setting reaches a subcommand unless the subcommand has its own: a hidden copy hides it there.
        for (sub, hidden) in [("dev", DEV_HIDDEN), ("render", RENDER_HIDDEN)] {
            let copies: Vec<clap::Arg> = cmd
                .get_arguments()
                .filter(|a| hidden.contains(&a.get_id().as_str()))
                .map(|a| a.clone().hide(true))
                .collect();
            cmd = cmd.mut_subcommand(sub, |sc| sc.args(copies));
        }
        cmd
    }
}

/// Settings `rattan dev` fills in itself (its simulator is Marathon, its rules a local file, no HAProxy).
const DEV_HIDDEN: &[&str] = &[
    "marathon",
    "marathon_user",
    "marathon_password",
    "events",
    "marathon_use_event_stream",
    "callback_url",
    "callback_token",
    "marathon_ca",
    "marathon_client_cert",
    "marathon_client_key",
    "callback_check_interval",
    "zk",
    "zk_path",
    "zk_session_timeout",
    "zk_auth",
    "mode",
    "template_path",
    "output_path",
    "reload_command",
    "reload_validation_command",
    "reload_cleanup_command",
    "command_timeout",
    "min_interval",
    "stats_bind",
    "bind",
];

/// Settings `rattan render` has no use for: it serves nothing, follows no events and reloads nothing.
const RENDER_HIDDEN: &[&str] = &[
    "events",
    "marathon_use_event_stream",
    "callback_url",
    "callback_token",
    "callback_check_interval",
    "marathon_max_event_size",
    "resync_interval",
    "poll_interval",
    "resync_debounce",
    "resync_max_wait",
    "sse_idle_timeout",
    "reconnect_min",
    "reconnect_max",
    "max_staleness",
    "api_bind",
    "api_token",
    "api_basic",
    "api_max_connections",
    "api_max_body",
    "api_auth_reads",
    "workers",
    "header_read_timeout",
    "keep_alive_timeout",
    "drain_timeout",
    "client_timeout",
    "max_connections",
    "connect_timeout",
    "backend_timeout",
    "backend_idle_timeout",
    "max_header_size",
    "trusted_proxies",
    "via",
    "eject_after",
    "eject_for",
    "http_appid_bind",
    "proxy_stats_bind",
    "access_log",
    "access_log_file",
    "mode",
    "reload_command",
    "reload_validation_command",
    "reload_cleanup_command",
    "command_timeout",
    "min_interval",
];

/// A value enum's name, as the flag and the file spell it.
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The defaults `--help` shows, read from where they are defined (by argument id: the field's name).
pub(super) fn shown_defaults() -> Vec<(&'static str, String)> {
    use super::value::{show_duration as d, show_size as size};
    let proxy = crate::proxy::ProxyOptions::default();
    let timing = crate::discovery::ResyncTiming::default();
    let haproxy = crate::haproxy::HaproxyOptions::default();
    let access_log = match proxy.access_log {
        crate::proxy::AccessLog::Off => "off",
        crate::proxy::AccessLog::Json => "json",
        crate::proxy::AccessLog::Clf => "clf",
        crate::proxy::AccessLog::Combined => "combined",
    };
    vec![
        ("events", name(&EventMode::default())),
        ("log_format", name(&LogFormat::default())),
        ("api_bind", crate::api::DEFAULT_BIND.into()),
        ("http_bind", crate::proxy::DEFAULT_HTTP_BIND.into()),
        ("zk_path", crate::store::DEFAULT_ZK_PATH.into()),
        ("zk_session_timeout", d(crate::store::ZK_SESSION_TIMEOUT)),
        (
            "marathon_max_event_size",
            size(crate::marathon::events::MAX_EVENT),
        ),
        ("marathon_max_body", size(crate::marathon::api::MAX_BODY)),
        ("client_timeout", d(proxy.client_timeout)),
        (
            "api_max_connections",
            crate::api::MAX_CONNECTIONS.to_string(),
        ),
        ("api_max_body", size(crate::api::services::MAX_BODY)),
        (
            "default_rule",
            name(&crate::rules::table::DefaultRule::default()),
        ),
        ("data_dir", crate::store::DEFAULT_DATA_DIR.into()),
        ("resync_interval", d(timing.interval)),
        ("poll_interval", d(crate::marathon::events::POLL_INTERVAL)),
        ("resync_debounce", d(timing.debounce)),
        ("resync_max_wait", d(timing.max_wait)),
        (
            "sse_idle_timeout",
            d(crate::marathon::events::SSE_IDLE_TIMEOUT),
        ),
        ("reconnect_min", d(timing.retry_min)),
        ("reconnect_max", d(timing.retry_max)),
        ("marathon_timeout", d(crate::marathon::api::TIMEOUT)),
        (
            "callback_check_interval",
            d(crate::marathon::events::CALLBACK_CHECK_INTERVAL),
        ),
        ("header_read_timeout", d(proxy.header_read_timeout)),
        ("keep_alive_timeout", d(proxy.keep_alive_timeout)),
        ("drain_timeout", d(crate::server::DRAIN_TIMEOUT)),
        ("tcp_bind_address", crate::proxy::tcp::DEFAULT_BIND.into()),
        ("access_log", access_log.into()),
        ("max_connections", proxy.max_connections.to_string()),
        ("connect_timeout", d(proxy.connect_timeout)),
        ("backend_timeout", d(proxy.backend_timeout)),
        ("backend_idle_timeout", d(proxy.idle_timeout)),
        ("max_header_size", proxy.max_header_bytes.to_string()),
        (
            "eject_after",
            crate::proxy::balance::EJECT_AFTER.to_string(),
        ),
        ("eject_for", d(crate::proxy::balance::EJECT_FOR)),
        ("mode", name(&Mode::default())),
        ("output_path", haproxy.output.display().to_string()),
        ("command_timeout", d(haproxy.command_timeout)),
        ("min_interval", d(haproxy.min_interval)),
        ("stats_bind", crate::haproxy::STATS_BIND.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` is an operator's first reference: every flag has a description and sits under its subsystem.
    #[test]
    fn every_flag_is_described_and_grouped() {
        let cmd = Cli::full_command();
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version" | "config") {
                continue;
            }
            assert!(
                a.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "--{id} has no help"
            );
            assert!(a.get_help_heading().is_some(), "--{id} is in no group");
        }
    }

    /// `rattan dev --help` and `rattan render --help` show only what applies to them.
    #[test]
    fn subcommands_show_only_their_settings() {
        let mut cmd = Cli::full_command();
        cmd.build();
        let help = |cmd: &mut clap::Command, sub: &str| {
            cmd.find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        let dev = help(&mut cmd, "dev");
        assert!(
            dev.contains("--http-bind") && dev.contains("--access-log"),
            "{dev}"
        );
        assert!(
            !dev.contains("--marathon <")
                && !dev.contains("--zk <")
                && !dev.contains("--haproxy-reload-cmd"),
            "{dev}"
        );
        let render = help(&mut cmd, "render");
        assert!(
            render.contains("--marathon <")
                && render.contains("--haproxy-template")
                && render.contains("--zk <"),
            "{render}"
        );
        assert!(
            !render.contains("--api-bind")
                && !render.contains("--keep-alive-timeout")
                && !render.contains("--haproxy-reload-cmd"),
            "{render}"
        );
        let top = cmd.render_long_help().to_string();
        for group in [
            "Marathon:",
            "Marathon TLS:",
            "Rules:",
            "Proxy:",
            "TLS:",
            "TCP:",
            "HAProxy:",
            "API:",
            "Logging:",
        ] {
            assert!(top.contains(group), "{group} missing");
        }
        assert!(top.contains("[default: 30s]"), "defaults shown");
    }
}
