//! sigmirror: a fail-closed, caching pull-through mirror for OCI registries.
//!
//! # Flow of one manifest request
//!
//! 1. **route** (`server::handle`, `oci::parse_route`): the path is parsed
//!    from the right into a `Route`; `?ns=` names the registry.
//! 2. **resolve the upstream** (`mirror::Mirror::upstream`): `ns` must name a
//!    configured upstream, or nothing is contacted.
//! 3. **scope guard** (`server::scope_guard`, `policy::PolicySet::select`):
//!    the most specific policy governs the repository (a policy's `exclude`
//!    takes it out of that policy); none means refuse before anything is
//!    asked upstream.
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
//!    `verify::notation`), combined by `require` (`policy::verdict`), then
//!    required attestations (`.att` layers and bundle referrers) verified
//!    (`verify::attestation`) and their CEL conditions evaluated
//!    (`policy::attestation`, `policy::condition`) into a `Verdict`, cached
//!    per (registry, repository, digest, policy fingerprint) in
//!    `cache::VerdictCache`.
//! 7. **respond** (`server::respond`, `response`): the manifest bytes as
//!    upstream sent them, or a refusal through `audit::refuse`. Either way
//!    `audit::log_decision` writes the decision's JSON audit line first;
//!    `error::Error::into_response` is the one place an error becomes an OCI
//!    answer.
//!
//! Around every request, `server::handle` counts it by route and status
//! class (`metrics`) and sets the audit scope (the client address). A TLS
//! listener, with client certificates when `client_ca` is set, is built by
//! `tls::acceptor`.
//!
//! Before any of this, `run` admits each connection through
//! `connection::Gate` (`[limits] max_connections`; over it, `503`), and
//! `connection::serve` bounds its request heads in time and size and closes
//! it when idle. A manifest request has one deadline
//! (`manifest_timeout_secs`, in `server`), and every upstream request takes
//! one of `max_upstream_fetches` slots (`limits::FetchSlots`) until its body
//! is read. Each limit hit is counted (`limits::count_hit`).
//!
//! Blobs skip 4–6: `server::blob_guard` serves only blobs of manifests the
//! policy allowed (`allowed_blobs::AllowedBlobs`, filled by `decide`, kept across
//! reloads and, through its journal, restarts), and
//! `blob::serve` streams and hashes them, aborting on a mismatch. Tag lists and referrers (`listing`) are
//! parsed, checked and re-serialised, never relayed.
//!
//! # Life of the process
//!
//! `load` reads the config and every file it names once into validated
//! types (`config`), builds the verifiers from them (`policy`, `verify`) and
//! the TLS acceptor, and reports every problem at once. `app::App::start`
//! opens the data directory and pin store before the listening line.
//! `App` holds the current `Mirror` behind an atomic swap: `reload::watch`
//! reloads on SIGHUP and on any change of a watched file, swapping in a new
//! mirror (with empty caches) only when everything validates; requests in
//! flight keep the mirror they started with. `/healthz` and `/readyz`
//! (`health`) report liveness, readiness and a stale config; on SIGTERM
//! `run` stops accepting and drains for `drain_secs`. `admin::run` serves
//! the optional `admin_listen`: metrics, health, and the pin store of the
//! running process for the `pins` CLI (`pins::cli`, `pins::remote`).
//! `logging` formats the process log (`log_format`).

pub mod admin;
pub mod allowed_blobs;
pub mod app;
pub mod audit;
pub mod blob;
pub mod blobstore;
pub mod cache;
pub mod coalesce;
pub mod config;
pub mod config_text;
pub mod connection;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod integrity;
pub mod limits;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod pins;
pub mod policy;
pub mod reload;
pub mod response;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod verify;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::either::Either;

use crate::app::App;
use crate::config::{Config, Problems};
use crate::mirror::Mirror;
use crate::policy::PolicySet;

const TLS_FIX: &str = "point tls_cert at the PEM certificate chain (leaf first) and tls_key at its private key";

/// Stack for each runtime worker. One manifest request polls a deep chain of
/// futures (route, tag guard, coalesced upstream fetch, evidence, cosign
/// bundle, X.509 path), and in unoptimised builds their frames outgrow
/// tokio's 2 MiB default. 8 MiB is address space, touched only as used.
const WORKER_STACK_BYTES: usize = 8 << 20;

/// The runtime `sigmirror` runs on (tests and benches use it too).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(WORKER_STACK_BYTES).build()
}

