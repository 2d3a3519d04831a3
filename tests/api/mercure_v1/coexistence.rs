//! Mercure 0.x and 1.0 clients on one route: the same public update, both token kinds.

use super::*;

/// A 0.x subscriber (`topic=`) and a 1.0 subscriber (`match=`) on one hub receive the same
/// public update: the same id and the same data.
#[actix_web::test]
async fn v0_and_v1_subscribers_receive_the_same_public_update() {
    // Arrange
    let app = v1_compat_app().await;
    let topic = "https://example.com/books/1";
    let mut v0 = app.subscribe(&hub_path(&[("topic", topic)])).await;
    let mut v1 = subscribe(&app, &[("match", topic)], None).await;

    // Act
    let id = publish(&app, &v1_publisher(), &[("topic", topic), ("data", "both")]).await;

    // Assert
    assert_next_event(&mut v0, &id, "both", "0.x subscriber").await;
    assert_next_event(&mut v1, &id, "both", "1.0 subscriber").await;
}

/// A 0.x token (`mercure.publish`) and a 1.0 token (`authorization_details`) both publish on
/// one hub, and a subscriber receives both updates in order.
#[actix_web::test]
async fn v0_and_v1_tokens_both_publish() {
    // Arrange
    let app = v1_compat_app().await;
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;

    // Act
    let from_v0 = publish(
        &app,
        &v0_token(&["*"], &[]),
        &[("topic", TOPIC), ("data", "0.x")],
    )
    .await;
    let from_v1 = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "1.0")]).await;

    // Assert
    assert_next_event(&mut subscriber, &from_v0, "0.x", "0.x token").await;
    assert_next_event(&mut subscriber, &from_v1, "1.0", "1.0 token").await;
}
