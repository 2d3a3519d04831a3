//! The Mercure protocol on `/.well-known/mercure`: form publishing, JWT auth (HS256, RS256),
//! private events, CORS, and the quick-start routes' protection.

use std::{
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::http::StatusCode;
use serde_json::json;
use sse_hub::auth::{self, Claims, JwtAlgorithm, MercureClaim, Mode};

use crate::helpers::{FRAME_TIMEOUT, TestApp, assert_json_error, query, spawn_app_with};

pub const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
const HUB: &str = "/.well-known/mercure";

fn claims(publish: &[&str], subscribe: &[&str], exp: Option<u64>) -> Claims {
    Claims {
        mercure: MercureClaim {
            publish: Some(publish.iter().map(|s| (*s).to_owned()).collect()),
            subscribe: Some(subscribe.iter().map(|s| (*s).to_owned()).collect()),
            payload: None,
        },
        exp,
        ..Claims::default()
    }
}

/// An HS256 token for `KEY`.
pub fn token(publish: &[&str], subscribe: &[&str]) -> String {
    auth::sign(&claims(publish, subscribe, None), KEY, JwtAlgorithm::HS256).expect("signs")
}

/// A hub that takes 0.x clients on its Mercure route (compat mode), verifying with [`KEY`].
async fn mercure_app() -> TestApp {
    spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.mercure_mode = Mode::Compat;
    })
    .await
}

