//! Idle and header timeouts for the connections hyper serves (HTTP/2, and the API's),
//! the way the fast path keeps them: a connection with no request in flight closes `keep_alive_timeout` after its
//! last response, and an HTTP/1 request head must be whole `header_read_timeout` after its first byte. hyper cannot
//! do either: its HTTP/1 header timer also runs through the idle wait, and HTTP/2 has no idle timeout at all.

use super::deadline::Timeouts;
use hyper_util::server::graceful::GracefulConnection;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
// tokio's clock, so the unit tests can pause it.
use tokio::time::Instant;

/// What the timers need to know of one connection, updated by its reads and its requests.
pub struct Activity {
    start: Instant,
    /// Requests whose response body is not done.
    busy: AtomicUsize,
    /// When the connection last went idle (ms since `start`): its last response ended, or it opened.
    idle_from: AtomicU64,
    /// When the first byte of a head came in while idle (ms since `start`, plus one; 0: none).
    head_from: AtomicU64,
    /// HTTP/2 reads frames (settings, pings) while idle: only the idle timeout applies.
    h2: bool,
    /// Each change above, for the timer to read its deadline anew.
    changed: tokio::sync::Notify,
    /// The bodies of the requests in flight that may wait on the client.
    stalls: std::sync::Mutex<Vec<std::sync::Weak<Stall>>>,
}

/// One body of a request in flight, and since when (ms since the connection's start, plus one; 0: not) it has
/// been waiting on the client: a response frame handed to hyper that the client has not taken yet (its socket or,
/// in HTTP/2, its flow-control window is full), or a request body the backend wants more of.
#[derive(Default)]
pub struct Stall {
    since: AtomicU64,
}

/// Which way a [`Paced`] body flows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    Client,
    Backend,
}

/// A body whose waits on the client are timed (`--client-timeout`): what the fast path's write and read timeouts
/// do, for HTTP/2, where a body is written by hyper and a stalled HTTP/2 stream writes nothing at all.
pub struct Paced<B> {
    inner: B,
    stall: Arc<Stall>,
    activity: Arc<Activity>,
    toward: Toward,
}

