//! Service-port listeners, as marathon-lb opens them: every service port of an app labelled for marathon-lb (in the
//! selected groups, not `_ENABLED=false`) gets its own listener on `HAPROXY_{n}_BIND_ADDR` (else
//! `--tcp-bind-address`) and `HAPROXY_{n}_PORT` (else the service port), in HTTP mode (a frontend for that one app)
//! or TCP mode, as marathon-lb decides it. Bamboo's `BAMBOO_TCP_PORT` env (port index 0) and
//! `--tcp-service-ports` (every service port of every app) add TCP listeners. Shared by the built-in proxy and the
//! HAProxy renderer.

use super::labels;
pub use super::labels::PortMode;
use super::table::{Balance, Networks, Route, RouteError, RouteOptions};
use crate::apps::Apps;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, serde::Serialize)]
pub struct PortService {
    pub port: u16,
    /// `HAPROXY_{n}_BIND_ADDR`; `None`: `--tcp-bind-address`.
    pub bind: Option<IpAddr>,
    pub app_id: String,
    pub port_index: usize,
    pub mode: PortMode,
    pub balance: Balance,
    /// `label`, `env` (BAMBOO_TCP_PORT) or `service-port`.
    pub source: &'static str,
    /// HTTP mode: the route every request on this port takes (the port's labels: balance, sticky, auth, ...).
    #[serde(skip)]
    pub route: Option<Arc<Route>>,
    /// TCP mode: the clients allowed (`_BACKEND_NETWORK_ALLOWED_ACL`); others are closed at once.
    pub allowed: Option<Networks>,
    /// HTTP mode: TLS on this port with this certificate file (`_SSL_CERT`), as marathon-lb binds it.
    pub ssl_cert: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ignored {
    pub app_id: String,
    pub label: String,
}

#[derive(Debug, Default, Clone)]
pub struct PortTable {
    /// Sorted by port; one service per port.
    pub services: Vec<PortService>,
    /// Ports claimed twice, or unusable values.
    pub errors: Vec<RouteError>,
    /// Certificate files labels add to the HTTPS listener's SNI set (`HAPROXY_{n}_SSL_CERT`), sorted, once each.
    pub ssl_certs: Vec<String>,
    /// Labels a built-in proxy cannot apply (HAProxy fragments), by app: `app_id`, `label`.
    pub ignored: Vec<Ignored>,
    /// Each app's first HTTP-mode port (by port index), as an index into `services`: the app-id frontend's.
    first_http: HashMap<String, usize>,
}

fn report(errors: &mut Vec<RouteError>, app_id: &str, error: String) {
    errors.push(RouteError {
        app_id: app_id.to_string(),
        error,
    });
}

impl PortTable {
    pub fn get(&self, port: u16) -> Option<&PortService> {
        self.services
            .binary_search_by_key(&port, |s| s.port)
            .ok()
            .map(|i| &self.services[i])
    }

    /// The route of `app_id`'s first HTTP-mode port.
    pub fn first_http(&self, app_id: &str) -> Option<&Route> {
        self.services
            .get(*self.first_http.get(app_id)?)?
            .route
            .as_deref()
    }

    /// The TCP-mode services.
    pub fn tcp(&self) -> impl Iterator<Item = &PortService> {
        self.services.iter().filter(|s| s.mode == PortMode::Tcp)
    }

