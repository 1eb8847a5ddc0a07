//! secret-sidecar: fetch secrets with the workload's identity, publish them atomically to
//! an in-memory directory, exit.
//!
//! `main` is a thin shell: parse the command line, set up logs, run the mode asked for,
//! and turn the outcome into an exit code. Everything that can fail is in the modes
//! (`secret_sidecar::init`, `secret_sidecar::token`, `secret_sidecar::refresh`,
//! `secret_sidecar::imds_proxy`).

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use clap::Parser;

use secret_sidecar::exit::Failure;
use secret_sidecar::{cli, init, logging, refresh};

fn main() -> ExitCode {
    // clap exits by itself: 0 for --help and --version, 2 for a malformed command line.
    let cli = cli::Cli::parse();
    logging::init(&cli.log);
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for name in cli::unknown_env_vars(names) {
        tracing::warn!("{name} is set but no option reads it (misspelt?); see --help");
    }

    if cli.refresh.probe {
        return refresh_probe(&cli);
    }
    #[cfg(feature = "aws")]
    if let Some(cli::Command::Token(args)) = &cli.command
        && args.token_probe
    {
        return probe(args);
    }

    #[cfg(feature = "azure")]
    if let Some(cli::Command::ImdsProxy(args)) = &cli.command
        && args.imds_probe
    {
        return imds_probe(args);
    }

    // A panic's message could in principle carry data; log only where it happened.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
        tracing::error!(
            exit_code = Failure::Internal.code(),
            "internal error: panic at {location}; please report it"
        );
    }));

    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| anyhow::Error::new(err).context("starting the async runtime"))?;
        let outcome = runtime.block_on(async {
            match &cli.command {
                None if cli.refresh.refresh.is_some() => refresh::run(&cli).await,
                None => init::run(&cli).await,
                #[cfg(feature = "aws")]
                Some(cli::Command::Token(args)) => secret_sidecar::token::run(args, &cli).await,
                #[cfg(feature = "azure")]
                Some(cli::Command::ImdsProxy(args)) => {
                    secret_sidecar::imds_proxy::run(args, &cli).await
                }
                #[cfg(feature = "webhook")]
                Some(cli::Command::Webhook(args)) => secret_sidecar::webhook::run(args).await,
                // A Google-only build without the webhook has no subcommand (token mode
                // exchanges with AWS STS, the IMDS proxy with Entra ID).
                #[cfg(not(any(feature = "aws", feature = "azure", feature = "webhook")))]
                Some(command) => match *command {},
            }
        });
        // The outcome is known. A blocking DNS lookup still in flight (a resolver that never
        // answered within --timeout) must not hold the process: dropping the runtime would
        // wait for it.
        runtime.shutdown_background();
        outcome
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            let class = Failure::of(&err);
            tracing::error!(exit_code = class.code(), "{err:#}");
            class.into()
        }
        Err(_) => Failure::Internal.into(),
    }
}

/// `token --probe`: 0 when the token file is ready, 1 when not, with the reason on stderr.
#[cfg(feature = "aws")]
fn probe(args: &cli::TokenArgs) -> ExitCode {
    match secret_sidecar::token::probe(&args.token_file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::warn!("token not ready: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `imds-proxy --probe`: 0 when the proxy answers a token for its resource, 1 when not,
/// with the reason on stderr.
#[cfg(feature = "azure")]
fn imds_probe(args: &cli::ImdsProxyArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::new)
        .and_then(|runtime| runtime.block_on(secret_sidecar::imds_proxy::probe(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::warn!("IMDS proxy not ready: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--probe`: 0 while a refresh process keeps `--output-dir` current, 1 when not, with the
/// reason on stderr.
fn refresh_probe(cli: &cli::Cli) -> ExitCode {
    let Some(dir) = &cli.output_dir else {
        tracing::error!(
            "--probe needs --output-dir, the directory the refresh process publishes to"
        );
        return Failure::Usage.into();
    };
    match refresh::probe(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::warn!("not ready: {err:#}");
            ExitCode::FAILURE
        }
    }
}
