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
use regex::{Regex, RegexBuilder};
use url::Url;
use urlpattern::matcher::InnerMatcher;
use urlpattern::regexp::RegExp;
use urlpattern::{
    RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions,
};

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

    /// `reference` resolved against the hub URL with the WHATWG URL parser.
    fn resolve(&self, reference: &str) -> Result<Url, url::ParseError> {
        Url::options().base_url(Some(&self.url)).parse(reference)
    }
}

/// Every byte but RFC 3986's unreserved characters (`ALPHA / DIGIT / - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
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
    /// `max_regex_bytes` bounds each component's compiled regex (regex::RegexBuilder::size_limit
    /// and dfa_size_limit); a pattern over it is an error, like an invalid pattern. ignoreCase off.
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
        let pattern = pattern.map_err(|e| match regex_error {
            Some(regex::Error::CompiledTooBig(limit)) => format!(
                "the URL pattern {source:?} is too complex: its regular expression is over \
                 {limit} bytes"
            ),
            // A syntax error's last line names the problem; the lines above draw the generated
            // regular expression, which the user never wrote.
            Some(regex_error) => format!(
                "invalid URL pattern {source:?}: {}",
                regex_error.to_string().lines().last().unwrap_or_default()
            ),
            None => format!("invalid URL pattern {source:?}: {e}"),
        })?;
        let bytes = std::mem::size_of::<Compiled>() + source.len() + pattern_bytes(&pattern);
        Ok(UrlPatternMatcher(Arc::new(Compiled {
            source: source.to_owned(),
            pattern,
            base: hub.clone(),
            bytes,
        })))
    }

    /// Whether `topic` matches: the topic resolved against the hub URL (a topic that does not parse → false).
    pub fn matches(&self, topic: &str) -> bool {
        let Ok(url) = self.0.base.resolve(topic) else {
            return false;
        };
        // `test` only fails for an input it has to parse itself; ours is parsed already.
        self.0
            .pattern
            .test(UrlPatternMatchInput::Url(url))
            .unwrap_or(false)
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

/// Per compiled regex: what `regex` keeps beside the program (strategy, pools, prefilter).
const REGEX_FIXED_BYTES: usize = 2_048;
/// Per byte of a regex's source: its NFA and the per-thread lazy-DFA cache once it runs.
const REGEX_BYTES_PER_SOURCE_BYTE: usize = 64;

/// A rough size of the pattern's components: their strings and compiled regexes. Each component
/// keeps one regex, and a second one when its matcher is not a literal or a single capture.
fn pattern_bytes(pattern: &UrlPattern<BoundedRegex>) -> usize {
    let regex_bytes = |regex: &BoundedRegex| {
        REGEX_FIXED_BYTES + REGEX_BYTES_PER_SOURCE_BYTE * regex.0.as_str().len()
    };
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
        let own = component.regexp.as_ref().map_or(0, regex_bytes);
        let matcher = match &component.matcher.inner {
            InnerMatcher::RegExp { regexp } => regexp.as_ref().map_or(0, regex_bytes),
            InnerMatcher::Literal { literal } => literal.len(),
            InnerMatcher::SingleCapture { .. } => 0,
        };
        component.pattern_string.len()
            + component.matcher.prefix.len()
            + component.matcher.suffix.len()
            + own
            + matcher
    })
    .sum()
}

/// The regex engine URL patterns compile to: the `regex` crate, which matches in time linear in
/// the topic (no backtracking), as the spec's "URL-Pattern Denial of Service" section asks, and
/// whose size limits bound what a crafted pattern costs to compile and to keep.
#[derive(Debug)]
struct BoundedRegex(Regex);

/// What the `regex` crate reports as failed to compile last, and the size limit in force.
/// `RegExp::parse` takes no context, so `UrlPatternMatcher::parse` passes both through here.
#[derive(Default)]
struct RegexScope {
    max_bytes: usize,
    error: Option<regex::Error>,
}

thread_local! {
    // Outside `with_regex_limit` the limit is 0: every regex fails to compile (fail closed).
    static REGEX_SCOPE: RefCell<RegexScope> = RefCell::default();
}

/// Runs `compile` with `max_bytes` as the limit of every regex it builds, and returns the first
/// regex error it met.
fn with_regex_limit<T>(max_bytes: usize, compile: impl FnOnce() -> T) -> (T, Option<regex::Error>) {
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

impl RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        REGEX_SCOPE.with_borrow_mut(|scope| {
            RegexBuilder::new(pattern)
                .case_insensitive(flags.contains('i'))
                .size_limit(scope.max_bytes)
                .dfa_size_limit(scope.max_bytes)
                .build()
                .map(BoundedRegex)
                .map_err(|e| {
                    scope.error.get_or_insert(e);
                })
        })
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(
            captures
                .iter()
                .skip(1)
                .map(|group| group.map(|m| m.as_str()))
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
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

    const LIMIT: usize = 1 << 20;

    fn hub() -> HubUrl {
        HubUrl::parse("https://localhost/.well-known/mercure").expect("a valid hub URL")
    }

    fn pattern(source: &str) -> UrlPatternMatcher {
        UrlPatternMatcher::parse(source, &hub(), LIMIT).expect("a valid pattern")
    }

    /// TEMPORARY: calibration of the bytes estimate.
    #[test]
    fn calibrate() {
        for source in [
            "https://example.com/books/:id",
            "/.well-known/mercure/subscriptions/:type/:match/:sub",
            "https://e.com/books/:id(\\d+)/:rest*",
            "*",
        ] {
            let p = pattern(source);
            let c = &p.0.pattern;
            let mut total = 0;
            for comp in [
                &c.protocol,
                &c.username,
                &c.password,
                &c.hostname,
                &c.port,
                &c.pathname,
                &c.search,
                &c.hash,
            ] {
                let re = comp.regexp.as_ref().unwrap().0.as_str();
                let m = regex_automata::meta::Regex::new(re).unwrap();
                let cache = m.create_cache();
                let inner = matches!(comp.matcher.inner, InnerMatcher::RegExp { .. });
                eprintln!(
                    "{re:?} len={} mem={} cache={} inner={inner}",
                    re.len(),
                    m.memory_usage(),
                    cache.memory_usage()
                );
                total += m.memory_usage() + cache.memory_usage();
            }
            eprintln!("{source}: measured {total} estimate {}", p.bytes());
        }
    }
}
