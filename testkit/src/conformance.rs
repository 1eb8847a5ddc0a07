//! The conformance harness: each provider's secret service behind one interface, so that
//! the rows of `tests/conformance.rs`, written once, run through the real binary against
//! every provider.
//!
//! A row runs against the provider's store wherever the store can express it: LocalStack
//! for AWS (Secrets Manager and Parameter Store), the Key Vault and Entra ID fakes for Azure, the Secret Manager and metadata
//! fakes for Google. What LocalStack cannot be made to answer (access denied, throttling)
//! comes from the scripted wire server of [`crate::faults`], and so does a malformed 200
//! for every provider, since no store sends one.
//!
//! A new provider plugs in with a [`Provider`] variant (and its answers in
//! `faults.rs`), a [`Store`] variant, and its arm in each method here.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Sidecar;
#[cfg(feature = "azure")]
use super::azure::Workload;
use super::faults::{Endpoint, Provider};
#[cfg(feature = "gcp")]
use super::gcp::{Metadata, SecretManager};
use super::http::Response;
#[cfg(feature = "aws")]
use super::localstack::Seeder;
#[cfg(feature = "aws")]
use super::ssm::{Kind, Parameters};
#[cfg(feature = "aws")]
use super::{unique, unique_id};

#[cfg(feature = "gcp")]
const GCP_TOKEN: &str = "ya29.c.conformance-metadata-token-4d2a";
#[cfg(feature = "gcp")]
const GCP_ACCOUNT: &str = "app@my-project.iam.gserviceaccount.com";

/// One provider's secret service, as a row sees it.
pub struct Service {
    store: Store,
    /// Every version put, oldest first, by name.
    versions: BTreeMap<String, Vec<String>>,
}

/// Where the secrets live.
enum Store {
    /// Secrets Manager in LocalStack, every name under a prefix of its own.
    #[cfg(feature = "aws")]
    LocalStack { seeder: Seeder, prefix: String },
    /// Parameter Store in LocalStack, SecureStrings under a hierarchy of their own.
    #[cfg(feature = "aws")]
    SsmLocalStack {
        parameters: Parameters,
        root: String,
    },
    #[cfg(feature = "azure")]
    KeyVault(Workload),
    /// GKE-shaped: the token from the metadata server.
    #[cfg(feature = "gcp")]
    SecretManager {
        metadata: Metadata,
        secrets: SecretManager,
    },
    /// One secret, `db`, whose reads follow a script.
    Scripted(Endpoint),
}

impl Service {
    /// The provider's store, empty.
    pub fn start(provider: Provider) -> Service {
        let store = match provider {
            #[cfg(feature = "aws")]
            Provider::Aws => Store::LocalStack {
                seeder: Seeder::connect(),
                prefix: unique("conformance"),
            },
            #[cfg(feature = "azure")]
            Provider::Azure => Store::KeyVault(Workload::start()),
            #[cfg(feature = "gcp")]
            Provider::Gcp => Store::SecretManager {
                metadata: Metadata::start(GCP_TOKEN, GCP_ACCOUNT),
                secrets: SecretManager::start(GCP_TOKEN),
            },
            #[cfg(feature = "aws")]
            Provider::Ssm => Store::SsmLocalStack {
                parameters: Parameters::connect(),
                root: format!("/test/conformance-{}", unique_id('-')),
            },
        };
        Service {
            store,
            versions: BTreeMap::new(),
        }
    }

    /// The secret `db`, whose reads are answered from `script` in order (the last one
    /// repeats), behind the provider's usual identity.
    pub fn scripted(provider: Provider, script: Vec<Response>) -> Service {
        Service {
            store: Store::Scripted(Endpoint::start(provider, script)),
            versions: BTreeMap::new(),
        }
    }