/// Posts a Mercure update form with an optional bearer token.
async fn post_update(
    app: &TestApp,
    token: Option<&str>,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = app
        .client
        .post(app.url(HUB))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    if let Some(token) = token {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut response = req.send_body(query(fields)).await.expect("answered");
    let body = response.body().await.expect("body");
    (
        response.status(),
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

fn subscribe_path(topic: &str) -> String {
    format!("{HUB}?{}", query(&[("topic", topic)]))
}

/// A publish with a valid HS256 token answers 200 text/plain with the id, and the subscriber
/// receives that id, type, retry and data byte for byte, blank and indented lines included.
#[actix_web::test]
async fn hs256_publish_is_delivered_byte_exact() {
    let app = mercure_app().await;
    let topic = "https://example.com/books/1";
    let mut subscriber = app
        .subscribe(&subscribe_path("https://example.com/books/{id}"))
        .await;
    assert!(subscriber.headers().contains_key("last-event-id"));

    let (status, id) = post_update(
        &app,
        Some(&token(&["*"], &[])),
        &[
            ("topic", topic),
            ("data", "first line\n\n  indented\n\tlast"),
            ("id", "urn:uuid:5e94c686-2c0b-4f9b-958c-92ccc3bbb4eb"),
            ("type", "book-updated"),
            ("retry", "4000"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(id, "urn:uuid:5e94c686-2c0b-4f9b-958c-92ccc3bbb4eb");

    let event = subscriber.next_event().await;
    assert_eq!(
        event.raw,
        format!(
            "id: {id}\nevent: book-updated\nretry: 4000\ndata: first line\ndata: \ndata:   indented\ndata: \tlast\n\n"
        )
    );

    // Without an id field, the hub makes one and answers with it.
    let (status, generated) = post_update(
        &app,
        Some(&token(&["*"], &[])),
        &[("topic", topic), ("data", "x")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        subscriber.next_event().await.id.as_deref(),
        Some(generated.as_str())
    );
}

/// Missing token, bad signature, `alg: none`, an unexpected algorithm, an expired token, a
/// topic outside the claim and a token without a publish claim are each refused with 401/403
/// and a JSON error; the subscriber then still receives the next event.
#[actix_web::test]
async fn bad_publisher_tokens_are_refused() {
    let app = mercure_app().await;
    let mut subscriber = app.subscribe(&subscribe_path("*")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expired = auth::sign(
        &claims(&["*"], &[], Some(now - 60)),
        KEY,
        JwtAlgorithm::HS256,
    )
    .expect("signs");
    let wrong_key = auth::sign(
        &claims(&["*"], &[], None),
        "another key",
        JwtAlgorithm::HS256,
    )
    .expect("signs");
    // {"alg":"none","typ":"JWT"} . {"mercure":{"publish":["*"]}} . (empty signature)
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";
    // {"alg":"HS512","typ":"JWT"}, signed with the right key but not the configured algorithm.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(&["*"], &[], None),
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("signs");
    let no_claim = auth::sign(&Claims::default(), KEY, JwtAlgorithm::HS256).expect("signs");
    let narrow = token(&["https://example.com/books/{id}"], &[]);

    let cases: [(Option<&str>, &str, StatusCode, &str); 7] = [
        (None, "t", StatusCode::UNAUTHORIZED, "needs a publisher JWT"),
        (
            Some(&wrong_key),
            "t",
            StatusCode::UNAUTHORIZED,
            "invalid signature",
        ),
        (
            Some(alg_none),
            "t",
            StatusCode::UNAUTHORIZED,
            "publisher token",
        ),
        (
            Some(&hs512),
            "t",
            StatusCode::UNAUTHORIZED,
            "not signed with HS256",
        ),
        (Some(&expired), "t", StatusCode::UNAUTHORIZED, "expired"),
        (
            Some(&narrow),
            "https://example.com/authors/1",
            StatusCode::FORBIDDEN,
            "does not allow publishing to topic `https://example.com/authors/1`",
        ),
        (
            Some(&no_claim),
            "t",
            StatusCode::FORBIDDEN,
            "no mercure.publish claim",
        ),
    ];
    for (n, (token, topic, status, needle)) in cases.into_iter().enumerate() {
        let (got, body) = post_update(&app, token, &[("topic", topic), ("data", "refused")]).await;
        assert_json_error(got, &body, status, needle);

        let marker = format!("after case {n}");
        let (ok, id) = post_update(
            &app,
            Some(&self::token(&["*"], &[])),
            &[("topic", "t"), ("data", &marker)],
        )
        .await;
        assert_eq!(ok, StatusCode::OK);
        let event = subscriber.next_event().await;
        assert_eq!(
            (event.id.as_deref(), event.data.as_deref()),
            (Some(id.as_str()), Some(marker.as_str()))
        );
    }
    // A narrow token may publish inside its claim.
    let (ok, _) = post_update(
        &app,
        Some(&narrow),
        &[("topic", "https://example.com/books/7")],
    )
    .await;
    assert_eq!(ok, StatusCode::OK);
}

/// A private event reaches only subscribers whose `mercure.subscribe` claim matches one of its
/// topics, whether the token comes in the header, the cookie or the query string, live and on
/// replay; anonymous subscribers and non-matching claims never see it.
#[actix_web::test]
async fn private_events_reach_only_authorised_subscribers() {
    let app = mercure_app().await;
    let topic = "https://example.com/users/7";
    let allowed = token(&[], &["https://example.com/users/{id}"]);
    let other = token(&[], &["https://example.com/orders/{id}"]);
    let path = subscribe_path("*");

    let mut anonymous = app.subscribe(&path).await;
    let mut not_matching = app
        .subscribe_with(&path, &[("authorization", &format!("Bearer {other}"))])
        .await;
    let mut by_header = app
        .subscribe_with(&path, &[("authorization", &format!("Bearer {allowed}"))])
        .await;
    let mut by_cookie = app
        .subscribe_with(
            &path,
            &[("cookie", &format!("mercureAuthorization={allowed}"))],
        )
        .await;
    let mut by_query = app
        .subscribe(&format!("{path}&{}", query(&[("authorization", &allowed)])))
        .await;

    let publisher = token(&["*"], &[]);
    let (_, private_id) = post_update(
        &app,
        Some(&publisher),
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    let (_, public_id) = post_update(
        &app,
        Some(&publisher),
        &[("topic", topic), ("data", "public")],
    )
    .await;

    for stream in [&mut by_header, &mut by_cookie, &mut by_query] {
        assert_eq!(
            stream.next_event().await.id.as_deref(),
            Some(private_id.as_str())
        );
        assert_eq!(
            stream.next_event().await.id.as_deref(),
            Some(public_id.as_str())
        );
    }
    // Order is preserved, so the public event arriving first proves the private one was skipped.
    for stream in [&mut anonymous, &mut not_matching] {
        assert_eq!(
            stream.next_event().await.id.as_deref(),
            Some(public_id.as_str())
        );
    }

    // On replay the same rule holds.
    let replay = format!("{path}&lastEventID=earliest");
    let mut replay_anonymous = app.subscribe(&replay).await;
    assert_eq!(
        replay_anonymous.next_event().await.id.as_deref(),
        Some(public_id.as_str())
    );
    let mut replay_allowed = app
        .subscribe_with(&replay, &[("authorization", &format!("Bearer {allowed}"))])
        .await;
    assert_eq!(
        replay_allowed.next_event().await.id.as_deref(),
        Some(private_id.as_str())
    );
    assert_eq!(
        replay_allowed.next_event().await.id.as_deref(),
        Some(public_id.as_str())
    );
}

/// Generates an RSA key pair with the `openssl` command: (private PEM, public PEM).
fn rsa_key_pair() -> (String, String) {
    let run = |args: &[&str], input: Option<&str>| -> String {
        use std::io::Write as _;
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the RS256 test needs the `openssl` command (Debian package openssl)");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write");
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?} failed");
        String::from_utf8(out.stdout).expect("PEM is text")
    };
    let private = run(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        None,
    );
    let public = run(&["pkey", "-pubout"], Some(&private));
    (private, public)
}

/// With an RS256 public key configured, tokens signed by its private key publish and
/// subscribe; an HS256 token is refused.
#[actix_web::test]
async fn rs256_tokens_from_a_generated_key_pair() {
    let (private, public) = rsa_key_pair();
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(public.clone());
        s.jwt_alg = JwtAlgorithm::RS256;
        s.mercure_mode = Mode::Compat;
    })
    .await;
    let rs = |publish: &[&str], subscribe: &[&str]| {
        auth::sign(
            &claims(publish, subscribe, None),
            &private,
            JwtAlgorithm::RS256,
        )
        .expect("signs")
    };
    let mut subscriber = app
        .subscribe_with(
            &subscribe_path("*"),
            &[("authorization", &format!("Bearer {}", rs(&[], &["*"])))],
        )
        .await;
    let (status, id) = post_update(
        &app,
        Some(&rs(&["*"], &[])),
        &[("topic", "t"), ("data", "signed"), ("private", "")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    let event = subscriber.next_event().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_deref()),
        (Some(id.as_str()), Some("signed"))
    );

    let (status, body) = post_update(&app, Some(&token(&["*"], &[])), &[("topic", "t")]).await;
    assert_json_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "not signed with RS256",
    );
}

/// With a publisher key configured, `POST /publish` needs a publisher token; the triggers stay
/// open; and `--triggers=false` turns them off.
#[actix_web::test]
async fn quick_start_publish_is_protected_by_the_publisher_key() {
    let app = mercure_app().await;
    let (status, body) = app.post("/publish", "x").await;
    assert_json_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "needs a publisher JWT",
    );
    let mut response = app
        .client
        .post(app.url("/publish?topic=news"))
        .insert_header(("authorization", format!("Bearer {}", token(&["news"], &[]))))
        .send_body("with token")
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.body().await.expect("id").is_empty());
    let (status, body) = app.post("/publish?topic=sports", "outside").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(app.get("/left").await.0, StatusCode::OK);

    let closed = spawn_app_with(|s| s.triggers = false).await;
    let (status, body) = closed.get("/left").await;
    assert_json_error(status, &body, StatusCode::FORBIDDEN, "turned off");
}

/// With `anonymous` off, subscribing without a token is refused with 401; with one it works.
#[actix_web::test]
async fn anonymous_subscribers_can_be_refused() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.anonymous = false;
        s.mercure_mode = Mode::Compat;
    })
    .await;
    let (status, body) = app.get(&subscribe_path("*")).await;
    assert_json_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "needs a subscriber JWT",
    );
    let (status, body) = app.get(HUB).await;
    assert_json_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "needs a subscriber JWT",
    );
    app.subscribe_with(
        &subscribe_path("*"),
        &[("authorization", &format!("Bearer {}", token(&[], &[])))],
    )
    .await;
    let (status, body) = mercure_app().await.get(HUB).await;
    assert_json_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "at least one `topic`",
    );
}