    pub fn build(apps: &Apps, opts: &RouteOptions) -> PortTable {
        let mut wanted: Vec<PortService> = Vec::new();
        let mut errors = Vec::new();
        let mut ignored = Vec::new();
        let mut ssl_certs = Vec::new();
        for (id, app) in apps.iter() {
            if labels::has_routing_labels(app) {
                for n in 0..app.service_ports.len().max(1) {
                    if let Some(c) = labels::label(app, n, "SSL_CERT")
                        .filter(|_| labels::in_groups(app, n, &opts.groups))
                    {
                        ssl_certs.push(c.to_string());
                    }
                }
            }
            if let Some(e) = app.deployment.as_ref().and_then(|d| d.error.as_ref()) {
                report(&mut errors, id, e.clone());
            }
            for label in labels::ignored(app) {
                ignored.push(Ignored {
                    app_id: id.clone(),
                    label: label.to_string(),
                });
            }
            let balance = |n: usize| {
                labels::label(app, n, "BALANCE")
                    .and_then(|b| Balance::parse(b).ok())
                    .unwrap_or_default()
            };
            if let Some(v) = app.env.get("BAMBOO_TCP_PORT") {
                match v.trim().parse::<u16>() {
                    Ok(port) if port != 0 => wanted.push(PortService {
                        port,
                        bind: None,
                        app_id: id.clone(),
                        port_index: 0,
                        mode: PortMode::Tcp,
                        balance: balance(0),
                        source: "env",
                        route: None,
                        allowed: None,
                        ssl_cert: None,
                    }),
                    _ => report(
                        &mut errors,
                        id,
                        format!("BAMBOO_TCP_PORT '{v}' is not a port"),
                    ),
                }
            }
            let labelled = labels::has_routing_labels(app);
            let ports = app.service_ports.len().max(app.backends.len());
            for n in 0..ports {
                let service_port = app.service_ports.get(n).copied().unwrap_or(0);
                let by_label = labelled
                    && !labels::label(app, n, "ENABLED").is_some_and(labels::falsy)
                    && labels::in_groups(app, n, &opts.groups);
                if !by_label && !opts.tcp_service_ports {
                    continue;
                }
                let port = match labels::label(app, n, "PORT") {
                    Some(p) => match p.parse::<u16>() {
                        Ok(p) if p != 0 => p,
                        _ => {
                            report(
                                &mut errors,
                                id,
                                format!("HAPROXY_{n}_PORT '{p}' is not a port"),
                            );
                            continue;
                        }
                    },
                    None => match u16::try_from(service_port) {
                        Ok(p) if p != 0 => p,
                        _ => continue,
                    },
                };
                let bind = match labels::label(app, n, "BIND_ADDR") {
                    None | Some("*") => None,
                    Some(a) => match a.trim_matches(['[', ']']).parse::<IpAddr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            report(
                                &mut errors,
                                id,
                                format!("HAPROXY_{n}_BIND_ADDR '{a}' is not an IP address"),
                            );
                            continue;
                        }
                    },
                };
                if by_label && labels::health_port(app, n).is_none() {
                    report(
                        &mut errors,
                        id,
                        format!("HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX is not a port index; port {n}'s own check is used"),
                    );
                }
                let mode = if by_label {
                    labels::mode(app, n)
                } else {
                    PortMode::Tcp
                };
                let allowed = match labels::label(app, n, "BACKEND_NETWORK_ALLOWED_ACL") {
                    Some(a) if mode == PortMode::Tcp => match Networks::parse(a) {
                        Ok(n) => Some(n),
                        // Not served open.
                        Err(e) => {
                            report(
                                &mut errors,
                                id,
                                format!("port {port}: allowed networks: {e}"),
                            );
                            continue;
                        }
                    },
                    _ => None,
                };
                let route = match mode {
                    PortMode::Tcp => None,
                    PortMode::Http => {
                        match Route::for_port(id, n, labels::config(app, n), &mut errors) {
                            Ok(r) => Some(Arc::new(r)),
                            // Not served open when a guard (auth, allowed networks) is wrong.
                            Err(e) => {
                                report(&mut errors, id, format!("port {port}: {e}"));
                                continue;
                            }
                        }
                    }
                };
                wanted.push(PortService {
                    port,
                    bind,
                    app_id: id.clone(),
                    port_index: n,
                    mode,
                    balance: balance(n),
                    source: if by_label { "label" } else { "service-port" },
                    route,
                    allowed,
                    ssl_cert: match labels::label(app, n, "SSL_CERT") {
                        Some(c) if by_label && mode == PortMode::Http => Some(c.to_string()),
                        Some(_) if by_label => {
                            report(&mut errors, id, format!("port {port}: HAPROXY_{n}_SSL_CERT on a TCP-mode port is not terminated; the port passes TLS through as bytes"));
                            None
                        }
                        _ => None,
                    },
                });
            }
        }
        // Explicit asks (env, label) beat --tcp-service-ports; then the first by (app id, port index) keeps it.
        wanted.sort_by(|a, b| {
            (a.port, a.source == "service-port", &a.app_id, a.port_index).cmp(&(
                b.port,
                b.source == "service-port",
                &b.app_id,
                b.port_index,
            ))
        });
        let mut services: Vec<PortService> = Vec::with_capacity(wanted.len());
        for s in wanted {
            match services.last() {
                Some(prev) if prev.port == s.port => report(
                    &mut errors,
                    &s.app_id,
                    format!(
                        "port {} (index {}) is already taken by {} (index {})",
                        s.port, s.port_index, prev.app_id, prev.port_index
                    ),
                ),
                _ => services.push(s),
            }
        }
        let mut first_http: HashMap<String, usize> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            if s.route.is_some() {
                let at = first_http.entry(s.app_id.clone()).or_insert(i);
                if services[*at].port_index > s.port_index {
                    *at = i;
                }
            }
        }
        ssl_certs.sort();
        ssl_certs.dedup();
        PortTable {
            services,
            errors,
            ssl_certs,
            ignored,
            first_http,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::table::tests::apps;

    fn modes(json: &str) -> Vec<(u16, PortMode)> {
        let opts = RouteOptions::default();
        let t = PortTable::build(&apps(json), &opts);
        t.services.iter().map(|s| (s.port, s.mode)).collect()
    }

    #[test]
    fn the_mode_is_marathon_lbs() {
        let check = |proto: &str, index: u32| {
            format!(r#"[{{"protocol":"{proto}","path":"/h","portIndex":{index}}}]"#)
        };
        let app = |labels: &str, checks: &str| {
            format!(
                r#"{{"apps":[{{"id":"/a","labels":{{"HAPROXY_GROUP":"x"{labels}}},"healthChecks":{checks},
                   "portDefinitions":[{{"port":10001}},{{"port":10002}}]}}]}}"#
            )
        };
        use PortMode::{Http, Tcp};
        assert_eq!(modes(&app("", "[]")), [(10001, Tcp), (10002, Tcp)]);
        // An HTTP check makes its port HTTP; HTTPS alone does not.
        assert_eq!(
            modes(&app("", &check("HTTP", 1))),
            [(10001, Tcp), (10002, Http)]
        );
        assert_eq!(
            modes(&app("", &check("HTTPS", 0))),
            [(10001, Tcp), (10002, Tcp)]
        );
        // A vhost makes it HTTP; _MODE beats both.
        let vhost = r#","HAPROXY_0_VHOST":"a.example""#;
        assert_eq!(modes(&app(vhost, "[]")), [(10001, Http), (10002, Tcp)]);
        let forced = r#","HAPROXY_0_VHOST":"a.example","HAPROXY_0_MODE":"tcp""#;
        assert_eq!(modes(&app(forced, "[]")), [(10001, Tcp), (10002, Tcp)]);
        // Another port's check, by _BACKEND_HEALTHCHECK_PORT_INDEX: any HTTP-family protocol counts.
        let other = r#","HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX":"1""#;
        assert_eq!(
            modes(&app(other, &check("HTTPS", 1))),
            [(10001, Http), (10002, Tcp)]
        );
        let bad = r#","HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX":"one""#;
        let t = PortTable::build(&apps(&app(bad, "[]")), &RouteOptions::default());
        assert_eq!(t.services.len(), 2, "the ports are still served");
        assert!(
            t.errors[0].error.contains("HEALTHCHECK_PORT_INDEX"),
            "{:?}",
            t.errors
        );
    }
}
