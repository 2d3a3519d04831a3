//! Mercure 1.0 `urlpattern` matchers and the hub URL they resolve against: compiling a pattern,
//! matching topics, the hub's reserved namespace, and the character rule for matchers, topics,
//! ids and types.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use icu_properties::CodePointMapData;
use icu_properties::props::GeneralCategory;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use regex_automata::dfa::{Automaton, StartKind, dense, sparse};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use url::Url;
use urlpattern::matcher::InnerMatcher;
use urlpattern::regexp::RegExp;
use urlpattern::{RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternOptions};

/// Mercure's own development default: a hub behind a proxy sets its public URL here
/// (`--hub-url`).
pub const DEFAULT_HUB_URL: &str = "https://localhost/.well-known/mercure";

/// The hub's public URL (`--hub-url`): the base relative URL patterns and topics resolve against,
/// and whose path is the reserved namespace.
#[derive(Debug, Clone)]
pub struct HubUrl {
    url: Url,
    /// The URL's path without a trailing `/`.
    path: String,
    /// `path` in the canonical form `addresses_namespace` compares in.
    namespace: String,
}

impl HubUrl {
    /// An absolute `http`/`https` URL with a host and a path below the root, without query or
    /// fragment: a hub at `/` would reserve every topic, and a query or fragment would be dropped
    /// or carried over unpredictably when relative topics resolve against it.
    pub fn parse(text: &str) -> Result<HubUrl, String> {
        let url = Url::parse(text)
            .map_err(|e| format!("the hub URL {text:?} is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the hub URL {text:?} must be http or https, not {}",
                url.scheme()
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "the hub URL {text:?} must not have a query or a fragment"
            ));
        }
        let path = url.path().trim_end_matches('/').to_owned();
        if path.is_empty() {
            return Err(format!(
                "the hub URL {text:?} needs a path, e.g. /.well-known/mercure: \
                 everything below it is reserved for the hub"
            ));
        }
        let namespace = canonical_path(&path);
        Ok(HubUrl {
            url,
            path,
            namespace,
        })
    }

    /// The URL as serialized by the WHATWG parser (`https://Example.COM/x` → `https://example.com/x`).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL's path, e.g. `/.well-known/mercure` (no trailing slash).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `topic` addresses the reserved hub namespace (spec "Publication", `topic` bullet):
    /// resolve against the hub URL with the WHATWG URL parser, remove dot segments, decode %-encoded
    /// unreserved chars in the path, then path == hub path or starts with hub path + "/", any
    /// scheme/host. A topic that does not parse as a URL reference → false.
    pub fn addresses_namespace(&self, topic: &str) -> bool {
        // The WHATWG parser removes dot segments, `%2e` ones included, and turns `\` into `/` for
        // special schemes: the same canonical form URL patterns are matched against.
        let Ok(resolved) = self.resolve(topic) else {
            return false;
        };
        let path = canonical_path(resolved.path());
        path == self.namespace
            || path
                .strip_prefix(&self.namespace)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Heap bytes its strings keep.
    fn heap_bytes(&self) -> usize {
        self.url.as_str().len() + self.path.len() + self.namespace.len()
    }

    /// `reference` resolved against the hub URL with the WHATWG URL parser.
    fn resolve(&self, reference: &str) -> Result<Url, url::ParseError> {
        Url::options().base_url(Some(&self.url)).parse(reference)
    }

    /// `topic` resolved against this URL and split into the components URL patterns compare,
    /// once for every pattern an event is matched against; `None` if it does not parse.
    pub fn parse_topic(&self, topic: &str) -> Option<TopicUrl> {
        let url = self.resolve(topic).ok()?;
        // As the urlpattern crate reads a parsed URL for `test`.
        Some(TopicUrl {
            protocol: url.scheme().to_owned(),
            username: url.username().to_owned(),
            password: url.password().unwrap_or_default().to_owned(),
            hostname: url.host_str().unwrap_or_default().to_owned(),
            port: url::quirks::port(&url).to_owned(),
            pathname: url::quirks::pathname(&url).to_owned(),
            search: url.query().unwrap_or_default().to_owned(),
            hash: url.fragment().unwrap_or_default().to_owned(),
        })
    }
}

