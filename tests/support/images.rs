//! Tiny real images ([`build_image`], [`build_index`], [`Pushed`]) and the
//! registry v2 push protocol over plain HTTP ([`push_image`], [`push_index`],
//! [`push_multiarch`], [`push_blob`], [`push_raw_manifest`]).

use super::{http, http_body, sha256_digest, OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST};

/// A pushed manifest (image or index) and what it is made of.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub size: u64,
    /// Empty for an index.
    pub layer_digests: Vec<String>,
    /// The bytes of each layer, same order as `layer_digests`.
    pub layers: Vec<Vec<u8>>,
    /// Empty for an index.
    pub config_digest: String,
    pub config: Vec<u8>,
    /// `(os, architecture)` for an image; `("", "")` for an index.
    pub platform: (String, String),
    /// For an index: the platform manifests it lists.
    pub children: Vec<Pushed>,
    /// The file the layer contains (`hello-<seed>.txt`) and its contents.
    pub file: (String, Vec<u8>),
}

/// A POSIX ustar archive with a single regular file.
pub fn tar_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let put_octal = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    put_octal(&mut h, 100, 8, 0o644); // mode
    put_octal(&mut h, 108, 8, 0); // uid
    put_octal(&mut h, 116, 8, 0); // gid
    put_octal(&mut h, 124, 12, contents.len() as u64); // size
    put_octal(&mut h, 136, 12, 1_700_000_000); // mtime
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let chk = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(chk.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(contents);
    let pad = (512 - contents.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// An OCI image manifest with one config and one uncompressed tar layer.
fn one_layer_manifest(config_digest: &str, config: &[u8], layer_digest: &str, layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() }]
    }))
    .unwrap()
}

/// A tiny real image: one uncompressed tar layer holding `hello-<seed>.txt`.
pub fn build_image(seed: &str, arch: &str) -> Pushed {
    let file_name = format!("hello-{seed}.txt");
    let contents = format!("hello from {seed} on linux/{arch}\n").into_bytes();
    let layer = tar_one_file(&file_name, &contents);
    let layer_digest = sha256_digest(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/"], "Cmd": [format!("/{file_name}")], "Labels": { "seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": format!("sigmirror test harness, seed {seed}") }]
    }))
    .unwrap();
    let config_digest = sha256_digest(&config);
    let manifest = one_layer_manifest(&config_digest, &config, &layer_digest, &layer);
    Pushed {
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
        manifest,
        media_type: OCI_MANIFEST.into(),
        layer_digests: vec![layer_digest],
        layers: vec![layer],
        config_digest,
        config,
        platform: ("linux".into(), arch.into()),
        children: vec![],
        file: (file_name, contents),
    }
}

/// Uploads a blob (monolithic POST + PUT); returns its digest.
pub fn push_blob(host: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let head = http("HEAD", &format!("http://{host}/v2/{repo}/blobs/{digest}"), &[]);
    if head.status == 200 {
        return digest;
    }
    let start = http_body("POST", &format!("http://{host}/v2/{repo}/blobs/uploads/"), &[], &[]);
    assert_eq!(start.status, 202, "start upload to {repo}: {}", start.text());
    let location = start.header("location").expect("upload Location").to_string();
    let location = if location.starts_with('/') { format!("http://{host}{location}") } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http_body(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(put.status, 201, "finish upload of {digest} to {repo}: {}", put.text());
    digest
}

/// PUTs a manifest by tag or digest; returns the digest the registry reports.
pub fn push_raw_manifest(host: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
    let r = http_body(
        "PUT",
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    );
    assert_eq!(r.status, 201, "push manifest {repo}:{reference}: {}", r.text());
    let digest = r.header("docker-content-digest").expect("Docker-Content-Digest").to_string();
    assert_eq!(digest, sha256_digest(bytes), "registry changed the manifest bytes");
    digest
}

/// Pushes blobs and manifest of a built image; `tag` None pushes by digest only.
pub fn push_built(host: &str, repo: &str, tag: Option<&str>, image: &Pushed) {
    for layer in &image.layers {
        push_blob(host, repo, layer);
    }
    if !image.config.is_empty() {
        push_blob(host, repo, &image.config);
    }
    push_raw_manifest(host, repo, tag.unwrap_or(&image.digest), &image.media_type, &image.manifest);
}

/// Pushes a linux/amd64 image as `repo:tag`. Different seeds give different digests.
pub fn push_image(host: &str, repo: &str, tag: &str, seed: &str) -> Pushed {
    push_image_for(host, repo, tag, seed, "amd64")
}

pub fn push_image_for(host: &str, repo: &str, tag: &str, seed: &str, arch: &str) -> Pushed {
    let image = build_image(seed, arch);
    push_built(host, repo, Some(tag), &image);
    image
}

/// Builds an OCI index listing `children` (each with its own platform).
pub fn build_index(children: &[Pushed]) -> Pushed {
    let manifests: Vec<_> = children
        .iter()
        .map(|c| {
            serde_json::json!({
                "mediaType": c.media_type,
                "digest": c.digest,
                "size": c.size,
                "platform": { "os": c.platform.0, "architecture": c.platform.1 }
            })
        })
        .collect();
    let manifest =
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }))
            .unwrap();
    Pushed {
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
        manifest,
        media_type: OCI_INDEX.into(),
        layer_digests: vec![],
        layers: vec![],
        config_digest: String::new(),
        config: vec![],
        platform: (String::new(), String::new()),
        children: children.to_vec(),
        file: (String::new(), vec![]),
    }
}

