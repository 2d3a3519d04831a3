//! Topic selectors: an exact topic, `*`, or an RFC 6570 URI template, matched the way Mercure
//! hubs match them (yosida95/uritemplate's `Regexp()`), compiled once to a DFA and shared.
//!
//! - [`template`]: RFC 6570 URI templates, compiled to a DFA that matches a topic in one pass.
//! - [`cache`]: the compiled templates and URL patterns every subscriber shares, within a byte
//!   budget, compiled off the workers.

mod cache;
mod template;

use std::{
    fmt,
    hash::{Hash, Hasher},
    str::FromStr,
    sync::Arc,
};

use crate::url_pattern::{TopicUrl, UrlPatternMatcher};

use self::{cache::Charge, template::Compiled};
pub use self::{
    cache::{CompileFailed, SelectorCache, SelectorLimits},
    template::{
        DEFAULT_COMPILE_THREADS, DEFAULT_MAX_SELECTOR_BYTES, DEFAULT_MAX_TEMPLATE_BYTES, Template,
    },
};

/// A compiled topic selector.
///
/// `*` selects every topic, a string containing `{` is a URI template, anything else is an
/// exact topic compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// One topic, compared by string equality.
    Exact(String),
    /// An RFC 6570 URI template, e.g. `https://example.com/books/{id}`.
    Template(Template),
    /// A WHATWG URL Pattern (Mercure 1.0's `urlpattern` matcher type), e.g.
    /// `https://example.com/books/:id`.
    UrlPattern(Arc<Pattern>),
}

/// A topic of one event, parsed as a URL at most once, however many URL patterns it is
/// matched against (the first one parses it).
#[derive(Debug)]
pub struct ParsedTopic<'a> {
    pub text: &'a str,
    url: std::cell::OnceCell<Option<TopicUrl>>,
}

impl<'a> ParsedTopic<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            url: std::cell::OnceCell::new(),
        }
    }

    /// The topic as a URL, parsed with `pattern`'s hub URL if no one parsed it yet.
    pub fn url(&self, pattern: &Pattern) -> Option<&TopicUrl> {
        self.url
            .get_or_init(|| pattern.matcher.parse_topic(self.text))
            .as_ref()
    }
}

/// A compiled URL pattern, shared by everyone who uses the same text (one compiled pattern
/// keeps tens of kilobytes of regular expressions), its bytes counted in its cache's budget.
pub struct Pattern {
    matcher: UrlPatternMatcher,
    /// Gives the pattern's bytes back to its cache's budget when the last user drops it.
    _charge: Option<Charge>,
}

impl Pattern {
    pub fn matches(&self, topic: &str) -> bool {
        self.matcher.matches(topic)
    }

    /// As [`matches`](Self::matches), parsing the topic only if no pattern did before.
    pub fn matches_parsed(&self, topic: &ParsedTopic<'_>) -> bool {
        topic
            .url(self)
            .is_some_and(|url| self.matcher.matches_url(url))
    }

    /// The literal hostname (if it is one) and start of the pathname of every topic it
    /// matches.
    pub fn prefilter_key(&self) -> (Option<String>, String) {
        self.matcher.prefilter_key()
    }

    pub fn as_str(&self) -> &str {
        self.matcher.as_str()
    }

    /// Memory its compiled matcher keeps (what its cache's budget is charged).
    pub fn bytes(&self) -> usize {
        self.matcher.bytes()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.matcher.fmt(f)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.matcher == other.matcher
    }
}

impl Eq for Pattern {}

impl Hash for Pattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.matcher.hash(state);
    }
}

/// Mercure 1.0's matcher types (`match=` / `match_exact=`, `match_urlpattern=`), and the
/// 0.x selectors' URI templates, as active subscriptions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatcherType {
    Exact,
    UrlPattern,
    /// A Mercure 0.x `topic=` selector containing `{`.
    UriTemplate,
}

