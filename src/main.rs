//! The `sse-hub` server binary: parse the settings, start logging, run.

use clap::Parser as _;
use sse_hub::{config::Settings, startup::Application};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let settings = Settings::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    Application::build(settings)?.run_until_stopped().await
}
