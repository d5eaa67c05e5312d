//! HAProxy sidecar: the snapshot rendered to haproxy.cfg, validated, swapped in atomically and HAProxy reloaded.
//! One pipeline task; changes that arrive while it works or waits out the minimum interval are merged.

pub mod template;

use crate::snapshot::Publisher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use template::{Extra, Renderer};

/// rattan's own template, used when no template path is given.
/// `--haproxy-stats-bind`: the default.
pub const STATS_BIND: &str = "127.0.0.1:9090";

pub const DEFAULT_TEMPLATE: &str = include_str!("../../config/haproxy_template.cfg");

#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    pub template: Option<PathBuf>,
    pub output: PathBuf,
    pub reload_command: Option<String>,
    pub validation_command: Option<String>,
    pub cleanup_command: Option<String>,
    pub command_timeout: Duration,
    pub min_interval: Duration,
    pub extra: Extra,
}

impl Default for HaproxyOptions {
    fn default() -> Self {
        HaproxyOptions {
            template: None,
            output: PathBuf::from("/etc/haproxy/haproxy.cfg"),
            reload_command: None,
            validation_command: None,
            cleanup_command: None,
            command_timeout: Duration::from_secs(30),
            min_interval: Duration::from_secs(1),
            extra: Extra::default(),
        }
    }
}

/// What `/status` and `/api/haproxy` report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Status {
    /// applied, skipped, invalid or failed.
    pub last_outcome: Option<&'static str>,
    pub last_error: Option<String>,
    pub last_success_unix: Option<f64>,
    pub reloads_applied: u64,
}

pub type SharedStatus = Arc<Mutex<Status>>;

/// One pipeline run's result; `Failed` is retried with backoff.
#[derive(Debug, PartialEq)]
enum Outcome {
    Applied,
    Skipped,
    Invalid(String),
    Failed(String),
}

/// Reads and parses the template: the file given, else the built-in default.
pub fn load_template(path: Option<&Path>) -> Result<Renderer, String> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read template {}: {e}", p.display()))?;
            Renderer::parse(&p.display().to_string(), &text)
        }
        None => Renderer::parse("haproxy_template.cfg (built in)", DEFAULT_TEMPLATE),
    }
}

