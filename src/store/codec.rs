//! Rules as Bamboo keeps them: the store's error, and the ZooKeeper node format (Go's query escaping of ids, the
//! v2 JSON body, the v1 bare ACL) that both stores and the API share; publishing into the snapshot.

use crate::rules::Rules;
use crate::rules::Service;
use crate::snapshot::Publisher;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bamboo's text for an unknown id, kept for scripts that match on it.
    #[error("zk: node does not exist")]
    NotFound,
    /// The store cannot take writes now (ZooKeeper down, damaged file); routing goes on with the last rules.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

pub type Services = crate::rules::ServiceMap;

// ---- Bamboo's encodings -------------------------------------------------------------------------------------

/// Go's `url.QueryEscape`: `A–Z a–z 0–9 - _ . ~` kept, space → `+`, the rest `%XX` upper-case.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`; `None` for a malformed escape or invalid UTF-8.
pub fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The V2 body Bamboo writes: `{"version":"2","config":{…}}`, keys sorted, Go's escaping.
pub fn encode_v2(config: &BTreeMap<String, String>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct V2<'a> {
        version: &'static str,
        config: &'a BTreeMap<String, String>,
    }
    crate::bamboo::gojson::to_vec(&V2 {
        version: "2",
        config,
    })
}

/// Reads a child's body: V2 when it decodes as `{"version":"2","config":{…}|null}`, otherwise the whole body is a
/// V1 raw ACL string (so every body reads as something, as in Bamboo).
pub fn decode_body(id: &str, body: &[u8]) -> Service {
    #[derive(serde::Deserialize)]
    struct V2 {
        version: String,
        config: Option<BTreeMap<String, String>>,
    }
    match serde_json::from_slice::<V2>(body) {
        Ok(v) if v.version == "2" => Service {
            id: id.to_string(),
            acl: v
                .config
                .as_ref()
                .and_then(|c| c.get("Acl").cloned())
                .unwrap_or_default(),
            config: v.config,
        },
        _ => {
            let acl = String::from_utf8_lossy(body).into_owned();
            Service {
                id: id.to_string(),
                acl: acl.clone(),
                config: Some([("Acl".to_string(), acl)].into()),
            }
        }
    }
}

pub(super) fn publish(publisher: &Publisher, services: &Services) {
    publisher.set_rules(Arc::new(Rules {
        services: services.clone(),
    }));
}
