//! The client certificate the gateway shows to an upstream that requires one
//! (mutual TLS), read again when its files change.
//!
//! Why read it again: workload certificates are short-lived (a SPIFFE
//! X.509-SVID lives about an hour, and `spiffe-helper` or cert-manager
//! rewrite the files before it expires), so a certificate read once at start
//! would lock the gateway out of its upstreams an hour later. rustls asks for
//! the certificate at each new handshake; then, at most every
//! [`RECHECK`], the files' modification times and sizes are compared with
//! those of the pair in use, and a changed pair is read and checked (the key
//! must be the certificate's). A pair caught half-written, or not matching,
//! is not taken: the one in use stays, a warning says why, and the files are
//! read again at the next check. Pooled connections keep the certificate
//! they were opened with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Least time between two looks at the files.
pub(crate) const RECHECK: Duration = Duration::from_secs(10);

/// The certificate chain and key files, and the pair read from them last.
pub(crate) struct ReloadingClientCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    recheck: Duration,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    /// The files' stamps when `current` was read.
    read_from: [Stamp; 2],
    checked: Instant,
}

/// What tells that a file changed: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(file: &Path) -> Stamp {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl ReloadingClientCert {
    /// Reads the pair now; an error says which file is wrong and why.
    pub(crate) fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let read_from = [stamp(cert_file), stamp(key_file)];
        let current = read_pair(cert_file, key_file, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            recheck: RECHECK,
            state: Mutex::new(State {
                current,
                read_from,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to show now, read again first if its files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            let now = [stamp(&self.cert_file), stamp(&self.key_file)];
            if now != state.read_from {
                match read_pair(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(pair) => {
                        state.current = pair;
                        state.read_from = now;
                        tracing::info!(file = %self.cert_file.display(), "upstream client certificate read again");
                    }
                    Err(e) => tracing::warn!(
                        file = %self.cert_file.display(),
                        error = %e,
                        "upstream client certificate changed but cannot be used; keeping the previous one"
                    ),
                }
            }
        }
        Arc::clone(&state.current)
    }
}

/// The chain in `cert_file` (the gateway's certificate first) with the key
/// in `key_file`, checked to belong together.
fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_pem = std::fs::read(cert_file)
        .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it", cert_file.display()));
    }
    let key_pem =
        std::fs::read(key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no usable private key: {e}", key_file.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| format!("{} with {}: {e}", cert_file.display(), key_file.display()))
}

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for ReloadingClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingClientCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../mandate/tests/fixtures/tls");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn shown(c: &ReloadingClientCert) -> Vec<u8> {
        c.resolve(&[], &[]).unwrap().cert[0].to_vec()
    }

    fn first_cert(pem: &[u8]) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// The gateway's pair copied into `dir` and loaded from there, looked
    /// at again once `recheck` has passed; with the copies' paths.
    fn load_copy(dir: &Path, recheck: Duration) -> (ReloadingClientCert, PathBuf, PathBuf) {
        let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
        std::fs::write(&cert, fixture("gateway-client.pem")).unwrap();
        std::fs::write(&key, fixture("gateway-client.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = ReloadingClientCert::load(&cert, &key, provider).unwrap();
        c.recheck = recheck;
        (c, cert, key)
    }

    #[test]
    fn a_renewed_pair_is_shown_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c, cert, key) = load_copy(dir.path(), Duration::ZERO);
        assert_eq!(shown(&c), first_cert(&fixture("gateway-client.pem")));

        // Renewed: another certificate and its key.
        std::fs::write(&cert, fixture("upstream.pem")).unwrap();
        std::fs::write(&key, fixture("upstream.key")).unwrap();
        assert_eq!(shown(&c), first_cert(&fixture("upstream.pem")));

        // Caught half-way (a new certificate, the old key): not taken.
        std::fs::write(&cert, fixture("gateway-client.pem")).unwrap();
        assert_eq!(shown(&c), first_cert(&fixture("upstream.pem")));
        // Nor a file that is not PEM, nor a missing one.
        std::fs::write(&key, b"not a key").unwrap();
        assert_eq!(shown(&c), first_cert(&fixture("upstream.pem")));
        std::fs::remove_file(&key).unwrap();
        assert_eq!(shown(&c), first_cert(&fixture("upstream.pem")));
        // Whole again: taken.
        std::fs::write(&key, fixture("gateway-client.key")).unwrap();
        assert_eq!(shown(&c), first_cert(&fixture("gateway-client.pem")));
    }

    #[test]
    fn files_are_looked_at_no_more_often_than_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let (c, cert, key) = load_copy(dir.path(), Duration::from_secs(3600));
        std::fs::write(&cert, fixture("upstream.pem")).unwrap();
        std::fs::write(&key, fixture("upstream.key")).unwrap();
        // The hour has not passed since the load.
        assert_eq!(shown(&c), first_cert(&fixture("gateway-client.pem")));
    }

    #[test]
    fn a_pair_that_does_not_belong_together_is_refused_at_load() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = PathBuf::from(format!("{FIXTURES}/gateway-client.pem"));
        for key in ["upstream.key", "gateway-client.pem", "missing.key"] {
            let key = PathBuf::from(format!("{FIXTURES}/{key}"));
            let e = ReloadingClientCert::load(&cert, &key, Arc::clone(&provider)).unwrap_err();
            assert!(e.contains(key.to_str().unwrap()), "{e}");
            assert!(!e.contains("PRIVATE KEY-----"), "{e}");
        }
    }
}
