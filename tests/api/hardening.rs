//! What a hostile or careless client could make the hub spend or get wrong: compiled
//! selectors released with their subscribers and bounded in bytes, templates too complex to
//! match in one pass refused, closed subscribers pruned at once, strict UTF-8 after
//! percent-decoding, and `private` honoured on `/publish`.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;

use crate::{
    helpers::{
        ChildHub, SETTLE_TIMEOUT, TestApp, assert_json_error, hub_command, query, spawn_app_with,
    },
    mercure::token,
};

/// The `sse_hub_selector_bytes` gauge from `/metrics`.
async fn selector_bytes(app: &TestApp) -> u64 {
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    body.lines()
        .find_map(|line| line.strip_prefix("sse_hub_selector_bytes "))
        .unwrap_or_else(|| panic!("no sse_hub_selector_bytes in /metrics:\n{body}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Polls `/metrics` until the compiled templates in use keep `expected` bytes.
async fn wait_for_selector_bytes(
    app: &TestApp,
    deadline: Duration,
    expected: impl Fn(u64) -> bool,
) -> u64 {
    let start = Instant::now();
    loop {
        let bytes = selector_bytes(app).await;
        if expected(bytes) {
            return bytes;
        }
        assert!(
            start.elapsed() < deadline,
            "selector bytes still {bytes} after {deadline:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Subscribers with distinct URI templates take their compiled templates with them when they
/// leave: the memory the templates kept goes back to zero, and the subscribers stop being
/// counted at once, not at the next heartbeat (an hour away here).
#[actix_web::test]
async fn templates_and_subscribers_are_released_when_streams_close() {
    let app = spawn_app_with(|s| s.heartbeat = Duration::from_secs(3600)).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let selector = format!("https://example.com/{i}/{{+path}}/x{{?q}}");
        streams.push(
            app.subscribe(&format!("/stream?{}", query(&[("topic", &selector)])))
                .await,
        );
    }
    let held = selector_bytes(&app).await;
    assert!(held > 0, "20 templates in use keep no bytes?");
    assert_eq!(app.stats().await["subscribers"], 20);

    drop(streams);

    wait_for_selector_bytes(&app, SETTLE_TIMEOUT, |bytes| bytes == 0).await;
    app.wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == 0)
        .await;
}

/// A template whose matcher would not fit its byte limit (one that an NFA would match in
/// time proportional to its length times the topic's) is refused with 400 naming the
/// problem; other subscribers keep receiving.
#[actix_web::test]
async fn too_complex_templates_are_refused_and_disturb_nobody() {
    let app = spawn_app_with(|_| {}).await;
    let mut canary = app.subscribe("/stream?topic=canary").await;
    let pathological = format!("{{+v}}{}{{+w}}Z", "a/".repeat(450));

    let (status, body) = app
        .get(&format!("/stream?{}", query(&[("topic", &pathological)])))
        .await;

    assert_json_error(status, &body, StatusCode::BAD_REQUEST, "too complex");
    app.publish("topic=canary", "still here").await;
    assert_eq!(
        canary.next_event().await.data.as_deref(),
        Some("still here")
    );
}

/// Past `--max-selector-bytes`, a subscribe with a new template gets 503 with a JSON error;
/// once the templates' subscribers leave, it fits again. A template already in use is shared
/// and costs nothing more.
#[actix_web::test]
async fn selector_memory_is_bounded_in_bytes() {
    let one = sse_hub::topic::Template::parse("https://a.example/{id}")
        .expect("valid")
        .bytes();
    let app = spawn_app_with(|s| s.max_selector_bytes = one + one / 2).await;
    let first = app.subscribe("/stream?topic=https://a.example/{id}").await;

    let (status, body) = app.get("/stream?topic=https://b.example/{id}").await;
    let shared = app.subscribe("/stream?topic=https://a.example/{id}").await;

    assert_json_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "memory for URI templates",
    );
    drop((first, shared));
    wait_for_selector_bytes(&app, SETTLE_TIMEOUT, |bytes| bytes == 0).await;
    app.subscribe("/stream?topic=https://b.example/{id}").await;
}

/// A topic, event type, selector or Mercure form field that is not UTF-8 once percent-decoded
/// is refused with 400, as an invalid `/publish` body is, instead of being passed on with
/// U+FFFD in it.
#[actix_web::test]
async fn invalid_utf8_after_percent_decoding_is_refused() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(crate::mercure::KEY.to_owned());
        s.mercure_mode = sse_hub::auth::Mode::Compat;
    })
    .await;
    let publisher = token(&["*"], &[]);
    let mut subscriber = app.subscribe("/stream?topic=ok").await;

    for path in [
        "/publish?topic=caf%C3",
        "/publish?topic=ok&event=%FF",
        "/publish?topic=ok&id=%FE%FF",
        "/publish?%FF=1",
    ] {
        let mut response = app
            .client
            .post(app.url(path))
            .insert_header(("authorization", format!("Bearer {publisher}")))
            .send_body("x")
            .await
            .expect("answered");
        let body = response.body().await.expect("a body");
        let body = std::str::from_utf8(&body).expect("utf-8");
        assert!(body.contains("once percent-decoded"), "{path}: {body}");
        assert_json_error(
            response.status(),
            body,
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        );
    }
    let (status, body) = app.get("/stream?topic=%FF").await;
    assert_json_error(status, &body, StatusCode::BAD_REQUEST, "not valid UTF-8");
    let mut form = app
        .client
        .post(app.url("/.well-known/mercure"))
        .insert_header(("authorization", format!("Bearer {publisher}")))
        .content_type("application/x-www-form-urlencoded")
        .send_body("topic=ok&data=%C3%28")
        .await
        .expect("answered");
    let body = form.body().await.expect("a body");
    assert_json_error(
        form.status(),
        std::str::from_utf8(&body).expect("utf-8"),
        StatusCode::BAD_REQUEST,
        "the value of `data` is not valid UTF-8",
    );

    // Nothing above was published: the next event is the first the subscriber sees.
    let response = app
        .client
        .post(app.url("/publish?topic=ok"))
        .insert_header(("authorization", format!("Bearer {publisher}")))
        .send_body("valid")
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(subscriber.next_event().await.data.as_deref(), Some("valid"));
}