/// Listed origins get CORS with credentials and the Mercure headers in preflight; unlisted
/// origins get no CORS headers on the Mercure route; the quick-start routes keep `*` and
/// advertise the hub with a `Link` header.
#[actix_web::test]
async fn cors_is_per_route() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.cors_allowed_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(actix_web::http::Method::OPTIONS, app.url(HUB))
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", "POST"))
            .insert_header((
                "access-control-request-headers",
                "authorization, last-event-id, cache-control, content-type",
            ))
            .send()
    };
    let response = preflight("https://app.example").await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(header("access-control-allow-origin"), "https://app.example");
    assert_eq!(header("access-control-allow-credentials"), "true");
    for allowed in [
        "authorization",
        "last-event-id",
        "cache-control",
        "content-type",
    ] {
        assert!(
            header("access-control-allow-headers").contains(allowed),
            "{allowed}"
        );
    }
    let response = preflight("https://evil.example").await.expect("answered");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let response = app
        .client
        .get(app.url("/stats"))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .expect("acao"),
        "*"
    );
    assert_eq!(
        response.headers().get("link").expect("link"),
        "</.well-known/mercure>; rel=\"mercure\""
    );
}

/// An HS256 token for `KEY` with any claims, the time claims among them.
fn token_with(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("signs")
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after epoch")
}

