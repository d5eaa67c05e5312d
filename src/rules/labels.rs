//! marathon-lb labels → routes: `HAPROXY_GROUP`, `HAPROXY_{n}_VHOST`, `_PATH`, `_BALANCE`, `_MODE`, `_ENABLED`,
//! `_STICKY`, `_REDIRECT_TO_HTTPS`, `_GROUP`; and each port's mode for its own listener ([`super::ports`]).

use crate::apps::AppView;
use std::collections::BTreeMap;

/// How a service port's own listener serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    Tcp,
    Http,
}

pub struct LabelRoute {
    pub port_index: usize,
    pub acl: Vec<String>,
    pub config: BTreeMap<String, String>,
}

pub fn label<'a>(app: &'a AppView, n: usize, key: &str) -> Option<&'a str> {
    app.labels
        .get(&format!("HAPROXY_{n}_{key}"))
        .map(String::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn falsy(v: &str) -> bool {
    crate::boolean::parse(v, crate::boolean::Spelling::Words) == Some(false)
}

pub fn has_routing_labels(app: &AppView) -> bool {
    app.labels.keys().any(|k| k.starts_with("HAPROXY_"))
}

fn ports(app: &AppView) -> usize {
    app.service_ports.len().max(app.backends.len()).max(1)
}

/// Port labels and the rule config key each maps onto: labels and stored rules reach the same features.
const CONFIG_KEYS: &[(&str, &str)] = &[
    ("BALANCE", "balance"),
    ("STICKY", "sticky"),
    ("AUTH", "auth"),
    ("BACKEND_NETWORK_ALLOWED_ACL", "allowed_networks"),
    ("USE_HSTS", "hsts"),
    ("HTTP_BACKEND_PROXYPASS_PATH", "proxypass_path"),
    ("HTTP_BACKEND_REVPROXY_PATH", "revproxy_path"),
    ("HTTP_BACKEND_REDIR", "redirect_path"),
    ("BACKEND_WEIGHT", "weight"),
];

/// The rule config port `n`'s labels give wherever it is served (its own listener, the shared frontends).
pub fn config(app: &AppView, n: usize) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    for (suffix, key) in CONFIG_KEYS {
        if let Some(v) = label(app, n, suffix) {
            config.insert((*key).to_string(), v.to_string());
        }
    }
    // marathon-lb: a path raises the weight from 0 to 1.
    if label(app, n, "PATH").is_some() && !config.contains_key("weight") {
        config.insert("weight".to_string(), "1".to_string());
    }
    config
}

/// Port `n`'s mode, as marathon-lb decides it: `HAPROXY_{n}_MODE`; else HTTP when the port has a vhost or a
/// Marathon health check whose protocol is exactly `HTTP`; else TCP.
pub fn mode(app: &AppView, n: usize) -> PortMode {
    match label(app, n, "MODE")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("tcp") => return PortMode::Tcp,
        Some("http") => return PortMode::Http,
        _ => {}
    }
    // `_BACKEND_HEALTHCHECK_PORT_INDEX` takes the check of another port; then any HTTP-family protocol counts.
    let (checked, family) = match health_port(app, n) {
        Some(k) if k != n => (k, true),
        _ => (n, false),
    };
    let http_check = app.health_checks.iter().any(|h| {
        h.port_index as usize == checked
            && (h.protocol == "HTTP"
                || (family
                    && matches!(h.protocol.as_str(), "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS")))
    });
    if label(app, n, "VHOST").is_some() || http_check {
        PortMode::Http
    } else {
        PortMode::Tcp
    }
}

/// The port index whose Marathon health check stands for port `n` (`HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`,
/// else `n`); `None` when the label is not an index.
pub fn health_port(app: &AppView, n: usize) -> Option<usize> {
    match label(app, n, "BACKEND_HEALTHCHECK_PORT_INDEX") {
        None => Some(n),
        Some(v) => v.parse().ok(),
    }
}

/// Whether port `n` is TCP-mode by label (`HAPROXY_{n}_MODE=tcp`).
pub fn is_tcp(app: &AppView, n: usize) -> bool {
    label(app, n, "MODE").is_some_and(|m| m.eq_ignore_ascii_case("tcp"))
}

pub fn in_groups(app: &AppView, n: usize, groups: &[String]) -> bool {
    if groups.is_empty() || groups.iter().any(|g| g == "*") {
        return true;
    }
    let group =
        label(app, n, "GROUP").or_else(|| app.labels.get("HAPROXY_GROUP").map(String::as_str));
    group.is_some_and(|g| g.split(',').any(|g| groups.iter().any(|x| x == g.trim())))
}

