//! Property tests where two independent readings of the same rules must agree: the one SSE
//! encoder against a parser written from the WHATWG rules, and URI-template selectors against a
//! slow reference matcher written from RFC 6570 and the matching rules `src/topic.rs` documents.

use std::{
    collections::BTreeSet,
    sync::{Arc, LazyLock},
};

use proptest::{prelude::*, sample::Index};
use sse_hub::{
    event::{self, Event, EventDraft},
    topic::{Selector, SelectorCache, SelectorError, SelectorLimits},
    url_pattern::{DEFAULT_HUB_URL, HubUrl},
};

/// `cases` unless `PROPTEST_CASES` asks for another number (for a long hunt on one machine).
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// The encoder against a WHATWG event-stream parser.
// ---------------------------------------------------------------------------------------------

/// One event as an `EventSource` dispatches it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dispatched {
    event_type: String,
    data: String,
    last_event_id: String,
    /// The stream's reconnection time when the event was dispatched (`None`: never set).
    retry_ms: Option<u64>,
}

/// Interprets a complete `text/event-stream` body as the WHATWG HTML standard says
/// ("Interpreting an event stream"): lines end with CRLF, LF or CR; a blank line dispatches;
/// `:` starts a comment; one space after the field's colon is dropped; `data` lines are joined
/// with LF; `id` without NUL sets the last event id; `retry` of ASCII digits only sets the
/// reconnection time; an event with no data is not dispatched; an unterminated last line and
/// an undispatched last event are discarded at the end of the stream.
fn parse_event_stream(body: &[u8]) -> Vec<Dispatched> {
    let text = std::str::from_utf8(body).expect("the encoder writes UTF-8");
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut dispatched = Vec::new();
    let mut data = String::new();
    let mut event_type = String::new();
    let mut last_event_id = String::new();
    let mut retry_ms = None;

    for line in complete_lines(text) {
        if line.is_empty() {
            if !data.is_empty() {
                if data.ends_with('\n') {
                    data.pop();
                }
                dispatched.push(Dispatched {
                    event_type: if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    },
                    data: data.clone(),
                    last_event_id: last_event_id.clone(),
                    retry_ms,
                });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry_ms = Some(value.parse().expect("digits that fit the encoder's u64"));
            }
            _ => {}
        }
    }
    dispatched
}

/// The lines of `text` that end with CRLF, LF or CR; a last line without one is dropped.
fn complete_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                lines.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    lines
}

/// `text` with each CRLF, lone CR and lone LF written as LF: what a browser's `e.data` holds.
fn with_lf_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Event data built from pieces that stress the framing: every kind of line break, blank
/// lines, leading spaces and colons, field-like text, a BOM, NUL and arbitrary characters.
fn data_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z ]{0,4}",
        3 => any::<char>().prop_map(String::from),
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\n\n".to_owned()),
        1 => Just(" ".to_owned()),
        1 => prop::sample::select(vec![
            ":", "data: x", "id: 9", "event: e", "retry: 1", "\u{feff}", "\0", "\u{2028}", "é",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

/// An id or event type: short single lines of any characters, leading spaces and colons
/// included, some of which `validate_draft` refuses (those cases are filtered out).
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[^\r\n\u{0}]{1,12}",
        1 => " [a-z:]{0,4}",
        1 => "  [0-9]{1,3}",
        1 => ":[a-z]{0,3}",
        1 => Just("earliest".to_owned()),
        1 => Just(String::new()),
    ]
}

/// What one published event carries: its id and the draft the broadcaster encodes.
fn draft_with_id() -> impl Strategy<Value = (String, EventDraft)> {
    (
        field_text(),
        prop::option::of(field_text()),
        prop::option::of(prop_oneof![0..10_000u64, any::<u64>()]),
        data_text(),
    )
        .prop_map(|(id, event_type, retry_ms, data)| {
            let draft = EventDraft {
                topics: vec!["t".to_owned()],
                data,
                id: Some(id.clone()),
                event_type,
                retry_ms,
                private: false,
                repeatable_id: false,
            };
            (id, draft)
        })
        .prop_filter(
            "ids and types the publication rules accept",
            |(_, draft)| {
                let unlimited = event::Limits {
                    max_topics: usize::MAX,
                    max_topic_bytes: usize::MAX,
                    max_data_bytes: usize::MAX,
                };
                event::Publication::parse(draft.clone(), &unlimited).is_ok()
            },
        )
}