/// A token whose `nbf` is a minute ahead is refused with 401 for subscribing and publishing
/// (far beyond the leeway), while the same token without `nbf` is accepted.
#[actix_web::test]
async fn tokens_not_valid_yet_are_refused() {
    let app = mercure_app().await;
    let nbf = unix_now().as_secs() + 60;
    let early = token_with(json!({
        "nbf": nbf,
        "mercure": { "publish": ["*"], "subscribe": ["*"] }
    }));

    let mut response = app
        .client
        .get(app.url(&subscribe_path("*")))
        .insert_header(("authorization", format!("Bearer {early}")))
        .send()
        .await
        .expect("answered");
    // Checked before the body is read: an accepted stream's body never ends.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.body().await.expect("body");
    assert_json_error(
        response.status(),
        std::str::from_utf8(&body).expect("utf-8"),
        StatusCode::UNAUTHORIZED,
        "not valid yet",
    );
    let (status, body) = post_update(&app, Some(&early), &[("topic", "t")]).await;
    assert_json_error(status, &body, StatusCode::UNAUTHORIZED, "not valid yet");

    let now_valid = token_with(json!({ "mercure": { "publish": ["*"] } }));
    let (status, body) = post_update(&app, Some(&now_valid), &[("topic", "t")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A subscriber's stream ends when its token's `exp` passes: it received private events
/// before, the stream then ends (and the hub prunes it), a private event published afterwards
/// never reaches it, and the expired token cannot reconnect; anonymous subscribers and tokens
/// without `exp` keep their streams.
#[actix_web::test]
async fn stream_ends_when_the_subscriber_token_expires() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.jwt_leeway = Duration::ZERO;
        s.mercure_mode = Mode::Compat;
    })
    .await;
    // Expires between 5 and 6 s from now (exp is in whole seconds): room for three subscribes,
    // a publish and two reads on a loaded machine before it does.
    let exp = (unix_now() + Duration::from_secs(6)).as_secs();
    let expiring = token_with(json!({ "exp": exp, "mercure": { "subscribe": ["*"] } }));
    let lasting = token(&[], &["*"]);
    let path = subscribe_path("*");
    let mut expiring_stream = app
        .subscribe_with(
            &path,
            &[("cookie", &format!("mercureAuthorization={expiring}"))],
        )
        .await;
    let mut lasting_stream = app
        .subscribe_with(&path, &[("authorization", &format!("Bearer {lasting}"))])
        .await;
    let mut anonymous = app.subscribe(&path).await;
    let publisher = token(&["*"], &[]);
    let publish_private = |data: &'static str| {
        let publisher = publisher.clone();
        let app = &app;
        async move {
            let (status, id) = post_update(
                app,
                Some(&publisher),
                &[
                    ("topic", "https://example.com/users/7"),
                    ("data", data),
                    ("private", "on"),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{id}");
            id
        }
    };

    let before = publish_private("before expiry").await;
    for stream in [&mut expiring_stream, &mut lasting_stream] {
        assert_eq!(
            stream.next_event().await.id.as_deref(),
            Some(before.as_str())
        );
    }

    // Poll the expiring stream until it ends: only comments may come before that.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_comment = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match expiring_stream.next_frame_within(left).await {
            None => panic!("the stream was still open 10 s after its token's exp"),
            Some(None) => break,
            Some(Some(frame)) => {
                assert!(frame.comment.is_some(), "no event expected, got {frame:?}");
                last_comment = frame.comment;
            }
        }
    }
    assert!(
        unix_now().as_secs() >= exp,
        "the stream ended before the token expired"
    );
    assert_eq!(last_comment.as_deref(), Some("token expired"));
    // Its queue is closed, so the hub prunes it: two subscribers left, and nothing published
    // from now on is queued for it.
    app.wait_for_stats(FRAME_TIMEOUT, |s| s["subscribers"] == 2)
        .await;

    let after = publish_private("after expiry").await;
    assert_eq!(
        lasting_stream.next_event().await.id.as_deref(),
        Some(after.as_str()),
        "a token without exp keeps its stream"
    );
    let (status, public) =
        post_update(&app, Some(&publisher), &[("topic", "t"), ("data", "p")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        anonymous.next_event().await.id.as_deref(),
        Some(public.as_str()),
        "anonymous subscribers are unaffected (and skipped the private events)"
    );

    // The browser's reconnect with the same, expired cookie is refused.
    let mut response = app
        .client
        .get(app.url(&path))
        .insert_header(("cookie", format!("mercureAuthorization={expiring}")))
        .insert_header(("last-event-id", before.as_str()))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.body().await.expect("body");
    assert_json_error(
        response.status(),
        std::str::from_utf8(&body).expect("utf-8"),
        StatusCode::UNAUTHORIZED,
        "expired",
    );
}

