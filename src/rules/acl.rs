//! HAProxy ACL criteria, the subset real Bamboo and marathon-lb users write, parsed once into typed matchers.
//!
//! One criterion is `<fetch> [flags] <value> [<value>…]`: values are ORed. Fetches: `path`, `path_beg`,
//! `path_end`, `path_dir`, `path_sub`, `path_reg`, `hdr(<name>)`, `hdr_beg|end|dom|sub|reg|dir(<name>)`, `src`,
//! `method`. Flags: `-i` (ignore case), `-m <str|beg|end|sub|dom|dir|reg>`, `--` (end of flags).

use std::fmt;
use std::net::IpAddr;

pub const SUPPORTED_FETCHES: &str = "path, path_beg, path_end, path_dir, path_sub, path_reg, hdr(<name>), \
hdr_beg(<name>), hdr_end(<name>), hdr_dom(<name>), hdr_sub(<name>), hdr_reg(<name>), hdr_dir(<name>), src, method";

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
    /// Lower-cased header name.
    Hdr(String),
    Src,
    Method,
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
}

#[derive(Debug, Clone)]
enum Values {
    /// Lower-cased already when the match ignores case.
    Strings(Vec<String>),
    Regexes(Vec<regex::Regex>),
    Nets(Vec<ipnet::IpNet>),
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

fn fetch_of(tok: &str, pos: usize) -> Result<(Fetch, MatchKind), ParseError> {
    let unknown = || ParseError {
        pos,
        msg: format!("unknown fetch '{tok}'; supported: {SUPPORTED_FETCHES}"),
    };
    let simple = match tok {
        "path" => Some((Fetch::Path, MatchKind::Str)),
        "path_beg" => Some((Fetch::Path, MatchKind::Beg)),
        "path_end" => Some((Fetch::Path, MatchKind::End)),
        "path_dir" => Some((Fetch::Path, MatchKind::Dir)),
        "path_sub" => Some((Fetch::Path, MatchKind::Sub)),
        "path_reg" => Some((Fetch::Path, MatchKind::Reg)),
        "path_dom" => Some((Fetch::Path, MatchKind::Dom)),
        "src" => Some((Fetch::Src, MatchKind::Str)),
        "method" => Some((Fetch::Method, MatchKind::Str)),
        _ => None,
    };
    if let Some(f) = simple {
        return Ok(f);
    }
    let (name, arg) = match tok.split_once('(') {
        Some((n, rest)) => match rest.strip_suffix(')') {
            Some(arg) => (n, arg),
            None => {
                return Err(ParseError {
                    pos: pos + tok.len(),
                    msg: format!("missing ')' in '{tok}'"),
                })
            }
        },
        None if tok.starts_with("hdr") => {
            return Err(ParseError {
                pos,
                msg: format!("'{tok}' needs a header name, e.g. {tok}(host)"),
            })
        }
        None => return Err(unknown()),
    };
    let kind = match name {
        "hdr" => MatchKind::Str,
        "hdr_beg" => MatchKind::Beg,
        "hdr_end" => MatchKind::End,
        "hdr_dom" => MatchKind::Dom,
        "hdr_sub" => MatchKind::Sub,
        "hdr_reg" => MatchKind::Reg,
        "hdr_dir" => MatchKind::Dir,
        _ => return Err(unknown()),
    };
    // hdr(name[,occ]): the occurrence argument is accepted and ignored (every occurrence is tried).
    let header = arg.split(',').next().unwrap_or("").trim();
    if header.is_empty() || http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(ParseError {
            pos: pos + name.len() + 1,
            msg: format!("'{arg}' is not a header name"),
        });
    }
    Ok((Fetch::Hdr(header.to_ascii_lowercase()), kind))
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
        it.next();
        match tok.as_str() {
            "-i" => ignore_case = true,
            "--" => break,
            "-m" => {
                let Some((mpos, m)) = it.next() else {
                    return Err(ParseError {
                        pos,
                        msg: "-m needs a method: str, beg, end, sub, dom, dir or reg".into(),
                    });
                };
                if fetch == Fetch::Src {
                    return Err(ParseError {
                        pos,
                        msg: "-m does not apply to src (it matches IP addresses and networks)"
                            .into(),
                    });
                }
                kind = match m.as_str() {
                    "str" => MatchKind::Str,
                    "beg" => MatchKind::Beg,
                    "end" => MatchKind::End,
                    "sub" => MatchKind::Sub,
                    "dom" => MatchKind::Dom,
                    "dir" => MatchKind::Dir,
                    "reg" => MatchKind::Reg,
                    other => {
                        return Err(ParseError {
                            pos: mpos,
                            msg: format!("unknown match method '{other}'; supported: str, beg, end, sub, dom, dir, reg"),
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
    if rest.is_empty() {
        return Err(ParseError {
            pos: text.len(),
            msg: format!("'{ftok}' has no value to match"),
        });
    }
    let raw_values: Vec<String> = rest.iter().map(|(_, v)| v.clone()).collect();
    let values = match (&fetch, kind) {
        (Fetch::Src, _) => {
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
        (_, MatchKind::Reg) => {
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
        (_, k) => Values::Strings(
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
    fn match_str(&self, subject: &str) -> bool {
        let ci = self.ignore_case;
        match &self.values {
            Values::Strings(vals) => vals.iter().any(|p| match self.kind {
                MatchKind::Str => eq(subject, p, ci),
                MatchKind::Beg => begins(subject, p, ci),
                MatchKind::End => ends(subject, p, ci),
                MatchKind::Sub => find_all(subject, p, ci).next().is_some(),
                MatchKind::Dom | MatchKind::Dir => word(subject, p, ci, self.kind),
                MatchKind::Reg => false,
            }),
            Values::Regexes(res) => res.iter().any(|re| re.is_match(subject)),
            Values::Nets(_) => false,
        }
    }

    pub fn matches(&self, req: &Request) -> bool {
        match &self.fetch {
            Fetch::Path => self.match_str(req.path),
            Fetch::Method => self.match_str(req.method),
            Fetch::Src => match (&self.values, req.src) {
                (Values::Nets(nets), Some(ip)) => {
                    let ip = match ip {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                        v4 => v4,
                    };
                    nets.iter().any(|n| n.contains(&ip))
                }
                _ => false,
            },
            Fetch::Hdr(name) if name == "host" => req.host.is_some_and(|h| self.match_str(h)),
            Fetch::Hdr(name) => req.headers.any(name, |v| {
                std::str::from_utf8(v).is_ok_and(|v| {
                    // Like HAProxy's hdr(): every comma-separated value is an occurrence.
                    v.split(',').any(|v| self.match_str(v.trim()))
                })
            }),
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

    /// Length of the longest literal path prefix this criterion requires (0 if none).
    pub fn path_prefix_len(&self) -> usize {
        match (&self.fetch, self.kind) {
            (Fetch::Path, MatchKind::Str | MatchKind::Beg | MatchKind::Dir) => {
                self.raw_values.iter().map(String::len).max().unwrap_or(0)
            }
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

    fn req<'a>(path: &'a str, host: Option<&'a str>, headers: &'a http::HeaderMap) -> Request<'a> {
        Request {
            path,
            method: "GET",
            host,
            headers: headers.into(),
            src: Some("10.1.2.3".parse().unwrap()),
        }
    }

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
    ];

    #[test]
    fn table() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-team", "Blue, green".parse().unwrap());
        // The same fields as the fast path holds them: parsed in place, names in any case.
        let raw = [httparse::Header {
            name: "X-Team",
            value: b"Blue, green",
        }];
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
            ("src -m beg 10.", 4, "-m does not apply to src"),
            ("path_beg \"/open", 9, "unterminated"),
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
                let _ = c.matches(&Request {
                    path: &path,
                    method: "GET",
                    host: Some(&path),
                    headers: (&h).into(),
                    src: None,
                });
            }
        }
    }

    #[test]
    fn ipv4_mapped_source() {
        let h = http::HeaderMap::new();
        let c = parse("src 10.0.0.0/8").unwrap();
        let r = Request {
            path: "/",
            method: "GET",
            host: None,
            headers: (&h).into(),
            src: Some("::ffff:10.9.9.9".parse().unwrap()),
        };
        assert!(c.matches(&r));
    }

    /// Seeded fuzzing in CI: token soup from the ACL language and its edges. Parsing never panics, never accepts a
    /// control character, and whatever parses matches any request without panicking, the same way twice.
    #[test]
    fn parser_fuzz() {
        use rand::{Rng, SeedableRng};
        let words = [
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
