//! LocalStack's Secrets Manager, seeded through the AWS SDK: the one module of the test kit
//! that imports the SDK, so it exists only with the `aws` feature.

use std::collections::BTreeMap;
use std::net::TcpStream;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretOutput;
use aws_sdk_secretsmanager::primitives::Blob;

use super::{REGION, endpoint};

/// Creates secrets in LocalStack through the SDK.
pub struct Seeder {
    runtime: tokio::runtime::Runtime,
    clients: BTreeMap<String, Client>,
    credentials: Credentials,
}

impl Seeder {
    /// A seeder for LocalStack's default account; panics with what to do when LocalStack
    /// is not answering.
    pub fn connect() -> Seeder {
        let endpoint = endpoint();
        let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
        if TcpStream::connect(address).is_err() {
            panic!(
                "LocalStack is not answering at {endpoint}. Run the tests with scripts/test.sh, \
                 or start it with scripts/localstack.sh start"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Seeder {
            runtime,
            clients: BTreeMap::new(),
            credentials: Credentials::for_tests(),
        }
    }

    /// Seeds into `account` alone: LocalStack takes a 12-digit access key id as the
    /// account, so only credentials with that key id see these secrets.
    pub fn in_account(account: &str) -> Seeder {
        Seeder {
            credentials: Credentials::new(account, "test", None, None, "seeder"),
            ..Seeder::connect()
        }
    }

    fn client(&mut self, region: &str) -> Client {
        let endpoint = endpoint();
        self.clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let config = aws_sdk_secretsmanager::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region.to_owned()))
                    .endpoint_url(endpoint)
                    .credentials_provider(self.credentials.clone())
                    .build();
                Client::from_conf(config)
            })
            .clone()
    }

    /// Creates a string secret and returns (ARN, version id).
    pub fn string(&mut self, name: &str, value: &str) -> (String, String) {
        self.string_in(REGION, name, value)
    }

    pub fn string_in(&mut self, region: &str, name: &str, value: &str) -> (String, String) {
        let out = self
            .create_string(region, name, value)
            .unwrap_or_else(|| panic!("{name} exists already"));
        (out.arn.unwrap(), out.version_id.unwrap())
    }

    /// Creates the string secret `name`; `None` when one of that name exists already.
    fn create_string(
        &mut self,
        region: &str,
        name: &str,
        value: &str,
    ) -> Option<CreateSecretOutput> {
        let client = self.client(region);
        let created = self.runtime.block_on(
            client
                .create_secret()
                .name(name)
                .secret_string(value)
                .send(),
        );
        match created {
            Ok(out) => Some(out),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                None
            }
            Err(err) => panic!("creating {name}: {err:?}"),
        }
    }

    pub fn binary(&mut self, name: &str, value: &[u8]) -> String {
        let client = self.client(REGION);
        let out = self
            .runtime
            .block_on(
                client
                    .create_secret()
                    .name(name)
                    .secret_binary(Blob::new(value))
                    .send(),
            )
            .expect("create_secret");
        out.arn.unwrap()
    }

    /// Adds a new current version and returns its id; the old one becomes AWSPREVIOUS.
    pub fn put(&mut self, name: &str, value: &str) -> String {
        self.put_in(REGION, name, value)
    }

    pub fn put_in(&mut self, region: &str, name: &str, value: &str) -> String {
        self.put_version(region, name, value, None)
    }

    /// A new version of `name`, with the service's default stage or `stage` alone.
    fn put_version(
        &mut self,
        region: &str,
        name: &str,
        value: &str,
        stage: Option<&str>,
    ) -> String {
        let client = self.client(region);
        let request = client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .set_version_stages(stage.map(|s| vec![s.to_owned()]));
        let out = self
            .runtime
            .block_on(request.send())
            .expect("put_secret_value");
        out.version_id.unwrap()
    }

    /// Attaches the staging label `stage` to `version` of `name`.
    pub fn label(&mut self, name: &str, stage: &str, version: &str) {
        self.move_stage(name, stage, version, None);
    }

    /// Stores `value` as `name` in `region`: creates the secret, or adds a new current
    /// version when it exists already (a rerun against the same LocalStack).
    pub fn upsert_in(&mut self, region: &str, name: &str, value: &str) {
        if self.create_string(region, name, value).is_none() {
            self.put_in(region, name, value);
        }
    }

    /// Adds a version of `name` labelled `AWSPENDING` only (what a rotation's first step
    /// does) and returns its id; the current version stays current.
    pub fn put_pending(&mut self, name: &str, value: &str) -> String {
        self.put_version(REGION, name, value, Some("AWSPENDING"))
    }

    /// Moves `AWSCURRENT` of `name` from version `from` to version `to` (a rotation's
    /// last step).
    pub fn promote(&mut self, name: &str, to: &str, from: &str) {
        self.move_stage(name, "AWSCURRENT", to, Some(from));
    }

    /// Puts the label `stage` on version `to` of `name`, taking it off `from` (Secrets
    /// Manager requires that for `AWSCURRENT`, which only one version may carry).
    fn move_stage(&mut self, name: &str, stage: &str, to: &str, from: Option<&str>) {
        let client = self.client(REGION);
        self.runtime
            .block_on(
                client
                    .update_secret_version_stage()
                    .secret_id(name)
                    .version_stage(stage)
                    .move_to_version_id(to)
                    .set_remove_from_version_id(from.map(str::to_owned))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("update_secret_version_stage {stage}: {e}"));
    }

    /// Deletes `name` at once, without the recovery window.
    pub fn delete(&mut self, name: &str) {
        let client = self.client(REGION);
        self.runtime
            .block_on(
                client
                    .delete_secret()
                    .secret_id(name)
                    .force_delete_without_recovery(true)
                    .send(),
            )
            .expect("delete_secret");
    }
}
