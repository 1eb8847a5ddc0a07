//! The one type that holds secret bytes.
//!
//! A [`SecretValue`] owns its bytes in memory that is zeroed when dropped, prints as
//! `<redacted N bytes>` under `Debug`, and has no `Display` (so `format!("{value}")` does
//! not compile), `Clone`, `Serialize` or accessor that returns a `String`. Anything that
//! needs the bytes borrows them with [`SecretValue::expose`], which is easy to search for
//! in review.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes ownership without copying, so the only copy is the zeroizing one.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    pub fn from_string(text: String) -> Self {
        SecretValue::new(text.into_bytes())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes `text` encodes in base64: standard or URL-safe alphabet, padded or not,
    /// with line breaks and spaces ignored (as PEM-style wrapped keystores have them).
    /// `None` when it is not base64.
    pub fn from_base64(text: &[u8]) -> Option<SecretValue> {
        let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
            text.iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect(),
        );
        let lenient =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        [base64::alphabet::STANDARD, base64::alphabet::URL_SAFE]
            .iter()
            .find_map(|alphabet| {
                GeneralPurpose::new(alphabet, lenient)
                    .decode(&*compact)
                    .ok()
            })
            .map(SecretValue::new)
    }

    /// Borrows the bytes. Callers must not log, format or copy them outside zeroizing memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_bytes() {
        let value = SecretValue::from_string("hunter2-sentinel".to_owned());
        assert_eq!(format!("{value:?}"), "<redacted 16 bytes>");
        assert_eq!(format!("{value:#?}"), "<redacted 16 bytes>");
        assert_eq!(value.expose(), b"hunter2-sentinel");
    }
}
