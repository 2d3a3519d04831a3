//! The `sse-hub` binary: parse the command line, start logging, then run the server (or a
//! helper command).

use std::process::ExitCode;

use clap::Parser as _;
use sse_hub::{
    config::{Cli, Command},
    healthcheck,
    startup::Application,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Some(Command::Healthcheck) => match healthcheck::check(cli.settings.bind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("healthcheck failed: {err}");
                ExitCode::FAILURE
            }
        },
        None => match serve(cli.settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                log::error!("server failed error={err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(settings: sse_hub::config::Settings) -> std::io::Result<()> {
    actix_web::rt::System::new()
        .block_on(async move { Application::build(settings)?.run_until_stopped().await })
}
