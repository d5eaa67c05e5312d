//! The OpenAPI description served at `/api/openapi.json` against the real answers: every operation it lists is
//! called on the running binary, and each answer's status, content type and JSON body must be what it declares.

mod common;

use common::{cluster, plain_app, start_against};
use serde_json::Value;
use std::collections::BTreeSet;

/// Checks `v` against `schema` (the subset of OpenAPI 3's schema language the description uses).
fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return validate(spec, &spec["components"]["schemas"][name], v, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true || schema.get("type").is_none() {
            Ok(())
        } else {
            Err(format!("{at}: null where {schema} is declared"))
        };
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("{at}: unknown type {other}")),
    };
    if !ok {
        return Err(format!("{at}: {v} is not a {}", schema["type"]));
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {schema}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let k = r.as_str().unwrap_or_default();
            if !o.contains_key(k) {
                return Err(format!("{at}: required {k} missing"));
            }
        }
        for (k, val) in o {
            let at = format!("{at}.{k}");
            match schema["properties"].get(k) {
                Some(s) => validate(spec, s, val, &at)?,
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        validate(spec, s, val, &at)?;
                    }
                }
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, item) in a.iter().enumerate() {
            validate(spec, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_answer_is_the_real_one() {
    let m = cluster().await;
    plain_app(&m, "/web", 2).await;
    let r = start_against(&m.url(), &[]);
    let t = std::time::Instant::now();
    while r.get("/status").await.0 != 200 {
        assert!(t.elapsed().as_secs() < 10, "not ready: {}", r.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, body) = r.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    let spec: Value = serde_json::from_str(&body).expect("the description is JSON");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    let rule = r#"{"id":"/web","acl":"path_beg /web","config":{"sticky":"true"}}"#;
    // (method, documented path, real path, body, the status this call must get)
    let calls: &[(&str, &str, &str, Option<&str>, u16)] = &[
        ("get", "/status", "/status", None, 200),
        ("get", "/readyz", "/readyz", None, 200),
        ("get", "/healthz", "/healthz", None, 200),
        ("get", "/metrics", "/metrics", None, 200),
        ("get", "/api/state", "/api/state", None, 200),
        ("post", "/api/services", "/api/services", Some(rule), 200),
        (
            "post",
            "/api/services",
            "/api/services",
            Some(r#"{"id":"/web","acl":"path_beg"}"#),
            400,
        ),
        ("get", "/api/services", "/api/services", None, 200),
        ("get", "/api/routes", "/api/routes", None, 200),
        ("get", "/api/services/{id}", "/api/services/web", None, 200),
        ("get", "/api/services/{id}", "/api/services/nope", None, 404),
        (
            "put",
            "/api/services/{id}",
            "/api/services/web",
            Some(rule),
            200,
        ),
        (
            "delete",
            "/api/services/{id}",
            "/api/services/web",
            None,
            200,
        ),
        (
            "delete",
            "/api/services/{id}",
            "/api/services/web",
            None,
            400,
        ),
        ("get", "/api/haproxy", "/api/haproxy", None, 404),
        (
            "post",
            "/api/marathon/event_callback",
            "/api/marathon/event_callback",
            Some("{}"),
            404,
        ),
        ("get", "/api/openapi.json", "/api/openapi.json", None, 200),
        ("get", "/", "/", None, 200),
    ];
    let client = reqwest::Client::new();
    let mut covered = BTreeSet::new();
    for (method, doc, real, body, want) in calls {
        let mut rb = client.request(
            method.to_uppercase().parse().unwrap(),
            format!("{}{real}", r.api),
        );
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let text = resp.text().await.unwrap();
        assert_eq!(status, *want, "{method} {real}: {text}");
        let op = &spec["paths"][doc][method];
        assert!(op.is_object(), "{method} {doc} is not documented");
        let answer = &op["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {doc}: {status} is not documented"
        );
        let content = &answer["content"][&ctype];
        assert!(
            content.is_object(),
            "{method} {doc} {status}: {ctype} is not documented"
        );
        if ctype == "application/json" {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {real}: {e}: {text}"));
            if let Err(e) = validate(&spec, &content["schema"], &v, &format!("{method} {real}")) {
                panic!("{e}\n{text}");
            }
        }
        covered.insert((doc.to_string(), method.to_string()));
    }
    // Every documented operation was called.
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            assert!(
                covered.contains(&(path.clone(), method.clone())),
                "{method} {path} never checked"
            );
        }
    }
}