/// A topic as URL patterns see it: resolved against the hub URL, split into components. One
/// hub's patterns all compile against its URL, so one parse serves all of them.
#[derive(Debug, Clone)]
pub struct TopicUrl {
    protocol: String,
    username: String,
    password: String,
    hostname: String,
    port: String,
    pathname: String,
    search: String,
    hash: String,
}

impl TopicUrl {
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn pathname(&self) -> &str {
        &self.pathname
    }
}

/// Characters of a URL Pattern component string that start something other than a literal.
const SPECIAL: [char; 9] = [':', '*', '(', ')', '{', '}', '\\', '?', '+'];

/// The literal start of a URL Pattern component string. A modifier (`?`, `+`) may apply to
/// the character before it, and a name, wildcard or group takes the segment delimiter before
/// it (`/` or `.`) into its part (`/books/:id?` matches `/books`), so that character is left
/// out too: a shorter prefix only lets more patterns through the prefilter, never fewer.
fn literal_prefix(pattern: &str) -> &str {
    let Some(at) = pattern.find(SPECIAL) else {
        return pattern;
    };
    let before = &pattern[..at];
    match before.chars().last() {
        Some(last)
            if matches!(pattern.as_bytes()[at], b'?' | b'+') || matches!(last, '/' | '.') =>
        {
            &before[..before.len() - last.len_utf8()]
        }
        _ => before,
    }
}

/// Every byte but RFC 3986's unreserved characters (`ALPHA / DIGIT / - . _ ~`).
pub const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `path` with each segment decoded and re-encoded so that only unreserved characters stay
/// literal. Two paths agree here when their segments decode to the same bytes, which covers the
/// spec's "percent-encoded unreserved characters decoded" (`%6D` = `m`) and, beyond it, treats
/// `:` and `%3A` alike: that can only refuse more topics, never let a variant through.
fn canonical_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let bytes: Vec<u8> = percent_decode_str(segment).collect();
            percent_encode(&bytes, NOT_UNRESERVED).to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A compiled `urlpattern` matcher. Clone is cheap (Arc inside); Eq/Hash by source text.
#[derive(Clone)]
pub struct UrlPatternMatcher(Arc<Compiled>);

struct Compiled {
    source: String,
    pattern: UrlPattern<BoundedRegex>,
    /// The hub URL the pattern was compiled against, which topics resolve against too.
    base: HubUrl,
    bytes: usize,
}

impl UrlPatternMatcher {
    /// Compiles `source` (absolute like `https://example.com/books/:id`, or relative like
    /// `/.well-known/mercure/subscriptions/exact/:topic/:subscriber`, resolved against `hub`).
    /// `max_regex_bytes` bounds each component's compiled automaton (and 4 times that what
    /// building it may take); a pattern over it is an error, like an invalid pattern.
    /// ignoreCase off.
    pub fn parse(source: &str, hub: &HubUrl, max_regex_bytes: usize) -> Result<Self, String> {
        let (pattern, regex_error) = with_regex_limit(max_regex_bytes, || {
            let init = UrlPatternInit::parse_constructor_string::<BoundedRegex>(
                source,
                Some(hub.url.clone()),
            )?;
            // The spec forbids ignoreCase; the hostname is lowercased by canonicalization anyway.
            let options = UrlPatternOptions {
                regex_syntax: RegexSyntax::Rust,
                ignore_case: false,
            };
            UrlPattern::<BoundedRegex>::parse(init, options)
        });
        let mut pattern = pattern.map_err(|e| match regex_error {
            Some(RegexFailure::TooBig(limit)) => format!(
                "the URL pattern {source:?} is too complex: its regular expression is over \
                 {limit} bytes"
            ),
            Some(RegexFailure::Invalid(why)) => format!("invalid URL pattern {source:?}: {why}"),
            None => format!("invalid URL pattern {source:?}: {e}"),
        })?;
        // Each component's whole-component regex is only read by `exec`'s callers of the
        // crate's internals, never by `test` (which runs the component's `matcher`): built above
        // to check it, it is dropped here, so a pattern keeps only what `test` uses.
        for component in [
            &mut pattern.protocol,
            &mut pattern.username,
            &mut pattern.password,
            &mut pattern.hostname,
            &mut pattern.port,
            &mut pattern.pathname,
            &mut pattern.search,
            &mut pattern.hash,
        ] {
            component.regexp = Err(urlpattern::Error::RegExp(()));
        }
        let bytes = std::mem::size_of::<Compiled>()
            + source.len()
            + hub.heap_bytes()
            + pattern_bytes(&pattern);
        Ok(UrlPatternMatcher(Arc::new(Compiled {
            source: source.to_owned(),
            pattern,
            base: hub.clone(),
            bytes,
        })))
    }

