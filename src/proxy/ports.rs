//! The service ports' own listeners, opened and closed as the snapshot's port table changes: a TCP-mode port's
//! connections are proxied at L4 ([`super::tcp`]); an HTTP-mode port's are handed to the proxy's front
//! ([`super::listener::Handoff`]) and served as the shared listener's are, every request to that one app port.
//! A port that cannot be bound (in use, not permitted) is reported and tried again every few seconds.

use super::balance::Balancer;
use super::deadline::Deadlines;
use super::listener::Handoff;
use super::route::Entry;
use super::tcp::{self, Shared, TcpOptions};
use crate::rules::ports::PortMode;
use crate::snapshot::Publisher;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// What one open listener serves: reopened when any of it changes.
#[derive(PartialEq, Eq)]
struct Open {
    addr: SocketAddr,
    mode: PortMode,
    /// `HAPROXY_{n}_SSL_CERT`: TLS with this certificate file.
    cert: Option<String>,
}

/// Follows the snapshot's port table until `stop` turns true; then closes every listener (open TCP connections
/// live on until they end; HTTP ones drain with the proxy).
pub async fn run(
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    opts: TcpOptions,
    (http, limit): (mpsc::Sender<Handoff>, Arc<tokio::sync::Semaphore>),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        opts,
        deadlines: Deadlines::spawn(),
    });
    let mut changes = publisher.subscribe();
    let mut open: HashMap<u16, (Open, AbortHandle)> = HashMap::new();
    let m = crate::metrics::metrics();
    loop {
        let snap = publisher.load_full();
        let wanted = |port: u16| {
            snap.ports.get(port).map(|s| Open {
                addr: SocketAddr::new(s.bind.unwrap_or(shared.opts.bind), s.port),
                mode: s.mode,
                cert: s.ssl_cert.clone(),
            })
        };
        open.retain(|port, (now, task)| {
            let keep = wanted(*port).is_some_and(|w| w == *now);
            if !keep {
                task.abort();
                tracing::info!(port, "service port listener closed");
            }
            keep
        });
        let mut bind_failed = false;
        for svc in &snap.ports.services {
            if open.contains_key(&svc.port) {
                continue;
            }
            let Some(want) = wanted(svc.port) else {
                continue;
            };
            match bind(want.addr) {
                Ok(l) => {
                    tracing::info!(addr = %want.addr, app = %svc.app_id, mode = ?svc.mode, "service port listener open");
                    let task = match svc.mode {
                        PortMode::Tcp => tokio::spawn(accept_tcp(
                            (l, svc.port),
                            publisher.clone(),
                            balancer.clone(),
                            shared.clone(),
                            limit.clone(),
                        )),
                        PortMode::Http => tokio::spawn(accept_http(
                            l,
                            (svc.port, Entry::Port(svc.port)),
                            http.clone(),
                            match &want.cert {
                                Some(file) => Some(port_tls(file.clone()).await),
                                None => None,
                            }
                            .flatten(),
                        )),
                    };
                    open.insert(svc.port, (want, task.abort_handle()));
                }
                // Tried again in a few seconds, or at the next snapshot change.
                Err(e) => {
                    bind_failed = true;
                    tracing::warn!(addr = %want.addr, app = %svc.app_id, error = %e, "cannot listen on service port")
                }
            }
        }
        let count = |mode| open.values().filter(|(o, _)| o.mode == mode).count() as i64;
        m.tcp_listeners.set(count(PortMode::Tcp));
        m.http_port_listeners.set(count(PortMode::Http));
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(Duration::from_secs(5)), if bind_failed => {}
        }
    }
    for (_, task) in open.into_values() {
        task.abort();
    }
    m.tcp_listeners.set(0);
    m.http_port_listeners.set(0);
}

/// A port's own TLS (`HAPROXY_{n}_SSL_CERT`): its certificate file, re-read when it changes, the last good one kept.
/// A file that never loaded is served by a self-signed stand-in (logged): the port stays TLS, never plain.
async fn port_tls(file: String) -> Option<tokio_rustls::TlsAcceptor> {
    let store = tokio::task::spawn_blocking(move || {
        let store = super::tls::CertStore::open(None);
        store.set_label_certs(&[file]);
        store
    })
    .await
    .ok()?;
    store.watch(Duration::from_secs(1));
    match store.server_config() {
        Ok(cfg) => Some(tokio_rustls::TlsAcceptor::from(cfg)),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up TLS for a service port");
            None
        }
    }
}

/// marathon-lb's app-id frontend (`--http-appid-bind`): every request goes to the app its `X-Marathon-App-Id`
/// names, at that app's first HTTP port.
pub async fn appid(bind: SocketAddr, http: mpsc::Sender<Handoff>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(accept_http(
        listener,
        (addr.port(), Entry::AppId),
        http,
        None,
    ));
    Ok(addr)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A port just closed (app removed and re-added) must be reusable at once.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

async fn accept_tcp(
    (listener, port): (TcpListener, u16),
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    shared: Arc<Shared>,
    limit: Arc<tokio::sync::Semaphore>,
) {
    let mut backoff = crate::limits::AcceptBackoff::new("tcp");
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                tracing::debug!(port, "TCP accept failed");
                backoff.failed(&e).await;
                continue;
            }
        };
        // Past the proxy's connection limit this one waits, unserved, and the next ones in the kernel's backlog.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let publisher = publisher.clone();
        let balancer = balancer.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tcp::serve(client, peer, port, &publisher, &balancer, &shared).await;
            drop(permit);
        });
    }
}

/// Accepts and hands each connection to the proxy's front. Each listener holds at most one connection the front
/// has not taken yet (the channel is shared: a listener must not hold a place in it while it waits for a client, or
/// a few idle ports would starve the busy ones); past that, clients wait in the kernel's backlog.
pub async fn accept_http(
    listener: TcpListener,
    (port, entry): (u16, Entry),
    http: mpsc::Sender<Handoff>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut backoff = crate::limits::AcceptBackoff::new("http-port");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let handoff = Handoff {
                    stream,
                    peer,
                    port,
                    entry,
                    tls: tls.clone(),
                };
                if http.send(handoff).await.is_err() {
                    // The proxy stopped.
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(port, "HTTP port accept failed");
                backoff.failed(&e).await;
            }
        }
    }
}
