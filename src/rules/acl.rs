//! HAProxy ACL criteria: every fetch that depends only on the request, parsed once into typed matchers.
//!
//! One criterion is `<fetch> [flags] <value> [<value>…]`: values are ORed. The fetches, with HAProxy's suffixed
//! forms (`path_beg` is `path -m beg`, `hdr_cnt(x)` counts `hdr(x)`, …):
//! - strings: `path`, `url`, `query`, `base`, `method`, `hdr(<name>)`/`req.hdr`, `fhdr(<name>)`/`req.fhdr` (whole
//!   lines, commas not split), `urlp(<name>[,<delim>])`/`url_param`, `cook(<name>)`/`req.cook`, `ssl_fc_sni`
//!   (also `req.ssl_sni`), with `_beg`, `_end`, `_sub`, `_reg`, `_dir`, `_dom`, `_len`;
//! - integers: `hdr_cnt`, `fhdr_cnt`, `cook_cnt`, `hdr_val`, `cook_val`, `urlp_val`, `path_len`, `url_len`, …,
//!   `dst_port`, matched by `N`, `N:M`, `:M`, `N:` or `eq|ge|gt|le|lt N`;
//! - `src`, `hdr_ip(<name>)` (IPs and networks), `ssl_fc` (boolean).
//!
//! Flags: `-i` (ignore case), `-m <str|beg|end|sub|dom|dir|reg|len|int|bool|found|ip>`, `--` (end of flags).
//! `hdr(<name>,<occ>)`'s occurrence is accepted and every occurrence is tried; `_val` and `_ip` read the last, as
//! HAProxy does. `url` is the target as sent on HTTP/1 (origin or absolute form) and the path and query on HTTP/2.

use std::fmt;
use std::net::IpAddr;

pub const SUPPORTED_FETCHES: &str = "path, url, query, base, method, hdr(<name>), req.hdr(<name>), \
fhdr(<name>), req.fhdr(<name>), urlp(<name>), url_param(<name>), cook(<name>), req.cook(<name>), ssl_fc_sni, \
req.ssl_sni (each with _beg, _end, _sub, _reg, _dir, _dom, _len), hdr_cnt, fhdr_cnt, cook_cnt, hdr_val, cook_val, \
urlp_val, hdr_ip(<name>), dst_port, ssl_fc, src";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the ACL text.
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ACL error at column {}: {}", self.pos + 1, self.msg)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Path,
    /// The request target (`url`).
    Url,
    /// After the first `?` of the target; nothing when there is none.
    Query,
    /// Host and path (`base`).
    Base,
    Method,
    /// The TLS server name the client sent.
    Sni,
    Src,
    SslFc,
    DstPort,
    /// Lower-cased header name; each comma-separated value is an occurrence.
    Hdr(String),
    /// Lower-cased header name; each header line is an occurrence.
    FHdr(String),
    /// A query parameter, with its delimiter.
    Param(String, u8),
    Cook(String),
    /// How many occurrences the fetch has (`_cnt`).
    Count(Box<Fetch>),
    /// The last occurrence as an integer (`_val`).
    Value(Box<Fetch>),
    /// The last occurrence as an IP address (`_ip`).
    Ip(Box<Fetch>),
}

/// What a fetch yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Bool,
    Ip,
}

impl Fetch {
    fn ty(&self) -> Ty {
        match self {
            Fetch::Src | Fetch::Ip(_) => Ty::Ip,
            Fetch::SslFc => Ty::Bool,
            Fetch::DstPort | Fetch::Count(_) | Fetch::Value(_) => Ty::Int,
            _ => Ty::Str,
        }
    }

