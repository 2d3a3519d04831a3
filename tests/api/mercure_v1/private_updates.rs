//! Private updates: delivered live and on replay only to subscribers granted one of their topics.

use super::*;

const CANONICAL: &str = "https://example.com/books/1";
const ALTERNATE: &str = "https://example.com/users/42/books/1";

/// Tokens granting `subscribe` on the private update's canonical topic, and on its alternate
/// topic through a URL pattern.
fn granted_tokens() -> [(&'static str, String); 2] {
    [
        ("canonical", v1_subscriber(json!([{ "match": CANONICAL }]))),
        (
            "alternate",
            v1_subscriber(json!([{
                "match": "https://example.com/users/42/*",
                "match_type": "urlpattern",
            }])),
        ),
    ]
}

/// Tokens that must not see the private update: none, a grant on other topics, and a
/// `publish`-only grant on its canonical topic.
fn refused_tokens() -> [(&'static str, Option<String>); 3] {
    [
        ("anonymous", None),
        (
            "other topics",
            Some(v1_subscriber(json!([{
                "match": "https://example.com/orders/:id",
                "match_type": "urlpattern",
            }]))),
        ),
        (
            "publish-only",
            Some(v1_token(json!([grant(
                &["publish"],
                json!([{ "match": CANONICAL }])
            )]))),
        ),
    ]
}

/// Publishes the private update on both topics, then a public one; returns their ids.
async fn publish_private_then_public(app: &TestApp) -> (String, String) {
    let publisher = v1_publisher();
    let private = publish(
        app,
        &publisher,
        &[
            ("topic", CANONICAL),
            ("topic", ALTERNATE),
            ("data", "secret"),
            ("private", "on"),
        ],
    )
    .await;
    let public = publish(app, &publisher, &[("topic", CANONICAL), ("data", "public")]).await;
    (private, public)
}

/// Live, a private update reaches the subscribers whose token grants `subscribe` on its
/// canonical or its alternate topic, and no one else: not anonymous subscribers, not grants on
/// other topics, not a `publish`-only grant on its topic.
#[actix_web::test]
async fn private_update_reaches_only_subscribers_granted_one_of_its_topics() {
    // Arrange
    let app = v1_app().await;
    let all = [("match", "*")];
    let mut granted = Vec::new();
    for (case, token) in granted_tokens() {
        granted.push((case, subscribe(&app, &all, Some(&token)).await));
    }
    let mut refused = Vec::new();
    for (case, token) in refused_tokens() {
        refused.push((case, subscribe(&app, &all, token.as_deref()).await));
    }

    // Act
    let (private, public) = publish_private_then_public(&app).await;

    // Assert
    for (case, stream) in &mut granted {
        assert_next_event(stream, &private, "secret", case).await;
        assert_next_event(stream, &public, "public", case).await;
    }
    // Order is kept, so the public update first proves the private one was skipped.
    for (case, stream) in &mut refused {
        assert_next_event(stream, &public, "public", case).await;
    }
}

/// On replay (`last_event_id` from before it), a private update reaches exactly the same
/// subscribers as live: those granted one of its topics.
#[actix_web::test]
async fn private_update_on_replay_reaches_only_granted_subscribers() {
    // Arrange
    let app = v1_app().await;
    let start = publish(&app, &v1_publisher(), &[("topic", TOPIC)]).await;
    let (private, public) = publish_private_then_public(&app).await;
    let resume = [("match", "*"), ("last_event_id", start.as_str())];

    for (case, token) in granted_tokens() {
        // Act
        let mut stream = subscribe(&app, &resume, Some(&token)).await;

        // Assert
        assert_next_event(&mut stream, &private, "secret", case).await;
        assert_next_event(&mut stream, &public, "public", case).await;
    }
    for (case, token) in refused_tokens() {
        let mut stream = subscribe(&app, &resume, token.as_deref()).await;
        assert_next_event(&mut stream, &public, "public", case).await;
    }
}
