//! The compiled routes of one snapshot, in precedence order, with indexes so a request is matched in time
//! independent of the number of rules.
//!
//! Precedence (the built-in proxy and the HAProxy renderer use the same order): a rule with an exact `Host`
//! condition beats one with a host suffix (`hdr_end`/`hdr_dom`) beats one with no host condition; then the longest
//! literal path prefix (`path_beg`/`path_dir`/`path`); then the larger weight (marathon-lb's `_BACKEND_WEIGHT`),
//! then app id, then port index.

use super::acl::{self, Criterion, HostRank, Request};
use super::auth::BasicAuth;
use super::labels;
use crate::apps::Apps;
use std::cmp::Reverse;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Stored through the API (Bamboo's "service").
    Api,
    /// marathon-lb labels on the app.
    Label,
    /// Bamboo's default for apps without a rule.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    Leastconn,
    Roundrobin,
    /// A stable hash of the client's address (HAProxy's `balance source`).
    Source,
}

impl Balance {
    pub fn parse(s: &str) -> Result<Balance, String> {
        match s.trim() {
            "leastconn" => Ok(Balance::Leastconn),
            "roundrobin" => Ok(Balance::Roundrobin),
            "source" => Ok(Balance::Source),
            other => Err(format!(
                "balance '{other}' is not supported; use roundrobin, leastconn or source"
            )),
        }
    }

    /// HAProxy's name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Balance::Leastconn => "leastconn",
            Balance::Roundrobin => "roundrobin",
            Balance::Source => "source",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRule {
    /// `path_beg -i <app id>`, as Bamboo's template.
    #[default]
    Path,
    /// `hdr(host) -i <mesos dns id>.<domain>`.
    Vhost,
    /// No route without a rule or labels.
    None,
}

#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    pub default_rule: DefaultRule,
    pub domain: String,
    /// marathon-lb `--group`: when set, only apps in one of these groups get label routes.
    pub groups: Vec<String>,
    /// Proxy every service port as TCP (`--tcp-service-ports`).
    pub tcp_service_ports: bool,
    /// `--mode haproxy`: a stored ACL the proxy cannot compile is still a route, for HAProxy to judge.
    pub pass_through_acls: bool,
    /// The built-in proxy has no HTTPS listener (no `--https-bind`): an HTTPS redirect would send clients to a
    /// port where nothing listens, so it is reported and not made.
    pub no_https: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Route {
    pub app_id: String,
    pub port_index: usize,
    pub source: Source,
    /// The conditions as HAProxy ACL criteria, all of which must hold.
    pub acl: Vec<String>,
    #[serde(skip)]
    pub criteria: Vec<Criterion>,
    pub balance: Balance,
    pub sticky: bool,
    pub redirect_https: bool,
    /// `Strict-Transport-Security` on HTTPS responses (`hsts`, `_USE_HSTS`).
    pub hsts: bool,
    /// Requests reach the backend without this path prefix (`proxypass_path`, `_HTTP_BACKEND_PROXYPASS_PATH`).
    pub proxypass_path: Option<String>,
    /// Location-type response headers are put back under this path (`revproxy_path`,
    /// `_HTTP_BACKEND_REVPROXY_PATH`).
    pub revproxy_path: Option<String>,
    /// `/` answers a 301 to this path (`redirect_path`, `_HTTP_BACKEND_REDIR`).
    pub redirect_root: Option<String>,
    /// Orders routes of equal specificity, larger first (`weight`, `_BACKEND_WEIGHT`).
    pub weight: i64,
    /// Basic auth (`auth`, `_AUTH`); its realm is shown.
    #[serde(serialize_with = "realm")]
    pub auth: Option<std::sync::Arc<BasicAuth>>,
    /// Clients allowed, others get 403 (`allowed_networks`, `_BACKEND_NETWORK_ALLOWED_ACL`).
    pub allowed: Option<Networks>,
    /// An ACL passed through to HAProxy as written (`--mode haproxy`): never matched by the built-in proxy.
    pub opaque: bool,
    #[serde(skip)]
    pub host_rank: HostRank,
    #[serde(skip)]
    pub path_len: usize,
    /// The app's request metrics, looked up once per route table instead of once per request.
    #[serde(skip)]
    pub metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::AppMetrics>>,
}

fn realm<S: serde::Serializer>(
    auth: &Option<std::sync::Arc<BasicAuth>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match auth {
        Some(a) => s.serialize_some(&a.realm),
        None => s.serialize_none(),
    }
}

/// IP addresses and CIDR blocks (an address alone is its own /32 or /128).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Networks(pub Vec<ipnet::IpNet>);

impl Networks {
    /// Space- or comma-separated addresses and blocks.
    pub fn parse(text: &str) -> Result<Networks, String> {
        let nets = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<ipnet::IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("'{t}' is not an IP address or CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err("no network given".into());
        }
        Ok(Networks(nets))
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

impl Route {
    pub fn matches(&self, req: &Request) -> bool {
        !self.opaque && self.criteria.iter().all(|c| c.matches(req))
    }
}

/// A rule or label that could not be compiled: reported. A stored rule's app keeps its label or default route; a
/// label route with a bad guard is not served.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteError {
    pub app_id: String,
    pub error: String,
}

#[derive(Default, Debug)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Default, Debug)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    best: Option<u32>,
}

impl Trie {
    fn insert(&mut self, key: &[u8], route: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut n = 0usize;
        for &b in key {
            n = match self.nodes[n].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[n].children[i].1 as usize,
                Err(i) => {
                    let id = self.nodes.len() as u32;
                    self.nodes.push(TrieNode::default());
                    self.nodes[n].children.insert(i, (b, id));
                    id as usize
                }
            };
        }
        let best = &mut self.nodes[n].best;
        *best = Some(best.map_or(route, |b| b.min(route)));
    }

