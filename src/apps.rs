//! What discovery makes of Marathon's apps and tasks: the views every later stage reads (rules, the snapshot, the
//! proxy, the HAProxy renderer). Below all of them; imports only Marathon's own types.

use crate::marathon::address::Endpoint;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckView {
    pub protocol: String,
    pub path: String,
    pub port_index: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    /// Bamboo's `Host`/`Port`: the address of port index 0.
    pub host: Arc<str>,
    pub port: u32,
    pub ports: Vec<u32>,
    pub state: String,
    /// All health results alive (true when the app has no checks).
    pub alive: bool,
    pub ready: bool,
    /// Running, alive (unless health is ignored), ready, and not draining: gets traffic.
    pub routable: bool,
    /// An old task of a blue/green deployment that its replacement's health lets go: no new request or
    /// connection, what is in flight completes (`bluegreen`).
    pub draining: bool,
    /// Reachable address per service-port index.
    pub endpoints: Vec<Option<Endpoint>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppView {
    pub id: String,
    pub escaped_id: String,
    pub mesos_dns_id: String,
    pub split_id: Vec<String>,
    pub labels: Arc<BTreeMap<String, String>>,
    pub env: Arc<BTreeMap<String, String>>,
    pub health_checks: Vec<HealthCheckView>,
    pub health_check_path: String,
    pub health_check_protocol: String,
    pub readiness_check_path: String,
    pub service_ports: Vec<u32>,
    pub port_names: Vec<String>,
    pub discovery_ports: Vec<crate::marathon::model::DiscoveryPort>,
    pub tasks: Vec<TaskView>,
    /// Routable backends per service-port index.
    pub backends: Vec<Vec<Endpoint>>,
    /// Marathon's `instances` (the count asked for), when given.
    pub instances: Option<u32>,
    /// `HAPROXY_DEPLOYMENT_GROUP`, read once when the view is built.
    pub deployment_group: Option<String>,
    /// Set on an app served for a deployment group (`bluegreen`), and on the members of a group that could not
    /// be merged (with the reason).
    pub deployment: Option<Arc<Deployment>>,
}

/// What a blue/green deployment group made of its apps.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Deployment {
    pub group: String,
    /// The member apps, oldest first: the last is the new colour.
    pub members: Vec<String>,
    /// Old tasks draining.
    pub draining: usize,
    /// `HAPROXY_DEPLOYMENT_TARGET_INSTANCES` as read (1 when absent, as marathon-lb).
    pub target: u32,
    /// Why the group is not served as written (nothing is drained, or nothing is merged).
    pub error: Option<String>,
}

impl AppView {
    pub fn healthy_backends(&self, port_index: usize) -> &[Endpoint] {
        self.backends
            .get(port_index)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The draining backends of a port index: still listed (stats, `server … disabled`), sent nothing new.
    pub fn draining_backends(&self, port_index: usize) -> impl Iterator<Item = &Endpoint> {
        self.tasks
            .iter()
            .filter(|t| t.draining)
            .filter_map(move |t| t.endpoints.get(port_index)?.as_ref())
    }
}

pub type Apps = BTreeMap<String, Arc<AppView>>;
