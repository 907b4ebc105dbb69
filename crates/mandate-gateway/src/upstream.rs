//! Connections to upstreams: pooled HTTP/1.1, in the clear or over TLS.
//!
//! Why one pool per thread: a pooled connection is driven by a task on the
//! event loop that opened it. The public listener runs one single-threaded
//! event loop per thread (`mandate-server`'s `listener`), so a connection
//! shared between threads would cost a cross-thread wake-up on every request
//! that borrowed it from another loop. With a pool per thread, a proxied
//! request, its upstream connection and the answer stay on one thread; the
//! price is up to one idle connection set per thread.
//!
//! Why one pool per trust: a route whose upstream has a certificate from a
//! private CA (`upstream_ca_file`) must trust that CA and nothing else, while
//! every other route trusts the public web PKI (the Mozilla roots compiled in
//! by `webpki-roots`, so the host's CA store cannot widen or narrow it). A
//! pool's connections are verified once, at the handshake, so each trust gets
//! its own client and its own pool; `http://` upstreams share the default one.
//!
//! The crypto provider is named (`ring`, the one reqwest's rustls already
//! brings) rather than taken from a process default, so that another crate
//! enabling a second provider cannot make the choice ambiguous at run time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use thread_local::ThreadLocal;

type PooledClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The client the gateway forwards with: one connection pool per thread
/// that uses it, all with the same trust. Cloning shares the pools.
#[derive(Clone)]
pub struct UpstreamClient(Arc<PerThreadPools>);

struct PerThreadPools {
    connector: HttpsConnector<HttpConnector>,
    pools: ThreadLocal<PooledClient>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Sends `req` over this thread's pool (made on first use).
    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        let PerThreadPools { connector, pools } = &*self.0;
        pools
            .get_or(|| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(256)
                    .build(connector.clone())
            })
            .request(req)
    }
}

/// Whom an https upstream's certificate must chain to.
#[derive(Debug)]
pub struct UpstreamTls(ClientConfig);

impl UpstreamTls {
    /// The public web PKI.
    pub fn public_roots() -> Result<Self, String> {
        Self::with_roots(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }

    /// Only the CA certificates in `pem` (one or more PEM `CERTIFICATE`
    /// sections; anything else in the file is ignored).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE in it".into());
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(config))
    }

    /// A client for `http://` upstreams and `https://` ones verified
    /// against this trust.
    pub fn client(&self) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // The TLS layer above decides the scheme; this one only connects.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(self.0.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        UpstreamClient(Arc::new(PerThreadPools {
            connector,
            pools: ThreadLocal::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = include_bytes!("../../mandate/tests/fixtures/tls/ca.pem");

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(UpstreamTls::from_pem(CA).is_ok());
        assert!(UpstreamTls::from_pem(b"")
            .unwrap_err()
            .contains("no CERTIFICATE"));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(UpstreamTls::from_pem(key_only).is_err());
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(UpstreamTls::from_pem(garbage)
            .unwrap_err()
            .contains("not a usable"));
    }
}
