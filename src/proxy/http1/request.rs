//! A request head: read once with httparse, refused when its framing, Host or target is ambiguous, routed, and
//! rewritten into the head the backend gets (the client's lines as they came, minus the hop-by-hop ones, plus the
//! forwarded ones).

use super::buf::MAX_HEADERS;
use super::client::{LogInfo, Peer, Seen};
use super::fields::{copy_lines, header, Fields};
use super::framing::{self, BodyState};
use super::head;
use crate::proxy::answer::Answer;
use crate::proxy::log::AccessLog;
use crate::proxy::route::Proxy;
use crate::proxy::route::{host_name, sticky_cookie, Picker, Routed, Target};
use crate::rules::acl::{Headers, Request as AclRequest};
use crate::rules::table::Route;
use crate::snapshot::Snapshot;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// A request head read and routed, with its rewritten head in the connection's `out`.
pub(super) struct Forward<'s> {
    pub route: &'s Route,
    pub picker: Picker<'s, 's>,
    /// Where the request body ends (`None`: it has none).
    pub body: Option<BodyState>,
    /// The client asked to close after this request.
    pub close: bool,
    pub upgrade: bool,
    pub head_request: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
    pub http10: bool,
    /// Where each backend's own Host line goes in the head, for a client that sent none (HTTP/1.0).
    pub host_at: Option<usize>,
    /// The Host the client asked for, when the route puts redirects back under its path (`revproxy_path`).
    pub host: Option<String>,
}

pub(super) enum Plan<'s> {
    /// The head is not complete yet.
    More,
    /// HTTP/2 with prior knowledge: hyper's, for the rest of the connection.
    H2,
    /// Answered without a backend; `close` ends the connection after it.
    Answer {
        route: Option<&'s Route>,
        answer: Answer,
        close: bool,
        http10: bool,
    },
    Forward(Forward<'s>),
}

impl Plan<'_> {
    /// The 431 for a head still unfinished at the size limit.
    pub fn too_large() -> Plan<'static> {
        Plan::Answer {
            route: None,
            answer: Answer::too_large("request head too large"),
            close: true,
            http10: false,
        }
    }
}

/// A request target: origin-form as it is; absolute-form split into its authority and the origin-form part.
fn split_target(target: &str) -> Result<(Option<&str>, Cow<'_, str>), &'static str> {
    if target.starts_with('/') || target == "*" {
        return Ok((None, target.into()));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find(|s| {
            target
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        })
        .map(|s| &target[s.len()..])
        .ok_or("request target is neither a path nor an http URL")?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return Err("request target has no host");
    }
    Ok((
        Some(authority),
        match path.as_bytes().first() {
            Some(b'/') => path.into(),
            _ => format!("/{path}").into(),
        },
    ))
}

/// How a request's body is framed, once its head is judged: the body (`None`: none), or the refusal.
fn body_framing(f: &Fields<'_>, http10: bool, peer: &Peer) -> Result<Option<BodyState>, Answer> {
    let smuggling = |why| Err(Answer::smuggling(peer.addr, why));
    if f.transfer_encoding.is_some() && f.content_length.is_some() {
        return smuggling(framing::CL_AND_TE);
    }
    if f.chunked > 1 {
        return smuggling(framing::CHUNKED_TWICE);
    }
    // `chunked` alone: another coding before it is legal but unused by clients, and one a backend reads
    // differently (an unknown name, a stray character) is how smugglers try.
    if f.transfer_encoding.is_some_and(|te| {
        f.transfer_encoding_lines.count_ones() > 1
            || !te.trim_ascii().eq_ignore_ascii_case(b"chunked")
    }) {
        return smuggling(framing::NOT_CHUNKED);
    }
    if f.transfer_encoding.is_some() && http10 {
        return smuggling(framing::TE_IN_HTTP10);
    }
    if f.content_length_conflict {
        return Err(Answer::bad_request("conflicting Content-Length values"));
    }
    match (
        f.transfer_encoding,
        f.content_length.map(framing::parse_length),
    ) {
        (Some(_), _) => Ok(Some(BodyState::chunked())),
        (None, None | Some(Some(0))) => Ok(None),
        (None, Some(Some(n))) => Ok(Some(BodyState::Length(n))),
        (None, Some(None)) => Err(Answer::bad_request("invalid Content-Length")),
    }
}

/// The host a request names: Host, else an absolute-form target's authority. An absolute-form target must name
/// the host Host names: a proxy that routed by one and forwarded the other would let a client pick routes the
/// rules do not give it (HAProxy answers 400 too).
fn request_host<'a>(
    f: &Fields<'a>,
    authority: Option<&'a str>,
    http10: bool,
) -> Result<Option<&'a str>, Answer> {
    if f.hosts > 1 {
        return Err(Answer::bad_request("more than one Host header"));
    }
    if let (Some(a), Some(h)) = (authority, f.host) {
        if !a.as_bytes().eq_ignore_ascii_case(h) {
            return Err(Answer::bad_request(
                "Host does not match the request target's authority",
            ));
        }
    }
    if f.hosts == 0 && authority.is_none() && !http10 {
        return Err(Answer::bad_request("HTTP/1.1 request without Host"));
    }
    // Host is ASCII but for the odd client: checked a word at a time, then taken as it is.
    let host = match f.host {
        // SAFETY: checked just before.
        Some(h) if h.is_ascii() => Some(unsafe { head::ascii(h) }),
        Some(h) => {
            Some(std::str::from_utf8(h).map_err(|_| Answer::bad_request("Host is not UTF-8"))?)
        }
        None => None,
    };
    Ok(host.or(authority))
}

