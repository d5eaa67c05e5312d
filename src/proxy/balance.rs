//! Backend choice. Counters live here, keyed by backend address, outside any snapshot: they survive swaps, and a
//! backend that leaves keeps its count until its last request finishes.

use super::backend::{now_ms, InFlight, Slot};
use crate::marathon::address::Endpoint;
use crate::rules::table::Balance;
use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connect failures in a row that eject a backend, and for how long (defaults).
pub const EJECT_AFTER: u32 = 3;
pub const EJECT_FOR: Duration = Duration::from_secs(10);

pub struct Balancer {
    eject_after: u32,
    eject_for: Duration,
    /// Read on every request from every worker, written only when a backend or app is new: copied on write, so a
    /// read takes no lock (a lock's counter would be one cache line that all cores write). Fx: keys come from
    /// Marathon, not from clients.
    slots: ArcSwap<FxHashMap<Endpoint, Arc<Slot>>>,
    /// Round-robin positions by app, then port index (looked up by `&str`, no key built per request).
    cursors: ArcSwap<FxHashMap<String, FxHashMap<usize, Arc<AtomicUsize>>>>,
    /// Serializes the copy-on-write updates of both maps.
    writing: Mutex<()>,
    /// When the last ejection ends: before it, candidates are checked one by one; after it (the usual case),
    /// a pick touches no slot but the chosen ones.
    ejections_until: AtomicU64,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer::new(EJECT_AFTER, EJECT_FOR)
    }
}

impl Balancer {
    pub fn new(eject_after: u32, eject_for: Duration) -> Balancer {
        Balancer {
            eject_after: eject_after.max(1),
            eject_for,
            slots: Default::default(),
            cursors: Default::default(),
            writing: Mutex::new(()),
            ejections_until: Default::default(),
        }
    }

    pub fn eject_for(&self) -> Duration {
        self.eject_for
    }

    fn slot(&self, e: &Endpoint) -> Arc<Slot> {
        if let Some(s) = self.slots.load().get(e) {
            return s.clone();
        }
        self.rewrite(&self.slots, |m| m.entry(e.clone()).or_default().clone())
    }

    /// Changes a copy of `map` and puts it in place. Under `writing`, and from the map as it is then: another
    /// request may have changed it since this one looked.
    fn rewrite<M: Clone, R>(&self, map: &ArcSwap<M>, change: impl FnOnce(&mut M) -> R) -> R {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut copy = M::clone(&map.load());
        let r = change(&mut copy);
        map.store(Arc::new(copy));
        r
    }

    /// The app port's next round-robin position.
    fn turn(&self, app: &str, port: usize) -> usize {
        if let Some(c) = self.cursors.load().get(app).and_then(|p| p.get(&port)) {
            return c.fetch_add(1, Ordering::Relaxed);
        }
        self.rewrite(&self.cursors, |m| {
            m.entry(app.to_string())
                .or_default()
                .entry(port)
                .or_default()
                .fetch_add(1, Ordering::Relaxed)
        })
    }

