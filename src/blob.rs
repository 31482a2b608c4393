//! Blobs: served from the disk cache, or fetched once from upstream while
//! the first clients stream the download, hashed on the way.
//!
//! A blob carries no signature of its own; it is only as good as its digest.
//! From the cache it is served as written (re-hashed once after a restart,
//! see `blobstore`). Straight from upstream (no cache, or a cache that cannot
//! be written), the last chunk is held back until the hash is checked, so a
//! client never holds a complete wrong blob.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::blobstore::{file_range, BlobStore, Cached, Fetch};
use crate::error::{Error, Resource};
use crate::integrity::verify_stream;
use crate::metrics::METRICS;
use crate::oci::Digest;
use crate::response::{full, Body, BoxError};
use crate::upstream::UpstreamClient;

/// One blob request, after `server::blob_guard` allowed it.
pub struct BlobRequest<'a> {
    pub up: &'a Arc<UpstreamClient>,
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub head: bool,
    /// The request's headers, for `Range`.
    pub headers: &'a HeaderMap,
}

pub async fn serve(store: Option<&Arc<BlobStore>>, req: BlobRequest<'_>) -> Result<Response<Body>, Error> {
    let Some(store) = store else { return pass_through(&req).await };
    let cached = store.open_cached(req.digest).await;
    METRICS.cache_lookup("blob", cached.is_some());
    if let Some(cached) = cached {
        return from_cache(cached, &req);
    }
    if req.head {
        // A HEAD does not start a download: containerd HEADs before it GETs,
        // and the GET is what is worth one upstream fetch.
        return pass_through(&req).await;
    }
    let download = match store.fetch(req.up, req.repo, req.digest) {
        Fetch::Shared(d) => d,
        Fetch::PassThrough => return pass_through(&req).await,
    };
    let len = download.started().await.map_err(|e| Error::upstream(Resource::Blob, e))?;
    if req.headers.contains_key(header::RANGE) {
        // A range is served from the finished, verified file, never from
        // bytes still unchecked. A cache that gave up cannot answer ranges;
        // the whole blob is a valid answer to a Range request (RFC 9110).
        if download.finished().await {
            if let Some(cached) = store.open_cached(req.digest).await {
                return from_cache(cached, &req);
            }
        }
    }
    let body = download.reader(req.up.clone(), req.repo.to_string()).into_stream();
    Ok(ok_response(req.digest, len).body(stream_body(body)).expect("valid headers"))
}

/// A cached blob: whole, one range (`206`), or `416` for a range it cannot
/// satisfy. One range only: a client resuming a layer asks for one.
fn from_cache(cached: Cached, req: &BlobRequest<'_>) -> Result<Response<Body>, Error> {
    let size = cached.size;
    let range = match req.headers.get(header::RANGE) {
        None => None,
        Some(v) => match v.to_str().ok().map(http_range_header::parse_range_header) {
            Some(Ok(parsed)) => match parsed.validate(size) {
                Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                _ => return Ok(unsatisfiable(size)),
            },
            _ => return Ok(unsatisfiable(size)),
        },
    };
    let (start, end) = match &range {
        Some(r) => (*r.start(), *r.end() + 1),
        None => (0, size),
    };
    let mut b = ok_response(req.digest, Some(end - start)).header(header::ACCEPT_RANGES, "bytes");
    if range.is_some() {
        b = b
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1));
    }
    let body =
        if req.head { full(Bytes::new()) } else { stream_body(file_range(cached.file, start, end, cached.guard)) };
    Ok(b.body(body).expect("valid headers"))
}

fn unsatisfiable(size: u64) -> Response<Body> {
    Response::builder()
        .status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::CONTENT_RANGE, format!("bytes */{size}"))
        .body(full(Bytes::new()))
        .expect("valid headers")
}

fn ok_response(digest: &Digest, len: Option<u64>) -> http::response::Builder {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", digest.as_str());
    if let Some(n) = len {
        b = b.header(header::CONTENT_LENGTH, n);
    }
    b
}

fn stream_body(s: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static) -> Body {
    BodyExt::boxed_unsync(StreamBody::new(s.map(|r| r.map(Frame::data))))
}

/// Straight from upstream, hashed on the way: no cache, a HEAD, or a cache
/// that cannot be written.
async fn pass_through(req: &BlobRequest<'_>) -> Result<Response<Body>, Error> {
    let blob = req.up.blob(req.repo, req.digest, req.head).await.map_err(|e| Error::upstream(Resource::Blob, e))?;
    let body = if req.head {
        full(Bytes::new())
    } else {
        stream_body(verify_stream(blob.body, req.digest.clone(), blob.content_length))
    };
    Ok(ok_response(req.digest, blob.content_length).body(body).expect("valid headers"))
}
