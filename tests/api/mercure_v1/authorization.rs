//! Access tokens: what is refused (`invalid_token`, `invalid_request`, `insufficient_scope`) and what is accepted.

use super::*;

/// A 1.0 token failing any check is refused with 401 `error="invalid_token"`, on publish and
/// on subscribe: issuer wrong or missing, audience wrong, `exp` missing or past, `nbf` ahead,
/// another algorithm or `none`, another key, and a malformed Mercure authorization detail
/// even beside a valid one (no partial acceptance). The same token without the defect publishes.
#[actix_web::test]
async fn invalid_v1_tokens_are_refused_with_invalid_token() {
    // Arrange
    let app = v1_app().await;
    let now = unix_now().as_secs();
    let changed = |changes: Value| v1_token_changed(publish_everything(), changes);
    // The valid detail first: a hub acting on it alone would accept the token.
    let beside_valid =
        |bad: Value| v1_token(json!([grant(&["publish"], json!([{ "match": "*" }])), bad]));
    let detail = |fields: Value| {
        let mut detail = json!({ "type": DETAIL_TYPE });
        for (name, value) in fields.as_object().expect("fields are an object") {
            detail[name] = value.clone();
        }
        detail
    };
    let any = || json!([{ "match": "https://example.com/a" }]);
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong iss",
            changed(json!({ "iss": "https://other.example" })),
        ),
        ("no iss", changed(json!({ "iss": null }))),
        (
            "wrong aud",
            changed(json!({ "aud": "https://other.example/.well-known/mercure" })),
        ),
        (
            "aud array without the hub",
            changed(json!({ "aud": ["https://other.example/.well-known/mercure"] })),
        ),
        ("no exp", changed(json!({ "exp": null }))),
        ("expired", changed(json!({ "exp": now - 60 }))),
        ("nbf ahead", changed(json!({ "nbf": now + 60 }))),
        (
            "alg HS512",
            sign(
                &header(Algorithm::HS512, "at+jwt"),
                &v1_claims(publish_everything()),
            ),
        ),
        ("alg none", v1_token_unsigned(publish_everything())),
        (
            "another key",
            jsonwebtoken::encode(
                &header(Algorithm::HS256, "at+jwt"),
                &v1_claims(publish_everything()),
                &EncodingKey::from_secret(b"another key"),
            )
            .expect("signs"),
        ),
        (
            "unknown match_type",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match": "https://example.com/a", "match_type": "regex" }],
            }))),
        ),
        (
            "topic matcher not an object",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": ["https://example.com/a"],
            }))),
        ),
        (
            "topic matcher without match",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match_type": "exact" }],
            }))),
        ),
        (
            "no actions",
            beside_valid(detail(json!({ "topics": any() }))),
        ),
        (
            "empty actions",
            beside_valid(detail(json!({ "actions": [], "topics": any() }))),
        ),
        (
            "non-string action",
            beside_valid(detail(json!({ "actions": [1], "topics": any() }))),
        ),
        (
            "no topics",
            beside_valid(detail(json!({ "actions": ["publish"] }))),
        ),
        (
            "empty topics",
            beside_valid(detail(json!({ "actions": ["publish"], "topics": [] }))),
        ),
        (
            "invalid URL pattern in a detail",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match": "https://e.com/(", "match_type": "urlpattern" }],
            }))),
        ),
        (
            "payload not an object",
            beside_valid(detail(json!({
                "actions": ["subscribe"],
                "topics": any(),
                "payload": "not an object",
            }))),
        ),
        (
            "authorization_details not an array",
            v1_token(grant(&["publish"], json!([{ "match": "*" }]))),
        ),
    ];
    let control = post_update(&app, Some(&v1_publisher()), &[("topic", TOPIC)]).await;
    assert_eq!(control.status, StatusCode::OK, "control: {}", control.body);

    for (case, token) in &cases {
        // Act
        let published = post_update(&app, Some(token), &[("topic", TOPIC), ("data", case)]).await;
        let subscribed = get(
            &app,
            &hub_path(&[("match", "*")]),
            &[("authorization", &bearer(token))],
        )
        .await;

        // Assert
        let status = StatusCode::UNAUTHORIZED;
        assert_challenge(
            &published,
            status,
            Some("invalid_token"),
            &format!("publish, {case}"),
        );
        assert_challenge(
            &subscribed,
            status,
            Some("invalid_token"),
            &format!("subscribe, {case}"),
        );
    }
}

