//! What the one HTTP/1 implementation takes on besides small keep-alive requests: chunked and streamed request
//! bodies, `Expect: 100-continue`, HTTP/1.0, absolute-form targets. Each case checks the bytes a raw backend got and
//! what the client got.

mod common;

use common::raw::{exchange, front, read_for, read_head, start_on, statuses, Recorder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(3);

fn vm_hwm_kib(pid: u32) -> u64 {
    common::proc_status_kib(pid, "VmHWM")
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_bodies_pass_through_with_extensions_and_trailers() {
    let backend = Recorder::start();
    let (_r, addr, _m) = front(&backend, &[]).await;
    // A small one, whole in the first read, then a request pipelined behind it.
    let small: &[u8] = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n";
    let mut bytes =
        b"POST /a/small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    bytes.extend_from_slice(small);
    bytes.extend_from_slice(b"GET /a/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let got = exchange(&addr, &bytes, WAIT).await;
    assert_eq!(statuses(&got), [200, 200], "{got}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 2, "{}", backend.all_bytes());
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[0].all("transfer-encoding"), ["chunked"]);
    assert!(seen[0].all("content-length").is_empty());
    assert_eq!(seen[1].target, "/a/after");
    // The coding goes as it came: extensions and trailers included.
    let raw = backend.all_bytes();
    assert!(raw.contains(std::str::from_utf8(small).unwrap()), "{raw}");

    // A large one (past what is read before a backend is chosen), written in pieces: streamed through whole, and
    // the next request on the connection is found after it.
    backend.clear();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /a/large HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let mut want = Vec::new();
    for i in 0..300u32 {
        let chunk = vec![b'a' + (i % 26) as u8; 1000 + i as usize];
        want.extend_from_slice(&chunk);
        let mut piece = format!("{:x};i={i}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        s.write_all(&piece).await.unwrap();
    }
    s.write_all(b"0\r\n\r\nGET /a/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_for(&mut s, WAIT).await;
    assert_eq!(statuses(&got), [200, 200], "{got}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body.len(), want.len());
    assert!(seen[0].body == want, "the body arrived changed");
    assert_eq!(seen[1].target, "/a/next");
}

/// A backend that reads its request body slowly (16 KiB every 2 ms) and answers with the number of body bytes; one
/// request per connection.
fn slow_backend() -> (u16, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    tokio::spawn(async move {
        let l = TcpListener::from_std(l).unwrap();
        while let Ok((mut s, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                if !head.ends_with("\r\n\r\n") {
                    return;
                }
                let head = head.to_ascii_lowercase();
                let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                else {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                };
                let mut n = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while n < len {
                    let want = buf.len().min(len - n);
                    match s.read(&mut buf[..want]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                g.store(n, Ordering::SeqCst);
                let body = n.to_string();
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_upload_streams_to_a_slow_backend_in_bounded_memory() {
    const SIZE: usize = 10 << 20;
    let (port, got) = slow_backend();
    let (r, addr, _m) = start_on(port, &[]).await;
    common::raw::until_routed(&r, &addr).await;
    let before = vm_hwm_kib(r.pid());
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!("POST /a/upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let upload = tokio::spawn(async move {
        let piece = vec![b'u'; 256 * 1024];
        for _ in 0..SIZE / piece.len() {
            wr.write_all(&piece).await.unwrap();
        }
        wr
    });
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&resp).ends_with(&SIZE.to_string()) {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => resp.extend_from_slice(&b[..n]),
            }
        }
    })
    .await;
    let _wr = upload.await.unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", r.log());
    assert_eq!(got.load(Ordering::SeqCst), SIZE);
    let after = vm_hwm_kib(r.pid());
    eprintln!("VmHWM before the upload {before} KiB, after {after} KiB");
    // A buffered body would add its 10 MiB; streamed, the peak moves by the buffers of one connection.
    assert!(
        after < before + 4 * 1024,
        "VmHWM grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_answers_before_the_body_ends_is_heard() {
    // Answers 413 on the head and closes, never reading the body.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let l = TcpListener::from_std(l).unwrap();
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if !read_head(&mut s).await.ends_with("\r\n\r\n") {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
                    .await;
                // Linger without reading, then close.
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
        }
    });
    let (r, addr, _m) = start_on(port, &[]).await;
    let t = std::time::Instant::now();
    loop {
        let got = exchange(
            &addr,
            b"GET /a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        if statuses(&got) == [413] {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /a/up HTTP/1.1\r\nHost: a\r\nContent-Length: 8000000\r\n\r\n")
        .await
        .unwrap();
    // The client keeps sending while the answer comes; it gets the 413 and the connection ends.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            if wr.write_all(&piece).await.is_err() {
                break;
            }
        }
    });
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut all)).await;
    let all = String::from_utf8_lossy(&all).into_owned();
    assert_eq!(statuses(&all), [413], "{all}\n{}", r.log());
    assert!(all.ends_with("big"), "{all}");
    assert!(
        all.to_ascii_lowercase().contains("connection: close"),
        "{all}"
    );
    writer.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_once() {
    // The second backend sends a 100 of its own (unasked, as RFC 9110 allows): the client still sees one.
    let backend = Recorder::with(Arc::new(|req: &common::raw::Seen| {
        let extra: &[u8] = if req.target.contains("eager") {
            b"HTTP/1.1 100 Continue\r\n\r\n"
        } else {
            b""
        };
        let (r, close) = common::raw::echo(req);
        ([extra, &r].concat(), close)
    }));
    let (_r, addr, _m) = front(&backend, &[]).await;
    for target in ["/a/up", "/a/eager"] {
        backend.clear();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("POST {target} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let cont = tokio::time::timeout(WAIT, read_head(&mut s))
            .await
            .unwrap_or_default();
        assert_eq!(cont, "HTTP/1.1 100 Continue\r\n\r\n", "{target}");
        assert!(backend.requests().is_empty(), "the body is not there yet");
        s.write_all(b"ping").await.unwrap();
        let rest = read_for(&mut s, WAIT).await;
        assert_eq!(statuses(&rest), [200], "{target}: {rest}");
        let seen = backend.requests();
        assert_eq!(seen[0].body, b"ping");
        assert!(seen[0].all("expect").is_empty(), "{:?}", seen[0]);
    }
    // No route: the final answer at once, no 100, and the connection ends (the body may follow or not).
    let got = exchange(
        &addr,
        b"POST /nowhere HTTP/1.1\r\nHost: zz\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [404], "{got}");
    assert!(!got.contains(" 100 "), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_keep_alive_only_when_asked() {
    let backend = Recorder::with(Arc::new(|req: &common::raw::Seen| {
        if req.target.contains("chunked") {
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                    .to_vec(),
                false,
            )
        } else {
            common::raw::echo(req)
        }
    }));
    let (_r, addr, _m) = front(&backend, &[]).await;
    // Keep-alive: two requests, one connection; each response says keep-alive.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /a/one HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /a/two HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let got = read_for(&mut s, Duration::from_millis(800)).await;
    assert_eq!(statuses(&got), [200, 200], "{got}");
    assert_eq!(
        got.matches("connection: keep-alive\r\n").count(),
        2,
        "{got}"
    );
    assert!(got.ends_with("GET /a/two"), "{got}");
    // Still open: a third request is answered.
    s.write_all(b"GET /a/three HTTP/1.0\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let got = read_for(&mut s, WAIT).await;
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        backend.all_bytes().contains("GET /a/one HTTP/1.1\r\n"),
        "{}",
        backend.all_bytes()
    );
    // Without keep-alive the connection ends after the response (read_for returns at the close).
    let t = std::time::Instant::now();
    let got = exchange(&addr, b"GET /a/plain HTTP/1.0\r\nHost: a\r\n\r\n", WAIT).await;
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(t.elapsed() < Duration::from_secs(2), "not closed");
    // A chunked response reaches an HTTP/1.0 client as its data alone, ended by the close.
    let got = exchange(
        &addr,
        b"GET /a/chunked HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(got.ends_with("\r\n\r\nhello world"), "{got:?}");
    assert!(
        !got.to_ascii_lowercase().contains("transfer-encoding"),
        "{got}"
    );
    assert!(got.contains("connection: close\r\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_targets_route_by_their_host() {
    let backend = Recorder::start();
    let (_r, addr, _m) = front(&backend, &[]).await;
    let got = exchange(
        &addr,
        b"GET http://a/a/abs?q=1 HTTP/1.1\r\nHost: a\r\n\r\nGET HTTP://A/a/nohost HTTP/1.1\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&got), [200, 200], "{got}");
    let seen = backend.requests();
    assert_eq!(seen[0].target, "/a/abs?q=1");
    assert_eq!(seen[0].all("host"), ["a"]);
    // Without Host, the target's authority is the Host the backend gets.
    assert_eq!(seen[1].target, "/a/nohost");
    assert_eq!(seen[1].all("host"), ["A"]);
    // Neither a path nor an http URL: 400, nothing forwarded.
    backend.clear();
    let got = exchange(&addr, b"GET ftp://a/a/x HTTP/1.1\r\nHost: a\r\n\r\n", WAIT).await;
    assert_eq!(statuses(&got), [400], "{got}");
    assert!(backend.requests().is_empty());
}
