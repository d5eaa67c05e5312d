//! What a route changes in the request and the response it forwards (marathon-lb's backend glue): the path prefix
//! taken off before the backend sees it (`proxypass_path`), the redirects the backend writes put back under the
//! public path (`revproxy_path`), and HSTS on HTTPS responses. Both front ends use these.

/// marathon-lb's `_USE_HSTS` value.
pub const HSTS: &str = "max-age=15768000";

/// Response fields that carry a URI the client follows.
pub const LOCATION_FIELDS: [&str; 3] = ["location", "content-location", "uri"];

/// `path_and_query` without `prefix` (and the `/` after it), when it is under it: `/api/users?x` → `/users?x`,
/// `/api` → `/`. A path that only starts with the same letters (`/apix`) is not under it.
pub fn proxypass(prefix: &str, path_and_query: &str) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path_and_query.strip_prefix(prefix)?;
    match rest.as_bytes().first() {
        None => Some("/".into()),
        Some(b'/') => Some(rest.to_string()),
        Some(b'?') => Some(format!("/{rest}")),
        Some(_) => None,
    }
}

/// A URI the backend answered with, under `root`: a path (`/login` → `/app/login`), or an absolute URL naming
/// the host the client asked for (its path, the same way). Others are left alone.
pub fn revproxy(root: &str, value: &str, host: Option<&str>) -> Option<String> {
    let root = root.trim_end_matches('/');
    let path = if value.starts_with('/') && !value.starts_with("//") {
        value
    } else {
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let name = |a: &str| {
            a.rsplit_once(':')
                .map_or(a, |(n, _)| n)
                .to_ascii_lowercase()
        };
        if host.map(name) != Some(name(authority)) {
            return None;
        }
        if path.is_empty() {
            "/"
        } else {
            path
        }
    };
    if path == root || path.starts_with(&format!("{root}/")) {
        // Already under it.
        return None;
    }
    Some(format!("{root}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_comes_off_at_a_segment() {
        assert_eq!(
            proxypass("/api", "/api/users?x=1").as_deref(),
            Some("/users?x=1")
        );
        assert_eq!(proxypass("/api/", "/api/users").as_deref(), Some("/users"));
        assert_eq!(proxypass("/api", "/api").as_deref(), Some("/"));
        assert_eq!(proxypass("/api", "/api?q").as_deref(), Some("/?q"));
        assert_eq!(proxypass("/api", "/apix"), None);
        assert_eq!(proxypass("/api", "/other"), None);
    }

    #[test]
    fn redirects_go_back_under_the_public_path() {
        let host = Some("web.example.com:8080");
        assert_eq!(
            revproxy("/app", "/login", host).as_deref(),
            Some("/app/login")
        );
        assert_eq!(
            revproxy("/app/", "http://web.example.com/login?n=1", host).as_deref(),
            Some("/app/login?n=1")
        );
        assert_eq!(
            revproxy("/app", "https://WEB.example.com", host).as_deref(),
            Some("/app/")
        );
        assert_eq!(revproxy("/app", "https://elsewhere.example/x", host), None);
        assert_eq!(revproxy("/app", "//elsewhere.example/x", host), None);
        assert_eq!(revproxy("/app", "/app/login", host), None);
        assert_eq!(revproxy("/app", "relative", host), None);
    }
}
