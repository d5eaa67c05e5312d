//! The rules in ZooKeeper, in Bamboo's exact layout: one session loop (connect, create the base path, watch it
//! recursively, load in pipelined multi-reads), writes that publish locally at once.

use super::codec::{
    decode_body, encode_v2, publish, query_escape, query_unescape, Services, StoreError,
};
use crate::health;
use crate::rules::Service;
use crate::snapshot::Publisher;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zookeeper_client as zk;

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

    /// Reports ZooKeeper's state: degraded while the rules it gave last still route, failing before it gave any.
    fn report_down(&self, detail: String) {
        let h = &self.publisher.health;
        let loaded = h.state_of(health::RULES) == Some(health::State::Ok);
        let state = if loaded {
            health::State::Degraded
        } else {
            health::State::Failing
        };
        h.report(health::ZOOKEEPER, state, detail);
        crate::metrics::metrics().zk_connected.set(0);
    }

    async fn run(self: Arc<Self>) {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // Failures in a row; logged at 1, 2, 4, 8, …: at once, then ever more rarely while it lasts.
        let mut failures: u64 = 0;
        let mut stop = self.stop.subscribe();
        self.publisher.health.report(
            health::RULES,
            health::State::Failing,
            format!("waiting for ZooKeeper {}", self.hosts),
        );
        self.report_down("connecting".into());
        loop {
            if *stop.borrow() {
                return;
            }
            // The client library retries a dead ensemble silently until its session timeout: a direct look at
            // each host first names the cause (DNS, refused, timeout) the moment it is there.
            let reached = match probe(&self.hosts).await {
                Ok(()) => self.connect().await.map_err(|e| e.to_string()),
                Err(why) => Err(why),
            };
            let client = match reached {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    if failures.is_power_of_two() {
                        tracing::warn!(hosts = %self.hosts, error = %e, attempts = failures, retry_in = ?delay, "ZooKeeper unreachable; routing with the last known rules");
                    }
                    self.report_down(format!("unreachable: {e}"));
                    tokio::time::sleep(delay).await;
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
                        self.report_down(format!("setup of {} failed: {e}", self.base));
                        if states.peek_state().is_terminated() || client_gone(&e) {
                            break 'session;
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue 'session;
                    }
                };
                let n = self.rules.lock().unwrap_or_else(|p| p.into_inner()).len();
                tracing::info!(hosts = %self.hosts, path = %self.base, rules = n, "ZooKeeper connected; rules loaded");
                failures = 0;
                let h = &self.publisher.health;
                h.report(
                    health::RULES,
                    health::State::Ok,
                    format!("{n} rules from ZooKeeper {}{}", self.hosts, self.base),
                );
                h.report(health::ZOOKEEPER, health::State::Ok, "connected");
                crate::metrics::metrics().zk_connected.set(1);
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
                                self.report_down("disconnected; the client reconnects".into());
                            }
                            s if s.is_terminated() => {
                                tracing::warn!(state = ?s, "ZooKeeper session ended; starting a new one");
                                crate::metrics::metrics().zk_session_expiries.inc();
                                self.report_down(format!("session ended ({s:?}); starting a new one"));
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

/// Looks at each host of a connect string (`h1:2181,h2:2181/chroot`): `Ok` as soon as one accepts a TCP
/// connection, else every host's cause (DNS failure, refused, timed out).
async fn probe(hosts: &str) -> Result<(), String> {
    let list = hosts.split('/').next().unwrap_or(hosts);
    let mut causes = Vec::new();
    for host in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let target = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:2181")
        };
        let addrs =
            match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host(&target))
                .await
            {
                Ok(Ok(a)) => a.collect::<Vec<_>>(),
                Ok(Err(e)) => {
                    causes.push(format!("{target}: DNS lookup failed: {e}"));
                    continue;
                }
                Err(_) => {
                    causes.push(format!("{target}: DNS lookup timed out"));
                    continue;
                }
            };
        for addr in addrs {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => causes.push(format!("{target} ({addr}): {e}")),
                Err(_) => causes.push(format!("{target} ({addr}): connect timed out")),
            }
        }
    }
    if causes.is_empty() {
        return Err(format!("no host in {hosts:?}"));
    }
    Err(causes.join("; "))
}
