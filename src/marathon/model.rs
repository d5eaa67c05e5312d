//! Tolerant serde types for Marathon 0.13 – 1.10 apps, tasks and events.
//!
//! Every field is optional, `null` is accepted anywhere, unknown fields are ignored and numbers may arrive as
//! `1.0`. A value of the wrong type degrades to the field's default instead of failing the whole app: one odd app
//! must never stop the others from routing.

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Deserialize anything; fall back to `T::default()` when the value is `null` or of another shape. The value is
/// borrowed as raw text and parsed again on its own, so no intermediate `Value` tree is built (apps and tasks are
/// always parsed from a `&str`).
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let raw = <&'de RawValue>::deserialize(d)?;
    Ok(serde_json::from_str(raw.get()).unwrap_or_default())
}

/// Tasks parsed one by one from borrowed raw slices while the list is read: a malformed task is skipped, its
/// siblings stay, no copy of the JSON text is kept, and the task text is scanned once for the list and once for
/// the task. Anything but a list is no tasks.
fn lenient_tasks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Task>, D::Error> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Tasks;
    impl<'de> Visitor<'de> for Tasks {
        type Value = Vec<Task>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of tasks")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Task>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                if let Ok(t) = serde_json::from_str::<Task>(raw.get()) {
                    if !t.id.is_empty() {
                        out.push(t);
                    }
                }
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Task>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        fn visit_str<E>(self, _: &str) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E>(self) -> Result<Vec<Task>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(Tasks)
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(as_u32(&Value::deserialize(d)?))
}

fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_u32_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().filter_map(as_u32).collect(),
        _ => Vec::new(),
    })
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Labels are documented as string→string; anything else is kept as its JSON text.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// Shared with the app's views, which are rebuilt on every task change.
fn shared_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<BTreeMap<String, String>>, D::Error> {
    string_map(d).map(Arc::new)
}