/// Well-formed variations of a 1.0 token publish: `aud` as an array containing the hub's
/// audience, `typ` spelled `application/AT+JWT`, and an unknown action beside `publish` with a
/// detail of another type (both ignored).
#[actix_web::test]
async fn valid_v1_token_variants_are_accepted() {
    // Arrange
    let app = v1_app().await;
    let cases = [
        (
            "aud array containing the hub",
            v1_token_changed(
                publish_everything(),
                json!({ "aud": ["https://other.example", DEFAULT_HUB_URL] }),
            ),
        ),
        (
            "typ application/AT+JWT",
            sign(
                &header(Algorithm::HS256, "application/AT+JWT"),
                &v1_claims(publish_everything()),
            ),
        ),
        (
            "unknown action and a foreign detail",
            v1_token(json!([
                { "type": "https://other.example/detail", "anything": [1, 2] },
                grant(&["publish", "archive"], json!([{ "match": "*", "match_type": "exact" }])),
            ])),
        ),
    ];

    for (case, token) in cases {
        // Act
        let reply = post_update(&app, Some(&token), &[("topic", TOPIC), ("data", case)]).await;

        // Assert
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.body);
        assert!(!reply.body.is_empty(), "{case}: the id");
    }
}

/// A token whose `typ` is `JWT` is a 0.x token even with 1.0 claims: without a `mercure` claim
/// it grants nothing, so its publish is refused 403 `insufficient_scope` and not delivered.
#[actix_web::test]
async fn jwt_typ_token_without_mercure_claim_grants_nothing() {
    // Arrange
    let app = v1_compat_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let token = sign(
        &header(Algorithm::HS256, "JWT"),
        &v1_claims(publish_everything()),
    );

    // Act
    let reply = post_update(&app, Some(&token), &[("topic", TOPIC), ("data", "refused")]).await;

    // Assert
    assert_challenge(
        &reply,
        StatusCode::FORBIDDEN,
        Some("insufficient_scope"),
        "typ JWT",
    );
    let marker = publish(
        &app,
        &v1_publisher(),
        &[("topic", TOPIC), ("data", "after")],
    )
    .await;
    assert_next_event(
        &mut subscriber,
        &marker,
        "after",
        "the refused update is not sent",
    )
    .await;
}

/// A hub without `--jwt-issuer` refuses every `at+jwt` token with 401 `invalid_token`, on
/// publish and subscribe; 0.x tokens keep working there (in compat mode).
#[actix_web::test]
async fn hub_without_issuer_refuses_every_v1_token() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.mercure_mode = Mode::Compat;
    })
    .await;
    let cases = [
        ("typ at+jwt", v1_publisher()),
        (
            "typ application/at+jwt",
            sign(
                &header(Algorithm::HS256, "application/at+jwt"),
                &v1_claims(publish_everything()),
            ),
        ),
    ];

    for (case, token) in cases {
        // Act
        let published = post_update(&app, Some(&token), &[("topic", TOPIC)]).await;
        let subscribed = get(
            &app,
            &hub_path(&[("match", "*")]),
            &[("authorization", &bearer(&token))],
        )
        .await;

        // Assert
        let status = StatusCode::UNAUTHORIZED;
        assert_challenge(
            &published,
            status,
            Some("invalid_token"),
            &format!("publish, {case}"),
        );
        assert_challenge(
            &subscribed,
            status,
            Some("invalid_token"),
            &format!("subscribe, {case}"),
        );
    }
    publish(&app, &v0_token(&["*"], &[]), &[("topic", TOPIC)]).await;
}

/// Publishing without a token is 401 with a bare `WWW-Authenticate: Bearer` challenge: no
/// error code, since no token was presented.
#[actix_web::test]
async fn publish_without_token_is_challenged_without_error_code() {
    // Arrange
    let app = v1_app().await;

    // Act
    let reply = post_update(&app, None, &[("topic", TOPIC)]).await;

    // Assert
    assert_challenge(&reply, StatusCode::UNAUTHORIZED, None, "no token");
}

