//! The web UI at `/`: plain HTML and JS served from the binary (edge nodes are often offline: no CDN), and the
//! `/api/routes` data it shows.

use crate::snapshot::Snapshot;
use serde::Serialize;

#[derive(Serialize)]
struct RouteRow<'a> {
    app: &'a str,
    port: usize,
    source: crate::rules::table::Source,
    acl: &'a [String],
    balance: crate::rules::table::Balance,
    sticky: bool,
    redirect_https: bool,
    healthy: usize,
    total: usize,
    /// Every task's address for this port, with whether it gets traffic.
    backends: Vec<Backend>,
}

#[derive(Serialize)]
struct Backend {
    address: String,
    up: bool,
    draining: bool,
}

#[derive(Serialize)]
struct AppRow<'a> {
    id: &'a str,
    healthy: usize,
    total: usize,
    routed: bool,
}

#[derive(Serialize)]
struct Routes<'a> {
    version: u64,
    routes: Vec<RouteRow<'a>>,
    /// Rules and labels that do not compile, service ports not served.
    errors: Vec<&'a crate::rules::table::RouteError>,
    /// Service ports with their own listener.
    ports: &'a [crate::rules::ports::PortService],
    /// Labels the built-in proxy cannot apply (HAProxy fragments).
    ignored: &'a [crate::rules::ports::Ignored],
    apps: Vec<AppRow<'a>>,
    /// Stored rules whose app is not in Marathon.
    orphans: Vec<&'a str>,
    /// Readiness checks (Marathon, rules, ZooKeeper, HAProxy): state, detail, since.
    checks: Vec<crate::health::Verdict>,
    snapshot_age_seconds: f64,
}

/// Routes in precedence order with the health of their backends, and the state of rattan's inputs.
pub fn routes_json(snap: &Snapshot, checks: &crate::health::Health) -> Vec<u8> {
    let backends = |id: &str, port: usize| -> Vec<Backend> {
        snap.apps.get(id).map_or_else(Vec::new, |a| {
            a.tasks
                .iter()
                .filter_map(|t| {
                    let e = t.endpoints.get(port)?.as_ref()?;
                    Some(Backend {
                        address: e.to_string(),
                        up: t.routable,
                        draining: t.draining,
                    })
                })
                .collect()
        })
    };
    let health = |id: &str, port: usize| {
        snap.apps
            .get(id)
            .map(|a| (a.healthy_backends(port).len(), a.tasks.len()))
            .unwrap_or((0, 0))
    };
    let routes = snap
        .routes
        .routes
        .iter()
        .map(|r| {
            let (healthy, total) = health(&r.app_id, r.port_index);
            RouteRow {
                app: &r.app_id,
                port: r.port_index,
                source: r.source,
                acl: &r.acl,
                balance: r.balance,
                sticky: r.sticky,
                redirect_https: r.redirect_https,
                healthy,
                total,
                backends: backends(&r.app_id, r.port_index),
            }
        })
        .collect();
    let apps = snap
        .apps
        .iter()
        .map(|(id, a)| AppRow {
            id,
            healthy: a.tasks.iter().filter(|t| t.routable).count(),
            total: a.tasks.len(),
            routed: snap.routes.routes.iter().any(|r| &r.app_id == id)
                || snap.ports.services.iter().any(|p| &p.app_id == id),
        })
        .collect();
    let orphans = snap
        .rules
        .services
        .keys()
        .filter(|k| !snap.apps.contains_key(*k))
        .map(String::as_str)
        .collect();
    crate::bamboo::gojson::to_vec(&Routes {
        version: snap.version,
        routes,
        errors: snap
            .routes
            .errors
            .iter()
            .chain(&snap.ports.errors)
            .collect(),
        ports: &snap.ports.services,
        ignored: &snap.ports.ignored,
        apps,
        orphans,
        checks: checks.verdicts(),
        snapshot_age_seconds: snap.age_secs(),
    })
}

