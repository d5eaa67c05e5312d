//! marathon-lb's blue/green deployments (`zdd.py`): apps labelled with the same `HAPROXY_DEPLOYMENT_GROUP` are
//! served as one app named after the group, their tasks merged. The newest app by
//! `HAPROXY_DEPLOYMENT_STARTED_AT` is the new colour; as many old tasks drain as new tasks serve, capped so that
//! `HAPROXY_DEPLOYMENT_TARGET_INSTANCES` stay served, lowest task ids first (marathon-lb's rule).
//!
//! One departure: marathon-lb counts a new app without health checks as serving all its `instances` at once, so
//! it drains old tasks before the new ones run. Here only new tasks that are routable count, checks or not.
//!
//! Between `discovery` and the snapshot: the rest of rattan sees one app per group.

use crate::apps::{AppView, Apps, Deployment};
use crate::marathon::address::Endpoint;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const GROUP: &str = "HAPROXY_DEPLOYMENT_GROUP";
pub const STARTED_AT: &str = "HAPROXY_DEPLOYMENT_STARTED_AT";
pub const TARGET: &str = "HAPROXY_DEPLOYMENT_TARGET_INSTANCES";

/// The app id a group is served as.
pub fn group_id(group: &str) -> String {
    format!("/{}", group.trim_matches('/'))
}

/// Replaces the members of every deployment group in `apps` with the group's merged app.
pub fn merge(apps: &mut Apps) {
    let mut groups: BTreeMap<String, Vec<Arc<AppView>>> = BTreeMap::new();
    for app in apps.values() {
        if let Some(g) = &app.deployment_group {
            groups.entry(g.clone()).or_default().push(app.clone());
        }
    }
    for (group, mut members) in groups {
        let id = group_id(&group);
        // Oldest first: an app without a start time was not deployed by zdd, so it is the old one.
        members.sort_by(|a, b| {
            let at = |v: &AppView| v.labels.get(STARTED_AT).cloned();
            (at(a).is_some(), at(a), &a.id).cmp(&(at(b).is_some(), at(b), &b.id))
        });
        let names: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        // A label must not take over an unrelated app's name (and with it that app's rules and traffic).
        if apps.contains_key(&id) && !names.contains(&id) {
            let error = format!(
                "deployment group {group:?} is also the id of another app ({id}); its members are served apart"
            );
            for m in &members {
                let mut v = AppView::clone(m);
                v.deployment = Some(Arc::new(Deployment {
                    group: group.clone(),
                    members: names.clone(),
                    draining: 0,
                    target: 0,
                    error: Some(error.clone()),
                }));
                apps.insert(m.id.clone(), Arc::new(v));
            }
            continue;
        }
        for name in &names {
            apps.remove(name);
        }
        apps.insert(id.clone(), Arc::new(merged(&group, id, &members, names)));
    }
}

fn merged(group: &str, id: String, members: &[Arc<AppView>], names: Vec<String>) -> AppView {
    let Some((new, old)) = members.split_last() else {
        unreachable!("a group has at least one member");
    };
    // marathon-lb reads the target from the new colour, and takes 1 when it is absent.
    let (target, error) = match new.labels.get(TARGET).map(|t| t.trim().parse::<u32>()) {
        None => (1, None),
        Some(Ok(t)) => (t, None),
        Some(Err(_)) => (
            0,
            Some(format!(
                "{TARGET} of {} is not a count: no task drains",
                new.id
            )),
        ),
    };
    let serving_new = new.tasks.iter().filter(|t| t.routable).count();
    let old_instances: usize = old
        .iter()
        .map(|a| a.instances.map_or(a.tasks.len(), |n| n as usize))
        .sum();
    let mut old_tasks: Vec<_> = old.iter().flat_map(|a| a.tasks.iter().cloned()).collect();
    old_tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let drain = if error.is_some() {
        0
    } else {
        let drainable = (serving_new + old_instances).saturating_sub(target as usize);
        old_tasks.len().min(serving_new).min(drainable)
    };
    for t in &mut old_tasks[..drain] {
        t.draining = true;
        t.routable = false;
    }
    // The oldest app's definition (labels, ports, checks) stands for the group while it lives, as marathon-lb's.
    let mut view = AppView::clone(old.first().unwrap_or(new));
    let mut tasks = old_tasks;
    tasks.extend(new.tasks.iter().cloned());
    view.backends = backends(&tasks);
    view.tasks = tasks;
    view.instances = Some(
        members
            .iter()
            .map(|a| a.instances.unwrap_or(a.tasks.len() as u32))
            .sum(),
    );
    view.escaped_id = id.replace('/', "::");
    view.mesos_dns_id = group.trim_matches('/').replace('/', "-");
    view.split_id = id.split('/').map(str::to_string).collect();
    view.id = id;
    view.deployment = Some(Arc::new(Deployment {
        group: group.to_string(),
        members: names,
        draining: drain,
        target,
        error,
    }));
    view
}