/// A stream: events, each maybe preceded by a comment (the opening `connected`, a heartbeat,
/// or any text).
fn stream_frames() -> impl Strategy<Value = Vec<(Option<String>, (String, EventDraft))>> {
    let comment = prop::option::of(prop_oneof![
        Just("connected".to_owned()),
        Just(String::new()),
        data_text(),
    ]);
    prop::collection::vec((comment, draft_with_id()), 1..6)
}

proptest! {
    #![proptest_config(config(1024))]

    /// Every event the encoder writes, between any comments, is dispatched by a WHATWG parser
    /// once, with its data (line breaks as LF), type, id and retry intact.
    #[test]
    fn encoded_events_parse_back_unchanged(frames in stream_frames()) {
        let mut body = Vec::new();
        let mut expected = Vec::new();
        let mut retry_ms = None;
        for (comment, (id, draft)) in frames {
            if let Some(text) = comment {
                body.extend_from_slice(&event::comment(&text));
            }
            retry_ms = draft.retry_ms.or(retry_ms);
            expected.push(Dispatched {
                event_type: match draft.event_type.as_deref() {
                    None | Some("") => "message".to_owned(),
                    Some(event_type) => event_type.to_owned(),
                },
                data: with_lf_line_breaks(&draft.data),
                last_event_id: id.clone(),
                retry_ms,
            });
            body.extend_from_slice(&Event::new(Arc::from(id), draft).frame);
        }

        let dispatched = parse_event_stream(&body);

        prop_assert_eq!(
            dispatched,
            expected,
            "body: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// URI-template selectors against a slow reference matcher.
// ---------------------------------------------------------------------------------------------

/// An RFC 6570 expression operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    PathParameter,
    Query,
    QueryContinuation,
}

/// RFC 6570 appendix A, one row per operator: what starts an expansion, what separates its
/// values, whether values are `name=value`, what follows a name whose value is empty, and
/// whether reserved characters pass unencoded.
struct OpRow {
    sigil: &'static str,
    first: &'static str,
    sep: &'static str,
    named: bool,
    if_empty: &'static str,
    allows_reserved: bool,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Simple,
        Op::Reserved,
        Op::Fragment,
        Op::Label,
        Op::Path,
        Op::PathParameter,
        Op::Query,
        Op::QueryContinuation,
    ];

    fn row(self) -> OpRow {
        let (sigil, first, sep, named, if_empty, allows_reserved) = match self {
            Op::Simple => ("", "", ",", false, "", false),
            Op::Reserved => ("+", "", ",", false, "", true),
            Op::Fragment => ("#", "#", ",", false, "", true),
            Op::Label => (".", ".", ".", false, "", false),
            Op::Path => ("/", "/", "/", false, "", false),
            Op::PathParameter => (";", ";", ";", true, "", false),
            Op::Query => ("?", "?", "&", true, "=", false),
            Op::QueryContinuation => ("&", "&", "&", true, "=", false),
        };
        OpRow {
            sigil,
            first,
            sep,
            named,
            if_empty,
            allows_reserved,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    None,
    Explode,
    /// `:N`, a prefix of N characters.
    Prefix(usize),
}

#[derive(Debug, Clone)]
struct VarSpec {
    name: &'static str,
    modifier: Modifier,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Expression { op: Op, vars: Vec<VarSpec> },
}

/// Variable names, dotted and percent-encoded ones included; values are assigned by name.
const VAR_NAMES: [&str; 5] = ["a", "b", "x_1", "a.b", "c%20d"];

/// The template's text, as a subscriber would write it.
fn template_text(pieces: &[Piece]) -> String {
    let mut text = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(literal) => text.push_str(literal),
            Piece::Expression { op, vars } => {
                text.push('{');
                text.push_str(op.row().sigil);
                let specs: Vec<String> = vars
                    .iter()
                    .map(|var| match var.modifier {
                        Modifier::None => var.name.to_owned(),
                        Modifier::Explode => format!("{}*", var.name),
                        Modifier::Prefix(length) => format!("{}:{length}", var.name),
                    })
                    .collect();
                text.push_str(&specs.join(","));
                text.push('}');
            }
        }
    }
    text
}

/// Whether the hub should select `topic` with this template: the topic is the template's text
/// (as in Mercure), or the pieces can consume it exactly, tried every way by backtracking.
fn reference_matches(pieces: &[Piece], topic: &str) -> bool {
    topic == template_text(pieces) || matches_from(pieces, topic.as_bytes(), 0)
}

fn matches_from(pieces: &[Piece], topic: &[u8], at: usize) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return at == topic.len();
    };
    match piece {
        Piece::Literal(literal) => {
            topic[at..].starts_with(literal.as_bytes())
                && matches_from(rest, topic, at + literal.len())
        }
        Piece::Expression { op, vars } => expression_ends(*op, vars, topic, at)
            .into_iter()
            .any(|end| matches_from(rest, topic, end)),
    }
}

