//! The `sse-hub` binary: parse the command line, start logging, then run the server (or a
//! helper command).

use std::{
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use clap::Parser as _;
use sse_hub::{
    auth::{self, Claims, JwtAlgorithm, MercureClaim, Role},
    config::{Cli, Command, Settings, TokenArgs},
    healthcheck,
    startup::Application,
};

/// jemalloc: less CPU per event on the fan-out path, and the memory a burst used goes back
/// to the system (see Cargo.toml for the measurements).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let outcome = match cli.command {
        Some(Command::Healthcheck) => healthcheck::check(cli.settings.bind)
            .map_err(|err| format!("healthcheck failed: {err}")),
        Some(Command::Token(args)) => token(&cli.settings, &args).map(|jwt| println!("{jwt}")),
        None => serve(cli.settings),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sse-hub: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).map_err(|err| err.to_string())?;
        app.run_until_stopped()
            .await
            .map_err(|err| format!("server failed: {err}"))
    })
}

/// Signs a token for the configured publisher key (an HS256 secret, or with `--private-key`
/// for RS256).
fn token(settings: &Settings, args: &TokenArgs) -> Result<String, String> {
    let (secret, algorithm) = settings.key_material(Role::Publisher).ok_or(
        "no key configured: pass --jwt-key (or SSE_HUB_JWT_KEY) before `token`".to_owned(),
    )?;
    let material = match (algorithm, &args.private_key) {
        (JwtAlgorithm::Hs256, _) => secret,
        (JwtAlgorithm::Rs256, Some(private_key)) => private_key.as_str(),
        (JwtAlgorithm::Rs256, None) => {
            return Err("the publisher key is RS256: pass --private-key to sign".to_owned());
        }
    };
    let exp = args.expires_in.map(|lifetime| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.as_secs())
            + lifetime.as_secs()
    });
    let claims = Claims {
        mercure: MercureClaim {
            publish: Some(args.publish.clone()),
            subscribe: Some(args.subscribe.clone()),
            payload: None,
        },
        exp,
        nbf: None,
    };
    auth::sign(&claims, material, algorithm)
}