/// Pushes each platform manifest (by digest) and then the index as `repo:tag`.
pub fn push_index(host: &str, repo: &str, tag: &str, children: &[Pushed]) -> Pushed {
    for c in children {
        push_built(host, repo, None, c);
    }
    let index = build_index(children);
    push_raw_manifest(host, repo, tag, OCI_INDEX, &index.manifest);
    index
}

/// A linux/amd64 + linux/arm64 index as `repo:tag`; platform images in `children`.
pub fn push_multiarch(host: &str, repo: &str, tag: &str, seed: &str) -> Pushed {
    let children = vec![build_image(&format!("{seed}-amd64"), "amd64"), build_image(&format!("{seed}-arm64"), "arm64")];
    push_index(host, repo, tag, &children)
}

/// A real image whose one layer is a tar holding `bytes` pseudo-random bytes
/// (deterministic per seed), for tests where blob size matters.
pub fn build_big_image(seed: &str, bytes: usize) -> Pushed {
    build_layered_image(seed, 1, bytes)
}

/// A real image of `layers` layers, each a tar with one file of `bytes`
/// pseudo-random bytes (deterministic per seed and layer). `file` is the
/// first layer's file.
pub fn build_layered_image(seed: &str, layers: usize, bytes: usize) -> Pushed {
    let mut image = build_image(seed, "amd64");
    let mut built = Vec::new();
    for i in 0..layers {
        let mut state = sha256_digest(format!("{seed}/{i}").as_bytes()).into_bytes();
        let mut contents = Vec::with_capacity(bytes + 64);
        while contents.len() < bytes {
            state = sha256_digest(&state).into_bytes();
            contents.extend_from_slice(&state[7..]);
        }
        contents.truncate(bytes);
        let name = if i == 0 { image.file.0.clone() } else { format!("layer-{i}-{seed}.bin") };
        built.push((name, contents));
    }
    let tars: Vec<Vec<u8>> = built.iter().map(|(name, contents)| tar_one_file(name, contents)).collect();
    let digests: Vec<String> = tars.iter().map(|t| sha256_digest(t)).collect();
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["rootfs"]["diff_ids"] = serde_json::json!(digests);
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256_digest(&config);
    let descriptors: Vec<serde_json::Value> = tars
        .iter()
        .zip(&digests)
        .map(|(t, d)| serde_json::json!({ "mediaType": OCI_LAYER_TAR, "digest": d, "size": t.len() }))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": descriptors
    }))
    .unwrap();
    image.digest = sha256_digest(&manifest);
    image.size = manifest.len() as u64;
    image.manifest = manifest;
    image.layer_digests = digests;
    image.layers = tars;
    image.config_digest = config_digest;
    image.config = config;
    image.file = built.swap_remove(0);
    image
}
