//! Time as AWS sees it: a Secrets Manager that checks each request's SigV4 time against
//! its own clock (the test's, which `faketime` does not touch) the way AWS does, and the
//! date arithmetic the fakes need.
//!
//! AWS refuses a signature more than 5 minutes from its clock with HTTP 400 and
//! `InvalidSignatureException` (`Signature expired: T is now earlier than …` when the
//! client is behind, `Signature not yet current: T is still later than …` when it is
//! ahead), and a session token it considers expired with `ExpiredTokenException`.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::http::{Request, Response, Server};

/// How far AWS lets a request's time stray from its own.
const TOLERANCE: u64 = 5 * 60;

pub struct SigningClock {
    pub server: Server,
    expired_tokens: Arc<Mutex<Vec<String>>>,
}

impl SigningClock {
    /// Serves `GetSecretValue` with `ok` for requests signed within 5 minutes of now.
    pub fn start(ok: Response) -> SigningClock {
        let expired_tokens: Arc<Mutex<Vec<String>>> = Arc::default();
        let expired = Arc::clone(&expired_tokens);
        let server = Server::with_handler(move |request| {
            let mut response = answer(request, &ok, &expired.lock().unwrap());
            response.headers.push(("date", http_date(now())));
            response
        });
        SigningClock {
            server,
            expired_tokens,
        }
    }

    /// Requests carrying `session_token` are refused as expired credentials.
    pub fn expire(&self, session_token: &str) {
        self.expired_tokens
            .lock()
            .unwrap()
            .push(session_token.to_owned());
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

fn answer(request: &Request, ok: &Response, expired: &[String]) -> Response {
    let Some(signed) = request.header("x-amz-date").and_then(parse_amz_date) else {
        return error(
            "IncompleteSignature",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    };
    let now = now();
    if signed + TOLERANCE < now {
        return error(
            "InvalidSignatureException",
            &format!(
                "Signature expired: {} is now earlier than {} ({} - 5 min.)",
                amz_date(signed),
                amz_date(now - TOLERANCE),
                amz_date(now)
            ),
        );
    }
    if signed > now + TOLERANCE {
        return error(
            "InvalidSignatureException",
            &format!(
                "Signature not yet current: {} is still later than {} ({} + 5 min.)",
                amz_date(signed),
                amz_date(now + TOLERANCE),
                amz_date(now)
            ),
        );
    }
    let token = request.header("x-amz-security-token").unwrap_or_default();
    if expired.iter().any(|t| t == token) {
        return error(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        );
    }
    ok.clone()
}

fn error(code: &str, message: &str) -> Response {
    Response::json(
        400,
        serde_json::json!({"__type": code, "message": message}).to_string(),
    )
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `(year, month, day, hour, minute, second)` in UTC for `seconds` since the epoch.
pub fn civil(seconds: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (seconds / 86_400) as i64;
    let rest = (seconds % 86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest / 60 % 60, rest % 60)
}

/// Days since the epoch of a date (`days_from_civil`).
fn days(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// SigV4's `20261202T140337Z`.
pub fn amz_date(seconds: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(seconds);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

fn parse_amz_date(text: &str) -> Option<u64> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    if text.len() != 16 || &text[8..9] != "T" || !text.ends_with('Z') {
        return None;
    }
    let date = days(i64::from(digits(0..4)?), digits(4..6)?, digits(6..8)?);
    let time = digits(9..11)? * 3600 + digits(11..13)? * 60 + digits(13..15)?;
    u64::try_from(date * 86_400 + i64::from(time)).ok()
}

/// An HTTP `Date` header value: `Wed, 02 Dec 2026 14:03:37 GMT`.
fn http_date(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(seconds);
    let weekday = DAYS[(seconds / 86_400 % 7) as usize];
    let month = MONTHS[mo as usize - 1];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{mi:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_796_220_217), "20261202T140337Z");
        assert_eq!(http_date(1_796_220_217), "Wed, 02 Dec 2026 14:03:37 GMT");
        for seconds in [0, 951_782_400, 1_796_220_217, 4_102_444_799] {
            assert_eq!(parse_amz_date(&amz_date(seconds)), Some(seconds));
        }
    }
}
