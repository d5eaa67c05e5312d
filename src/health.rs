//! Readiness: each input of the snapshot (Marathon, the rules, HAProxy's config) reports its state here as it
//! changes; `/status`, `/readyz` and the metrics read it. Reporting never changes routing: a not-ready rattan
//! keeps serving its last good table, it only says so.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One input's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Working.
    Ok,
    /// Failing, but what it gave last still serves (Marathon unreachable after a good snapshot, ZooKeeper
    /// disconnected with the rules loaded): ready, unless `--max-staleness` says the last good is too old.
    Degraded,
    /// What rattan serves is not what the operator asked for (no snapshot yet, damaged rules, config not applied).
    Failing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub state: State,
    pub detail: String,
    /// When `state` last changed.
    #[serde(serialize_with = "unix_seconds")]
    pub since: SystemTime,
    /// When this input last worked; `None` if it never has.
    #[serde(serialize_with = "unix_seconds_opt")]
    pub last_ok: Option<SystemTime>,
}

fn secs(t: &SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or_default()
}

fn unix_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(secs(t))
}

fn unix_seconds_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_f64(secs(t)),
        None => s.serialize_none(),
    }
}

/// The names the inputs report under.
pub const MARATHON: &str = "marathon";
pub const RULES: &str = "rules";
pub const ZOOKEEPER: &str = "zookeeper";
pub const HAPROXY: &str = "haproxy";

#[derive(Debug, Default)]
pub struct Health {
    checks: Mutex<BTreeMap<&'static str, Check>>,
    /// `--max-staleness`: a degraded Marathon whose last snapshot is older than this makes rattan not ready.
    max_staleness: Mutex<Option<Duration>>,
}

/// One check as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: &'static str,
    #[serde(flatten)]
    pub check: Check,
    /// Whether this check keeps rattan from being ready.
    pub blocks: bool,
}

impl Health {
    pub fn set_max_staleness(&self, d: Option<Duration>) {
        *self.max_staleness.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// Records `name`'s state; `since` moves only when the state does (a detail can change every retry).
    pub fn report(&self, name: &'static str, state: State, detail: impl Into<String>) {
        let now = SystemTime::now();
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let detail = detail.into();
        let last_ok = |prev: Option<SystemTime>| if state == State::Ok { Some(now) } else { prev };
        match checks.get_mut(name) {
            Some(c) => {
                if c.state != state {
                    c.since = now;
                }
                c.state = state;
                c.detail = detail;
                c.last_ok = last_ok(c.last_ok);
            }
            None => {
                checks.insert(
                    name,
                    Check {
                        state,
                        detail,
                        since: now,
                        last_ok: last_ok(None),
                    },
                );
            }
        }
    }

    /// Every check with whether it blocks readiness. An input that never reported is not listed: the server
    /// registers the ones it runs at start (as failing: "waiting for …").
    pub fn verdicts(&self) -> Vec<Verdict> {
        let now = SystemTime::now();
        let max = *self.max_staleness.lock().unwrap_or_else(|p| p.into_inner());
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .iter()
            .map(|(name, c)| {
                let mut check = c.clone();
                let blocks = match c.state {
                    State::Ok => false,
                    State::Failing => true,
                    State::Degraded => match (max, c.last_ok) {
                        (Some(max), Some(ok)) => {
                            let age = now.duration_since(ok).unwrap_or_default();
                            if age > max {
                                check.detail = format!(
                                    "last good snapshot is {}s old (--max-staleness {}): {}",
                                    age.as_secs(),
                                    humantime::format_duration(max),
                                    c.detail
                                );
                                true
                            } else {
                                false
                            }
                        }
                        _ => false,
                    },
                };
                Verdict {
                    name,
                    check,
                    blocks,
                }
            })
            .collect()
    }

    /// Why rattan is not ready, one line per reason; empty when ready.
    pub fn reasons(&self) -> Vec<String> {
        self.verdicts()
            .into_iter()
            .filter(|v| v.blocks)
            .map(|v| format!("{}: {}", v.name, v.check.detail.replace('\n', " ")))
            .collect()
    }

    pub fn state_of(&self, name: &str) -> Option<State> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|c| c.state)
    }
}

/// Whether nothing in `verdicts` keeps rattan from being ready.
pub fn ready(verdicts: &[Verdict]) -> bool {
    !verdicts.iter().any(|v| v.blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_blocks_only_past_max_staleness() {
        let h = Health::default();
        h.report(MARATHON, State::Failing, "waiting for the first snapshot");
        assert_eq!(h.reasons().len(), 1);
        h.report(MARATHON, State::Ok, "12 apps");
        assert!(h.reasons().is_empty());
        let since = h.verdicts()[0].check.since;
        h.report(MARATHON, State::Degraded, "connection refused");
        assert!(
            h.reasons().is_empty(),
            "no --max-staleness: degraded is ready"
        );
        assert!(h.verdicts()[0].check.since >= since);
        h.set_max_staleness(Some(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        let r = h.reasons();
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("--max-staleness") && r[0].contains("connection refused"),
            "{r:?}"
        );
        h.set_max_staleness(Some(Duration::from_secs(3600)));
        assert!(h.reasons().is_empty());
    }

    #[test]
    fn since_moves_with_the_state_only() {
        let h = Health::default();
        h.report(RULES, State::Failing, "a");
        let first = h.verdicts()[0].check.since;
        std::thread::sleep(Duration::from_millis(5));
        h.report(RULES, State::Failing, "b");
        assert_eq!(h.verdicts()[0].check.since, first);
        assert_eq!(h.verdicts()[0].check.detail, "b");
        h.report(RULES, State::Ok, "loaded");
        assert!(h.verdicts()[0].check.since > first);
    }
}