/// Method, target, HTTP/1 minor version.
type RequestLine<'b> = (&'b str, &'b str, u8);

/// The request line of the head in `buf` (`None` until it is whole) and the head's length.
fn parse<'h, 'b>(
    req: &mut httparse::Request<'h, 'b>,
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(usize, RequestLine<'b>)>, Answer> {
    let n = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Answer::too_large("too many header fields"))
        }
        Err(e) => {
            return Err(Answer::bad_request(&format!(
                "malformed request head ({e})"
            )))
        }
    };
    match (req.method, req.path, req.version) {
        (Some(method), Some(target), Some(minor)) => Ok(Some((n, (method, target, minor)))),
        _ => Err(Answer::bad_request("malformed request head")),
    }
}

/// Reads the request head in `buf` (when whole), routes it and writes the head to send into `out`; `log` gets
/// what the access log needs, when it is on.
/// What the rules see of the request: (method, target, path), the host, the fields, the connection's facts.
fn acl_request<'a>(
    peer: &'a Peer,
    (method, target, path): (&'a str, &'a str, &'a str),
    host: Option<&'a str>,
    headers: &'a [httparse::Header<'a>],
) -> AclRequest<'a> {
    AclRequest {
        path,
        method,
        host: host.map(host_name),
        headers: Headers::Raw(headers),
        src: Some(peer.addr.ip()),
        url: target,
        tls: peer.tls,
        sni: peer.sni.as_deref(),
        dst_port: peer.port,
    }
}

/// The client's X-Request-Id, else a new one (made into `made`; the head gets it).
fn request_id<'a>(f: &Fields<'a>, made: &'a mut [u8; 16]) -> &'a [u8] {
    match f.request_id {
        Some(v) => v,
        None => {
            *made = crate::proxy::request_id::make();
            made
        }
    }
}

pub(super) fn plan<'s>(
    proxy: &'s Proxy,
    snap: &'s Snapshot,
    buf: &[u8],
    peer: &Peer,
    out: &mut Vec<u8>,
    head_len: &mut usize,
    seen: &mut Seen,
) -> Plan<'s> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let refuse = |answer: Answer| Plan::Answer {
        route: None,
        answer,
        close: true,
        http10: false,
    };
    let (method, target, minor) = match parse(&mut req, buf, &mut slots) {
        Ok(Some((n, line))) => {
            *head_len = n;
            line
        }
        Ok(None) => return Plan::More,
        Err(a) => return refuse(a),
    };
    let http10 = minor == 0;
    seen.method = crate::metrics::method_index(method.as_bytes());
    let (authority, path_and_query) = match split_target(target) {
        Ok(t) => t,
        Err(why) => return refuse(Answer::bad_request(why)),
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let f = Fields::scan(headers);
    let (body, host) = match body_framing(&f, http10, peer)
        .and_then(|body| Ok((body, request_host(&f, authority, http10)?)))
    {
        Ok(x) => x,
        Err(a) => return refuse(a),
    };
    let path = &path_and_query[..path_and_query
        .bytes()
        .position(|b| b == b'?')
        .unwrap_or(path_and_query.len())];
    let mut made = [0; 16];
    let request_id = request_id(&f, &mut made);
    if proxy.opts.access_log != AccessLog::Off {
        let l = LogInfo::new((method, target, host), http10, (headers, &f), request_id);
        seen.log = Some(l);
    }
    // HTTP/1.0 closes after each request unless it asks to keep alive.
    let close = f.conn.close || (http10 && !f.conn.keep_alive);
    let routed = proxy.route(
        snap,
        &acl_request(peer, (method, target, path), host, headers),
        host,
        &path_and_query,
        (peer.tls, peer.entry),
    );
    let (route, backends) = match routed {
        Routed::Forward(route, backends) => (route, backends),
        Routed::Answer(route, answer) => {
            return Plan::Answer {
                route,
                answer,
                // Its body was not read: the next request could not be found.
                close: body.is_some() || close,
                http10,
            };
        }
    };
    let upgrade = f.upgrade.filter(|_| f.conn.upgrade && !http10);
    let passed = route
        .proxypass_path
        .as_deref()
        .and_then(|p| crate::proxy::rewrite::proxypass(p, &path_and_query));
    let host_at = write_head(
        out,
        Sent {
            method,
            path_and_query: passed.as_deref().unwrap_or(&path_and_query),
            head: &buf[..*head_len],
            headers,
            host,
            authority,
            upgrade,
            request_id: f.request_id.is_none().then_some(request_id),
        },
        &f,
        peer,
    );
    let cookie = route
        .sticky
        .then(|| sticky_cookie(Headers::Raw(headers)))
        .flatten();
    Plan::Forward(Forward {
        route,
        picker: Picker::new(&proxy.balancer, Target::of(route), backends, cookie)
            .for_client(peer.addr.ip()),
        body,
        close,
        upgrade: upgrade.is_some(),
        head_request: method == "HEAD",
        // HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1).
        expects_continue: f.continue_lines != 0 && !http10 && body.is_some(),
        http10,
        host_at,
        host: route.revproxy_path.as_ref().and(host).map(str::to_string),
    })
}

