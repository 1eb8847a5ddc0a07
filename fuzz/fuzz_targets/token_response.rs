//! The readers of what an identity provider hands back: `oauth2::parse_token` over a token
//! endpoint's answer, `web_token::jwt_expiry` over a token, and `WebToken::new` with any
//! `expires_in`. Input: `EXPIRES_IN\nBODY`, where EXPIRES_IN is the decimal number given
//! to `WebToken::new` (any u64, absurd ones included) and BODY is the answer; every `@@`
//! in the body becomes a sentinel standing for a token.
//!
//! They never panic (an `exp` or `expires_in` far beyond the clock once did); a known
//! lifetime is never more than `MAX_LIFETIME`; a token that is read comes back byte for
//! byte; and a failed read never repeats the sentinel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_sidecar::identity::oauth2::parse_token;
use secret_sidecar::identity::web_token::{MAX_LIFETIME, WebToken, jwt_expiry};
use secret_sidecar::secret::SecretValue;
use serde_json::Value;

const SENTINEL: &str = "eyJhbGciOi.SENTINEL-token-5e1f.c2ln";

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let expires_in = std::str::from_utf8(head).ok().and_then(|t| t.parse::<u64>().ok());
    let body = plant(body);

    let _ = jwt_expiry(&body);
    let token = WebToken::new(SecretValue::new(body.clone()), expires_in);
    assert!(token.lifetime().is_none_or(|left| left <= MAX_LIFETIME));

    match parse_token(&body) {
        Ok(token) => {
            assert!(token.lifetime().is_none_or(|left| left <= MAX_LIFETIME));
            // serde_json skips fields it does not read without checking their UTF-8, so a
            // body with bad bytes in an unknown field is read; `Value` would refuse it, so
            // the token is compared only where `Value` can read the whole body.
            if let Ok(whole) = serde_json::from_slice::<Value>(&body) {
                let sent = whole.get("access_token").and_then(Value::as_str);
                assert_eq!(Some(token.value.expose()), sent.map(str::as_bytes));
            }
        }
        Err(err) => {
            let text = format!("{err:#} {err:?}");
            assert!(!text.contains("SENTINEL-token"), "the error repeats the token: {text}");
        }
    }
});

fn plant(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(2).position(|w| w == b"@@") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(SENTINEL.as_bytes());
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    out
}
