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
    healthy: usize,
    total: usize,
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
}

/// Routes in precedence order with the health of their backends.
pub fn routes_json(snap: &Snapshot) -> Vec<u8> {
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
                healthy,
                total,
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
 .bad{color:#b00}.ok{color:#070}
 form{display:grid;grid-template-columns:8em 1fr;gap:.4em;max-width:50em}
 #error{color:#b00;white-space:pre-wrap;grid-column:1/3}
 button{width:max-content}
</style></head><body>
<h1>rattan</h1>
<p>Routes in precedence order (exact host, host suffix, longest path prefix, app id). <span id="version"></span></p>
<table><thead><tr><th>app</th><th>port</th><th>rule</th><th>from</th><th>balance</th><th>healthy / total</th><th></th></tr></thead>
<tbody id="routes"></tbody></table>
<div id="problems"></div>
<h2>Create or edit a rule</h2>
<form id="rule-form">
 <label for="app">app id</label><input id="app" name="app" placeholder="/group/app" required>
 <label for="acl">ACL</label><input id="acl" name="acl" placeholder="hdr(host) -i app.example.com">
 <label for="balance">balance</label><select id="balance"><option>leastconn</option><option>roundrobin</option></select>
 <label for="token">API token</label><input id="token" type="password" placeholder="only if --api-token is set">
 <span></span><button id="save" type="submit">Save rule</button>
 <div id="error" role="alert"></div>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
function headers() {
  const h = {"Content-Type": "application/json"};
  const t = $("token").value || localStorage.getItem("rattan-token") || "";
  if (t) { h["Authorization"] = "Bearer " + t; localStorage.setItem("rattan-token", t); }
  return h;
}
async function load() {
  const r = await fetch("/api/routes", {headers: headers()});
  if (!r.ok) { $("problems").textContent = "cannot load routes: HTTP " + r.status; return; }
  const d = await r.json();
  $("version").textContent = "Snapshot " + d.version + ".";
  const rows = d.routes.map((x) => `<tr data-app="${esc(x.app)}"><td><code>${esc(x.app)}</code></td><td>${x.port}</td>
    <td><code>${x.acl.map(esc).join("</code> and <code>")}</code></td><td class="src-${x.source}">${x.source}</td>
    <td>${x.balance}</td><td class="${x.healthy ? "ok" : "bad"}">${x.healthy} / ${x.total}</td>
    <td>${x.source === "api" ? `<button data-edit="${esc(x.app)}" data-acl="${esc(x.acl[0])}" data-balance="${x.balance}">edit</button>
      <button data-delete="${esc(x.app)}">delete</button>` : `<button data-edit="${esc(x.app)}" data-acl="" data-balance="leastconn">add rule</button>`}</td></tr>`);
  for (const a of d.apps.filter((a) => !a.routed)) {
    rows.push(`<tr data-app="${esc(a.id)}"><td><code>${esc(a.id)}</code></td><td></td><td><em>no route</em></td><td></td><td></td>
      <td>${a.healthy} / ${a.total}</td><td><button data-edit="${esc(a.id)}" data-acl="" data-balance="leastconn">add rule</button></td></tr>`);
  }
  for (const o of d.orphans) {
    rows.push(`<tr data-app="${esc(o)}"><td><code>${esc(o)}</code></td><td></td><td><em>Missing app in Marathon</em></td><td class="src-api">api</td><td></td><td></td>
      <td><button data-delete="${esc(o)}">delete</button></td></tr>`);
  }
  $("routes").innerHTML = rows.join("");
  $("problems").innerHTML = d.errors.map((e) => `<p class="bad">${esc(e.app_id)}: ${esc(e.error)}</p>`).join("");
}
$("routes").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.edit !== undefined) {
    $("app").value = b.dataset.edit; $("acl").value = b.dataset.acl; $("balance").value = b.dataset.balance; $("acl").focus();
  } else if (b.dataset.delete !== undefined && confirm("Delete the rule of " + b.dataset.delete + "?")) {
    const r = await fetch("/api/services/" + encodeURIComponent(b.dataset.delete), {method: "DELETE", headers: headers()});
    $("error").textContent = r.ok ? "" : await r.text();
    await load();
  }
});
$("rule-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("app").value.trim();
  const body = {id, config: {Acl: $("acl").value, balance: $("balance").value}};
  const r = await fetch("/api/services/" + encodeURIComponent(id), {method: "PUT", headers: headers(), body: JSON.stringify(body)});
  $("error").textContent = r.ok ? "" : await r.text();
  document.body.dataset.lastSave = r.ok ? "ok" : "error";
  await load();
});
load();
setInterval(load, 5000);
</script></body></html>
"##;
