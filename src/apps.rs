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
    /// Running, alive (unless health is ignored), ready: gets traffic.
    pub routable: bool,
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
}

impl AppView {
    pub fn healthy_backends(&self, port_index: usize) -> &[Endpoint] {
        self.backends
            .get(port_index)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

pub type Apps = BTreeMap<String, Arc<AppView>>;