impl<B> Paced<B> {
    pub fn new(inner: B, activity: &Arc<Activity>, toward: Toward) -> Paced<B> {
        let stall = Arc::new(Stall::default());
        activity
            .stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&stall));
        Paced {
            inner,
            stall,
            activity: activity.clone(),
            toward,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Paced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let waiting = match (self.toward, &r) {
            // Handed over: from now on it is the client's to take.
            (Toward::Client, Poll::Ready(Some(Ok(_)))) => true,
            (Toward::Backend, Poll::Pending) => true,
            _ => false,
        };
        let since = &self.stall.since;
        if !waiting {
            since.store(0, Ordering::Relaxed);
        } else if since.load(Ordering::Relaxed) == 0 {
            since.store(self.activity.now() + 1, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection is to close.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// Idle for the keep-alive timeout: a graceful close (HTTP/2 gets a GOAWAY).
    Idle,
    /// A request head still incomplete at the header timeout: cut off.
    Head,
    /// A request in flight waited on the client for the client timeout: cut off.
    Stalled,
    /// The server stops: closed gracefully.
    Stopped,
}

impl Activity {
    pub fn new(h2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_from: AtomicU64::new(0),
            // HTTP/1: the first head counts from the connect, as on the fast path.
            head_from: AtomicU64::new(u64::from(!h2)),
            h2,
            changed: tokio::sync::Notify::new(),
            stalls: Default::default(),
        })
    }

    /// Since when (ms since `start`) the longest wait on the client of the bodies in flight has lasted.
    fn stalled_since(&self) -> Option<u64> {
        let mut stalls = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        stalls.retain(|w| w.strong_count() > 0);
        stalls
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|s| s.since.load(Ordering::Relaxed))
            .filter(|s| *s > 0)
            .min()
            .map(|s| s - 1)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A request reached the service: it is in flight until its response body is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_from.store(0, Ordering::Relaxed);
        self.changed.notify_one();
        Busy(self.clone())
    }

    fn read(&self) {
        if !self.h2
            && self.busy.load(Ordering::Relaxed) == 0
            && self.head_from.load(Ordering::Relaxed) == 0
        {
            self.head_from.store(self.now() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// When the next timeout falls due (ms since `start`), and which; `None` while a request is in flight.
    fn due(&self, header: Duration, keep_alive: Duration) -> Option<(u64, Expired)> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_from.load(Ordering::Relaxed) {
            0 => Some((
                self.idle_from.load(Ordering::Relaxed) + keep_alive.as_millis() as u64,
                Expired::Idle,
            )),
            from => Some((from - 1 + header.as_millis() as u64, Expired::Head)),
        }
    }

    /// Resolves when the connection is to close. While requests are in flight, the waits on the client are looked
    /// at every `client / 4` (at most every second): they change with every frame, too often to be told of.
    pub async fn expired(&self, t: Timeouts<'_>, limits: Limits) -> Expired {
        let Limits {
            header,
            keep_alive,
            client,
        } = limits;
        let look = (client / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            // Taken before the state is read, so a change made meanwhile still wakes this loop.
            let changed = self.changed.notified();
            let due = self.due(header, keep_alive).or_else(|| {
                let since = self.stalled_since()?;
                Some((since + client.as_millis() as u64, Expired::Stalled))
            });
            let busy = self.busy.load(Ordering::Relaxed) > 0;
            let wait = match due {
                None if busy => Some(look),
                None => None,
                Some((at, why)) => match at.checked_sub(self.now()) {
                    None | Some(0) => return why,
                    Some(ms) if busy => Some(Duration::from_millis(ms).min(look)),
                    Some(ms) => Some(Duration::from_millis(ms)),
                },
            };
            match wait {
                None => changed.await,
                Some(wait) => drop(t.within(wait, changed).await),
            }
        }
    }
}

/// The timeouts of a connection hyper serves.
#[derive(Clone, Copy)]
pub struct Limits {
    /// A request head must be whole this long after its first byte.
    pub header: Duration,
    /// A connection with no request in flight closes this long after its last response.
    pub keep_alive: Duration,
    /// A request in flight may wait on the client this long.
    pub client: Duration,
}

/// Serves `conn` until it ends, `stop` resolves (a graceful close, waited for) or `activity` expires (an idle
/// connection is closed gracefully, for at most the header timeout; the others are cut off). Says why it was
/// closed; `None` when it ended by itself.
pub async fn serve<C: GracefulConnection>(
    conn: C,
    activity: &Activity,
    t: Timeouts<'_>,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Option<Expired> {
    tokio::pin!(conn);
    let why = tokio::select! {
        _ = conn.as_mut() => return None,
        () = stop => Expired::Stopped,
        why = activity.expired(t, limits) => why,
    };
    match why {
        Expired::Idle => {
            // HTTP/2's GOAWAY waits for the client's answer to a ping; a client that never answers is not waited
            // for longer than for a head.
            conn.as_mut().graceful_shutdown();
            let _ = t.within(limits.header, conn).await;
        }
        Expired::Stopped => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Expired::Head | Expired::Stalled => {}
    }
    Some(why)
}

/// A request in flight; dropped with its response body (`Guarded`).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_from.store(a.now(), Ordering::Relaxed);
        a.busy.fetch_sub(1, Ordering::Relaxed);
        a.changed.notify_one();
    }
}

