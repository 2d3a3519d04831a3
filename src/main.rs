//! The `sse-hub` binary: parse the command line, start logging, then run the server (or a
//! helper command).

use std::{
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser as _;
use sse_hub::{
    auth::{self, Claims, JwtAlgorithm, MercureClaim, Role},
    config::{Cli, Command, Settings, TokenArgs},
    healthcheck,
    startup::Application,
    url_pattern::HubUrl,
};

/// jemalloc: less CPU per event on the fan-out path, and the memory a burst used goes back
/// to the system, by its background threads even when the hub is idle (see Cargo.toml for the
/// measurements).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let outcome = match cli.command {
        Some(Command::Healthcheck) => {
            healthcheck::check(cli.settings.bind, cli.settings.serves_tls())
                .map_err(|err| format!("healthcheck failed: {err}"))
        }
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

/// Signs a token for the configured publisher key (an HMAC secret, or with `--private-key`
/// for a key pair's algorithm).
fn token(settings: &Settings, args: &TokenArgs) -> Result<String, String> {
    let (secret, algorithm) = settings.key_material(Role::Publisher).ok_or(
        "no key configured: pass --jwt-key (or SSE_HUB_JWT_KEY) before `token`".to_owned(),
    )?;
    let hmac = matches!(
        algorithm,
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
    );
    let material = match (hmac, &args.private_key) {
        (true, _) => secret,
        (false, Some(private_key)) => private_key.as_str(),
        (false, None) => {
            return Err(format!(
                "the publisher key is {algorithm}: pass --private-key to sign"
            ));
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_secs());
    if args.access_token {
        return access_token(settings, args, material, algorithm, now);
    }
    let exp = args.expires_in.map(|lifetime| now + lifetime.as_secs());
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

/// A Mercure 1.0 access token (RFC 9068) with the claims an issuer must populate, granting
/// `publish` and `subscribe` on the selectors given.
fn access_token(
    settings: &Settings,
    args: &TokenArgs,
    material: &str,
    algorithm: JwtAlgorithm,
    now: u64,
) -> Result<String, String> {
    let issuer = settings
        .jwt_issuer
        .as_deref()
        .ok_or("--access-token needs --jwt-issuer (or SSE_HUB_JWT_ISSUER): the token's iss")?;
    let hub = HubUrl::parse(&settings.hub_url).map_err(|err| format!("--hub-url: {err}"))?;
    let audience = settings.audience(&hub);
    auth::AccessTokenRequest {
        issuer,
        audience: &audience,
        subject: &args.subject,
        now,
        lifetime: args.expires_in.unwrap_or(Duration::from_secs(3600)),
        publish: &args.publish,
        subscribe: &args.subscribe,
        match_type: &args.match_type,
        payload: args.payload.as_ref(),
    }
    .sign(material, algorithm)
}
