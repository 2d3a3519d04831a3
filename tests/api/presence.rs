//! Presence across nodes (issue 23): with `--subscriptions` on a Redis store, the subscription
//! API of any node lists the subscriptions of every node, and the subscriptions of a node that
//! died end within `--presence-ttl` and a third, each announced once by a surviving node.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::{
    cluster::{Cluster, Node, SERIAL, eventually},
    helpers::{Persistence, SseStream, client, query},
};

/// The time to live the tests give presence: short, so that a dead node's end is quick, and
/// long enough that a live node whose heartbeat waits on a CPU-starved machine (every third of
/// this) is not taken for dead.
const TTL: Duration = Duration::from_secs(4);
/// A dead node's subscriptions are announced within the time to live and a third (the next
/// heartbeat of a surviving node); the tests allow more, and print what it took.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a subscriber joining or leaving one node may take to show in every node's list:
/// milliseconds (one Redis round trip) on a quiet machine.
const LISTING_DEADLINE: Duration = Duration::from_secs(20);

async fn cluster(test: &str) -> Cluster {
    let ttl = format!("{}ms", TTL.as_millis());
    Cluster::start(
        test,
        Persistence::Off,
        &["A", "B", "C"],
        &[
            "--jwt-key",
            crate::mercure::KEY,
            "--subscriptions",
            "true",
            "--presence-ttl",
            &ttl,
            // The test tokens are 0.x ones (no issuer).
            "--mercure-mode",
            "compat",
        ],
    )
    .await
}

/// The `match` of every subscription `node`'s subscription API lists.
async fn listed(node: &Node) -> Vec<String> {
    let token = crate::mercure::token(&[], &["*"]);
    let url = node.url("/.well-known/mercure/subscriptions");
    let mut response = client()
        .get(url.as_str())
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let body = response.body().await.expect("the list's body");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "GET {url}: {}",
        String::from_utf8_lossy(&body)
    );
    let document: Value = serde_json::from_slice(&body).expect("the list is JSON");
    let mut matches: Vec<String> = document["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("a `subscriptions` array: {document}"))
        .iter()
        .map(|subscription| {
            // The 1.0 document's `match`, or the 0.x one's `topic` (a 0.x token gets those).
            subscription["match"]
                .as_str()
                .or(subscription["topic"].as_str())
                .unwrap_or_else(|| panic!("a `match` or `topic`: {subscription}"))
                .to_owned()
        })
        .collect();
    matches.sort();
    matches
}

/// Opens a Mercure subscriber on `node` for each matcher in `matchers`.
async fn subscribe(node: &Node, matchers: &[&str]) -> SseStream {
    let pairs: Vec<(&str, &str)> = matchers.iter().map(|m| ("match", *m)).collect();
    node.subscribe_mercure(&query(&pairs), None).await
}

#[actix_web::test]
async fn every_node_lists_the_subscriptions_of_every_node() {
    let _serial = SERIAL.lock().await;
    let cluster = cluster("presence-list").await;
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));

    // Act
    let on_a = subscribe(a, &["https://example.com/a"]).await;
    let on_b = subscribe(b, &["https://example.com/b1", "https://example.com/b2"]).await;

    // Assert: every node lists all three, its own and the others'.
    let all = vec![
        "https://example.com/a".to_owned(),
        "https://example.com/b1".to_owned(),
        "https://example.com/b2".to_owned(),
    ];
    for node in [a, b, c] {
        let what = format!("{} lists every node's subscriptions", node.name);
        eventually(&what, LISTING_DEADLINE, async || {
            (listed(node).await == all).then_some(())
        })
        .await;
    }
    drop(on_b);
    for node in [a, b, c] {
        let what = format!("{} no longer lists B's subscriber once it left", node.name);
        eventually(&what, LISTING_DEADLINE, async || {
            (listed(node).await == ["https://example.com/a"]).then_some(())
        })
        .await;
    }
    drop(on_a);
}