impl MatcherType {
    /// The canonical name (subscription topics, `match_type`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
            Self::UriTemplate => "uritemplate",
        }
    }

    /// The type a 1.0 subscribe parameter or a `match_type` names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }
}

impl Selector {
    /// Parses a selector; only URI templates can fail.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        if s == "*" {
            Ok(Selector::Any)
        } else if s.contains('{') {
            Template::parse(s).map(Selector::Template)
        } else {
            Ok(Selector::Exact(s.to_owned()))
        }
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(exact) => exact == topic,
            Selector::Template(template) => template.matches(topic),
            Selector::UrlPattern(pattern) => pattern.matches(topic),
        }
    }

    /// As [`matches`](Self::matches), for a topic URL patterns parse once per event.
    pub fn matches_parsed(&self, topic: &ParsedTopic<'_>) -> bool {
        match self {
            Selector::UrlPattern(pattern) => pattern.matches_parsed(topic),
            other => other.matches(topic.text),
        }
    }

    /// Memory its compiled matcher keeps: nothing for `*` and exact topics.
    pub fn bytes(&self) -> usize {
        match self {
            Selector::Any | Selector::Exact(_) => 0,
            Selector::Template(template) => template.bytes(),
            Selector::UrlPattern(pattern) => pattern.bytes(),
        }
    }

    /// The selector as it was written.
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Any => "*",
            Selector::Exact(exact) => exact,
            Selector::Template(template) => template.as_str(),
            Selector::UrlPattern(pattern) => pattern.as_str(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// Why a selector could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// The selector contains `{` but is not a valid RFC 6570 URI template.
    #[error("invalid URI template `{template}`: {problem} at byte {offset}")]
    InvalidTemplate {
        /// The selector as given.
        template: String,
        /// Byte offset of the offending literal character or expression (its `{`).
        offset: usize,
        /// What is wrong there.
        problem: TemplateProblem,
    },
    /// The template is valid but its matcher would need more memory than allowed.
    #[error(
        "URI template `{template}` is too complex: matching it in one pass over a topic would \
         take more than {limit} bytes"
    )]
    TooComplex {
        /// The selector as given.
        template: String,
        /// The limit it exceeds (`--max-template-bytes`).
        limit: usize,
    },
    /// A `urlpattern` matcher that is not a valid URL Pattern, or whose regular expressions
    /// would exceed the size limit.
    #[error("invalid URL pattern `{pattern}`: {reason}")]
    InvalidUrlPattern { pattern: String, reason: String },
    /// The templates in use already keep all the memory they may.
    #[error("the hub's memory for URI templates ({limit} bytes) is full; try again later")]
    Full {
        /// `--max-selector-bytes`.
        limit: usize,
    },
}

