#!/usr/bin/env python3
"""Builds fuzz/corpus/<target>/ from the real vectors in tests/vectors/ and config/.

Run from the repository root: python3 fuzz/seeds.py. Every seed is a file (or a piece of one)
that the reference implementations wrote, or a request sigmirror really serves, so the fuzzer
starts from inputs that get deep. Seeds are named by the sha1 of their bytes, as libFuzzer
names what it adds, so rerunning this changes nothing."""

import base64, glob, hashlib, json, os, re, shutil, struct, sys

V = "tests/vectors"
OUT = "fuzz/corpus"
seeds = {}


def add(target, data):
    if isinstance(data, str):
        data = data.encode()
    if 0 < len(data) <= 64 * 1024:
        seeds.setdefault(target, {})[hashlib.sha1(data).hexdigest()] = data


def read(p):
    with open(p, "rb") as f:
        return f.read()


def b64(s):
    if isinstance(s, bytes):
        s = s.decode()
    s = re.sub(r"\s", "", s)
    return base64.b64decode(s + "=" * (-len(s) % 4))


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def der_certs(pem):
    return [b64(m) for m in re.findall(rb"-----BEGIN CERTIFICATE-----(.*?)-----END", pem, re.S) if m]


def chain(flags, certs):
    add("x509_chain", bytes([flags]) + b"".join(certs))


# Routes and queries, as containerd and clients send them, good and hostile.
digest = "sha256:" + "ab" * 32
for r in [
    "/v2/", "/v2", "/v2/library/busybox/manifests/latest?ns=docker.io",
    f"/v2/library/busybox/manifests/{digest}?ns=docker.io", f"/v2/acme/api/blobs/{digest}?ns=ghcr.io",
    "/v2/a/b/c/tags/list?ns=localhost%3A5000&n=10&last=v1", f"/v2/acme/api/referrers/{digest}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson",
    "/v2/library/busybox/manifests/latest?ns=docker.io%2F..%2Fevil", "/v2/Library/busybox/manifests/latest",
    "/v2/a//b/manifests/v1", "/v2/a/../b/manifests/v1", "/v2/a%2Fb/manifests/v1?ns=@evil.com:443",
    "/v2/a/manifests/sha512:" + "ab" * 64, "/metrics", "/healthz", "ghcr.io/acme/api:v1.4.2", "docker.io/library/busybox@" + digest,
]:
    add("route", r)

# Manifests, indexes, tag lists and referrers answers.
for p in glob.glob(f"{V}/**/manifest.json", recursive=True) + glob.glob(f"{V}/**/index.json", recursive=True):
    add("manifest", read(p))
for p in glob.glob(f"{V}/notation/**/blobs/sha256/*", recursive=True):
    b = read(p)
    if b.startswith(b"{") and b"schemaVersion" in b:
        add("manifest", b)
add("manifest", '{"name":"library/busybox","tags":["latest","1.36","v1.0.0-rc1"]}')

# Cosign signature layers (format A) and their simple-signing payloads and Rekor SET bundles.
for p in glob.glob(f"{V}/cosign/containers-image/*/signature-*"):
    raw = read(p)
    add("cosign_layer", raw)
    j = json.loads(raw[raw.index(b"\n") + 1:])
    add("simple_signing", b64(j["payload"]))
    ann = j.get("annotations", {})
    if "dev.sigstore.cosign/bundle" in ann:
        add("rekor", ann["dev.sigstore.cosign/bundle"])
    certs = der_certs(ann.get("dev.sigstore.cosign/certificate", "").encode())
    certs += der_certs(ann.get("dev.sigstore.cosign/chain", "").encode())
    if certs:
        chain(0b01 | (23 << 2), certs)  # checked in 2023 against the vector roots
        chain(0b01 | (40 << 2), certs)
        for c in certs:
            add("der", c)

# Sigstore bundles (format C): the bundle, its in-toto statement, its tlog entry and timestamps.
for p in glob.glob(f"{V}/cosign/**/*.json", recursive=True):
    b = json.loads(read(p))
    if "dsseEnvelope" not in b:
        add("trust_material", read(p))
        continue
    add("bundle", read(p))
    add("in_toto", b64(b["dsseEnvelope"]["payload"]))
    vm = b["verificationMaterial"]
    for e in vm.get("tlogEntries", []):
        add("rekor", json.dumps(e))
    for t in vm.get("timestampVerificationData", {}).get("rfc3161Timestamps", []):
        add("timestamp", b64(t["signedTimestamp"]))
        add("der", b64(t["signedTimestamp"]))
    cert = vm.get("certificate", {}).get("rawBytes")
    if cert:
        chain(0b01 | (26 << 2), [b64(cert)])

# Notation envelopes: JWS and COSE, their payloads, x5c chains and RFC 3161 tokens.
for p in glob.glob(f"{V}/notation/**/*", recursive=True):
    if os.path.isdir(p):
        continue
    b = read(p)
    if b[:1] == b"{" and b'"protected"' in b:
        add("jws", b)
        j = json.loads(b)
        h = j.get("header", {})
        x5c = [b64(c) for c in h.get("x5c", [])]
        if x5c:
            chain(0b10 | (24 << 2), x5c)
            chain(0b10 | (1 << 2), x5c)
            add("der", x5c[0])
        if "io.cncf.notary.timestampSignature" in h:
            tok = b64(h["io.cncf.notary.timestampSignature"])
            add("timestamp", tok)
            add("der", tok)
    elif b[:1] in (b"\xd2", b"\x84"):
        add("cose", b)
    elif b"-----BEGIN" in b or p.endswith((".crt", ".cer", ".pem")):
        add("trust_material", b)
for p in glob.glob(f"{V}/cosign/containers-image/*.p*"):
    add("trust_material", read(p))

# Trust policies and the config files.
for p in glob.glob("config/**/trustpolicy*.json", recursive=True):
    add("trust_policy", read(p))
add("trust_policy", '{"version":"1.0","trustPolicies":[{"name":"ids","registryScopes":["localhost:5000/e2e"],'
    '"signatureVerification":{"level":"permissive","override":{"expiry":"log"},"verifyTimestamp":"afterCertExpiry"},'
    '"trustStores":["ca:test","tsa:ts"],"trustedIdentities":["x509.subject: CN=e2e,O=Notary,L=Seattle,ST=WA,C=US"]}]}')
for p in glob.glob("config/*.toml") + glob.glob("deploy/**/*.toml", recursive=True):
    add("config", read(p))
add("config", 'listen = "127.0.0.1:0"\ndata_dir = "d"\n[[upstream]]\nregistry = "r"\nurl = "https://r"\n'
    '[[policy]]\nname = "p"\nscope = ["r/**"]\ncosign_keys = ["cosign/containers-image/cosign.pub"]\n'
    'rekor_keys = ["cosign/containers-image/rekor.pub"]\n'
    '[[policy.cosign_certificates]]\nsigstore_trusted_root = "cosign/sigstore-rs/trusted_root.json"\nidentity = "a@b"\nissuer = "i"\n')

# The differential targets take structured input (`arbitrary`); a few short byte strings
# start them, and the fuzzer finds the structure.
for n in range(4):
    add("integrity", bytes(range(n * 7, n * 7 + 40)))
    add("merkle", struct.pack(">QQ", n * 977, n * 31337) + bytes(range(n, n + 40)))

for target, files in seeds.items():
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target:16} {len(files):3} seeds", file=sys.stderr)
