// Signs an in-toto statement into a Sigstore bundle (DSSE envelope) with Sigstore's own JS
// signer, @sigstore/sign, offline: the signer is a P-256 key from a PKCS#8 PEM file and there
// are no witnesses (no Rekor, no TSA), as `cosign attest --key --tlog-upload=false` would.
//
//   node attest.js <private-key.pem> <statement.json>   # bundle JSON on stdout
//
// Used by tests/attest.rs, so the attestations sigmirror verifies there are not made by
// sigmirror's own code.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { DSSEBundleBuilder } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');

const [keyFile, statementFile] = process.argv.slice(2);
const privateKey = crypto.createPrivateKey(fs.readFileSync(keyFile));
const publicKey = crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'pem' });
const signer = {
  sign: async (data) => ({
    signature: crypto.sign('sha256', data, privateKey),
    key: { $case: 'publicKey', publicKey, hint: '' },
  }),
};
new DSSEBundleBuilder({ signer, witnesses: [] })
  .create({ data: fs.readFileSync(statementFile), type: 'application/vnd.in-toto+json' })
  .then((bundle) => process.stdout.write(JSON.stringify(bundleToJSON(bundle))))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
