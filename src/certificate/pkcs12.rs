//! Reading a PKCS#12 (PFX) file without a password, as Azure Key Vault stores a
//! certificate's key and chain behind the secret of the same name.
//!
//! The ASN.1 structures and the PKCS#12 key derivation are RustCrypto's `pkcs12` crate;
//! the ciphers (`des`, `rc2`, `cbc`, `pkcs5` for PBES2) and the MAC (`hmac`, `sha1`,
//! `sha2`) are RustCrypto's too. What is written here is the walk through the file:
//! check the MAC, decrypt each safe, collect the bags. It is not left to a higher-level
//! crate because "no password" has two encodings (RFC 7292 appendix B.1: two zero bytes;
//! B.2: nothing), and Key Vault, like .NET and Windows, uses the second while OpenSSL's
//! `-passout pass:` uses the first; the crates that take a `&str` password can only say
//! the first. Both are tried, as OpenSSL and Go's pkcs12 do.
//!
//! Work is bounded (at most a million iterations in any key derivation) so a hostile file
//! cannot keep the run busy. Errors name what was wrong, never a byte of the file.

use anyhow::{Result, anyhow, bail};
use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use hmac::{KeyInit, Mac};
use pkcs12::cms::cert::x509::spki::AlgorithmIdentifierOwned;
use pkcs12::cms::content_info::ContentInfo;
use pkcs12::cms::encrypted_data::EncryptedData;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::{Pfx, Version};
use pkcs12::safe_bag::{PrivateKeyInfo, SafeBag, SafeContents};
use pkcs12::{CertBag, MacData};
use zeroize::Zeroizing;

use crate::secret::SecretValue;

/// The two encodings of "no password" (RFC 7292 B.1, then B.2).
const EMPTY_PASSWORDS: [&[u8]; 2] = [&[0, 0], &[]];
/// The most iterations any key derivation in a file may ask for.
const MAX_ITERATIONS: u32 = 1_000_000;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const SECRET_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.5");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const LOCAL_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.21");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_128: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// What a PKCS#12 file holds: private keys (PKCS#8 DER) and certificates (DER), each with
/// its `localKeyId` attribute when it has one, and how many secret-key bags it had.
#[derive(Default)]
pub struct Contents {
    pub keys: Vec<(SecretValue, Option<Vec<u8>>)>,
    pub certificates: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub secret_keys: usize,
}

/// Whether `bytes` are a PKCS#12 file's DER (a PFX structure of version 3).
pub fn is_pfx(bytes: &[u8]) -> bool {
    Pfx::from_der(bytes).is_ok_and(|pfx| pfx.version == Version::V3)
}

/// Reads a PKCS#12 file that has no password.
pub fn read(der_bytes: &[u8]) -> Result<Contents> {
    let pfx = Pfx::from_der(der_bytes).map_err(|err| anyhow!("not a PKCS#12 file ({err})"))?;
    if pfx.auth_safe.content_type != DATA {
        bail!("a PKCS#12 file signed with a public key is not supported");
    }
    let data = OctetString::from_der(&pfx.auth_safe.content.to_der()?)?;
    let passwords: Vec<&[u8]> = match &pfx.mac_data {
        Some(mac) => match EMPTY_PASSWORDS
            .into_iter()
            .find(|password| verify_mac(mac, password, data.as_bytes()).is_ok())
        {
            Some(password) => vec![password],
            None => {
                verify_mac(mac, &[], data.as_bytes())?;
                bail!(
                    "its integrity check (MAC) fails without a password: the file has a \
                     password, and secret-sidecar reads only files without one (as Key Vault \
                     stores them)"
                );
            }
        },
        // No MAC to tell which encoding the writer used: decryption tells.
        None => EMPTY_PASSWORDS.to_vec(),
    };
    let safes: Vec<ContentInfo> = Vec::from_der(data.as_bytes())?;
    let mut contents = Contents::default();
    for safe in &safes {
        let bags = match safe.content_type {
            DATA => OctetString::from_der(&safe.content.to_der()?)?
                .into_bytes()
                .into_vec(),
            ENCRYPTED_DATA => {
                let encrypted = EncryptedData::from_der(&safe.content.to_der()?)?;
                let info = encrypted.enc_content_info;
                let Some(ciphertext) = info.encrypted_content else {
                    continue;
                };
                decrypt_any(&info.content_enc_alg, ciphertext.as_bytes(), &passwords)?.to_vec()
            }
            _ => bail!("a PKCS#12 safe enveloped for a public key is not supported"),
        };
        let bags = SafeContents::from_der(&bags)?;
        for bag in bags {
            read_bag(&bag, &passwords, &mut contents)?;
        }
    }
    Ok(contents)
}

