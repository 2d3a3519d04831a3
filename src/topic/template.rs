//! RFC 6570 URI templates as Mercure hubs match them (yosida95/uritemplate's `Regexp()`): the
//! template compiled to a regular expression, then to a DFA that matches a topic in one pass.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use regex_automata::{
    Anchored, Input,
    dfa::{Automaton, StartKind, dense, sparse},
    nfa::thompson,
};

use super::*;

/// An RFC 6570 URI template compiled to a deterministic automaton (a full DFA) that accepts
/// exactly its expansions.
///
/// A DFA reads each byte of a topic once, so matching costs one pass over the topic whatever
/// the template, and a publish against many templates costs their number times the topic's
/// length, never more (a backtracking or NFA-simulating matcher multiplies that by the
/// template's size). The price is paid once, when the template is compiled, and is bounded:
/// a template whose DFA would exceed its byte limit is refused as too complex.
///
/// Clones share one compiled automaton. Equality and hashing use the source text only, so
/// selectors can key a map.
#[derive(Clone)]
pub struct Template {
    pub(super) compiled: Arc<Compiled>,
}

pub(super) struct Compiled {
    source: String,
    /// The literal text before the first expression and after the last: compared as strings,
    /// so the automaton covers only the part between them (long literal URLs stay cheap).
    prefix_len: usize,
    suffix_len: usize,
    dfa: sparse::DFA<Vec<u8>>,
    /// Gives this template's bytes back to its cache's budget when the last user drops it.
    pub(super) charge: Option<Charge>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the DFA's tables: they are kilobytes of numbers.
        f.debug_struct("Template")
            .field("source", &self.compiled.source)
            .field("bytes", &self.compiled.bytes())
            .finish()
    }
}

/// Memory, and so time, one template may take to compile, as a multiple of what its result
/// may keep: its DFA is built densely first (the sparse form is made from it), and
/// construction stops once it needs more than this. With the default limit that is 256 KiB,
/// and a few tens of milliseconds of one core for the worst 1 KiB template.
const BUILD_LIMIT_FACTOR: usize = 4;

/// Default of `--max-template-bytes`: the most memory one compiled template may keep.
pub const DEFAULT_MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Default of `--max-selector-bytes`: the most memory all compiled templates may keep together.
pub const DEFAULT_MAX_SELECTOR_BYTES: usize = 64 * 1024 * 1024;
/// Default of `--compile-threads`: threads compiling subscribers' new templates and URL
/// patterns, one per core of a small host. A compile takes at most a few tens of milliseconds
/// of one core, so two keep up with hundreds of new selectors a second, while a storm of
/// distinct ones queues instead of starting a thread (and an allocator cache) per request.
pub const DEFAULT_COMPILE_THREADS: usize = 2;

impl Compiled {
    pub(super) fn build(source: &str, max_bytes: usize) -> Result<Compiled, SelectorError> {
        compile(source).map_err(|(offset, problem)| SelectorError::InvalidTemplate {
            template: source.to_owned(),
            offset,
            problem,
        })?;
        // A template has an expression (it contains `{` and is valid), so both are found.
        let prefix_len = source.find('{').unwrap_or(0);
        let suffix_len = source.len() - source.rfind('}').map_or(source.len(), |i| i + 1);
        let middle = &source[prefix_len..source.len() - suffix_len];
        // The middle is itself a valid template: it starts with an expression and ends with one.
        let pattern = compile(middle).map_err(|_| SelectorError::TooComplex {
            template: source.to_owned(),
            limit: max_bytes,
        })?;
        let too_complex = || SelectorError::TooComplex {
            template: source.to_owned(),
            limit: max_bytes,
        };
        let dense = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    .byte_classes(true)
                    .determinize_size_limit(Some(max_bytes.saturating_mul(BUILD_LIMIT_FACTOR)))
                    .dfa_size_limit(Some(max_bytes.saturating_mul(BUILD_LIMIT_FACTOR))),
            )
            .thompson(thompson::Config::new().shrink(true))
            .build(&pattern)
            // Only the size limits can fail here: the pattern is generated, always valid.
            .map_err(|_| too_complex())?;
        let dfa = dense.to_sparse().map_err(|_| too_complex())?;
        let compiled = Compiled {
            source: source.to_owned(),
            prefix_len,
            suffix_len,
            dfa,
            charge: None,
        };
        if compiled.bytes() > max_bytes {
            return Err(too_complex());
        }
        Ok(compiled)
    }

    /// What this template keeps in memory: its automaton, its text and itself.
    pub(super) fn bytes(&self) -> usize {
        self.dfa.memory_usage() + self.source.len() + std::mem::size_of::<Compiled>()
    }
}

