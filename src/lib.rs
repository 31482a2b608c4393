//! sigmirror: a fail-closed, caching pull-through mirror for OCI registries.
//!
//! # Flow of one manifest request
//!
//! 1. **route** (`oci::parse_route`): the path is parsed from the right into
//!    a `Route`; `?ns=` names the registry (`server::route_request`).
//! 2. **resolve** (`config::Config::upstream_for`): `ns` must name a
//!    configured upstream, or nothing is contacted.
//! 3. **fetch manifest** (`upstream::UpstreamClient::manifest`): bounded,
//!    hashed, and checked against the digest asked for.
//! 4. **find signatures** (`policy::Policy::evaluate`): cosign `.sig` tags,
//!    cosign v3 Sigstore bundle referrers, and Notation referrers, fetched
//!    through the same upstream client.
//! 5. **verify by policy** (`verify::cosign`, `verify::bundle`,
//!    `verify::notation`, `policy::combine`): a `Verdict` value, allow or deny
//!    with a reason.
//! 6. **cache the verdict** (`cache::VerdictCache`): keyed by registry,
//!    repository, digest and policy fingerprint; one verification per key.
//! 7. **respond** (`server::serve_manifest`, `error::Error::into_response`):
//!    the manifest bytes as upstream sent them, or an OCI `DENIED` error
//!    whose message is also the decision log line.
//!
//! Blobs skip 4–6: they are streamed and hashed on the way
//! (`server::verify_stream`), and a mismatch aborts the response.

pub mod cache;
pub mod config;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod oci;
pub mod pins;
pub mod policy;
pub mod server;
pub mod upstream;
pub mod verify;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{Config, Problems};
use crate::policy::PolicySet;
use crate::server::{App, State};

/// Loads and validates a config file and everything it points at. Returns
/// every problem at once.
pub fn load(path: &std::path::Path) -> Result<State, Problems> {
    let (config, mut checker) = Config::load(path)?;
    let policies = PolicySet::build(&config.raw, &mut checker);
    if !checker.problems.is_empty() {
        return Err(Problems(checker.problems));
    }
    State::new(config, policies).map_err(|e| {
        checker.problem("upstream", e, "check ca_file and the upstream url");
        Problems(checker.problems)
    })
}

/// Serves until `shutdown` completes, then lets open connections finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tls = match &app.state().config.tls {
        Some((cert, key)) => Some(tls_acceptor(&cert.bytes, &key.bytes)?),
        None => None,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| server::handle(app.clone(), req));
        let builder = auto::Builder::new(TokioExecutor::new());
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
        }
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
    }
    Ok(())
}

fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])?
        .ok_or_else(|| anyhow::anyhow!("tls_key holds no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
