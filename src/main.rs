//! secret-sidecar: fetch secrets with the workload's identity, publish them atomically to
//! an in-memory directory, exit.
//!
//! `main` is a thin shell: parse the command line, set up logs, run, and turn the outcome
//! into an exit code. Everything that can fail is in `secret_sidecar::run::run`.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use clap::Parser;

use secret_sidecar::exit::Class;
use secret_sidecar::{cli, logging, run};

fn main() -> ExitCode {
    // clap exits by itself: 0 for --help and --version, 2 for a malformed command line.
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for name in cli::unknown_env_vars(names) {
        tracing::warn!("{name} is set but no option reads it (misspelt?); see --help");
    }

    // A panic's message could in principle carry data; log only where it happened.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
        tracing::error!(
            exit_code = Class::Internal.code(),
            "internal error: panic at {location}; please report it"
        );
    }));

    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| anyhow::Error::new(err).context("starting the async runtime"))?;
        runtime.block_on(run::run(&cli))
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            let class = Class::of(&err);
            tracing::error!(exit_code = class.code(), "{err:#}");
            class.into()
        }
        Err(_) => Class::Internal.into(),
    }
}
