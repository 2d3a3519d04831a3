//! The demo page in a real browser: headless Chromium driven over WebDriver (chromedriver).

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{
    child::free_port,
    helpers::{spawn_app, spawn_app_with},
    mercure::{KEY, token},
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the browser may take to load a page or show an expected change.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver process on a free port, killed on drop.
pub(crate) struct Chromedriver {
    child: Child,
    addr: SocketAddr,
    profile: PathBuf,
}

impl Chromedriver {
    pub(crate) fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the browser tests need Debian's `chromium` and \
                 `chromium-driver` packages (scripts/test installs them)"
            );
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = std::env::temp_dir().join(format!("sse-hub-chromium-{}", addr.port()));
        Self {
            child,
            addr,
            profile,
        }
    }

    /// A headless Chromium session (flags this sandboxed, offline machine needs).
    pub(crate) async fn browser(&self) -> Client {
        self.browser_with(&[]).await
    }

    /// A headless Chromium session started with `extra` command-line flags too.
    pub(crate) async fn browser_with(&self, extra: &[String]) -> Client {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,860",
        ]
        .map(str::to_owned)
        .into();
        args.push(format!("--user-data-dir={}", self.profile.display()));
        args.extend_from_slice(extra);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", self.addr))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where screenshots go: `target/artifacts/`.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.join(name)
}

/// Waits until the demo page says its own stream is connected.
pub(crate) async fn wait_connected(browser: &Client) {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//*[@id='state' and text()='connected']"))
        .await
        .expect("the page shows \"connected\"");
}

async fn wait_for_entry(browser: &Client, data: &str) {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!(
            "//li[contains(@class,'entry')]/span[contains(@class,'data') and text()='{data}']"
        )))
        .await
        .unwrap_or_else(|err| panic!("the log shows {data:?}: {err}"));
}

/// The data column of every log entry, newest first.
async fn logged(browser: &Client) -> Vec<String> {
    let mut texts = Vec::new();
    for cell in browser
        .find_all(Locator::Css("#log li.entry .data"))
        .await
        .expect("log entries")
    {
        texts.push(cell.text().await.expect("entry text"));
    }
    texts
}

/// The demo page connects, its "left" button publishes and the log shows the event, events of
/// any type show with their type; a second tab filtered to one topic sees only that topic's
/// events. Screenshots are saved to
/// `target/artifacts/`.
#[actix_web::test]
async fn demo_page_shows_events_and_filters_by_topic() {
    let app = spawn_app().await;
    let driver = Chromedriver::start();
    let browser = driver.browser().await;

    browser.goto(&app.url("/")).await.expect("the page loads");
    wait_connected(&browser).await;
    browser
        .find(Locator::Id("left"))
        .await
        .expect("a left button")
        .click()
        .await
        .expect("click");
    wait_for_entry(&browser, "left").await;
    let first_tab = browser.window().await.expect("a window");

    let second = browser.new_window(true).await.expect("a second tab");
    browser
        .switch_to_window(second.handle)
        .await
        .expect("switch");
    browser
        .goto(&app.url("/?topic=chat"))
        .await
        .expect("the page loads");
    wait_connected(&browser).await;
    app.publish("topic=weather", "not for chat").await;
    app.publish("topic=chat", "for chat").await;
    wait_for_entry(&browser, "for chat").await;
    assert_eq!(logged(&browser).await, ["for chat"], "only the chat topic");
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(artifact("demo-page-filtered.png"), png).expect("save screenshot");

    browser
        .switch_to_window(first_tab)
        .await
        .expect("switch back");
    wait_for_entry(&browser, "for chat").await;
    // An event type the page never named shows too (EventSource alone would not deliver it).
    app.publish("topic=books&event=book-updated", "Dune").await;
    wait_for_entry(&browser, "Dune").await;
    let newest_type = browser
        .find(Locator::Css("#log li.entry .type"))
        .await
        .expect("a type cell")
        .text()
        .await
        .expect("its text");
    assert_eq!(newest_type, "book-updated");
    assert_eq!(
        logged(&browser).await,
        ["Dune", "for chat", "not for chat", "left"],
        "the unfiltered tab sees every topic and type, newest first"
    );
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(artifact("demo-page.png"), png).expect("save screenshot");
    browser.close().await.expect("close the session");
}

/// Runs in the page: subscribes with `EventSource` on the Mercure route, publishes a private
/// then a public update with `fetch` and a Bearer token, and reports what the page saw once
/// the public one arrives (order is kept, so a private event would have come first).
const MERCURE_PAGE_SCRIPT: &str = r#"
const [topic, token, done] = arguments;
const seen = [];
const source = new EventSource("/.well-known/mercure?topic=" + encodeURIComponent(topic));
const post = (fields) => fetch("/.well-known/mercure", {
  method: "POST",
  headers: { "Authorization": "Bearer " + token },
  body: new URLSearchParams(fields),
}).then((r) => r.text());
source.onmessage = (e) => {
  seen.push({ id: e.lastEventId, data: e.data });
};
source.onopen = async () => {
  const privateId = await post({ topic, data: "private data", private: "on" });
  const publicId = await post({ topic, data: "hello\n\n  from the hub" });
  const wait = () => seen.length ? (source.close(), done({ privateId, publicId, seen })) : setTimeout(wait, 10);
  wait();
};
"#;

