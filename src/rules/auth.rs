//! HTTP basic auth for a route (marathon-lb's `HAPROXY_{n}_AUTH`, the rule config key `auth`): `realm:user:hash`,
//! the hash as `mkpasswd` or `openssl passwd` write it (SHA-512 `$6$`, SHA-256 `$5$`, MD5 `$1$`, bcrypt `$2y$`).
//! A crypt costs milliseconds by design, so a header that passed is remembered (by a keyed hash of it, never the
//! header itself) and a keep-alive client pays once. Hashes are compared in constant time.

use base64::Engine;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Headers remembered as good, per route; past it the memory starts over.
const REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct BasicAuth {
    pub realm: String,
    users: Vec<(String, String)>,
    /// Keyed hashes of `Authorization` values that passed.
    passed: Mutex<HashSet<u64>>,
    key: std::collections::hash_map::RandomState,
}

impl BasicAuth {
    /// Parses one or more `realm:user:hash` entries (whitespace-separated; every entry names the same realm).
    pub fn parse(text: &str) -> Result<BasicAuth, String> {
        let mut realm: Option<&str> = None;
        let mut users = Vec::new();
        for entry in text.split_whitespace() {
            let mut parts = entry.splitn(3, ':');
            let (Some(r), Some(user), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "auth '{entry}' is not realm:user:hash (three fields)"
                ));
            };
            if r.is_empty() || user.is_empty() || hash.is_empty() {
                return Err(format!("auth '{entry}' has an empty field"));
            }
            // Written into a rendered HAProxy userlist too.
            if !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
            {
                return Err(format!(
                    "auth user '{user}' may hold letters, digits and . _ - @ only"
                ));
            }
            // It is quoted in WWW-Authenticate.
            if !r
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(format!(
                    "auth realm '{r}' must be printable, without quotes"
                ));
            }
            if !["$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(format!(
                    "auth hash of {user} is not a crypt hash ($6$, $5$, $1$ or $2y$)"
                ));
            }
            // Checked once here, so a hash pwhash cannot read fails the route, not every request.
            if pwhash::unix::crypt("", hash).is_err() {
                return Err(format!("auth hash of {user} does not parse"));
            }
            match realm {
                Some(prev) if prev != r => {
                    return Err(format!("auth names two realms ({prev}, {r})"))
                }
                _ => realm = Some(r),
            }
            users.push((user.to_string(), hash.to_string()));
        }
        let Some(realm) = realm else {
            return Err("auth is empty".into());
        };
        Ok(BasicAuth {
            realm: realm.to_string(),
            users,
            passed: Mutex::default(),
            key: Default::default(),
        })
    }

    /// The users and their hashes, for a rendered HAProxy `userlist`.
    pub fn users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users.iter().map(|(u, h)| (u.as_str(), h.as_str()))
    }

    /// Whether an `Authorization` header value carries a user and password of this route.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let key = self.key.hash_one(value);
        let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        if passed.contains(&key) {
            return true;
        }
        drop(passed);
        if !self.check(value) {
            return false;
        }
        passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert(key);
        true
    }

    fn check(&self, value: &[u8]) -> bool {
        let Some(encoded) = value
            .strip_prefix(b"Basic ")
            .or_else(|| value.strip_prefix(b"basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(password) = std::str::from_utf8(password) else {
            return false;
        };
        // Every user is looked at, so the time does not tell which names exist.
        let mut ok = subtle::Choice::from(0);
        for (name, hash) in &self.users {
            let same_user = name.as_bytes().ct_eq(user);
            let computed = pwhash::unix::crypt(password, hash).unwrap_or_default();
            ok |= same_user & computed.as_bytes().ct_eq(hash.as_bytes());
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {b64}").into_bytes()
    }

    #[test]
    fn every_crypt_scheme_marathon_lb_users_write() {
        // PHP's documented example of password_hash (bcrypt, $2y$) for "rasmuslerdorf".
        let bcrypt = "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a";
        let sha512 = pwhash::sha512_crypt::hash_with("$6$saltsalt", "rasmuslerdorf").unwrap();
        // `openssl passwd -5` and `-1`, salt "saltsalt".
        let sha256 = "$5$saltsalt$/b4tJ5Ao7n21YH8/dNSvR95Fc.a8fsWdVli8DUGhfpB";
        let md5 = "$1$saltsalt$hptKxOKOTDdhXdQnrCzqi1";
        for hash in [bcrypt, &sha512, sha256, md5] {
            let a = BasicAuth::parse(&format!("realm:alice:{hash}")).unwrap();
            assert!(a.allows(Some(&header("alice", "rasmuslerdorf"))), "{hash}");
            // Remembered: the same header again, without a crypt.
            assert!(a.allows(Some(&header("alice", "rasmuslerdorf"))), "{hash}");
            assert!(!a.allows(Some(&header("alice", "wrong"))), "{hash}");
            assert!(!a.allows(Some(&header("bob", "rasmuslerdorf"))), "{hash}");
            assert!(!a.allows(None));
            assert!(!a.allows(Some(b"Bearer x")));
            assert!(!a.allows(Some(b"Basic !!!")));
        }
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "",
            "realm:alice",
            "realm::$6$x$y",
            "realm:alice:plaintext",
            "re\"alm:alice:$6$saltsalt$x",
            "a:alice:$1$x$y b:bob:$1$x$y",
        ] {
            assert!(BasicAuth::parse(bad).is_err(), "{bad}");
        }
        // `openssl passwd -1 -salt aa a`, `... -salt bb b`.
        let two = "r:alice:$1$aa$aM/8fu5RTEKSCJWsk9qH.0 r:bob:$1$bb$DxSUBN5kqfrdW.n1ZDxIy1";
        let a = BasicAuth::parse(two).unwrap();
        assert!(a.allows(Some(&header("bob", "b"))));
        assert!(!a.allows(Some(&header("bob", "a"))));
    }
}
