//! Issue 14, medium 1: credentials in the log when `RUST_LOG` is set. Every credential
//! source answers 200 with credentials or a token in a body its client cannot read (a
//! malformed expiry, or cut short); at `info`, `debug` and `trace` the run fails, publishes
//! nothing, and prints none of them. Where an SDK does log such an answer
//! (aws-config's web-identity provider warns with the raw STS body), the same run with
//! `--log-sdk-internals` prints it: the guard is what keeps it out. The other clients
//! (aws-config's container provider, aws-sdk-sts, google-cloud-auth, azure_identity,
//! reqwest and hyper) print none of these answers even with `--log-sdk-internals` at
//! trace, so only their guarded runs are checked.

use std::any::Any;

use testkit::{Run, Scratch, Sidecar};

/// Points the binary at a source (identity, endpoints, what to fetch) and at the
/// directory to publish into.
type Configure = Box<dyn Fn(Sidecar, &Scratch) -> Sidecar>;

/// A credential source that answers 200 with credentials its client cannot read.
struct Malformed {
    /// The fakes, kept serving until the check ends.
    _fakes: Vec<Box<dyn Any>>,
    configure: Configure,
    /// What must never be printed, known once the runs are over (tokens a fake issued).
    never: Box<dyn Fn() -> Vec<String>>,
    /// What the error says about the answer: the client did read it.
    says: &'static str,
}

impl Malformed {
    fn run(&self, out: &Scratch, level: &str, extra: &[&str]) -> Run {
        (self.configure)(testkit::sidecar!(), out)
            .env("RUST_LOG", level)
            .args(["--timeout", "10s"])
            .args(extra)
            .run()
    }

    /// Fails closed and prints nothing of the answer at each level; if `sdk_logs_it`, the
    /// same run with `--log-sdk-internals` shows the answer through the SDK's own events.
    fn check(self, what: &str, sdk_logs_it: bool) {
        let out = Scratch::tmpfs("log-guard");
        let runs: Vec<(&str, Run)> = ["info", "debug", "trace"]
            .into_iter()
            .map(|level| (level, self.run(&out, level, &[])))
            .collect();
        let internals = sdk_logs_it.then(|| self.run(&out, "info", &["--log-sdk-internals"]));
        let never = (self.never)();
        for (level, run) in &runs {
            // An identity failure, not a panic or a usage error that never asked.
            assert_eq!(run.code, 3, "{what} at {level}:\n{}", run.stderr);
            run.expect_stderr(self.says);
            for secret in &never {
                run.expect_no_leak(secret.as_bytes());
            }
            out.expect_empty();
        }
        if let Some(run) = internals {
            let shown = never.iter().any(|s| run.stderr.contains(s.as_str()));
            assert!(
                shown,
                "{what}: with --log-sdk-internals the SDK no longer prints the answer, so \
                 this no longer shows what the guard stops:\n{}",
                run.stderr
            );
        }
    }
}

#[cfg(feature = "aws")]
mod aws {
    use super::Malformed;
    use testkit::oauth2::{Client, IdP, Quirk};
    use testkit::pod_identity::{self, Agent};
    use testkit::secretsmanager::SecretsManager;
    use testkit::sts::{self, BAD_EXPIRATION, SECRET_ACCESS_KEY, SESSION_TOKEN, Sts};
    use testkit::{Scratch, Sidecar, fake_jwt};

    pub const CLIENT_ID: &str = "7d0c4f2e-hardening";
    pub const CLIENT_SECRET: &str = "hardening-client-secret-9b1f-never-log-me";

    /// The binary with no AWS credentials of its own, reading `aws://db` from a Secrets
    /// Manager that never gets asked (the credentials fail first).
    fn without_keys(sidecar: Sidecar, store: &SecretsManager, out: &Scratch) -> Sidecar {
        store
            .configure(sidecar)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .args(["--secret", "db=aws://db", "--output-dir"])
            .arg(&out.path)
    }

    pub fn idp() -> IdP {
        IdP::start(Client {
            id: CLIENT_ID.to_owned(),
            secret: CLIENT_SECRET.to_owned(),
            scope: None,
            lifetime: 3600,
        })
    }