/// The syntax error found in a URI template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    /// A `{` without its `}`, a `{` inside an expression, or a `}` outside one.
    #[error("unbalanced brace")]
    UnbalancedBrace,
    /// `{}` or an operator with no variable, such as `{+}`.
    #[error("empty expression")]
    EmptyExpression,
    /// An operator RFC 6570 reserves for future extensions (`=` `,` `!` `@` `|`).
    #[error("unsupported operator `{0}`")]
    UnsupportedOperator(char),
    /// A variable name outside `varchar *( ["."] varchar )`.
    #[error("invalid variable name `{0}`")]
    InvalidVarName(String),
    /// A prefix modifier that is not `:` followed by 1 to 9999.
    #[error("invalid prefix length `{0}`")]
    InvalidPrefix(String),
    /// A character RFC 6570 does not allow outside expressions (space, `"`, `'`, `<`, ...).
    #[error("invalid character {0:?} in literal")]
    InvalidLiteral(char),
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    fn template_error(template: &str) -> TemplateProblem {
        match Selector::parse(template) {
            Err(SelectorError::InvalidTemplate { problem, .. }) => problem,
            other => panic!("`{template}` should be an invalid template, got {other:?}"),
        }
    }

    /// Each selector form matches the topics Mercure matches and no others.
    #[test]
    fn selectors_match_topics_as_mercure_does() {
        let book = "https://example.com/books/{id}";
        let cases: &[(&str, &str, bool)] = &[
            // Exact topics: string equality, case-sensitive, no prefix match.
            (
                "https://example.com/books/1",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/1",
                "https://example.com/books/2",
                false,
            ),
            (
                "https://example.com/books/1",
                "https://example.com/books/10",
                false,
            ),
            (
                "https://example.com/books/1",
                "HTTPS://example.com/books/1",
                false,
            ),
            ("urn:x}", "urn:x}", true),
            // `*`: everything, even the empty topic.
            ("*", "https://example.com/books/1", true),
            ("*", "anything at all", true),
            ("*", "", true),
            // Simple expression: unreserved or %XX, never `/`, `?`, `#`; anchored both ends.
            (book, "https://example.com/books/42", true),
            (book, "https://example.com/books/a%20b", true),
            (book, "https://example.com/books/A-z_0.9~", true),
            (book, "https://example.com/books/", true),
            (book, "https://example.com/books/42/reviews", false),
            (book, "https://example.com/books/a?b", false),
            (book, "https://example.com/books/a#b", false),
            (book, "https://example.com/books/a b", false),
            (book, "https://example.com/books/a%2", false),
            (book, "https://example.com/books/a%zz", false),
            (book, "xhttps://example.com/books/42", false),
            (book, "https://example.com/authors/42", false),
            // A topic equal to the template text matches, as in Mercure.
            (book, book, true),
            // List form: comma-separated values.
            (
                "https://example.com/size/{x,y}",
                "https://example.com/size/1024,768",
                true,
            ),
            (
                "https://example.com/size/{x,y}",
                "https://example.com/size/1024",
                true,
            ),
            (
                "https://example.com/size/{x,y}",
                "https://example.com/size/1/2",
                false,
            ),
            // Prefix modifier: accepted, length not enforced (as in yosida95).
            (
                "https://example.com/t/{term:1}",
                "https://example.com/t/cat",
                true,
            ),
            // Reserved expansion crosses `/`, `?` and keeps reserved characters.
            (
                "https://example.com{+path}",
                "https://example.com/a/b?c=d&e=f#g",
                true,
            ),
            ("https://example.com{+path}", "https://example.com", true),
            (
                "https://example.com/{+path}/here",
                "https://example.com/x/y/here",
                true,
            ),
            (
                "https://example.com{+path}",
                "https://example.com/a b",
                false,
            ),
            // Fragment expansion: `#` then a reserved-expanded value, or nothing.
            (
                "https://example.com/page{#frag}",
                "https://example.com/page#intro/1",
                true,
            ),
            (
                "https://example.com/page{#frag}",
                "https://example.com/page#",
                true,
            ),
            (
                "https://example.com/page{#frag}",
                "https://example.com/page",
                true,
            ),
            (
                "https://example.com/page{#frag}",
                "https://example.com/pagex",
                false,
            ),
            (
                "https://example.com/page{#frag}",
                "https://example.com/page/x",
                false,
            ),
            // Two expressions: each stays within its own segment.
            (
                "https://example.com/users/{user}/books/{id}",
                "https://example.com/users/kevin/books/42",
                true,
            ),
            (
                "https://example.com/users/{user}/books/{id}",
                "https://example.com/users/kevin/x/books/42",
                false,
            ),
            (
                "https://example.com/users/{user}/books/{id}",
                "https://example.com/users/kevin/books/42/x",
                false,
            ),
            // Regex metacharacters in literals are literal.
            (
                "https://example.com/a.b+(c)/{id}",
                "https://example.com/a.b+(c)/1",
                true,
            ),
            (
                "https://example.com/a.b+(c)/{id}",
                "https://example.com/aXb+(c)/1",
                false,
            ),
            (
                "https://example.com/a.b+(c)/{id}",
                "https://example.com/a.bb(c)/1",
                false,
            ),
            (
                "https://example.com/a.b+(c)/{id}",
                "https://example.com/a.b+c/1",
                false,
            ),
            (
                "https://example.com/a$[x]*?/{id}",
                "https://example.com/a$[x]*?/1",
                true,
            ),
            (
                "https://example.com/a$[x]*?/{id}",
                "https://example.com/a$x/1",
                false,
            ),
            // Label: `.` then the value.
            (
                "https://example.com/file{.ext}",
                "https://example.com/file.json",
                true,
            ),
            (
                "https://example.com/file{.ext}",
                "https://example.com/file",
                true,
            ),
            (
                "https://example.com/file{.ext}",
                "https://example.com/filejson",
                false,
            ),
            (
                "https://example.com/file{.ext}",
                "https://example.com/file.json/x",
                false,
            ),
            // Path segment: `/` then the value; exploded, several segments.
            (
                "https://example.com/users{/id}",
                "https://example.com/users/42",
                true,
            ),
            (
                "https://example.com/users{/id}",
                "https://example.com/users",
                true,
            ),
            (
                "https://example.com/users{/id}",
                "https://example.com/users/42/x",
                false,
            ),
            (
                "https://example.com/files{/path*}",
                "https://example.com/files/a/b/c",
                true,
            ),
            (
                "https://example.com/p{/a,b}",
                "https://example.com/p/1/2",
                true,
            ),
            (
                "https://example.com/p{/a,b}",
                "https://example.com/p/1/2/3",
                false,
            ),
            // Path parameters: `;name=value` pairs.
            (
                "https://example.com/m{;x,y}",
                "https://example.com/m;x=1024;y=768",
                true,
            ),
            (
                "https://example.com/m{;x,y}",
                "https://example.com/m;x=1/2",
                false,
            ),
            // Query: `?name=value&...`; no `/` or `#` inside values.
            (
                "https://example.com/search{?q,page}",
                "https://example.com/search?q=rust&page=2",
                true,
            ),
            (
                "https://example.com/search{?q,page}",
                "https://example.com/search?q=rust",
                true,
            ),
            (
                "https://example.com/search{?q,page}",
                "https://example.com/search",
                true,
            ),
            (
                "https://example.com/search{?q,page}",
                "https://example.com/search?q=a/b",
                false,
            ),
            (
                "https://example.com/search{?q,page}",
                "https://example.com/search?q=a#b",
                false,
            ),
            (
                "https://example.com/s{?list*}",
                "https://example.com/s?list=red&list=green&list=blue",
                true,
            ),
            // Query continuation: `&name=value` after a literal query.
            (
                "https://example.com/s?fixed=yes{&x}",
                "https://example.com/s?fixed=yes&x=1024",
                true,
            ),
            (
                "https://example.com/s?fixed=yes{&x}",
                "https://example.com/s?fixed=yes",
                true,
            ),
            (
                "https://example.com/s?fixed=yes{&x}",
                "https://example.com/s?fixed=no&x=1024",
                false,
            ),
            // Variable names: dotted and percent-encoded forms are valid.
            ("urn:{a.b}:{c%20d}", "urn:1:2", true),
            // Non-ASCII literals are allowed and literal.
            (
                "https://example.com/café/{id}",
                "https://example.com/café/1",
                true,
            ),
            (
                "https://example.com/café/{id}",
                "https://example.com/cafe/1",
                false,
            ),
        ];
        for &(source, topic, expected) in cases {
            let selector = selector(source);

            let matched = selector.matches(topic);

            assert_eq!(
                matched, expected,
                "selector `{source}` against topic `{topic}`"
            );
        }
    }

    /// `*` is Any, a string with `{` is a template, anything else (even with `}`) is exact.
    #[test]
    fn parse_chooses_the_selector_kind() {
        assert_eq!(selector("*"), Selector::Any);
        assert_eq!(selector("urn:a}"), Selector::Exact("urn:a}".to_owned()));
        assert_eq!(selector("**"), Selector::Exact("**".to_owned()));
        assert!(matches!(selector("urn:{id}"), Selector::Template(_)));
    }

    /// `as_str`, `Display` and `FromStr` give back the original text.
    #[test]
    fn selector_round_trips_its_text() {
        for source in ["*", "urn:topic", "https://example.com/books/{id}{?q}"] {
            let selector: Selector = source.parse().expect("valid selector");

            assert_eq!(selector.as_str(), source);
            assert_eq!(selector.to_string(), source);
        }
    }

    /// Malformed templates are rejected with the problem named.
    #[test]
    fn malformed_templates_are_rejected() {
        let cases: &[(&str, TemplateProblem)] = &[
            ("x{", TemplateProblem::UnbalancedBrace),
            ("x{id", TemplateProblem::UnbalancedBrace),
            ("x}{id}", TemplateProblem::UnbalancedBrace),
            ("x{id}}", TemplateProblem::UnbalancedBrace),
            ("{a{b}}", TemplateProblem::UnbalancedBrace),
            ("x{}", TemplateProblem::EmptyExpression),
            ("x{+}", TemplateProblem::EmptyExpression),
            ("x{=a}", TemplateProblem::UnsupportedOperator('=')),
            ("x{!a}", TemplateProblem::UnsupportedOperator('!')),
            ("x{a,}", TemplateProblem::InvalidVarName(String::new())),
            ("x{a-b}", TemplateProblem::InvalidVarName("a-b".to_owned())),
            ("x{a b}", TemplateProblem::InvalidVarName("a b".to_owned())),
            (
                "x{.a..b}",
                TemplateProblem::InvalidVarName("a..b".to_owned()),
            ),
            ("x{a.}", TemplateProblem::InvalidVarName("a.".to_owned())),
            ("x{a%2}", TemplateProblem::InvalidVarName("a%2".to_owned())),
            ("x{a*b}", TemplateProblem::InvalidVarName("a*b".to_owned())),
            ("x{a:0}", TemplateProblem::InvalidPrefix("0".to_owned())),
            ("x{a:}", TemplateProblem::InvalidPrefix(String::new())),
            (
                "x{a:10000}",
                TemplateProblem::InvalidPrefix("10000".to_owned()),
            ),
            ("a b/{id}", TemplateProblem::InvalidLiteral(' ')),
            ("a\"/{id}", TemplateProblem::InvalidLiteral('"')),
            ("a|/{id}", TemplateProblem::InvalidLiteral('|')),
            ("a%2/{id}", TemplateProblem::InvalidPercentEncoding),
            ("a%zz/{id}", TemplateProblem::InvalidPercentEncoding),
        ];
        for (template, expected) in cases {
            assert_eq!(&template_error(template), expected, "template `{template}`");
        }
    }

    /// The error message quotes the template and names the problem and where it is.
    #[test]
    fn template_error_message_names_the_problem() {
        let error = Selector::parse("x{").expect_err("unbalanced");

        assert_eq!(
            error.to_string(),
            "invalid URI template `x{`: unbalanced brace at byte 1"
        );
        assert_eq!(
            error,
            SelectorError::InvalidTemplate {
                template: "x{".to_owned(),
                offset: 1,
                problem: TemplateProblem::UnbalancedBrace,
            }
        );
    }

    /// Selectors compare and hash by their text, so equal selectors can share an index entry.
    #[test]
    fn equal_templates_compare_equal() {
        assert_eq!(selector("urn:{id}"), selector("urn:{id}"));
        assert_ne!(selector("urn:{id}"), selector("urn:{+id}"));
    }
}
