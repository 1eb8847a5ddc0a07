//! LocalStack's Parameter Store (and KMS, which encrypts its SecureStrings), seeded through
//! the AWS SDK as a user's tooling would.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::ParameterType;

use super::{REGION, endpoint};
use crate::localstack::Seeder;

/// A parameter's type, as `aws ssm put-parameter --type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    StringList,
    SecureString,
}

/// Creates parameters in LocalStack through the SDK.
pub struct Parameters {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Parameters {
    /// A seeder for LocalStack's default account; panics with what to do when LocalStack
    /// is not answering (the check is [`Seeder::connect`]'s).
    pub fn connect() -> Parameters {
        drop(Seeder::connect());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint())
            .credentials_provider(Credentials::for_tests())
            .build();
        Parameters {
            runtime,
            client: Client::from_conf(config),
        }
    }

    /// Stores `value` as `name` (creating it, or adding a version) and returns the
    /// parameter's new version number. A SecureString uses the account's default key
    /// (`alias/aws/ssm`), as `put-parameter` does without `--key-id`.
    pub fn put(&self, name: &str, kind: Kind, value: &str) -> i64 {
        let kind = match kind {
            Kind::String => ParameterType::String,
            Kind::StringList => ParameterType::StringList,
            Kind::SecureString => ParameterType::SecureString,
        };
        let out = self
            .runtime
            .block_on(
                self.client
                    .put_parameter()
                    .name(name)
                    .value(value)
                    .r#type(kind)
                    .overwrite(true)
                    .send(),
            )
            .unwrap_or_else(|err| panic!("put_parameter {name}: {err:?}"));
        out.version
    }

    /// Attaches `label` to `version` of `name`.
    pub fn label(&self, name: &str, version: i64, label: &str) {
        self.runtime
            .block_on(
                self.client
                    .label_parameter_version()
                    .name(name)
                    .parameter_version(version)
                    .labels(label)
                    .send(),
            )
            .unwrap_or_else(|err| panic!("label_parameter_version {name}: {err:?}"));
    }

    /// What Parameter Store holds for `name`, encrypted as it is stored.
    pub fn stored(&self, name: &str) -> String {
        let out = self
            .runtime
            .block_on(self.client.get_parameter().name(name).send())
            .unwrap_or_else(|err| panic!("get_parameter {name}: {err:?}"));
        out.parameter.and_then(|p| p.value).unwrap_or_default()
    }
}
