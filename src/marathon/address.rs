//! Task → reachable `host:port` per networking mode, and whether a task is running. No I/O.

use super::model::{App, Task};
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// An IP or a hostname as Marathon reports it; resolved at connect time. Shared: one task's host appears in
    /// every port's endpoint and in every snapshot until the task changes.
    pub host: Arc<str>,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    Host,
    Bridge,
    Container,
}

pub fn network_mode(app: &App) -> NetMode {
    if let Some(first) = app.networks.first() {
        return match first.mode.as_deref().unwrap_or("host") {
            "container/bridge" => NetMode::Bridge,
            "container" => NetMode::Container,
            _ => NetMode::Host,
        };
    }
    let docker_net = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .and_then(|d| d.network.as_deref());
    match docker_net.map(str::to_ascii_uppercase).as_deref() {
        Some("BRIDGE") => return NetMode::Bridge,
        Some("USER") => return NetMode::Container,
        Some("HOST") => return NetMode::Host,
        _ => {}
    }
    if app.ip_address.is_some() {
        NetMode::Container
    } else {
        NetMode::Host
    }
}

/// Service ports by index: `portDefinitions` (1.0+), else container mappings (1.5+ non-host), else legacy `ports`.
/// Bamboo read only the legacy field, so every 1.5+ app had service port 0.
pub fn service_ports(app: &App) -> Vec<u32> {
    if !app.port_definitions.is_empty() {
        return app
            .port_definitions
            .iter()
            .map(|p| p.port.unwrap_or(0))
            .collect();
    }
    let mappings = app.port_mappings();
    if !mappings.is_empty() {
        return mappings
            .iter()
            .map(|m| m.service_port.unwrap_or(0))
            .collect();
    }
    app.ports.clone()
}

fn port16(p: u32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn usable_host(host: &str) -> bool {
    !host.is_empty() && host != "unknown"
}

/// Endpoints of one task by service-port index (`None` where that index has no reachable address yet).
/// `prefer_host_port`: in container mode use the agent's `host:hostPort` when a host port exists.
pub fn endpoints(app: &App, task: &Task, prefer_host_port: bool) -> Vec<Option<Endpoint>> {
    let host: Arc<str> = Arc::from(task.host.as_str());
    let at_host = |p: u32| {
        port16(p)
            .filter(|_| usable_host(&task.host))
            .map(|port| Endpoint {
                host: host.clone(),
                port,
            })
    };
    match network_mode(app) {
        NetMode::Host | NetMode::Bridge => task.ports.iter().map(|p| at_host(*p)).collect(),
        NetMode::Container => {
            let ip: Option<Arc<str>> = task
                .ip_addresses
                .first()
                .filter(|a| !a.ip_address.is_empty())
                .map(|a| Arc::from(a.ip_address.as_str()));
            let mappings = app.port_mappings();
            let mut out = Vec::with_capacity(mappings.len());
            let mut j = 0;
            for m in mappings {
                let alt = if m.host_port.is_some() {
                    let alt = task.ports.get(j).and_then(|p| at_host(*p));
                    j += 1;
                    alt
                } else {
                    None
                };
                // containerPort 0 means "same as the allocated host port".
                let container_port = match m.container_port.unwrap_or(0) {
                    0 => alt.as_ref().map(|a| u32::from(a.port)).unwrap_or(0),
                    p => p,
                };
                let primary = ip.as_ref().and_then(|ip| {
                    port16(container_port).map(|port| Endpoint {
                        host: ip.clone(),
                        port,
                    })
                });
                out.push(if prefer_host_port {
                    alt.or(primary)
                } else {
                    primary.or(alt)
                });
            }
            if mappings.is_empty() {
                // Legacy Mesos IP-per-task (0.14–1.3): discovery ports on the task IP.
                let discovery = app
                    .ip_address
                    .as_ref()
                    .and_then(|a| a.discovery.as_ref())
                    .map(|d| d.ports.as_slice())
                    .unwrap_or(&[]);
                for d in discovery {
                    out.push(ip.as_ref().and_then(|ip| {
                        port16(d.number.unwrap_or(0)).map(|port| Endpoint {
                            host: ip.clone(),
                            port,
                        })
                    }));
                }
            }
            out
        }
    }
}

/// `TASK_RUNNING`, or — before 1.1.2, which sent no `state` — a set `startedAt`.
pub fn is_running(task: &Task) -> bool {
    match task.state.as_deref() {
        Some(s) => s == "TASK_RUNNING",
        None => task.started_at.as_deref().is_some_and(|s| !s.is_empty()),
    }
}

/// Mesos states after which a task never serves again (UNKNOWN treated as failed).
pub fn is_terminal_or_leaving(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_KILLING"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_UNREACHABLE"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
    )
}

