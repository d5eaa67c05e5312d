//! Durable rules: ZooKeeper in Bamboo's exact layout, or a JSON file in `--data-dir`. Both keep the last known
//! rules, publish every change into the snapshot, and refuse writes they cannot make durable.

use super::Service;
use crate::rules::Rules;
use crate::snapshot::Publisher;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zookeeper_client as zk;

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

pub type Services = BTreeMap<String, Service>;

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
    crate::api::gojson::to_vec(&V2 {
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

fn publish(publisher: &Publisher, services: &Services) {
    publisher.set_rules(Arc::new(Rules {
        services: services.clone(),
    }));
}

// ---- the store ----------------------------------------------------------------------------------------------

pub enum RuleStore {
    File(Arc<FileStore>),
    Zk(Arc<ZkStore>),
}

impl RuleStore {
    pub async fn upsert(&self, svc: Service) -> Result<(), StoreError> {
        match self {
            RuleStore::File(f) => f.upsert(svc).await,
            RuleStore::Zk(z) => z.upsert(svc).await,
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        match self {
            RuleStore::File(f) => f.delete(id).await,
            RuleStore::Zk(z) => z.delete(id).await,
        }
    }
}

// ---- file ---------------------------------------------------------------------------------------------------

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
            .map(|mut m| {
                for (k, v) in m.iter_mut() {
                    v.id = k.clone();
                }
                m
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
            Ok(services) => publish(&publisher, services),
            Err(e) => {
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
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(store) = me.upgrade() else { return };
                let mut state = store.state.lock().await;
                store.reread(&mut state);
            }
        });
    }

    /// Takes in what changed on disk since the rules were last read or written.
    fn reread(&self, state: &mut FileState) {
        let now = stamp(&self.path);
        if now == state.stamp {
            return;
        }
        state.stamp = now;
        if now.is_none() {
            tracing::warn!(file = %self.path.display(), "rules file removed; keeping the last rules (the next write recreates it)");
            return;
        }
        match load(&self.path) {
            Ok(services) => {
                tracing::info!(file = %self.path.display(), rules = services.len(), "rules file changed on disk; loaded");
                publish(&self.publisher, &services);
                state.rules = Ok(services);
            }
            Err(e) => {
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
        self.reread(&mut state);
        let current = state
            .rules
            .as_ref()
            .map_err(|e| StoreError::Unavailable(e.clone()))?;
        let mut next = current.clone();
        change(&mut next)?;
        let bytes = crate::api::gojson::to_vec(&next);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
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
        state.stamp = stamp(&self.path);
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

// ---- ZooKeeper ----------------------------------------------------------------------------------------------

pub struct ZkStore {
    hosts: String,
    base: String,
    auth: Option<(String, String)>,
    /// The live session, `None` while ZooKeeper is unreachable.
    client: Mutex<Option<zk::Client>>,
    publisher: Arc<Publisher>,
    op_timeout: Duration,
    session_timeout: Duration,
}

impl ZkStore {
    /// Starts the session loop in the background: connect, create the base path, watch it recursively, read every
    /// rule; reconnect (and re-read) after any loss.
    pub fn start(
        hosts: &str,
        base: &str,
        auth: Option<(String, String)>,
        session_timeout: Duration,
        publisher: Arc<Publisher>,
    ) -> Arc<ZkStore> {
        let store = Arc::new(ZkStore {
            hosts: hosts.to_string(),
            base: base.to_string(),
            auth,
            client: Mutex::new(None),
            publisher,
            op_timeout: Duration::from_secs(3),
            session_timeout,
        });
        tokio::spawn(store.clone().run());
        store
    }

    fn acls(&self) -> zk::Acls<'static> {
        if self.auth.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    fn current(&self) -> Option<zk::Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_current(&self, c: Option<zk::Client>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    async fn connect(&self) -> Result<zk::Client, zk::Error> {
        let mut connector = zk::Client::connector();
        connector
            .session_timeout(self.session_timeout)
            .connection_timeout(Duration::from_secs(3));
        if let Some((u, p)) = &self.auth {
            connector.auth("digest".to_string(), format!("{u}:{p}").into_bytes());
        }
        connector.connect(&self.hosts).await
    }

    async fn ensure_base(&self, client: &zk::Client) -> Result<(), zk::Error> {
        let opts = zk::CreateMode::Persistent.with_acls(self.acls());
        match client.mkdir(&self.base, &opts).await {
            Ok(()) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every child of the base, decoded; children whose names do not unescape or that vanish are skipped.
    async fn read_all(&self, client: &zk::Client) -> Result<Services, zk::Error> {
        let children = client.list_children(&self.base).await?;
        let mut out = Services::new();
        for name in children {
            let Some(id) = query_unescape(&name) else {
                tracing::warn!(child = %name, "skipping znode whose name is not query-escaped");
                continue;
            };
            match client.get_data(&format!("{}/{name}", self.base)).await {
                Ok((data, _)) => {
                    out.insert(id.clone(), decode_body(&id, &data));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn refresh(&self, client: &zk::Client) -> Result<(), zk::Error> {
        let services = tokio::time::timeout(self.op_timeout * 2, self.read_all(client))
            .await
            .map_err(|_| zk::Error::Timeout)??;
        publish(&self.publisher, &services);
        Ok(())
    }

    /// Registers the recursive watch and reads every rule. Run on every new session and after every reconnect:
    /// a session that survives a server restart does not reliably keep its watches, so they are set again.
    async fn arm(&self, client: &zk::Client) -> Result<zk::PersistentWatcher, zk::Error> {
        self.ensure_base(client).await?;
        let watcher = client
            .watch(&self.base, zk::AddWatchMode::PersistentRecursive)
            .await?;
        self.refresh(client).await?;
        Ok(watcher)
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = crate::marathon::events::Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        let mut reported_down = false;
        loop {
            let client = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    if !reported_down {
                        tracing::warn!(hosts = %self.hosts, error = %e, "ZooKeeper unreachable; routing with the last known rules");
                        reported_down = true;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let mut states = client.state_watcher();
            // One session: (re)arm the watch, then follow node events and session states.
            'session: loop {
                let mut watcher = match self.arm(&client).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(hosts = %self.hosts, path = %self.base, error = %e, "ZooKeeper setup failed");
                        if states.peek_state().is_terminated() {
                            break 'session;
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue 'session;
                    }
                };
                tracing::info!(hosts = %self.hosts, path = %self.base, "ZooKeeper connected; rules loaded");
                reported_down = false;
                backoff.reset();
                self.set_current(Some(client.clone()));
                loop {
                    tokio::select! {
                        state = states.changed() => match state {
                            zk::SessionState::SyncConnected => {
                                tracing::info!("ZooKeeper reconnected; re-arming the watch and re-reading rules");
                                continue 'session;
                            }
                            zk::SessionState::Disconnected => {
                                tracing::warn!("ZooKeeper disconnected; routing with the last known rules");
                            }
                            s if s.is_terminated() => {
                                tracing::warn!(state = ?s, "ZooKeeper session ended; starting a new one");
                                break 'session;
                            }
                            _ => {}
                        },
                        ev = watcher.changed() => {
                            if ev.event_type == zk::EventType::Session {
                                if ev.session_state.is_terminated() {
                                    tracing::warn!(state = ?ev.session_state, "ZooKeeper session ended; starting a new one");
                                    break 'session;
                                }
                                continue;
                            }
                            // Coalesce a burst (a write touches the child and the parent).
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if let Err(e) = self.refresh(&client).await {
                                tracing::warn!(error = %e, "re-reading rules after a change failed");
                            }
                        }
                    }
                }
            }
            self.set_current(None);
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "ZooKeeper ({}) is unavailable: {e}; rules cannot be changed now, routing goes on with the last known rules",
            self.hosts
        ))
    }

    async fn with_client<F>(&self, f: impl FnOnce(zk::Client) -> F) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = Result<(), StoreError>>,
    {
        let client = self
            .current()
            .ok_or_else(|| self.unavailable("not connected"))?;
        tokio::time::timeout(self.op_timeout, f(client.clone()))
            .await
            .map_err(|_| self.unavailable("timed out"))??;
        // Read back at once so this instance routes the change without waiting for its watch.
        if let Err(e) = self.refresh(&client).await {
            tracing::warn!(error = %e, "re-reading rules after a write failed");
        }
        Ok(())
    }

    fn child(&self, id: &str) -> String {
        format!("{}/{}", self.base, query_escape(id))
    }

    fn map_err(&self, e: zk::Error) -> StoreError {
        match e {
            zk::Error::NoNode => StoreError::NotFound,
            zk::Error::NoAuth | zk::Error::AuthFailed => StoreError::Failed(format!(
                "ZooKeeper refused the write: {e} (check --zk-auth)"
            )),
            other => self.unavailable(other),
        }
    }

    pub async fn upsert(&self, svc: Service) -> Result<(), StoreError> {
        let path = self.child(&svc.id);
        let body = encode_v2(&svc.config.clone().unwrap_or_default());
        self.with_client(|client| async move {
            let exists = client
                .check_stat(&path)
                .await
                .map_err(|e| self.map_err(e))?;
            if exists.is_some() {
                client
                    .set_data(&path, &body, None)
                    .await
                    .map_err(|e| self.map_err(e))?;
                // Bamboo's parent touch: older instances only watch the parent's data.
                if let Err(e) = client.set_data(&self.base, b"", None).await {
                    tracing::warn!(error = %e, "touching the rules parent failed");
                }
                return Ok(());
            }
            let opts = zk::CreateMode::Persistent.with_acls(self.acls());
            match client.create(&path, &body, &opts).await {
                Ok(_) => Ok(()),
                Err(zk::Error::NoNode) => {
                    // The base was deleted under us: re-create it and try once more.
                    self.ensure_base(&client)
                        .await
                        .map_err(|e| self.map_err(e))?;
                    client
                        .create(&path, &body, &opts)
                        .await
                        .map(|_| ())
                        .map_err(|e| self.map_err(e))
                }
                Err(zk::Error::NodeExists) => client
                    .set_data(&path, &body, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.map_err(e)),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.child(id);
        self.with_client(|client| async move {
            client
                .delete(&path, None)
                .await
                .map_err(|e| self.map_err(e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory with something in it: the rename over it fails after the temp file is written.
        let target = dir.path().join("rules.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["rules.json"]);
    }

    #[test]
    fn go_query_escaping() {
        assert_eq!(query_escape("/grp/web"), "%2Fgrp%2Fweb");
        assert_eq!(query_escape("/a b~c.d-e_f"), "%2Fa+b~c.d-e_f");
        assert_eq!(query_escape("/ü"), "%2F%C3%BC");
        assert_eq!(query_unescape("%2Fgrp%2Fweb").as_deref(), Some("/grp/web"));
        assert_eq!(query_unescape("%2Fa+b").as_deref(), Some("/a b"));
        assert_eq!(query_unescape("%2"), None);
        assert_eq!(query_unescape("%zz"), None);
    }

    #[test]
    fn bodies_as_bamboo() {
        let config: BTreeMap<String, String> = [
            ("z".to_string(), "1".to_string()),
            ("Acl".to_string(), "path_beg -i /x&<>".to_string()),
        ]
        .into();
        assert_eq!(
            String::from_utf8(encode_v2(&config)).unwrap(),
            r#"{"version":"2","config":{"Acl":"path_beg -i /x\u0026\u003c\u003e","z":"1"}}"#
        );
        assert_eq!(
            encode_v2(&BTreeMap::new()),
            br#"{"version":"2","config":{}}"#
        );
        let v2 = decode_body(
            "/x",
            br#"{"version":"2","config":{"Acl":"path_beg /x","w":"2"}}"#,
        );
        assert_eq!(v2.acl, "path_beg /x");
        assert_eq!(v2.config.unwrap().len(), 2);
        let v1 = decode_body("/x", b"hdr(host) -i x.com");
        assert_eq!(v1.acl, "hdr(host) -i x.com");
        let numeric = decode_body("/x", br#"{"version":2}"#);
        assert_eq!(
            numeric.acl, r#"{"version":2}"#,
            "a number version is a V1 raw ACL, as in Bamboo"
        );
        let null_config = decode_body("/x", br#"{"version":"2","config":null}"#);
        assert_eq!(null_config.acl, "");
        assert!(null_config.config.is_none());
    }

    #[tokio::test]
    async fn file_store_is_atomic_and_never_overwrites_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(Publisher::default());
        let s = FileStore::open(dir.path(), p.clone()).unwrap();
        s.upsert(Service {
            id: "/a".into(),
            acl: "path_beg /a".into(),
            config: Some([("Acl".into(), "path_beg /a".into())].into()),
        })
        .await
        .unwrap();
        assert_eq!(p.load().rules.services.len(), 1);
        assert!(matches!(s.delete("/nope").await, Err(StoreError::NotFound)));
        drop(s);
        let reopened = FileStore::open(dir.path(), Arc::new(Publisher::default())).unwrap();
        reopened.delete("/a").await.unwrap();

        std::fs::write(dir.path().join(FileStore::FILE_NAME), b"{ not json").unwrap();
        let p = Arc::new(Publisher::default());
        let damaged = FileStore::open(dir.path(), p).unwrap();
        let e = damaged
            .upsert(Service {
                id: "/b".into(),
                ..Service::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Unavailable(ref m) if m.contains("damaged")),
            "{e}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(FileStore::FILE_NAME)).unwrap(),
            b"{ not json"
        );
    }
}