/// What of a request goes into the head the backend gets.
struct Sent<'a> {
    method: &'a str,
    path_and_query: &'a str,
    head: &'a [u8],
    headers: &'a [httparse::Header<'a>],
    host: Option<&'a str>,
    authority: Option<&'a str>,
    upgrade: Option<&'a [u8]>,
    /// A made X-Request-Id to add (the client's own goes on with its lines).
    request_id: Option<&'a [u8]>,
}

/// The head to send, into `out`: the request line (origin-form, HTTP/1.1 to every backend), the client's lines as
/// they came without the hop-by-hop ones (but Transfer-Encoding: the body goes as it came), then the forwarded
/// ones. Returns where each backend's own Host line goes when the client sent none.
fn write_head(out: &mut Vec<u8>, s: Sent<'_>, f: &Fields<'_>, peer: &Peer) -> Option<usize> {
    out.clear();
    out.extend_from_slice(s.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(s.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    copy_lines(
        out,
        s.head,
        s.headers,
        (f.hop_by_hop & !f.transfer_encoding_lines)
            | f.continue_lines
            | f.x_forwarded_for
            | f.x_forwarded
            | f.repeated_lengths(),
    );
    let mut host_at = None;
    match (f.host, s.authority) {
        (Some(_), _) => {}
        (None, Some(a)) => header(out, b"host", a.as_bytes()),
        (None, None) => host_at = Some(out.len()),
    }
    // Every X-Forwarded-For line as one list, in order, then this client.
    out.extend_from_slice(b"x-forwarded-for: ");
    if f.x_forwarded_for != 0 {
        for (i, h) in s.headers.iter().enumerate() {
            if f.x_forwarded_for & (1 << i) != 0 {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(peer.ip_line_end.as_bytes());
    if let Some(h) = s.host {
        header(out, b"x-forwarded-host", h.as_bytes());
    }
    out.extend_from_slice(peer.fixed_fields.as_bytes());
    if let Some(id) = s.request_id {
        header(out, b"x-request-id", id);
    }
    if let Some(proto) = s.upgrade {
        header(out, b"upgrade", proto);
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    host_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A proxy whose one app `/a` (the default path rule) has one backend, for `plan`.
    fn planner() -> (Arc<Proxy>, Arc<crate::snapshot::Publisher>) {
        let publisher = Arc::new(crate::snapshot::Publisher::new(Default::default()));
        let app = r#"{"apps":[{"id":"/a","portDefinitions":[{"port":10000}],"tasks":[{"id":"a.1","host":"127.0.0.1",
            "ports":[9],"state":"TASK_RUNNING","startedAt":"2019-05-02T10:11:20.001Z"}]}]}"#;
        let apps: crate::apps::Apps = crate::marathon::model::parse_apps(app.as_bytes())
            .unwrap()
            .apps
            .iter()
            .map(|a| {
                let v = crate::discovery::build_view(
                    a,
                    &a.tasks,
                    &Default::default(),
                    Default::default(),
                );
                (v.id.clone(), Arc::new(v))
            })
            .collect();
        publisher.set_apps(Arc::new(apps));
        publisher.set_rules(Default::default());
        let balancer = Arc::new(crate::proxy::balance::Balancer::new(
            3,
            Duration::from_secs(1),
        ));
        let proxy = Arc::new(Proxy::new(
            publisher.clone(),
            balancer,
            443,
            &Default::default(),
        ));
        (proxy, publisher)
    }

    /// Seeded fuzzing in CI, differential: damaged request heads through the planner. Whatever it forwards,
    /// httparse reads the same head, a plain reading of its fields frames the body the same way (one framing,
    /// never two), and the head it writes parses cleanly with one Host, one length for a sized body and
    /// `Transfer-Encoding: chunked` alone for a chunked one. Whatever httparse refuses, it never forwards.
    #[test]
    fn request_heads_fuzz_against_httparse_and_a_plain_reading() {
        use rand::{Rng, SeedableRng};
        let (proxy, publisher) = planner();
        let snap = publisher.load_full();
        let peer = Peer::new("192.0.2.1:5000".parse().unwrap(), false, 80, false);
        let bases: [&[u8]; 4] = [
            b"GET /a/x HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
            b"POST /a/y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\nhello",
            b"PUT /a/z HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nabc",
            b"GET /a/w HTTP/1.1\r\nHost: a\r\nConnection: close, te\r\nTE: trailers\r\nCookie: a=b\r\n\r\n",
        ];
        let alphabet = b"\r\n :\t,;\x00\x7f\x80aZ09-+CLTEchunkedHost";
        let (mut forwarded, mut tried) = (0, 0);
        for _ in 0..40_000 {
            let mut h = bases[rng_pick(&mut tried, bases.len())].to_vec();
            let mut rng = rand::rngs::StdRng::seed_from_u64(tried as u64);
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..h.len());
                match rng.gen_range(0..4) {
                    0 => h[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => h.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    2 => {
                        h.remove(i);
                    }
                    _ => {
                        let field: &[u8] = [
                            &b"Content-Length: 2\r\n"[..],
                            b"Transfer-Encoding: chunked\r\n",
                            b"Content-Length: 99\r\n",
                            b"Host: b\r\n",
                            b"Connection: host\r\n",
                            b"Expect: 100-continue\r\n",
                        ][rng.gen_range(0..6)];
                        if let Some(at) = h.windows(2).position(|w| w == b"\r\n") {
                            let at = at + 2;
                            h.splice(at..at, field.iter().copied());
                        }
                    }
                }
            }
            let mut out = Vec::new();
            let (mut head_len, mut seen) = (0, Seen::default());
            let body = match plan(&proxy, &snap, &h, &peer, &mut out, &mut head_len, &mut seen) {
                Plan::Forward(f) => {
                    // As `forward` gives a client without Host its backend's.
                    if let Some(at) = f.host_at {
                        out.splice(at..at, b"host: 10.0.0.1:80\r\n".iter().copied());
                    }
                    f.body
                }
                _ => continue,
            };
            forwarded += 1;
            let shown = String::from_utf8_lossy(&h).into_owned();
            // httparse takes the client's head whole.
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut hs);
            assert!(
                matches!(req.parse(&h), Ok(httparse::Status::Complete(n)) if n == head_len),
                "forwarded a head httparse does not read the same: {shown:?}"
            );
            // A plain reading of the same fields frames the body as the planner does: one framing, never two.
            let values = |name: &str| -> Vec<&[u8]> {
                req.headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .map(|x| x.value)
                    .collect()
            };
            let (cl, te) = (values("content-length"), values("transfer-encoding"));
            let want = match (&cl[..], &te[..]) {
                ([], []) => None,
                ([], [te]) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
                    Some(BodyState::chunked())
                }
                ([first, rest @ ..], [])
                    if rest.iter().all(|v| v.trim_ascii() == first.trim_ascii()) =>
                {
                    framing::parse_length(first)
                        .filter(|n| *n > 0)
                        .map(BodyState::Length)
                }
                _ => panic!("forwarded ambiguous framing: {shown:?}"),
            };
            assert_eq!(body, want, "{shown:?}");
            let chunked = body == Some(BodyState::chunked());
            // The head it writes.
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut sent = httparse::Request::new(&mut hs);
            assert!(
                matches!(sent.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
                "unreadable head sent for {shown:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            let count = |name: &str| {
                sent.headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .count()
            };
            assert_eq!(count("host"), 1, "{shown:?}");
            assert_eq!(
                count("transfer-encoding"),
                usize::from(chunked),
                "{shown:?}"
            );
            let lengths = count("content-length");
            assert!(
                lengths <= 1
                    && (lengths == 1 || !matches!(body, Some(BodyState::Length(_))))
                    && (lengths == 0 || !chunked),
                "{shown:?} -> {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(
            forwarded > tried / 10,
            "the planner forwarded almost nothing: {forwarded}/{tried}"
        );
    }

    fn rng_pick(tried: &mut usize, n: usize) -> usize {
        *tried += 1;
        *tried % n
    }
}