/// An `Authorization` header that is not `Bearer <token>` is 400 with
/// `error="invalid_request"`, on publish and on subscribe.
#[actix_web::test]
async fn malformed_authorization_header_is_an_invalid_request() {
    // Arrange
    let app = v1_app().await;
    let basic = [("authorization", "Basic dXNlcjpwYXNz")];

    // Act
    let mut request = app
        .client
        .post(app.url(HUB))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    for header in basic {
        request = request.insert_header(header);
    }
    let published = Reply::read(
        request
            .send_body(query(&[("topic", TOPIC)]))
            .await
            .expect("answered"),
    )
    .await;
    let subscribed = get(&app, &hub_path(&[("match", "*")]), &basic).await;

    // Assert
    let status = StatusCode::BAD_REQUEST;
    assert_challenge(&published, status, Some("invalid_request"), "publish");
    assert_challenge(&subscribed, status, Some("invalid_request"), "subscribe");
}

/// A token granting `publish` only on the URL pattern `https://example.com/a/:x` publishes to
/// `https://example.com/a/1`, but `https://example.com/b` is refused 403 `insufficient_scope`
/// and not delivered; a `subscribe`-only grant on `*` does not publish either.
#[actix_web::test]
async fn publish_outside_the_granted_topics_is_forbidden_and_not_delivered() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let narrow = v1_token(json!([grant(
        &["publish"],
        json!([{ "match": "https://example.com/a/:x", "match_type": "urlpattern" }])
    )]));
    let subscribe_only = v1_subscriber(json!([{ "match": "*" }]));

    // Act
    let outside = post_update(
        &app,
        Some(&narrow),
        &[("topic", "https://example.com/b"), ("data", "refused")],
    )
    .await;
    let not_publish = post_update(
        &app,
        Some(&subscribe_only),
        &[("topic", "https://example.com/a/1"), ("data", "refused")],
    )
    .await;
    let inside = publish(
        &app,
        &narrow,
        &[("topic", "https://example.com/a/1"), ("data", "allowed")],
    )
    .await;

    // Assert
    let forbidden = StatusCode::FORBIDDEN;
    let scope = Some("insufficient_scope");
    assert_challenge(&outside, forbidden, scope, "topic outside the pattern");
    assert_challenge(&not_publish, forbidden, scope, "subscribe-only grant");
    assert_next_event(&mut subscriber, &inside, "allowed", "only the allowed one").await;
}

/// An update needs `publish` on every one of its topics: a token granting one of two is
/// refused 403 `insufficient_scope` whichever comes first, and the update reaches nobody.
#[actix_web::test]
async fn publish_needs_a_grant_for_every_topic() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;
    let one_topic = v1_token(json!([grant(&["publish"], json!([{ "match": TOPIC }]))]));
    let other = "https://example.com/not-granted";

    for (case, topics) in [
        ("granted topic first", [TOPIC, other]),
        ("granted topic second", [other, TOPIC]),
    ] {
        // Act
        let reply = post_update(
            &app,
            Some(&one_topic),
            &[("topic", topics[0]), ("topic", topics[1]), ("data", case)],
        )
        .await;

        // Assert
        assert_challenge(
            &reply,
            StatusCode::FORBIDDEN,
            Some("insufficient_scope"),
            case,
        );
    }
    let allowed = publish(&app, &one_topic, &[("topic", TOPIC), ("data", "granted")]).await;
    assert_next_event(
        &mut subscriber,
        &allowed,
        "granted",
        "refused ones not sent",
    )
    .await;
}

/// A subscriber's stream ends at its access token's `exp` itself, not `exp` plus the leeway
/// allowed for clock skew (Mercure 1.0: "no later than the token's exp").
#[actix_web::test]
async fn a_stream_ends_at_its_access_tokens_exp() {
    // Arrange
    let app = v1_app_with(|s| s.jwt_leeway = Duration::from_secs(30)).await;
    let exp = unix_now().as_secs() + 2;
    let token = v1_token_changed(
        json!([grant(&["subscribe"], json!([{ "match": "*" }]))]),
        json!({ "exp": exp }),
    );
    let mut stream = subscribe(&app, &[("match", TOPIC)], Some(&token)).await;

    // Act: read until the stream ends (keep-alives come every 50 ms meanwhile).
    let give_up = Instant::now() + Duration::from_secs(40);
    let ended = loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match stream.next_frame_or_end(left).await {
            Some(Some(_)) => continue,
            Some(None) => break unix_now(),
            None => panic!("the stream did not end within 40 s"),
        }
    };

    // Assert: at `exp`, not 30 s later. The bound is 10 s, not the milliseconds it takes: on
    // a loaded machine the end is seen late, and 10 s still tells the leeway apart.
    assert!(
        ended <= Duration::from_secs(exp + 10),
        "ended at {ended:?}, exp {exp} s: the 30 s leeway must not extend the stream"
    );
}