/// Every position an expression starting at `at` can end at. The hub's rules (yosida95's):
/// the expression may expand to nothing (undefined variables); otherwise it is the operator's
/// `first`, a value, then up to one more separator and value per further variable, or any
/// number if a variable explodes. Values are checked for their characters only: a named
/// operator's `name=` is not compared with the variable's name, and prefix lengths are not
/// enforced.
fn expression_ends(op: Op, vars: &[VarSpec], topic: &[u8], at: usize) -> BTreeSet<usize> {
    let row = op.row();
    let explodes = |var: &VarSpec| var.modifier == Modifier::Explode;
    let any_explodes = vars.iter().any(explodes);
    let mut ends = BTreeSet::from([at]);
    if !topic[at..].starts_with(row.first.as_bytes()) {
        return ends;
    }
    let first_admits_equals = row.named || explodes(&vars[0]);
    let mut frontier = value_ends(&row, first_admits_equals, topic, at + row.first.len());
    ends.extend(&frontier);
    // The separator is never empty, so each repetition moves on: the topic's length bounds them.
    let more = if any_explodes {
        topic.len()
    } else {
        vars.len() - 1
    };
    for _ in 0..more {
        let mut next = BTreeSet::new();
        for &end in &frontier {
            if topic[end..].starts_with(row.sep.as_bytes()) {
                let admits_equals = row.named || any_explodes;
                next.extend(value_ends(&row, admits_equals, topic, end + row.sep.len()));
            }
        }
        if next.is_empty() {
            break;
        }
        ends.extend(&next);
        frontier = next;
    }
    ends
}

/// The positions a (possibly empty) value starting at `at` can end at: after each character
/// the operator allows or each `%XX` triplet.
fn value_ends(row: &OpRow, admits_equals: bool, topic: &[u8], at: usize) -> BTreeSet<usize> {
    let mut ends = BTreeSet::from([at]);
    let mut i = at;
    loop {
        match topic.get(i) {
            Some(b'%')
                if topic.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && topic.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                i += 3;
            }
            Some(&b) if allowed_in_value(row, admits_equals, b) => i += 1,
            _ => return ends,
        }
        ends.insert(i);
    }
}

