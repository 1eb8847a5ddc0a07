//! Drop-in for the original init container: with no `--secret` and no `--config`, its
//! variables name the one secret to fetch, where it goes, and what the file is called.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::reference::SecretRef;

/// Where the original init container (see the README) put its file, and what it was called.
const LEGACY_DIR: &str = "/tmp";
const LEGACY_FILE: &str = "secret";

/// The one secret the legacy variables name.
pub(super) struct DropIn {
    pub reference: SecretRef,
    /// `MOUNT_NAME`, else `secret`.
    pub file: String,
    /// Where the file goes unless `--output-dir` says otherwise.
    pub output_dir: PathBuf,
}

/// The legacy variables, read through `env` (a variable that is set but blank counts as
/// unset); `None` when none of them is set.
pub(super) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<DropIn>> {
    let Some(reference) = reference(env)? else {
        return Ok(None);
    };
    Ok(Some(DropIn {
        reference,
        file: env("MOUNT_NAME").unwrap_or_else(|| LEGACY_FILE.to_owned()),
        output_dir: PathBuf::from(LEGACY_DIR),
    }))
}

/// The original init container's variables: `SECRET_NAME` (AWS, stage `AWSCURRENT`) or
/// `AZURE_VAULT_NAME` + `AZURE_SECRET_NAME` (the latest version in
/// `https://VAULT.vault.azure.net`, or the `--azure-cloud` suffix). Both sets at once, or
/// half of the Azure one, is a usage error rather than a guess.
fn reference(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<SecretRef>> {
    let aws = env("SECRET_NAME");
    let azure = match (env("AZURE_VAULT_NAME"), env("AZURE_SECRET_NAME")) {
        (Some(vault), Some(name)) => Some((vault, name)),
        (None, None) => None,
        (Some(_), None) => bail!("AZURE_VAULT_NAME is set but AZURE_SECRET_NAME is not"),
        (None, Some(_)) => bail!("AZURE_SECRET_NAME is set but AZURE_VAULT_NAME is not"),
    };
    match (aws, azure) {
        (Some(_), Some(_)) => bail!(
            "both SECRET_NAME (AWS) and AZURE_VAULT_NAME/AZURE_SECRET_NAME (Azure) are set; \
             unset one, or name the secret with --secret"
        ),
        (Some(name), None) => SecretRef::parse(&format!("aws://{name}?version-stage=AWSCURRENT"))
            .context("SECRET_NAME")
            .map(Some),
        (None, Some((vault, name))) => SecretRef::parse(&format!("azure://{vault}/{name}"))
            .context("AZURE_VAULT_NAME/AZURE_SECRET_NAME")
            .map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::super::tests::build;
    use std::path::PathBuf;

    #[test]
    fn legacy_environment_is_a_drop_in() {
        let plan = build(&[], &[("SECRET_NAME", "prod/db"), ("MOUNT_NAME", "creds")]).unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/tmp"));
        assert_eq!(plan.items[0].file, "creds");
        assert_eq!(
            plan.items[0].reference.text,
            "aws://prod/db?version-stage=AWSCURRENT"
        );

        let plan = build(&["--output-dir=/shm"], &[("SECRET_NAME", "db")]).unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/shm"));
        assert_eq!(plan.items[0].file, "secret");

        // Explicit secrets win over the legacy variables.
        let plan = build(
            &["--output-dir=/o", "--secret=aws://x"],
            &[("SECRET_NAME", "db")],
        )
        .unwrap();
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].file, "x");
    }
}

#[cfg(all(test, feature = "azure"))]
mod azure_tests {
    use super::super::Plan;
    use crate::cli::Cli;
    use anyhow::Result;
    use clap::Parser;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn build(args: &[&str], env: &[(&str, &str)]) -> Result<Plan> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut full = vec!["secret-sidecar"];
        full.extend_from_slice(args);
        Plan::build_inner(&Cli::try_parse_from(full).unwrap(), &|name| {
            env.get(name).cloned()
        })
    }

    #[test]
    fn azure_vault_and_secret_name_are_a_drop_in() {
        let plan = build(
            &[],
            &[
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db-password"),
            ],
        )
        .unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/tmp"));
        assert_eq!(plan.items[0].file, "secret");
        assert_eq!(plan.items[0].reference.text, "azure://my-vault/db-password");

        let plan = build(
            &["--output-dir=/shm"],
            &[
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db"),
                ("MOUNT_NAME", "creds"),
            ],
        )
        .unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/shm"));
        assert_eq!(plan.items[0].file, "creds");
    }

    #[test]
    fn ambiguous_or_half_legacy_environments_are_usage_errors() {
        for env in [
            &[("AZURE_VAULT_NAME", "my-vault")][..],
            &[("AZURE_SECRET_NAME", "db")][..],
            &[
                ("SECRET_NAME", "prod/db"),
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db"),
            ][..],
            &[("AZURE_VAULT_NAME", "x"), ("AZURE_SECRET_NAME", "db")][..],
        ] {
            assert!(build(&[], env).is_err(), "{env:?} should be rejected");
        }
        // Explicit secrets win, and then the legacy variables are not even read.
        let plan = build(
            &["--output-dir=/o", "--secret=azure://other-vault/x"],
            &[("AZURE_VAULT_NAME", "my-vault")],
        )
        .unwrap();
        assert_eq!(plan.items[0].file, "x");
    }
}
