//! TCP (L4) connections of the TCP-mode service ports ([`super::ports`] opens their listeners). Each accepted
//! connection looks up its app in the snapshot current at that moment, so a task-set change affects only new
//! connections; open ones keep their backend until either side closes.

use super::balance::Balancer;
use super::deadline::Deadlines;
use super::route::{Picker, Target};
use crate::marathon::address::Endpoint;
use crate::snapshot::Publisher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `--tcp-bind-address`: the default.
pub const DEFAULT_BIND: &str = "0.0.0.0";

pub struct TcpOptions {
    pub bind: IpAddr,
    pub connect_timeout: Duration,
}

/// What every TCP listener's connections share.
pub(super) struct Shared {
    pub(super) opts: TcpOptions,
    pub(super) deadlines: Arc<Deadlines>,
}

/// One TCP-mode connection: a backend of the app that serves `port`, then bytes both ways until either side
/// closes.
pub(super) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    port: u16,
    publisher: &Publisher,
    balancer: &Balancer,
    shared: &Shared,
) {
    let m = crate::metrics::metrics();
    let snap = publisher.load_full();
    let Some(svc) = snap.ports.get(port) else {
        return;
    };
    if svc.allowed.as_ref().is_some_and(|a| !a.contains(peer.ip())) {
        m.tcp_connections
            .with_label_values(&[&svc.app_id, "denied"])
            .inc();
        tracing::debug!(port, app = %svc.app_id, client = %peer, "TCP client not in the allowed networks");
        return;
    }
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
    )
    .for_client(peer.ip());
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
