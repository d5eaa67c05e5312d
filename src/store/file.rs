//! The rules in a JSON file in `--data-dir`: written atomically, watched for hand edits, never written over when
//! damaged.

use super::codec::{publish, Services, StoreError};
use crate::health::{State, RULES};
use crate::rules::Service;
use crate::snapshot::Publisher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct FileStore {
    path: PathBuf,
    /// Serializes writers and the watcher; holds the last durable rules (or why the file cannot be trusted) and
    /// the file's stamp when they were read.
    state: tokio::sync::Mutex<FileState>,
    publisher: Arc<Publisher>,
}

struct FileState {
    rules: Result<Services, String>,
    stamp: Option<Stamp>,
}

/// What tells one version of the file from another without reading it: modified time, size, inode.
type Stamp = (std::time::SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The rules in the file (missing = none), or why they cannot be used.
fn load(path: &Path) -> Result<Services, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Services>(&bytes)
            .map(|m: Services| {
                m.into_iter()
                    .map(|(k, mut v)| {
                        v.id = k.clone();
                        (k, v)
                    })
                    .collect()
            })
            .map_err(|e| {
                format!(
                    "rules file {} is damaged ({e}); fix or move it away, rattan will not overwrite it",
                    path.display()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Services::new()),
        Err(e) => Err(format!("cannot read rules file {}: {e}", path.display())),
    }
}

fn report_loaded(publisher: &Publisher, path: &Path, n: usize) {
    publisher.health.report(
        RULES,
        State::Ok,
        format!("{n} rules from {}", path.display()),
    );
}

impl FileStore {
    pub const FILE_NAME: &'static str = "rules.json";

    /// Reads `<dir>/rules.json` (missing = no rules). A damaged file is reported, its rules are not used, and it
    /// is never overwritten: writes answer 503 until someone fixes or moves it.
    pub fn open(dir: &Path, publisher: Arc<Publisher>) -> Result<FileStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let path = dir.join(Self::FILE_NAME);
        let stamp = stamp(&path);
        let rules = load(&path);
        match &rules {
            Ok(services) => {
                publish(&publisher, services);
                report_loaded(&publisher, &path, services.len());
            }
            Err(e) => {
                publisher.health.report(RULES, State::Failing, e.clone());
                tracing::error!(error = %e, "rules file unusable; routing without stored rules")
            }
        }
        Ok(FileStore {
            path,
            state: tokio::sync::Mutex::new(FileState { rules, stamp }),
            publisher,
        })
    }

    /// Looks at the file every `every`: an edit made by hand is loaded, a damaged one reported (the last good
    /// rules keep routing, writes are refused until it is fixed).
    pub fn watch(self: &Arc<Self>, every: Duration) {
        crate::periodic::every(self, every, |store: Arc<Self>| async move {
            let mut state = store.state.lock().await;
            store.reread(&mut state).await;
        });
    }

    /// Takes in what changed on disk since the rules were last read or written (the file system's calls on a
    /// blocking thread: a slow disk never holds up a runtime worker).
    async fn reread(&self, state: &mut FileState) {
        let (path, before) = (self.path.clone(), state.stamp);
        let looked = tokio::task::spawn_blocking(move || {
            let now = stamp(&path);
            let changed = now != before && now.is_some();
            (now, changed.then(|| load(&path)))
        })
        .await;
        let Ok((now, loaded)) = looked else {
            return;
        };
        if now == state.stamp {
            return;
        }
        state.stamp = now;
        let Some(loaded) = loaded else {
            tracing::warn!(file = %self.path.display(), "rules file removed; keeping the last rules (the next write recreates it)");
            return;
        };
        match loaded {
            Ok(services) => {
                tracing::info!(file = %self.path.display(), rules = services.len(), "rules file changed on disk; loaded");
                publish(&self.publisher, &services);
                report_loaded(&self.publisher, &self.path, services.len());
                state.rules = Ok(services);
            }
            Err(e) => {
                self.publisher
                    .health
                    .report(RULES, State::Failing, e.clone());
                tracing::error!(error = %e, "rules file changed on disk and is unusable; routing on with the last good rules, writes refused");
                state.rules = Err(e);
            }
        }
    }

    async fn write(
        &self,
        change: impl FnOnce(&mut Services) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        // A hand edit the watcher has not seen yet is taken in first, never written over.
        self.reread(&mut state).await;
        let current = state
            .rules
            .as_ref()
            .map_err(|e| StoreError::Unavailable(e.clone()))?;
        let mut next = current.clone();
        change(&mut next)?;
        let bytes = crate::bamboo::gojson::to_vec(&next);
        let path = self.path.clone();
        let written =
            tokio::task::spawn_blocking(move || write_atomic(&path, &bytes).map(|()| stamp(&path)))
                .await
                .map_err(|e| StoreError::Failed(e.to_string()))?
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "cannot write rules file {}: {e}",
                        self.path.display()
                    ))
                })?;
        publish(&self.publisher, &next);
        state.rules = Ok(next);
        state.stamp = written;
        Ok(())
    }

    pub async fn upsert(&self, svc: Service) -> Result<(), StoreError> {
        self.write(|m| {
            m.insert(svc.id.clone(), svc);
            Ok(())
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.write(|m| m.remove(id).map(|_| ()).ok_or(StoreError::NotFound))
            .await
    }
}

/// Temp file in the same directory, fsync, rename over, fsync the directory: a crash leaves the old file or the
/// new one, never half of one; a failure leaves no temp file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("rules"),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
