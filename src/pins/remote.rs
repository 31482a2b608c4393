//! The `pins` CLI's way into a running server: the admin API on
//! `admin_listen` (see `admin.rs` for the endpoints). Same operations and
//! types as [`PinStore`](super::PinStore), so the CLI does not care which it
//! has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ImportReport, MoveEvent, Pin, PinsFile};
use crate::admin::{ForgetRequest, MAX_IMPORT_BYTES};

/// Answers come from loopback; a server that takes longer is stuck.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Nothing listens there: the server is not running.
    #[error("nothing answers at {0}")]
    Unreachable(String),
    #[error("admin API {url}: {message}")]
    Http { url: String, status: u16, message: String },
    #[error("admin API {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("admin API {url}: unexpected answer: {source}")]
    Decode { url: String, source: serde_json::Error },
    #[error("admin API {url}: {message}")]
    NotSigmirror { url: String, message: String },
}

pub struct AdminClient {
    base: String,
    http: reqwest::Client,
    /// `Authorization: Bearer …`, from the server's `<data_dir>/admin.token`.
    token: String,
}

impl AdminClient {
    /// A client for the admin API at `base` (`http://host:port`), with the
    /// server's token.
    pub fn new(base: &str, token: String) -> AdminClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a client with no TLS roots or proxy to load builds");
        AdminClient { base: base.trim_end_matches('/').to_string(), http, token }
    }

    /// The URL to reach a server's `admin_listen` from the same host: an
    /// unspecified address (`0.0.0.0`, `[::]`) is reached on loopback.
    pub fn url_for(addr: SocketAddr) -> String {
        let ip = match addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, addr.port()))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether a sigmirror answers there; `Unreachable` when nothing listens.
    pub async fn probe(&self) -> Result<(), RemoteError> {
        let url = format!("{}/healthz", self.base);
        let body = self.send(self.http.get(&url), &url).await?;
        if body.as_ref() != b"ok\n" {
            let message = "what answers there is not sigmirror's admin listener".to_string();
            return Err(RemoteError::NotSigmirror { url, message });
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Pin>, RemoteError> {
        self.get("/admin/pins").await
    }

    pub async fn list_moved(&self) -> Result<Vec<(Pin, Vec<MoveEvent>)>, RemoteError> {
        self.get("/admin/pins/moved").await
    }

    pub async fn moves(&self) -> Result<Vec<MoveEvent>, RemoteError> {
        self.get("/admin/pins/moves").await
    }

    pub async fn export(&self) -> Result<PinsFile, RemoteError> {
        self.get("/admin/pins/export").await
    }

    pub async fn import(&self, file: &PinsFile) -> Result<ImportReport, RemoteError> {
        self.post("/admin/pins/import", file.to_json().into_bytes()).await
    }

    /// `Ok(false)` when the tag had no pin.
    pub async fn forget(&self, registry: &str, repository: &str, tag: &str) -> Result<bool, RemoteError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            forgotten: bool,
        }
        let req = ForgetRequest { registry: registry.into(), repository: repository.into(), tag: tag.into() };
        let body = serde_json::to_vec(&req).expect("strings serialise");
        self.post::<Answer>("/admin/pins/forget", body).await.map(|a| a.forgotten)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let body = self.send(self.http.get(&url), &url).await?;
        serde_json::from_slice(&body).map_err(|source| RemoteError::Decode { url, source })
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let req = self.http.post(&url).header("content-type", "application/json").body(body);
        let body = self.send(req, &url).await?;
        serde_json::from_slice(&body).map_err(|source| RemoteError::Decode { url, source })
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<bytes::Bytes, RemoteError> {
        let req = req.bearer_auth(&self.token);
        let mut resp = req.send().await.map_err(|source| {
            if source.is_connect() {
                RemoteError::Unreachable(self.base.clone())
            } else {
                RemoteError::Transport { url: url.to_string(), source }
            }
        })?;
        let status = resp.status();
        // Bounded: whatever answers there could send without end.
        let mut body = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|source| RemoteError::Transport { url: url.to_string(), source })?
        {
            if body.len() + chunk.len() > 2 * MAX_IMPORT_BYTES {
                let message = format!("answer over {} bytes", 2 * MAX_IMPORT_BYTES);
                return Err(RemoteError::NotSigmirror { url: url.to_string(), message });
            }
            body.extend_from_slice(&chunk);
        }
        let body = bytes::Bytes::from(body);
        if status.is_success() {
            return Ok(body);
        }
        // The admin API answers errors as {"error": "..."}.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(RemoteError::Http { url: url.to_string(), status: status.as_u16(), message })
    }
}
