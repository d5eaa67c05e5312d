//! File descriptors: the soft limit raised to the hard one at start, a budget that keeps the API from taking the
//! descriptors the proxy needs, and accept loops that back off (instead of spinning) when they run out.

use std::time::{Duration, Instant};

/// Descriptors kept for everything but connections: listeners, Marathon, ZooKeeper, files, logs.
pub const RESERVED: u64 = 64;

/// The soft `RLIMIT_NOFILE` raised to the hard limit; returns the limit in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct passed; no other memory is touched.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// How the descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub nofile: u64,
    /// API connections at once: at most an eighth of what is left after the reserve.
    pub api: usize,
    /// Proxy client connections at once: each may hold a backend connection too.
    pub proxy: usize,
}

impl Budget {
    pub fn new(nofile: u64, api_max: usize, proxy_max: usize) -> Budget {
        let usable = nofile.saturating_sub(RESERVED).max(16);
        let api = (api_max as u64).min(usable / 8).max(1);
        let proxy = (proxy_max as u64).min((usable - api) / 2).max(1);
        Budget {
            nofile,
            api: api as usize,
            proxy: proxy as usize,
        }
    }

    /// Says what was lowered, once at start.
    pub fn report(&self, api_max: usize, proxy_max: usize) {
        tracing::info!(
            nofile = self.nofile,
            api_connections = self.api,
            proxy_connections = self.proxy,
            "file descriptor limit"
        );
        if self.api < api_max || self.proxy < proxy_max {
            tracing::warn!(nofile = self.nofile, api_connections = self.api, proxy_connections = self.proxy,
                "connection limits lowered to fit RLIMIT_NOFILE (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)");
        }
    }
}

/// An accept loop's failures: growing pauses (10 ms to 1 s) while they last, one log line per 10 s.
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    failed: u64,
    logged: Option<Instant>,
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            delay: Duration::ZERO,
            failed: 0,
            logged: None,
        }
    }

    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Logs (rate-limited) and waits before the next accept.
    pub async fn failed(&mut self, error: &std::io::Error) {
        self.failed += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(listener = self.what, %error, failures = self.failed,
                "accept failed; backing off (out of file descriptors?)");
            self.logged = Some(Instant::now());
        }
        crate::metrics::metrics()
            .accept_failures
            .with_label_values(&[self.what])
            .inc();
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_never_takes_what_the_proxy_needs() {
        let b = Budget::new(1024, 256, 10_000);
        assert_eq!(b.api, (1024 - RESERVED) as usize / 8);
        assert_eq!(b.proxy, (1024 - RESERVED as usize - b.api) / 2);
        assert!(RESERVED as usize + b.api + 2 * b.proxy <= 1024);
        let big = Budget::new(1 << 20, 256, 10_000);
        assert_eq!((big.api, big.proxy), (256, 10_000));
        let tiny = Budget::new(10, 256, 10_000);
        assert!(tiny.api >= 1 && tiny.proxy >= 1);
    }
}