fn read_bag(bag: &SafeBag, passwords: &[&[u8]], contents: &mut Contents) -> Result<()> {
    let key_id = bag.bag_attributes.as_ref().and_then(|attributes| {
        let attribute = attributes.iter().find(|a| a.oid == LOCAL_KEY_ID)?;
        let value = attribute.values.iter().next()?.to_der().ok()?;
        OctetString::from_der(&value)
            .ok()
            .map(|id| id.into_bytes().into_vec())
    });
    match bag.bag_id {
        KEY_BAG => {
            let key = ContextSpecific::<PrivateKeyInfo>::from_der(&bag.bag_value)?;
            let der = Zeroizing::new(key.value.to_der()?);
            contents.keys.push((SecretValue::new(der.to_vec()), key_id));
        }
        SHROUDED_KEY_BAG => {
            let shrouded = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)?;
            let info = shrouded.value;
            let der = decrypt_any(
                &info.encryption_algorithm,
                info.encrypted_data.as_bytes(),
                passwords,
            )?;
            // Checked as PKCS#8 before it is published as one.
            PrivateKeyInfo::from_der(&der).map_err(|_| anyhow!("a private key is not PKCS#8"))?;
            contents.keys.push((SecretValue::new(der.to_vec()), key_id));
        }
        CERT_BAG => {
            let bag = ContextSpecific::<CertBag>::from_der(&bag.bag_value)?;
            if bag.value.cert_id == X509_CERTIFICATE {
                let der = bag.value.cert_value.as_bytes().to_vec();
                contents.certificates.push((der, key_id));
            }
        }
        SECRET_BAG => contents.secret_keys += 1,
        _ => {}
    }
    Ok(())
}

/// Decrypts with the first of `passwords` that gives well-padded plaintext.
fn decrypt_any(
    algorithm: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    passwords: &[&[u8]],
) -> Result<Zeroizing<Vec<u8>>> {
    let mut last = None;
    for password in passwords {
        match decrypt(algorithm, ciphertext, password) {
            Ok(plain) => return Ok(plain),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("nothing to decrypt with")))
}

fn decrypt(
    algorithm: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let parameters = algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| anyhow!("an encryption algorithm without parameters"))?
        .to_der()?;
    if algorithm.oid == PBES2 {
        let parameters = pkcs5::pbes2::Parameters::from_der(&parameters)?;
        match &parameters.kdf {
            pkcs5::pbes2::Kdf::Pbkdf2(kdf) if kdf.iteration_count <= MAX_ITERATIONS => {}
            _ => bail!("an unsupported or too costly PBES2 key derivation"),
        }
        // PBES2 takes the password's UTF-8 bytes: no password is nothing, either way.
        return parameters
            .decrypt([0u8; 0], ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| anyhow!("a PBES2-encrypted part does not decrypt without a password"));
    }
    let pbe = Pkcs12PbeParams::from_der(&parameters)?;
    let iterations = u32::try_from(pbe.iterations).unwrap_or(u32::MAX);
    if iterations == 0 || iterations > MAX_ITERATIONS {
        bail!("a key derivation with {} iterations", pbe.iterations);
    }
    let salt = pbe.salt.as_bytes();
    let derive = |kind, len| {
        Zeroizing::new(derive_key::<sha1::Sha1>(
            password,
            salt,
            kind,
            pbe.iterations,
            len,
        ))
    };
    let plain = match algorithm.oid {
        PBE_SHA1_3DES => {
            let (key, iv) = (
                derive(Pkcs12KeyType::EncryptionKey, 24),
                derive(Pkcs12KeyType::Iv, 8),
            );
            cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|_| anyhow!("a 3DES key of the wrong length"))?
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
        }
        PBE_SHA1_RC2_40 | PBE_SHA1_RC2_128 => {
            let length = if algorithm.oid == PBE_SHA1_RC2_40 {
                5
            } else {
                16
            };
            let (key, iv) = (
                derive(Pkcs12KeyType::EncryptionKey, length),
                derive(Pkcs12KeyType::Iv, 8),
            );
            cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key, &iv)
                .map_err(|_| anyhow!("an RC2 key of the wrong length"))?
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
        }
        other => bail!("the encryption algorithm {other} is not supported"),
    };
    plain
        .map(Zeroizing::new)
        .map_err(|_| anyhow!("an encrypted part does not decrypt without a password"))
}

fn verify_mac(mac: &MacData, password: &[u8], data: &[u8]) -> Result<()> {
    let iterations = u32::try_from(mac.iterations).unwrap_or(u32::MAX);
    if iterations == 0 || iterations > MAX_ITERATIONS {
        bail!(
            "an integrity check (MAC) with {} iterations",
            mac.iterations
        );
    }
    let salt = mac.mac_salt.as_bytes();
    let expected = mac.mac.digest.as_bytes();
    macro_rules! check {
        ($digest:ty, $len:expr) => {{
            let key = Zeroizing::new(derive_key::<$digest>(
                password,
                salt,
                Pkcs12KeyType::Mac,
                mac.iterations,
                $len,
            ));
            let mut hmac = <hmac::Hmac<$digest> as KeyInit>::new_from_slice(&key)
                .map_err(|_| anyhow!("a MAC key of the wrong length"))?;
            hmac.update(data);
            hmac.verify_slice(expected)
                .map_err(|_| anyhow!("the integrity check (MAC) fails"))
        }};
    }
    match mac.mac.algorithm.oid {
        SHA1 => check!(sha1::Sha1, 20),
        SHA256 => check!(sha2::Sha256, 32),
        SHA384 => check!(sha2::Sha384, 48),
        SHA512 => check!(sha2::Sha512, 64),
        other => bail!("the MAC algorithm {other} is not supported"),
    }
}
