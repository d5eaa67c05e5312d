//! The routing snapshot: one immutable value (apps, their routable backends, the rules), built in one function
//! and swapped whole behind one `ArcSwap`. Readers never lock.

use crate::apps::Apps;
use crate::metrics::metrics;
use crate::rules::ports::PortTable;
use crate::rules::table::{RouteOptions, RouteTable};
use crate::rules::Rules;
use arc_swap::{ArcSwap, Guard};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub built_at: SystemTime,
    pub apps: Arc<Apps>,
    pub rules: Arc<Rules>,
    /// The compiled routes, in precedence order.
    pub routes: Arc<RouteTable>,
    /// TCP (L4) listeners and the app port behind each.
    pub ports: Arc<PortTable>,
}

impl Snapshot {
    /// Seconds since this snapshot was built.
    pub fn age_secs(&self) -> f64 {
        SystemTime::now()
            .duration_since(self.built_at)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            built_at: SystemTime::now(),
            apps: Arc::default(),
            rules: Arc::default(),
            routes: Arc::default(),
            ports: Arc::default(),
        }
    }
}

/// Whether two app sets route identically: same ids, labels and port counts (tasks do not matter).
fn same_routing_inputs(a: &Apps, b: &Apps) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && va.mesos_dns_id == vb.mesos_dns_id
                && va.service_ports == vb.service_ports
                && va.backends.len() == vb.backends.len()
                && (Arc::ptr_eq(&va.labels, &vb.labels) || va.labels == vb.labels)
                && (Arc::ptr_eq(&va.env, &vb.env) || va.env == vb.env)
                // A group's members and its errors (not its draining count, which tasks move).
                && va.deployment.as_ref().map(|d| (&d.members, &d.error))
                    == vb.deployment.as_ref().map(|d| (&d.members, &d.error))
        })
}

/// The one place a snapshot is made. The route table is carried over from `prev` when nothing it depends on
/// changed, so a task event costs a map of Arcs, not a recompilation of every rule.
pub fn build(
    version: u64,
    apps: Arc<Apps>,
    rules: Arc<Rules>,
    opts: &RouteOptions,
    prev: &Snapshot,
) -> Snapshot {
    let (routes, ports) =
        if Arc::ptr_eq(&rules, &prev.rules) && same_routing_inputs(&apps, &prev.apps) {
            (prev.routes.clone(), prev.ports.clone())
        } else {
            (
                Arc::new(RouteTable::build(&apps, &rules.services, opts)),
                Arc::new(PortTable::build(&apps, opts)),
            )
        };
    Snapshot {
        version,
        built_at: SystemTime::now(),
        apps,
        rules,
        routes,
        ports,
    }
}

/// Holds the current snapshot and the two inputs it is built from. Writers (discovery, the rule store) serialize
/// on a mutex; readers only `load()`.
pub struct Publisher {
    current: ArcSwap<Snapshot>,
    inputs: Mutex<(Arc<Apps>, Arc<Rules>)>,
    version: AtomicU64,
    /// The version of the snapshot in `current`, stored after it: a reader holding that version has the newest.
    published: AtomicU64,
    route_opts: RouteOptions,
    /// Whether discovery has ever had a good Marathon snapshot (a process that never reached Marathon serves
    /// an empty table; one that did never falls back to empty on an outage).
    pub marathon_synced: std::sync::atomic::AtomicBool,
    /// The version of every published snapshot, for consumers that act on change (TCP listeners, the renderer).
    changed: tokio::sync::watch::Sender<u64>,
    rules_loaded: std::sync::atomic::AtomicBool,
    /// The state of the inputs (Marathon, the rules, HAProxy's config): what readiness is made of.
    pub health: crate::health::Health,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new(RouteOptions::default())
    }
}

impl Publisher {
    pub fn new(route_opts: RouteOptions) -> Publisher {
        Publisher {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            inputs: Mutex::new((Arc::default(), Arc::default())),
            version: AtomicU64::new(0),
            published: AtomicU64::new(0),
            route_opts,
            marathon_synced: Default::default(),
            changed: tokio::sync::watch::channel(0).0,
            rules_loaded: Default::default(),
            health: Default::default(),
        }
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// `held` if it is still the current snapshot (one atomic load), else the current one.
    pub fn refresh(&self, held: &mut Arc<Snapshot>) {
        if held.version != self.published.load(Ordering::Acquire) {
            *held = self.load_full();
        }
    }

    pub fn set_apps(&self, apps: Arc<Apps>) {
        self.publish(|inputs| inputs.0 = apps);
    }

    /// Whether the rule store has delivered its rules at least once.
    pub fn rules_loaded(&self) -> bool {
        self.rules_loaded.load(Ordering::Relaxed)
    }

    pub fn set_rules(&self, rules: Arc<Rules>) {
        self.rules_loaded.store(true, Ordering::Relaxed);
        self.publish(|inputs| inputs.1 = rules);
    }

    fn publish(&self, change: impl FnOnce(&mut (Arc<Apps>, Arc<Rules>))) {
        // A poisoned lock only means another writer panicked mid-update; the inputs are still whole Arcs.
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut inputs);
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let prev = self.current.load();
        let snap = build(
            version,
            inputs.0.clone(),
            inputs.1.clone(),
            &self.route_opts,
            &prev,
        );
        if !Arc::ptr_eq(&snap.routes, &prev.routes) {
            metrics().route_errors.set(snap.routes.errors.len() as i64);
            for e in &snap.routes.errors {
                tracing::warn!(app = %e.app_id, error = %e.error, "route not served as written");
            }
        }
        if !Arc::ptr_eq(&snap.ports, &prev.ports) {
            // Once each: a table rebuilt for another app's change does not repeat them.
            let before = &prev.ports.errors;
            for e in snap.ports.errors.iter().filter(|e| !before.contains(e)) {
                tracing::warn!(app = %e.app_id, error = %e.error, "service port not served");
            }
            let before = &prev.ports.ignored;
            for i in snap.ports.ignored.iter().filter(|i| !before.contains(i)) {
                tracing::info!(app = %i.app_id, label = %i.label, "label ignored: a HAProxy config fragment, which the built-in proxy cannot apply");
            }
            metrics().port_errors.set(snap.ports.errors.len() as i64);
        }
        let m = metrics();
        m.snapshot_version.set(version as i64);
        m.snapshot_apps.set(snap.apps.len() as i64);
        m.snapshot_built_unix.set(
            snap.built_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );
        self.current.store(Arc::new(snap));
        self.published.store(version, Ordering::Release);
        self.changed.send_replace(version);
    }
}
