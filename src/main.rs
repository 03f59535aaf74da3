//! The `portcullis` binary: parse the command line and dispatch.
#![forbid(unsafe_code)]

use clap::{CommandFactory, FromArgMatches, Parser};

fn main() -> std::process::ExitCode {
    let cli = if portcullis::cli::invoked_as_kubectl_plugin(std::env::args_os().next()) {
        // `kubectl portcullis …` runs this binary as `kubectl-portcullis`: help and usage say so.
        let matches = portcullis::cli::Cli::command().bin_name("kubectl portcullis").get_matches();
        portcullis::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        portcullis::cli::Cli::parse()
    };
    portcullis::telemetry::init(&cli.log_level, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portcullis::commands::dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
