//! The Lua scripts the Redis backend runs (in `append.lua` and `locate.lua`, beside this
//! file): appends check publisher ids across nodes and give each event its entry, atomically.

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
