//! TCP (L4) listeners: one per TCP-mode service port in the snapshot, opened and closed as the snapshot changes.
//! Each accepted connection looks up its app in the snapshot current at that moment, so a task-set change affects
//! only new connections; open ones keep their backend until either side closes.

use super::balance::Balancer;
use super::deadline::Deadlines;
use super::route::{Picker, Target};
use crate::marathon::address::Endpoint;
use crate::snapshot::Publisher;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// `--tcp-bind-address`: the default.
pub const DEFAULT_BIND: &str = "0.0.0.0";

pub struct TcpOptions {
    pub bind: IpAddr,
    pub connect_timeout: Duration,
}

/// What every TCP listener's connections share.
struct Shared {
    opts: TcpOptions,
    deadlines: Arc<Deadlines>,
}

/// Follows the snapshot's TCP table until `stop` turns true; then closes every listener (open connections live
/// on until they end).
pub async fn run(
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    opts: TcpOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        opts,
        deadlines: Deadlines::spawn(),
    });
    let mut changes = publisher.subscribe();
    let mut open: HashMap<u16, AbortHandle> = HashMap::new();
    loop {
        let snap = publisher.load_full();
        open.retain(|port, task| {
            let keep = snap.tcp.get(*port).is_some();
            if !keep {
                task.abort();
                tracing::info!(port, "TCP listener closed");
            }
            keep
        });
        let mut bind_failed = false;
        for svc in &snap.tcp.services {
            if open.contains_key(&svc.port) {
                continue;
            }
            let addr = SocketAddr::new(shared.opts.bind, svc.port);
            match bind(addr) {
                Ok(l) => {
                    tracing::info!(port = svc.port, app = %svc.app_id, "TCP listener open");
                    let task = tokio::spawn(accept_loop(
                        l,
                        svc.port,
                        publisher.clone(),
                        balancer.clone(),
                        shared.clone(),
                    ));
                    open.insert(svc.port, task.abort_handle());
                }
                // Tried again in a few seconds, or at the next snapshot change.
                Err(e) => {
                    bind_failed = true;
                    tracing::warn!(%addr, app = %svc.app_id, error = %e, "cannot listen for TCP service")
                }
            }
        }
        crate::metrics::metrics()
            .tcp_listeners
            .set(open.len() as i64);
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(Duration::from_secs(5)), if bind_failed => {}
        }
    }
    for (_, task) in open {
        task.abort();
    }
    crate::metrics::metrics().tcp_listeners.set(0);
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

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    shared: Arc<Shared>,
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
        let _ = client.set_nodelay(true);
        let publisher = publisher.clone();
        let balancer = balancer.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            serve(client, peer, port, &publisher, &balancer, &shared).await;
        });
    }
}

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    port: u16,
    publisher: &Publisher,
    balancer: &Balancer,
    shared: &Shared,
) {
    let m = crate::metrics::metrics();
    let snap = publisher.load_full();
    let Some(svc) = snap.tcp.get(port) else {
        return;
    };
    let backends: &[Endpoint] = snap
        .apps
        .get(&svc.app_id)
        .map(|a| a.healthy_backends(svc.port_index))
        .unwrap_or(&[]);
    // The same picker as HTTP's: the balancing policy, ejection after repeated connect failures, the attempt cap.
    let mut picker = Picker::new(
        balancer,
        Target {
            app_id: &svc.app_id,
            port_index: svc.port_index,
            balance: svc.balance,
            sticky: false,
        },
        backends,
        None,
    );
    let mut tried = false;
    let (backend, conn, guard) = loop {
        let Some((b, guard)) = picker.next() else {
            let outcome = if tried {
                "connect_failed"
            } else {
                "no_backend"
            };
            m.tcp_connections
                .with_label_values(&[&svc.app_id, outcome])
                .inc();
            tracing::warn!(port, app = %svc.app_id, client = %peer, outcome, "TCP connection refused");
            return;
        };
        tried = true;
        let mine = shared.deadlines.register();
        let t = shared.deadlines.timeouts(&mine);
        match super::pool::connect(b, shared.opts.connect_timeout, t).await {
            Ok(s) => {
                guard.connected();
                break (b.clone(), s, guard);
            }
            Err(error) => {
                if picker.connect_failed(b, &error).is_err() {
                    m.tcp_connections
                        .with_label_values(&[&svc.app_id, "connect_failed"])
                        .inc();
                    tracing::warn!(port, app = %svc.app_id, client = %peer, "TCP connection refused: no backend connected");
                    return;
                }
            }
        }
    };
    let _ = conn.set_nodelay(true);
    m.tcp_connections
        .with_label_values(&[&svc.app_id, "proxied"])
        .inc();
    m.tcp_active.inc();
    let bytes_in = m.tcp_bytes.with_label_values(&[&svc.app_id, "in"]);
    let bytes_out = m.tcp_bytes.with_label_values(&[&svc.app_id, "out"]);
    let app = svc.app_id.clone();
    drop(snap);
    let (cr, cw) = client.into_split();
    let (br, bw) = conn.into_split();
    // Either direction failing ends both; a clean EOF is passed on as a half-close and the other side goes on.
    let r = tokio::try_join!(pump(cr, bw, &bytes_in), pump(br, cw, &bytes_out));
    if let Err(e) = r {
        tracing::debug!(backend = %backend, app = %app, error = %e, "TCP connection ended with an error");
    }
    m.tcp_active.dec();
    drop(guard);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: &prometheus::IntCounter,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
    }
}