    /// Picks a backend not in `avoid` (those that just failed), counting it in flight.
    pub fn pick<'a>(
        &self,
        app: &str,
        port: usize,
        (policy, client): (Balance, Option<IpAddr>),
        backends: &'a [Endpoint],
        avoid: &[Endpoint],
    ) -> Option<(&'a Endpoint, InFlight)> {
        // Filter only when something must be left out; otherwise choose straight from the slice (and read no
        // clock while no backend was ever ejected).
        let until = self.ejections_until.load(Ordering::Relaxed);
        // One map for the whole pick; counters read through it, without taking a reference to their slots.
        let slots = self.slots.load();
        let filtered: Option<Vec<&Endpoint>> = if avoid.is_empty()
            && (until == 0 || now_ms() >= until)
        {
            None
        } else {
            let now = now_ms();
            let healthy: Vec<&Endpoint> = backends
                .iter()
                .filter(|b| !avoid.contains(b) && !slots.get(*b).is_some_and(|s| s.ejected(now)))
                .collect();
            Some(if healthy.is_empty() {
                // Every backend ejected: trying one beats refusing outright.
                backends.iter().filter(|b| !avoid.contains(b)).collect()
            } else {
                healthy
            })
        };
        let n = filtered.as_ref().map_or(backends.len(), Vec::len);
        let at = |i: usize| -> &'a Endpoint {
            match &filtered {
                Some(v) => v[i],
                None => &backends[i],
            }
        };
        let chosen = match n {
            0 => return None,
            1 => at(0),
            n => match policy {
                Balance::Roundrobin => at(self.turn(app, port) % n),
                // Rendezvous hashing: the backend scoring highest for this client, so a change to the set moves
                // only the clients of the backends that came or went (~1/n), not everyone.
                Balance::Source => {
                    let score = |e: &Endpoint| {
                        let mut h = std::hash::DefaultHasher::new();
                        (client, e).hash(&mut h);
                        h.finish()
                    };
                    (0..n)
                        .map(at)
                        .max_by_key(|e| score(e))
                        .unwrap_or_else(|| at(0))
                }
                Balance::Leastconn => {
                    // Power of two choices over in-flight counts: O(1), and robust to many threads seeing the same
                    // "least loaded" backend at once.
                    let a = rand::random::<usize>() % n;
                    let mut b = rand::random::<usize>() % (n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let load = |e: &Endpoint| {
                        slots
                            .get(e)
                            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
                    };
                    if load(at(b)) < load(at(a)) {
                        at(b)
                    } else {
                        at(a)
                    }
                }
            },
        };
        let slot = match slots.get(chosen) {
            Some(s) => s.clone(),
            None => self.slot(chosen),
        };
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight(slot)))
    }

    /// Takes this very backend (a sticky session), counting it in flight.
    pub fn take(&self, e: &Endpoint) -> InFlight {
        let slot = self.slot(e);
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(slot)
    }

    /// Records a connect failure; returns true when it ejects the backend.
    pub fn connect_failed(&self, e: &Endpoint) -> bool {
        let slot = self.slot(e);
        if slot.connect_failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.eject_after {
            slot.connect_failures.store(0, Ordering::Relaxed);
            let until = now_ms() + self.eject_for.as_millis() as u64;
            slot.ejected_until.store(until, Ordering::Relaxed);
            self.ejections_until.fetch_max(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Forgets idle backends that no longer appear anywhere (called after a snapshot swap).
    pub fn retain(&self, live: impl Fn(&Endpoint) -> bool) {
        self.rewrite(&self.slots, |m| {
            m.retain(|e, s| live(e) || s.in_flight.load(Ordering::Relaxed) > 0)
        });
    }

    /// Requests (or TCP connections) in flight to `e`, and whether it is ejected now; none known is `(0, false)`.
    /// Reads only: a backend never picked gets no slot.
    pub fn load(&self, e: &Endpoint) -> (usize, bool) {
        self.slots.load().get(e).map_or((0, false), |s| {
            (s.in_flight.load(Ordering::Relaxed), s.ejected(now_ms()))
        })
    }

    pub fn in_flight(&self, e: &Endpoint) -> usize {
        self.slot(e).in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn eps(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                host: "10.0.0.1".into(),
                port: 1000 + i,
            })
            .collect()
    }

    #[test]
    fn round_robin_is_even() {
        let b = Balancer::default();
        let e = eps(3);
        let mut counts = HashMap::new();
        for _ in 0..300 {
            let (x, _g) = b
                .pick("/a", 0, (Balance::Roundrobin, None), &e, &[])
                .unwrap();
            *counts.entry(x.port).or_insert(0) += 1;
        }
        assert!(counts.values().all(|c| *c == 100), "{counts:?}");
    }

    #[test]
    fn least_conn_prefers_the_idle_backend() {
        let b = Balancer::default();
        let e = eps(2);
        // Hold 5 requests on the first backend.
        let busy: Vec<InFlight> = (0..5)
            .map(|_| {
                b.pick("/a", 0, (Balance::Leastconn, None), &e[..1], &[])
                    .unwrap()
                    .1
            })
            .collect();
        for _ in 0..50 {
            let (x, _g) = b
                .pick("/a", 0, (Balance::Leastconn, None), &e, &[])
                .unwrap();
            assert_eq!(x.port, 1001);
        }
        drop(busy);
        assert_eq!(b.in_flight(&e[0]), 0, "guards release their count");
    }

    /// Slots are added copy-on-write: threads that meet a new backend at once must still share one counter, and
    /// pruning keeps a backend whose requests are in flight.
    #[test]
    fn new_backends_get_one_counter_whatever_the_race() {
        let b = Arc::new(Balancer::default());
        let e = eps(16);
        let guards: Vec<InFlight> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| e.iter().map(|x| b.take(x)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for x in &e {
            assert_eq!(b.in_flight(x), 8, "{x:?}");
        }
        b.retain(|_| false);
        assert_eq!(b.in_flight(&e[0]), 8, "in flight: kept");
        drop(guards);
        b.retain(|x| x == &e[0]);
        assert_eq!(b.slots.load().len(), 1, "idle and gone: pruned");
    }

    #[test]
    fn repeated_connect_failures_eject() {
        let b = Balancer::default();
        let e = eps(2);
        assert!(!b.connect_failed(&e[0]));
        assert!(!b.connect_failed(&e[0]));
        assert!(b.connect_failed(&e[0]), "third failure in a row ejects");
        for _ in 0..20 {
            assert_eq!(
                b.pick("/a", 0, (Balance::Roundrobin, None), &e, &[])
                    .unwrap()
                    .0,
                &e[1]
            );
        }
        // With every backend ejected, one is still tried.
        for _ in 0..3 {
            b.connect_failed(&e[1]);
        }
        assert!(b
            .pick("/a", 0, (Balance::Roundrobin, None), &e, &[])
            .is_some());
        // A success resets the count.
        let f = eps(3);
        b.connect_failed(&f[2]);
        b.connect_failed(&f[2]);
        b.take(&f[2]).connected();
        assert!(!b.connect_failed(&f[2]));
    }

    #[test]
    fn avoid_the_failed_backend() {
        let b = Balancer::default();
        let e = eps(2);
        for _ in 0..20 {
            let (x, _g) = b
                .pick(
                    "/a",
                    0,
                    (Balance::Roundrobin, None),
                    &e,
                    std::slice::from_ref(&e[0]),
                )
                .unwrap();
            assert_eq!(x, &e[1]);
        }
        assert!(b
            .pick(
                "/a",
                0,
                (Balance::Roundrobin, None),
                &e[..1],
                std::slice::from_ref(&e[0])
            )
            .is_none());
    }

    #[test]
    fn source_keeps_each_client_and_moves_few_when_the_set_changes() {
        let b = Balancer::new(3, Duration::from_secs(10));
        let all = eps(4);
        let clients: Vec<IpAddr> = (0..400u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let pick = |set: &[Endpoint], c: IpAddr| {
            b.pick("/a", 0, (Balance::Source, Some(c)), set, &[])
                .unwrap()
                .0
                .clone()
        };
        let before: Vec<Endpoint> = clients.iter().map(|c| pick(&all, *c)).collect();
        for (c, e) in clients.iter().zip(&before) {
            assert_eq!(&pick(&all, *c), e, "a client keeps its backend");
        }
        let mut per: HashMap<&Endpoint, usize> = HashMap::new();
        for e in &before {
            *per.entry(e).or_default() += 1;
        }
        assert!(per.values().all(|n| (50..=150).contains(n)), "{per:?}");
        // One backend gone: only its clients move.
        let fewer = &all[..3];
        let moved = clients
            .iter()
            .zip(&before)
            .filter(|(c, e)| &pick(fewer, **c) != *e)
            .count();
        assert_eq!(moved, per[&all[3]]);
        // A failed connect moves the client to its next choice, the same one every time.
        let first = pick(&all, clients[0]);
        let next = b
            .pick(
                "/a",
                0,
                (Balance::Source, Some(clients[0])),
                &all,
                std::slice::from_ref(&first),
            )
            .unwrap()
            .0
            .clone();
        assert_ne!(next, first);
    }
}