fn allowed_in_value(row: &OpRow, admits_equals: bool, b: u8) -> bool {
    is_unreserved(b)
        || if row.allows_reserved {
            is_reserved(b)
        } else {
            b == b',' || (admits_equals && b == b'=')
        }
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `reserved`: `gen-delims` and `sub-delims`.
fn is_reserved(b: u8) -> bool {
    b":/?#[]@!$&'()*+,;=".contains(&b)
}

/// A variable's value in an expansion (RFC 6570 §2.3); an empty list or map is undefined.
#[derive(Debug, Clone)]
enum Value {
    Undefined,
    Text(String),
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

/// Expands the template with `values` (one per name in [`VAR_NAMES`]) by RFC 6570 §3.2.
/// A prefix modifier on a list or map, an error in RFC 6570, leaves that variable out.
fn expand(pieces: &[Piece], values: &[Value]) -> String {
    let mut out = String::new();
    for piece in pieces {
        let (op, vars) = match piece {
            Piece::Literal(literal) => {
                out.push_str(literal);
                continue;
            }
            Piece::Expression { op, vars } => (op, vars),
        };
        let row = op.row();
        let encode = |text: &str| pct_encode(text, row.allows_reserved);
        let mut first = true;
        for var in vars {
            let value = value_of(var, values);
            if !is_defined(var, value) {
                continue;
            }
            out.push_str(if first { row.first } else { row.sep });
            first = false;
            let name_then = |out: &mut String, text_is_empty: bool| {
                out.push_str(var.name);
                out.push_str(if text_is_empty { row.if_empty } else { "=" });
            };
            match value {
                Value::Undefined => unreachable!("skipped above"),
                Value::Text(text) => {
                    let text: String = match var.modifier {
                        Modifier::Prefix(length) => text.chars().take(length).collect(),
                        _ => text.clone(),
                    };
                    if row.named {
                        name_then(&mut out, text.is_empty());
                    }
                    out.push_str(&encode(&text));
                }
                Value::List(items) if var.modifier != Modifier::Explode => {
                    if row.named {
                        name_then(&mut out, false);
                    }
                    let items: Vec<String> = items.iter().map(|item| encode(item)).collect();
                    out.push_str(&items.join(","));
                }
                Value::Map(pairs) if var.modifier != Modifier::Explode => {
                    if row.named {
                        name_then(&mut out, false);
                    }
                    let pairs: Vec<String> = pairs
                        .iter()
                        .map(|(key, value)| format!("{},{}", encode(key), encode(value)))
                        .collect();
                    out.push_str(&pairs.join(","));
                }
                Value::List(items) => {
                    let items: Vec<String> = items
                        .iter()
                        .map(|item| {
                            let mut one = String::new();
                            if row.named {
                                name_then(&mut one, item.is_empty());
                            }
                            one.push_str(&encode(item));
                            one
                        })
                        .collect();
                    out.push_str(&items.join(row.sep));
                }
                Value::Map(pairs) => {
                    let pairs: Vec<String> = pairs
                        .iter()
                        .map(|(key, value)| {
                            let separator = if row.named && value.is_empty() {
                                row.if_empty
                            } else {
                                "="
                            };
                            format!("{}{separator}{}", encode(key), encode(value))
                        })
                        .collect();
                    out.push_str(&pairs.join(row.sep));
                }
            }
        }
    }
    out
}

fn value_of<'v>(var: &VarSpec, values: &'v [Value]) -> &'v Value {
    let at = VAR_NAMES
        .iter()
        .position(|name| *name == var.name)
        .expect("generated names");
    &values[at]
}

/// Whether the variable expands to something: a string (even empty), or a non-empty list or
/// map without a prefix modifier.
fn is_defined(var: &VarSpec, value: &Value) -> bool {
    let prefixed = matches!(var.modifier, Modifier::Prefix(_));
    match value {
        Value::Undefined => false,
        Value::Text(_) => true,
        Value::List(items) => !items.is_empty() && !prefixed,
        Value::Map(pairs) => !pairs.is_empty() && !prefixed,
    }
}

/// The one kind of RFC 6570 expansion the hub does not select, on purpose, as Mercure does not:
/// in an unnamed, unreserved expression (`{x,keys*}`, `{.x,keys*}`, `{/x,keys*}`) whose first
/// variable is undefined, an exploded map coming first expands to `k=v`, but the first value's
/// characters admit `=` only when the *first variable* explodes (yosida95's rule). So
/// `{x,keys*}` with `keys = {a: 1}` expands to `a=1`, which it does not select.
fn is_mercure_blind_spot(pieces: &[Piece], values: &[Value]) -> bool {
    pieces.iter().any(|piece| match piece {
        Piece::Literal(_) => false,
        Piece::Expression { op, vars } => {
            let row = op.row();
            let first_defined = vars
                .iter()
                .find(|var| is_defined(var, value_of(var, values)));
            !row.named
                && !row.allows_reserved
                && vars[0].modifier != Modifier::Explode
                && first_defined.is_some_and(|var| {
                    var.modifier == Modifier::Explode
                        && matches!(value_of(var, values), Value::Map(_))
                })
        }
    })
}

/// Percent-encodes the UTF-8 of every character but the unreserved ones, and, where reserved
/// expansion is allowed, the reserved ones and existing `%XX` triplets (RFC 6570 §3.2.1).
fn pct_encode(text: &str, allows_reserved: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let triplet = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if allows_reserved && triplet {
            out.push_str(&text[i..i + 3]);
            i += 3;
            continue;
        }
        if is_unreserved(b) || (allows_reserved && is_reserved(b)) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    out
}

