//! `cocos-measure`: the command line over the `cocos_measure` library.
//!
//! Two faces: a sev-snp-measure compatible one (`cocos-measure --mode snp …`, digest
//! alone on stdout, same flags and precedence, so it can replace that tool in a
//! script), and subcommands (`snp`, `seves`, `sev`, `matrix`, `inspect`,
//! `vcpu-types`, `tdx`) with `--json`. Every error is one line on stderr and exit
//! code 2. [`cli`] parses and dispatches to [`commands`]; [`pyint`] and [`render`] hold
//! the argument syntax and output shared by the SEV commands.

mod cli;
mod commands;
mod pyint;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COCOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            cocos_measure::cli_error::report("cocos-measure", e.as_ref());
            ExitCode::from(2)
        }
    }
}
