//! Blob integrity on the way through: a stream of upstream bytes hashed as
//! it passes, its last chunk held back until the hash is checked. Used by
//! every path that serves bytes not yet verified (`blob`'s stream-through,
//! and a `blobstore` reader continuing from upstream).

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use crate::metrics::METRICS;
use crate::oci::Digest;
use crate::response::BoxError;
use crate::upstream::UpstreamError;

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
                // An empty chunk (an HTTP/2 DATA frame that only ends the
                // stream) must not take the held chunk's place: that would
                // release the blob's last bytes before the digest is checked.
                Some(Ok(chunk)) if chunk.is_empty() => {}
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

    /// Found by reading for the fuzz target `integrity`: trailing empty
    /// chunks used to push the last real chunk out before the check.
    #[tokio::test]
    async fn trailing_empty_chunks_do_not_release_a_wrong_blobs_last_bytes() {
        let d = Digest::of(b"hello world");
        let (out, err) =
            collect(verify_stream(chunks(&[b"hello", b" ", b"WORLD", b"", b""]), d.clone(), Some(11))).await;
        assert_eq!(out, b"hello ", "the client must never hold the whole wrong blob");
        assert!(err.unwrap().contains("upstream sent sha256:"));
        let (out, err) = collect(verify_stream(chunks(&[b"hello world", b""]), d, Some(11))).await;
        assert_eq!((out.as_slice(), err), (&b"hello world"[..], None));
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