    /// Whether `topic` matches: the topic resolved against the hub URL (a topic that does not parse → false).
    pub fn matches(&self, topic: &str) -> bool {
        self.0
            .base
            .parse_topic(topic)
            .is_some_and(|url| self.matches_url(&url))
    }

    /// `topic` parsed against the hub URL this pattern was compiled against.
    pub fn parse_topic(&self, topic: &str) -> Option<TopicUrl> {
        self.0.base.parse_topic(topic)
    }

    /// Whether the parsed `topic` matches: each component's matcher, as the urlpattern
    /// crate's `test` runs them, without parsing the topic again.
    pub fn matches_url(&self, topic: &TopicUrl) -> bool {
        let pattern = &self.0.pattern;
        pattern.protocol.matcher.matches(&topic.protocol).is_some()
            && pattern.username.matcher.matches(&topic.username).is_some()
            && pattern.password.matcher.matches(&topic.password).is_some()
            && pattern.hostname.matcher.matches(&topic.hostname).is_some()
            && pattern.port.matcher.matches(&topic.port).is_some()
            && pattern.pathname.matcher.matches(&topic.pathname).is_some()
            && pattern.search.matcher.matches(&topic.search).is_some()
            && pattern.hash.matcher.matches(&topic.hash).is_some()
    }

    /// What every topic this pattern matches starts with: its hostname when that is literal,
    /// and the literal start of its pathname (before the first name, wildcard, group, regexp
    /// or escape). An index keyed by these finds the patterns worth running for a topic.
    pub fn prefilter_key(&self) -> (Option<String>, String) {
        let hostname = &self.0.pattern.hostname.pattern_string;
        let host = (!hostname.contains(SPECIAL)).then(|| hostname.clone());
        (
            host,
            literal_prefix(&self.0.pattern.pathname.pattern_string).to_owned(),
        )
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    /// Approximate heap bytes it keeps (for a memory budget); a rough estimate is fine.
    pub fn bytes(&self) -> usize {
        self.0.bytes
    }
}

impl fmt::Debug for UrlPatternMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UrlPatternMatcher")
            .field(&self.0.source)
            .finish()
    }
}

impl PartialEq for UrlPatternMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.0.source == other.0.source
    }
}

impl Eq for UrlPatternMatcher {}

impl Hash for UrlPatternMatcher {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.source.hash(state);
    }
}

/// A size of what the pattern's components keep: their strings and the automata of the
/// matchers that are neither a literal nor a single capture (most patterns keep none).
fn pattern_bytes(pattern: &UrlPattern<BoundedRegex>) -> usize {
    [
        &pattern.protocol,
        &pattern.username,
        &pattern.password,
        &pattern.hostname,
        &pattern.port,
        &pattern.pathname,
        &pattern.search,
        &pattern.hash,
    ]
    .into_iter()
    .map(|component| {
        let matcher = match &component.matcher.inner {
            InnerMatcher::RegExp { regexp } => regexp.as_ref().map_or(0, BoundedRegex::bytes),
            InnerMatcher::Literal { literal } => literal.len(),
            InnerMatcher::SingleCapture { .. } => 0,
        };
        let names: usize = component.group_name_list.iter().map(String::len).sum();
        component.pattern_string.len()
            + component.matcher.prefix.len()
            + component.matcher.suffix.len()
            + names
            + std::mem::size_of::<String>() * component.group_name_list.len()
            + matcher
    })
    .sum()
}

/// Memory, and so time, building one component's automaton may take, as a multiple of what
/// it may keep (as for URI templates: built densely, kept sparse).
const BUILD_LIMIT_FACTOR: usize = 4;

/// The regex engine URL patterns compile to: a sparse DFA (regex-automata), as URI templates
/// are, which matches in time linear in the topic (no backtracking), as the spec's
/// "URL-Pattern Denial of Service" section asks, and whose size limits bound what a crafted
/// pattern costs to compile and to keep. It answers whether a component matches, never its
/// groups: the hub only ever `test`s a pattern.
#[derive(Debug)]
struct BoundedRegex {
    source: String,
    /// Boxed: a pattern holds up to sixteen of these inline, most of them unused.
    dfa: Box<sparse::DFA<Vec<u8>>>,
}