/// A template: literals from a small alphabet (URI delimiters, `%41`, a non-ASCII letter)
/// between expressions of every operator with one to three variables, each plain, exploded or
/// with a prefix.
fn template() -> impl Strategy<Value = Vec<Piece>> {
    let literal = prop::collection::vec(
        prop::sample::select(vec![
            "/", ".", "a", "b", ",", "=", ";", "?", "&", "#", ":", "-", "~", "%41", "é",
        ]),
        1..4,
    )
    .prop_map(|parts| Piece::Literal(parts.concat()));
    let var = (
        prop::sample::select(VAR_NAMES.to_vec()),
        prop_oneof![
            3 => Just(Modifier::None),
            2 => Just(Modifier::Explode),
            1 => (1..4usize).prop_map(Modifier::Prefix),
        ],
    )
        .prop_map(|(name, modifier)| VarSpec { name, modifier });
    let expression = (
        prop::sample::select(Op::ALL.to_vec()),
        prop::collection::vec(var, 1..=3),
    )
        .prop_map(|(op, vars)| Piece::Expression { op, vars });
    prop::collection::vec(prop_oneof![literal, expression], 1..5)
}

/// A variable's value: characters that expand as themselves, as reserved characters, or
/// percent-encoded (space, `%`, a non-ASCII letter).
fn value() -> impl Strategy<Value = Value> {
    let text = prop::collection::vec(
        prop::sample::select(vec![
            'a', 'Z', '0', '.', '-', '~', '/', ',', '=', ';', '?', '&', '#', ':', '%', ' ', 'é',
        ]),
        0..4,
    )
    .prop_map(String::from_iter);
    prop_oneof![
        1 => Just(Value::Undefined),
        3 => text.clone().prop_map(Value::Text),
        1 => prop::collection::vec(text.clone(), 0..3).prop_map(Value::List),
        1 => prop::collection::vec((text.clone(), text), 0..3).prop_map(Value::Map),
    ]
}