impl Template {
    /// Validates `source` as an RFC 6570 (level 4) template and compiles its matcher, within
    /// the default [`DEFAULT_MAX_TEMPLATE_BYTES`].
    pub fn parse(source: &str) -> Result<Template, SelectorError> {
        Self::parse_within(source, DEFAULT_MAX_TEMPLATE_BYTES)
    }

    /// As [`Template::parse`], refusing a template whose matcher needs more than `max_bytes`.
    pub fn parse_within(source: &str, max_bytes: usize) -> Result<Template, SelectorError> {
        Compiled::build(source, max_bytes).map(|compiled| Template {
            compiled: Arc::new(compiled),
        })
    }

    /// The literal text before the first expression: every topic it matches starts with it.
    pub fn literal_prefix(&self) -> &str {
        &self.compiled.source[..self.compiled.prefix_len]
    }

    /// Whether `topic` is a possible expansion of the template.
    ///
    /// As in Mercure, a topic equal to the template text itself also matches.
    pub fn matches(&self, topic: &str) -> bool {
        let compiled = &*self.compiled;
        let source = compiled.source.as_str();
        let (prefix, suffix) = (
            &source[..compiled.prefix_len],
            &source[source.len() - compiled.suffix_len..],
        );
        if topic == source {
            return true;
        }
        let Some(middle) = topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
        else {
            return false;
        };
        compiled
            .dfa
            .try_search_fwd(&Input::new(middle).anchored(Anchored::Yes).earliest(true))
            // A search fails only on quit bytes, and this DFA has none.
            .is_ok_and(|found| found.is_some())
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.compiled.source
    }