/// The connection's IO, telling `Activity` of every read that brings bytes.
pub struct Metered<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Metered<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Metered<T> {
        Metered { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

/// `AsyncWrite` for a wrapper that only watches reads: every call goes to its `inner` as it is.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through;

write_through!(Metered);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle;

    use crate::proxy::deadline::{Deadlines, TICK};

    // Long against the sweeper's tick, which is how late a deadline may fire.
    const HEAD: Duration = Duration::from_millis(1000);
    const IDLE: Duration = Duration::from_millis(3000);

    fn watch(a: &Arc<Activity>) -> JoinHandle<Expired> {
        let a = a.clone();
        let deadlines = Deadlines::spawn();
        tokio::spawn(async move {
            let mine = deadlines.register();
            let limits = Limits {
                header: HEAD,
                keep_alive: IDLE,
                client: IDLE * 2,
            };
            a.expired(deadlines.timeouts(&mine), limits).await
        })
    }

    /// `timer` fires for `want`, `after` from `from` (not before, and at most two sweeper ticks late).
    async fn fires(
        timer: JoinHandle<Expired>,
        from: tokio::time::Instant,
        want: Expired,
        after: Duration,
    ) {
        let why = tokio::time::timeout(IDLE * 10, timer)
            .await
            .expect("the timer never fired")
            .expect("timer task");
        let took = from.elapsed();
        let slack = Duration::from_millis(5);
        assert!(
            why == want && took + slack >= after && took < after + TICK * 2 + slack,
            "{why:?} after {took:?}, want {want:?} after {after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_waits_for_its_first_head_the_header_timeout() {
        let a = Activity::new(false);
        fires(watch(&a), tokio::time::Instant::now(), Expired::Head, HEAD).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_a_response_it_waits_the_keep_alive_timeout() {
        let a = Activity::new(false);
        let busy = a.begin();
        let timer = watch(&a);
        // A request in flight longer than both timeouts is never cut by them.
        tokio::time::sleep(IDLE * 3).await;
        assert!(!timer.is_finished());
        let t = tokio::time::Instant::now();
        drop(busy);
        fires(timer, t, Expired::Idle, IDLE).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_starts_while_idle_gets_the_header_timeout_from_its_first_byte() {
        let a = Activity::new(false);
        drop(a.begin());
        let timer = watch(&a);
        tokio::time::sleep(IDLE / 2).await;
        a.read();
        let t = tokio::time::Instant::now();
        // Later bytes of the same head do not move its deadline.
        tokio::time::sleep(HEAD / 2).await;
        a.read();
        fires(timer, t, Expired::Head, HEAD).await;
    }

    /// The timer learns of the end of a request (and of the next head) at once, not at its next deadline.
    #[tokio::test(start_paused = true)]
    async fn a_head_right_after_a_long_request_is_timed_from_its_first_byte() {
        let a = Activity::new(false);
        let busy = a.begin();
        let timer = watch(&a);
        tokio::time::sleep(IDLE + IDLE / 3).await;
        let t = tokio::time::Instant::now();
        drop(busy);
        a.read();
        fires(timer, t, Expired::Head, HEAD).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_the_client_is_cut_at_the_client_timeout() {
        use http_body_util::BodyExt;
        let a = Activity::new(true);
        let busy = a.begin();
        let timer = watch(&a);
        // A response frame taken by the client, then one it does not take: cut at 2 × IDLE from the hand-over.
        let mut resp = Paced::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"x")),
            &a,
            Toward::Client,
        );
        tokio::time::sleep(IDLE).await;
        let t = tokio::time::Instant::now();
        assert!(resp.frame().await.is_some());
        fires(timer, t, Expired::Stalled, IDLE * 2).await;
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_the_client_stops_sending_is_cut_at_the_client_timeout() {
        use http_body_util::BodyExt;
        let a = Activity::new(false);
        let busy = a.begin();
        let timer = watch(&a);
        // The backend asks for the body; the client sends nothing: cut at 2 × IDLE from the first wait.
        let (_tx, mut body) = silent(&a, Toward::Backend);
        let t = tokio::time::Instant::now();
        let reading = tokio::spawn(async move { body.frame().await.is_some() });
        fires(timer, t, Expired::Stalled, IDLE * 2).await;
        reading.abort();
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_backend_is_not_the_clients_stall() {
        use http_body_util::BodyExt;
        let a = Activity::new(true);
        let busy = a.begin();
        let timer = watch(&a);
        // A response body the backend has not produced yet: hyper waits on it, not on the client.
        let (_tx, mut resp) = silent(&a, Toward::Client);
        let _ = tokio::time::timeout(IDLE * 5, resp.frame()).await;
        assert!(!timer.is_finished());
        drop(busy);
    }

    type Frames = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;

    /// A body that yields nothing until its sender sends (keep the sender: dropping it ends the body).
    fn silent(
        a: &Arc<Activity>,
        toward: Toward,
    ) -> (
        tokio::sync::mpsc::Sender<Frames>,
        Paced<
            impl hyper::body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Unpin,
        >,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Frames>(1);
        let frames = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        (
            tx,
            Paced::new(http_body_util::StreamBody::new(frames), a, toward),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn http2_reads_while_idle_do_not_start_a_head() {
        let a = Activity::new(true);
        a.read();
        fires(watch(&a), tokio::time::Instant::now(), Expired::Idle, IDLE).await;
    }
}
