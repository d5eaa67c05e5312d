//! marathon-lb's stats port (`--stats-bind`; `:9090` there), for what watches it — above all marathon-lb's
//! deploy script `zdd.py`, which polls `/_haproxy_getpids` and `/haproxy?stats;csv` until old tasks have drained.
//!
//! The CSV is HAProxy's (management guide, "CSV format"): its generic columns, in its order, one FRONTEND row per
//! app port with its own listener, one row per server and one BACKEND row, named as marathon-lb names them
//! (`<app id>_<port>`, servers `<ip>_<port>` or `<host>_<ip>_<port>`). A draining server is `MAINT`, as the
//! `disabled` server marathon-lb renders for it shows in HAProxy, because that is what `zdd.py` waits for;
//! `scur` is what is in flight to it. The module columns after HAProxy's `-` are left out: `zdd.py` reads the
//! header into Python field names, and `-` is not one.

use super::{not_found, respond, serve_with, ApiLimits, Resp};
use crate::apps::AppView;
use crate::proxy::balance::Balancer;
use crate::rules::ports::PortMode;
use crate::rules::table::Balance;
use crate::snapshot::{Publisher, Snapshot};
use hyper::{Request, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// HAProxy 2.6's generic stats columns, through `agg_check_status`.
const COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
];

/// A resolution of a task host that is a name, for the server names; bounded so a slow resolver cannot hold the
/// page.
const RESOLVE_FOR: Duration = Duration::from_secs(1);

struct Stats {
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
}

/// Binds `--stats-bind` and serves it in the background.
pub async fn serve(
    bind: SocketAddr,
    publisher: Arc<Publisher>,
    balancer: Arc<Balancer>,
    limits: ApiLimits,
) -> std::io::Result<SocketAddr> {
    let stats = Arc::new(Stats {
        publisher,
        balancer,
    });
    serve_with(bind, limits, move |req| answer(stats.clone(), req)).await
}

async fn answer(stats: Arc<Stats>, req: Request<hyper::body::Incoming>) -> Resp {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return not_found();
    }
    match (req.uri().path(), req.uri().query()) {
        ("/_haproxy_health_check", _) => respond(
            StatusCode::OK,
            "text/html",
            "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n",
        ),
        // One process: a deploy script waiting for "no reload in progress" goes on.
        ("/_haproxy_getpids", _) => respond(
            StatusCode::OK,
            "text/plain",
            format!("{}\n", std::process::id()),
        ),
        ("/haproxy", Some(q)) if q.starts_with("stats") => {
            let snap = stats.publisher.load_full();
            let names = resolve(&snap).await;
            let table = table(&snap, &stats.balancer, &names);
            if q.split(';').any(|p| p == "csv") {
                respond(StatusCode::OK, "text/plain", csv(&table))
            } else {
                respond(StatusCode::OK, "text/html; charset=utf-8", html(&table))
            }
        }
        _ => not_found(),
    }
}

/// The IPs of task hosts given as names, as far as they resolve in time.
async fn resolve(snap: &Snapshot) -> HashMap<Arc<str>, IpAddr> {
    let mut hosts: Vec<Arc<str>> = snap
        .apps
        .values()
        .flat_map(|a| a.tasks.iter())
        .flat_map(|t| t.endpoints.iter().flatten())
        .filter(|e| e.host.parse::<IpAddr>().is_err())
        .map(|e| e.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    let lookups = hosts.into_iter().map(|h| async move {
        let found = tokio::time::timeout(RESOLVE_FOR, tokio::net::lookup_host((&*h, 0)))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.next())
            .map(|a| a.ip());
        found.map(|ip| (h, ip))
    });
    futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One row: values by column.
type Row = BTreeMap<&'static str, String>;

/// marathon-lb's names: `[^A-Za-z0-9-]` becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `<ip>_<port>`, or `<host>_<ip>_<port>` for a host given by name.
fn server_name(host: &str, port: u16, names: &HashMap<Arc<str>, IpAddr>) -> String {
    match names.get(host) {
        Some(ip) => sanitize(&format!("{host}_{ip}_{port}")),
        None => sanitize(&format!("{host}_{port}")),
    }
}

/// One app port as the stats show it.
struct Service<'a> {
    app: &'a AppView,
    port_index: usize,
    port: u32,
    listener: bool,
    mode: PortMode,
    balance: Balance,
}

fn services(snap: &Snapshot) -> Vec<Service<'_>> {
    let mut out: BTreeMap<(&str, usize), Service> = BTreeMap::new();
    for s in &snap.ports.services {
        if let Some(app) = snap.apps.get(&s.app_id) {
            out.entry((&s.app_id, s.port_index)).or_insert(Service {
                app,
                port_index: s.port_index,
                port: u32::from(s.port),
                listener: true,
                mode: s.mode,
                balance: s.balance,
            });
        }
    }
    for r in &snap.routes.routes {
        if let Some(app) = snap.apps.get(&r.app_id) {
            out.entry((&r.app_id, r.port_index)).or_insert(Service {
                app,
                port_index: r.port_index,
                port: app.service_ports.get(r.port_index).copied().unwrap_or(0),
                listener: false,
                mode: PortMode::Http,
                balance: r.balance,
            });
        }
    }
    out.into_values().collect()
}