    /// Bytes of memory this compiled template keeps (shared by its clones).
    pub fn bytes(&self) -> usize {
        self.compiled.bytes()
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Template {}

impl Hash for Template {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
/// RFC 6570 unreserved characters as a regex class body (hex escapes keep `-`, `~` and friends
/// from being read as class syntax).
const UNRESERVED: &str = r"0-9A-Za-z\x2d\x2e\x5f\x7e";
/// RFC 3986 reserved characters: `!#$&'()*+,/:;=?@[]`.
const RESERVED: &str = r"\x21\x23\x24\x26-\x2c\x2f\x3a\x3b\x3d\x3f\x40\x5b\x5d";

/// An expression operator and how it expands (RFC 6570 appendix A).
#[derive(Debug, Clone, Copy)]
enum Operator {
    Simple,
    Reserved,
    Fragment,
    Label,
    PathSegment,
    PathParameter,
    Query,
    QueryContinuation,
}

impl Operator {
    /// The operator an expression body starts with; `Ok(None)` means a simple expression.
    fn from_char(c: char) -> Result<Option<Operator>, TemplateProblem> {
        Ok(Some(match c {
            '+' => Operator::Reserved,
            '#' => Operator::Fragment,
            '.' => Operator::Label,
            '/' => Operator::PathSegment,
            ';' => Operator::PathParameter,
            '?' => Operator::Query,
            '&' => Operator::QueryContinuation,
            '=' | ',' | '!' | '@' | '|' => return Err(TemplateProblem::UnsupportedOperator(c)),
            _ => return Ok(None),
        }))
    }

    /// Written before the first defined value.
    fn first(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved => "",
            Operator::Fragment => "#",
            Operator::Label => ".",
            Operator::PathSegment => "/",
            Operator::PathParameter => ";",
            Operator::Query => "?",
            Operator::QueryContinuation => "&",
        }
    }

    /// Written between values.
    fn separator(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved | Operator::Fragment => ",",
            Operator::Label => ".",
            Operator::PathSegment => "/",
            Operator::PathParameter => ";",
            Operator::Query | Operator::QueryContinuation => "&",
        }
    }

    /// Values are written as `name=value`.
    fn named(self) -> bool {
        matches!(
            self,
            Operator::PathParameter | Operator::Query | Operator::QueryContinuation
        )
    }

    /// Reserved characters pass through unencoded.
    fn allows_reserved(self) -> bool {
        matches!(self, Operator::Reserved | Operator::Fragment)
    }
}

/// Translates a template into an anchored regex pattern, or says where and why it is invalid.
///
/// Literals are matched literally; each expression becomes the pattern yosida95/uritemplate
/// generates for it, so a template that both accept matches the same topics here and on a
/// Mercure hub. Prefix lengths (`{var:3}`) are checked for syntax but, as there, not enforced.
fn compile(source: &str) -> Result<String, (usize, TemplateProblem)> {
    let mut pattern = String::from(r"\A");
    let mut literal_start = 0;
    let mut i = 0;
    while let Some(c) = source[i..].chars().next() {
        match c {
            '{' => {
                pattern.push_str(&regex::escape(&source[literal_start..i]));
                let body_start = i + 1;
                // The expression ends at the next `}`; a `{` before it, or none, is unbalanced.
                let body_len = source[body_start..]
                    .find(['{', '}'])
                    .filter(|&len| source[body_start + len..].starts_with('}'))
                    .ok_or((i, TemplateProblem::UnbalancedBrace))?;
                let body = &source[body_start..body_start + body_len];
                push_expression(&mut pattern, body).map_err(|problem| (i, problem))?;
                i = body_start + body_len + 1;
                literal_start = i;
                continue;
            }
            '}' => return Err((i, TemplateProblem::UnbalancedBrace)),
            '%' if !is_pct_encoded(source.as_bytes(), i) => {
                return Err((i, TemplateProblem::InvalidPercentEncoding));
            }
            c if c == '%' || is_literal(c) => {}
            c => return Err((i, TemplateProblem::InvalidLiteral(c))),
        }
        i += c.len_utf8();
    }
    pattern.push_str(&regex::escape(&source[literal_start..]));
    pattern.push_str(r"\z");
    Ok(pattern)
}

/// Appends the pattern for one expression (the text between `{` and `}`).
///
/// Mirrors yosida95/uritemplate: the whole expression is optional (an undefined variable
/// expands to nothing), each value may be empty, simple and label/path values also admit `,`
/// (a list expands to `a,b`), and named or exploded values admit `=`.
fn push_expression(pattern: &mut String, body: &str) -> Result<(), TemplateProblem> {
    let first_char = body
        .chars()
        .next()
        .ok_or(TemplateProblem::EmptyExpression)?;
    let (operator, var_list) = match Operator::from_char(first_char)? {
        Some(operator) => (operator, &body[first_char.len_utf8()..]),
        None => (Operator::Simple, body),
    };
    if var_list.is_empty() {
        return Err(TemplateProblem::EmptyExpression);
    }
    let explodes = var_list
        .split(',')
        .map(parse_varspec)
        .collect::<Result<Vec<bool>, _>>()?;

    let first_explodes = explodes[0];
    let any_explodes = explodes.contains(&true);
    let allows_reserved = operator.allows_reserved();
    let named = operator.named();

    pattern.push_str("(?:");
    pattern.push_str(&regex::escape(operator.first()));
    push_value(pattern, allows_reserved, named || first_explodes);
    if explodes.len() > 1 || any_explodes {
        pattern.push_str("(?:");
        pattern.push_str(&regex::escape(operator.separator()));
        push_value(pattern, allows_reserved, named || any_explodes);
        pattern.push(')');
        if any_explodes {
            pattern.push('*');
        } else {
            pattern.push_str(&format!("{{0,{}}}", explodes.len() - 1));
        }
    }
    pattern.push_str(")?");
    Ok(())
}

/// Appends the pattern for one (possibly empty) value: allowed characters or `%XX` triplets.
fn push_value(pattern: &mut String, allows_reserved: bool, admits_equals: bool) {
    pattern.push_str("(?:[");
    pattern.push_str(UNRESERVED);
    if allows_reserved {
        pattern.push_str(RESERVED);
    } else {
        pattern.push_str(r"\x2c");
        if admits_equals {
            pattern.push_str(r"\x3d");
        }
    }
    pattern.push_str("]|%[0-9A-Fa-f]{2})*");
}

/// Validates one varspec (`name`, `name*` or `name:N`) and says whether it explodes.
///
/// The prefix length is checked but not kept: like yosida95, matching does not bound a
/// value's length.
fn parse_varspec(varspec: &str) -> Result<bool, TemplateProblem> {
    let (name, explode) = match varspec.strip_suffix('*') {
        Some(name) => (name, true),
        None => match varspec.split_once(':') {
            Some((name, length)) => {
                if !is_prefix_length(length) {
                    return Err(TemplateProblem::InvalidPrefix(length.to_owned()));
                }
                (name, false)
            }
            None => (varspec, false),
        },
    };
    if is_var_name(name) {
        Ok(explode)
    } else {
        Err(TemplateProblem::InvalidVarName(name.to_owned()))
    }
}

/// `max-length = %x31-39 0*3DIGIT`: 1 to 9999 without leading zeros.
fn is_prefix_length(s: &str) -> bool {
    matches!(s.as_bytes(), [b'1'..=b'9', rest @ ..] if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit))
}

