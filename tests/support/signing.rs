//! Cosign signatures made by a third party: Sigstore's own Rust crate
//! (`sigstore`) signs the simple-signing payload and pushes the `.sig`
//! manifest, exactly as `cosign sign --key` lays it out. sigmirror's verifier
//! never sees a signature made by our own code in these tests.
#![allow(dead_code)]

use sigstore::cosign::constraint::{Constraint, PrivateKeySigner};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::crypto::signing_key::ecdsa::ECDSAKeys;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

/// A cosign signing key pair (ECDSA P-256, as `cosign generate-key-pair`).
pub struct CosignKey {
    pair: SigStoreKeyPair,
}

impl CosignKey {
    pub fn generate() -> CosignKey {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().expect("generate P-256 key");
        CosignKey { pair: signer.to_sigstore_keypair().expect("key pair") }
    }

    /// The key pair of a PKCS#8 PEM private key, for tests that sign other formats with the same key.
    pub fn from_pkcs8_pem(pem: &str) -> CosignKey {
        CosignKey { pair: SigStoreKeyPair::from_pem(pem.as_bytes()).expect("PKCS#8 private key") }
    }

    pub fn generate_p384() -> CosignKey {
        let signer = SigningScheme::ECDSA_P384_SHA384_ASN1.create_signer().expect("generate P-384 key");
        CosignKey { pair: signer.to_sigstore_keypair().expect("key pair") }
    }

    /// The public key as cosign writes `cosign.pub`.
    pub fn public_pem(&self) -> String {
        self.pair.public_key_to_pem().expect("public key PEM")
    }

    fn scheme(&self) -> SigningScheme {
        match &self.pair {
            SigStoreKeyPair::ECDSA(ECDSAKeys::P384(_)) => SigningScheme::ECDSA_P384_SHA384_ASN1,
            _ => SigningScheme::ECDSA_P256_SHA256_ASN1,
        }
    }
}

/// Signs `digest` as `docker_reference` (the name in the payload, usually
/// `<registry name>/<repo>`) and pushes the signature to
/// `<host>/<sig_repo>:sha256-<hex>.sig` on a plain-HTTP registry.
///
/// Runs on its own thread and runtime, so it can be called from sync tests
/// and from inside `#[tokio::test]` alike.
pub fn sign_and_push(host: &str, sig_repo: &str, digest: &str, key: &CosignKey, docker_reference: &str) {
    let layer = signed_layer(digest, key, docker_reference);
    push_layers(host, sig_repo, digest, vec![layer]);
}

/// A signed layer, for tests that combine or tamper with layers before pushing.
pub fn signed_layer(digest: &str, key: &CosignKey, docker_reference: &str) -> SignatureLayer {
    let image_ref: OciReference = format!("{docker_reference}@{digest}").parse().expect("docker reference");
    let mut layer = SignatureLayer::new_unsigned(&image_ref, digest).expect("unsigned layer");
    let signer = key.pair.to_sigstore_signer(&key.scheme()).expect("signer");
    let applied = PrivateKeySigner::new_with_signer(signer).add_constraint(&mut layer).expect("sign");
    assert!(applied, "sigstore did not sign the layer");
    layer
}

/// Pushes signature layers as the `.sig` manifest of `digest` in `sig_repo`.
pub fn push_layers(host: &str, sig_repo: &str, digest: &str, layers: Vec<SignatureLayer>) {
    let host = host.to_string();
    let target: OciReference =
        format!("{host}/{sig_repo}:{}.sig", digest.replace(':', "-")).parse().expect("signature reference");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut client = ClientBuilder::default()
                .with_oci_client_config(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() })
                .build()
                .expect("sigstore client");
            client.push_signature(None, &Auth::Anonymous, &target, layers).await.expect("push signature");
        });
    })
    .join()
    .expect("signing thread panicked");
}