/// Routable endpoints per port index, as discovery lists them.
fn backends(tasks: &[crate::apps::TaskView]) -> Vec<Vec<Endpoint>> {
    let mut out: Vec<Vec<Endpoint>> = Vec::new();
    for t in tasks.iter().filter(|t| t.routable) {
        if out.len() < t.endpoints.len() {
            out.resize_with(t.endpoints.len(), Vec::new);
        }
        for (i, e) in t.endpoints.iter().enumerate() {
            if let Some(e) = e {
                out[i].push(e.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::TaskView;

    fn task(app: &str, n: u16, routable: bool) -> TaskView {
        let e = Endpoint {
            host: "10.0.0.1".into(),
            port: n,
        };
        TaskView {
            id: format!("{app}.{n}"),
            host: e.host.clone(),
            port: u32::from(n),
            ports: vec![u32::from(n)],
            state: "TASK_RUNNING".into(),
            alive: routable,
            ready: true,
            routable,
            draining: false,
            endpoints: vec![Some(e)],
        }
    }

    fn app(id: &str, labels: &[(&str, &str)], tasks: Vec<TaskView>) -> (String, Arc<AppView>) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let view = AppView {
            id: id.into(),
            escaped_id: id.replace('/', "::"),
            mesos_dns_id: String::new(),
            split_id: Vec::new(),
            deployment_group: labels.get(GROUP).cloned(),
            labels: Arc::new(labels),
            env: Arc::default(),
            health_checks: Vec::new(),
            health_check_path: String::new(),
            health_check_protocol: String::new(),
            readiness_check_path: String::new(),
            service_ports: vec![10000],
            port_names: Vec::new(),
            discovery_ports: Vec::new(),
            backends: backends(&tasks),
            instances: Some(tasks.len() as u32),
            tasks,
            deployment: None,
        };
        (id.to_string(), Arc::new(view))
    }

    fn blue_green(green: usize, green_healthy: usize) -> Apps {
        let blue = (1..=3).map(|n| task("blue", n, true)).collect();
        let green = (11..11 + green as u16)
            .map(|n| task("green", n, usize::from(n - 11) < green_healthy))
            .collect();
        [
            app(
                "/web-blue",
                &[
                    (GROUP, "web"),
                    (STARTED_AT, "2026-12-01T10:00:00Z"),
                    (TARGET, "3"),
                ],
                blue,
            ),
            app(
                "/web-green",
                &[
                    (GROUP, "web"),
                    (STARTED_AT, "2026-12-06T10:00:00Z"),
                    (TARGET, "3"),
                ],
                green,
            ),
            app("/other", &[], vec![task("other", 99, true)]),
        ]
        .into_iter()
        .collect()
    }

    /// Green's `HAPROXY_DEPLOYMENT_TARGET_INSTANCES`.
    fn set_target(apps: &mut Apps, target: &str) {
        let mut green = AppView::clone(&apps["/web-green"]);
        let mut labels = (*green.labels).clone();
        labels.insert(TARGET.into(), target.into());
        green.labels = Arc::new(labels);
        apps.insert("/web-green".into(), Arc::new(green));
    }

    fn serving(apps: &Apps, id: &str) -> Vec<u16> {
        apps[id].backends[0].iter().map(|e| e.port).collect()
    }

    #[test]
    fn old_tasks_drain_as_new_ones_serve_lowest_ids_first() {
        // (green tasks, of them serving) → blue ports still served.
        let steps: [(usize, usize, &[u16]); 5] = [
            (1, 0, &[1, 2, 3]),
            (1, 1, &[2, 3, 11]),
            (2, 2, &[3, 11, 12]),
            (3, 2, &[3, 11, 12]),
            (3, 3, &[11, 12, 13]),
        ];
        for (green, healthy, want) in steps {
            let mut apps = blue_green(green, healthy);
            merge(&mut apps);
            assert!(!apps.contains_key("/web-blue") && !apps.contains_key("/web-green"));
            assert!(apps.contains_key("/other"));
            let web = &apps["/web"];
            assert_eq!(
                serving(&apps, "/web"),
                want,
                "green {green}, healthy {healthy}"
            );
            let d = web.deployment.as_deref().expect("deployment");
            assert_eq!(d.members, ["/web-blue", "/web-green"]);
            assert_eq!(d.draining, 3 - want.iter().filter(|p| **p < 10).count());
            let drained: Vec<u16> = web.draining_backends(0).map(|e| e.port).collect();
            assert_eq!(drained.len(), d.draining);
            assert!(drained.iter().all(|p| !want.contains(p)));
        }
    }

    #[test]
    fn the_target_keeps_old_tasks_serving() {
        // Target 5: with 3 blue and 3 green serving, only one blue task may go.
        let mut apps = blue_green(3, 3);
        set_target(&mut apps, "5");
        merge(&mut apps);
        assert_eq!(serving(&apps, "/web"), [2, 3, 11, 12, 13]);
    }

    #[test]
    fn bad_labels_drain_nothing_and_never_take_another_apps_name() {
        let mut apps = blue_green(3, 3);
        set_target(&mut apps, "three");
        merge(&mut apps);
        assert_eq!(serving(&apps, "/web"), [1, 2, 3, 11, 12, 13]);
        let d = apps["/web"].deployment.clone().expect("deployment");
        assert!(d
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("not a count"));

        // A group named like an unrelated app: nothing merges, both members keep their own names.
        let mut apps = blue_green(1, 1);
        for id in ["/web-blue", "/web-green"] {
            let mut v = AppView::clone(&apps[id]);
            v.deployment_group = Some("other".into());
            apps.insert(id.into(), Arc::new(v));
        }
        merge(&mut apps);
        assert_eq!(serving(&apps, "/other"), [99]);
        assert_eq!(serving(&apps, "/web-blue"), [1, 2, 3]);
        assert!(apps["/web-green"]
            .deployment
            .as_ref()
            .and_then(|d| d.error.as_ref())
            .is_some());
    }

    #[test]
    fn a_lone_member_is_served_under_the_group_name() {
        let mut apps = blue_green(0, 0);
        apps.remove("/web-green");
        merge(&mut apps);
        assert_eq!(serving(&apps, "/web"), [1, 2, 3]);
        assert!(!apps.contains_key("/web-blue"));
    }
}