impl BoundedRegex {
    /// Bytes it keeps: its automaton and its text.
    fn bytes(&self) -> usize {
        std::mem::size_of::<sparse::DFA<Vec<u8>>>() + self.dfa.memory_usage() + self.source.len()
    }
}

/// Why the last regex failed to compile.
#[derive(Debug)]
enum RegexFailure {
    /// Its automaton needs more than this many bytes.
    TooBig(usize),
    /// Its syntax, or a feature a DFA cannot match (a Unicode word boundary).
    Invalid(String),
}

/// What the regex engine reports as failed to compile first, and the size limit in force.
/// `RegExp::parse` takes no context, so `UrlPatternMatcher::parse` passes both through here.
#[derive(Default)]
struct RegexScope {
    max_bytes: usize,
    error: Option<RegexFailure>,
}

thread_local! {
    // Outside `with_regex_limit` the limit is 0: every regex fails to compile (fail closed).
    static REGEX_SCOPE: RefCell<RegexScope> = RefCell::default();
}

/// Runs `compile` with `max_bytes` as the limit of every regex it builds, and returns the first
/// regex error it met.
fn with_regex_limit<T>(max_bytes: usize, compile: impl FnOnce() -> T) -> (T, Option<RegexFailure>) {
    REGEX_SCOPE.with_borrow_mut(|scope| {
        *scope = RegexScope {
            max_bytes,
            error: None,
        }
    });
    let compiled = compile();
    let error = REGEX_SCOPE.with_borrow_mut(std::mem::take).error;
    (compiled, error)
}

/// `pattern` compiled to a sparse DFA of at most `max_bytes`.
fn build_dfa(pattern: &str, flags: &str, max_bytes: usize) -> Result<BoundedRegex, RegexFailure> {
    let syntax = syntax::Config::new().case_insensitive(flags.contains('i'));
    // A syntax error's last line names the problem; the lines above draw the generated
    // regular expression, which the user never wrote.
    syntax::parse_with(pattern, &syntax).map_err(|err| {
        RegexFailure::Invalid(
            err.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned(),
        )
    })?;
    let build_limit = max_bytes.saturating_mul(BUILD_LIMIT_FACTOR);
    let dense = dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .byte_classes(true)
                .determinize_size_limit(Some(build_limit))
                .dfa_size_limit(Some(build_limit)),
        )
        .syntax(syntax)
        .thompson(thompson::Config::new().shrink(true))
        .build(pattern)
        .map_err(|err| {
            let why = err.to_string();
            if why.contains("size limit") || why.contains("too many") {
                RegexFailure::TooBig(max_bytes)
            } else {
                RegexFailure::Invalid(why)
            }
        })?;
    let dfa = dense
        .to_sparse()
        .map_err(|_| RegexFailure::TooBig(max_bytes))?;
    if dfa.memory_usage() > max_bytes {
        return Err(RegexFailure::TooBig(max_bytes));
    }
    Ok(BoundedRegex {
        source: pattern.to_owned(),
        dfa: Box::new(dfa),
    })
}

impl RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        REGEX_SCOPE.with_borrow_mut(|scope| {
            build_dfa(pattern, flags, scope.max_bytes).map_err(|failure| {
                scope.error.get_or_insert(failure);
            })
        })
    }

    /// `Some` when `text` matches, with no groups: `test` reads only whether it matched.
    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let input = Input::new(text).anchored(Anchored::Yes).earliest(true);
        // A search fails only on quit bytes, and this DFA has none.
        matches!(self.dfa.try_search_fwd(&input), Ok(Some(_))).then(Vec::new)
    }

    fn pattern_string(&self) -> &str {
        &self.source
    }
}

