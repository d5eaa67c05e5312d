//! Routing rules: Bamboo's "services" (ACL text plus a free-form config map) keyed by app id, the HAProxy ACL
//! language they are written in, marathon-lb labels, and the compiled route table.

pub mod acl;
pub mod auth;
pub mod labels;
pub mod ports;
pub mod table;

use std::collections::BTreeMap;

/// The first control character (C0 or DEL) of `s` and where it is. A rule, an id or a label value carrying one
/// could end a line of haproxy.cfg and start a directive of its own: none is taken from any source.
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.char_indices().find(|(_, c)| c.is_ascii_control())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub acl: String,
    #[serde(default)]
    pub config: Option<BTreeMap<String, String>>,
}

/// Rules by id, in id order.
pub type ServiceMap = imbl::OrdMap<String, Service>;

/// The rules as the snapshot sees them.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub services: ServiceMap,
}