/// HTTP routes the labels ask for, one per port index that has a vhost or a path.
pub fn routes(app: &AppView, groups: &[String]) -> Vec<LabelRoute> {
    let mut out = Vec::new();
    for n in 0..ports(app) {
        if label(app, n, "ENABLED").is_some_and(falsy)
            || !in_groups(app, n, groups)
            || is_tcp(app, n)
        {
            continue;
        }
        let mut acl = Vec::new();
        if let Some(vhosts) = label(app, n, "VHOST") {
            let hosts: Vec<&str> = vhosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            if !hosts.is_empty() {
                acl.push(format!("hdr(host) -i {}", hosts.join(" ")));
            }
        }
        if let Some(path) = label(app, n, "PATH") {
            acl.push(format!("path_beg {path}"));
        }
        if acl.is_empty() {
            continue;
        }
        let mut config = config(app, n);
        if let Some(r) = label(app, n, "REDIRECT_TO_HTTPS") {
            config.insert("redirect_https".to_string(), r.to_string());
        }
        out.push(LabelRoute {
            port_index: n,
            acl,
            config,
        });
    }
    out
}

/// marathon-lb's template-override labels: HAProxy config fragments, which a built-in proxy cannot apply.
const TEMPLATE_LABELS: &[&str] = &[
    "FRONTEND_HEAD",
    "BACKEND_HEAD",
    "FRONTEND_BACKEND_GLUE",
    "USERLIST_HEAD",
    "BACKEND_HTTP_OPTIONS",
    "BACKEND_HSTS_OPTIONS",
    "BACKEND_STICKY_OPTIONS",
    "BACKEND_SERVER_OPTIONS",
    "BACKEND_HTTP_HEALTHCHECK_OPTIONS",
    "BACKEND_TCP_HEALTHCHECK_OPTIONS",
    "BACKEND_SERVER_HTTP_HEALTHCHECK_OPTIONS",
    "BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS",
    "BACKEND_REDIRECT_HTTP_TO_HTTPS",
    "BACKEND_REDIRECT_HTTP_TO_HTTPS_WITH_PATH",
    "HTTP_FRONTEND_ACL",
    "HTTP_FRONTEND_ACL_ONLY",
    "HTTP_FRONTEND_ACL_WITH_PATH",
    "HTTP_FRONTEND_ACL_ONLY_WITH_PATH",
    "HTTP_FRONTEND_ACL_WITH_AUTH",
    "HTTP_FRONTEND_ACL_WITH_AUTH_AND_PATH",
    "HTTP_FRONTEND_ACL_ONLY_WITH_PATH_AND_AUTH",
    "HTTP_FRONTEND_ROUTING_ONLY",
    "HTTP_FRONTEND_ROUTING_ONLY_WITH_AUTH",
    "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH",
    "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH",
    "HTTP_FRONTEND_APPID_ACL",
    "HTTPS_FRONTEND_ACL",
    "HTTPS_FRONTEND_ACL_WITH_AUTH",
    "HTTPS_FRONTEND_ACL_WITH_PATH",
    "HTTPS_FRONTEND_ACL_WITH_AUTH_AND_PATH",
    "HTTPS_FRONTEND_ACL_ONLY_WITH_PATH",
    "HTTP_BACKEND_PROXYPASS_GLUE",
    "HTTP_BACKEND_REVPROXY_GLUE",
    "HTTP_BACKEND_NETWORK_ALLOWED_ACL",
    "TCP_BACKEND_NETWORK_ALLOWED_ACL",
    "MAP_HTTP_FRONTEND_ACL",
    "MAP_HTTP_FRONTEND_ACL_ONLY",
    "MAP_HTTP_FRONTEND_APPID_ACL",
    "MAP_HTTPS_FRONTEND_ACL",
    "BIND_OPTIONS",
];

/// The app's labels that carry HAProxy fragments (`HAPROXY_{n}_FRONTEND_HEAD`, ...): reported as ignored, never
/// an error.
pub fn ignored(app: &AppView) -> Vec<&str> {
    app.labels
        .keys()
        .filter(|k| {
            let Some(rest) = k.strip_prefix("HAPROXY_") else {
                return false;
            };
            // Per port (`HAPROXY_0_X`) or for every port (`HAPROXY_X`, a global template override).
            let suffix = match rest.split_once('_') {
                Some((n, s)) if n.bytes().all(|b| b.is_ascii_digit()) => s,
                _ => rest,
            };
            TEMPLATE_LABELS.contains(&suffix)
        })
        .map(String::as_str)
        .collect()
}
