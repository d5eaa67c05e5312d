//! Raw sockets on both sides of the proxy: a backend that records the exact bytes it gets and the requests it
//! parsed out of them, and a client that sends bytes as given and reads what comes back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend framed it (by its own, strict reading of RFC 9112).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The head's header lines, as they came (name: value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of header `name` (any case).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

/// What the backend answers a request with: raw bytes, then whether to close.
pub type Responder = Arc<dyn Fn(&Seen) -> (Vec<u8>, bool) + Send + Sync>;

/// The default answer: 200, a body naming the request (`<method> <target>`), keep-alive.
pub fn echo(req: &Seen) -> (Vec<u8>, bool) {
    let body = format!("{} {}", req.method, req.target);
    (
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        false,
    )
}

pub struct Recorder {
    pub port: u16,
    /// Each accepted connection's bytes, in order of acceptance.
    pub bytes: Arc<Mutex<Vec<Vec<u8>>>>,
    pub requests: Arc<Mutex<Vec<Seen>>>,
    /// Connections open right now.
    pub open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    pub fn start() -> Recorder {
        Self::with(Arc::new(echo))
    }

    pub fn with(respond: Responder) -> Recorder {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let l = TcpListener::from_std(l).expect("tokio listener");
        let bytes: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let requests: Arc<Mutex<Vec<Seen>>> = Default::default();
        let open: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let (b, r, o) = (bytes.clone(), requests.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let idx = {
                    let mut b = b.lock().unwrap();
                    b.push(Vec::new());
                    b.len() - 1
                };
                let (b, r, o, respond) = (b.clone(), r.clone(), o.clone(), respond.clone());
                o.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut c = Conn {
                        s,
                        buf: Vec::new(),
                        all: b,
                        idx,
                    };
                    while let Some(req) = c.request().await {
                        r.lock().unwrap().push(req.clone());
                        let (answer, close) = respond(&req);
                        if c.s.write_all(&answer).await.is_err() || close {
                            break;
                        }
                    }
                    o.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Recorder {
            port,
            bytes,
            requests,
            open,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    /// Everything every connection sent, in one string (for messages and `contains` checks).
    pub fn all_bytes(&self) -> String {
        let b = self.bytes.lock().unwrap();
        b.iter()
            .filter(|c| !c.is_empty())
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n--- next connection ---\n")
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
        self.bytes.lock().unwrap().iter_mut().for_each(Vec::clear);
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    all: Arc<Mutex<Vec<Vec<u8>>>>,
    idx: usize,
}

impl Conn {
    async fn more(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match self.s.read(&mut b).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                self.all.lock().unwrap()[self.idx].extend_from_slice(&b[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.more().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    async fn request(&mut self) -> Option<Seen> {
        let start = self.line().await?;
        let mut parts = start.split(' ');
        let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
        let mut headers = Vec::new();
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut req = Seen {
            method,
            target,
            headers,
            body: Vec::new(),
        };
        if req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"))
        {
            loop {
                let size = self.line().await?;
                let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                let chunk = self.exact(size + 2).await?;
                req.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = req.header("content-length") {
            let n: usize = n.parse().ok()?;
            req.body = self.exact(n).await?;
        }
        Some(req)
    }
}

/// Sends `bytes` on a new connection to `addr` and reads until the proxy closes it or `wait` passes.
pub async fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_for(&mut s, wait).await
}

/// Reads one head (through its blank line) byte by byte, so what follows stays on the socket.
pub async fn read_head(s: &mut TcpStream) -> String {
    read_until(s, b"\r\n\r\n").await
}

/// Reads byte by byte (never past `end`, so what follows stays on the socket) until `end` or the end of the stream.
pub async fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(end) {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => buf.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads what arrives until the peer closes or `wait` passes.
pub async fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

/// The status codes of the responses in `raw`, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// `GET /a/x` on a new connection, closed after it.
pub async fn get_a(addr: &str) -> String {
    exchange(
        addr,
        b"GET /a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
}

/// Waits up to 10 s for `/a` to route through `r` at `addr`.
pub async fn until_routed(r: &super::Rattan, addr: &str) {
    let t = Instant::now();
    while !get_a(addr).await.starts_with("HTTP/1.1 200") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never routed:\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// rattan against a simulator whose app `/a` is `backend`; returns the proxy's `host:port` once `/a` routes.
pub async fn front(
    backend: &Recorder,
    extra: &[&str],
) -> (super::Rattan, String, rattan::dev::simulator::Simulator) {
    let (r, addr, m) = start_on(backend.port, extra).await;
    until_routed(&r, &addr).await;
    backend.clear();
    (r, addr, m)
}

/// rattan against a simulator whose app `/a` is the backend on `port`; returns at once, with the proxy's
/// `host:port`.
pub async fn start_on(
    port: u16,
    extra: &[&str],
) -> (super::Rattan, String, rattan::dev::simulator::Simulator) {
    let m = super::cluster().await;
    super::app_on(&m, "/a", port);
    let url = m.url();
    let mut args = vec!["--marathon", url.as_str()];
    args.extend_from_slice(super::FAST);
    args.extend_from_slice(extra);
    let r = super::Rattan::start(&args);
    let addr = r.proxy.trim_start_matches("http://").to_string();
    (r, addr, m)
}
