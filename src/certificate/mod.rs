//! Certificates stored as secrets, turned into the PEM files a TLS server reads
//! (`?format=pem-key|pem-cert|pem-chain|pem-bundle`).
//!
//! Azure Key Vault keeps a certificate's key and chain behind the secret of the same name,
//! as a PKCS#12 file without a password (base64, `contentType: application/x-pkcs12`) or
//! as PEM (`application/x-pem-file`); users keep the same in Secrets Manager, Parameter
//! Store or Secret Manager. The value is recognised by what it is, whatever the store: a
//! PEM bundle (key and certificates in any order), or PKCS#12 (`pkcs12.rs`), raw bytes or
//! base64 text.
//!
//! The leaf is the certificate the key's `localKeyId` names (PKCS#12), else the first that
//! issued none of the others. The chain is the leaf, then its issuer, and so on by subject
//! and issuer names, then any other certificate in the order stored; nothing is dropped.
//! The private key is secret data: it stays in [`SecretValue`]s and zeroized buffers, and
//! no message quotes a byte of the value.

mod pkcs12;

use anyhow::{Context as _, Result, anyhow, bail};
use der::{Decode, Encode};
use pem_rfc7468::LineEnding;
use zeroize::Zeroizing;

use crate::secret::SecretValue;

/// Which PEM file to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The private key.
    Key,
    /// The leaf certificate.
    Certificate,
    /// The leaf, then its issuers.
    Chain,
    /// The private key, then the chain.
    Bundle,
}

/// A certificate with the names that order a chain.
struct Certificate {
    der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    key_id: Option<Vec<u8>>,
}

/// A private key with its PEM label (`PRIVATE KEY` for PKCS#8, as PKCS#12 holds them;
/// a PEM bundle's own label otherwise).
struct Key {
    label: String,
    der: SecretValue,
    key_id: Option<Vec<u8>>,
}

/// What a stored certificate holds.
struct Bundle {
    what: &'static str,
    keys: Vec<Key>,
    certificates: Vec<Certificate>,
    secret_keys: usize,
}

/// The PEM file `part` of the certificate held by `value`.
pub fn convert(value: &SecretValue, part: Part) -> Result<SecretValue> {
    let bundle = read(value)?;
    let what = bundle.what;
    if bundle.keys.is_empty() && bundle.certificates.is_empty() {
        let secret_keys = match bundle.secret_keys {
            0 => String::new(),
            n => format!(" (only {n} secret key{})", if n == 1 { "" } else { "s" }),
        };
        bail!(
            "the {what} holds no certificate and no private key{secret_keys}: it is not a \
             certificate"
        );
    }
    let key = match (part, bundle.keys.as_slice()) {
        (Part::Certificate | Part::Chain, _) => None,
        (_, [key]) => Some(key),
        (_, []) => bail!(
            "the {what} holds no private key (Key Vault leaves it out when the certificate's \
             key is not exportable)"
        ),
        (_, keys) => bail!(
            "the {what} holds {} private keys; a certificate has one",
            keys.len()
        ),
    };
    if part != Part::Key && bundle.certificates.is_empty() {
        bail!("the {what} holds no certificate");
    }
    let key_id = bundle.keys.first().and_then(|k| k.key_id.as_deref());
    let chain = chain(&bundle.certificates, key_id);
    let mut blocks: Vec<(&str, &[u8])> = Vec::new();
    if let Some(key) = key {
        blocks.push((&key.label, key.der.expose()));
    }
    let certificates = match part {
        Part::Key => 0,
        Part::Certificate => 1,
        Part::Chain | Part::Bundle => chain.len(),
    };
    for certificate in &chain[..certificates] {
        blocks.push(("CERTIFICATE", &certificate.der));
    }
    pem(&blocks)
}

/// Reads a PEM bundle, or a PKCS#12 file as DER or as base64 text.
fn read(value: &SecretValue) -> Result<Bundle> {
    let bytes = value.expose();
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"-----BEGIN ") {
        return read_pem(text);
    }
    if pkcs12::is_pfx(bytes) {
        return read_pkcs12(bytes);
    }
    match SecretValue::from_base64(bytes) {
        Some(decoded) if pkcs12::is_pfx(decoded.expose()) => read_pkcs12(decoded.expose()),
        _ => {
            bail!("the value is not a certificate: neither PEM nor a PKCS#12 file (raw or base64)")
        }
    }
}