    /// The best (lowest) route among all prefixes of `key`.
    fn best(&self, key: &[u8], lower: bool) -> Option<u32> {
        let mut n = 0usize;
        let mut best = self.nodes.first()?.best;
        for &b in key {
            let b = if lower { b.to_ascii_lowercase() } else { b };
            match self.nodes[n].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => n = self.nodes[n].children[i].1 as usize,
                Err(_) => break,
            }
            if let Some(r) = self.nodes[n].best {
                best = Some(best.map_or(r, |x| x.min(r)));
            }
        }
        best
    }
}

#[derive(Default, Debug)]
pub struct RouteTable {
    /// In precedence order.
    pub routes: Vec<Route>,
    pub errors: Vec<RouteError>,
    // Fx: hashed on every request; the keys are the operator's, so a client cannot steer collisions into them.
    exact_ci: rustc_hash::FxHashMap<String, u32>,
    exact_cs: rustc_hash::FxHashMap<String, u32>,
    prefix_ci: Trie,
    prefix_cs: Trie,
    /// Routes no index covers, in precedence order.
    generic: Vec<u32>,
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

struct Spec {
    app_id: String,
    port_index: usize,
    source: Source,
    acl: Vec<String>,
    config: BTreeMap<String, String>,
}

fn flag(v: Option<&String>) -> bool {
    v.and_then(|v| crate::boolean::parse(v, crate::boolean::Spelling::Words)) == Some(true)
}

/// A rule's conditions, parsed.
fn criteria(acl: &[String]) -> Result<Vec<Criterion>, String> {
    acl.iter()
        .map(|text| acl::parse(text).map_err(|e| format!("{text}: {e}")))
        .collect()
}

/// One route from its parsed conditions. A bad balance is reported and the default serves; config that guards
/// the route (auth, allowed networks) or rewrites its requests must be right, or the route is not served.
fn compile(
    s: Spec,
    criteria: Vec<Criterion>,
    errors: &mut Vec<RouteError>,
) -> Result<Route, String> {
    let text = |key: &str| {
        s.config
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let auth = match text("auth") {
        Some(a) => Some(std::sync::Arc::new(BasicAuth::parse(a)?)),
        None => None,
    };
    let allowed = match text("allowed_networks") {
        Some(n) => Some(Networks::parse(n).map_err(|e| format!("allowed_networks: {e}"))?),
        None => None,
    };
    let path = |key: &str| -> Result<Option<String>, String> {
        match text(key) {
            None => Ok(None),
            // Plain path characters: the path is written into rendered HAProxy rules (and their regexes) too.
            Some(p)
                if p.starts_with('/')
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._~-".contains(&b)) =>
            {
                Ok(Some(p.to_string()))
            }
            Some(p) => Err(format!("{key} '{p}' is not a path")),
        }
    };
    let proxypass_path = path("proxypass_path")?;
    let revproxy_path = path("revproxy_path")?;
    let redirect_root = path("redirect_path")?;
    let weight = match text("weight") {
        Some(w) => w
            .parse::<i64>()
            .map_err(|_| format!("weight '{w}' is not an integer"))?,
        None => 0,
    };
    let balance = match s.config.get("balance").map(|b| Balance::parse(b)) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            errors.push(RouteError {
                app_id: s.app_id.clone(),
                error: e,
            });
            Balance::default()
        }
        None => Balance::default(),
    };
    Ok(Route {
        host_rank: criteria
            .iter()
            .map(Criterion::host_rank)
            .max()
            .unwrap_or(HostRank::None),
        path_len: criteria
            .iter()
            .map(Criterion::path_prefix_len)
            .max()
            .unwrap_or(0),
        app_id: s.app_id,
        port_index: s.port_index,
        source: s.source,
        acl: s.acl,
        criteria,
        balance,
        sticky: flag(s.config.get("sticky")),
        redirect_https: flag(s.config.get("redirect_https")),
        hsts: flag(s.config.get("hsts")),
        proxypass_path,
        revproxy_path,
        redirect_root,
        weight,
        auth,
        allowed,
        opaque: false,
        metrics: std::sync::OnceLock::new(),
    })
}

