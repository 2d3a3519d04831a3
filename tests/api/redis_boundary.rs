//! What comes from Redis is untrusted input (issue 19): foreign and malformed stream entries
//! are skipped, counted and never delivered, and a Redis that refuses writes (out of memory)
//! says so on publishes and `/readyz`, against real redis-server and hub processes.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::{
    cluster::{
        Cluster, Node, QUIET, RECOVERY_TIMEOUT, SERIAL, assert_keeps_alive, assert_ready,
        eventually, id_and_data, next_events, wait_for_readyz,
    },
    helpers::{Persistence, Resp},
};

/// An entry's fields (names and raw values), as [`forge`] appends them.
type Fields<'a> = &'a [(&'a str, &'a [u8])];

/// How long a node may take to notice Redis accepts writes again (a probe each second), on a
/// loaded machine.
const WRITES_BACK: Duration = Duration::from_secs(15);

/// The value of the refused-entries counter for `reason` on `node` (0 when absent).
async fn refused(node: &Node, reason: &str) -> u64 {
    let reply = node.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "/metrics: {}", reply.body);
    let series = format!("sse_hub_log_entries_refused_total{{reason=\"{reason}\"}} ");
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a counter value"))
}

/// Polls until `node` has counted `count` refused entries for `reason`.
async fn assert_refused(node: &Node, reason: &str, count: u64) {
    let what = format!("{count} entries refused for `{reason}` on {}", node.name);
    eventually(&what, RECOVERY_TIMEOUT, async || {
        (refused(node, reason).await == count).then_some(())
    })
    .await;
}

/// A connection of the test's own to the cluster's Redis, for fields that are not text.
async fn redis(cluster: &Cluster) -> redis::aio::MultiplexedConnection {
    redis::Client::open(cluster.redis.url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the test connects to Redis")
}

/// Appends an entry that carries the hub's `e` and `p` fields (the log's epoch and its newest
/// entry, so it takes its place in the log's order, as a hub's would) and `fields`.
async fn forge(cluster: &Cluster, fields: Fields<'_>) -> String {
    let mut connection = redis(cluster).await;
    let meta = format!("{}:meta", cluster.prefix);
    let (epoch, last): (String, Option<String>) = redis::cmd("HMGET")
        .arg(&meta)
        .arg("epoch")
        .arg("last")
        .query_async(&mut connection)
        .await
        .expect("the log's epoch and newest entry");
    let mut xadd = redis::cmd("XADD");
    xadd.arg(cluster.log_key())
        .arg("*")
        .arg("e")
        .arg(epoch)
        .arg("p")
        .arg(last.unwrap_or_default());
    for (name, value) in fields {
        xadd.arg(*name).arg(*value);
    }
    let id: String = xadd
        .query_async(&mut connection)
        .await
        .expect("XADD a forged entry");
    let () = redis::cmd("HSET")
        .arg(&meta)
        .arg("last")
        .arg(&id)
        .query_async(&mut connection)
        .await
        .expect("the forged entry is the newest");
    id
}

/// A foreign entry (`XADD PREFIX:log * foo bar`) wedges no node: publishes on every node still
/// answer 200 and are delivered once on every node, no stream ends or is told `reset`,
/// `/readyz` stays 200, and each node counts the entry as refused (`foreign`).
#[actix_web::test]
async fn a_foreign_entry_is_skipped_by_every_node() {
    let _serial = SERIAL.lock().await;
    // Arrange
    let cluster = Cluster::start("foreign", Persistence::Off, &["A", "B"], &[]).await;
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push(node.subscribe("t", None).await);
    }
    let before = cluster.node(0).publish("t", "before").await;
    for stream in &mut streams {
        assert_eq!(id_and_data(&next_events(stream, 1).await)[0].0, before);
    }

    // Act
    let added = cluster
        .redis
        .command(&["XADD", &cluster.log_key(), "*", "foo", "bar"]);
    assert!(matches!(added, Resp::Bulk(Some(_))), "XADD: {added:?}");
    let mut sent = Vec::new();
    for n in 0..4 {
        let data = format!("after {n}");
        sent.push((cluster.node(n % 2).publish("t", &data).await, data));
    }

    // Assert
    for (node, stream) in cluster.nodes.iter().zip(&mut streams) {
        let got = id_and_data(&next_events(stream, sent.len()).await);
        assert_eq!(got, sent, "on {}: every event once, in order", node.name);
        stream.assert_no_event_within(QUIET).await;
        assert_keeps_alive(stream, 2, &format!("the stream on {}", node.name)).await;
        assert_ready(&node.get("/readyz").await, "/readyz after a foreign entry");
        assert_refused(node, "foreign", 1).await;
    }
}

