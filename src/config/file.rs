//! The config file: rattan's TOML, or Bamboo's JSON (`{"Marathon":…,"Bamboo":…,"HAProxy":…}`) mapped onto the same
//! fields.

use super::cli::{EventMode, HaproxyOpts, Opts};
use super::value::{bad, ConfigError};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `marathon`: a comma-separated string, or a list.
pub(super) fn string_or_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrList {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<StringOrList>::deserialize(d)? {
        None => None,
        Some(StringOrList::One(s)) => Some(s.split(',').map(str::to_string).collect()),
        Some(StringOrList::Many(v)) => Some(v),
    })
}

/// Whether the file at `path` is Bamboo's JSON (what [`load_file`] reads it as).
pub(super) fn is_bamboo_json(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.trim_start().starts_with('{'))
}

/// Reads the config file (TOML, or Bamboo's JSON), its relative paths resolved: see [`anchor_paths`].
pub fn load_file(path: &Path) -> Result<Opts, ConfigError> {
    let mut o = parse_file(path)?;
    anchor_paths(&mut o, path.parent().unwrap_or(Path::new(".")));
    Ok(o)
}

/// A relative path in a config file names a file beside the config file, so rattan starts the same from any
/// directory. Bamboo resolved them against its working directory (its example has `config/haproxy_template.cfg`
/// in `config/production.json`): a path that exists from there and not beside the file keeps Bamboo's meaning.
fn anchor_paths(o: &mut Opts, dir: &Path) {
    let anchor = |p: &mut Option<PathBuf>| {
        if let Some(rel) = p.as_ref().filter(|p| p.is_relative()) {
            let beside = dir.join(rel);
            if beside.exists() || !rel.exists() {
                *p = Some(beside);
            }
        }
    };
    for p in [
        &mut o.data_dir,
        &mut o.tls_cert_dir,
        &mut o.marathon_ca,
        &mut o.marathon_client_cert,
        &mut o.marathon_client_key,
        &mut o.access_log_file,
        &mut o.haproxy.template_path,
        &mut o.haproxy.output_path,
    ] {
        anchor(p);
    }
}

/// Parses the config file: TOML, or Bamboo's JSON when it starts with `{` (keys matched case-insensitively).
fn parse_file(path: &Path) -> Result<Opts, ConfigError> {
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
fn bamboo_json(v: &Value) -> Result<Opts, ConfigError> {
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
    let mut f = Opts {
        marathon: string(&["marathon", "endpoint"])?
            .map(|s| s.split(',').map(str::to_string).collect()),
        marathon_user: string(&["marathon", "user"])?,
        marathon_password: string(&["marathon", "password"])?,
        callback_url: string(&["bamboo", "endpoint"])?,
        zk: string(&["bamboo", "zookeeper", "host"])?,
        zk_path: string(&["bamboo", "zookeeper", "path"])?,
        ..Opts::default()
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
    f.haproxy = HaproxyOpts {
        template_path: string(&["haproxy", "templatepath"])?.map(PathBuf::from),
        output_path: string(&["haproxy", "outputpath"])?.map(PathBuf::from),
        reload_command: string(&["haproxy", "reloadcommand"])?,
        reload_validation_command: string(&["haproxy", "reloadvalidationcommand"])?,
        reload_cleanup_command: string(&["haproxy", "reloadcleanupcommand"])?,
        ..HaproxyOpts::default()
    };
    Ok(f)
}
