//! sigmirror: a fail-closed, caching pull-through mirror for OCI registries.
//!
//! # Flow of one manifest request
//!
//! 1. **route** (`server::handle`, `oci::parse_route`): the path is parsed
//!    from the right into a `Route`; `?ns=` names the registry.
//! 2. **resolve the upstream** (`mirror::Mirror::upstream`): `ns` must name a
//!    configured upstream, or nothing is contacted.
//! 3. **scope guard** (`server::scope_guard`, `policy::PolicySet::select`):
//!    the most specific policy governs the repository; none means refuse
//!    before anything is asked upstream.
//! 4. **immutable tags** (`pins::guard::TagGuard::resolve`): a pinned tag is
//!    served from its pin; an unpinned one is pinned once it verifies.
//! 5. **fetch the manifest** (`mirror::Mirror::pull`, `mirror::Mirror::resolve`,
//!    `upstream::UpstreamClient::manifest`): bounded, hashed, and checked
//!    against the digest asked for; cached by digest (`cache::ManifestCache`);
//!    a mutable tag re-resolved at most every `tag_ttl_secs`
//!    (`cache::TagCache`); concurrent identical upstream requests sent once
//!    (`coalesce`). While upstream is down, cached verified answers serve for
//!    `stale_if_error_secs` and the rest is refused
//!    (`mirror::refuse_unverifiable`).
//! 6. **decide** (`mirror::Mirror::decide` → `policy::Policy::evaluate`):
//!    signatures are found (cosign `.sig` tags, cosign v3 bundle referrers,
//!    Notation referrers) and verified (`verify::cosign`, `verify::bundle`,
//!    `verify::notation`) into a `Verdict`, cached per (registry, repository,
//!    digest, policy fingerprint) in `cache::VerdictCache`.
//! 7. **respond** (`server::respond`, `response`): the manifest bytes as
//!    upstream sent them, or a refusal through `audit::refuse`, which logs the
//!    decision line first; `error::Error::into_response` is the one place an
//!    error becomes an OCI answer.
//!
//! Blobs skip 4–6: `server::blob_guard` serves only blobs of manifests the
//! policy allowed (`cache::AllowedBlobs`, filled by `decide`), and
//! `blob::serve` streams and hashes them, aborting on a mismatch. Tag lists and referrers (`listing`) are
//! parsed, checked and re-serialised, never relayed.

pub mod app;
pub mod audit;
pub mod blob;
pub mod cache;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod pins;
pub mod policy;
pub mod response;
pub mod server;
pub mod upstream;
pub mod verify;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::{Config, Problems};
use crate::mirror::Mirror;
use crate::policy::PolicySet;

/// Loads and validates a config file and everything it points at. Returns
/// every problem at once.
pub fn load(path: &std::path::Path) -> Result<Mirror, Problems> {
    let (config, section, mut checker) = Config::load(path)?;
    let policies = PolicySet::build(&section, &mut checker);
    if let Some(f) = &config.pins_file {
        if let Err(e) = pins::PinsFile::from_json(&f.bytes) {
            checker.problem(
                "pins_file",
                format!("{}: {e}", f.name),
                "fix the file, or export one with `sigmirror pins export`",
            );
        }
    }
    if !checker.problems.is_empty() {
        return Err(Problems(checker.problems));
    }
    Mirror::new(config, policies).map_err(|e| {
        checker.problem("upstream", e, "check ca_file and the upstream url");
        Problems(checker.problems)
    })
}

/// Serves until `shutdown` completes, then lets open connections finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tls = match &app.mirror().config.tls {
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
