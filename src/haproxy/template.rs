//! Snapshot -> haproxy.cfg through a Go text/template (gtmpl), with Bamboo's data model and functions so existing
//! Bamboo templates render unchanged, plus rattan's extras: the routes in precedence order, one backend per routed
//! app port, and the TCP services.

use crate::apps::AppView;
use crate::rules::table::{Balance, Source};
use crate::snapshot::Snapshot;
use gtmpl::{Func, Template};
use gtmpl_value::{FuncError, Number, Value};
use std::collections::HashMap;

/// Where the listeners of the rendered config bind (from rattan's own settings, so one config drives both).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub http_bind: String,
    pub https_bind: Option<String>,
    pub tls_cert_dir: Option<String>,
    pub tcp_bind_address: String,
    pub stats_bind: Option<String>,
}

pub struct Renderer {
    tmpl: Template,
    /// Whether the template mentions Bamboo's `Apps` / `Services` at all: building them for 10,000 apps is a third
    /// of a render, and rattan's own template does not use them.
    uses_apps: bool,
    uses_services: bool,
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn n(v: impl Into<Number>) -> Value {
    Value::Number(v.into())
}

fn obj(fields: Vec<(&str, Value)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn string_map<'a>(m: impl Iterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Map(m.map(|(k, v)| (k.clone(), s(v.as_str()))).collect())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn args<'a>(name: &str, a: &'a [Value], want: usize) -> Result<&'a [Value], FuncError> {
    if a.len() != want {
        return Err(FuncError::ExactlyXArgs(name.into(), want));
    }
    Ok(a)
}

fn has_key(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("hasKey", a, 2)?;
    Ok(Value::Bool(match &a[0] {
        Value::Map(m) | Value::Object(m) => m.contains_key(&text(&a[1])),
        _ => false,
    }))
}

fn zero_service() -> Value {
    obj(vec![
        ("Id", s("")),
        ("Acl", s("")),
        ("Config", Value::Map(HashMap::new())),
    ])
}

fn get_service(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("getService", a, 2)?;
    Ok(match &a[0] {
        Value::Map(m) | Value::Object(m) => {
            m.get(&text(&a[1])).cloned().unwrap_or_else(zero_service)
        }
        _ => zero_service(),
    })
}

fn split(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("Split", a, 2)?;
    let (hay, sep) = (text(&a[0]), text(&a[1]));
    // Go's strings.Split: an empty separator splits into characters.
    let parts: Vec<Value> = if sep.is_empty() {
        hay.chars().map(|c| s(c.to_string())).collect()
    } else {
        hay.split(sep.as_str()).map(s).collect()
    };
    Ok(Value::Array(parts))
}

fn contains(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("Contains", a, 2)?;
    Ok(Value::Bool(text(&a[0]).contains(&text(&a[1]))))
}

fn join(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("Join", a, 2)?;
    let items: Vec<String> = match &a[0] {
        Value::Array(v) => v.iter().map(text).collect(),
        Value::Nil | Value::NoValue => Vec::new(),
        other => return Err(FuncError::Generic(format!("Join: {other} is not a list"))),
    };
    Ok(s(items.join(&text(&a[1]))))
}

fn replace(a: &[Value]) -> Result<Value, FuncError> {
    let a = args("Replace", a, 4)?;
    let count = match &a[3] {
        Value::Number(x) => x.as_i64(),
        other => text(other).parse().ok(),
    }
    .ok_or_else(|| FuncError::Generic("Replace: n must be an integer".into()))?;
    let (hay, old, new) = (text(&a[0]), text(&a[1]), text(&a[2]));
    Ok(s(if count < 0 {
        hay.replace(&old, &new)
    } else {
        hay.replacen(&old, &new, count as usize)
    }))
}

fn to_upper(a: &[Value]) -> Result<Value, FuncError> {
    Ok(s(text(&args("ToUpper", a, 1)?[0]).to_uppercase()))
}

fn to_lower(a: &[Value]) -> Result<Value, FuncError> {
    Ok(s(text(&args("ToLower", a, 1)?[0]).to_lowercase()))
}

/// Go's strconv.Atoi: an error aborts the render, as in Bamboo.
fn to_int(a: &[Value]) -> Result<Value, FuncError> {
    let v = text(&args("ToInt", a, 1)?[0]);
    v.trim_start_matches('+')
        .parse::<i64>()
        .ok()
        .filter(|_| !v.starts_with("+-"))
        .map(n)
        .ok_or_else(|| FuncError::Generic(format!("strconv.Atoi: parsing \"{v}\": invalid syntax")))
}

fn html(a: &[Value]) -> Result<Value, FuncError> {
    let mut out = String::new();
    for c in a.iter().map(text).collect::<String>().chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Ok(s(out))
}

fn js(a: &[Value]) -> Result<Value, FuncError> {
    let mut out = String::new();
    for c in a.iter().map(text).collect::<String>().chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(s(out))
}

const FUNCS: &[(&str, Func)] = &[
    ("hasKey", has_key),
    ("getService", get_service),
    ("Split", split),
    ("Contains", contains),
    ("Join", join),
    ("Replace", replace),
    ("ToUpper", to_upper),
    ("ToLower", to_lower),
    ("ToInt", to_int),
    ("html", html),
    ("js", js),
];

fn app_value(a: &AppView) -> Value {
    let state = crate::bamboo::app::bamboo_app(a);
    let health_checks = state
        .health_checks
        .iter()
        .map(|h| {
            obj(vec![
                ("Protocol", s(h.protocol)),
                ("Path", s(h.path)),
                ("PortIndex", n(h.port_index)),
            ])
        })
        .collect();
    let tasks = state
        .tasks
        .iter()
        .map(|t| {
            obj(vec![
                ("Id", s(t.id)),
                ("Host", s(t.host)),
                ("Port", n(t.port)),
                (
                    "Ports",
                    Value::Array(t.ports.iter().map(|p| n(*p)).collect()),
                ),
                ("Alive", Value::Bool(t.alive)),
                ("State", s(t.state)),
                ("Ready", Value::Bool(t.ready)),
            ])
        })
        .collect();
    let ports = match &state.ip_address.discovery.ports {
        Some(ps) => Value::Array(
            ps.iter()
                .map(|p| {
                    obj(vec![
                        ("Number", n(p.number)),
                        ("Name", s(p.name)),
                        ("Protocol", s(p.protocol)),
                    ])
                })
                .collect(),
        ),
        None => Value::Nil,
    };
    obj(vec![
        ("Id", s(state.id)),
        ("MesosDnsId", s(state.mesos_dns_id)),
        ("EscapedId", s(state.escaped_id)),
        ("HealthCheckPath", s(state.health_check_path)),
        ("HealthCheckProtocol", s(state.health_check_protocol)),
        ("HealthChecks", Value::Array(health_checks)),
        ("ReadinessCheckPath", s(state.readiness_check_path)),
        ("Tasks", Value::Array(tasks)),
        ("ServicePort", n(state.service_port)),
        (
            "ServicePorts",
            match state.service_ports {
                Some(p) => Value::Array(p.iter().map(|x| n(*x)).collect()),
                None => Value::Nil,
            },
        ),
        ("Env", string_map(a.env.iter())),
        ("Labels", string_map(a.labels.iter())),
        (
            "SplitId",
            Value::Array(a.split_id.iter().map(|x| s(x.as_str())).collect()),
        ),
        (
            "IpAddress",
            obj(vec![("Discovery", obj(vec![("Ports", ports)]))]),
        ),
    ])
}

fn balance(b: Balance) -> Value {
    s(b.name())
}

/// A route's basic auth for a rendered `userlist` (named after `owner`): `{Realm, Userlist, Users: [{Name, Hash}]}`,
/// or nothing.
fn auth_value(r: &crate::rules::table::Route, owner: &str) -> Value {
    let Some(a) = &r.auth else {
        return Value::Nil;
    };
    obj(vec![
        ("Realm", s(a.realm.as_str())),
        ("Userlist", s(format!("users-{owner}"))),
        (
            "Users",
            Value::Array(
                a.users()
                    .map(|(u, h)| obj(vec![("Name", s(u)), ("Hash", s(h))]))
                    .collect(),
            ),
        ),
    ])
}

/// Allowed networks as `src` values, space-separated; empty when all are allowed.
fn allowed_value(nets: Option<&crate::rules::table::Networks>) -> Value {
    s(nets
        .map(|n| {
            n.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default())
}

/// HAProxy names may not hold `/`; Bamboo's escaped id (`::grp::app`) is what existing configs use.
fn backend_name(app: &AppView, port_index: usize) -> String {
    match port_index {
        0 => format!("{}-cluster", app.escaped_id),
        n => format!("{}-cluster-{n}", app.escaped_id),
    }
}

/// One `server` line's data per routable backend of the app port, named as Bamboo names them; then the draining
/// ones (`Drain`: rendered `disabled`, which HAProxy shows as `MAINT`, what marathon-lb's zdd.py waits for).
fn servers(app: &AppView, port_index: usize) -> Value {
    let server = |e: &crate::marathon::address::Endpoint, drain: bool| {
        obj(vec![
            (
                "Name",
                s(format!("{}-{}-{}", app.escaped_id, e.host, e.port)),
            ),
            ("Host", s(&*e.host)),
            ("Port", n(e.port)),
            ("Drain", Value::Bool(drain)),
        ])
    };
    Value::Array(
        app.healthy_backends(port_index)
            .iter()
            .map(|e| server(e, false))
            .chain(app.draining_backends(port_index).map(|e| server(e, true)))
            .collect(),
    )
}

/// The port whose health check stands for `port_index` (`_BACKEND_HEALTHCHECK_PORT_INDEX`).
fn checked(app: &AppView, port_index: usize) -> usize {
    crate::rules::labels::health_port(app, port_index).unwrap_or(port_index)
}

fn health_check(app: &AppView, port_index: usize) -> Value {
    app.health_checks
        .iter()
        .find(|h| {
            h.port_index as usize == port_index
                && matches!(
                    h.protocol.as_str(),
                    "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
                )
                && !h.path.is_empty()
        })
        .map(|h| {
            Value::Map(
                [
                    ("Path".to_string(), s(h.path.as_str())),
                    (
                        "Protocol".to_string(),
                        s(h.protocol.trim_start_matches("MESOS_")),
                    ),
                ]
                .into(),
            )
        })
        .unwrap_or_else(|| Value::Map(HashMap::new()))
}

/// The template's `.`: Bamboo's `Apps` and `Services`, and rattan's `Routes`, `Backends`, `TcpServices`,
/// `Settings`.
pub fn data(snap: &Snapshot, extra: &Extra) -> Value {
    data_with(snap, extra, true, true)
}

fn data_with(snap: &Snapshot, extra: &Extra, with_apps: bool, with_services: bool) -> Value {
    let apps: Vec<Value> = if with_apps {
        snap.apps.values().map(|a| app_value(a)).collect()
    } else {
        Vec::new()
    };
    let services = if !with_services {
        Value::Map(HashMap::new())
    } else {
        Value::Map(
            snap.rules
                .services
                .iter()
                .map(|(id, svc)| {
                    let config = svc
                        .config
                        .as_ref()
                        .map(|c| string_map(c.iter()))
                        .unwrap_or_else(|| Value::Map(HashMap::new()));
                    (
                        id.clone(),
                        obj(vec![
                            ("Id", s(svc.id.as_str())),
                            ("Acl", s(svc.acl.as_str())),
                            ("Config", config),
                        ]),
                    )
                })
                .collect(),
        )
    };
    let mut routes = Vec::new();
    let mut backends = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in snap.routes.routes.iter().enumerate() {
        let Some(app) = snap.apps.get(&r.app_id) else {
            continue;
        };
        let backend = backend_name(app, r.port_index);
        routes.push(obj(vec![
            ("Name", s(format!("route-{i}"))),
            ("AppId", s(r.app_id.as_str())),
            ("EscapedId", s(app.escaped_id.as_str())),
            ("PortIndex", n(r.port_index as u64)),
            (
                "Source",
                s(match r.source {
                    Source::Api => "api",
                    Source::Label => "labels",
                    Source::Default => "default",
                }),
            ),
            (
                "Acl",
                Value::Array(r.acl.iter().map(|c| s(c.as_str())).collect()),
            ),
            ("Backend", s(backend.as_str())),
            ("Balance", balance(r.balance)),
            ("Sticky", Value::Bool(r.sticky)),
            ("RedirectHttps", Value::Bool(r.redirect_https)),
            ("Auth", auth_value(r, &format!("route-{i}"))),
            ("Allowed", allowed_value(r.allowed.as_ref())),
            (
                "RedirectPath",
                s(r.redirect_root.as_deref().unwrap_or_default()),
            ),
            ("Weight", Value::Number(r.weight.into())),
        ]));
        if seen.insert(backend.clone()) {
            backends.push(obj(vec![
                ("Name", s(backend)),
                ("AppId", s(r.app_id.as_str())),
                ("EscapedId", s(app.escaped_id.as_str())),
                ("PortIndex", n(r.port_index as u64)),
                ("Balance", balance(r.balance)),
                ("Sticky", Value::Bool(r.sticky)),
                ("HealthCheck", health_check(app, checked(app, r.port_index))),
                ("Servers", servers(app, r.port_index)),
                ("Hsts", Value::Bool(r.hsts)),
                (
                    "ProxypassRegex",
                    s(r.proxypass_path
                        .as_deref()
                        .map(|p| regex::escape(p.trim_end_matches('/')))
                        .unwrap_or_default()),
                ),
                (
                    "RevproxyPath",
                    s(r.revproxy_path
                        .as_deref()
                        .map(|p| p.trim_end_matches('/'))
                        .unwrap_or_default()),
                ),
                (
                    "RevproxyRegex",
                    s(r.revproxy_path
                        .as_deref()
                        .map(|p| regex::escape(p.trim_end_matches('/')))
                        .unwrap_or_default()),
                ),
                // The route's guards, applied in its backend: only to the requests it takes.
                ("Auth", auth_value(r, &format!("route-{i}"))),
                ("Allowed", allowed_value(r.allowed.as_ref())),
                ("RedirectHttps", Value::Bool(r.redirect_https)),
                (
                    "RedirectPath",
                    s(r.redirect_root.as_deref().unwrap_or_default()),
                ),
            ]));
        }
    }
    let http_ports: Vec<Value> = snap
        .ports
        .services
        .iter()
        .filter_map(|t| {
            let route = t.route.as_deref()?;
            let app = snap.apps.get(&t.app_id)?;
            let name = format!("{}-http-{}", app.escaped_id, t.port);
            Some(obj(vec![
                ("Name", s(name.as_str())),
                ("Port", n(t.port)),
                (
                    "Bind",
                    s(t.bind
                        .map_or_else(|| extra.tcp_bind_address.clone(), |b| b.to_string())),
                ),
                ("AppId", s(t.app_id.as_str())),
                ("EscapedId", s(app.escaped_id.as_str())),
                ("PortIndex", n(t.port_index as u64)),
                ("Balance", balance(route.balance)),
                ("Sticky", Value::Bool(route.sticky)),
                ("Hsts", Value::Bool(route.hsts)),
                ("Auth", auth_value(route, &name)),
                ("Allowed", allowed_value(route.allowed.as_ref())),
                ("HealthCheck", health_check(app, checked(app, t.port_index))),
                ("Servers", servers(app, t.port_index)),
            ]))
        })
        .collect();
    let tcp: Vec<Value> = snap
        .ports
        .tcp()
        .filter_map(|t| {
            let app = snap.apps.get(&t.app_id)?;
            Some(obj(vec![
                ("Name", s(format!("{}-tcp-{}", app.escaped_id, t.port))),
                ("Port", n(t.port)),
                ("AppId", s(t.app_id.as_str())),
                ("EscapedId", s(app.escaped_id.as_str())),
                ("PortIndex", n(t.port_index as u64)),
                ("Balance", balance(t.balance)),
                (
                    "Bind",
                    s(t.bind
                        .map_or_else(|| extra.tcp_bind_address.clone(), |b| b.to_string())),
                ),
                ("Allowed", allowed_value(t.allowed.as_ref())),
                ("HealthCheck", health_check(app, checked(app, t.port_index))),
                ("Servers", servers(app, t.port_index)),
            ]))
        })
        .collect();
    let opt = |v: &Option<String>| v.as_deref().map(s).unwrap_or_else(|| s(""));
    obj(vec![
        ("Apps", Value::Array(apps)),
        ("Services", services),
        ("Routes", Value::Array(routes)),
        ("Backends", Value::Array(backends)),
        ("TcpServices", Value::Array(tcp)),
        ("HttpPortServices", Value::Array(http_ports)),
        (
            "Settings",
            obj(vec![
                ("HttpBind", s(extra.http_bind.as_str())),
                ("HttpsBind", opt(&extra.https_bind)),
                ("TlsCertDir", opt(&extra.tls_cert_dir)),
                ("TcpBindAddress", s(extra.tcp_bind_address.as_str())),
                ("StatsBind", opt(&extra.stats_bind)),
            ]),
        ),
    ])
}

/// Free-form maps of an app that routing never reads: a value with a control character loses just its key.
const FREE_FORM: [&str; 2] = ["Env", "Labels"];

/// Takes every control character out of the template's data before a template sees it, whatever its source
/// (Marathon, ZooKeeper written by others, labels): an app, rule, route or backend holding one anywhere is left
/// out whole (half of one could route more than it should), an `Env`/`Labels` value only loses its key.
fn scrub(data: &mut Value) {
    let Value::Object(top) = data else { return };
    for (section, v) in top.iter_mut() {
        match v {
            Value::Array(items) => items.retain_mut(|item| keep(section, item)),
            Value::Map(items) => items.retain(|_, item| keep(section, item)),
            _ => {}
        }
    }
}

/// Scrubs the free-form maps of `item`, then whether it is clean (reported when not).
fn keep(section: &str, item: &mut Value) -> bool {
    if let Value::Object(fields) = item {
        for name in FREE_FORM {
            if let Some(Value::Map(m)) = fields.get_mut(name) {
                m.retain(|k, v| {
                    let clean = crate::rules::control_char(k).is_none() && !tainted(v);
                    if !clean {
                        tracing::warn!(key = %k.escape_debug(), "haproxy config: a {name} value with a control character is left out");
                    }
                    clean
                });
            }
        }
    }
    if tainted(item) {
        let id = match item {
            Value::Object(f) => f
                .get("Id")
                .or_else(|| f.get("AppId"))
                .or_else(|| f.get("Name"))
                .map(text)
                .unwrap_or_default(),
            _ => String::new(),
        };
        tracing::warn!(section, id = %id.escape_debug(), "haproxy config: an entry with a control character is left out");
        return false;
    }
    true
}

fn tainted(v: &Value) -> bool {
    match v {
        Value::String(s) => crate::rules::control_char(s).is_some(),
        Value::Object(m) | Value::Map(m) => m
            .iter()
            .any(|(k, v)| crate::rules::control_char(k).is_some() || tainted(v)),
        Value::Array(a) => a.iter().any(tainted),
        _ => false,
    }
}

/// Whether `word` appears inside an action (`{{ … }}`, comments excluded). Errs towards yes: it only decides
/// whether data is built.
fn actions_mention(text: &str, word: &str) -> bool {
    text.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(action, _)| action))
        .filter(|a| !a.trim_start_matches('-').trim_start().starts_with("/*"))
        .any(|a| a.contains(word))
}

impl Renderer {
    /// Parses a template; `name` appears in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Renderer, String> {
        let mut tmpl = Template::with_name(name);
        tmpl.add_funcs(FUNCS);
        // A parser panic on some input must not take the process down (Bamboo's did).
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tmpl.parse(text).map_err(|e| e.to_string())
        }))
        .map_err(|_| format!("template {name}: the template parser failed on this input"))?;
        parsed.map_err(|e| format!("template {name} does not parse: {e}"))?;
        Ok(Renderer {
            tmpl,
            uses_apps: actions_mention(text, "Apps"),
            uses_services: actions_mention(text, "Services"),
        })
    }

    pub fn render_value(&self, data: Value) -> Result<String, String> {
        let ctx = gtmpl::Context::from(data);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.tmpl.render(&ctx).map_err(|e| e.to_string())
        }));
        out.map_err(|_| "template execution failed (internal error)".to_string())?
            .map_err(|e| format!("template execution failed: {e}"))
    }

    pub fn render(&self, snap: &Snapshot, extra: &Extra) -> Result<String, String> {
        let mut data = data_with(snap, extra, self.uses_apps, self.uses_services);
        scrub(&mut data);
        self.render_value(data)
    }
}

