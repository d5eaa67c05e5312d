//! Bamboo's rule API: `GET/POST /api/services`, `PUT/DELETE /api/services/<id>`, plus `GET /api/services/<id>`.
//! Bodies, status codes and error texts as Bamboo's; every rule is validated before anything is stored.

use super::{respond, ApiState, Resp};
use crate::bamboo::gojson;
use crate::rules::acl;
use crate::rules::table::Balance;
use crate::rules::Service;
use crate::store::StoreError;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;

pub const MAX_BODY: usize = 1024 * 1024;

/// Bamboo's plain-text error: message plus newline, `nosniff`.
pub fn text_error(status: StatusCode, msg: &str) -> Resp {
    let mut r = respond(status, "text/plain; charset=utf-8", format!("{msg}\n"));
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json(body: Vec<u8>) -> Resp {
    respond(StatusCode::OK, "application/json", body)
}

fn store_error(e: StoreError) -> Resp {
    match e {
        StoreError::NotFound => text_error(StatusCode::BAD_REQUEST, &e.to_string()),
        StoreError::Unavailable(m) => text_error(StatusCode::SERVICE_UNAVAILABLE, &m),
        StoreError::Failed(m) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

/// A request body as Bamboo decodes it: top-level keys case-insensitive, `config` values strings.
struct Decoded {
    id: String,
    acl: String,
    config: Option<BTreeMap<String, String>>,
}

fn decode(body: &[u8]) -> Option<Decoded> {
    let map: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    let mut d = Decoded {
        id: String::new(),
        acl: String::new(),
        config: None,
    };
    for (k, v) in map {
        match k.to_ascii_lowercase().as_str() {
            "id" => d.id = string_or_null(v)?,
            "acl" => d.acl = string_or_null(v)?,
            "config" => {
                d.config = match v {
                    Value::Null => None,
                    Value::Object(o) => Some(
                        o.into_iter()
                            .map(|(k, v)| string_or_null(v).map(|s| (k, s)))
                            .collect::<Option<_>>()?,
                    ),
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    Some(d)
}

fn string_or_null(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn normalise_id(id: &str) -> String {
    if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/{id}")
    }
}

/// The id in `/api/services/<id>`: percent-decoded, slashes kept, `/` prepended.
fn path_id(path: &str) -> String {
    let raw = path.strip_prefix("/api/services/").unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    normalise_id(&decoded)
}

/// Checks what will be stored; the message names the rule and what is wrong.
fn validate(id: &str, config: &BTreeMap<String, String>, check_acl: bool) -> Result<(), String> {
    let fields = std::iter::once(("id", id)).chain(
        config
            .iter()
            .flat_map(|(k, v)| [("config key", k.as_str()), ("config value", v.as_str())]),
    );
    for (what, text) in fields {
        if let Some((pos, c)) = crate::rules::control_char(text) {
            return Err(format!(
                "control character {c:?} at byte {pos} of the {what} {text:?} (rules end up in haproxy.cfg)"
            ));
        }
    }
    if let Some(acl) = config
        .get("Acl")
        .filter(|a| check_acl && !a.trim().is_empty())
    {
        acl::parse(acl).map_err(|e| format!("invalid ACL for {id}: {e}"))?;
    }
    if let Some(b) = config.get("balance") {
        Balance::parse(b).map_err(|e| format!("invalid config for {id}: {e}"))?;
    }
    Ok(())
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(text_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {max} bytes (--api-max-body)"),
            ))
        }
        Err(_) => Err(text_error(
            StatusCode::BAD_REQUEST,
            "Unable to decode JSON request",
        )),
    }
}

/// One line per rule change, under the `rattan::audit` target (a log pipeline can route it apart): who, what, the
/// rule before and after (as the API shows rules).
fn audit(who: &str, action: &str, id: &str, before: Option<&Service>, after: Option<&Service>) {
    let show = |s: Option<&Service>| {
        s.map_or_else(
            || "null".to_string(),
            |s| String::from_utf8_lossy(&gojson::to_vec(s)).into_owned(),
        )
    };
    tracing::info!(
        target: "rattan::audit",
        who,
        action,
        id,
        before = %show(before),
        after = %show(after),
        "rule changed"
    );
}

/// Handles `/api/services…`; `None` when the path is not ours.
pub async fn route(state: &ApiState, req: Request<Incoming>) -> Option<Resp> {
    let path = req.uri().path().to_string();
    let is_collection = path == "/api/services" || path == "/api/services/";
    let is_item = path.starts_with("/api/services/") && !is_collection;
    if !is_collection && !is_item {
        return None;
    }
    let method = req.method().clone();
    let snap = state.publisher.load();
    let who = super::who(&req);
    Some(match (method, is_item) {
        (Method::GET, false) => {
            // Reads come from the snapshot: what is routing now, even while the store is unreachable. Both stores
            // keep `Acl` equal to `Config["Acl"]`, as Bamboo's read does.
            json(gojson::to_vec(&snap.rules.services))
        }
        (Method::GET, true) => match snap.rules.services.get(&path_id(&path)) {
            Some(s) => json(gojson::to_vec(s)),
            None => text_error(
                StatusCode::NOT_FOUND,
                &format!("no rule for {}", path_id(&path)),
            ),
        },
        (Method::POST, false) | (Method::PUT, true) => {
            let body = match read_body(req, state.max_body).await {
                Ok(b) => b,
                Err(r) => return Some(r),
            };
            let Some(d) = decode(&body) else {
                return Some(text_error(
                    StatusCode::BAD_REQUEST,
                    "Unable to decode JSON request",
                ));
            };
            if d.id.is_empty() {
                return Some(text_error(StatusCode::BAD_REQUEST, "can not use empty ID"));
            }
            let id = normalise_id(&d.id);
            let mut stored = d.config.clone().unwrap_or_default();
            if !d.acl.is_empty() {
                stored.insert("Acl".to_string(), d.acl.clone());
            }
            if let Err(msg) = validate(&id, &stored, state.check_acls) {
                return Some(text_error(StatusCode::BAD_REQUEST, &msg));
            }
            let service = Service {
                id: id.clone(),
                acl: stored.get("Acl").cloned().unwrap_or_default(),
                config: Some(stored),
            };
            let Some(store) = &state.store else {
                return Some(text_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no rule store configured",
                ));
            };
            let before = snap.rules.services.get(&id).cloned();
            let after = service.clone();
            match store.upsert(service).await {
                // Bamboo echoes the decoded request, not the stored form.
                Ok(()) => {
                    let action = if before.is_some() { "update" } else { "create" };
                    audit(&who, action, &id, before.as_ref(), Some(&after));
                    json(gojson::to_vec(&Service {
                        id,
                        acl: d.acl,
                        config: d.config,
                    }))
                }
                Err(e) => store_error(e),
            }
        }
        (Method::DELETE, true) => {
            let id = path_id(&path);
            if id == "/" {
                return Some(text_error(StatusCode::BAD_REQUEST, "can not use empty ID"));
            }
            let Some(store) = &state.store else {
                return Some(text_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no rule store configured",
                ));
            };
            let before = snap.rules.services.get(&id).cloned();
            match store.delete(&id).await {
                Ok(()) => {
                    audit(&who, "delete", &id, before.as_ref(), None);
                    json(b"null".to_vec())
                }
                Err(e) => store_error(e),
            }
        }
        _ => super::not_found(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_like_bamboo() {
        let d = decode(br#"{"ID":"x","Acl":"path_beg /x","extra":1}"#).unwrap();
        assert_eq!((d.id.as_str(), d.acl.as_str()), ("x", "path_beg /x"));
        assert!(d.config.is_none());
        let d = decode(br#"{"id":"/x","config":{"Acl":"hdr(host) -i a","weight":"2"}}"#).unwrap();
        assert_eq!(d.config.unwrap().len(), 2);
        assert!(decode(br#"{"id":5}"#).is_none());
        assert!(decode(br#"{"id":"x","config":{"Acl":1}}"#).is_none());
        assert!(decode(b"[1]").is_none());
    }

    #[test]
    fn ids_in_paths() {
        assert_eq!(path_id("/api/services//grp/app"), "/grp/app");
        assert_eq!(path_id("/api/services/grp/app"), "/grp/app");
        assert_eq!(path_id("/api/services/%2Fgrp%2Fapp"), "/grp/app");
    }
}