    /// `name` holds `value`, and the caller may not read it. (AWS: were the denial
    /// retried, the second read would be served.)
    pub fn denying(provider: Provider, name: &str, value: &str) -> Service {
        match provider {
            #[cfg(feature = "aws")]
            Provider::Aws => {
                scripted_name(name);
                Service::scripted(
                    provider,
                    vec![
                        aws_error(
                            "AccessDeniedException",
                            "User: arn:aws:sts::000000000000:assumed-role/app/secret-sidecar is not \
                         authorized to perform: secretsmanager:GetSecretValue on resource: db \
                         because no identity-based policy allows the \
                         secretsmanager:GetSecretValue action",
                        ),
                        provider.ok_with(value),
                    ],
                )
            }
            #[cfg(feature = "azure")]
            Provider::Azure => Service::holding(provider, name, value).denied(name),
            #[cfg(feature = "gcp")]
            Provider::Gcp => Service::holding(provider, name, value).denied(name),
            #[cfg(feature = "aws")]
            Provider::Ssm => {
                scripted_name(name);
                Service::scripted(
                    provider,
                    vec![
                        aws_error(
                            "AccessDeniedException",
                            "User: arn:aws:sts::000000000000:assumed-role/app/secret-sidecar is not \
                         authorized to perform: ssm:GetParameter on resource: \
                         arn:aws:ssm:us-east-1:000000000000:parameter/db because no \
                         identity-based policy allows the ssm:GetParameter action",
                        ),
                        provider.ok_with(value),
                    ],
                )
            }
        }
    }

    /// `name` holds `value`, served after `times` throttled reads. Also returns the wait
    /// the service asks for before each retry, where its protocol carries one (Secrets
    /// Manager's ThrottlingException does not).
    pub fn throttling(
        provider: Provider,
        name: &str,
        value: &str,
        times: u32,
    ) -> (Service, Option<Duration>) {
        match provider {
            #[cfg(feature = "aws")]
            Provider::Aws | Provider::Ssm => {
                scripted_name(name);
                let throttled = aws_error("ThrottlingException", "Rate exceeded");
                let mut script = vec![throttled; times as usize];
                script.push(provider.ok_with(value));
                (Service::scripted(provider, script), None)
            }
            #[cfg(feature = "azure")]
            Provider::Azure => Service::holding(provider, name, value).throttled(name, times),
            #[cfg(feature = "gcp")]
            Provider::Gcp => Service::holding(provider, name, value).throttled(name, times),
        }
    }

    /// The provider's store holding `value` as `name`.
    #[cfg(any(feature = "azure", feature = "gcp"))]
    fn holding(provider: Provider, name: &str, value: &str) -> Service {
        let mut service = Service::start(provider);
        service.put(name, value);
        service
    }