pub const INDEX_HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rattan</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222}
 table{border-collapse:collapse;width:100%;margin:1em 0}
 th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}
 code{font:13px ui-monospace,monospace}
 .src-api{color:#05a}.src-label{color:#a50}.src-default{color:#777}
 .bad{color:#b00}.ok{color:#070}.warn{color:#a60}
 form{display:grid;grid-template-columns:10em 1fr;gap:.4em;max-width:56em}
 #error{color:#b00;white-space:pre-wrap;grid-column:1/3}
 #saved{color:#070;grid-column:1/3}
 button{width:max-content}
 #login{border:1px solid #ccc;padding:1em;max-width:40em}
 .backends{font-size:12px;color:#555}
 textarea{font:13px ui-monospace,monospace;min-height:5em}
</style></head><body>
<h1>rattan</h1>
<div id="login" hidden>
 <p><strong>This API asks for credentials.</strong> Give the API token or the basic-auth user and password;
 they are kept in this tab only.</p>
 <form id="login-form">
  <label for="login-token">API token</label><input id="login-token" type="password" autocomplete="off">
  <label for="login-user">user</label><input id="login-user" autocomplete="username">
  <label for="login-password">password</label><input id="login-password" type="password" autocomplete="current-password">
  <span></span><button id="login-go" type="submit">Sign in</button>
 </form>
</div>
<div id="main">
<p id="inputs"></p>
<p>Routes in precedence order (exact host, host suffix, longest path prefix, app id). <span id="version"></span>
 <label>Filter <input id="filter" placeholder="app, rule, address"></label></p>
<table><thead><tr><th>app</th><th>port</th><th>rule</th><th>from</th><th>balance / options</th><th>backends</th><th></th></tr></thead>
<tbody id="routes"></tbody></table>
<div id="problems"></div>
<h2>Create or edit a rule</h2>
<form id="rule-form">
 <label for="app">app id</label><input id="app" name="app" placeholder="/group/app" required>
 <label for="acl">ACL</label><input id="acl" name="acl" placeholder="hdr(host) -i app.example.com">
 <label for="balance">balance</label><select id="balance"><option value="">(default)</option><option>leastconn</option><option>roundrobin</option><option>source</option><option>random</option></select>
 <label for="sticky">sticky</label><input id="sticky" type="checkbox">
 <label for="redirect">redirect to HTTPS</label><input id="redirect" type="checkbox">
 <label for="other">other keys</label><textarea id="other" placeholder="key=value per line: hsts, proxypass_path, revproxy_path, redirect_path, weight, ..."></textarea>
 <span></span><button id="save" type="submit">Save rule</button>
 <div id="saved" role="status"></div>
 <div id="error" role="alert"></div>
</form>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
// The keys the form edits; every other key of a rule is kept as it was (shown under "other keys").
const EDITED = ["Acl", "balance", "sticky", "redirect_https"];
let editing = null;
function headers() {
  const h = {"Content-Type": "application/json", "X-Requested-With": "rattan-ui"};
  const auth = sessionStorage.getItem("rattan-auth");
  if (auth) h["Authorization"] = auth;
  return h;
}
async function api(path, init) {
  const r = await fetch(path, Object.assign({headers: headers()}, init || {}));
  if (r.status === 401) { $("login").hidden = false; document.body.dataset.auth = "asked"; }
  return r;
}
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const t = $("login-token").value, u = $("login-user").value, p = $("login-password").value;
  sessionStorage.setItem("rattan-auth", t ? "Bearer " + t : "Basic " + btoa(u + ":" + p));
  const r = await api("/api/routes");
  if (r.ok) { $("login").hidden = true; document.body.dataset.auth = "ok"; await load(); }
});
function applyFilter() {
  const q = $("filter").value.trim().toLowerCase();
  for (const tr of $("routes").rows) tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
}
$("filter").addEventListener("input", applyFilter);
function ago(t) { return t ? Math.max(0, Math.round(Date.now() / 1000 - t)) + " s ago" : "never"; }
async function load() {
  const r = await api("/api/routes");
  if (!r.ok) { $("problems").textContent = "cannot load routes: HTTP " + r.status; return; }
  const d = await r.json();
  $("version").textContent = "Snapshot " + d.version + ", built " + Math.round(d.snapshot_age_seconds) + " s ago.";
  $("inputs").innerHTML = d.checks.map((c) => `<span class="${c.state === "ok" ? "ok" : c.state === "degraded" ? "warn" : "bad"}"
    data-check="${esc(c.name)}">${esc(c.name)}: ${esc(c.state)}${c.state === "ok" ? "" : " — " + esc(c.detail)} (since ${ago(c.since)})</span>`).join(" · ");
  const rows = d.routes.map((x) => {
    const opts = [x.balance, x.sticky ? "sticky" : "", x.redirect_https ? "→ https" : ""].filter(Boolean).join(", ");
    const bk = x.backends.map((b) => `<span class="${b.up ? "ok" : "bad"}">${esc(b.address)}${b.draining ? " (draining)" : b.up ? "" : " (down)"}</span>`).join("<br>");
    return `<tr data-app="${esc(x.app)}"><td><code>${esc(x.app)}</code></td><td>${x.port}</td>
    <td><code>${x.acl.map(esc).join("</code> and <code>")}</code></td><td class="src-${x.source}">${x.source}</td>
    <td>${esc(opts)}</td><td><span class="${x.healthy ? "ok" : "bad"}">${x.healthy} / ${x.total}</span><div class="backends">${bk}</div></td>
    <td>${x.source === "api" ? `<button data-edit="${esc(x.app)}">edit</button>
      <button data-delete="${esc(x.app)}">delete</button>` : `<button data-edit="${esc(x.app)}">add rule</button>`}</td></tr>`;
  });
  for (const a of d.apps.filter((a) => !a.routed)) {
    rows.push(`<tr data-app="${esc(a.id)}"><td><code>${esc(a.id)}</code></td><td></td><td><em>no route</em></td><td></td><td></td>
      <td>${a.healthy} / ${a.total}</td><td><button data-edit="${esc(a.id)}">add rule</button></td></tr>`);
  }
  for (const o of d.orphans) {
    rows.push(`<tr data-app="${esc(o)}"><td><code>${esc(o)}</code></td><td></td><td><em>Missing app in Marathon</em></td><td class="src-api">api</td><td></td><td></td>
      <td><button data-delete="${esc(o)}">delete</button></td></tr>`);
  }
  $("routes").innerHTML = rows.join("");
  applyFilter();
  $("problems").innerHTML = d.errors.map((e) => `<p class="bad">${esc(e.app_id)}: ${esc(e.error)}</p>`).join("");
}
// Loads the stored rule (every key) into the form; an app without one starts empty.
async function edit(id) {
  const r = await api("/api/services/" + encodeURIComponent(id));
  const rule = r.ok ? await r.json() : {Id: id, Acl: "", Config: {}};
  editing = {id, config: Object.assign({}, rule.Config || {})};
  if (!editing.config.Acl && rule.Acl) editing.config.Acl = rule.Acl;
  const c = editing.config;
  $("app").value = id; $("acl").value = c.Acl || ""; $("balance").value = c.balance || "";
  $("sticky").checked = c.sticky === "true"; $("redirect").checked = c.redirect_https === "true";
  $("other").value = Object.keys(c).filter((k) => !EDITED.includes(k)).map((k) => k + "=" + c[k]).join("\n");
  $("saved").textContent = ""; $("error").textContent = "";
  document.body.dataset.editing = id;
  $("acl").focus();
}
$("routes").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.edit !== undefined) {
    await edit(b.dataset.edit);
  } else if (b.dataset.delete !== undefined && confirm("Delete the rule of " + b.dataset.delete + "?")) {
    const r = await api("/api/services/" + encodeURIComponent(b.dataset.delete), {method: "DELETE"});
    $("error").textContent = r.ok ? "" : await r.text();
    $("saved").textContent = r.ok ? "deleted" : "";
    await load();
  }
});
$("rule-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("app").value.trim();
  // Start from what is stored (when editing that app), so keys the form does not show are kept.
  const config = editing && editing.id === id ? Object.assign({}, editing.config) : {};
  for (const k of Object.keys(config)) if (!EDITED.includes(k)) delete config[k];
  for (const line of $("other").value.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) config[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  config.Acl = $("acl").value;
  if ($("balance").value) config.balance = $("balance").value; else delete config.balance;
  if ($("sticky").checked) config.sticky = "true"; else delete config.sticky;
  if ($("redirect").checked) config.redirect_https = "true"; else delete config.redirect_https;
  const r = await api("/api/services/" + encodeURIComponent(id), {method: "PUT", body: JSON.stringify({id, config})});
  $("error").textContent = r.ok ? "" : await r.text();
  $("saved").textContent = r.ok ? "saved" : "";
  document.body.dataset.lastSave = r.ok ? "ok" : "error";
  if (r.ok) editing = {id, config};
  await load();
});
load();
setInterval(load, 5000);
</script></body></html>
"##;
