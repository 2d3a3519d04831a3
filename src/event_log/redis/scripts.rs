//! The Lua scripts the Redis backend runs (in `append.lua`, `locate.lua` and `presence_*.lua`,
//! beside this file): appends check publisher ids across nodes and give each event its entry,
//! atomically; presence heartbeats claim a dead node's subscriptions for exactly one node.

use std::sync::LazyLock;

use redis::Script;

/// Appends events; see the module documentation for the layout. KEYS: log, meta, ids, idq,
/// idn, idl. ARGV: max length, an epoch for an empty log, then per event its publisher id (or
/// empty), `u` if that id must not be taken or `r` if it may repeat (it then keeps naming its
/// earliest retained copy), and its JSON. Returns per event its entry id, or an empty string
/// if its id is taken.
pub(super) static APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("append.lua")));

/// Finds the entry of an event id: a publisher id through `ids`, or an entry id that the
/// stream holds. KEYS: log, ids. ARGV: the id. Returns the entry id, or nil.
pub(super) static LOCATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("locate.lua")));

/// A node's presence heartbeat with its changes, claiming dead nodes' subscriptions. KEYS:
/// nodes. ARGV: hash prefix, node, time to live (ms), `1` to rewrite the node's hash whole,
/// `1` to claim dead nodes, then `s FIELD JSON` / `d FIELD` changes. Returns {1 if the node was not in the set, the
/// claimed subscriptions}.
pub(super) static PRESENCE_BEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("presence_beat.lua")));

/// The subscriptions of every live node but the caller. KEYS: nodes. ARGV: hash prefix, node.
pub(super) static PRESENCE_LIST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("presence_list.lua")));