    /// `--oauth2-*` options for `idp`, the client secret in a file in `dir`.
    pub fn oauth2_args(idp: &IdP, dir: &Scratch) -> Vec<String> {
        let file = dir.path.join("client-secret");
        std::fs::write(&file, CLIENT_SECRET).unwrap();
        idp.client_args(&file)
    }

    fn sts_credentials() -> Vec<String> {
        vec![SECRET_ACCESS_KEY.to_owned(), SESSION_TOKEN.to_owned()]
    }

    /// IRSA: the token file, exchanged by aws-config's own web-identity provider.
    #[test]
    fn sts_web_identity_through_the_token_file() {
        let sts = Sts::answering(sts::credentials(BAD_EXPIRATION));
        let store = SecretsManager::start();
        let files = Scratch::disk("log-guard-irsa");
        let token_file = files.path.join("token");
        std::fs::write(&token_file, fake_jwt("system:serviceaccount:default:app")).unwrap();
        let url = sts.url().to_owned();
        Malformed {
            configure: Box::new(move |s, out| {
                without_keys(s, &store, out)
                    .assuming_role(&url, "arn:aws:iam::000000000000:role/app")
                    .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            }),
            never: Box::new(sts_credentials),
            says: "error parsing XML",
            _fakes: vec![Box::new(sts), Box::new(files)],
        }
        .check("STS through aws-config", true);
    }

    /// `--aws-token-source`: this crate's own AssumeRoleWithWebIdentity call.
    #[test]
    fn sts_web_identity_through_a_token_source() {
        let sts = Sts::answering(sts::credentials(BAD_EXPIRATION));
        let store = SecretsManager::start();
        let idp = std::sync::Arc::new(idp());
        let files = Scratch::disk("log-guard-source");
        let args = oauth2_args(&idp, &files);
        let (url, issued) = (sts.url().to_owned(), std::sync::Arc::clone(&idp));
        Malformed {
            configure: Box::new(move |s, out| {
                without_keys(s, &store, out)
                    .assuming_role(&url, "arn:aws:iam::000000000000:role/app")
                    .args(["--aws-token-source", "oauth2-client-credentials"])
                    .args(&args)
            }),
            never: Box::new(move || {
                let mut never = sts_credentials();
                never.extend(issued.issued());
                never.push(CLIENT_SECRET.to_owned());
                never
            }),
            says: "error parsing XML",
            _fakes: vec![Box::new(sts), Box::new(files), Box::new(idp)],
        }
        .check("STS through --aws-token-source", false);
    }

    /// EKS Pod Identity and ECS: the container credentials endpoint.
    #[test]
    fn container_credentials() {
        let agent = Agent::start(vec![Agent::credentials_expiring(BAD_EXPIRATION)]);
        let store = SecretsManager::start();
        let (url, token_file, token) = (
            agent.full_uri(),
            agent.token_file.clone(),
            agent.token.clone(),
        );
        Malformed {
            configure: Box::new(move |s, out| {
                without_keys(s, &store, out)
                    .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url)
                    .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
            }),
            never: Box::new(move || {
                vec![
                    pod_identity::SECRET_ACCESS_KEY.to_owned(),
                    pod_identity::SESSION_TOKEN.to_owned(),
                    token.clone(),
                ]
            }),
            says: "Invalid field in response: `Expiration`",
            _fakes: vec![Box::new(agent)],
        }
        .check("container credentials", false);
    }

    /// An OAuth2 token endpoint (`token` mode asks it directly).
    #[test]
    fn oauth2_token_endpoint() {
        let idp = std::sync::Arc::new(idp());
        idp.set_quirk(Quirk::Malformed);
        let files = Scratch::disk("log-guard-oauth2");
        let args = oauth2_args(&idp, &files);
        let issued = std::sync::Arc::clone(&idp);
        Malformed {
            configure: Box::new(move |s, out| {
                s.args(["token", "--source", "oauth2-client-credentials", "--out"])
                    .arg(out.path.join("token"))
                    .args(&args)
            }),
            never: Box::new(move || {
                let mut never = issued.issued();
                never.push(CLIENT_SECRET.to_owned());
                never
            }),
            says: "the token response is not the JSON object",
            _fakes: vec![Box::new(idp), Box::new(files)],
        }
        .check("OAuth2 token endpoint", false);
    }
}