/// A page served by the hub at `/` subscribes to the Mercure route with `EventSource` and
/// publishes with `fetch` and a Bearer token: it sees `e.lastEventId` and `e.data` as posted,
/// and does not see the private update.
#[actix_web::test]
async fn browser_page_speaks_mercure() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.mercure_mode = sse_hub::auth::Mode::Compat;
    })
    .await;
    let driver = Chromedriver::start();
    let browser = driver.browser().await;
    browser.goto(&app.url("/")).await.expect("the page loads");

    let result = browser
        .execute_async(
            MERCURE_PAGE_SCRIPT,
            vec![
                serde_json::json!("https://example.com/books/1"),
                serde_json::json!(token(&["*"], &[])),
            ],
        )
        .await
        .expect("the script completes");
    let public_id = result["publicId"].as_str().expect("an id");
    assert!(!result["privateId"].as_str().expect("an id").is_empty());
    assert_eq!(
        result["seen"],
        serde_json::json!([{ "id": public_id, "data": "hello\n\n  from the hub" }]),
        "the page saw exactly the public update, as posted"
    );
    browser.close().await.expect("close the session");
}

/// Runs in the page: one Mercure 0.x `EventSource` (`topic=`), one Mercure 1.0 `EventSource`
/// (`match_urlpattern=`) without credentials, and one 1.0 `EventSource` sent the subscriber's
/// access token in the `mercureAuthorization` cookie; publishes a private then a public update
/// with `fetch` and a 1.0 Bearer token, and reports what each saw once the last has two events.
const MERCURE_V1_PAGE_SCRIPT: &str = r#"
const [topic, pattern, publisher, subscriber, done] = arguments;
const hub = "/.well-known/mercure";
const seen = { legacy: [], anonymous: [], authorized: [] };
const open = (name, query) => new Promise((resolve) => {
  const source = new EventSource(hub + "?" + query);
  source.onmessage = (e) => seen[name].push({ id: e.lastEventId, data: e.data });
  source.onopen = () => resolve(source);
});
const post = (fields) => fetch(hub, {
  method: "POST",
  headers: { "Authorization": "Bearer " + publisher },
  body: new URLSearchParams(fields),
}).then((r) => r.text());
(async () => {
  const sources = [
    await open("legacy", new URLSearchParams({ topic })),
    await open("anonymous", new URLSearchParams({ match_urlpattern: pattern })),
  ];
  document.cookie = "mercureAuthorization=" + subscriber + "; path=/.well-known/mercure";
  sources.push(await open("authorized", new URLSearchParams({ match: topic })));
  const privateId = await post({ topic, data: "private data", private: "on" });
  const publicId = await post({ topic, data: "public data" });
  const wait = () => {
    if (seen.authorized.length < 2 || !seen.legacy.length || !seen.anonymous.length) {
      return setTimeout(wait, 10);
    }
    sources.forEach((s) => s.close());
    done({ privateId, publicId, seen });
  };
  wait();
})();
"#;

/// A signed Mercure 1.0 access token (`typ: at+jwt`) for the browser test, granting `action`
/// on every topic.
fn access_token(action: &str) -> String {
    let header = jsonwebtoken::Header {
        typ: Some("at+jwt".to_owned()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let claims = serde_json::json!({
        "iss": "https://issuer.example",
        "aud": sse_hub::config::DEFAULT_HUB_URL,
        "sub": "browser",
        "exp": 4_102_444_800_u64,
        "authorization_details": [{
            "type": sse_hub::auth::DETAIL_TYPE,
            "actions": [action],
            "topics": [{ "match": "*" }],
        }],
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("signs")
}

/// In Chromium, a Mercure 0.x and a Mercure 1.0 `EventSource` on one page receive the same
/// public update, published with a 1.0 access token; the private one reaches only the 1.0
/// subscriber whose cookie carries a token allowed to read it, with the ids the hub answered.
#[actix_web::test]
async fn browser_page_speaks_mercure_1_and_0_side_by_side() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.jwt_issuer = Some("https://issuer.example".to_owned());
        s.mercure_mode = sse_hub::auth::Mode::Compat;
    })
    .await;
    let driver = Chromedriver::start();
    let browser = driver.browser().await;
    browser.goto(&app.url("/")).await.expect("the page loads");

    let result = browser
        .execute_async(
            MERCURE_V1_PAGE_SCRIPT,
            vec![
                serde_json::json!("https://example.com/books/1"),
                serde_json::json!("https://example.com/books/:id"),
                serde_json::json!(access_token("publish")),
                serde_json::json!(access_token("subscribe")),
            ],
        )
        .await
        .expect("the script completes");
    let private_id = result["privateId"].as_str().expect("an id");
    let public_id = result["publicId"].as_str().expect("an id");
    assert!(public_id.starts_with("urn:uuid:"), "{public_id}");
    let public = serde_json::json!({ "id": public_id, "data": "public data" });
    assert_eq!(result["seen"]["legacy"], serde_json::json!([public]));
    assert_eq!(result["seen"]["anonymous"], serde_json::json!([public]));
    assert_eq!(
        result["seen"]["authorized"],
        serde_json::json!([{ "id": private_id, "data": "private data" }, public]),
        "the subscriber with the cookie saw the private update, then the public one"
    );
    browser.close().await.expect("close the session");
}