/// `env` values are strings or `{"secret": "<name>"}` (1.3+). Bamboo typed it string-only and one secret broke
/// every fetch; here secrets are kept apart so templates never see a reference as if it were a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    pub vars: Arc<BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut env = Env::default();
        let mut vars = BTreeMap::new();
        if let Value::Object(m) = Value::deserialize(d)? {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        vars.insert(k, s);
                    }
                    Value::Object(o) => {
                        let name = o.get("secret").and_then(Value::as_str).unwrap_or_default();
                        env.secrets.insert(k, name.to_string());
                    }
                    Value::Number(n) => {
                        vars.insert(k, n.to_string());
                    }
                    Value::Bool(b) => {
                        vars.insert(k, b.to_string());
                    }
                    _ => {}
                }
            }
        }
        env.vars = Arc::new(vars);
        Ok(env)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct App {
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "shared_string_map")]
    pub labels: Arc<BTreeMap<String, String>>,
    pub env: Env,
    /// Legacy service ports (output ≤ 1.4).
    #[serde(deserialize_with = "lenient_u32_list")]
    pub ports: Vec<u32>,
    #[serde(deserialize_with = "lenient")]
    pub port_definitions: Vec<PortDefinition>,
    #[serde(deserialize_with = "lenient")]
    pub require_ports: bool,
    #[serde(deserialize_with = "lenient")]
    pub container: Option<Container>,
    #[serde(deserialize_with = "lenient")]
    pub ip_address: Option<IpAddressSpec>,
    #[serde(deserialize_with = "lenient")]
    pub networks: Vec<Network>,
    #[serde(deserialize_with = "lenient")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(deserialize_with = "lenient")]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(deserialize_with = "lenient")]
    pub readiness_check_results: Vec<ReadinessCheckResult>,
    #[serde(deserialize_with = "lenient")]
    pub deployments: Vec<Value>,
    #[serde(deserialize_with = "lenient_tasks")]
    pub tasks: Vec<Task>,
    #[serde(deserialize_with = "lenient_u32")]
    pub instances: Option<u32>,
    #[serde(deserialize_with = "lenient_string")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PortDefinition {
    #[serde(deserialize_with = "lenient_u32")]
    pub port: Option<u32>,
    #[serde(deserialize_with = "lenient_string")]
    pub protocol: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub docker: Option<Docker>,
    /// 1.5+ location of the mappings.
    #[serde(deserialize_with = "lenient")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Docker {
    #[serde(deserialize_with = "lenient_string")]
    pub network: Option<String>,
    /// ≤ 1.4 location of the mappings.
    #[serde(deserialize_with = "lenient")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PortMapping {
    #[serde(deserialize_with = "lenient_u32")]
    pub container_port: Option<u32>,
    /// Absent means "not requested" (container mode); `Some(0)` means "any host port".
    #[serde(deserialize_with = "lenient_u32")]
    pub host_port: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub service_port: Option<u32>,
    #[serde(deserialize_with = "lenient_string")]
    pub protocol: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpAddressSpec {
    #[serde(deserialize_with = "lenient")]
    pub discovery: Option<Discovery>,
    #[serde(deserialize_with = "lenient_string")]
    pub network_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Discovery {
    #[serde(deserialize_with = "lenient")]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DiscoveryPort {
    #[serde(deserialize_with = "lenient_u32")]
    pub number: Option<u32>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Network {
    #[serde(deserialize_with = "lenient_string")]
    pub mode: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheck {
    #[serde(deserialize_with = "lenient_string")]
    pub protocol: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub path: Option<String>,
    #[serde(deserialize_with = "lenient_u32")]
    pub port_index: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub port: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub interval_seconds: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReadinessCheck {
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub path: Option<String>,
    #[serde(deserialize_with = "lenient_u32")]
    pub timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReadinessCheckResult {
    #[serde(deserialize_with = "lenient_string")]
    pub task_id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub ready: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    #[serde(deserialize_with = "lenient")]
    pub host: String,
    #[serde(deserialize_with = "lenient_u32_list")]
    pub ports: Vec<u32>,
    #[serde(deserialize_with = "lenient")]
    pub ip_addresses: Vec<IpAddr>,
    #[serde(deserialize_with = "lenient_string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub started_at: Option<String>,
    /// `None` = absent (no results yet), which is not the same as healthy.
    #[serde(deserialize_with = "lenient")]
    pub health_check_results: Option<Vec<HealthResult>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct IpAddr {
    #[serde(deserialize_with = "lenient")]
    pub ip_address: String,
    #[serde(deserialize_with = "lenient_string")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthResult {
    #[serde(deserialize_with = "lenient")]
    pub alive: bool,
}

/// The result of parsing a `/v2/apps` body: the apps that parsed, and a description of each one that did not.
#[derive(Debug, Default)]
pub struct ParsedApps {
    pub apps: Vec<App>,
    pub rejected: Vec<String>,
}

/// Parses a `/v2/apps` (or `{"app": …}`) body. The outer shape must be right (a body without `apps` is an error,
/// never "zero apps"); each app inside stands alone.
pub fn parse_apps(body: &[u8]) -> Result<ParsedApps, String> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        apps: Option<Vec<&'a RawValue>>,
        #[serde(borrow)]
        app: Option<&'a RawValue>,
    }
    let outer: Outer = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    match (outer.apps, outer.app) {
        (Some(apps), _) => Ok(parse_raw_apps(&apps)),
        (None, Some(app)) => Ok(parse_raw_apps(&[app])),
        (None, None) => Err("response has no \"apps\" list".into()),
    }
}

fn parse_raw_apps(raws: &[&RawValue]) -> ParsedApps {
    let mut out = ParsedApps::default();
    for raw in raws {
        match serde_json::from_str::<App>(raw.get()) {
            Ok(app) if !app.id.is_empty() => out.apps.push(app),
            Ok(_) => out.rejected.push(format!("{}: empty id", snippet(raw))),
            Err(e) => out.rejected.push(format!("{}: {e}", snippet(raw))),
        }
    }
    out
}

fn snippet(raw: &RawValue) -> String {
    raw.get().chars().take(80).collect()
}

impl App {
    pub fn port_mappings(&self) -> &[PortMapping] {
        let c = match &self.container {
            Some(c) => c,
            None => return &[],
        };
        if let Some(m) = &c.port_mappings {
            return m;
        }
        c.docker
            .as_ref()
            .and_then(|d| d.port_mappings.as_deref())
            .unwrap_or(&[])
    }

    pub fn has_deployments(&self) -> bool {
        !self.deployments.is_empty()
    }
}

/// Parses ISO-8601 timestamps with 0–9 fractional digits (`2019-05-02T10:11:12Z`, `….89Z`, `….123456789Z`).
pub fn parse_timestamp(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_any_fraction() {
        for s in [
            "2019-05-02T10:11:12Z",
            "2019-05-02T10:11:12.8Z",
            "2019-05-02T10:11:12.89Z",
            "2019-05-02T10:11:12.345Z",
            "2019-05-02T10:11:12.123456789Z",
        ] {
            assert!(parse_timestamp(s).is_some(), "{s}");
        }
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn nulls_floats_secrets_and_unknown_fields() {
        let body = br#"{"apps":[
          {"id":"/a","ports":[10000.0,null],"env":{"A":"1","DB":{"secret":"db-pass"},"N":3},
           "labels":null,"container":null,"unreachableStrategy":"disabled","somethingNew":{"x":1},
           "tasks":[{"id":"a.1","host":"h","ports":[31000.0],"state":"TASK_RUNNING","healthCheckResults":null},
                    "garbage"]},
          {"id":"/b","healthChecks":"not-a-list","instances":"2"},
          {"id":17}
        ]}"#;
        let parsed = parse_apps(body).unwrap();
        assert_eq!(parsed.apps.len(), 2, "{:?}", parsed.rejected);
        assert_eq!(parsed.rejected.len(), 1);
        let a = &parsed.apps[0];
        assert_eq!(a.ports, vec![10000]);
        assert_eq!(a.env.vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(a.env.vars.get("N").map(String::as_str), Some("3"));
        assert_eq!(a.env.secrets.get("DB").map(String::as_str), Some("db-pass"));
        assert!(a.labels.is_empty());
        let tasks = &a.tasks;
        assert_eq!(
            tasks.len(),
            1,
            "the malformed task is skipped, its sibling stays"
        );
        assert_eq!(tasks[0].ports, vec![31000]);
        assert!(tasks[0].health_check_results.is_none());
        assert!(parsed.apps[1].health_checks.is_empty());
        assert_eq!(parsed.apps[1].instances, Some(2));
    }

    #[test]
    fn wrong_outer_shape_is_an_error() {
        assert!(parse_apps(b"{\"message\":\"Not Authenticated!\"}").is_err());
        assert!(parse_apps(b"{\"apps\":[]}").unwrap().apps.is_empty());
        assert!(parse_apps(b"<html>").is_err());
    }
}