/// `/publish?private=1` publishes a private event, which an anonymous subscriber does not get;
/// a `private` value that means neither is refused.
#[actix_web::test]
async fn private_is_honoured_on_publish() {
    let app = spawn_app_with(|_| {}).await;
    let mut anonymous = app.subscribe("/stream?topic=t").await;

    app.publish("topic=t&private=1", "secret").await;
    app.publish("topic=t&private=0", "public").await;
    let (status, body) = app.post("/publish?topic=t&private=maybe", "x").await;

    assert_eq!(anonymous.next_event().await.data.as_deref(), Some("public"));
    assert_json_error(status, &body, StatusCode::BAD_REQUEST, "private");
}

/// Every `curl` in the README whose URL holds a URI template's braces passes `-g`: without it,
/// curl expands `{a,b}` itself and the subscriber silently follows the wrong topic.
#[test]
fn readme_curl_examples_with_braces_use_globoff() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut checked = 0;

    for command in readme
        .lines()
        .filter(|line| line.trim_start().starts_with("curl "))
    {
        let url = command
            .split('\'')
            .find(|part| part.starts_with("http"))
            .unwrap_or("");
        if !url.contains('{') {
            continue;
        }
        checked += 1;
        let flags = command
            .split_whitespace()
            .take_while(|word| !word.starts_with('\''));
        let globoff = flags
            .filter(|word| word.starts_with('-') && !word.starts_with("--"))
            .any(|word| word.contains('g'))
            || command.contains("--globoff");
        assert!(globoff, "README: `{command}` needs curl -g");
    }
    assert!(
        checked > 0,
        "the README has no curl example with a template to check"
    );
}

