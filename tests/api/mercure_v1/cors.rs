//! CORS on the Mercure route: listed origins with credentials, and the wildcard without.

use super::*;

/// With `cors_allowed_origins = ["https://app.example"]`, a subscribe from that origin gets it
/// reflected with `Access-Control-Allow-Credentials: true` and the Mercure headers exposed;
/// another origin gets no `Access-Control-Allow-Origin`.
#[actix_web::test]
async fn cors_reflects_listed_origins_with_credentials() {
    // Arrange
    let app =
        v1_app_with(|s| s.cors_allowed_origins = vec!["https://app.example".to_owned()]).await;
    let path = hub_path(&[("match", "*")]);

    // Act
    let listed = get(&app, &path, &[("origin", "https://app.example")]).await;
    let unlisted = get(&app, &path, &[("origin", "https://evil.example")]).await;

    // Assert
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        listed.header("access-control-allow-credentials"),
        Some("true")
    );
    let exposed = listed
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for header in ["last-event-id", "mercure-last-event-id", "link"] {
        assert!(
            exposed.split(',').any(|name| name.trim() == header),
            "{header} not in Access-Control-Expose-Headers: {exposed}"
        );
    }
    assert_eq!(unlisted.header("access-control-allow-origin"), None);
}

/// With `cors_allowed_origins = ["*"]`, any origin gets `Access-Control-Allow-Origin: *` and no
/// `Access-Control-Allow-Credentials` header: credentials never go with a wildcard.
#[actix_web::test]
async fn cors_wildcard_allows_any_origin_without_credentials() {
    // Arrange
    let app = v1_app_with(|s| s.cors_allowed_origins = vec!["*".to_owned()]).await;

    // Act
    let reply = get(
        &app,
        &hub_path(&[("match", "*")]),
        &[("origin", "https://anywhere.example")],
    )
    .await;

    // Assert
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
}