    /// Adds `value` as the latest version of the string secret `name` (creating it) and
    /// returns the version's id as the run logs it.
    pub fn put(&mut self, name: &str, value: &str) -> String {
        let version = match &mut self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { seeder, prefix } => {
                let full = format!("{prefix}/{name}");
                match self.versions.contains_key(name) {
                    false => seeder.string(&full, value).1,
                    true => seeder.put(&full, value),
                }
            }
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => azure.vault.put(name, value),
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => {
                secrets.add(&gcp_secret(name), value.as_bytes()).to_string()
            }
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { parameters, root } => parameters
                .put(&format!("{root}/{name}"), Kind::SecureString, value)
                .to_string(),
            Store::Scripted(_) => panic!("a scripted service holds no secrets to add to"),
        };
        self.versions
            .entry(name.to_owned())
            .or_default()
            .push(version.clone());
        version
    }

    /// Stores the bytes `value` as the provider stores binary data, and returns the
    /// reference that publishes them: a binary secret in AWS and Google; in Key Vault and
    /// Parameter Store, which hold only strings, base64 read with `?format=base64`.
    pub fn put_binary(&mut self, name: &str, value: &[u8]) -> String {
        match &mut self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { seeder, prefix } => {
                seeder.binary(&format!("{prefix}/{name}"), value);
                self.reference(name)
            }
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => {
                azure.vault.put(name, &super::base64(value));
                format!("{}?format=base64", self.reference(name))
            }
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => {
                secrets.add(&gcp_secret(name), value);
                self.reference(name)
            }
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { parameters, root } => {
                let text = super::base64(value);
                parameters.put(&format!("{root}/{name}"), Kind::SecureString, &text);
                format!("{}?format=base64", self.reference(name))
            }
            Store::Scripted(_) => panic!("a scripted service holds no secrets to add to"),
        }
    }

    /// The reference to the latest version of `name`.
    pub fn reference(&self, name: &str) -> String {
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { prefix, .. } => format!("aws://{prefix}/{name}"),
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => azure.reference(name),
            #[cfg(feature = "gcp")]
            Store::SecretManager { .. } => format!("gcp://my-project/{name}"),
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { root, .. } => format!("ssm://{root}/{name}"),
            Store::Scripted(endpoint) => {
                scripted_name(name);
                endpoint.reference()
            }
        }
    }

    /// The reference to `version` of `name`, by its id.
    pub fn at_version(&self, name: &str, version: &str) -> String {
        let reference = self.reference(name);
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { .. } => format!("{reference}?version-id={version}"),
            _ => format!("{reference}?version={version}"),
        }
    }

    /// A version id of the provider's form that no secret has.
    pub fn missing_version(&self) -> &'static str {
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { .. } => "5f0c2a9e-81b7-4c4d-9e3a-61f0d2b7c4e8",
            #[cfg(feature = "azure")]
            Store::KeyVault(_) => "0123456789abcdef0123456789abcdef",
            #[cfg(feature = "gcp")]
            Store::SecretManager { .. } => "9",
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { .. } => "99",
            Store::Scripted(_) => panic!("a scripted service has no versions"),
        }
    }

    /// References that select `version` of `name`, the one before the latest, by a name
    /// rather than by its id as a parameter: AWS's `AWSPREVIOUS` and a staging label made
    /// here, a Google alias made here, and Key Vault's version in the path.
    pub fn names_for(&mut self, name: &str, version: &str) -> Vec<String> {
        let versions = &self.versions[name];
        assert_eq!(
            versions.iter().rev().nth(1).map(String::as_str),
            Some(version),
            "{version} is not the version before the latest of {name}"
        );
        let reference = self.reference(name);
        match &mut self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { seeder, prefix } => {
                seeder.label(&format!("{prefix}/{name}"), "stable", version);
                vec![
                    format!("{reference}?version-stage=AWSPREVIOUS"),
                    format!("{reference}?version-stage=stable"),
                ]
            }
            #[cfg(feature = "azure")]
            Store::KeyVault(_) => vec![format!("{reference}/{version}")],
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => {
                secrets.alias(&gcp_secret(name), "stable", version.parse().unwrap());
                vec![format!("{reference}?version=stable")]
            }
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { parameters, root } => {
                let version = version.parse().unwrap();
                parameters.label(&format!("{root}/{name}"), version, "stable");
                vec![format!("{reference}?label=stable")]
            }
            Store::Scripted(_) => panic!("a scripted service has no versions"),
        }
    }

    /// The file a reference to `name` without `FILE=` publishes to (before any `#KEY`).
    pub fn file_name(&self, name: &str) -> String {
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { prefix, .. } => format!("{prefix}/{name}").replace('/', "_"),
            #[cfg(feature = "aws")]
            Store::SsmLocalStack { root, .. } => format!("{root}/{name}")
                .trim_start_matches('/')
                .replace('/', "_"),
            _ => name.to_owned(),
        }
    }

    /// The same service, where `name` exists but the identity may not read it.
    #[cfg(any(feature = "azure", feature = "gcp"))]
    fn denied(self, name: &str) -> Service {
        match &self.store {
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => azure.vault.deny(name),
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => secrets.deny(&gcp_secret(name)),
            _ => panic!("this store cannot deny access; script the answer"),
        }
        self
    }

    /// The same service, throttling the next `times` reads of `name`; and the wait it
    /// asks for before each retry.
    #[cfg(any(feature = "azure", feature = "gcp"))]
    fn throttled(self, name: &str, times: u32) -> (Service, Option<Duration>) {
        assert!(self.versions.contains_key(name), "{name} is not stored");
        let asked = match &self.store {
            // The fake's Retry-After is 1 second.
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => {
                azure.vault.throttle(name, times);
                Duration::from_secs(1)
            }
            // Secret Manager throttles the project, not one secret.
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => {
                secrets.throttle(times, Some("0.6s"));
                Duration::from_millis(600)
            }
            _ => panic!("this store cannot throttle; script the answer"),
        };
        (self, Some(asked))
    }

    /// Reads of `name` that reached the service with credentials, where the service can
    /// count them (LocalStack keeps no request log).
    pub fn reads(&self, name: &str) -> Option<usize> {
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { .. } | Store::SsmLocalStack { .. } => None,
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => Some(azure.vault.authorized_gets(name)),
            #[cfg(feature = "gcp")]
            Store::SecretManager { secrets, .. } => {
                let path = format!("/v1/{}/versions/", gcp_secret(name));
                let reads = secrets.requests().into_iter();
                Some(reads.filter(|r| r.target().starts_with(&path)).count())
            }
            Store::Scripted(endpoint) => {
                scripted_name(name);
                Some(endpoint.attempts())
            }
        }
    }

    /// Credentials the fakes issue or accept; they must never be printed.
    pub fn tokens(&self) -> Vec<String> {
        match &self.store {
            #[cfg(feature = "aws")]
            Store::LocalStack { .. } | Store::SsmLocalStack { .. } => Vec::new(),
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => vec![azure.token.clone(), azure.entra.access_token.clone()],
            #[cfg(feature = "gcp")]
            Store::SecretManager { .. } => vec![GCP_TOKEN.to_owned()],
            Store::Scripted(endpoint) => endpoint.tokens.clone(),
        }
    }

    /// `sidecar` (from [`crate::sidecar!`]) with the provider's identity and endpoint,
    /// logging at trace level so that leak checks see everything.
    pub fn configure(&self, sidecar: Sidecar) -> Sidecar {
        match &self.store {
            // The runner's own environment: static keys, LocalStack's endpoint.
            #[cfg(feature = "aws")]
            Store::LocalStack { .. } | Store::SsmLocalStack { .. } => {
                sidecar.env("RUST_LOG", "trace")
            }
            #[cfg(feature = "azure")]
            Store::KeyVault(azure) => azure.configure(sidecar).env("RUST_LOG", "trace"),
            #[cfg(feature = "gcp")]
            Store::SecretManager { metadata, secrets } => sidecar
                .env("HOME", "/nonexistent/home")
                .env("GCE_METADATA_HOST", metadata.host())
                .env("RUST_LOG", "trace")
                .args(["--gcp-endpoint", &secrets.url()]),
            Store::Scripted(endpoint) => endpoint.configure(sidecar),
        }
    }
}

/// A scripted service serves one secret, `db`.
fn scripted_name(name: &str) {
    assert_eq!(name, "db", "the scripted service has one secret, db");
}

/// `projects/my-project/secrets/NAME`, as Secret Manager keys it.
#[cfg(feature = "gcp")]
fn gcp_secret(name: &str) -> String {
    format!("projects/my-project/secrets/{name}")
}

/// An error answer of the Secrets Manager JSON protocol: 400, the code in `__type`.
#[cfg(feature = "aws")]
fn aws_error(code: &str, message: &str) -> Response {
    Response::json(
        400,
        serde_json::json!({"__type": code, "Message": message}).to_string(),
    )
    .header("x-amzn-errortype", code)
}