#[cfg(feature = "gcp")]
mod gcp {
    use super::Malformed;
    use testkit::gcp::{
        Metadata, SecretManager, Sts, external_account_file, pool_audience, token_answer,
    };
    use testkit::{Scratch, Sidecar, fake_jwt};

    const TOKEN: &str = "ya29.c.hardening-access-token-5e2d-never-log-me";
    const UNREADABLE: &str = r#""in an hour""#;

    /// The binary with no Google identity but what the test adds, reading
    /// `gcp://my-project/db` from Secret Manager at `url`.
    fn reading_db(sidecar: Sidecar, url: &str, out: &Scratch) -> Sidecar {
        sidecar
            .env("HOME", "/nonexistent/home")
            .args(["--gcp-endpoint", url])
            .args(["--secret", "db=gcp://my-project/db", "--output-dir"])
            .arg(&out.path)
    }

    /// GKE: the metadata server's access token.
    #[test]
    fn google_metadata_token() {
        let metadata = Metadata::answering(
            TOKEN,
            "app@my-project.iam.gserviceaccount.com",
            vec![("/token", token_answer(TOKEN, UNREADABLE))],
        );
        let sm = SecretManager::start(TOKEN);
        let (host, url) = (metadata.host(), sm.url());
        Malformed {
            configure: Box::new(move |s, out| {
                reading_db(s, &url, out).env("GCE_METADATA_HOST", &host)
            }),
            never: Box::new(|| vec![TOKEN.to_owned()]),
            says: "error decoding response body",
            _fakes: vec![Box::new(metadata), Box::new(sm)],
        }
        .check("Google metadata server", false);
    }

    /// Workload identity federation: Google STS exchanging a projected token.
    #[test]
    fn google_sts_token_exchange() {
        let files = Scratch::disk("log-guard-federation");
        let audience = pool_audience("my-pool", "my-cluster");
        let subject = fake_jwt("system:serviceaccount:prod:app");
        let token_file = files.path.join("token");
        std::fs::write(&token_file, &subject).unwrap();
        let sts = Sts::answering(&audience, &subject, token_answer(TOKEN, UNREADABLE));
        let config = files.path.join("credential-configuration.json");
        let text = external_account_file(&audience, &sts.token_url(), &token_file, None);
        std::fs::write(&config, text).unwrap();
        let sm = SecretManager::start(TOKEN);
        let url = sm.url();
        Malformed {
            configure: Box::new(move |s, out| {
                reading_db(s, &url, out).env("GOOGLE_APPLICATION_CREDENTIALS", &config)
            }),
            never: Box::new(move || vec![TOKEN.to_owned(), subject.clone()]),
            says: "error decoding response body",
            _fakes: vec![Box::new(sts), Box::new(sm), Box::new(files)],
        }
        .check("Google STS", false);
    }
}

/// Azure workload identity: Entra ID's token endpoint.
#[cfg(feature = "azure")]
#[test]
fn entra_token_endpoint() {
    use testkit::azure::{EntraMode, Workload};
    let azure = std::sync::Arc::new(Workload::start());
    azure
        .entra
        .set_mode(EntraMode::ExpiresIn(r#""in an hour""#));
    let (configured, known) = (std::sync::Arc::clone(&azure), std::sync::Arc::clone(&azure));
    Malformed {
        configure: Box::new(move |s, out| {
            configured
                .configure(s)
                .arg("--secret")
                .arg(format!("db={}", configured.reference("db")))
                .arg("--output-dir")
                .arg(&out.path)
        }),
        never: Box::new(move || vec![known.entra.access_token.clone(), known.token.clone()]),
        says: "ClientAssertionCredential authentication failed",
        _fakes: vec![Box::new(azure)],
    }
    .check("Entra ID", false);
}
