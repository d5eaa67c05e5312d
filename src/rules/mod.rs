//! Routing rules: Bamboo's "services" (ACL text plus a free-form config map) keyed by app id.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    pub id: String,
    pub acl: String,
    pub config: Option<BTreeMap<String, String>>,
}

/// The rules as the snapshot sees them; the store that fills it arrives with the rules issue.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub services: BTreeMap<String, Service>,
}