/// Renders a command template (`haproxy -c -f {{.}}`) with `.` = the path, as Bamboo does.
pub fn command(cmd: &str, path: &str) -> Result<String, String> {
    let r = Renderer::parse("command", cmd)?;
    r.render_value(s(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::DEFAULT_TEMPLATE as DEFAULT;

    fn render(t: &str, data: Value) -> Result<String, String> {
        Renderer::parse("t", t)?.render_value(data)
    }

    #[test]
    fn bamboo_functions() {
        let services = Value::Map(
            [(
                "/a".to_string(),
                obj(vec![
                    ("Id", s("/a")),
                    ("Acl", s("path_beg /a")),
                    ("Config", Value::Map(HashMap::new())),
                ]),
            )]
            .into(),
        );
        let d = obj(vec![
            ("Services", services),
            ("Env", Value::Map([("B".to_string(), s("2"))].into())),
        ]);
        let t = r#"{{ if hasKey .Services "/a" }}{{ (getService .Services "/a").Acl }}{{ end }}|{{ hasKey .Services "/b" }}|{{ (getService .Services "/b").Acl }}|{{ Join (Split "a,b,c" ",") "-" }}|{{ Contains "abc" "bc" }}|{{ Replace "a.b.c" "." "_" -1 }}|{{ Replace "a.b.c" "." "_" 1 }}|{{ ToUpper "ab" }}{{ ToLower "CD" }}|{{ ToInt "42" }}|{{ .Env.MISSING }}|{{ index .Env "B" }}|{{ html "<a&b>" }}|{{ len (Split "x y" " ") }}"#;
        assert_eq!(
            render(t, d.clone()).unwrap(),
            "path_beg /a|false||a-b-c|true|a_b_c|a_b.c|ABcd|42||2|&lt;a&amp;b&gt;|2"
        );
        // ToInt on a non-number aborts the render with an error, not a panic.
        let e = render("{{ ToInt \"x1\" }}", d.clone()).unwrap_err();
        assert!(e.contains("invalid syntax"), "{e}");
        assert!(Renderer::parse("t", "{{ if }}").is_err());
        assert!(render("{{ nosuchfunc }}", d).is_err());
    }

    #[test]
    fn range_else_runs_only_when_empty() {
        let d = obj(vec![
            ("A", Value::Array(vec![s("x")])),
            ("E", Value::Array(vec![])),
        ]);
        let t = "{{ range .A }}[{{ . }}]{{ else }}none{{ end }} {{ range $v := .E }}[{{ $v }}]{{ else }}none{{ end }}";
        assert_eq!(render(t, d).unwrap(), "[x] none");
    }

    #[test]
    fn ranges_over_maps_in_key_order() {
        let m: HashMap<String, Value> = (0..50)
            .map(|i| (format!("k{i:02}"), s(i.to_string())))
            .collect();
        let out = render("{{ range $k, $v := . }}{{ $k }} {{ end }}", Value::Map(m)).unwrap();
        let want: Vec<String> = (0..50).map(|i| format!("k{i:02}")).collect();
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), want);
    }

    #[test]
    fn data_is_built_only_when_used() {
        assert!(
            !actions_mention(DEFAULT, "Apps"),
            "rattan's template does not need Bamboo's Apps"
        );
        assert!(actions_mention("{{ range .Apps }}{{ end }}", "Apps"));
        assert!(actions_mention("{{ index $ \"Apps\" }}", "Apps"));
        assert!(!actions_mention("# .Apps {{/* .Apps */}}", "Apps"));
    }

    #[test]
    fn command_template() {
        assert_eq!(
            command("haproxy -c -f {{.}}", "/tmp/x.cfg").unwrap(),
            "haproxy -c -f /tmp/x.cfg"
        );
    }
}
