//! Coarse deadlines for the fast path's connections: one atomic per connection, set when a wait begins and checked
//! by a sweeper task every [`TICK`], instead of a tokio timer moved and polled on every wait (which cost more than
//! all the rest of a small request's bookkeeping). Deadlines fire between their time and two ticks after it.
//! [`Timeouts::within`] is the one timeout call of the proxy: every HTTP/1 wait, the HTTP/2 and API connection
//! timers ([`super::idle`]), TLS handshakes, backend connects and HTTP/2's backend waits. A wait without a connection
//! deadline of its own (one stream of many, a connect) takes a fresh one with [`Deadlines::within`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
// tokio's clock, so that tests can pause it.
use tokio::time::Instant;

pub const TICK: Duration = Duration::from_millis(100);

/// `Deadline::at` values that are not ticks.
const UNSET: u64 = 0;
const FIRED: u64 = u64::MAX;
const CLOSED: u64 = u64::MAX - 1;

pub struct Deadlines {
    start: Instant,
    /// Ticks since `start`, as of the last sweep.
    now: AtomicU64,
    all: Mutex<Vec<Arc<Deadline>>>,
}

/// One connection's deadline, for one wait at a time. It must be polled from one task only (the connection's): the
/// first poll keeps that task's waker for the sweeper.
#[derive(Default)]
pub struct Deadline {
    at: AtomicU64,
    waker: OnceLock<Waker>,
}

/// A registered deadline; dropping it unregisters it (at the next sweep).
pub struct Registered(Arc<Deadline>);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.at.store(CLOSED, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Registered {
    type Target = Deadline;
    fn deref(&self) -> &Deadline {
        &self.0
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            start: Instant::now(),
            // Tick 0 would read as "unset".
            now: AtomicU64::new(1),
            all: Mutex::default(),
        }
    }
}

impl Deadlines {
    pub fn register(&self) -> Registered {
        let d = Arc::new(Deadline::default());
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d.clone());
        Registered(d)
    }

    /// The one timeout call for a connection whose deadline is `mine`.
    pub fn timeouts<'a>(&'a self, mine: &'a Deadline) -> Timeouts<'a> {
        Timeouts { all: self, mine }
    }

    /// `fut`, unless `after` passes first, on a deadline of its own: for a wait that may overlap others of its
    /// connection.
    pub async fn within<F: Future>(&self, after: Duration, fut: F) -> Option<F::Output> {
        let mine = self.register();
        self.timeouts(&mine).within(after, fut).await
    }

    /// Sets `d` to fire `after` from now (never earlier, at most two ticks later).
    pub fn arm(&self, d: &Deadline, after: Duration) {
        let ticks = after.as_millis().div_ceil(TICK.as_millis()) as u64;
        d.at.store(
            self.now.load(Ordering::Relaxed) + ticks + 1,
            Ordering::Relaxed,
        );
    }

    /// Fires what is due and forgets closed deadlines.
    fn sweep(&self, now: u64) {
        self.now.store(now, Ordering::Relaxed);
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|d| {
            let at = d.at.load(Ordering::Relaxed);
            if at == CLOSED {
                return false;
            }
            // Only the deadline read here: one set anew meanwhile is left alone.
            if at != UNSET
                && at != FIRED
                && at <= now
                && d.at
                    .compare_exchange(at, FIRED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                if let Some(w) = d.waker.get() {
                    w.wake_by_ref();
                }
            }
            true
        });
    }

    /// New deadlines, with their sweeper: a task that runs until the last `Arc` is dropped.
    pub fn spawn() -> Arc<Deadlines> {
        let all = Arc::new(Deadlines::default());
        crate::periodic::every(&all, TICK, |all: Arc<Deadlines>| async move {
            // Ticks from the clock, not counted: a late tick fires all that fell due meanwhile.
            let now = (all.start.elapsed().as_millis() / TICK.as_millis()) as u64 + 1;
            all.sweep(now);
        });
        all
    }
}

impl Deadline {
    /// Ready once the deadline set last has passed.
    pub fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.at.load(Ordering::Relaxed) == FIRED {
            return Poll::Ready(());
        }
        if self.waker.get().is_none() {
            let _ = self.waker.set(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The connection's deadline, with the sweeper's clock.
#[derive(Clone, Copy)]
pub struct Timeouts<'a> {
    pub all: &'a Deadlines,
    pub mine: &'a Deadline,
}

impl Timeouts<'_> {
    /// `fut`, unless `after` passes first. The deadline is set only when `fut` has to wait: most writes finish on
    /// their first poll.
    pub async fn within<F: Future>(self, after: Duration, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if !armed {
                self.all.arm(self.mine, after);
                armed = true;
            }
            self.mine.poll_expired(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn fires_when_due_and_only_the_deadline_set_last() {
        let ds = Deadlines::default();
        let d = ds.register();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        ds.arm(&d, Duration::from_millis(250));
        assert!(d.poll_expired(&mut cx).is_pending());
        // 250 ms from tick 1: three ticks, plus one for the sweep that set "now".
        ds.sweep(4);
        assert!(d.poll_expired(&mut cx).is_pending(), "not before its time");
        ds.sweep(5);
        assert!(d.poll_expired(&mut cx).is_ready());
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waiting task is woken"
        );
        // Set anew: the old firing is forgotten.
        ds.arm(&d, Duration::from_secs(1));
        assert!(d.poll_expired(&mut cx).is_pending());
        ds.sweep(6);
        assert!(d.poll_expired(&mut cx).is_pending());
        // Dropped: gone at the next sweep.
        drop(d);
        ds.sweep(100);
        assert!(ds.all.lock().unwrap().is_empty());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