/// Malformed entries with the hub's fields are refused at the boundary, each counted by
/// reason and none delivered: `d` not JSON, `d` JSON of the wrong shape, an `i` with LF or CR
/// (a forged `event: reset`), a type with LF, a field that is not UTF-8, too many topics, a
/// topic too long, data over the body limit, an epoch the log does not have (no loss is
/// declared for it). The next good event is delivered, nothing ends.
#[actix_web::test]
async fn malformed_entries_are_refused_and_never_delivered() {
    let _serial = SERIAL.lock().await;
    // Arrange: a 1 KiB body limit, two topics of 64 bytes at most.
    let limits = [
        "--body-limit-bytes",
        "1024",
        "--max-topics",
        "2",
        "--max-topic-bytes",
        "64",
    ];
    let cluster = Cluster::start("malformed", Persistence::Off, &["A"], &limits).await;
    let node = cluster.node(0);
    let mut stream = node.subscribe("t", None).await;
    let first = node.publish("t", "first").await;
    assert_eq!(id_and_data(&next_events(&mut stream, 1).await)[0].0, first);
    let good = br#"{"t":["t"],"d":"forged"}"#;
    let long_topic = format!(r#"{{"t":["t","{}"],"d":"x"}}"#, "a".repeat(65));
    let big_data = format!(r#"{{"t":["t"],"d":"{}"}}"#, "x".repeat(2048));
    let cases: [(&str, Fields<'_>); 10] = [
        ("not_json", &[("i", b""), ("d", b"not json")]),
        ("not_json", &[("i", b""), ("d", br#"{"x":1}"#)]),
        ("id", &[("i", b"1\nevent: reset"), ("d", good)]),
        ("id", &[("i", b"2\rdata: x"), ("d", good)]),
        (
            "type",
            &[("i", b""), ("d", br#"{"t":["t"],"d":"x","y":"a\nb"}"#)],
        ),
        (
            "not_utf8",
            &[("i", b""), ("d", b"{\"t\":[\"t\"],\"d\":\"\xff\xfe\"}")],
        ),
        ("not_utf8", &[("i", b"\xff"), ("d", good)]),
        (
            "topics",
            &[("i", b""), ("d", br#"{"t":["t","a","b"],"d":"x"}"#)],
        ),
        ("topics", &[("i", b""), ("d", long_topic.as_bytes())]),
        ("too_large", &[("i", b""), ("d", big_data.as_bytes())]),
    ];

    // Act
    for (_, fields) in &cases {
        forge(&cluster, fields).await;
    }
    // One more with the hub's fields but an epoch the log does not have (Redis was not
    // flushed: its epoch did not change).
    let Resp::Bulk(Some(last)) =
        cluster
            .redis
            .command(&["HGET", &format!("{}:meta", cluster.prefix), "last"])
    else {
        panic!("the log's newest entry");
    };
    let good_text = std::str::from_utf8(good).expect("text");
    let log = cluster.log_key();
    let forged = [
        "XADD", &log, "*", "e", "forged", "p", &last, "i", "", "d", good_text,
    ];
    assert!(matches!(
        cluster.redis.command(&forged),
        Resp::Bulk(Some(_))
    ));
    let next = node.publish("t", "next").await;

    // Assert
    let got = id_and_data(&next_events(&mut stream, 1).await);
    assert_eq!(got, [(next, "next".to_owned())], "only the good event");
    for reason in ["not_json", "id", "type", "not_utf8", "topics", "too_large"] {
        let count = cases.iter().filter(|(r, _)| *r == reason).count();
        assert_refused(node, reason, count as u64).await;
    }
    assert_refused(node, "order", 1).await;
    assert_keeps_alive(&mut stream, 2, "the stream after malformed entries").await;
    assert_ready(
        &node.get("/readyz").await,
        "/readyz after malformed entries",
    );
}

/// Redis out of memory (`maxmemory` with `noeviction`): a publish is 503 with `Retry-After`
/// and an error naming out-of-memory (not "unreachable"), `/readyz` is 503 naming it; once
/// Redis takes writes again, `/readyz` is 200 within seconds and publishes succeed, delivered
/// on the stream that stayed open throughout.
#[actix_web::test]
async fn redis_out_of_memory_is_said_and_recovered_from() {
    let _serial = SERIAL.lock().await;
    // Arrange
    let cluster = Cluster::start("oom", Persistence::Off, &["A"], &[]).await;
    let node = cluster.node(0);
    let mut stream = node.subscribe("t", None).await;
    let config = |args: &[&str]| {
        let mut command = vec!["CONFIG", "SET"];
        command.extend_from_slice(args);
        assert_eq!(
            cluster.redis.command(&command),
            Resp::Simple("OK".to_owned())
        );
    };

    // Act
    config(&["maxmemory-policy", "noeviction"]);
    config(&["maxmemory", "1"]);
    let refused = node.post("/publish?topic=t", "refused").await;

    // Assert: refused, saying why.
    refused.assert_json_error(StatusCode::SERVICE_UNAVAILABLE, "publish under maxmemory");
    assert!(
        refused.headers.contains_key("retry-after"),
        "a Retry-After header"
    );
    let error = json_error(&refused.body);
    assert!(
        error.contains("out of memory") && !error.contains("unreachable"),
        "the error names out-of-memory: {error}"
    );
    let unready = wait_for_readyz(node, StatusCode::SERVICE_UNAVAILABLE, WRITES_BACK).await;
    let reason = json_error(&unready.body);
    assert!(
        reason.contains("out of memory"),
        "/readyz names it: {reason}"
    );
    assert_keeps_alive(&mut stream, 2, "the stream while Redis refuses writes").await;

    // Act: Redis takes writes again.
    config(&["maxmemory", "0"]);

    // Assert
    let ready = wait_for_readyz(node, StatusCode::OK, WRITES_BACK).await;
    assert_ready(&ready, "/readyz once Redis takes writes");
    let id = node.publish("t", "after").await;
    let got = id_and_data(&next_events(&mut stream, 1).await);
    assert_eq!(got, [(id, "after".to_owned())], "the open stream gets it");
}

fn json_error(body: &str) -> String {
    let json: Value = serde_json::from_str(body).expect("a JSON body");
    json["error"].as_str().expect("an error message").to_owned()
}
