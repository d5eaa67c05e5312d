//! Starts the pieces of a running rattan and connects the arrows between them.

use crate::api::{self, ApiState};
use crate::backoff::Backoff;
use crate::config::{EventMode, Mode, Settings};
use crate::discovery::{self, Discovery, Policy};
use crate::marathon::api::MarathonClient;
use crate::marathon::events::{self, SseOptions};
use crate::snapshot::Publisher;
use crate::store::{FileStore, RuleStore, ZkStore};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Running {
    pub api_addr: SocketAddr,
    /// `None` in `--mode haproxy`.
    pub proxy_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    proxy_done: tokio::task::JoinHandle<()>,
    drain_timeout: std::time::Duration,
    pub publisher: Arc<Publisher>,
    store: Arc<RuleStore>,
}

/// `rattan: <what>` on stderr, for people and scripts that wait for a listener: stdout carries the access log
/// and nothing else.
fn banner(what: &str) {
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("rattan: {what}");
    }
}

/// With `--log-format json` stderr is JSON only: the banners are left to the log events that say the same.
pub static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The rule store the settings name: ZooKeeper (session loop started in the background) or the local file.
fn open_store(settings: &Settings, publisher: &Arc<Publisher>) -> Result<RuleStore, String> {
    Ok(match &settings.zk {
        Some(hosts) => RuleStore::Zk(ZkStore::start(
            hosts,
            &settings.zk_path,
            settings.zk_auth.clone(),
            settings.zk_session_timeout,
            publisher.clone(),
        )),
        None => {
            let file = Arc::new(FileStore::open(&settings.data_dir, publisher.clone())?);
            file.watch(std::time::Duration::from_secs(1));
            RuleStore::File(file)
        }
    })
}

fn marathon_client(settings: &Settings) -> Result<MarathonClient, String> {
    let tls = crate::marathon::tls::client_config(&settings.marathon_tls)?;
    Ok(MarathonClient::new(
        settings.marathon.clone(),
        settings.marathon_auth.clone(),
        settings.marathon_timeout,
    )
    .with_max_body(settings.limits.marathon_max_body)
    .with_tls(tls))
}

fn discovery(settings: &Settings, publisher: &Arc<Publisher>) -> Discovery {
    Discovery::new(
        Policy {
            ignore_health: settings.ignore_health,
            prefer_host_port: settings.prefer_host_port,
        },
        publisher.clone(),
    )
}