    /// Calls `f` on each occurrence until it returns true; whether one did.
    fn any(&self, req: &Request, f: &mut dyn FnMut(&str) -> bool) -> bool {
        match self {
            Fetch::Path => f(req.path),
            Fetch::Url => f(req.url),
            Fetch::Query => req.url.split_once('?').is_some_and(|(_, q)| f(q)),
            Fetch::Base => {
                let host = req.host.unwrap_or("");
                let mut base = String::with_capacity(host.len() + req.path.len());
                base.push_str(host);
                base.push_str(req.path);
                f(&base)
            }
            Fetch::Method => f(req.method),
            Fetch::Sni => req.sni.is_some_and(f),
            Fetch::Hdr(name) | Fetch::FHdr(name) if name == "host" => req.host.is_some_and(f),
            Fetch::Hdr(name) => req.headers.any(name, |v| {
                // Like HAProxy's hdr(): every comma-separated value is an occurrence.
                std::str::from_utf8(v).is_ok_and(|v| v.split(',').any(|v| f(v.trim())))
            }),
            Fetch::FHdr(name) => req
                .headers
                .any(name, |v| std::str::from_utf8(v).is_ok_and(|v| f(v.trim()))),
            Fetch::Param(name, delim) => req.url.split_once('?').is_some_and(|(_, q)| {
                q.split(char::from(*delim)).any(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k == name && f(v)
                })
            }),
            Fetch::Cook(name) => req.headers.any("cookie", |v| {
                std::str::from_utf8(v).is_ok_and(|v| {
                    v.split(';').any(|kv| {
                        let (k, v) = kv.trim().split_once('=').unwrap_or((kv.trim(), ""));
                        k == name && f(v)
                    })
                })
            }),
            Fetch::Src
            | Fetch::SslFc
            | Fetch::DstPort
            | Fetch::Count(_)
            | Fetch::Value(_)
            | Fetch::Ip(_) => false,
        }
    }

    fn last(&self, req: &Request) -> Option<String> {
        let mut last = None;
        self.any(req, &mut |s| {
            last = Some(s.to_string());
            false
        });
        last
    }

    fn int(&self, req: &Request) -> Option<i64> {
        match self {
            Fetch::DstPort => Some(i64::from(req.dst_port)),
            Fetch::Count(inner) => {
                let mut n = 0;
                inner.any(req, &mut |_| {
                    n += 1;
                    false
                });
                Some(n)
            }
            // HAProxy reads the leading digits; anything else is no value.
            Fetch::Value(inner) => inner.last(req).and_then(|s| {
                let s = s.trim();
                let end = s
                    .char_indices()
                    .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
                    .map_or(s.len(), |(i, _)| i);
                s[..end].parse().ok()
            }),
            _ => None,
        }
    }

    fn ip(&self, req: &Request) -> Option<IpAddr> {
        let ip = match self {
            Fetch::Src => req.src?,
            Fetch::Ip(inner) => inner.last(req)?.trim().parse().ok()?,
            _ => return None,
        };
        Some(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Str,
    Beg,
    End,
    Sub,
    Dom,
    Dir,
    Reg,
    /// The string's length, against integer values.
    Len,
    Int,
    /// A boolean or a non-zero integer; no value.
    Bool,
    /// The fetch yields something; no value.
    Found,
    Ip,
}

#[derive(Debug, Clone)]
enum Values {
    /// Lower-cased already when the match ignores case.
    Strings(Vec<String>),
    Regexes(Vec<regex::Regex>),
    Nets(Vec<ipnet::IpNet>),
    /// Inclusive ranges.
    Ints(Vec<(i64, i64)>),
    None,
}

/// One parsed criterion.
#[derive(Debug, Clone)]
pub struct Criterion {
    pub fetch: Fetch,
    pub kind: MatchKind,
    pub ignore_case: bool,
    values: Values,
    /// The values as written, for rendering and precedence.
    pub raw_values: Vec<String>,
}

/// What a criterion is matched against.
pub struct Request<'a> {
    pub path: &'a str,
    pub method: &'a str,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2), as sent.
    pub host: Option<&'a str>,
    pub headers: Headers<'a>,
    pub src: Option<IpAddr>,
    /// The target as sent on HTTP/1; the path and query on HTTP/2.
    pub url: &'a str,
    /// Whether the client connection is TLS (`ssl_fc`), and the name it asked for (`ssl_fc_sni`).
    pub tls: bool,
    pub sni: Option<&'a str>,
    /// The port the client connected to (`dst_port`).
    pub dst_port: u16,
}

impl<'a> Request<'a> {
    /// A plain HTTP request for `path` (the target too), for tests and tools.
    pub fn plain(path: &'a str, host: Option<&'a str>, headers: Headers<'a>) -> Request<'a> {
        Request {
            path,
            method: "GET",
            host,
            headers,
            src: None,
            url: path,
            tls: false,
            sni: None,
            dst_port: 80,
        }
    }
}

/// A request's headers as either front end holds them: hyper's map, or the fast path's parsed head (no map built).
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    Map(&'a http::HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> From<&'a http::HeaderMap> for Headers<'a> {
    fn from(m: &'a http::HeaderMap) -> Self {
        Headers::Map(m)
    }
}

impl<'a> Headers<'a> {
    /// The first `f(value)` that is `Some`, over the values of the header `name` (lower case) in order.
    pub fn find_map<T>(self, name: &str, mut f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        match self {
            Headers::Map(m) => m.get_all(name).iter().find_map(|v| f(v.as_bytes())),
            Headers::Raw(hs) => hs
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .find_map(|h| f(h.value)),
        }
    }

    /// Whether `f` holds for some value of the header `name` (lower case).
    pub fn any(self, name: &str, mut f: impl FnMut(&'a [u8]) -> bool) -> bool {
        self.find_map(name, |v| f(v).then_some(())).is_some()
    }
}

/// Splits the text into tokens with their byte offsets; `"…"` and `'…'` quote, `\` escapes.
fn tokenize(text: &str) -> Result<Vec<(usize, String)>, ParseError> {
    if let Some((pos, c)) = super::control_char(text) {
        return Err(ParseError {
            pos,
            msg: format!("control character {:?} in an ACL", c),
        });
    }
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut tok = String::new();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' | '\'' => {
                    let quote = c;
                    let mut closed = false;
                    while let Some((_, c)) = chars.next() {
                        if c == quote {
                            closed = true;
                            break;
                        }
                        if c == '\\' && quote == '"' {
                            if let Some((_, e)) = chars.next() {
                                tok.push(e);
                            }
                            continue;
                        }
                        tok.push(c);
                    }
                    if !closed {
                        return Err(ParseError {
                            pos: i,
                            msg: format!("unterminated {quote} quote"),
                        });
                    }
                }
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        tok.push(e);
                    }
                }
                c => tok.push(c),
            }
        }
        out.push((start, tok));
    }
    Ok(out)
}

/// A fetch name with its `(…)` argument split off.
fn split_call(tok: &str, pos: usize) -> Result<(&str, Option<&str>), ParseError> {
    match tok.split_once('(') {
        Some((n, rest)) => match rest.strip_suffix(')') {
            Some(arg) => Ok((n, Some(arg))),
            None => Err(ParseError {
                pos: pos + tok.len(),
                msg: format!("missing ')' in '{tok}'"),
            }),
        },
        None => Ok((tok, None)),
    }
}

