//! `galley`: a thin command line over Galley's library crates.

mod app;
mod cli;
mod commands;
mod error;
mod platforms;
mod render;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("GALLEY_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let output = cli.output;
    let color = !cli.no_color && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            match output {
                cli::Output::Json => println!("{}", serde_json::to_string_pretty(&e.to_json()).unwrap_or_default()),
                cli::Output::Human => eprintln!("{}", e.render(color)),
            }
            ExitCode::FAILURE
        }
    }
}
