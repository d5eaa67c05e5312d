//! Durable rules: ZooKeeper in Bamboo's exact layout, or a JSON file in `--data-dir`. Outside the pure rules
//! library (`rules`), which it stores, and above the snapshot, which it publishes to. Both keep the last known
//! rules, publish every change into the snapshot, and refuse writes they cannot make durable.
//!
//! `codec` (the node format and the error, shared), `file` and `zk` (the two stores); this module picks one.

mod codec;
mod file;
mod zk;

pub use codec::{decode_body, encode_v2, query_escape, query_unescape, Services, StoreError};
pub use file::{write_atomic, FileStore};
pub use zk::ZkStore;

use crate::rules::Service;
use std::sync::Arc;
use std::time::Duration;

/// `--zk-path` (Bamboo's), `--zk-session-timeout` (Bamboo's 10 s) and `--data-dir`: the defaults.
pub const DEFAULT_ZK_PATH: &str = "/marathon-haproxy/state";
pub const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DATA_DIR: &str = "rattan-data";

pub enum RuleStore {
    File(Arc<FileStore>),
    Zk(Arc<ZkStore>),
}

impl RuleStore {
    pub async fn upsert(&self, svc: Service) -> Result<(), StoreError> {
        match self {
            RuleStore::File(f) => f.upsert(svc).await,
            RuleStore::Zk(z) => z.upsert(svc).await,
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        match self {
            RuleStore::File(f) => f.delete(id).await,
            RuleStore::Zk(z) => z.delete(id).await,
        }
    }

    /// Before the process exits: ZooKeeper's session is closed in order.
    pub async fn close(&self) {
        if let RuleStore::Zk(z) = self {
            z.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Publisher;
    use std::collections::BTreeMap;

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory with something in it: the rename over it fails after the temp file is written.
        let target = dir.path().join("rules.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["rules.json"]);
    }

    #[test]
    fn go_query_escaping() {
        assert_eq!(query_escape("/grp/web"), "%2Fgrp%2Fweb");
        assert_eq!(query_escape("/a b~c.d-e_f"), "%2Fa+b~c.d-e_f");
        assert_eq!(query_escape("/ü"), "%2F%C3%BC");
        assert_eq!(query_unescape("%2Fgrp%2Fweb").as_deref(), Some("/grp/web"));
        assert_eq!(query_unescape("%2Fa+b").as_deref(), Some("/a b"));
        assert_eq!(query_unescape("%2"), None);
        assert_eq!(query_unescape("%zz"), None);
    }

    #[test]
    fn bodies_as_bamboo() {
        let config: BTreeMap<String, String> = [
            ("z".to_string(), "1".to_string()),
            ("Acl".to_string(), "path_beg -i /x&<>".to_string()),
        ]
        .into();
        assert_eq!(
            String::from_utf8(encode_v2(&config)).unwrap(),
            r#"{"version":"2","config":{"Acl":"path_beg -i /x\u0026\u003c\u003e","z":"1"}}"#
        );
        assert_eq!(
            encode_v2(&BTreeMap::new()),
            br#"{"version":"2","config":{}}"#
        );
        let v2 = decode_body(
            "/x",
            br#"{"version":"2","config":{"Acl":"path_beg /x","w":"2"}}"#,
        );
        assert_eq!(v2.acl, "path_beg /x");
        assert_eq!(v2.config.unwrap().len(), 2);
        let v1 = decode_body("/x", b"hdr(host) -i x.com");
        assert_eq!(v1.acl, "hdr(host) -i x.com");
        let numeric = decode_body("/x", br#"{"version":2}"#);
        assert_eq!(
            numeric.acl, r#"{"version":2}"#,
            "a number version is a V1 raw ACL, as in Bamboo"
        );
        let null_config = decode_body("/x", br#"{"version":"2","config":null}"#);
        assert_eq!(null_config.acl, "");
        assert!(null_config.config.is_none());
    }

    #[tokio::test]
    async fn file_store_is_atomic_and_never_overwrites_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(Publisher::default());
        let s = FileStore::open(dir.path(), p.clone()).unwrap();
        s.upsert(Service {
            id: "/a".into(),
            acl: "path_beg /a".into(),
            config: Some([("Acl".into(), "path_beg /a".into())].into()),
        })
        .await
        .unwrap();
        assert_eq!(p.load().rules.services.len(), 1);
        assert!(matches!(s.delete("/nope").await, Err(StoreError::NotFound)));
        drop(s);
        let reopened = FileStore::open(dir.path(), Arc::new(Publisher::default())).unwrap();
        reopened.delete("/a").await.unwrap();

        std::fs::write(dir.path().join(FileStore::FILE_NAME), b"{ not json").unwrap();
        let p = Arc::new(Publisher::default());
        let damaged = FileStore::open(dir.path(), p).unwrap();
        let e = damaged
            .upsert(Service {
                id: "/b".into(),
                ..Service::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Unavailable(ref m) if m.contains("damaged")),
            "{e}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(FileStore::FILE_NAME)).unwrap(),
            b"{ not json"
        );
    }
}