/// The fetches without suffix; whether each takes an argument (and what it names).
fn base_fetch(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match name {
        "path" | "url" | "query" | "base" | "method" | "src" | "ssl_fc" | "dst_port" => {
            (canonical(name)?, None)
        }
        "ssl_fc_sni" | "req.ssl_sni" | "req_ssl_sni" => ("sni", None),
        "hdr" | "req.hdr" => ("hdr", Some("a header name, e.g. hdr(host)")),
        "fhdr" | "req.fhdr" => ("fhdr", Some("a header name, e.g. fhdr(user-agent)")),
        "urlp" | "url_param" => ("urlp", Some("a parameter name, e.g. urlp(id)")),
        "cook" | "req.cook" => ("cook", Some("a cookie name, e.g. cook(session)")),
        _ => return None,
    })
}

fn canonical(name: &str) -> Option<&'static str> {
    [
        "path", "url", "query", "base", "method", "src", "ssl_fc", "dst_port",
    ]
    .into_iter()
    .find(|n| *n == name)
}

/// HAProxy's suffixed forms: `<fetch>_<suffix>`.
const SUFFIXES: &[&str] = &[
    "beg", "end", "sub", "reg", "dir", "dom", "len", "cnt", "val", "ip",
];

fn fetch_of(tok: &str, pos: usize) -> Result<(Fetch, MatchKind), ParseError> {
    let unknown = || ParseError {
        pos,
        msg: format!("unknown fetch '{tok}'; supported: {SUPPORTED_FETCHES}"),
    };
    let (name, arg) = split_call(tok, pos)?;
    // The whole name first: `url_param`, `dst_port` and `ssl_fc_sni` end like suffixed forms.
    let (base, suffix) = match base_fetch(name) {
        Some(b) => (b, None),
        None => SUFFIXES
            .iter()
            .find_map(|s| {
                let b = name.strip_suffix(s)?.strip_suffix('_')?;
                Some((base_fetch(b)?, Some(*s)))
            })
            .ok_or_else(unknown)?,
    };
    let (base, needs) = base;
    let arg = match (needs, arg) {
        (Some(what), None) => {
            return Err(ParseError {
                pos,
                msg: format!("'{tok}' needs {what}"),
            })
        }
        (None, Some(_)) => {
            return Err(ParseError {
                pos: pos + name.len(),
                msg: format!("'{name}' takes no argument"),
            })
        }
        (_, a) => a.unwrap_or(""),
    };
    let arg_pos = pos + name.len() + 1;
    let mut parts = arg.split(',').map(str::trim);
    let first = parts.next().unwrap_or("");
    let fetch = match base {
        "path" => Fetch::Path,
        "url" => Fetch::Url,
        "query" => Fetch::Query,
        "base" => Fetch::Base,
        "method" => Fetch::Method,
        "src" => Fetch::Src,
        "ssl_fc" => Fetch::SslFc,
        "dst_port" => Fetch::DstPort,
        "sni" => Fetch::Sni,
        "hdr" | "fhdr" => {
            if first.is_empty() || http::HeaderName::from_bytes(first.as_bytes()).is_err() {
                return Err(ParseError {
                    pos: arg_pos,
                    msg: format!("'{arg}' is not a header name"),
                });
            }
            let h = first.to_ascii_lowercase();
            if base == "hdr" {
                Fetch::Hdr(h)
            } else {
                Fetch::FHdr(h)
            }
        }
        "urlp" => {
            let delim = match parts.next() {
                None => b'&',
                Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
                Some(d) => {
                    return Err(ParseError {
                        pos: arg_pos,
                        msg: format!("'{d}' is not a one-character delimiter"),
                    })
                }
            };
            if first.is_empty() {
                return Err(ParseError {
                    pos: arg_pos,
                    msg: "urlp needs a parameter name".into(),
                });
            }
            Fetch::Param(first.to_string(), delim)
        }
        _ => {
            if first.is_empty() {
                return Err(ParseError {
                    pos: arg_pos,
                    msg: "cook needs a cookie name".into(),
                });
            }
            Fetch::Cook(first.to_string())
        }
    };
    let multi = matches!(
        fetch,
        Fetch::Hdr(_) | Fetch::FHdr(_) | Fetch::Param(..) | Fetch::Cook(_)
    );
    let strings = fetch.ty() == Ty::Str;
    Ok(match suffix {
        None => {
            let kind = match fetch.ty() {
                Ty::Str => MatchKind::Str,
                Ty::Int => MatchKind::Int,
                Ty::Bool => MatchKind::Bool,
                Ty::Ip => MatchKind::Ip,
            };
            (fetch, kind)
        }
        Some(s @ ("beg" | "end" | "sub" | "reg" | "dir" | "dom" | "len")) if strings => (
            fetch,
            match s {
                "beg" => MatchKind::Beg,
                "end" => MatchKind::End,
                "sub" => MatchKind::Sub,
                "reg" => MatchKind::Reg,
                "dir" => MatchKind::Dir,
                "dom" => MatchKind::Dom,
                _ => MatchKind::Len,
            },
        ),
        Some("cnt") if multi => (Fetch::Count(Box::new(fetch)), MatchKind::Int),
        Some("val") if multi => (Fetch::Value(Box::new(fetch)), MatchKind::Int),
        Some("ip") if matches!(fetch, Fetch::Hdr(_) | Fetch::FHdr(_)) => {
            (Fetch::Ip(Box::new(fetch)), MatchKind::Ip)
        }
        Some(_) => return Err(unknown()),
    })
}