/// `sse-hub token --access-token` prints a Mercure 1.0 access token the hub accepts: its
/// `publish` detail (a URL pattern here) allows matching topics and no others (403 with an
/// `insufficient_scope` challenge), and it carries the claims RFC 9068 asks of issuers.
#[actix_web::test]
async fn the_token_command_makes_access_tokens_the_hub_accepts() {
    // Arrange
    let issuer = "https://issuer.example";
    let output = Command::new(crate::helpers::HUB)
        .args([
            "--jwt-key",
            KEY,
            "--jwt-issuer",
            issuer,
            "token",
            "--access-token",
        ])
        .args([
            "--publish",
            "https://example.com/books/:id",
            "--match-type",
            "urlpattern",
        ])
        .args(["--expires-in", "10m"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("text");
    let token = token.trim();
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.jwt_issuer = Some(issuer.to_owned());
    })
    .await;

    // Act
    let allowed = post_update(
        &app,
        Some(token),
        &[("topic", "https://example.com/books/1")],
    )
    .await;
    let mut refused = app
        .client
        .post(app.url(HUB))
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send_body(query(&[("topic", "https://example.com/authors/1")]))
        .await
        .expect("answered");

    // Assert
    assert_eq!(allowed.0, StatusCode::OK, "{}", allowed.1);
    assert!(allowed.1.starts_with("urn:uuid:"), "{}", allowed.1);
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", resource_metadata="),
        "{challenge}"
    );
    let body = refused.body().await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("authors/1"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[sse_hub::config::DEFAULT_HUB_URL]);
    validation.set_issuer(&[issuer]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(KEY.as_bytes()),
        &validation,
    )
    .expect("a valid token")
    .claims;
    for claim in ["iss", "aud", "sub", "client_id", "iat", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "{claim} in {claims}");
    }
    assert_eq!(claims["iss"], issuer);
}

/// Start-up refuses what would make the Mercure route unsafe or undefined, naming the setting:
/// `*` mixed with listed CORS origins (credentials could reach any origin), and a hub URL that
/// is not an absolute http(s) URL with a path.
#[actix_web::test]
async fn unsafe_mercure_settings_are_refused_at_start_up() {
    let build = |adjust: &dyn Fn(&mut sse_hub::config::Settings)| {
        let mut settings = crate::helpers::test_settings();
        adjust(&mut settings);
        sse_hub::startup::Application::build(settings)
            .err()
            .map(|err| err.to_string())
    };

    let mixed = build(&|s| s.cors_allowed_origins = vec!["*".into(), "https://a.example".into()]);
    let relative = build(&|s| s.hub_url = "/.well-known/mercure".to_owned());
    let root = build(&|s| s.hub_url = "https://hub.example/".to_owned());
    let wildcard_alone = build(&|s| s.cors_allowed_origins = vec!["*".into()]);

    assert!(
        mixed
            .as_deref()
            .is_some_and(|e| e.contains("--cors-allowed-origins")),
        "{mixed:?}"
    );
    for refused in [relative, root] {
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.starts_with("--hub-url")),
            "{refused:?}"
        );
    }
    assert_eq!(
        wildcard_alone, None,
        "`*` alone is allowed (without credentials)"
    );
}
