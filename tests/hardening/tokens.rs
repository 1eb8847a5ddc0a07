//! Issue 14, low items: an expiry too large for the clock (a JWT's `exp`, an IdP's
//! `expires_in`) panicked; an IdP error that echoed the client secret in another spelling,
//! or across the 300-character cut, showed it.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use testkit::oauth2::{Client, IdP, Quirk};
use testkit::{Run, Scratch, Sidecar};

const CLIENT_ID: &str = "app id/7e2c";
/// A space, `&`, `=`, `+` and `/`: form encoding and base64 both change it.
const CLIENT_SECRET: &str = "idp secret&4e1d=never+log/me";

fn idp() -> IdP {
    IdP::start(Client {
        id: CLIENT_ID.to_owned(),
        secret: CLIENT_SECRET.to_owned(),
        scope: None,
        lifetime: 3600,
    })
}

/// `token` mode asking `idp` with `method` (`basic` or `body`), publishing into `dir`.
fn token_mode(idp: &IdP, files: &Scratch, dir: &Scratch, method: &str) -> Sidecar {
    let secret = files.path.join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    testkit::sidecar!()
        .env("RUST_LOG", "trace")
        .args(["token", "--source", "oauth2-client-credentials"])
        .args(idp.client_args(&secret))
        .args(["--oauth2-client-auth", method, "--out"])
        .arg(dir.path.join("token"))
}

fn probe(file: &Path) -> Run {
    testkit::sidecar!()
        .args(["token", "--probe", "--out"])
        .arg(file)
        .run()
}

/// A JWT whose `exp` is `exp`, as JSON text.
fn jwt_expiring(exp: &str) -> String {
    let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
    format!(
        "{}.{}.{}",
        part(r#"{"alg":"RS256","typ":"JWT"}"#),
        part(&format!(r#"{{"sub":"app","exp":{exp}}}"#)),
        part("signature")
    )
}

/// `token --probe` of a token whose `exp` no clock can hold says yes or no, never panics
/// (it exited 101).
#[test]
fn a_probe_of_a_token_expiring_past_any_clock_answers() {
    let dir = Scratch::tmpfs("probe-exp");
    let file = dir.path.join("token");
    for exp in [
        "1e300",
        "18446744073709551615",
        "9.3e18",
        "1.7976931348623157e308",
    ] {
        std::fs::write(&file, jwt_expiring(exp)).unwrap();
        let run = probe(&file);
        assert!(
            run.code == 0 || run.code == 1,
            "exp {exp}: exit {}\n{}",
            run.code,
            run.stderr
        );
    }
}

/// An IdP whose `expires_in` is 2^64-1: the token is published and token mode keeps
/// running (it panicked, and a restarted container panicked again), asking again no
/// sooner than a clamped lifetime allows.
#[test]
fn token_mode_survives_an_expires_in_past_any_clock() {
    let idp = idp();
    idp.set_quirk(Quirk::ExpiresIn("18446744073709551615"));
    let files = Scratch::disk("huge-expires-in");
    let dir = Scratch::tmpfs("huge-expires-in");
    let file = dir.path.join("token");
    let mut running = token_mode(&idp, &files, &dir, "basic").spawn();
    let started = Instant::now();
    while !file.exists() && running.running() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(running.running(), "token mode ended");
    let issued = idp.issued();
    assert_eq!(
        issued.len(),
        1,
        "asked again at once: {} tokens",
        issued.len()
    );
    assert_eq!(std::fs::read(&file).unwrap(), issued[0].as_bytes());
    probe(&file).expect_code(0);
    let run = running.stop();
    run.expect_code(0).expect_no_leak(issued[0].as_bytes());
    assert!(!run.stderr.contains("panic"), "{}", run.stderr);
}

/// How a client's credentials appear in a request: the secret as is, form-encoded (`+` or
/// `%20` for a space), and the Basic credentials, base64 of `id:secret` with both parts
/// form-encoded (as sent) or not.
fn spellings() -> Vec<String> {
    let encode =
        |text: &str| -> String { form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let encoded = encode(CLIENT_SECRET);
    vec![
        CLIENT_SECRET.to_owned(),
        encoded.clone(),
        encoded.replace('+', "%20"),
        STANDARD.encode(format!("{}:{encoded}", encode(CLIENT_ID))),
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")),
    ]
}

/// An IdP that echoes the client's credentials in its error description, at its start or
/// where the 300-character cut splits them: no spelling of the secret shows, not even
/// eight characters of one.
#[test]
fn oauth2_errors_that_echo_the_secret_are_redacted_in_every_spelling() {
    let idp = idp();
    let files = Scratch::disk("echo-secret");
    for method in ["basic", "body"] {
        for offset in [0, 290] {
            idp.set_quirk(Quirk::Echo { offset });
            let dir = Scratch::tmpfs("echo-secret");
            let run = token_mode(&idp, &files, &dir, method).run();
            run.expect_code(3).expect_stderr("invalid_client");
            dir.expect_empty();
            run.expect_no_leak(CLIENT_SECRET.as_bytes());
            for spelling in spellings() {
                for piece in spelling.as_bytes().windows(8) {
                    let piece = String::from_utf8_lossy(piece);
                    assert!(
                        !run.stderr.contains(&*piece) && !run.stdout.contains(&*piece),
                        "{method}, echoed at {offset}: {piece:?} of {spelling:?} shows:\n{}",
                        run.stderr
                    );
                }
            }
        }
    }
}
