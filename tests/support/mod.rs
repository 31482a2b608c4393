//! Shared integration-test harness: real processes on 127.0.0.1, all of them
//! killed on `Drop`, all temporary state in `TempDir`s, every wait bounded.
//! Tests see one flat namespace (`use support::*`); the parts live in:
//!
//! - `http.rs`: [`http`] / [`try_http`], a raw HTTP/1.1 client that reports
//!   truncated bodies, and its [`Response`].
//! - `registry.rs`: [`Registry`], the real `docker-registry` (distribution 2.8)
//!   on a free port.
//! - `images.rs`: image builders and push helpers ([`build_image`],
//!   [`push_image`], [`push_index`], [`push_multiarch`], [`push_blob`],
//!   [`push_raw_manifest`]) over the registry v2 push protocol; [`Pushed`].
//! - `mirror.rs`: [`Sigmirror`], the real binary under test, its stderr kept
//!   in a log file; [`mirror_config`] and [`policy`] write its config.
//! - `inprocess.rs`: [`InProcess`], the same server run inside the test
//!   process, for tests that only look at HTTP answers.
//! - `containerd.rs`: [`Containerd`], a private containerd with its own root,
//!   state and socket; [`hosts_dir`].
//! - `referrers.rs`: [`attach_in`], Sigstore bundles pushed as OCI referrers
//!   with the tag index; [`referrer`], [`index_of`].
//! - `mock.rs`: [`MockUpstream`], a scripted registry for faults a real one
//!   cannot produce; [`Reply`].
//!
//! `signing.rs` and `postgres.rs` are not part of this module: tests that need
//! them include them with `#[path = "support/…"] mod …;`.
//!
//! Everything here is blocking; it is safe to call from `#[test]` and from
//! multi-threaded `#[tokio::test]`s.
#![allow(dead_code)]

mod containerd;
mod http;
mod images;
mod inprocess;
mod mirror;
mod mock;
mod referrers;
mod registry;

// Not every test binary uses every part.
#[allow(unused_imports)]
pub use self::http::*;
#[allow(unused_imports)]
pub use containerd::*;
#[allow(unused_imports)]
pub use images::*;
#[allow(unused_imports)]
pub use inprocess::*;
#[allow(unused_imports)]
pub use mirror::*;
#[allow(unused_imports)]
pub use mock::*;
#[allow(unused_imports)]
pub use referrers::*;
#[allow(unused_imports)]
pub use registry::*;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// What containerd sends as `Accept` on manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `f` every `every` until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let max_tries = (timeout.as_millis() / every.as_millis().max(1)) as usize + 2;
    for _ in 0..max_tries {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(every);
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Kills (SIGKILL) and reaps a child; ignores "already exited".
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