fn table(snap: &Snapshot, balancer: &Balancer, names: &HashMap<Arc<str>, IpAddr>) -> Vec<Row> {
    let pid = std::process::id().to_string();
    let mut rows = Vec::new();
    for (iid, svc) in services(snap).into_iter().enumerate() {
        let px = format!(
            "{}_{}",
            svc.app.id.trim_start_matches('/').replace('/', "_"),
            svc.port
        );
        let mode = match svc.mode {
            PortMode::Http => "http",
            PortMode::Tcp => "tcp",
        };
        let base = |sv: &str, kind: u8, sid: usize| -> Row {
            let mut r = Row::new();
            r.insert("pxname", px.clone());
            r.insert("svname", sv.to_string());
            r.insert("pid", pid.clone());
            r.insert("iid", (iid + 1).to_string());
            r.insert("sid", sid.to_string());
            r.insert("type", kind.to_string());
            r.insert("mode", mode.to_string());
            r
        };
        let mut servers = Vec::new();
        let (mut total, mut up) = (0usize, 0usize);
        let listed = svc.app.tasks.iter().filter(|t| t.state == "TASK_RUNNING");
        for (sid, (task, e)) in listed
            .filter_map(|t| Some((t, t.endpoints.get(svc.port_index)?.as_ref()?)))
            .enumerate()
        {
            let (in_flight, ejected) = balancer.load(e);
            total += in_flight;
            let status = if task.draining {
                "MAINT"
            } else if task.routable && !ejected {
                up += 1;
                "UP"
            } else {
                "DOWN"
            };
            let mut r = base(&server_name(&e.host, e.port, names), 2, sid + 1);
            for (k, v) in [
                ("qcur", "0".to_string()),
                ("scur", in_flight.to_string()),
                ("status", status.to_string()),
                ("weight", if task.draining { "0" } else { "1" }.to_string()),
                ("uweight", if task.draining { "0" } else { "1" }.to_string()),
                ("act", "1".to_string()),
                ("bck", "0".to_string()),
                ("addr", e.to_string()),
            ] {
                r.insert(k, v);
            }
            servers.push(r);
        }
        if svc.listener {
            let mut f = base("FRONTEND", 0, 0);
            f.insert("scur", total.to_string());
            f.insert("status", "OPEN".into());
            rows.push(f);
        }
        rows.extend(servers);
        let mut b = base("BACKEND", 1, 0);
        for (k, v) in [
            ("qcur", "0".to_string()),
            ("scur", total.to_string()),
            ("status", if up > 0 { "UP" } else { "DOWN" }.to_string()),
            ("weight", up.to_string()),
            ("act", up.to_string()),
            ("bck", "0".to_string()),
            ("algo", svc.balance.name().to_string()),
        ] {
            b.insert(k, v);
        }
        rows.push(b);
    }
    rows
}

/// HAProxy's CSV: a `# ` header, and every line (header too) ending in a comma.
fn csv(rows: &[Row]) -> String {
    let mut out = format!("# {},\n", COLUMNS.join(","));
    for r in rows {
        for c in COLUMNS {
            // Names are sanitized; an address holds no comma.
            out.push_str(r.get(c).map_or("", String::as_str));
            out.push(',');
        }
        out.push('\n');
    }
    out
}

fn html(rows: &[Row]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let shown = [
        "pxname", "svname", "status", "scur", "weight", "addr", "mode", "algo",
    ];
    let mut out = String::from(
        "<!doctype html><html><head><title>rattan stats</title></head><body>\n<table border=1>\n<tr>",
    );
    for c in shown {
        out.push_str(&format!("<th>{c}</th>"));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in shown {
            out.push_str(&format!(
                "<td>{}</td>",
                esc(r.get(c).map_or("", String::as_str))
            ));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n<p><a href=\"/haproxy?stats;csv\">CSV</a></p></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_marathon_lb_writes_them() {
        let mut names = HashMap::new();
        names.insert(
            Arc::from("agent-1.example"),
            "10.0.0.7".parse().expect("ip"),
        );
        assert_eq!(server_name("10.0.0.7", 31000, &names), "10_0_0_7_31000");
        assert_eq!(
            server_name("agent-1.example", 31000, &names),
            "agent-1_example_10_0_0_7_31000"
        );
        assert_eq!(server_name("unresolved", 80, &names), "unresolved_80");
    }

    #[test]
    fn every_line_has_every_column() {
        let mut r = Row::new();
        r.insert("pxname", "web_10000".into());
        r.insert("status", "UP".into());
        let text = csv(&[r]);
        let mut lines = text.lines();
        let head = lines.next().expect("header");
        assert!(head.starts_with("# pxname,svname,qcur,") && head.ends_with("agg_check_status,"));
        let row = lines.next().expect("row");
        assert_eq!(row.matches(',').count(), COLUMNS.len());
        assert_eq!(row.split(',').nth(17), Some("UP"));
    }
}