/// The `match` of a subscription event that says a subscription ended, if `frame` is one (its
/// 1.0 event; compat mode adds a 0.x one, which has none).
fn ended(frame: &crate::helpers::Frame) -> Option<String> {
    let data: Value = serde_json::from_str(frame.data.as_deref()?).ok()?;
    (data["active"] == false).then(|| data["match"].as_str().map(str::to_owned))?
}

/// B killed: A and C announce the end of its subscriptions (one of them, once).
#[actix_web::test]
async fn a_killed_nodes_subscriptions_end_once_each_on_every_node() {
    ends_once_each(true).await;
}

/// B shut down (SIGTERM): B announces the end of its subscriptions itself, those of a
/// subscriber that left just before the signal included, and no other node does again once B's
/// presence would have expired.
#[actix_web::test]
async fn a_node_shut_down_announces_its_subscriptions_end_once() {
    ends_once_each(false).await;
}

/// B, with two subscriptions, ends (`kill -9` if `killed`, else SIGTERM, just after a third
/// subscriber on B left); watchers on A and C each get one end per subscription, and no second
/// one within twice the time to live.
async fn ends_once_each(killed: bool) {
    let _serial = SERIAL.lock().await;
    let mut cluster = cluster(if killed {
        "presence-kill"
    } else {
        "presence-term"
    })
    .await;
    // Watchers of every subscription event (private: the token allows them).
    let mut watchers = Vec::new();
    for index in [0, 2] {
        watchers.push(subscribe(cluster.node(index), &["*"]).await);
    }
    let on_b = subscribe(
        cluster.node(1),
        &["https://example.com/b1", "https://example.com/b2"],
    )
    .await;
    let leaving = if killed {
        None
    } else {
        Some(subscribe(cluster.node(1), &["https://example.com/b0"]).await)
    };
    let a = cluster.node(0);
    eventually("A lists B's subscriptions", LISTING_DEADLINE, async || {
        listed(a)
            .await
            .contains(&"https://example.com/b2".to_owned())
            .then_some(())
    })
    .await;

    // Act
    let mut expected = vec!["https://example.com/b1", "https://example.com/b2"];
    if killed {
        cluster.nodes[1].hub.kill9();
    } else {
        // Its leave is on its way as the node shuts down.
        drop(leaving);
        cluster.nodes[1].hub.signal("TERM");
        expected.insert(0, "https://example.com/b0");
    }
    let ended_at = Instant::now();
    drop(on_b);

    // Assert: gone from the lists, and one `leave` each for every watcher.
    let a = cluster.node(0);
    eventually(
        "A no longer lists B's subscriptions",
        EXPIRY_DEADLINE,
        async || (listed(a).await == ["*", "*"]).then_some(()),
    )
    .await;
    let unlisted = ended_at.elapsed();
    let mut announced = Vec::new();
    for watcher in &mut watchers {
        let mut ends = Vec::new();
        while ends.len() < expected.len() {
            if let Some(matcher) = ended(&watcher.next_event().await) {
                ends.push(matcher);
            }
        }
        announced.push(ended_at.elapsed());
        ends.sort();
        assert_eq!(ends, expected, "one end for each of B's subscriptions");
    }
    // Every surviving node beats several times more: none announces them again.
    let quiet_until = Instant::now() + TTL * 2;
    for watcher in &mut watchers {
        while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
            match watcher.next_frame_within(left).await {
                Some(Some(frame)) => {
                    assert_eq!(ended(&frame), None, "a second end announced: {frame:?}");
                }
                Some(None) | None => break,
            }
        }
    }
    eprintln!(
        "presence with --presence-ttl {TTL:?}: B's subscriptions unlisted {unlisted:?} after \
         {}, their ends announced after {announced:?}",
        if killed { "kill -9" } else { "SIGTERM" }
    );
}
