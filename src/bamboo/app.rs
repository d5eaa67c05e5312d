//! Bamboo's app JSON (`/api/state`'s `Apps`, its templates' `.Apps`), field for field, from an app view.

use crate::apps::AppView;
use crate::marathon::model::DiscoveryPort;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BambooApp<'a> {
    pub id: &'a str,
    pub mesos_dns_id: &'a str,
    pub escaped_id: &'a str,
    pub health_check_path: &'a str,
    pub health_check_protocol: &'a str,
    pub health_checks: Vec<BambooHealthCheck<'a>>,
    pub readiness_check_path: &'a str,
    pub tasks: Vec<BambooTask<'a>>,
    pub service_port: u32,
    pub service_ports: Option<&'a [u32]>,
    pub env: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub split_id: &'a [String],
    #[serde(rename = "ipAddress")]
    pub ip_address: IpAddress<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BambooHealthCheck<'a> {
    pub protocol: &'a str,
    pub path: &'a str,
    pub port_index: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BambooTask<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub port: u32,
    pub ports: &'a [u32],
    pub alive: bool,
    pub state: &'a str,
    pub ready: bool,
}

#[derive(Serialize)]
pub struct IpAddress<'a> {
    pub discovery: IpDiscovery<'a>,
}

#[derive(Serialize)]
pub struct IpDiscovery<'a> {
    pub ports: Option<Vec<BambooDiscoveryPort<'a>>>,
}

#[derive(Serialize)]
pub struct BambooDiscoveryPort<'a> {
    pub number: u32,
    pub name: &'a str,
    pub protocol: &'a str,
}

fn discovery_port(p: &DiscoveryPort) -> BambooDiscoveryPort<'_> {
    BambooDiscoveryPort {
        number: p.number.unwrap_or(0),
        name: p.name.as_deref().unwrap_or(""),
        protocol: p.protocol.as_deref().unwrap_or(""),
    }
}

pub fn bamboo_app(a: &AppView) -> BambooApp<'_> {
    BambooApp {
        id: &a.id,
        mesos_dns_id: &a.mesos_dns_id,
        escaped_id: &a.escaped_id,
        health_check_path: &a.health_check_path,
        health_check_protocol: &a.health_check_protocol,
        health_checks: a
            .health_checks
            .iter()
            .map(|h| BambooHealthCheck {
                protocol: &h.protocol,
                path: &h.path,
                port_index: h.port_index,
            })
            .collect(),
        readiness_check_path: &a.readiness_check_path,
        // Bamboo drops tasks with no host or port 0.
        tasks: a
            .tasks
            .iter()
            .filter(|t| !t.host.is_empty() && t.port != 0)
            .map(|t| BambooTask {
                id: &t.id,
                host: &t.host,
                port: t.port,
                ports: &t.ports,
                alive: t.alive,
                state: &t.state,
                ready: t.ready,
            })
            .collect(),
        service_port: a.service_ports.first().copied().unwrap_or(0),
        service_ports: (!a.service_ports.is_empty()).then_some(a.service_ports.as_slice()),
        env: &a.env,
        labels: &a.labels,
        split_id: &a.split_id,
        ip_address: IpAddress {
            discovery: IpDiscovery {
                ports: (!a.discovery_ports.is_empty())
                    .then(|| a.discovery_ports.iter().map(discovery_port).collect()),
            },
        },
    }
}