/// The callback token: the configured one, else one generated at the first start and kept in the data
/// directory, so the URL registered with Marathon stays the same across restarts.
fn callback_token(settings: &Settings) -> Result<String, String> {
    if let Some(t) = &settings.limits.callback_token {
        return Ok(t.clone());
    }
    let path = settings.data_dir.join("callback.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if crate::config::valid_callback_token(t.trim()) => return Ok(t.trim().to_string()),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "callback token file unusable; a new token is made")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    use rand::distributions::{Alphanumeric, DistString};
    let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    std::fs::create_dir_all(&settings.data_dir)
        .and_then(|()| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(token.as_bytes())
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the event callback token");
    Ok(token)
}

/// Starts every task in the background and returns once the API port is bound.
/// `--drain-timeout`: the default.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn start(settings: &Settings) -> Result<Running, String> {
    let publisher = Arc::new(Publisher::new(settings.route_options.clone()));
    {
        use crate::health::{State, HAPROXY, MARATHON};
        let h = &publisher.health;
        h.set_max_staleness(settings.max_staleness);
        h.report(MARATHON, State::Failing, "waiting for the first snapshot");
        if settings.haproxy.mode != Mode::Proxy {
            h.report(
                HAPROXY,
                State::Failing,
                "no config applied yet (the first waits for a Marathon snapshot and the rules)",
            );
        }
    }
    if let Some(path) = &settings.access_log_file {
        crate::proxy::log::to_file(path)
            .map_err(|e| format!("cannot open the access log file {}: {e}", path.display()))?;
    }
    let store = Arc::new(open_store(settings, &publisher)?);
    if !settings.api_auth.enabled() {
        tracing::warn!("the rules API is open to anyone who reaches the API port (as Bamboo's); set --api-token or --api-basic to protect it");
    }
    let client = Arc::new(marathon_client(settings)?);
    let (tx, rx) = mpsc::channel(4096);

    let mode = settings.haproxy.mode;
    let haproxy_status = (mode != Mode::Proxy).then(crate::haproxy::SharedStatus::default);
    let callback = match settings.events {
        EventMode::Callback => Some(api::Callback {
            tx: tx.clone(),
            token: callback_token(settings)?,
        }),
        _ => None,
    };
    let token = callback.as_ref().map(|c| c.token.clone());
    let api_state = Arc::new(ApiState {
        publisher: publisher.clone(),
        callback,
        store: Some(store.clone()),
        auth: settings.api_auth.clone(),
        haproxy: haproxy_status.clone(),
        max_body: settings.limits.api_max_body,
        check_acls: mode != Mode::Haproxy,
    });
    let nofile = crate::limits::raise_nofile();
    let budget = crate::limits::Budget::new(
        nofile,
        settings.limits.api_max_connections,
        settings.http.max_connections,
    );
    budget.report(
        settings.limits.api_max_connections,
        settings.http.max_connections,
    );
    let api_limits = api::ApiLimits {
        max_connections: budget.api,
        header_read_timeout: settings.http.header_read_timeout,
        keep_alive_timeout: settings.http.keep_alive_timeout,
    };
    let api_addr = api::serve(settings.api_bind, api_state, api_limits)
        .await
        .map_err(|e| format!("cannot bind the API on {}: {e}", settings.api_bind))?;
    banner(&format!("api listening on http://{api_addr}"));
    tracing::info!(addr = %api_addr, "api listening");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (proxy_addr, https_addr, proxy_done) = if mode == Mode::Haproxy {
        banner("proxy disabled (--mode haproxy)");
        if settings.proxy.stats_bind.is_some() {
            tracing::warn!("--stats-bind reports the built-in proxy, which --mode haproxy does not run: HAProxy's own stats listener (--haproxy-stats-bind) has them");
        }
        (None, None, tokio::spawn(async {}))
    } else {
        let (l, done) = start_proxy(settings, &publisher, budget.proxy, stop_rx.clone()).await?;
        (Some(l.http), l.https, done)
    };
    if let Some(status) = &haproxy_status {
        let h = &settings.haproxy;
        if h.pipeline.validation_command.is_none() {
            tracing::warn!("no validation command (--haproxy-validation-cmd, e.g. `haproxy -c -f {{{{.}}}}`): configs are installed unchecked");
        }
        tokio::spawn(crate::haproxy::run(
            publisher.clone(),
            haproxy_options(settings),
            status.clone(),
        ));
    }

    match settings.events {
        EventMode::Sse => {
            let opts = SseOptions {
                idle_timeout: settings.sse_idle_timeout,
                max_event: settings.limits.marathon_max_event_size,
                backoff: Backoff::new(settings.resync.retry_min, settings.resync.retry_max),
            };
            tokio::spawn(events::run_sse(client.clone(), opts, tx.clone()));
        }
        EventMode::Callback => {
            let mut base = settings.callback_url.clone().unwrap_or_else(|| {
                url::Url::parse(&format!("http://{api_addr}")).expect("literal URL")
            });
            // `--callback-url http://host:0` means "the port the API got".
            if base.port() == Some(0) {
                let _ = base.set_port(Some(api_addr.port()));
            }
            let callback = format!(
                "{}/api/marathon/event_callback",
                base.as_str().trim_end_matches('/')
            );
            tokio::spawn(events::run_callback_registration(
                client.clone(),
                callback,
                token.unwrap_or_default(),
                settings.callback_check_interval,
                tx.clone(),
            ));
        }
        EventMode::Poll => {
            tokio::spawn(events::run_poll(settings.poll_interval, tx.clone()));
        }
    }

    let discovery = discovery(settings, &publisher);
    tokio::spawn(discovery::run(client, discovery, rx, settings.resync));

    Ok(Running {
        api_addr,
        proxy_addr,
        https_addr,
        stop,
        proxy_done,
        drain_timeout: settings.drain_timeout,
        publisher,
        store,
    })
}

/// Connections the stats port serves at once: it is polled by a deploy script or two, not browsed by crowds.
const STATS_CONNECTIONS: usize = 32;

/// The built-in proxy: HTTP (and HTTPS) listeners and the TCP listener manager.
async fn start_proxy(
    settings: &Settings,
    publisher: &Arc<Publisher>,
    max_connections: usize,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> Result<(crate::proxy::Listeners, tokio::task::JoinHandle<()>), String> {
    let ps = &settings.proxy;
    let balancer = Arc::new(crate::proxy::balance::Balancer::new(
        ps.eject_after,
        ps.eject_for,
    ));
    let https = ps.https_bind.map(|bind| {
        let certs = crate::proxy::tls::CertStore::open(ps.tls_cert_dir.clone());
        certs.watch(std::time::Duration::from_secs(1));
        follow_label_certs(publisher.clone(), certs.clone());
        (bind, certs)
    });
    let (listeners, done) = crate::proxy::serve(
        settings.http_bind,
        https,
        publisher.clone(),
        balancer.clone(),
        crate::proxy::ProxyOptions {
            max_connections,
            ..settings.http.clone()
        },
        stop_rx.clone(),
    )
    .await
    .map_err(|e| {
        format!(
            "cannot bind the proxy on {}{}: {e}",
            settings.http_bind,
            ps.https_bind.map(|b| format!(" / {b}")).unwrap_or_default()
        )
    })?;
    let proxy_addr = listeners.http;
    if let Some(bind) = ps.appid_bind {
        let addr = crate::proxy::ports::appid(bind, listeners.handoff.clone())
            .await
            .map_err(|e| format!("cannot bind the app-id frontend on {bind}: {e}"))?;
        tracing::info!(%addr, "app-id frontend listening");
    }
    if let Some(bind) = ps.stats_bind {
        let limits = crate::api::ApiLimits {
            max_connections: STATS_CONNECTIONS,
            header_read_timeout: settings.http.header_read_timeout,
            keep_alive_timeout: settings.http.keep_alive_timeout,
        };
        let addr = crate::api::stats::serve(bind, publisher.clone(), balancer.clone(), limits)
            .await
            .map_err(|e| format!("cannot bind the stats port on {bind}: {e}"))?;
        banner(&format!("stats listening on http://{addr}"));
        tracing::info!(%addr, "stats listening");
    }
    // Last, once every listener is bound: scripts (and the tests) take the proxy line as "up". HTTPS first: a
    // reader may stop at the plain proxy line.
    if let Some(a) = listeners.https {
        banner(&format!("proxy listening on https://{a}"));
        tracing::info!(addr = %a, "https proxy listening");
    }
    banner(&format!("proxy listening on http://{proxy_addr}"));
    tracing::info!(addr = %proxy_addr, "proxy listening");
    tokio::spawn(crate::proxy::ports::run(
        publisher.clone(),
        balancer,
        crate::proxy::tcp::TcpOptions {
            bind: ps.tcp_bind_address,
            connect_timeout: settings.http.connect_timeout,
        },
        (listeners.handoff.clone(), listeners.limit.clone()),
        stop_rx,
    ));

    Ok((listeners, done))
}

/// Where the rendered config's listeners bind: rattan's own settings, so one configuration drives either.
pub fn haproxy_extra(settings: &Settings) -> crate::haproxy::template::Extra {
    crate::haproxy::template::Extra {
        http_bind: settings.haproxy.http_bind.to_string(),
        https_bind: settings.proxy.https_bind.map(|b| b.to_string()),
        tls_cert_dir: settings
            .proxy
            .tls_cert_dir
            .as_ref()
            .map(|d| d.display().to_string()),
        tcp_bind_address: settings.proxy.tcp_bind_address.to_string(),
        stats_bind: settings.haproxy.stats_bind.clone(),
    }
}

fn haproxy_options(settings: &Settings) -> crate::haproxy::HaproxyOptions {
    crate::haproxy::HaproxyOptions {
        extra: haproxy_extra(settings),
        ..settings.haproxy.pipeline.clone()
    }
}

/// `rattan render`: one Marathon fetch, the rules once, the template rendered to stdout.
pub async fn render(settings: &Settings, template: Option<&std::path::Path>) -> Result<(), String> {
    // Rendering is for HAProxy: an ACL the built-in proxy cannot compile is passed on for HAProxy to judge.
    let publisher = Arc::new(Publisher::new(crate::rules::table::RouteOptions {
        pass_through_acls: true,
        no_https: false,
        ..settings.route_options.clone()
    }));
    // Fills the publisher's rules: the file store at open, ZooKeeper's session loop (its own task) in the background.
    open_store(settings, &publisher)?;
    if let Some(hosts) = &settings.zk {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while !publisher.rules_loaded() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "cannot read the rules from ZooKeeper {hosts} within 15s"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let parsed = marathon_client(settings)?
        .fetch_apps()
        .await
        .map_err(|e| format!("cannot fetch apps from Marathon: {e}"))?;
    discovery(settings, &publisher).apply_snapshot(parsed.apps);
    let template = template.or(settings.haproxy.pipeline.template.as_deref());
    let cfg = crate::haproxy::render_once(&publisher, template, &haproxy_extra(settings))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(cfg.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

impl Running {
    /// Stops accepting and waits for in-flight requests, at most the drain timeout.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.drain_timeout, self.proxy_done).await {
            Ok(_) => tracing::info!("drained; exiting"),
            Err(_) => {
                tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing remaining connections")
            }
        }
        self.store.close().await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Keeps the HTTPS listener's SNI set in step with the certificate files labels name (`HAPROXY_{n}_SSL_CERT`).
fn follow_label_certs(publisher: Arc<Publisher>, certs: Arc<crate::proxy::tls::CertStore>) {
    tokio::spawn(async move {
        let mut changes = publisher.subscribe();
        let mut last: Option<Vec<String>> = None;
        loop {
            let files = publisher.load().ports.ssl_certs.clone();
            // Most snapshot changes are task events: the files are read only when the labels name others.
            if last.as_ref() != Some(&files) {
                last = Some(files.clone());
                let c = certs.clone();
                // File reads and PEM parsing off the async threads.
                let _ = tokio::task::spawn_blocking(move || c.set_label_certs(&files)).await;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token file is data anyone with the directory could have written: what does not pass the flag's check
    /// (too short, or a character that would change the registered URL) is replaced, and a good one is kept.
    #[test]
    fn a_hostile_callback_token_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::config::Opts {
            marathon: Some(vec!["http://marathon:8080".into()]),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let settings = Settings::resolve(&opts, false).unwrap();
        let file = dir.path().join("callback.token");
        for hostile in [
            "short",
            "0123456789abcdef&url=http://evil/",
            "0123456789abcdef\nx",
        ] {
            std::fs::write(&file, hostile).unwrap();
            let token = callback_token(&settings).unwrap();
            assert!(crate::config::valid_callback_token(&token), "{token:?}");
            assert_ne!(token, hostile.trim());
            assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
        }
        let kept = std::fs::read_to_string(&file).unwrap();
        assert_eq!(callback_token(&settings).unwrap(), kept);
    }
}
