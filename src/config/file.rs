//! The config file: rattan's TOML, or Bamboo's JSON (`{"Marathon":…,"Bamboo":…,"HAProxy":…}`) mapped onto the same
//! fields.

use super::cli::{EventMode, Mode};
use super::value::{bad, ConfigError};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The config file, in rattan's TOML form (keys are the long flag names with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub marathon: Option<StringOrList>,
    pub marathon_user: Option<String>,
    pub marathon_password: Option<String>,
    pub events: Option<EventMode>,
    pub callback_url: Option<String>,
    pub api_bind: Option<String>,
    pub http_bind: Option<String>,
    pub zk: Option<String>,
    pub zk_path: Option<String>,
    /// Bamboo's `Zookeeper.ReportingDelay`: checked and accepted, not used (rule changes apply as the watch
    /// reports them).
    pub zk_reporting_delay: Option<u64>,
    pub zk_auth: Option<String>,
    pub zk_session_timeout: Option<String>,
    pub api_token: Option<String>,
    pub api_basic: Option<String>,
    pub callback_token: Option<String>,
    pub marathon_max_event_size: Option<String>,
    pub marathon_max_body: Option<String>,
    pub api_max_connections: Option<usize>,
    pub client_timeout: Option<String>,
    pub api_auth_reads: Option<bool>,
    pub default_rule: Option<String>,
    pub default_domain: Option<String>,
    pub group: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub resync_interval: Option<String>,
    pub poll_interval: Option<String>,
    pub resync_debounce: Option<String>,
    pub resync_max_wait: Option<String>,
    pub sse_idle_timeout: Option<String>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
    pub marathon_timeout: Option<String>,
    pub callback_check_interval: Option<String>,
    pub drain_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub keep_alive_timeout: Option<String>,
    pub ignore_health: Option<bool>,
    pub prefer_host_port: Option<bool>,
    pub https_bind: Option<String>,
    pub tls_cert_dir: Option<PathBuf>,
    pub tcp_service_ports: Option<bool>,
    pub tcp_bind_address: Option<String>,
    pub access_log: Option<String>,
    pub max_connections: Option<usize>,
    pub connect_timeout: Option<String>,
    pub backend_timeout: Option<String>,
    pub backend_idle_timeout: Option<String>,
    pub max_header_size: Option<usize>,
    pub via: Option<bool>,
    pub eject_after: Option<u32>,
    pub eject_for: Option<String>,
    pub mode: Option<Mode>,
    #[serde(default)]
    pub haproxy: HaproxyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyFile {
    pub template_path: Option<PathBuf>,
    pub output_path: Option<PathBuf>,
    pub reload_command: Option<String>,
    pub reload_validation_command: Option<String>,
    pub reload_cleanup_command: Option<String>,
    pub command_timeout: Option<String>,
    pub min_interval: Option<String>,
    pub stats_bind: Option<String>,
    pub bind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub(super) fn into_list(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split(',').map(str::to_string).collect(),
            StringOrList::Many(v) => v,
        }
    }
}

/// Reads the config file: TOML, or Bamboo's JSON when it starts with `{` (keys matched case-insensitively).
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            bad(
                "config",
                format!("{} is not valid JSON: {e}", path.display()),
            )
        })?;
        bamboo_json(&v)
    } else {
        toml::from_str(&text).map_err(|e| {
            // toml's message names the key (`unknown field `x``) and the line; keep it on one line.
            let msg = e.message().to_string();
            let key = msg
                .split('`')
                .nth(1)
                .filter(|_| msg.starts_with("unknown field"))
                .unwrap_or("config")
                .to_string();
            let line = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            bad(&key, format!("{}{line}", msg.replace('\n', " ")))
        })
    }
}

fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Maps Bamboo's `{"Marathon":{…},"Bamboo":{…},"HAProxy":{…}}` onto the same settings. Unknown keys are ignored,
/// as Bamboo ignores them; a value of the wrong type is an error naming the key.
fn bamboo_json(v: &Value) -> Result<FileConfig, ConfigError> {
    let v = lower_keys(v);
    let get = |path: &[&str]| -> Option<&Value> {
        let mut cur = &v;
        for p in path {
            cur = cur.get(p)?;
        }
        Some(cur)
    };
    let string = |path: &[&str]| -> Result<Option<String>, ConfigError> {
        match get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(
                &path.join("."),
                format!("expected a string, got {other}"),
            )),
        }
    };
    let mut f = FileConfig {
        marathon: string(&["marathon", "endpoint"])?.map(StringOrList::One),
        marathon_user: string(&["marathon", "user"])?,
        marathon_password: string(&["marathon", "password"])?,
        callback_url: string(&["bamboo", "endpoint"])?,
        zk: string(&["bamboo", "zookeeper", "host"])?,
        zk_path: string(&["bamboo", "zookeeper", "path"])?,
        ..FileConfig::default()
    };
    match get(&["marathon", "useeventstream"]) {
        None | Some(Value::Null) => f.events = Some(EventMode::Callback),
        Some(Value::Bool(true)) => f.events = Some(EventMode::Sse),
        Some(Value::Bool(false)) => f.events = Some(EventMode::Callback),
        Some(other) => {
            return Err(bad(
                "Marathon.UseEventStream",
                format!("expected true or false, got {other}"),
            ))
        }
    }
    match get(&["bamboo", "zookeeper", "reportingdelay"]) {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => f.zk_reporting_delay = n.as_u64(),
        Some(other) => {
            return Err(bad(
                "Bamboo.Zookeeper.ReportingDelay",
                format!("expected whole seconds, got {other}"),
            ))
        }
    }
    f.haproxy = HaproxyFile {
        template_path: string(&["haproxy", "templatepath"])?.map(PathBuf::from),
        output_path: string(&["haproxy", "outputpath"])?.map(PathBuf::from),
        reload_command: string(&["haproxy", "reloadcommand"])?,
        reload_validation_command: string(&["haproxy", "reloadvalidationcommand"])?,
        reload_cleanup_command: string(&["haproxy", "reloadcleanupcommand"])?,
        ..HaproxyFile::default()
    };
    Ok(f)
}
