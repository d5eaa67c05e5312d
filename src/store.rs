//! Durable rules: ZooKeeper in Bamboo's exact layout, or a JSON file in `--data-dir`. Outside the pure rules
//! library (`rules`), which it stores, and above the snapshot, which it publishes to. Both keep the last known
//! rules, publish every change into the snapshot, and refuse writes they cannot make durable.

use crate::rules::Rules;
use crate::rules::Service;
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

    /// Before the process exits: ZooKeeper's session is closed in order.
    pub async fn close(&self) {
        if let RuleStore::Zk(z) = self {
            z.close().await;
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
    /// The rules as last read; watch events and this instance's writes change it one rule at a time.
    rules: Mutex<Services>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Requests in flight at once on a full load: ZooKeeper answers a session's requests in order, so a pipeline turns
/// 100,000 round trips into a stream (one at a time, a 1 ms network allowed ~6,000 rules in 6 s; this loads
/// 100,000 in 1.4 s there). Deeper buys little and costs the bound below.
const PIPELINE: usize = 8;

/// `--zk-path` (Bamboo's), `--zk-session-timeout` (Bamboo's 10 s) and `--data-dir`: the defaults.
pub const DEFAULT_ZK_PATH: &str = "/marathon-haproxy/state";
pub const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DATA_DIR: &str = "rattan-data";
/// Nodes per multi-read (ZooKeeper 3.6+). With `PIPELINE`, at most 512 nodes are in flight: nodes others wrote as
/// large as ZooKeeper allows (1 MiB) hold at most 512 MiB while they load.
const BATCH: usize = 64;

/// Watch events taken together before the rules are published once.
const BURST: Duration = Duration::from_millis(20);

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
            rules: Mutex::new(Services::new()),
            stop: tokio::sync::watch::channel(false).0,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(store.clone().run());
        *store.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        store
    }

    /// Ends the session loop and waits for it: the watch is dropped and the session closed before the runtime
    /// goes away. (Torn down in the other order, the client's watcher found its session task gone and panicked.)
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task {
            // Between sessions (connecting, backing off) it does not look at `stop`: it is ended instead.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        self.set_current(None);
    }

    /// The id of a rule node's path (`None` for the base and anything deeper or elsewhere).
    fn id_of(&self, path: &str) -> Option<String> {
        let name = path.strip_prefix(&self.base)?.strip_prefix('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        query_unescape(name)
    }

    /// Reads the nodes of `ids` (id, path): in multi-reads of [`BATCH`] nodes, [`PIPELINE`] requests in flight,
    /// each with the operation timeout, so the whole takes as long as the data does. `None` for a node gone
    /// meanwhile. A batch the server refuses (a reply over its buffer, a server without multi-read) is read node
    /// by node.
    async fn read_nodes(
        &self,
        client: &zk::Client,
        ids: Vec<(String, String)>,
    ) -> Result<Vec<(String, Option<Service>)>, zk::Error> {
        use futures_util::StreamExt;
        let op_timeout = self.op_timeout;
        let batches: Vec<Vec<(String, String)>> = ids
            .chunks(BATCH)
            .map(<[(String, String)]>::to_vec)
            .collect();
        let mut reads = futures_util::stream::iter(batches)
            .map(|batch| async move {
                let mut multi = client.new_multi_reader();
                for (_, path) in &batch {
                    multi.add_get_data(path)?;
                }
                let got = tokio::time::timeout(op_timeout, multi.commit())
                    .await
                    .map_err(|_| zk::Error::Timeout)?;
                let results = match got {
                    Ok(r) if r.len() == batch.len() => r,
                    other => {
                        tracing::debug!(nodes = batch.len(), answer = ?other.map(|r| r.len()), "multi-read refused; reading node by node");
                        return one_by_one(client, batch, op_timeout).await;
                    }
                };
                batch
                    .into_iter()
                    .zip(results)
                    .map(|((id, _), r)| match r {
                        zk::MultiReadResult::Data { data, .. } => {
                            let svc = decode_body(&id, &data);
                            Ok((id, Some(svc)))
                        }
                        zk::MultiReadResult::Error {
                            err: zk::Error::NoNode,
                        } => Ok((id, None)),
                        zk::MultiReadResult::Error { err } => Err(err),
                        _ => Err(zk::Error::UnexpectedError(
                            "multi-read answered with children".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>, zk::Error>>()
            })
            .buffer_unordered(PIPELINE);
        let mut out = Vec::new();
        while let Some(batch) = reads.next().await {
            out.extend(batch?);
        }
        Ok(out)
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
        // The listing is one reply however many children: give it time by its size's order (4 MiB at most).
        let children = tokio::time::timeout(self.op_timeout * 4, client.list_children(&self.base))
            .await
            .map_err(|_| zk::Error::Timeout)??;
        let ids: Vec<(String, String)> = children
            .into_iter()
            .filter_map(|name| match query_unescape(&name) {
                Some(id) => Some((id, format!("{}/{name}", self.base))),
                None => {
                    tracing::warn!(child = %name, "skipping znode whose name is not query-escaped");
                    None
                }
            })
            .collect();
        Ok(self
            .read_nodes(client, ids)
            .await?
            .into_iter()
            .filter_map(|(id, svc)| Some((id, svc?)))
            .collect())
    }

    async fn refresh(&self, client: &zk::Client) -> Result<(), zk::Error> {
        let services = self.read_all(client).await?;
        publish(&self.publisher, &services);
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = services;
        Ok(())
    }

    /// Applies node events (created, changed, deleted) to the rules: each named node read again, at once, and the
    /// rules published once.
    async fn apply_events(
        &self,
        client: &zk::Client,
        events: Vec<zk::WatchedEvent>,
    ) -> Result<(), zk::Error> {
        let mut touched: BTreeMap<String, String> = BTreeMap::new();
        for ev in events {
            if let Some(id) = self.id_of(&ev.path) {
                touched.insert(id, ev.path);
            }
        }
        if touched.is_empty() {
            return Ok(());
        }
        let read = self
            .read_nodes(client, touched.into_iter().collect())
            .await?;
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for (id, svc) in read {
            changed |= match svc {
                Some(svc) if rules.get(&id) == Some(&svc) => false,
                Some(svc) => {
                    rules.insert(id, svc);
                    true
                }
                None => rules.remove(&id).is_some(),
            };
        }
        if changed {
            publish(&self.publisher, &rules);
        }
        Ok(())
    }

    /// This instance's own write, applied at once (its watch event follows and finds nothing new).
    fn applied(&self, id: &str, svc: Option<Service>) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        match svc {
            Some(svc) => {
                rules.insert(id.to_string(), svc);
            }
            None => {
                rules.remove(id);
            }
        }
        publish(&self.publisher, &rules);
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
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut reported_down = false;
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
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
                        if states.peek_state().is_terminated() || client_gone(&e) {
                            break 'session;
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue 'session;
                    }
                };
                let n = self.rules.lock().unwrap_or_else(|p| p.into_inner()).len();
                tracing::info!(hosts = %self.hosts, path = %self.base, rules = n, "ZooKeeper connected; rules loaded");
                reported_down = false;
                backoff.reset();
                self.set_current(Some(client.clone()));
                loop {
                    tokio::select! {
                        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                            // The watch goes first, then the session (dropping the last client closes it).
                            drop(watcher);
                            self.set_current(None);
                            return;
                        }
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
                        ev = next_event(&mut watcher) => {
                            let Some(ev) = ev else {
                                tracing::warn!("ZooKeeper watch ended with its session; starting a new one");
                                break 'session;
                            };
                            if ev.event_type == zk::EventType::Session {
                                if ev.session_state.is_terminated() {
                                    tracing::warn!(state = ?ev.session_state, "ZooKeeper session ended; starting a new one");
                                    break 'session;
                                }
                                continue;
                            }
                            // A burst (a write touches the child and the parent; a script writes many) is taken
                            // together, then applied node by node.
                            let mut events = vec![ev];
                            let mut ended = false;
                            while events.len() < 100_000 {
                                match tokio::time::timeout(BURST, next_event(&mut watcher)).await {
                                    Err(_) => break,
                                    Ok(None) => {
                                        ended = true;
                                        break;
                                    }
                                    Ok(Some(e)) if e.event_type == zk::EventType::Session => {
                                        ended |= e.session_state.is_terminated();
                                        break;
                                    }
                                    Ok(Some(e)) => events.push(e),
                                }
                            }
                            if let Err(e) = self.apply_events(&client, events).await {
                                if states.peek_state().is_terminated() || client_gone(&e) {
                                    tracing::warn!(error = %e, "ZooKeeper session ended; starting a new one");
                                    break 'session;
                                }
                                tracing::warn!(error = %e, "reading changed rules failed; re-reading them all");
                                continue 'session;
                            }
                            if ended {
                                break 'session;
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
            .map_err(|_| self.unavailable("timed out"))?
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
        let id = svc.id.clone();
        // As it reads back: what the next load would find.
        let stored = decode_body(&id, &body);
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
        .await?;
        // Routed by this instance at once, without waiting for its watch.
        self.applied(&id, Some(stored));
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.child(id);
        self.with_client(|client| async move {
            client
                .delete(&path, None)
                .await
                .map_err(|e| self.map_err(e))
        })
        .await?;
        self.applied(id, None);
        Ok(())
    }
}

/// Reads `batch` one node at a time (pipelined), when a multi-read was refused.
async fn one_by_one(
    client: &zk::Client,
    batch: Vec<(String, String)>,
    op_timeout: Duration,
) -> Result<Vec<(String, Option<Service>)>, zk::Error> {
    let reads: Vec<_> = batch
        .into_iter()
        .map(|(id, path)| {
            let read = client.get_data(&path);
            async move { (id, tokio::time::timeout(op_timeout, read).await) }
        })
        .collect();
    let mut out = Vec::new();
    for (id, got) in futures_util::future::join_all(reads).await {
        match got {
            Ok(Ok((data, _))) => {
                let svc = decode_body(&id, &data);
                out.push((id, Some(svc)));
            }
            Ok(Err(zk::Error::NoNode)) => out.push((id, None)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(zk::Error::Timeout),
        }
    }
    Ok(out)
}

/// The client's session task is gone while its last state still reads connected (zookeeper-client then answers
/// every call with these): only a new client helps.
fn client_gone(e: &zk::Error) -> bool {
    matches!(e, zk::Error::UnexpectedError(_) | zk::Error::ClientClosed)
}

/// The watcher's next event; `None` when its session task is gone without a last word (the client's own
/// `changed` unwraps a closed channel there and panics).
async fn next_event(w: &mut zk::PersistentWatcher) -> Option<zk::WatchedEvent> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(w.changed())
        .catch_unwind()
        .await
        .ok()
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
