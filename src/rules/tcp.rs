//! TCP (L4) services: which app port listens on which port. From marathon-lb's `HAPROXY_{n}_MODE=tcp` (bound to
//! the service port, or `HAPROXY_{n}_PORT`), Bamboo's `BAMBOO_TCP_PORT` env (port index 0), or every service port
//! with `--tcp-service-ports`. Shared by the built-in TCP proxy and the HAProxy renderer.

use super::labels;
use super::table::{Balance, RouteOptions};
use crate::apps::Apps;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TcpService {
    pub port: u16,
    pub app_id: String,
    pub port_index: usize,
    pub balance: Balance,
    /// `label`, `env` (BAMBOO_TCP_PORT) or `service-port`.
    pub source: &'static str,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TcpTable {
    /// Sorted by port; one service per port.
    pub services: Vec<TcpService>,
    /// Ports claimed twice, or unusable values: "what: why".
    pub errors: Vec<String>,
}

impl TcpTable {
    pub fn get(&self, port: u16) -> Option<&TcpService> {
        self.services
            .binary_search_by_key(&port, |s| s.port)
            .ok()
            .map(|i| &self.services[i])
    }

    pub fn build(apps: &Apps, opts: &RouteOptions) -> TcpTable {
        let mut wanted: Vec<TcpService> = Vec::new();
        let mut errors = Vec::new();
        for (id, app) in apps.iter() {
            let balance = |n: usize| {
                labels::label(app, n, "BALANCE")
                    .and_then(|b| Balance::parse(b).ok())
                    .unwrap_or_default()
            };
            if let Some(v) = app.env.get("BAMBOO_TCP_PORT") {
                match v.trim().parse::<u16>() {
                    Ok(port) if port != 0 => wanted.push(TcpService {
                        port,
                        app_id: id.clone(),
                        port_index: 0,
                        balance: balance(0),
                        source: "env",
                    }),
                    _ => errors.push(format!("{id}: BAMBOO_TCP_PORT '{v}' is not a port")),
                }
            }
            let ports = app.service_ports.len().max(app.backends.len());
            for n in 0..ports {
                let service_port = app.service_ports.get(n).copied().unwrap_or(0);
                let by_label = labels::is_tcp(app, n)
                    && !labels::label(app, n, "ENABLED").is_some_and(labels::falsy)
                    && labels::in_groups(app, n, &opts.groups);
                if !by_label && !opts.tcp_service_ports {
                    continue;
                }
                let port = match labels::label(app, n, "PORT") {
                    Some(p) => match p.parse::<u16>() {
                        Ok(p) if p != 0 => p,
                        _ => {
                            errors.push(format!("{id}: HAPROXY_{n}_PORT '{p}' is not a port"));
                            continue;
                        }
                    },
                    None => match u16::try_from(service_port) {
                        Ok(p) if p != 0 => p,
                        _ => continue,
                    },
                };
                wanted.push(TcpService {
                    port,
                    app_id: id.clone(),
                    port_index: n,
                    balance: balance(n),
                    source: if by_label { "label" } else { "service-port" },
                });
            }
        }
        // Explicit asks (env, label) beat --tcp-service-ports; then app id order decides.
        wanted.sort_by(|a, b| {
            (a.port, a.source == "service-port", &a.app_id).cmp(&(
                b.port,
                b.source == "service-port",
                &b.app_id,
            ))
        });
        let mut services: Vec<TcpService> = Vec::with_capacity(wanted.len());
        for s in wanted {
            match services.last() {
                Some(prev) if prev.port == s.port => errors.push(format!(
                    "{}: TCP port {} is already taken by {}",
                    s.app_id, s.port, prev.app_id
                )),
                _ => services.push(s),
            }
        }
        TcpTable { services, errors }
    }
}
