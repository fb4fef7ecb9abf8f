//! `galley`: a thin command line over Galley's library crates.

mod app;
mod cli;
mod commands;
mod error;
mod export;
mod migrate;
mod platforms;
mod render;
mod settings;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("GALLEY_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let color = !cli.no_color && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Settings layer under the flags: galley.toml next to the blueprint (or in the current
    // directory), then GALLEY_* variables, then the command line.
    let project_dir = cli
        .command
        .blueprint_args_mut()
        .and_then(|bp| bp.file.parent().map(|p| p.to_path_buf()))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let settings = match settings::settings(&project_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    cli.command.apply_settings(&settings);
    let output = cli.output.unwrap_or(match settings.output {
        settings::OutputFormat::Json => cli::Output::Json,
        settings::OutputFormat::Human => cli::Output::Human,
    });
    cli.output = Some(output);
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