fn read_pkcs12(der: &[u8]) -> Result<Bundle> {
    let contents = pkcs12::read(der).context("reading the PKCS#12 file")?;
    let certificates = contents
        .certificates
        .into_iter()
        .map(|(der, key_id)| certificate(der, key_id))
        .collect::<Result<_>>()?;
    let keys = contents
        .keys
        .into_iter()
        .map(|(der, key_id)| Key {
            label: "PRIVATE KEY".to_owned(),
            der,
            key_id,
        })
        .collect();
    Ok(Bundle {
        what: "PKCS#12 file",
        keys,
        certificates,
        secret_keys: contents.secret_keys,
    })
}

/// Every block of a PEM text; other text around them (OpenSSL's `Bag Attributes`
/// lines) is skipped.
fn read_pem(mut text: &[u8]) -> Result<Bundle> {
    let mut bundle = Bundle {
        what: "PEM bundle",
        keys: Vec::new(),
        certificates: Vec::new(),
        secret_keys: 0,
    };
    while let Some(start) = find(text, b"-----BEGIN ") {
        let block = &text[start..];
        let end = find(block, b"-----END ")
            .and_then(|at| find(&block[at + 9..], b"-----").map(|close| at + 9 + close + 5))
            .ok_or_else(|| anyhow!("a PEM block has no END line"))?;
        let (label, der) = pem_rfc7468::decode_vec(&block[..end])
            .map_err(|err| anyhow!("a PEM block does not decode ({err})"))?;
        let der = SecretValue::new(der);
        match label {
            "CERTIFICATE" => bundle
                .certificates
                .push(certificate(der.expose().to_vec(), None)?),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => bundle.keys.push(Key {
                label: label.to_owned(),
                der,
                key_id: None,
            }),
            "ENCRYPTED PRIVATE KEY" => {
                bail!("the PEM bundle's private key is encrypted; secret-sidecar takes no password")
            }
            _ => {}
        }
        text = &block[end..];
    }
    Ok(bundle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn certificate(der: Vec<u8>, key_id: Option<Vec<u8>>) -> Result<Certificate> {
    let parsed = x509_cert::Certificate::from_der(&der)
        .map_err(|err| anyhow!("a certificate is not X.509 ({err})"))?;
    let tbs = parsed.tbs_certificate();
    Ok(Certificate {
        subject: tbs.subject().to_der()?,
        issuer: tbs.issuer().to_der()?,
        der,
        key_id,
    })
}

/// The leaf, then its issuer, and so on, then every other certificate as stored.
fn chain<'c>(certificates: &'c [Certificate], key_id: Option<&[u8]>) -> Vec<&'c Certificate> {
    let issues_another = |c: &Certificate| {
        certificates
            .iter()
            .any(|other| !std::ptr::eq(other, c) && other.issuer == c.subject)
    };
    let leaf = key_id
        .and_then(|id| {
            certificates
                .iter()
                .position(|c| c.key_id.as_deref() == Some(id))
        })
        .or_else(|| certificates.iter().position(|c| !issues_another(c)))
        .unwrap_or(0);
    let mut order = vec![leaf];
    loop {
        let current = &certificates[*order.last().unwrap_or(&leaf)];
        if current.issuer == current.subject {
            break;
        }
        match (0..certificates.len())
            .find(|i| !order.contains(i) && certificates[*i].subject == current.issuer)
        {
            Some(issuer) => order.push(issuer),
            None => break,
        }
    }
    let rest: Vec<usize> = (0..certificates.len())
        .filter(|i| !order.contains(i))
        .collect();
    order.extend(rest);
    order.into_iter().map(|i| &certificates[i]).collect()
}

/// PEM blocks, one after the other, written into a buffer of exactly their size so no
/// copy of the key is left behind by a reallocation.
fn pem(blocks: &[(&str, &[u8])]) -> Result<SecretValue> {
    let lengths = blocks
        .iter()
        .map(|(label, der)| pem_rfc7468::encoded_len(label, LineEnding::LF, der))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|err| anyhow!("writing PEM ({err})"))?;
    let mut out = Vec::with_capacity(lengths.iter().sum());
    for ((label, der), length) in blocks.iter().zip(lengths) {
        let mut block = Zeroizing::new(vec![0u8; length]);
        let written = pem_rfc7468::encode(label, LineEnding::LF, der, &mut block)
            .map_err(|err| anyhow!("writing PEM ({err})"))?
            .len();
        out.extend_from_slice(&block[..written]);
    }
    Ok(SecretValue::new(out))
}
