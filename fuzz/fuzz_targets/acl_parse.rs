//! The ACL parser and matcher must never panic, whatever the text: a rule comes from users and from ZooKeeper.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rattan::rules::acl::{parse, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // First line: the ACL; second: a path; third: a host.
    let mut lines = text.splitn(3, '\n');
    let acl = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/");
    let host = lines.next().unwrap_or("example.com");
    if let Ok(c) = parse(acl) {
        let headers = http::HeaderMap::new();
        let req = Request { path, method: "GET", host: Some(host), headers: &headers, src: None };
        let _ = c.matches(&req);
        let _ = (c.host_rank(), c.path_prefix_len());
    }
});
