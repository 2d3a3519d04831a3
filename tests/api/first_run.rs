//! A new user's first minutes: the hub refuses an address in use with one line, the demo page
//! has its icon, and the README's commands work as written on a fresh machine.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;

use crate::helpers::{ChildHub, HUB, hub_command, spawn_app};

/// How long a hub that cannot start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The README, as the repository has it.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable")
}

/// Every line of the README's `sh` code blocks.
fn shell_lines(readme: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            in_shell = !in_shell && (info.trim() == "sh" || info.trim() == "bash");
            continue;
        }
        if in_shell {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// Starting on an address another process holds ends with one line naming the address and the
/// reason, and a non-zero exit code: no panic.
#[test]
fn an_address_in_use_is_one_line_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address").to_string();

    let mut child = Command::new(HUB)
        .args(["--bind", &addr])
        .env_remove("SSE_HUB_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hub binary starts");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the hub can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the hub kept running on an address in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = child
        .wait_with_output()
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap_or_default();

    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `/favicon.ico` is an icon (browsers ask for it with the demo page), and the page names it.
#[actix_web::test]
async fn the_demo_page_has_an_icon() {
    let app = spawn_app().await;

    let mut response = app
        .client
        .get(app.url("/favicon.ico"))
        .send()
        .await
        .expect("answered");
    let body = response.body().await.expect("a body");
    let (_, page) = app.get("/").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/x-icon")
    );
    assert!(body.starts_with(&[0, 0, 1, 0]), "an ICO header");
    assert!(page.contains(r#"rel="icon" href="/favicon.ico""#));
}

/// The README's file-store example runs as written from a fresh directory: its store path
/// needs no directory that only the image has.
#[test]
fn the_readme_file_store_example_starts_on_a_fresh_machine() {
    let readme = readme();
    let stores: Vec<String> = shell_lines(&readme)
        .iter()
        .filter(|line| line.contains("cargo run"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("--store file:")?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .collect();
    assert!(
        !stores.is_empty(),
        "README has a `cargo run ... --store file:PATH` example"
    );

    for store in stores {
        let dir = tempfile::tempdir().expect("a fresh directory");
        let mut command = hub_command(&format!("file:{store}"), &[]);
        command.current_dir(dir.path());
        // Panics with the hub's log if it does not listen.
        let hub = ChildHub::spawn(command);
        assert!(hub.addr.port() > 0, "{store}");
    }
}

/// The README runs the hub as something a fresh checkout has (`cargo run`, `target/release/…`,
/// the image), never as a bare `sse-hub` on `PATH`; and it never finds a hub's pid by name,
/// which picks the wrong one (or several) when two hubs run.
#[test]
fn the_readme_runs_only_commands_a_fresh_checkout_has() {
    let readme = readme();
    let sse_load_help = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/sse-load/src/main.rs"
    ))
    .expect("sse-load's source is readable");

    let bare: Vec<String> = shell_lines(&readme)
        .into_iter()
        .filter(|line| {
            line.split_whitespace()
                .find(|word| !word.contains('='))
                .is_some_and(|command| command == "sse-hub")
        })
        .collect();

    assert!(!shell_lines(&readme).is_empty(), "README has sh examples");
    assert_eq!(bare, Vec::<String>::new(), "bare `sse-hub` commands");
    for (name, text) in [("README.md", &readme), ("sse-load --help", &sse_load_help)] {
        assert!(
            !text.contains("pidof sse-hub"),
            "{name} finds the hub by name"
        );
    }
}