/// The match methods `-m` may name for what a fetch yields.
fn kind_for(m: &str, ty: Ty) -> Option<MatchKind> {
    let kind = match m {
        "str" => MatchKind::Str,
        "beg" => MatchKind::Beg,
        "end" => MatchKind::End,
        "sub" => MatchKind::Sub,
        "dom" => MatchKind::Dom,
        "dir" => MatchKind::Dir,
        "reg" => MatchKind::Reg,
        "len" => MatchKind::Len,
        "int" => MatchKind::Int,
        "bool" => MatchKind::Bool,
        "found" => MatchKind::Found,
        "ip" => MatchKind::Ip,
        _ => return None,
    };
    let fits = match ty {
        Ty::Str => !matches!(kind, MatchKind::Int | MatchKind::Bool | MatchKind::Ip),
        Ty::Int => matches!(kind, MatchKind::Int | MatchKind::Bool | MatchKind::Found),
        Ty::Bool => matches!(kind, MatchKind::Bool | MatchKind::Found),
        Ty::Ip => matches!(kind, MatchKind::Ip | MatchKind::Found),
    };
    fits.then_some(kind)
}

/// Integer patterns: `N`, `N:M`, `:M`, `N:`, or an operator and `N`.
fn ints(rest: &[(usize, String)]) -> Result<Vec<(i64, i64)>, ParseError> {
    let num = |pos: usize, v: &str| {
        v.parse::<i64>().map_err(|_| ParseError {
            pos,
            msg: format!("'{v}' is not an integer"),
        })
    };
    let mut out = Vec::new();
    let mut it = rest.iter();
    while let Some((pos, v)) = it.next() {
        let op = matches!(v.as_str(), "eq" | "ge" | "gt" | "le" | "lt");
        if op {
            let Some((npos, n)) = it.next() else {
                return Err(ParseError {
                    pos: *pos,
                    msg: format!("'{v}' needs a number after it"),
                });
            };
            let n = num(*npos, n)?;
            out.push(match v.as_str() {
                "eq" => (n, n),
                "ge" => (n, i64::MAX),
                "gt" => (n.saturating_add(1), i64::MAX),
                "le" => (i64::MIN, n),
                _ => (i64::MIN, n.saturating_sub(1)),
            });
            continue;
        }
        out.push(match v.split_once(':') {
            Some((lo, hi)) => (
                if lo.is_empty() {
                    i64::MIN
                } else {
                    num(*pos, lo)?
                },
                if hi.is_empty() {
                    i64::MAX
                } else {
                    num(*pos, hi)?
                },
            ),
            None => {
                let n = num(*pos, v)?;
                (n, n)
            }
        });
    }
    Ok(out)
}