/// Runs `sh -c cmd` in its own process group with a timeout; on timeout the whole group is killed and reaped.
/// Returns the combined output, or why it failed.
pub async fn run_command(cmd: &str, timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{cmd}`: {e}"))?;
    let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(64 * 1024).read_to_end(&mut buf).await;
            }
            buf
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.map_err(|e| format!("`{cmd}`: {e}"))?,
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on our own child's process group; no memory is involved.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            let _ = child.wait().await;
            return Err(format!(
                "`{cmd}` did not finish within {timeout:?} and was killed"
            ));
        }
    };
    let mut text = String::from_utf8_lossy(&out.await.unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(&err.await.unwrap_or_default()));
    let text = text.trim().to_string();
    if status.success() {
        Ok(text)
    } else {
        Err(format!("`{cmd}` failed ({status}): {text}"))
    }
}

struct Pipeline {
    opts: HaproxyOptions,
    /// The content of the last render that was reloaded successfully. A file on disk equal to the render is skipped
    /// only when it is this: a failed reload leaves the file written but not applied (Bamboo's bug #7).
    applied: Option<String>,
    status: SharedStatus,
}

impl Pipeline {
    async fn once(&mut self, publisher: &Publisher) -> Outcome {
        let m = crate::metrics::metrics();
        let started = Instant::now();
        let snap = publisher.load_full();
        let opts = self.opts.clone();
        let template = opts.template.clone();
        // Template read, data build and render are CPU work: off the async threads.
        let rendered = tokio::task::spawn_blocking(move || {
            load_template(template.as_deref())?.render(&snap, &opts.extra)
        })
        .await
        .map_err(|e| format!("render task failed: {e}"))
        .and_then(|r| r);
        m.haproxy_render_duration
            .observe(started.elapsed().as_secs_f64());
        let config = match rendered {
            Ok(c) => c,
            Err(e) => return Outcome::Invalid(e),
        };
        let output = &self.opts.output;
        let on_disk = std::fs::read_to_string(output).ok();
        if on_disk.as_deref() == Some(config.as_str())
            && self.applied.as_deref() == Some(config.as_str())
        {
            return Outcome::Skipped;
        }
        let reload_started = Instant::now();
        let file_name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "haproxy.cfg".into());
        // Beside the output, so the rename that installs it is atomic.
        let tmp = output.with_file_name(format!(".{file_name}.rattan-{}", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, &config) {
            return Outcome::Failed(format!("cannot write {}: {e}", tmp.display()));
        }
        let tmp_str = tmp.display().to_string();
        if let Some(v) = &self.opts.validation_command {
            let checked = match template::command(v, &tmp_str) {
                Ok(cmd) => run_command(&cmd, self.opts.command_timeout).await,
                Err(e) => Err(format!("validation command: {e}")),
            };
            if let Err(e) = checked {
                let _ = std::fs::remove_file(&tmp);
                return Outcome::Invalid(format!(
                    "validation failed; the running config stays: {e}"
                ));
            }
        }
        if on_disk.as_deref() != Some(config.as_str()) {
            if let Err(e) = std::fs::rename(&tmp, output) {
                let _ = std::fs::remove_file(&tmp);
                return Outcome::Failed(format!("cannot install {}: {e}", output.display()));
            }
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
        let reloaded = match &self.opts.reload_command {
            Some(cmd) => run_command(cmd, self.opts.command_timeout)
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        if let Some(cmd) = &self.opts.cleanup_command {
            if let Err(e) = run_command(cmd, self.opts.command_timeout).await {
                tracing::warn!(error = %e, "cleanup command failed");
            }
        }
        m.haproxy_reload_duration
            .observe(reload_started.elapsed().as_secs_f64());
        match reloaded {
            Ok(()) => {
                self.applied = Some(config);
                Outcome::Applied
            }
            Err(e) => Outcome::Failed(e),
        }
    }

    fn record(&self, outcome: &Outcome, health: &crate::health::Health) {
        let m = crate::metrics::metrics();
        let (label, error) = match outcome {
            Outcome::Applied => ("applied", None),
            Outcome::Skipped => ("skipped", None),
            Outcome::Invalid(e) => ("invalid", Some(e.clone())),
            Outcome::Failed(e) => ("failed", Some(e.clone())),
        };
        m.haproxy_reloads.with_label_values(&[label]).inc();
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.last_outcome = Some(label);
        match &error {
            Some(e) => {
                health.report(
                    crate::health::HAPROXY,
                    crate::health::State::Failing,
                    format!("{label}: {e}"),
                );
                tracing::error!(outcome = label, error = %e, "haproxy.cfg not applied");
                st.last_error = Some(e.clone());
            }
            None => {
                if label == "applied" {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or_default();
                    st.last_success_unix = Some(now);
                    st.reloads_applied += 1;
                    m.haproxy_last_success.set(now);
                    tracing::info!(output = %self.opts.output.display(), "haproxy.cfg applied and HAProxy reloaded");
                }
                st.last_error = None;
                health.report(
                    crate::health::HAPROXY,
                    crate::health::State::Ok,
                    format!("{} applied", self.opts.output.display()),
                );
            }
        }
    }
}

/// Renders once for `rattan render` or a startup check.
pub fn render_once(
    publisher: &Publisher,
    template: Option<&Path>,
    extra: &Extra,
) -> Result<String, String> {
    load_template(template)?.render(&publisher.load_full(), extra)
}

/// The pipeline loop. Waits for the first Marathon snapshot and the rules (an empty config would drop every
/// route), then renders and reloads once, then after every change, at most once per `min_interval`.
pub async fn run(publisher: Arc<Publisher>, opts: HaproxyOptions, status: SharedStatus) {
    let mut changes = publisher.subscribe();
    while !(publisher
        .marathon_synced
        .load(std::sync::atomic::Ordering::Relaxed)
        && publisher.rules_loaded())
    {
        if changes.changed().await.is_err() {
            return;
        }
    }
    let min_interval = opts.min_interval;
    let mut p = Pipeline {
        opts,
        applied: None,
        status,
    };
    let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        changes.mark_unchanged();
        let started = Instant::now();
        let outcome = p.once(&publisher).await;
        p.record(&outcome, &publisher.health);
        let retry = matches!(outcome, Outcome::Failed(_));
        if retry {
            // Retried even without a change: the render is not applied until a reload succeeds.
            let delay = backoff.next_delay();
            tracing::warn!(retry_in = ?delay, "HAProxy reload will be retried");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                r = changes.changed() => if r.is_err() { return },
            }
        } else {
            backoff.reset();
            // A fixed template file is a change too (a broken one left the running config in place).
            let template = p.opts.template.clone();
            let mtime = |t: &Option<PathBuf>| {
                t.as_ref()
                    .and_then(|t| std::fs::metadata(t).and_then(|m| m.modified()).ok())
            };
            let seen = mtime(&template);
            let edited = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if mtime(&template) != seen {
                        return;
                    }
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = edited => tracing::info!("template file changed; rendering again"),
            }
        }
        // Merge everything that arrives within the minimum interval into the next run.
        tokio::time::sleep_until((started + min_interval).into()).await;
    }
}
