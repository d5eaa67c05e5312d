//! TLS termination: certificates from a directory, picked by SNI (exact name, then `*.parent`), a default for
//! unknown names, re-read when the directory changes. A file that fails to load keeps its last good version.

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

type Fingerprint = Vec<(PathBuf, SystemTime, u64)>;

/// Largest certificate file read (a chain and its key are a few KiB).
const MAX_CERT_FILE: u64 = 1024 * 1024;

#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    /// The leaf's expiry, Unix seconds.
    not_after: i64,
}

#[derive(Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .cloned()
    }
}

/// The certificate resolver handed to rustls; swapped whole on reload.
pub struct CertStore {
    dir: Option<PathBuf>,
    /// Files named by labels (`HAPROXY_{n}_SSL_CERT`), read with the directory's.
    extra: Mutex<Vec<PathBuf>>,
    current: ArcSwap<CertSet>,
    /// Last good load per file, and the directory's fingerprint when last read (`None`: never read).
    files: Mutex<(BTreeMap<PathBuf, Loaded>, Option<Fingerprint>)>,
    /// The self-signed stand-in, made once: an empty directory must not cost a key generation per look.
    fallback: std::sync::OnceLock<Option<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertStore({:?})", self.dir)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        hello
            .server_name()
            .and_then(|n| set.find(n))
            .or_else(|| set.default.clone())
    }
}

fn is_cert_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("pem" | "crt" | "cert")
    )
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut v: Vec<(PathBuf, SystemTime, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((
                        e.path(),
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// DNS names a certificate covers (its SAN entries, else its CN) and its expiry (Unix seconds).
fn names_of(cert: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = x.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in x.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok((names, not_after))
}

/// Loads one certificate file: chain and key in it, or the key beside it as `<stem>.key`.
fn load_file(path: &Path) -> Result<Loaded, String> {
    // A label can name any path: only regular files of a certificate's size are read.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_CERT_FILE {
        return Err(format!(
            "not a regular file of at most {} KiB",
            MAX_CERT_FILE / 1024
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the file")?;
    let key = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(k) => k,
        Err(_) => {
            let key_path = path.with_extension("key");
            let bytes = std::fs::read(&key_path).map_err(|e| {
                format!(
                    "no private key in the file, and {}: {e}",
                    key_path.display()
                )
            })?;
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| format!("{}: no usable private key: {e}", key_path.display()))?
        }
    };
    let (names, not_after) = names_of(leaf)?;
    let signer = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .map_err(|e| format!("key does not match the certificate: {e}"))?;
    Ok(Loaded {
        key: Arc::new(key),
        names,
        not_after,
    })
}

fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::try_from(c.key_pair.serialize_der()).map_err(|e| e.to_string())?;
    let signer = provider::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![c.cert.der().clone()],
        signer,
    )))
}

impl CertStore {
    pub fn open(dir: Option<PathBuf>) -> Arc<CertStore> {
        let store = Arc::new(CertStore {
            dir,
            extra: Mutex::default(),
            current: ArcSwap::from_pointee(CertSet::default()),
            files: Mutex::new((BTreeMap::new(), None)),
            fallback: std::sync::OnceLock::new(),
        });
        store.reload();
        store
    }

    /// Re-reads the directory when its listing, sizes or times changed. Returns whether it did.
    pub fn reload(&self) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut fp = self.dir.as_deref().map(fingerprint).unwrap_or_default();
        fp.extend(
            self.extra
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|p| {
                    let m = std::fs::metadata(p).ok();
                    let time = m.as_ref().and_then(|m| m.modified().ok());
                    (
                        p.clone(),
                        time.unwrap_or(SystemTime::UNIX_EPOCH),
                        m.map_or(0, |m| m.len()),
                    )
                }),
        );
        let in_dir = |p: &Path| self.dir.as_deref().is_some_and(|d| p.parent() == Some(d));
        if files.1.as_ref() == Some(&fp) {
            return false;
        }
        let mut set = CertSet::default();
        let mut loaded = BTreeMap::new();
        // The directory's certificate files, and every file a label names.
        for (path, _, _) in fp.iter().filter(|(p, _, _)| is_cert_file(p) || !in_dir(p)) {
            let got = match load_file(path) {
                Ok(l) => l,
                Err(e) => match files.0.get(path) {
                    Some(prev) => {
                        tracing::warn!(file = %path.display(), error = %e, "certificate file unreadable; keeping its last good version");
                        prev.clone()
                    }
                    None => {
                        // A `.crt` whose key is a separate file is fine; a lone key or bad file is reported.
                        tracing::warn!(file = %path.display(), error = %e, "certificate file skipped");
                        continue;
                    }
                },
            };
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem == "default" || set.default.is_none() {
                set.default = Some(got.key.clone());
            }
            for n in &got.names {
                match n.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_string()),
                    None => set.exact.entry(n.clone()),
                }
                .or_insert_with(|| got.key.clone());
            }
            loaded.insert(path.clone(), got);
        }
        if set.default.is_none() {
            set.default = self
                .fallback
                .get_or_init(|| match self_signed() {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot make a self-signed certificate");
                        None
                    }
                })
                .clone();
            tracing::warn!(
                "no usable TLS certificate (in --tls-cert-dir, or the file an SSL_CERT label names); serving a self-signed one for localhost"
            );
        }
        let names: Vec<&String> = set.exact.keys().chain(set.wildcard.keys()).collect();
        tracing::info!(certificates = loaded.len(), names = ?names, "TLS certificates loaded");
        let m = crate::metrics::metrics();
        m.tls_certificates.set(loaded.len() as i64);
        m.tls_cert_not_after.reset();
        for (path, l) in &loaded {
            let name = l.names.first().map_or("", String::as_str);
            m.tls_cert_not_after
                .with_label_values(&[&path.display().to_string(), name])
                .set(l.not_after as f64);
        }
        self.current.store(Arc::new(set));
        files.1 = Some(fp);
        files.0 = loaded;
        true
    }

    /// The certificate files labels name (`HAPROXY_{n}_SSL_CERT`); read at once when they changed.
    pub fn set_label_certs(&self, files: &[String]) -> bool {
        let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        if *extra == files {
            return false;
        }
        *extra = files;
        drop(extra);
        self.reload()
    }

    /// Polls the directory and the labels' files for changes (cheap: one listing) until the process ends.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        crate::periodic::every(self, every, |store: Arc<Self>| async move {
            // File reads and PEM parsing off the async threads.
            let _ = tokio::task::spawn_blocking(move || store.reload()).await;
        });
    }

    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_is_read_once_and_its_stand_in_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::open(Some(dir.path().to_path_buf()));
        let first = store.current.load().default.clone().expect("a stand-in");
        // Nothing changed: no re-read (the old placeholder fingerprint never matched an empty listing).
        assert!(!store.reload());
        assert!(!store.reload());
        // A change is read, and the stand-in is still the one made first.
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert!(store.reload());
        let again = store.current.load().default.clone().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
}
