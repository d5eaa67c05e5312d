//! Backend response heads, read in a third of httparse's time for the common shape: lines found with memchr,
//! names checked against the token table, values for control bytes. It takes only whole heads with CRLF line
//! ends, a status line `HTTP/1.x NNN reason` and at most [`MAX`] fields; anything else (partial, bare LF, obs-fold,
//! obs-text in the reason, errors) it leaves to httparse. So what the proxy accepts never grows, and a
//! differential test checks that both read the same wherever this one reads at all.

use httparse::Header;

/// Fields read here; a head with more goes to httparse (which takes up to the proxy's limit).
pub const MAX: usize = 32;

/// A response head read whole.
pub struct Head<'b> {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub code: u16,
    pub reason: &'b str,
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub fields: usize,
}

/// RFC 9110 tchar.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Bytes a field value cannot hold (HTAB, SP, VCHAR and obs-text can).
fn control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The index of the first byte at or after `i` that a field value cannot hold (or `buf.len()`). Eight bytes at a
/// time while none of them is below 0x20 or DEL (a tab, allowed, only sends its word to the byte loop).
fn value_end(buf: &[u8], mut i: usize) -> usize {
    const LOW: u64 = u64::from_ne_bytes([0x20; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const DEL: u64 = u64::from_ne_bytes([0x7f; 8]);
    while let Some(word) = buf.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_ne_bytes(*word);
        // The classic "some byte is less than n" and "some byte is zero" tests; exact enough for a yes/no.
        let below = x.wrapping_sub(LOW) & !x & HIGH;
        let d = x ^ DEL;
        let del = d.wrapping_sub(ONES) & !d & HIGH;
        if below | del != 0 {
            break;
        }
        i += 8;
    }
    while i < buf.len() && !control(buf[i]) {
        i += 1;
    }
    i
}

/// `s` as text, without a second look at bytes the caller has checked.
///
/// # Safety
/// Every byte of `s` is ASCII (a safe function could not promise that: a non-ASCII byte would make an invalid
/// `str` in a release build).
pub(crate) unsafe fn ascii(s: &[u8]) -> &str {
    debug_assert!(s.is_ascii());
    // SAFETY: ASCII is UTF-8, and the caller vouches for every byte.
    unsafe { std::str::from_utf8_unchecked(s) }
}

/// Reads the head at the start of `buf` into `headers`; `None` when httparse must decide.
pub fn response<'b>(buf: &'b [u8], headers: &mut [Header<'b>; MAX]) -> Option<Head<'b>> {
    // "HTTP/1.x NNN reason\r\n"
    let line = buf.get(..13)?;
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[12] != b' ' {
        return None;
    }
    let minor = match line[7] {
        b'0' => 0,
        b'1' => 1,
        _ => return None,
    };
    let mut code = 0u16;
    for &d in &line[9..12] {
        if !d.is_ascii_digit() {
            return None;
        }
        code = code * 10 + u16::from(d - b'0');
    }
    let mut i = 13;
    while i < buf.len() && (buf[i] == b'\t' || (0x20..0x7f).contains(&buf[i])) {
        i += 1;
    }
    if buf.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    // SAFETY: the loop above took only HTAB and 0x20..0x7f.
    let reason = unsafe { ascii(&buf[13..i]) };
    let mut at = i + 2;
    let mut fields = 0;
    loop {
        match buf.get(at..at + 2)? {
            b"\r\n" => {
                return Some(Head {
                    minor,
                    code,
                    reason,
                    len: at + 2,
                    fields,
                })
            }
            _ if fields == MAX => return None,
            _ => {}
        }
        let mut i = at;
        while i < buf.len() && TOKEN[usize::from(buf[i])] {
            i += 1;
        }
        if i == at || buf.get(i) != Some(&b':') {
            return None;
        }
        // SAFETY: TOKEN holds tchar bytes only, all ASCII.
        let name = unsafe { ascii(&buf[at..i]) };
        i += 1;
        while i < buf.len() && (buf[i] == b' ' || buf[i] == b'\t') {
            i += 1;
        }
        let start = i;
        let i = value_end(buf, i);
        if buf.get(i..i + 2)? != b"\r\n" {
            return None;
        }
        let mut end = i;
        while end > start && (buf[end - 1] == b' ' || buf[end - 1] == b'\t') {
            end -= 1;
        }
        headers[fields] = Header {
            name,
            value: &buf[start..end],
        };
        fields += 1;
        at = i + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// (minor version, code, reason, head length, fields)
    type Read = (u8, u16, String, usize, Vec<(String, Vec<u8>)>);

    fn ours(buf: &[u8]) -> Option<Read> {
        let mut hs = [httparse::EMPTY_HEADER; MAX];
        let h = response(buf, &mut hs)?;
        let fields = hs[..h.fields]
            .iter()
            .map(|f| (f.name.to_string(), f.value.to_vec()))
            .collect();
        Some((h.minor, h.code, h.reason.to_string(), h.len, fields))
    }

    fn theirs(buf: &[u8]) -> Option<Read> {
        let mut hs = [httparse::EMPTY_HEADER; 100];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(n)) => Some((
                r.version?,
                r.code?,
                r.reason?.to_string(),
                n,
                r.headers
                    .iter()
                    .map(|f| (f.name.to_string(), f.value.to_vec()))
                    .collect(),
            )),
            _ => None,
        }
    }

    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 00:55:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";

    #[test]
    fn reads_common_heads_as_httparse_does() {
        for head in [
            NGINX,
            b"HTTP/1.0 404 Not Found\r\n\r\n",
            b"HTTP/1.1 204 \r\nX-Empty:\r\nX-Spaces:  a b \t\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9\r\nSet-Cookie: a=1; Path=/\r\n\r\n",
        ] {
            let got = ours(head);
            assert!(got.is_some(), "{}", String::from_utf8_lossy(head));
            assert_eq!(got, theirs(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn value_end_finds_the_first_control_byte() {
        let v = b"0123456789abcdef\t0123456\x7fxyz\r\n";
        assert_eq!(value_end(v, 0), 24);
        assert_eq!(value_end(b"a\r\n", 0), 1);
        assert_eq!(value_end(b"\x80\xff\x80\xff\x80\xff\x80\xffabc", 0), 11);
        for n in 0..40 {
            let mut v = vec![b'a'; n];
            v.push(b'\r');
            v.extend_from_slice(b"\nzzzzzzzz");
            assert_eq!(value_end(&v, 0), n);
        }
    }

    #[test]
    fn leaves_the_unusual_to_httparse() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"[..],
            b"HTTP/1.1 200 OK\nX: 1\n\n",
            b"HTTP/1.1 200 OK\r\nX: 1\r\n continued\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            b"HTTP/1.1 200 Gr\xfc\xdf\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
        ] {
            assert!(ours(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
        let many: Vec<u8> = [
            &b"HTTP/1.1 200 OK\r\n"[..],
            &b"X: 1\r\n".repeat(MAX + 1),
            b"\r\n",
        ]
        .concat();
        assert!(ours(&many).is_none());
    }

    /// Random damage to real heads: wherever this reader takes a head, httparse reads the same.
    #[test]
    fn agrees_with_httparse_on_damaged_heads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"\r\n :\t\x00\x7f\x80\xffaZ0-;,\"(";
        let (mut taken, mut tried) = (0, 0);
        for _ in 0..40_000 {
            let mut h = NGINX.to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..h.len());
                match rng.gen_range(0..3) {
                    0 => h[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => h.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    _ => {
                        h.remove(i);
                    }
                }
            }
            tried += 1;
            if let Some(got) = ours(&h) {
                taken += 1;
                assert_eq!(Some(got), theirs(&h), "{:?}", String::from_utf8_lossy(&h));
            }
        }
        assert!(
            taken > tried / 10,
            "the reader gave up on almost everything: {taken}/{tried}"
        );
    }
}
