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
use sha2::{Digest as _, Sha256};

use crate::blobstore::{file_range, BlobStore, Cached, Fetch};
use crate::error::{Error, Resource};
use crate::metrics::METRICS;
use crate::oci::Digest;
use crate::response::{full, Body, BoxError};
use crate::upstream::{UpstreamClient, UpstreamError};

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

#[derive(Debug, thiserror::Error)]
#[error("blob {expected}: {what}; response aborted")]
pub struct BlobIntegrityError {
    expected: Digest,
    what: String,
}

/// Streams a blob while hashing it, holding back the last chunk until the
/// hash is checked. On a mismatch the stream ends in an error, which makes
/// hyper abort the response, so the client never holds a complete wrong blob.
/// Memory stays at about one chunk whatever the blob size.
pub fn verify_stream(
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
    expected: Digest,
    content_length: Option<u64>,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
    verify_stream_from(inner, expected, content_length, Sha256::new())
}

/// [`verify_stream`] for the rest of a blob whose start was already sent
/// and fed to `hasher`. `content_length` counts the rest only.
pub fn verify_stream_from(
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
    expected: Digest,
    content_length: Option<u64>,
    hasher: Sha256,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
    struct St {
        inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
        hasher: Sha256,
        held: Option<Bytes>,
        total: u64,
        expected: Digest,
        content_length: Option<u64>,
        done: bool,
    }
    let st = St { inner, hasher, held: None, total: 0, expected, content_length, done: false };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    st.total += chunk.len() as u64;
                    if st.content_length.is_some_and(|n| st.total > n) {
                        st.done = true;
                        let e = BlobIntegrityError {
                            expected: st.expected.clone(),
                            what: "more bytes than Content-Length".into(),
                        };
                        tracing::warn!("{e}");
                        return Some((Err(e.into()), st));
                    }
                    if let Some(prev) = st.held.replace(chunk) {
                        return Some((Ok(prev), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    tracing::warn!(blob = %st.expected, detail = ?e.detail(), "upstream blob stream failed: {e}");
                    return Some((Err(e.into()), st));
                }
                None => {
                    st.done = true;
                    let hash: [u8; 32] = std::mem::take(&mut st.hasher).finalize().into();
                    let actual = Digest::from_sha256(&hash);
                    if actual != st.expected {
                        METRICS.blob_digest_mismatches.inc();
                        let e = BlobIntegrityError {
                            expected: st.expected.clone(),
                            what: format!("upstream sent {actual}"),
                        };
                        tracing::warn!("{e}");
                        return Some((Err(e.into()), st));
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(s: impl Stream<Item = Result<Bytes, BoxError>>) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn chunks(parts: &[&'static [u8]]) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>> {
        let v: Vec<Result<Bytes, UpstreamError>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn a_correct_blob_streams_through_whole() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verify_stream(chunks(&[b"hello", b" ", b"world"]), d, Some(11))).await;
        assert_eq!(out, b"hello world");
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn a_wrong_blob_never_reaches_the_client_complete() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verify_stream(chunks(&[b"hello", b" ", b"WORLD"]), d.clone(), Some(11))).await;
        // The last chunk is held back, so the client got less than the blob.
        assert_eq!(out, b"hello ");
        assert!(err.unwrap().contains(&format!("blob {d}: upstream sent sha256:")));
        let (out, err) = collect(verify_stream(chunks(&[b"tampered"]), d, None)).await;
        assert!(out.is_empty());
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn a_blob_longer_than_its_content_length_is_cut_off() {
        let d = Digest::of(b"abc");
        let (_, err) = collect(verify_stream(chunks(&[b"abc", b"def"]), d, Some(3))).await;
        assert!(err.unwrap().contains("more bytes than Content-Length"));
    }

    #[tokio::test]
    async fn an_empty_blob_verifies() {
        let (out, err) = collect(verify_stream(chunks(&[]), Digest::of(b""), Some(0))).await;
        assert!(out.is_empty() && err.is_none());
    }
}