/// `varname = varchar *( ["."] varchar )`, `varchar = ALPHA / DIGIT / "_" / pct-encoded`.
fn is_var_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    // True at the start and after a dot: a varchar must come next.
    let mut needs_varchar = true;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'.' if !needs_varchar => {
                needs_varchar = true;
                i += 1;
            }
            b'%' if is_pct_encoded(bytes, i) => {
                needs_varchar = false;
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                needs_varchar = false;
                i += 1;
            }
            _ => return false,
        }
    }
    !needs_varchar
}

/// Whether `bytes[i..]` starts with `%` and two hex digits.
fn is_pct_encoded(bytes: &[u8], i: usize) -> bool {
    matches!(bytes.get(i..i + 3), Some([b'%', h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
}

/// RFC 6570 §2.1 `literals`, less `%` (checked as pct-encoded by the caller).
fn is_literal(c: char) -> bool {
    match c {
        '!' | '#' | '$' | '&' | '('..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~' => true,
        _ => is_ucschar_or_iprivate(u32::from(c)),
    }
}

/// RFC 3987 `ucschar` and `iprivate`: most non-ASCII characters, less noncharacters and
/// specials.
fn is_ucschar_or_iprivate(c: u32) -> bool {
    match c {
        // ucschar A0-D7FF; iprivate E000-F8FF then ucschar F900-FDCF; ucschar FDF0-FFEF.
        0xA0..=0xD7FF | 0xE000..=0xFDCF | 0xFDF0..=0xFFEF => true,
        // Planes 1-16 less each plane's last two code points; plane 14 starts at E1000.
        0x1_0000..=0x10_FFFF => c & 0xFFFF <= 0xFFFD && !(0xE_0000..0xE_1000).contains(&c),
        _ => false,
    }
}

#[cfg(test)]
mod pattern_cost_tests {
    use super::*;

    /// A URL pattern is charged within a small factor (4x) of what the equivalent URI template
    /// is: each component a small automaton, only where a literal or a single capture will not
    /// do (it was charged ~48 KB, 35 times a template).
    #[test]
    fn url_pattern_costs_about_what_an_equivalent_template_costs() {
        let cache = SelectorCache::new(SelectorLimits::default());
        for (pattern, template) in [
            (
                "https://example.com/books/:id",
                "https://example.com/books/{id}",
            ),
            (
                "/.well-known/mercure/subscriptions/:type/:match/:sub",
                "/.well-known/mercure/subscriptions/{type}/{match}/{sub}",
            ),
            (
                "https://example.com/books/:id/reviews/:r?",
                "https://example.com/books/{id}/reviews{/r}",
            ),
            (
                "https://example.com/users/(\\d+)/*",
                "https://example.com/users/{id}/{+rest}",
            ),
        ] {
            let before = cache.used_bytes();
            let kept = cache
                .get_typed(MatcherType::UrlPattern, pattern)
                .expect("a valid pattern");
            let charged = cache.used_bytes() - before;
            let template = Template::parse(template).expect("a valid template").bytes();

            assert!(
                charged <= 4 * template,
                "{pattern}: charged {charged} bytes, its template {template}"
            );
            drop(kept);
        }
    }
}