/// One edit that turns an expansion into a near miss (or not).
#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Delete(Index),
    Insert(Index, char),
    Replace(Index, char),
    Truncate(Index),
    Repeat(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop::sample::select(vec![
        '/', '.', 'a', ',', '=', ';', '?', '&', '#', '%', ':', 'Z', '-', ' ', 'é', '{', '}', '4',
    ]);
    prop_oneof![
        3 => Just(Mutation::Keep),
        1 => any::<Index>().prop_map(Mutation::Delete),
        2 => (any::<Index>(), c.clone()).prop_map(|(at, c)| Mutation::Insert(at, c)),
        2 => (any::<Index>(), c).prop_map(|(at, c)| Mutation::Replace(at, c)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => any::<Index>().prop_map(Mutation::Repeat),
    ]
}

fn mutate(topic: &str, mutation: &Mutation) -> String {
    let mut chars: Vec<char> = topic.chars().collect();
    let len = chars.len();
    match mutation {
        Mutation::Keep => {}
        Mutation::Insert(at, c) => chars.insert(at.index(len + 1), *c),
        _ if len == 0 => {}
        Mutation::Delete(at) => {
            chars.remove(at.index(len));
        }
        Mutation::Replace(at, c) => chars[at.index(len)] = *c,
        Mutation::Truncate(at) => chars.truncate(at.index(len)),
        Mutation::Repeat(at) => {
            // Doubles the tail from a point: `/a/b` → `/a/b/b` (a repeated segment).
            let tail: Vec<char> = chars[at.index(len)..].to_vec();
            chars.extend(tail);
        }
    }
    chars.into_iter().collect()
}

/// A template and a topic biased towards near matches: an expansion, maybe edited once; or the
/// template's own text; or a short string of delimiters.
fn template_and_topic() -> impl Strategy<Value = (Vec<Piece>, String)> {
    template().prop_flat_map(|pieces| {
        let text = template_text(&pieces);
        let expansion = {
            let pieces = pieces.clone();
            (prop::collection::vec(value(), VAR_NAMES.len()), mutation())
                .prop_map(move |(values, mutation)| mutate(&expand(&pieces, &values), &mutation))
        };
        let topic = prop_oneof![
            8 => expansion,
            1 => Just(text),
            1 => "[/.a,=;?&#%:]{0,8}",
        ];
        (Just(pieces), topic)
    })
}

/// Compiles `text` without the hub's per-template limit (`--max-template-bytes`, 64 KiB by
/// default): these properties are about what a template matches, and a random template with
/// four long expressions can need more than the default (the limit has tests of its own).
fn compile(text: &str) -> Result<Selector, SelectorError> {
    static CACHE: LazyLock<SelectorCache> = LazyLock::new(|| {
        let hub = HubUrl::parse(DEFAULT_HUB_URL).expect("the default hub URL parses");
        SelectorCache::with_hub(
            SelectorLimits {
                template_bytes: 16 << 20,
                total_bytes: usize::MAX,
                compile_threads: 1,
            },
            hub,
        )
    });
    CACHE.get(text)
}

proptest! {
    #![proptest_config(config(2048))]

    /// A URI-template selector selects exactly the topics the slow reference matcher accepts.
    #[test]
    fn template_selector_agrees_with_reference_matcher(
        (pieces, topic) in template_and_topic()
    ) {
        let text = template_text(&pieces);
        let selector = compile(&text)
            .map_err(|e| TestCaseError::fail(format!("`{text}` is a valid template: {e}")))?;

        prop_assert_eq!(
            selector.matches(&topic),
            reference_matches(&pieces, &topic),
            "template `{}`, topic `{}`",
            text,
            topic
        );
    }

    /// Every RFC 6570 expansion of a template is selected by it (and by the reference), but for
    /// the one kind Mercure does not select either (`is_mercure_blind_spot`).
    #[test]
    fn template_selects_its_expansions(
        pieces in template(),
        values in prop::collection::vec(value(), VAR_NAMES.len()),
    ) {
        let text = template_text(&pieces);
        let selector = compile(&text)
            .map_err(|e| TestCaseError::fail(format!("`{text}` is a valid template: {e}")))?;
        prop_assume!(!is_mercure_blind_spot(&pieces, &values));
        let topic = expand(&pieces, &values);

        prop_assert!(selector.matches(&topic), "template `{}`, topic `{}`", text, topic);
        prop_assert!(
            reference_matches(&pieces, &topic),
            "reference: template `{}`, topic `{}`",
            text,
            topic
        );
    }
}

/// The reference matcher itself, on cases worked out by hand from RFC 6570's examples.
#[test]
fn reference_matcher_agrees_with_hand_worked_cases() {
    let var = |name, modifier| VarSpec { name, modifier };
    let query = vec![
        Piece::Literal("/s".to_owned()),
        Piece::Expression {
            op: Op::Query,
            vars: vec![var("a", Modifier::None), var("b", Modifier::None)],
        },
    ];
    assert!(reference_matches(&query, "/s?a=1&b=2"));
    assert!(reference_matches(&query, "/s"));
    assert!(reference_matches(&query, "/s{?a,b}"));
    assert!(!reference_matches(&query, "/s?a=1&b=2&c=3"));
    assert!(!reference_matches(&query, "/s?a=1/2"));
    let path = vec![Piece::Expression {
        op: Op::Path,
        vars: vec![var("a", Modifier::Explode)],
    }];
    assert!(reference_matches(&path, "/x/y/z"));
    assert!(!reference_matches(&path, "/x//y?"));
    assert_eq!(
        expand(
            &path,
            &[
                Value::List(vec!["x y".to_owned(), "é".to_owned()]),
                Value::Undefined,
                Value::Undefined,
                Value::Undefined,
                Value::Undefined,
            ]
        ),
        "/x%20y/%C3%A9"
    );
}

/// The blind spot `template_selects_its_expansions` leaves out, pinned: `{x,keys*}` with `x`
/// undefined and `keys = {a: 1}` expands to `a=1`, which the hub, like Mercure, does not select.
#[test]
fn template_misses_expansion_led_by_exploded_map_as_mercure_does() {
    let selector = Selector::parse("urn:{x,keys*}").expect("valid template");

    assert!(!selector.matches("urn:a=1"));
    assert!(selector.matches("urn:0,a=1"));
    assert!(selector.matches("urn:a"));
}