/// Parses one criterion.
pub fn parse(text: &str) -> Result<Criterion, ParseError> {
    let tokens = tokenize(text)?;
    let mut it = tokens.into_iter().peekable();
    let Some((fpos, ftok)) = it.next() else {
        return Err(ParseError {
            pos: 0,
            msg: format!("empty ACL; expected a fetch ({SUPPORTED_FETCHES})"),
        });
    };
    let (fetch, mut kind) = fetch_of(&ftok, fpos)?;
    let mut ignore_case = false;
    while let Some((pos, tok)) = it.peek().cloned() {
        if !tok.starts_with('-') || tok == "-" {
            break;
        }
        // A negative number is a value of an integer fetch, not a flag.
        if fetch.ty() == Ty::Int && tok[1..].starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        it.next();
        match tok.as_str() {
            "-i" => ignore_case = true,
            "--" => break,
            "-m" => {
                let Some((mpos, m)) = it.next() else {
                    return Err(ParseError {
                        pos,
                        msg: "-m needs a method: str, beg, end, sub, dom, dir, reg, len, int, bool, found or ip".into(),
                    });
                };
                kind = match kind_for(&m, fetch.ty()) {
                    Some(k) => k,
                    None if kind_for(&m, Ty::Str).is_some()
                        || kind_for(&m, Ty::Int).is_some()
                        || kind_for(&m, Ty::Ip).is_some() =>
                    {
                        return Err(ParseError {
                            pos,
                            msg: format!(
                                "-m {m} does not apply to {ftok} (it yields {})",
                                match fetch.ty() {
                                    Ty::Str => "a string",
                                    Ty::Int => "an integer",
                                    Ty::Bool => "a boolean",
                                    Ty::Ip => "IP addresses, matched against addresses and networks",
                                }
                            ),
                        })
                    }
                    None => {
                        return Err(ParseError {
                            pos: mpos,
                            msg: format!("unknown match method '{m}'; supported: str, beg, end, sub, dom, dir, reg, len, int, bool, found, ip"),
                        })
                    }
                };
            }
            other => {
                return Err(ParseError {
                    pos,
                    msg: format!("unsupported flag '{other}'; supported: -i, -m <method>, --"),
                })
            }
        }
    }
    let rest: Vec<(usize, String)> = it.collect();
    let valueless = matches!(kind, MatchKind::Bool | MatchKind::Found);
    if valueless {
        if let Some((pos, v)) = rest.first() {
            return Err(ParseError {
                pos: *pos,
                msg: format!("'{ftok}' matched as {kind:?} takes no value, not '{v}'")
                    .to_lowercase(),
            });
        }
    } else if rest.is_empty() {
        return Err(ParseError {
            pos: text.len(),
            msg: format!("'{ftok}' has no value to match"),
        });
    }
    let raw_values: Vec<String> = rest.iter().map(|(_, v)| v.clone()).collect();
    let values = match kind {
        MatchKind::Bool | MatchKind::Found => Values::None,
        MatchKind::Int | MatchKind::Len => Values::Ints(ints(&rest)?),
        MatchKind::Ip => {
            let mut nets = Vec::new();
            for (pos, v) in &rest {
                let net = v
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| v.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ParseError {
                        pos: *pos,
                        msg: format!("'{v}' is not an IP address or network"),
                    })?;
                nets.push(net);
            }
            Values::Nets(nets)
        }
        MatchKind::Reg => {
            let mut res = Vec::new();
            for (pos, v) in &rest {
                let re = regex::RegexBuilder::new(v)
                    .case_insensitive(ignore_case)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ParseError {
                        pos: *pos,
                        msg: format!(
                            "bad regex '{v}': {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    })?;
                res.push(re);
            }
            Values::Regexes(res)
        }
        k => Values::Strings(
            rest.iter()
                .map(|(_, v)| {
                    let v = if ignore_case {
                        v.to_ascii_lowercase()
                    } else {
                        v.clone()
                    };
                    if matches!(k, MatchKind::Dom | MatchKind::Dir) {
                        // HAProxy ignores the pattern's own leading/trailing delimiters.
                        v.trim_matches(|c| is_delim(c, k)).to_string()
                    } else {
                        v
                    }
                })
                .collect(),
        ),
    };
    Ok(Criterion {
        fetch,
        kind,
        ignore_case,
        values,
        raw_values,
    })
}

fn is_delim(c: char, kind: MatchKind) -> bool {
    match kind {
        MatchKind::Dir => c == '/' || c == '?',
        _ => matches!(c, '/' | '?' | '.' | ':'),
    }
}

fn eq(a: &str, b: &str, ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn begins(s: &str, p: &str, ci: bool) -> bool {
    s.len() >= p.len() && eq_bytes(&s.as_bytes()[..p.len()], p.as_bytes(), ci)
}

fn ends(s: &str, p: &str, ci: bool) -> bool {
    s.len() >= p.len() && eq_bytes(&s.as_bytes()[s.len() - p.len()..], p.as_bytes(), ci)
}

fn eq_bytes(a: &[u8], b: &[u8], ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn find_all<'a>(s: &'a str, p: &str, ci: bool) -> impl Iterator<Item = usize> + 'a {
    let pb = p.as_bytes().to_vec();
    let sb = s.as_bytes();
    (0..=sb.len().saturating_sub(pb.len()))
        .filter(move |&i| sb.len() >= pb.len() && eq_bytes(&sb[i..i + pb.len()], &pb, ci))
}

/// `-m dom` / `-m dir`: the pattern appears as whole words between delimiters or the string's ends.
fn word(s: &str, p: &str, ci: bool, kind: MatchKind) -> bool {
    if p.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    find_all(s, p, ci).any(|i| {
        let before_ok = i == 0 || is_delim(b[i - 1] as char, kind);
        let end = i + p.len();
        let after_ok = end == b.len() || is_delim(b[end] as char, kind);
        before_ok && after_ok
    })
}

impl Criterion {
    fn match_int(&self, v: i64) -> bool {
        matches!(&self.values, Values::Ints(r) if r.iter().any(|&(lo, hi)| lo <= v && v <= hi))
    }

    fn match_str(&self, subject: &str) -> bool {
        let ci = self.ignore_case;
        match &self.values {
            Values::Strings(vals) => vals.iter().any(|p| match self.kind {
                MatchKind::Str => eq(subject, p, ci),
                MatchKind::Beg => begins(subject, p, ci),
                MatchKind::End => ends(subject, p, ci),
                MatchKind::Sub => find_all(subject, p, ci).next().is_some(),
                MatchKind::Dom | MatchKind::Dir => word(subject, p, ci, self.kind),
                _ => false,
            }),
            Values::Regexes(res) => res.iter().any(|re| re.is_match(subject)),
            Values::Ints(_) => self.match_int(subject.len() as i64),
            Values::Nets(_) | Values::None => false,
        }
    }

    pub fn matches(&self, req: &Request) -> bool {
        match self.fetch.ty() {
            Ty::Str if self.kind == MatchKind::Found => self.fetch.any(req, &mut |_| true),
            Ty::Str => self.fetch.any(req, &mut |s| self.match_str(s)),
            Ty::Int => {
                let v = self.fetch.int(req);
                match self.kind {
                    MatchKind::Found => v.is_some(),
                    MatchKind::Bool => v.is_some_and(|v| v != 0),
                    _ => v.is_some_and(|v| self.match_int(v)),
                }
            }
            Ty::Bool => self.kind == MatchKind::Found || req.tls,
            Ty::Ip => {
                let ip = self.fetch.ip(req);
                match (&self.values, ip) {
                    _ if self.kind == MatchKind::Found => ip.is_some(),
                    (Values::Nets(nets), Some(ip)) => nets.iter().any(|n| n.contains(&ip)),
                    _ => false,
                }
            }
        }
    }

    /// Exact host beats a host suffix beats no host condition.
    pub fn host_rank(&self) -> HostRank {
        match (&self.fetch, self.kind) {
            (Fetch::Hdr(h), MatchKind::Str) if h == "host" => HostRank::Exact,
            (Fetch::Hdr(h), MatchKind::End | MatchKind::Dom) if h == "host" => HostRank::Suffix,
            _ => HostRank::None,
        }
    }

    /// Length of the longest literal path prefix this criterion requires (0 if none); a `url_beg` of a path
    /// counts as one.
    pub fn path_prefix_len(&self) -> usize {
        match (&self.fetch, self.kind) {
            (Fetch::Path, MatchKind::Str | MatchKind::Beg | MatchKind::Dir) => {
                self.raw_values.iter().map(String::len).max().unwrap_or(0)
            }
            (Fetch::Url, MatchKind::Beg) => self
                .raw_values
                .iter()
                .filter(|v| v.starts_with('/'))
                .map(String::len)
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Exact `Host` values when this criterion is only that (for the host index).
    pub fn exact_hosts(&self) -> Option<&[String]> {
        match (&self.values, self.host_rank()) {
            (Values::Strings(v), HostRank::Exact) => Some(v),
            _ => None,
        }
    }

    /// Path prefixes when this criterion is only a prefix match (for the prefix trie).
    pub fn path_prefixes(&self) -> Option<&[String]> {
        match (&self.fetch, self.kind, &self.values) {
            (Fetch::Path, MatchKind::Beg, Values::Strings(v)) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostRank {
    None = 0,
    Suffix = 1,
    Exact = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain request for `target` on port 8080, from 10.1.2.3.
    fn req<'a>(
        target: &'a str,
        host: Option<&'a str>,
        headers: &'a http::HeaderMap,
    ) -> Request<'a> {
        Request {
            path: target.split('?').next().unwrap_or(target),
            method: "GET",
            host,
            headers: headers.into(),
            src: Some("10.1.2.3".parse().unwrap()),
            url: target,
            tls: false,
            sni: None,
            dst_port: 8080,
        }
    }

    /// The headers every table row sees, as hyper holds them and as the fast path parses them.
    const FIELDS: &[(&str, &str)] = &[
        ("X-Team", "Blue, green"),
        ("Cookie", "session=abc123; theme=dark"),
        ("X-Forwarded-For", "192.168.1.1, 10.9.8.7"),
        ("X-Count", "42"),
    ];

    /// (acl, path, host, expected)
    const TABLE: &[(&str, &str, &str, bool)] = &[
        ("path /a", "/a", "h", true),
        ("path /a", "/a/b", "h", false),
        ("path -i /A", "/a", "h", true),
        ("path_beg /api", "/api/v1", "h", true),
        ("path_beg /api", "/apiv2", "h", true),
        ("path_beg /api", "/ap", "h", false),
        ("path_beg /API", "/api", "h", false),
        ("path_beg -i /API", "/api/x", "h", true),
        ("path_beg /x /api", "/api", "h", true),
        ("path_end .png", "/img/a.png", "h", true),
        ("path_end -i .PNG", "/img/a.png", "h", true),
        ("path_end .png", "/img/a.jpg", "h", false),
        ("path_dir api", "/v1/api/x", "h", true),
        ("path_dir /api/", "/api", "h", true),
        ("path_dir api", "/apis/x", "h", false),
        ("path_sub adm", "/x/admin", "h", true),
        ("path_sub -i ADM", "/x/admin", "h", true),
        ("path_reg ^/v[0-9]+/", "/v2/x", "h", true),
        ("path_reg ^/v[0-9]+/", "/vx/x", "h", false),
        ("path_reg -i ^/V1$", "/v1", "h", true),
        ("path -m beg /a", "/abc", "h", true),
        ("path -m reg b.d", "/abcd", "h", true),
        ("path -m sub zz", "/abcd", "h", false),
        ("hdr(host) -i web.example.com", "/", "WEB.example.com", true),
        ("hdr(host) web.example.com", "/", "WEB.example.com", false),
        ("hdr(host) -i a.com b.com", "/", "b.com", true),
        ("hdr(Host) -i a.com", "/", "a.com", true),
        ("hdr_beg(host) -i www.", "/", "www.a.com", true),
        ("hdr_end(host) -i .example.com", "/", "x.example.com", true),
        ("hdr_end(host) -i .example.com", "/", "example.com", false),
        ("hdr_dom(host) -i example.com", "/", "x.example.com", true),
        (
            "hdr_dom(host) -i example.com",
            "/",
            "example.com:8080",
            true,
        ),
        ("hdr_dom(host) -i example.com", "/", "notexample.com", false),
        ("hdr_sub(host) -i ampl", "/", "example.com", true),
        ("hdr_reg(host) ^api[0-9]\\.", "/", "api7.x.org", true),
        ("hdr(host) -m end .org", "/", "a.org", true),
        ("hdr(x-team) -i blue", "/", "h", true),
        ("hdr(x-team) red", "/", "h", false),
        ("hdr_beg(x-team) gre", "/", "h", true),
        ("src 10.0.0.0/8", "/", "h", true),
        ("src 192.168.0.0/16 10.1.2.3", "/", "h", true),
        ("src 192.168.0.0/16", "/", "h", false),
        ("method GET HEAD", "/", "h", true),
        ("method POST", "/", "h", false),
        ("method -i get", "/", "h", true),
        ("path -- -i", "/", "h", false),
        ("path_beg \"/with space\"", "/with space/x", "h", true),
        // The url family: the target as sent, query included.
        ("url_beg /api", "/api/v1?x=1", "h", true),
        ("url_beg /api", "/v1?x=/api", "h", false),
        ("url /a?b=1", "/a?b=1", "h", true),
        ("url_sub b=1", "/a?b=1", "h", true),
        ("url_end =1", "/a?b=1", "h", true),
        ("url_reg ^/a\\?", "/a?b=1", "h", true),
        ("url_dir a", "/a?b=1", "h", true),
        ("url_dom b", "/a.b?c", "h", true),
        ("url_len 6", "/a?b=1", "h", true),
        ("url_len gt 10", "/a?b=1", "h", false),
        ("query b=1", "/a?b=1", "h", true),
        ("query -m beg b=", "/a?b=1", "h", true),
        ("query -m found", "/a", "h", false),
        ("query -m found", "/a?x", "h", true),
        ("urlp(b) 1", "/a?b=1&c=2", "h", true),
        ("urlp(c) 1", "/a?b=1&c=2", "h", false),
        ("url_param(c) -m found", "/a?b=1&c=2", "h", true),
        ("urlp(d) -m found", "/a?b=1&c=2", "h", false),
        ("urlp_val(b) ge 1", "/a?b=1&c=2", "h", true),
        ("urlp(b,;) 1", "/a?b=1;c=2", "h", true),
        ("urlp_beg(c) 2", "/a?b=1&c=2x", "h", true),
        ("urlp_reg(c) ^[0-9]+$", "/a?c=2x", "h", false),
        // Headers: req.hdr is hdr, fhdr takes whole lines, counts, values, addresses, lengths.
        ("req.hdr(host) -i a.com", "/", "A.com", true),
        ("req.hdr(x-team) -i green", "/", "h", true),
        ("req.fhdr(x-team) -i green", "/", "h", false),
        ("req.fhdr(x-team) -i 'blue, green'", "/", "h", true),
        ("hdr_cnt(x-team) 2", "/", "h", true),
        ("req.hdr_cnt(x-team) gt 2", "/", "h", false),
        ("fhdr_cnt(x-team) 1", "/", "h", true),
        ("req.fhdr_cnt(x-none) 0", "/", "h", true),
        ("hdr_val(x-count) 42", "/", "h", true),
        ("hdr_val(x-count) lt 40", "/", "h", false),
        ("hdr_val(x-count) -m bool", "/", "h", true),
        ("hdr_ip(x-forwarded-for) 10.0.0.0/8", "/", "h", true),
        ("req.hdr_ip(x-forwarded-for) 192.168.1.1", "/", "h", false),
        ("hdr_len(x-count) 2", "/", "h", true),
        ("hdr(x-team) -m len 4", "/", "h", true),
        ("hdr(x-team) -m found", "/", "h", true),
        ("hdr(x-none) -m found", "/", "h", false),
        ("cook(session) abc123", "/", "h", true),
        ("req.cook(theme) -i DARK", "/", "h", true),
        ("cook_beg(session) abc", "/", "h", true),
        ("cook_cnt(session) 1", "/", "h", true),
        ("cook_len(session) 6", "/", "h", true),
        ("cook(none) -m found", "/", "h", false),
        // Lengths, host and path, the port.
        ("path_len 2", "/a", "h", true),
        ("path_len 3:10", "/abcd", "h", true),
        ("path_len :1", "/ab", "h", false),
        ("path -m len ge 2", "/a", "h", true),
        ("base www.a.com/x", "/x", "www.a.com", true),
        ("base_beg -i WWW.a.com/", "/x?y", "www.a.com", true),
        ("dst_port 8080", "/", "h", true),
        ("dst_port 80 443", "/", "h", false),
        ("dst_port 8000:8999", "/", "h", true),
        ("method -m found", "/", "h", true),
        ("src -m ip 10.1.2.3", "/", "h", true),
        ("src -m found", "/", "h", true),
        // A plain connection.
        ("ssl_fc", "/", "h", false),
        ("ssl_fc -m found", "/", "h", true),
        ("ssl_fc_sni -m found", "/", "h", false),
    ];

    /// (acl, expected) on a TLS connection to port 8443 that asked for `Shop.Example.com`.
    const TLS_TABLE: &[(&str, bool)] = &[
        ("ssl_fc", true),
        ("ssl_fc_sni -i shop.example.com", true),
        ("ssl_fc_sni shop.example.com", false),
        ("ssl_fc_sni_end -i .example.com", true),
        ("req.ssl_sni -m reg ^Shop", true),
        ("req_ssl_sni -m found", true),
        ("dst_port 8443", true),
        ("dst_port 8080", false),
    ];

    #[test]
    fn tls_table() {
        let h = http::HeaderMap::new();
        for (acl, expected) in TLS_TABLE {
            let c = parse(acl).unwrap_or_else(|e| panic!("{acl}: {e}"));
            let mut r = req("/", Some("shop.example.com"), &h);
            r.tls = true;
            r.sni = Some("Shop.Example.com");
            r.dst_port = 8443;
            assert_eq!(c.matches(&r), *expected, "{acl}");
        }
    }

    #[test]
    fn table() {
        let mut headers = http::HeaderMap::new();
        for (k, v) in FIELDS {
            headers.append(*k, v.parse().unwrap());
        }
        // The same fields as the fast path holds them: parsed in place, names in any case.
        let raw: Vec<httparse::Header> = FIELDS
            .iter()
            .map(|(k, v)| httparse::Header {
                name: k,
                value: v.as_bytes(),
            })
            .collect();
        for (acl, path, host, expected) in TABLE {
            let c = parse(acl).unwrap_or_else(|e| panic!("{acl}: {e}"));
            assert_eq!(
                c.matches(&req(path, Some(host), &headers)),
                *expected,
                "{acl} on {path} host {host}"
            );
            let mut r = req(path, Some(host), &headers);
            r.headers = Headers::Raw(&raw);
            assert_eq!(
                c.matches(&r),
                *expected,
                "{acl} on raw fields, {path} host {host}"
            );
        }
    }

    #[test]
    fn errors_name_the_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty ACL"),
            (
                "host_beg /x",
                0,
                "unknown fetch 'host_beg'; supported: path",
            ),
            ("path_beg", 8, "no value"),
            ("path_beg -x /a", 9, "unsupported flag '-x'"),
            ("path -m wat /a", 8, "unknown match method 'wat'"),
            ("hdr /a", 0, "needs a header name"),
            ("hdr(host -i a", 8, "missing ')'"),
            ("path_reg ([a-", 9, "bad regex"),
            ("src 10.0.0.0/33", 4, "not an IP address"),
            ("src -m beg 10.", 4, "-m beg does not apply to src"),
            ("path_beg \"/open", 9, "unterminated"),
            ("ssl_fc yes", 7, "takes no value"),
            ("hdr_cnt(x) many", 11, "not an integer"),
            ("path_len gt", 9, "needs a number"),
            ("urlp 1", 0, "needs a parameter name"),
            ("urlp(a,xy) 1", 5, "one-character delimiter"),
            ("path -m int 1", 5, "-m int does not apply to path"),
            ("ssl_fc(x)", 6, "takes no argument"),
            ("path_cnt 1", 0, "unknown fetch 'path_cnt'"),
            ("hdr_ip(x) 10.0.0.0/40", 10, "not an IP address"),
        ];
        for (acl, pos, msg) in cases {
            let e = parse(acl).unwrap_err();
            assert_eq!(e.pos, *pos, "{acl}: {e}");
            assert!(e.msg.contains(msg), "{acl}: {e}");
        }
    }

    #[test]
    fn precedence_classes() {
        assert_eq!(
            parse("hdr(host) -i a.com").unwrap().host_rank(),
            HostRank::Exact
        );
        assert_eq!(
            parse("hdr_dom(host) -i a.com").unwrap().host_rank(),
            HostRank::Suffix
        );
        assert_eq!(
            parse("hdr_end(host) .a.com").unwrap().host_rank(),
            HostRank::Suffix
        );
        assert_eq!(parse("path_beg /a").unwrap().host_rank(), HostRank::None);
        assert_eq!(parse("path_beg /a /abcd").unwrap().path_prefix_len(), 5);
        assert_eq!(parse("path_end /abcd").unwrap().path_prefix_len(), 0);
    }

    /// A cheap stand-in for the fuzz target (`fuzz/`), run in CI: random token soup never panics.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let parts = [
            "path",
            "path_beg",
            "path_reg",
            "path_dir",
            "hdr(",
            "hdr(host)",
            "hdr_dom(host)",
            "src",
            "method",
            "-i",
            "-m",
            "reg",
            "dom",
            "--",
            "\"",
            "'",
            "\\",
            "/",
            "(",
            ")",
            "[",
            "*",
            "ü",
            ".",
            "10.0.0.0/8",
            "::1",
            " ",
            "",
            "a",
            "-",
            "$",
            "^",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let h = http::HeaderMap::new();
        for _ in 0..20_000 {
            let n = rng.gen_range(0..8);
            let text: String = (0..n)
                .map(|_| parts[rng.gen_range(0..parts.len())])
                .collect::<Vec<_>>()
                .join(" ");
            if let Ok(c) = parse(&text) {
                let path: String = (0..rng.gen_range(0..4))
                    .map(|_| parts[rng.gen_range(0..parts.len())])
                    .collect();
                let _ = c.matches(&Request::plain(&path, Some(&path), (&h).into()));
            }
        }
    }

    #[test]
    fn ipv4_mapped_source() {
        let h = http::HeaderMap::new();
        let c = parse("src 10.0.0.0/8").unwrap();
        let r = Request {
            src: Some("::ffff:10.9.9.9".parse().unwrap()),
            ..Request::plain("/", None, (&h).into())
        };
        assert!(c.matches(&r));
    }

    /// Seeded fuzzing in CI: token soup from the ACL language and its edges. Parsing never panics, never accepts a
    /// control character, and whatever parses matches any request without panicking, the same way twice.
    #[test]
    fn parser_fuzz() {
        use rand::{Rng, SeedableRng};
        let words = [
            "url_beg",
            "urlp(id)",
            "urlp(id,;)",
            "query",
            "req.fhdr(x)",
            "hdr_cnt(x)",
            "hdr_ip(x)",
            "cook(s)",
            "path_len",
            "dst_port",
            "ssl_fc",
            "ssl_fc_sni",
            "gt",
            "1:2",
            ":",
            "-1",
            "found",
            "int",
            "len",
            "hdr(host)",
            "hdr_beg(host)",
            "hdr_end(host)",
            "hdr_dom(host)",
            "hdr_reg(host)",
            "hdr_sub(host)",
            "path",
            "path_beg",
            "path_end",
            "path_reg",
            "path_dir",
            "path_sub",
            "method",
            "src",
            "hdr(x-a)",
            "-i",
            "-m",
            "beg",
            "reg",
            "str",
            "--",
            "-f",
            "a.example",
            "/",
            "/api",
            "^/x/[0-9]+$",
            "(",
            ")",
            "[",
            "\\",
            "\"",
            "'",
            "10.0.0.0/8",
            "::1",
            "GET",
            "*",
            "{",
            "}",
            "é",
            "\u{7f}",
            "\n",
            "\0",
            " ",
        ];
        let headers = http::HeaderMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut parsed = 0;
        for _ in 0..30_000 {
            let text: String = (0..rng.gen_range(0..6))
                .map(|_| words[rng.gen_range(0..words.len())])
                .collect::<Vec<_>>()
                .join(if rng.gen_bool(0.8) { " " } else { "" });
            let Ok(c) = parse(&text) else { continue };
            parsed += 1;
            assert!(crate::rules::control_char(&text).is_none(), "{text:?}");
            for (path, host) in [
                ("/api/x", Some("a.example")),
                ("/", None),
                ("/x/12", Some("é.example:80")),
            ] {
                let r = req(path, host, &headers);
                assert_eq!(c.matches(&r), c.matches(&r), "{text:?}");
            }
        }
        assert!(parsed > 1_000, "{parsed}");
    }
}