/// A 0.x token carrying more selectors than `--max-token-selectors` (its `mercure.publish` and
/// `mercure.subscribe` lists together) is refused 401 `invalid_token` naming the limit, on
/// publish and on subscribe; one at the limit is accepted.
#[actix_web::test]
async fn tokens_with_more_selectors_than_the_limit_are_refused() {
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(crate::mercure::KEY.to_owned());
        s.max_token_selectors = 4;
    })
    .await;
    let templates: Vec<String> = (0..5)
        .map(|i| format!("https://example.com/{i}/{{id}}"))
        .collect();
    let five: Vec<&str> = templates.iter().map(String::as_str).collect();
    let four = &five[..3];
    let send = |path: &'static str, token: String| {
        let request = if path.starts_with("/publish") {
            app.client.post(app.url(path))
        } else {
            app.client.get(app.url(path))
        };
        async move {
            let mut response = request
                .insert_header(("authorization", format!("Bearer {token}")))
                .send_body("x")
                .await
                .expect("answered");
            let status = response.status();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body = if status == StatusCode::OK && path.starts_with("/stream") {
                String::new()
            } else {
                let body = response.body().await.expect("a body");
                String::from_utf8_lossy(&body).into_owned()
            };
            (status, challenge, body)
        }
    };

    for (path, token) in [
        ("/publish?topic=https://example.com/0/1", token(&five, &[])),
        ("/stream?topic=x", token(&[], &five)),
        ("/stream?topic=x", token(&five[..2], &five[2..])),
    ] {
        let (status, challenge, body) = send(path, token).await;
        assert_json_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "more than 4 selectors (--max-token-selectors)",
        );
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{path}"
        );
    }
    let at_the_limit = [
        (
            "/publish?topic=https://example.com/0/1",
            token(&five[..4], &[]),
        ),
        ("/stream?topic=x", token(&[four[0]], four)),
    ];
    for (path, token) in at_the_limit {
        let (status, _, body) = send(path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

/// The hub's threads (`/proc/PID/task`), but jemalloc's background threads (at most one per
/// CPU, started as it sees fit).
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task of the hub (this test needs Linux's /proc)")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() != "jemalloc_bg_thd")
        })
        .count()
}

/// A storm of subscribers with distinct URI templates, all connected at once (from many
/// 127.0.0.x addresses), is compiled on the `--compile-threads` pool: the hub never runs more
/// than that many threads above what it ran before, and every subscriber is answered 200.
#[test]
fn template_storm_compiles_on_a_bounded_pool() {
    use std::io::{Read, Write};

    const SUBSCRIBERS: usize = 300;
    const COMPILE_THREADS: usize = 2;
    let hub = ChildHub::spawn(hub_command(
        "memory",
        &["--compile-threads", &COMPILE_THREADS.to_string()],
    ));
    let pid = hub.child.id();
    // Both workers answer once each has served a request: then the hub runs all its threads.
    for _ in 0..4 {
        let mut stream = std::net::TcpStream::connect(hub.addr).expect("connect to the hub");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
            .expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let idle = thread_count(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(thread_count(pid));
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };

    let mut streams = Vec::new();
    for i in 0..SUBSCRIBERS {
        let source: std::net::SocketAddr = format!("127.0.0.{}:0", 2 + i % 250)
            .parse()
            .expect("an address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        socket
            .bind(&source.into())
            .expect("bind a 127.0.0.x source");
        socket
            .connect(&hub.addr.into())
            .expect("connect to the hub");
        let mut stream = std::net::TcpStream::from(socket);
        let template = format!("https://storm.example/{i}/{{+path}}/items{{/id}}{{?page,sort}}");
        write!(
            stream,
            "GET /stream?{} HTTP/1.1\r\nHost: hub\r\n\r\n",
            query(&[("topic", &template)])
        )
        .expect("request sent");
        streams.push(stream);
    }
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a timeout");
        let mut head = [0; 12];
        stream.read_exact(&mut head).expect("a status line");
        assert_eq!(&head, b"HTTP/1.1 200", "every subscriber is admitted");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("the sampler ends");

    assert!(
        most <= idle + COMPILE_THREADS,
        "{most} threads during the storm, {idle} before it: more than the {COMPILE_THREADS} \
         compile threads were started"
    );
}