/// Loads and validates a config file and everything it points at. Returns
/// every problem at once.
pub fn load(path: &std::path::Path) -> Result<Mirror, Problems> {
    load_watching(path).0
}

/// [`load`], and every path it read or tried to read (the config file
/// first): what a reload watches, even when the config was rejected.
pub fn load_watching(path: &std::path::Path) -> (Result<Mirror, Problems>, Vec<std::path::PathBuf>) {
    let (config, section, mut checker) = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(problems) => return (Err(problems), vec![path.to_path_buf()]),
    };
    let watched = config.watched.clone();
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
    // The client CA on its own first, so its problem is reported even when
    // the certificate or key has one too.
    let ca_ok = match config.client_ca.as_ref().map(tls::client_verifier) {
        Some(Err(e)) => {
            let fix = "point at a PEM bundle of the CA certificates that issue client certificates";
            checker.problem("client_ca", e.to_string(), fix);
            false
        }
        _ => true,
    };
    let tls = match tls::TlsFiles::of(&config).filter(|_| ca_ok) {
        Some(files) => match tls::acceptor(&files) {
            Ok(a) => Some(a),
            Err(e) => {
                // Cert and client_ca errors name their file; a key that does
                // not fit the certificate is about both.
                let (key, what, fix) = match &e {
                    tls::TlsError::Cert(_) => ("tls_cert", e.to_string(), TLS_FIX),
                    tls::TlsError::ClientCa(_) => (
                        "client_ca",
                        e.to_string(),
                        "point at a PEM bundle of the CA certificates that issue client certificates",
                    ),
                    tls::TlsError::Key(_) | tls::TlsError::Rustls(_) => {
                        ("tls_key", format!("{} and {}: {e}", files.cert.name, files.key.name), TLS_FIX)
                    }
                };
                checker.problem(key, what, fix);
                None
            }
        },
        None => None,
    };
    if !checker.problems.is_empty() {
        return (Err(Problems(checker.problems)), watched);
    }
    let warnings = std::mem::take(&mut checker.warnings);
    let mirror = Mirror::new(config, policies).map_err(|e| {
        checker.problem("upstream", e, "check ca_file and the upstream url");
        Problems(checker.problems)
    });
    (mirror.map(|m| Mirror { tls, warnings, ..m }), watched)
}

/// The next connection. Accept errors (out of file descriptors and the
/// like) are logged and retried after a pause: the listener keeps serving.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!("accept on {:?} failed: {e}", listener.local_addr().ok());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves until `shutdown` completes, then drains: stops accepting, turns
/// `/readyz` not-ready, and gives requests in flight `drain_secs` to finish.
/// Each connection is served under `[limits]` (`connection`); the
/// connection count is bounded by `max_connections` as it was at start.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let gate = connection::Gate::new(app.mirror().config.limits.max_connections);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let admission = gate.admit();
        if let connection::Admission::Close = admission {
            tracing::debug!(%peer, "connection closed at once: over max_connections and the 503 answers");
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Per connection, so a reloaded certificate or limit applies to new
        // connections.
        let mirror = app.mirror();
        let (tls, limits) = (mirror.tls.clone(), mirror.config.limits.clone());
        drop(mirror);
        // Taken now, so the drain waits for a connection still in its handshake.
        let watcher = graceful.watcher();
        let (app, max) = (app.clone(), gate.max());
        tokio::spawn(async move {
            let stream = match tls {
                None => Either::Left(stream),
                // A handshake is part of what a client must send before its
                // request head, so it gets the same time.
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => Either::Right(Box::new(s)),
                    Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => {
                        limits::count_hit("header_read_timeout_secs");
                        return tracing::debug!(%peer, "TLS handshake timed out");
                    }
                },
            };
            match admission {
                connection::Admission::Serve(_permit) => connection::serve(stream, app, peer, limits, watcher).await,
                connection::Admission::Refuse(_permit) => connection::refuse(stream, max, limits, peer).await,
                connection::Admission::Close => {}
            }
        });
    }
    // Not ready first, then no new connections: a load balancer that still
    // sends one gets a refused connection and retries elsewhere.
    app.health.start_draining();
    drop(listener);
    let drain = app.mirror().config.drain;
    tracing::info!("draining: no new connections; requests in flight have {} s to finish", drain.as_secs());
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!("requests still in flight after drain_secs = {}; closing", drain.as_secs()),
    }
    Ok(())
}