impl Route {
    /// The route of a service port's own HTTP listener: every request there goes to that app port. A balance the
    /// proxy does not know is reported and the default serves; a guard that does not parse is the error.
    pub fn for_port(
        app_id: &str,
        port_index: usize,
        config: BTreeMap<String, String>,
        errors: &mut Vec<RouteError>,
    ) -> Result<Route, String> {
        let spec = Spec {
            app_id: app_id.to_string(),
            port_index,
            source: Source::Label,
            acl: Vec::new(),
            config,
        };
        compile(spec, Vec::new(), errors)
    }
}

impl RouteTable {
    /// Compiles the routes for these apps and stored rules.
    pub fn build(
        apps: &Apps,
        services: &crate::rules::ServiceMap,
        opts: &RouteOptions,
    ) -> RouteTable {
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        let mut stored = Vec::new();
        for (id, app) in apps.iter() {
            if let Some(svc) = services.get(id).filter(|s| !s.acl.trim().is_empty()) {
                let spec = Spec {
                    app_id: id.clone(),
                    port_index: 0,
                    source: Source::Api,
                    acl: vec![svc.acl.clone()],
                    config: svc.config.clone().unwrap_or_default(),
                };
                // A rule written by someone else (Bamboo on the same path, an older rattan) that does not compile
                // here does not take the app's route away: it keeps the one it would have without the rule.
                let parsed = match criteria(&spec.acl) {
                    Ok(c) => Ok((c, false)),
                    Err(e) if opts.pass_through_acls => {
                        tracing::debug!(app = %id, error = %e, "ACL passed to HAProxy as written");
                        Ok((Vec::new(), true))
                    }
                    Err(e) => Err(e),
                };
                match parsed.and_then(|(c, opaque)| {
                    compile(spec, c, &mut errors).map(|r| Route { opaque, ..r })
                }) {
                    Ok(route) => {
                        stored.push(route);
                        continue;
                    }
                    Err(error) => errors.push(RouteError {
                        app_id: id.clone(),
                        error: format!(
                            "stored rule not used, the app keeps its label or default route: {error}"
                        ),
                    }),
                }
            }
            let from_labels = labels::routes(app, &opts.groups);
            if !from_labels.is_empty() {
                for l in from_labels {
                    specs.push(Spec {
                        app_id: id.clone(),
                        port_index: l.port_index,
                        source: Source::Label,
                        acl: l.acl,
                        config: l.config,
                    });
                }
                continue;
            }
            if labels::has_routing_labels(app) {
                // Labels said "not this app" (disabled, other group, TCP only): no default route either.
                continue;
            }
            let acl = match opts.default_rule {
                DefaultRule::Path => format!("path_beg -i {id}"),
                DefaultRule::Vhost if !opts.domain.is_empty() => {
                    format!(
                        "hdr(host) -i {}.{}",
                        app.mesos_dns_id,
                        opts.domain.trim_start_matches('.')
                    )
                }
                DefaultRule::Vhost | DefaultRule::None => continue,
            };
            specs.push(Spec {
                app_id: id.clone(),
                port_index: 0,
                source: Source::Default,
                acl: vec![acl],
                config: BTreeMap::new(),
            });
        }

        let mut routes = stored;
        routes.reserve(specs.len());
        for s in specs {
            let app_id = s.app_id.clone();
            match criteria(&s.acl).and_then(|c| compile(s, c, &mut errors)) {
                Ok(r) => routes.push(r),
                Err(error) => errors.push(RouteError { app_id, error }),
            }
        }
        if opts.no_https {
            for r in routes.iter_mut().filter(|r| r.redirect_https) {
                r.redirect_https = false;
                errors.push(RouteError {
                    app_id: r.app_id.clone(),
                    error: "redirect_https is set but this proxy has no HTTPS listener (--https-bind): served over HTTP, not redirected".into(),
                });
            }
        }
        routes.sort_by(|a, b| {
            (
                Reverse(a.host_rank),
                Reverse(a.path_len),
                Reverse(a.weight),
                &a.app_id,
                a.port_index,
            )
                .cmp(&(
                    Reverse(b.host_rank),
                    Reverse(b.path_len),
                    Reverse(b.weight),
                    &b.app_id,
                    b.port_index,
                ))
        });

        let mut t = RouteTable {
            errors,
            ..RouteTable::default()
        };
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            let single = (r.criteria.len() == 1).then(|| &r.criteria[0]);
            if let Some(hosts) = single.and_then(Criterion::exact_hosts) {
                let map = if single.is_some_and(|c| c.ignore_case) {
                    &mut t.exact_ci
                } else {
                    &mut t.exact_cs
                };
                for h in hosts {
                    map.entry(h.clone()).or_insert(i);
                }
            } else if let Some(prefixes) = single.and_then(Criterion::path_prefixes) {
                let ci = single.is_some_and(|c| c.ignore_case);
                let trie = if ci {
                    &mut t.prefix_ci
                } else {
                    &mut t.prefix_cs
                };
                for p in prefixes {
                    trie.insert(p.as_bytes(), i);
                }
            } else {
                t.generic.push(i);
            }
        }
        t.routes = routes;
        t
    }

    /// The route with the highest precedence whose conditions all hold.
    pub fn find(&self, req: &Request) -> Option<&Route> {
        let mut best: Option<u32> = None;
        if let Some(host) = req.host {
            best = min_opt(best, self.exact_cs.get(host).copied());
            if !self.exact_ci.is_empty() {
                let hit = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.exact_ci.get(&host.to_ascii_lowercase()).copied()
                } else {
                    self.exact_ci.get(host).copied()
                };
                best = min_opt(best, hit);
            }
        }
        best = min_opt(best, self.prefix_ci.best(req.path.as_bytes(), true));
        best = min_opt(best, self.prefix_cs.best(req.path.as_bytes(), false));
        for &i in &self.generic {
            if best.is_some_and(|b| b < i) {
                break;
            }
            if self.routes[i as usize].matches(req) {
                best = Some(i);
                break;
            }
        }
        best.map(|i| &self.routes[i as usize])
    }

    /// The app's route, if any (the one for port 0 first).
    pub fn for_app<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.app_id == app_id)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::discovery::{build_view, Policy};
    use crate::marathon::model::parse_apps;
    use crate::rules::{Service, ServiceMap};
    use std::sync::Arc;

    /// Apps as discovery makes them of a `/v2/apps` body.
    pub(in crate::rules) fn apps(json: &str) -> Apps {
        parse_apps(json.as_bytes())
            .unwrap()
            .apps
            .iter()
            .map(|a| {
                let v = build_view(a, &a.tasks, &Default::default(), Policy::default());
                (v.id.clone(), Arc::new(v))
            })
            .collect()
    }

    fn svc(id: &str, acl: &str) -> (String, Service) {
        (
            id.to_string(),
            Service {
                id: id.into(),
                acl: acl.into(),
                config: Some([("Acl".to_string(), acl.to_string())].into()),
            },
        )
    }

    fn find<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        let h = http::HeaderMap::new();
        t.find(&Request::plain(path, Some(host), (&h).into()))
            .map(|r| r.app_id.as_str())
    }

    #[test]
    fn precedence_exact_host_then_suffix_then_longest_path_then_id() {
        let a = apps(
            r#"{"apps":[{"id":"/exact"},{"id":"/suffix"},{"id":"/short"},{"id":"/long"},{"id":"/b-tie"},{"id":"/a-tie"},{"id":"/hostpath"}]}"#,
        );
        let s: ServiceMap = [
            svc("/exact", "hdr(host) -i api.example.com"),
            svc("/suffix", "hdr_dom(host) -i example.com"),
            svc("/short", "path_beg /api"),
            svc("/long", "path_beg /api/v2"),
            svc("/b-tie", "path_beg /same"),
            svc("/a-tie", "path_beg /same"),
        ]
        .into_iter()
        .collect();
        let t = RouteTable::build(&a, &s, &RouteOptions::default());
        assert_eq!(find(&t, "api.example.com", "/api/v2/x"), Some("/exact"));
        assert_eq!(find(&t, "www.example.com", "/api/v2/x"), Some("/suffix"));
        assert_eq!(find(&t, "other.org", "/api/v2/x"), Some("/long"));
        assert_eq!(find(&t, "other.org", "/api/v1"), Some("/short"));
        assert_eq!(find(&t, "other.org", "/same"), Some("/a-tie"));
        // /hostpath has no rule: Bamboo's default path_beg -i <id>.
        assert_eq!(find(&t, "other.org", "/HOSTPATH/x"), Some("/hostpath"));
        assert_eq!(find(&t, "other.org", "/nothing"), None);
        let order: Vec<&str> = t.routes.iter().map(|r| r.app_id.as_str()).collect();
        assert_eq!(
            order,
            vec![
                "/exact",
                "/suffix",
                "/hostpath",
                "/long",
                "/a-tie",
                "/b-tie",
                "/short"
            ]
        );
    }

    #[test]
    fn labels_then_default_and_bad_rules_reported() {
        let a = apps(
            r#"{"apps":[
              {"id":"/lb","labels":{"HAPROXY_GROUP":"external","HAPROXY_0_VHOST":"lb.example.com,www.lb.example.com","HAPROXY_0_PATH":"/shop","HAPROXY_0_BALANCE":"roundrobin"}},
              {"id":"/internal","labels":{"HAPROXY_GROUP":"internal","HAPROXY_0_VHOST":"int.example.com"}},
              {"id":"/off","labels":{"HAPROXY_0_ENABLED":"false"}},
              {"id":"/bad"}
            ]}"#,
        );
        let s: ServiceMap = [svc("/bad", "path_beg")].into_iter().collect();
        let opts = RouteOptions {
            groups: vec!["external".into()],
            ..RouteOptions::default()
        };
        let t = RouteTable::build(&a, &s, &opts);
        assert_eq!(find(&t, "www.lb.example.com", "/shop/cart"), Some("/lb"));
        assert_eq!(find(&t, "lb.example.com", "/other"), None, "vhost AND path");
        assert_eq!(find(&t, "int.example.com", "/"), None, "other group");
        assert_eq!(
            find(&t, "x", "/internal"),
            None,
            "group-filtered apps get no default route"
        );
        assert_eq!(find(&t, "x", "/off"), None);
        assert_eq!(t.errors.len(), 1);
        assert_eq!(t.errors[0].app_id, "/bad");
        // The stored rule does not compile: the app keeps Bamboo's default route meanwhile.
        assert_eq!(find(&t, "x", "/bad/x"), Some("/bad"));
        assert!(t.errors[0]
            .error
            .contains("keeps its label or default route"));
        let lb = t.for_app("/lb").next().unwrap();
        assert_eq!(lb.source, Source::Label);
        assert_eq!(lb.balance, Balance::Roundrobin);
    }

    /// A stored rule's config turns on what marathon-lb's labels do (the e2e tests drive them by label).
    #[test]
    fn rule_config_sets_redirect_https_and_sticky() {
        let a = apps(r#"{"apps":[{"id":"/on"},{"id":"/off"}]}"#);
        let (id, mut on) = svc("/on", "hdr(host) -i on.example.com");
        if let Some(c) = on.config.as_mut() {
            c.insert("redirect_https".into(), "true".into());
            c.insert("sticky".into(), "true".into());
        }
        let s: ServiceMap = [(id, on), svc("/off", "hdr(host) -i off.example.com")]
            .into_iter()
            .collect();
        let t = RouteTable::build(&a, &s, &RouteOptions::default());
        let flags = |app: &str| {
            let r = t.for_app(app).next().unwrap();
            (r.source, r.redirect_https, r.sticky)
        };
        assert_eq!(flags("/on"), (Source::Api, true, true));
        assert_eq!(flags("/off"), (Source::Api, false, false));
        // No HTTPS listener: the redirect would lead nowhere; reported, and the route serves over HTTP.
        let t = RouteTable::build(
            &a,
            &s,
            &RouteOptions {
                no_https: true,
                ..RouteOptions::default()
            },
        );
        let r = t.for_app("/on").next().unwrap();
        assert_eq!((r.redirect_https, r.sticky), (false, true));
        assert!(
            t.errors
                .iter()
                .any(|e| e.app_id == "/on" && e.error.contains("--https-bind")),
            "{:?}",
            t.errors
        );
    }

    #[test]
    fn index_agrees_with_a_linear_scan() {
        let mut list = Vec::new();
        let mut s = ServiceMap::new();
        for i in 0..200 {
            list.push(format!("{{\"id\":\"/app{i}\"}}"));
            let acl = match i % 5 {
                0 => format!("hdr(host) -i app{i}.example.com"),
                1 => format!("path_beg /p{i}"),
                2 => format!("path_beg -i /P{}", i / 2),
                3 => format!("path_reg ^/r{i}"),
                _ => continue,
            };
            s.insert(format!("/app{i}"), svc(&format!("/app{i}"), &acl).1);
        }
        let a = apps(&format!("{{\"apps\":[{}]}}", list.join(",")));
        let t = RouteTable::build(&a, &s, &RouteOptions::default());
        let h = http::HeaderMap::new();
        for host in ["app0.example.com", "APP5.example.com", "nope"] {
            for path in [
                "/p1", "/p11/x", "/P5", "/p50", "/r3x", "/app4", "/app44/y", "/", "/app1",
            ] {
                let req = Request::plain(path, Some(host), (&h).into());
                let linear = t.routes.iter().find(|r| r.matches(&req)).map(|r| &r.app_id);
                assert_eq!(t.find(&req).map(|r| &r.app_id), linear, "{host} {path}");
            }
        }
    }
}