/// The instance id a health event (1.4+) uses for this task id.
pub fn instance_id(task_id: &str) -> Option<String> {
    if let Some(pos) = task_id.find(".instance-") {
        // `group_app.instance-<uuid>._app.<n>` or `group_pod.instance-<uuid>.<container>`
        let rest = &task_id[pos + ".instance-".len()..];
        let uuid_len = rest.find('.').unwrap_or(rest.len());
        return Some(task_id[..pos + ".instance-".len() + uuid_len].to_string());
    }
    let (app, uuid) = task_id.rsplit_once('.')?;
    Some(format!("{app}.marathon-{uuid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::model::parse_apps;

    fn sample(name: &str) -> Vec<App> {
        let path = format!(
            "{}/tests/fixtures/marathon/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse_apps(&body).unwrap().apps
    }

    fn ep(s: &str) -> Option<Endpoint> {
        let (h, p) = s.rsplit_once(':').unwrap();
        Some(Endpoint {
            host: h.into(),
            port: p.parse().unwrap(),
        })
    }

    #[test]
    fn host_mode_sample() {
        let apps = sample("v2_apps.embed_tasks.1.5plus-host.code-derived.json");
        let app = &apps[0];
        assert_eq!(network_mode(app), NetMode::Host);
        let tasks = &app.tasks;
        let e = endpoints(app, &tasks[0], false);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].as_ref().map(|e| &*e.host),
            Some(tasks[0].host.as_str())
        );
        assert_eq!(service_ports(app).len(), 2);
        assert!(service_ports(app).iter().all(|p| *p != 0));
    }

    #[test]
    fn container_network_sample() {
        let apps = sample("v2_apps.embed_tasks.1.5plus-container-network.code-derived.json");
        let app = &apps[0];
        assert_eq!(network_mode(app), NetMode::Container);
        let task = &app.tasks[0];
        assert_eq!(
            endpoints(app, task, false),
            vec![ep("9.0.1.3:80"), ep("9.0.1.3:9090")]
        );
        assert_eq!(
            endpoints(app, task, true),
            vec![ep("9.0.1.3:80"), ep("10.0.1.21:31500")]
        );
        assert_eq!(service_ports(app), vec![10101, 10102]);
    }

    #[test]
    fn legacy_ip_per_task_user_sample() {
        let apps = sample("v2_apps.embed_tasks.1.4-ip-per-task-USER.code-derived.json");
        let app = &apps[0];
        assert_eq!(network_mode(app), NetMode::Container);
        let task = &app.tasks[0];
        assert_eq!(endpoints(app, task, false)[0], ep("9.0.2.7:80"));
    }

    #[test]
    fn bridge_uses_host_ports_not_docker_ip() {
        let body =
            br#"{"apps":[{"id":"/b","container":{"type":"DOCKER","docker":{"network":"BRIDGE",
          "portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10001}]}},
          "tasks":[{"id":"b.1","host":"10.0.0.2","ports":[31001],"state":"TASK_RUNNING",
          "ipAddresses":[{"ipAddress":"172.17.0.3","protocol":"IPv4"}]}]}]}"#;
        let app = &parse_apps(body).unwrap().apps[0];
        assert_eq!(network_mode(app), NetMode::Bridge);
        let task = &app.tasks[0];
        assert_eq!(endpoints(app, task, false), vec![ep("10.0.0.2:31001")]);
        assert_eq!(service_ports(app), vec![10001]);
    }

    #[test]
    fn ipv6_display_is_bracketed() {
        let e = Endpoint {
            host: "fd00::1".into(),
            port: 80,
        };
        assert_eq!(e.to_string(), "[fd00::1]:80");
    }

    #[test]
    fn instance_ids() {
        assert_eq!(
            instance_id("myteam_web.instance-a5f2bd75-caaa-11e8-a129-70b3d5800001._app.1")
                .as_deref(),
            Some("myteam_web.instance-a5f2bd75-caaa-11e8-a129-70b3d5800001")
        );
        assert_eq!(
            instance_id("my-app.49d976d3-9c6f-11e6-93cb-0242216b9f0d").as_deref(),
            Some("my-app.marathon-49d976d3-9c6f-11e6-93cb-0242216b9f0d")
        );
    }

    #[test]
    fn running_without_state_field() {
        let t = Task {
            started_at: Some("2015-01-01T00:00:00.000Z".into()),
            ..Task::default()
        };
        assert!(is_running(&t));
        assert!(!is_running(&Task::default()));
    }
}
