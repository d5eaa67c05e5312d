//! The HTTP and HTTPS listeners: accept within the connection limit, the TLS handshake (ALPN picks HTTP/1 or
//! HTTP/2), and the drain at shutdown.

use super::balance::Balancer;
use super::deadline::Deadlines;
use super::front::Front;
use super::options::ProxyOptions;
use super::route::{Entry, Proxy};
use super::{h2, http1, tls};
use crate::marathon::address::Endpoint;
use crate::snapshot::Publisher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct Listeners {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// Where service ports' own HTTP listeners ([`super::ports`]) hand their connections, to be served like the
    /// shared listener's: the same connection limit, drain, timeouts.
    pub handoff: tokio::sync::mpsc::Sender<Handoff>,
    /// `--max-connections`: one budget for every client connection of the proxy, TCP-mode ports' too.
    pub limit: Arc<tokio::sync::Semaphore>,
}

/// A connection accepted on an HTTP-mode service port, or on the app-id frontend.
pub struct Handoff {
    pub stream: tokio::net::TcpStream,
    pub peer: SocketAddr,
    /// The port it came in on (X-Forwarded-Port).
    pub port: u16,
    /// How its requests are routed.
    pub entry: Entry,
    /// TLS on that port (`HAPROXY_{n}_SSL_CERT`): its certificate.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds the HTTP (and HTTPS) listeners and serves them in the background until `shutdown` turns true; then they
/// stop accepting and the returned task ends once every open connection has finished its requests (idle
/// keep-alive connections close at once, HTTP/2 gets a GOAWAY).
pub async fn serve(
    http_bind: SocketAddr,
    https: Option<(SocketAddr, Arc<tls::CertStore>)>,
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    opts: ProxyOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(Listeners, tokio::task::JoinHandle<()>)> {
    let http = TcpListener::bind(http_bind).await?;
    let http_addr = http.local_addr()?;
    let (https, https_addr, acceptor) = bind_https(https).await?;
    forget_gone_backends(publisher.clone(), balancer.clone());
    let proxy = Arc::new(Proxy::new(
        publisher,
        balancer,
        https_addr.map_or(443, |a| a.port()),
        &opts,
    ));
    let front = front(proxy, &opts, shutdown.clone());
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let limit_out = limit.clone();
    // Small: a full channel holds the port listeners back, and their clients wait in the kernel's backlog.
    let (handoff, mut handed) = tokio::sync::mpsc::channel::<Handoff>(16);
    let task = tokio::spawn(async move {
        // Every connection task holds a sender: the drain is over when the last one is dropped.
        let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        let stopped = |rx: &mut tokio::sync::watch::Receiver<bool>| {
            let mut rx = rx.clone();
            async move { drop(rx.wait_for(|stop| *stop).await) }
        };
        let mut backoff = crate::limits::AcceptBackoff::new("proxy");
        loop {
            // Past the limit, new connections wait in the kernel's backlog instead of being accepted and starved.
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped(&mut shutdown) => break,
            };
            let accept_tls = async {
                match &https {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let (accepted, tls, handed_port, entry) = tokio::select! {
                a = http.accept() => (a, None, None, Entry::Shared),
                a = accept_tls => (a, acceptor.clone(), None, Entry::Shared),
                Some(h) = handed.recv() => (Ok((h.stream, h.peer)), h.tls, Some(h.port), h.entry),
                _ = stopped(&mut shutdown) => break,
            };
            let (stream, peer) = match accepted {
                Ok(s) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let front = front.clone();
            let handshake_timeout = opts.header_read_timeout;
            let port = match handed_port {
                Some(p) => p,
                None if tls.is_some() => https_addr.map_or(443, |a| a.port()),
                None => http_addr.port(),
            };
            let open = open.clone();
            tokio::spawn(async move {
                connection(stream, peer, tls, (port, entry), front, handshake_timeout).await;
                drop((permit, open));
            });
        }
        drop(http);
        drop(https);
        drop(handed);
        front
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        front.drain.notify_waiters();
        tracing::info!("proxy draining: no new connections, finishing in-flight requests");
        drop(open);
        let _ = all_closed.recv().await;
    });
    Ok((
        Listeners {
            http: http_addr,
            https: https_addr,
            handoff,
            limit: limit_out,
        },
        task,
    ))
}

/// Forgets the counters and idle connections of backends gone from every app (batched: at most every 5 s).
fn forget_gone_backends(publisher: Arc<Publisher>, balancer: Arc<Balancer>) {
    tokio::spawn(async move {
        let mut changes = publisher.subscribe();
        while changes.changed().await.is_ok() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            changes.mark_unchanged();
            let snap = publisher.load_full();
            let live: std::collections::HashSet<&Endpoint> = snap
                .apps
                .values()
                .flat_map(|a| a.backends.iter().flatten())
                .collect();
            balancer.retain(|e| live.contains(e));
        }
    });
}

/// What every connection shares, with hyper's HTTP/2 builder set as the options say.
fn front(
    proxy: Arc<Proxy>,
    opts: &ProxyOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Arc<Front> {
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes.max(8192) as u32);
    Arc::new(Front {
        proxy,
        h2,
        stop,
        draining: Default::default(),
        drain: Default::default(),
        deadlines: Deadlines::spawn(),
    })
}

/// One accepted connection, served to its end: HTTP/1, or (TLS with ALPN `h2`) HTTP/2.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    (port, entry): (u16, Entry),
    front: Arc<Front>,
    handshake_timeout: Duration,
) {
    let m = crate::metrics::metrics();
    m.http_connections.inc();
    match tls {
        None => {
            let p = http1::Peer::new(peer, false, port, front.proxy.opts.via).entered(entry);
            http1::serve(stream, front, p).await
        }
        Some(acceptor) => {
            match (front.deadlines)
                .within(handshake_timeout, acceptor.accept(stream))
                .await
            {
                Some(Ok(s)) => {
                    let p = http1::Peer::new(peer, true, port, front.proxy.opts.via)
                        .entered(entry)
                        .named(s.get_ref().1.server_name().map(Arc::from));
                    if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                        h2::serve_h2(s, &front, &p).await
                    } else {
                        http1::serve(s, front, p).await
                    }
                }
                Some(Err(e)) => {
                    m.tls_handshake_failures.inc();
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                }
                None => {
                    m.tls_handshake_failures.inc();
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                }
            }
        }
    }
    m.http_connections.dec();
}

/// The HTTPS listener, its address and the TLS acceptor, when there is one.
async fn bind_https(
    https: Option<(SocketAddr, Arc<tls::CertStore>)>,
) -> std::io::Result<(
    Option<TcpListener>,
    Option<SocketAddr>,
    Option<tokio_rustls::TlsAcceptor>,
)> {
    let Some((bind, certs)) = https else {
        return Ok((None, None, None));
    };
    let l = TcpListener::bind(bind).await?;
    let addr = l.local_addr()?;
    let cfg = certs.server_config().map_err(std::io::Error::other)?;
    Ok((
        Some(l),
        Some(addr),
        Some(tokio_rustls::TlsAcceptor::from(cfg)),
    ))
}
