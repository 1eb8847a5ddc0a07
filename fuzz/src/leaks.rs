//! Whether an error message repeats part of a secret.
//!
//! Two checks. The exact one plants a sentinel in the secret: no 8-byte piece of it may
//! appear in a message unless the input the message is allowed to quote (a JSON key,
//! say) contains that piece too. The general one looks for any 8-byte piece of the secret
//! in the message that is neither in that allowed input nor in the messages the same code
//! prints without having seen this secret (its vocabulary), so ordinary wording that a
//! fuzzed secret happens to share is not reported.
//!
//! Pieces are compared as `u64`s through a small bitmap rather than with slice equality:
//! this code is instrumented like the code under test, and `memcmp`-based comparisons
//! would cost more than the parsing and would teach the fuzzer to copy message text into
//! secrets.

/// The length of a repeated piece that counts as a leak.
pub const WINDOW: usize = 8;

/// A set of pieces that may have false positives (confirmed by a plain search).
struct Pieces([u64; 64]);

impl Pieces {
    fn of(texts: &[&[u8]]) -> Pieces {
        let mut set = Pieces([0; 64]);
        for text in texts {
            for piece in pieces(text) {
                let bit = slot(piece);
                set.0[bit / 64] |= 1 << (bit % 64);
            }
        }
        set
    }

    fn may_contain(&self, piece: u64) -> bool {
        let bit = slot(piece);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

fn slot(piece: u64) -> usize {
    (piece.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

fn pieces(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    text.windows(WINDOW)
        .map(|w| u64::from_le_bytes(w.try_into().expect("a window is WINDOW bytes")))
}

/// Describes the first leak found, if any: a piece of `sentinel` in a message that
/// `allowed` lacks, or a piece of `secret` in a message that is neither in `allowed` nor
/// in `vocabulary()`. Pass an empty `secret` for the sentinel check alone. Runs of digits
/// count as one digit when comparing with the vocabulary, so line and column numbers do
/// not matter. `vocabulary` is only called when a suspect piece turns up.
pub fn leak(
    messages: &[String],
    secret: &[u8],
    sentinel: &str,
    allowed: &str,
    vocabulary: impl FnOnce() -> Vec<String>,
) -> Option<String> {
    let texts: Vec<&[u8]> = messages.iter().map(|m| m.as_bytes()).collect();
    let in_messages = Pieces::of(&texts);
    let found = |piece: &[u8]| texts.iter().any(|text| contains(text, piece));
    let allowed = allowed.as_bytes();

    for piece in sentinel.as_bytes().windows(WINDOW) {
        if in_messages.may_contain(pieces(piece).next().unwrap_or_default())
            && found(piece)
            && !contains(allowed, piece)
        {
            return Some(format!(
                "{:?} of the sentinel",
                String::from_utf8_lossy(piece)
            ));
        }
    }

    let mut suspects: Vec<&[u8]> = Vec::new();
    for (at, piece) in pieces(secret).enumerate() {
        let bytes = &secret[at..at + WINDOW];
        if in_messages.may_contain(piece) && found(bytes) && !contains(allowed, bytes) {
            suspects.push(bytes);
        }
    }
    if suspects.is_empty() {
        return None;
    }
    let known: Vec<Vec<u8>> = vocabulary()
        .iter()
        .map(|text| squash_digits(text.as_bytes()))
        .collect();
    suspects
        .into_iter()
        .find(|piece| {
            let piece = squash_digits(piece);
            !known.iter().any(|text| contains(text, &piece))
        })
        .map(|piece| format!("{:?} of the secret", String::from_utf8_lossy(piece)))
}

fn squash_digits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_digit() {
            if out.last() != Some(&b'0') {
                out.push(b'0');
            }
        } else {
            out.push(b);
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
