//! `GET /api/state`: Bamboo's template data as JSON, served from the snapshot (Bamboo fetched Marathon and ZooKeeper
//! on every request and answered `200 null` on any error).

use crate::bamboo::app::{bamboo_app, BambooApp};
use crate::snapshot::Snapshot;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct State<'a> {
    pub apps: Vec<BambooApp<'a>>,
    pub services: &'a crate::rules::ServiceMap,
}

pub fn render(snap: &Snapshot) -> Vec<u8> {
    let state = State {
        apps: snap.apps.values().map(|a| bamboo_app(a)).collect(),
        services: &snap.rules.services,
    };
    crate::bamboo::gojson::to_vec(&state)
}