/// The value rule for matchers, topics, ids and types in Mercure 1.0: no C0 (U+0000-U+001F), C1
/// (U+0080-U+009F), U+007F, or Unicode general category Cf characters. Err names the problem
/// (e.g. "contains the control character U+0007" / "contains the format character U+200B").
pub fn check_value(value: &str) -> Result<(), String> {
    let categories = CodePointMapData::<GeneralCategory>::new();
    for c in value.chars() {
        // `char::is_control` is exactly category Cc: C0, U+007F and C1.
        if c.is_control() {
            return Err(format!(
                "contains the control character U+{:04X}",
                u32::from(c)
            ));
        }
        if categories.get(c) == GeneralCategory::Format {
            return Err(format!(
                "contains the format character U+{:04X}",
                u32::from(c)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern component's literal start stops before names, wildcards, groups, escapes,
    /// and the character a modifier applies to.
    #[test]
    fn literal_prefixes_of_pattern_strings() {
        assert_eq!(literal_prefix("/books/:id"), "/books");
        assert_eq!(literal_prefix("/books/:id?"), "/books");
        assert_eq!(literal_prefix("/books/*"), "/books");
        assert_eq!(literal_prefix("/books/1"), "/books/1");
        assert_eq!(literal_prefix("/books/x?"), "/books/");
        assert_eq!(literal_prefix("/b(o+)ks"), "/b");
        assert_eq!(literal_prefix("/a\\:b"), "/a");
        assert_eq!(literal_prefix("*"), "");
        assert_eq!(literal_prefix("/é+"), "/");
    }

    const LIMIT: usize = 1 << 20;

    fn hub() -> HubUrl {
        HubUrl::parse("https://localhost/.well-known/mercure").expect("a valid hub URL")
    }

    fn pattern(source: &str) -> UrlPatternMatcher {
        UrlPatternMatcher::parse(source, &hub(), LIMIT).expect("a valid pattern")
    }

    /// An absolute pattern with `:id` matches one path segment on its own host only.
    #[test]
    fn absolute_pattern_matches_one_segment_on_its_host() {
        let books = pattern("https://example.com/books/:id");

        assert!(books.matches("https://example.com/books/1"));
        assert!(!books.matches("https://example.com/books/1/x"));
        assert!(!books.matches("https://example.com/books/1/"));
        assert!(!books.matches("https://other.example/books/1"));
        assert!(!books.matches("/books/1"), "resolves to the hub's host");
    }

    /// A pattern without `?` or `#` accepts any query and fragment (they default to `*`).
    #[test]
    fn pattern_without_query_accepts_any_query_and_fragment() {
        let books = pattern("https://example.com/books/:id");

        assert!(books.matches("https://example.com/books/1?page=2#top"));
    }

    /// A relative pattern resolves against the hub URL and matches relative topics and the
    /// same topics written absolute on the hub's host.
    #[test]
    fn relative_pattern_matches_relative_and_absolute_topics_on_the_hub() {
        let subscriptions = pattern("/.well-known/mercure/subscriptions/:type/:match/:sub");
        let path = "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fa/urn%3Auuid%3Ax";

        assert!(subscriptions.matches(path));
        assert!(subscriptions.matches(&format!("https://localhost{path}")));
        assert!(!subscriptions.matches(&format!("https://other.example{path}")));
        assert!(!subscriptions.matches("/.well-known/mercure/subscriptions/exact/a"));
    }

    /// Hosts compare case-insensitively (both sides are canonicalized), paths case-sensitively.
    #[test]
    fn host_is_case_insensitive_and_path_case_sensitive() {
        let books = pattern("https://Example.COM/books/:id");

        assert!(books.matches("https://EXAMPLE.com/books/1"));
        assert!(!books.matches("https://example.com/Books/1"));
    }

    /// A topic the WHATWG parser refuses never matches; one it accepts is a URL reference even
    /// with a space in it, resolved like any relative topic.
    #[test]
    fn topic_that_does_not_parse_never_matches() {
        let patterns = [
            pattern("https://example.com/*"),
            pattern("http://*"),
            pattern("/*"),
        ];

        for p in &patterns {
            assert!(!p.matches("http://["), "{p:?}");
            assert!(!p.matches("https://exa mple.com/x"), "{p:?}");
            assert!(!p.matches("foo bar") || p.as_str() == "/*", "{p:?}");
        }
        // `foo bar` is `https://localhost/.well-known/foo%20bar` to the WHATWG parser.
        assert!(pattern("/.well-known/*").matches("foo bar"));
    }

    /// Patterns the URL Pattern parser or the regex crate refuse are errors naming the pattern.
    #[test]
    fn invalid_patterns_are_refused() {
        for source in [
            "https://example.com/(",
            "https://example.com/:id(",
            "https://example.com/(?<=a)b",
            "https://example.com/:",
            "https://exa mple.com/",
        ] {
            let refused = UrlPatternMatcher::parse(source, &hub(), LIMIT);

            let message = refused.expect_err(source);
            assert!(message.contains("invalid URL pattern"), "{message}");
        }
    }

    /// A pattern whose regex is over the size limit is refused as too complex.
    #[test]
    fn pattern_over_the_regex_size_limit_is_refused() {
        let refused = UrlPatternMatcher::parse("https://e.com/(\\w{100}){100}", &hub(), LIMIT);

        let message = refused.expect_err("over the limit");
        assert!(message.contains("too complex"), "{message}");
    }

    /// Nested repetitions that backtracking engines take exponential time on return at once on a
    /// long hostile topic (URL Pattern refuses nested groups that do not start with `?`).
    #[test]
    fn catastrophic_backtracking_pattern_returns_on_a_hostile_topic() {
        let nested = pattern("https://e.com/((?:a+)+)((?:a|aa)+)((?:a*)*)(b+)");
        let hostile = format!("https://e.com/{}!", "a".repeat(50_000));

        let started = std::time::Instant::now();
        let matched = nested.matches(&hostile);

        assert!(!matched);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    /// The reserved namespace: the hub path and below, any host, after dot-segment removal and
    /// decoding of unreserved characters.
    #[test]
    fn namespace_covers_hub_path_and_its_variants() {
        let hub = hub();

        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/",
            "/.well-known/mercure/x",
            "https://other.example/.well-known/mercure/subscriptions/a",
            "/.well-known/%6Dercure/x",
            "/a/../.well-known/mercure/y",
            "/.well-known/mercure/./x",
            "/.well-known/mercure/%2e%2e/mercure/x",
            "mercure/x",
        ] {
            assert!(hub.addresses_namespace(topic), "{topic}");
        }
        for topic in [
            "/.well-known/mercurey",
            "/.well-known/mercure%2Fx",
            "https://e.com/books/1",
            "foo",
            "urn:uuid:1",
            "http://[",
        ] {
            assert!(!hub.addresses_namespace(topic), "{topic}");
        }
    }

    /// A hub URL with a prefix path reserves that path, not the default one.
    #[test]
    fn hub_url_with_a_prefix_path_reserves_its_own_path() {
        let hub = HubUrl::parse("https://h.example/hub/.well-known/mercure/").expect("valid");

        assert_eq!(hub.path(), "/hub/.well-known/mercure");
        assert!(hub.addresses_namespace("/hub/.well-known/mercure/x"));
        assert!(hub.addresses_namespace("https://x.example/hub/.well-known/mercure"));
        assert!(!hub.addresses_namespace("/.well-known/mercure/x"));
    }

    /// The hub URL must be an absolute http(s) URL with a path and no query or fragment.
    #[test]
    fn hub_url_must_be_absolute_http_with_a_path() {
        for text in [
            "/.well-known/mercure",
            "ftp://h.example/.well-known/mercure",
            "https://h.example/",
            "https://h.example/.well-known/mercure?x=1",
            "https://h.example/.well-known/mercure#x",
        ] {
            assert!(HubUrl::parse(text).is_err(), "{text}");
        }
        let hub = HubUrl::parse("HTTPS://H.example/.well-known/mercure").expect("valid");
        assert_eq!(hub.as_str(), "https://h.example/.well-known/mercure");
    }

    /// Matchers are equal and hash by their source; Debug shows only it; bytes counts something.
    #[test]
    fn matchers_compare_by_source() {
        let a = pattern("https://example.com/books/:id");
        let b = pattern("https://example.com/books/:id");

        assert_eq!(a, b);
        assert_ne!(a, pattern("https://example.com/:id"));
        assert_eq!(
            format!("{a:?}"),
            "UrlPatternMatcher(\"https://example.com/books/:id\")"
        );
        assert!(a.bytes() > a.as_str().len(), "{}", a.bytes());
    }

    /// IRIs pass the value rule; control and format characters are refused by name.
    #[test]
    fn check_value_refuses_control_and_format_characters() {
        assert_eq!(check_value("https://é.example/ü"), Ok(()));

        for (value, problem) in [
            ("a\u{7}", "control character U+0007"),
            ("\u{85}", "control character U+0085"),
            ("\u{7f}", "control character U+007F"),
            ("a\u{200b}b", "format character U+200B"),
            ("\u{ad}", "format character U+00AD"),
            ("\u{feff}", "format character U+FEFF"),
        ] {
            let message = check_value(value).expect_err(value);
            assert!(message.ends_with(problem), "{message}");
        }
    }
}
