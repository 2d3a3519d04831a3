//! Topic selectors: an exact topic, `*`, or an RFC 6570 URI template, matched the way Mercure
//! hubs match them (yosida95/uritemplate's `Regexp()`), compiled once to a DFA and shared.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::{Hash, Hasher},
    str::FromStr,
    sync::OnceLock,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::url_pattern::{HubUrl, TopicUrl, UrlPatternMatcher};
use regex_automata::{
    Anchored, Input,
    dfa::{Automaton, StartKind, dense, sparse},
    nfa::thompson,
};
use tokio::sync::{mpsc, oneshot};

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
    compiled: Arc<Compiled>,
}

struct Compiled {
    source: String,
    /// The literal text before the first expression and after the last: compared as strings,
    /// so the automaton covers only the part between them (long literal URLs stay cheap).
    prefix_len: usize,
    suffix_len: usize,
    dfa: sparse::DFA<Vec<u8>>,
    /// Gives this template's bytes back to its cache's budget when the last user drops it.
    charge: Option<Charge>,
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
/// Compiles that may wait for a compile thread; further subscribes wait, in turn, for a place
/// in this queue (see [`SelectorCache::compile`]).
const COMPILE_QUEUE: usize = 64;

impl Compiled {
    fn build(source: &str, max_bytes: usize) -> Result<Compiled, SelectorError> {
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
    fn bytes(&self) -> usize {
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

/// Bytes taken from a [`SelectorCache`]'s budget, given back on drop.
#[derive(Debug)]
struct Charge {
    bytes: usize,
    used: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Limits on what compiled templates may cost, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorLimits {
    /// The most one template's matcher may keep; a larger one is refused as too complex.
    pub template_bytes: usize,
    /// The most all templates in use may keep together; past it, new templates are refused
    /// until subscribers leave.
    pub total_bytes: usize,
    /// Threads [`SelectorCache::compile`] runs compiles on.
    pub compile_threads: usize,
}

impl Default for SelectorLimits {
    fn default() -> Self {
        Self {
            template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            total_bytes: DEFAULT_MAX_SELECTOR_BYTES,
            compile_threads: DEFAULT_COMPILE_THREADS,
        }
    }
}

/// Compiled templates and URL patterns, shared by every subscriber (and token) that uses the
/// same text: ten thousand subscribers on one URI template compile it once and share its
/// automaton.
///
/// The cache holds templates weakly: a template lives while someone uses it and is released
/// with its last user, so subscribers that leave take their templates' memory with them. What
/// the templates in use keep is counted in bytes and bounded by [`SelectorLimits`].
#[derive(Debug)]
pub struct SelectorCache {
    compiled: Mutex<WeakTemplates>,
    limits: SelectorLimits,
    used: Arc<AtomicUsize>,
    /// What relative URL patterns and topics resolve against.
    hub: HubUrl,
    /// The queue of the compile threads, started with the first compile.
    compiles: OnceLock<mpsc::Sender<CompileJob>>,
}

/// A compile for a compile thread.
type CompileJob = Box<dyn FnOnce() + Send>;

/// The compile gave no answer: its thread failed (a bug), or none could be started.
#[derive(Debug, thiserror::Error)]
#[error("the selector could not be compiled")]
pub struct CompileFailed;

/// The cache's maps, and when to sweep their dead entries next.
#[derive(Debug, Default)]
struct WeakTemplates {
    by_text: HashMap<String, Weak<Compiled>>,
    patterns: HashMap<String, Weak<Pattern>>,
    /// The URL patterns compiled last, kept alive without a user: a publisher's token is
    /// verified on each publish, and its patterns would otherwise be compiled every time.
    recent: VecDeque<Arc<Pattern>>,
    sweep_at: usize,
}

/// URL patterns [`WeakTemplates::recent`] keeps (each tens of kilobytes, in the budget).
const RECENT_PATTERNS: usize = 64;

impl WeakTemplates {
    /// Drops the entries whose selector was released, once there are enough of them.
    fn sweep(&mut self) {
        if self.by_text.len() + self.patterns.len() >= self.sweep_at {
            self.by_text.retain(|_, weak| weak.strong_count() > 0);
            self.patterns.retain(|_, weak| weak.strong_count() > 0);
            self.sweep_at = (2 * (self.by_text.len() + self.patterns.len())).max(FIRST_SWEEP);
        }
    }
}

/// Entries a cache may hold before its first sweep of released templates.
const FIRST_SWEEP: usize = 1024;

impl SelectorCache {
    /// A cache whose URL patterns resolve against Mercure's default hub URL.
    pub fn new(limits: SelectorLimits) -> Self {
        let hub = HubUrl::parse(crate::url_pattern::DEFAULT_HUB_URL)
            .expect("the default hub URL is a valid absolute URL");
        Self::with_hub(limits, hub)
    }

    pub fn with_hub(limits: SelectorLimits, hub: HubUrl) -> Self {
        Self {
            hub,
            compiled: Mutex::new(WeakTemplates {
                by_text: HashMap::new(),
                patterns: HashMap::new(),
                recent: VecDeque::new(),
                sweep_at: FIRST_SWEEP,
            }),
            limits,
            used: Arc::new(AtomicUsize::new(0)),
            compiles: OnceLock::new(),
        }
    }

    /// [`get_typed`](Self::get_typed) on one of the `--compile-threads` compile threads, off
    /// the caller's event loop: a compile takes up to tens of milliseconds of CPU.
    ///
    /// Every new selector of every subscriber comes through here, so a storm of distinct
    /// templates costs a few busy threads, not a thread per request. When all threads are busy
    /// the compile waits in a queue of [`COMPILE_QUEUE`]; past that, callers wait in turn for
    /// a place (the channel's waiters are served first come, first served). Waiting, not a
    /// `503`: a browser's `EventSource` gives up for good on a `503`, and those who wait are
    /// requests the connection limits already admitted, each holding only its own future.
    pub async fn compile(
        self: &Arc<Self>,
        kind: MatcherType,
        text: &str,
    ) -> Result<Result<Selector, SelectorError>, CompileFailed> {
        let (answer, answered) = oneshot::channel();
        let (cache, text) = (self.clone(), text.to_owned());
        let job: CompileJob = Box::new(move || {
            let _ = answer.send(cache.get_typed(kind, &text));
        });
        self.compile_queue()
            .send(job)
            .await
            .map_err(|_| CompileFailed)?;
        answered.await.map_err(|_| CompileFailed)
    }

    /// The compile threads' queue, starting them the first time. They end when the cache is
    /// dropped (the queue's sender with it).
    fn compile_queue(&self) -> &mpsc::Sender<CompileJob> {
        self.compiles.get_or_init(|| {
            let (jobs, queue) = mpsc::channel::<CompileJob>(COMPILE_QUEUE);
            let queue = Arc::new(Mutex::new(queue));
            for n in 0..self.limits.compile_threads.max(1) {
                let queue = queue.clone();
                let started = std::thread::Builder::new()
                    .name(format!("compile-{n}"))
                    .spawn(move || {
                        loop {
                            // One thread waits on the queue, the others on its lock.
                            let job = queue
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .blocking_recv();
                            let Some(job) = job else { break };
                            // A compile that panics drops its answer (the caller sees
                            // `CompileFailed`); the thread goes on with the next one.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    });
                if let Err(err) = started {
                    log::error!("selector compile thread not started error={err}");
                }
            }
            // With no thread started, the queue's last receiver is dropped here and every
            // compile fails at once rather than waiting forever.
            jobs
        })
    }

    /// Bytes the templates in use keep now.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The selector for `text` if it costs nothing to get: an exact topic, `*`, or a template
    /// in use. `None` means [`get`](Self::get) would compile it.
    pub fn cached(&self, text: &str) -> Option<Result<Selector, SelectorError>> {
        // Exact topics and `*` cost nothing to build; only templates are worth sharing.
        if !text.contains('{') {
            return Some(Selector::parse(text));
        }
        let compiled = self.lock().by_text.get(text).and_then(Weak::upgrade)?;
        Some(Ok(Selector::Template(Template { compiled })))
    }

    /// The hub's URL, which relative URL patterns resolve against.
    pub fn hub(&self) -> &HubUrl {
        &self.hub
    }

    /// The selector of `kind` for `text` (`*` is every topic whatever the type): `Exact` costs
    /// nothing; a URL pattern is compiled, its regular expressions bounded by the template
    /// limit; `UriTemplate` is [`get`](Self::get) (0.x selectors containing `{`).
    pub fn get_typed(&self, kind: MatcherType, text: &str) -> Result<Selector, SelectorError> {
        if let Some(found) = self.cached_typed(kind, text) {
            return found;
        }
        match kind {
            MatcherType::UrlPattern => self.compile_pattern(text),
            MatcherType::Exact => Ok(Selector::Exact(text.to_owned())),
            MatcherType::UriTemplate => self.get(text),
        }
    }

    /// As [`cached`](Self::cached), for a selector of `kind`.
    pub fn cached_typed(
        &self,
        kind: MatcherType,
        text: &str,
    ) -> Option<Result<Selector, SelectorError>> {
        if text == "*" {
            return Some(Ok(Selector::Any));
        }
        match kind {
            MatcherType::Exact => Some(Ok(Selector::Exact(text.to_owned()))),
            MatcherType::UrlPattern => {
                let pattern = self.lock().patterns.get(text).and_then(Weak::upgrade)?;
                Some(Ok(Selector::UrlPattern(pattern)))
            }
            MatcherType::UriTemplate => self.cached(text),
        }
    }

    /// Compiles a URL pattern (outside the lock), charges it to the budget and shares it.
    fn compile_pattern(&self, text: &str) -> Result<Selector, SelectorError> {
        let invalid = |reason: String| SelectorError::InvalidUrlPattern {
            pattern: text.to_owned(),
            reason,
        };
        // The parser has known panics on crafted input (denoland/rust-urlpattern#72): a
        // pattern that makes it panic is refused like any invalid one.
        let matcher = std::panic::catch_unwind(|| {
            UrlPatternMatcher::parse(text, &self.hub, self.limits.template_bytes)
        })
        .map_err(|_| invalid("the URL Pattern parser failed on it".to_owned()))?
        .map_err(invalid)?;
        let mut cache = self.lock();
        if let Some(existing) = cache.patterns.get(text).and_then(Weak::upgrade) {
            return Ok(Selector::UrlPattern(existing));
        }
        let bytes = matcher.bytes();
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        let charge = Charge {
            bytes,
            used: self.used.clone(),
        };
        if before + bytes > self.limits.total_bytes {
            // Dropping the charge gives the bytes back.
            return Err(SelectorError::Full {
                limit: self.limits.total_bytes,
            });
        }
        let pattern = Arc::new(Pattern {
            matcher,
            _charge: Some(charge),
        });
        cache
            .patterns
            .insert(text.to_owned(), Arc::downgrade(&pattern));
        if cache.recent.len() == RECENT_PATTERNS {
            cache.recent.pop_front();
        }
        cache.recent.push_back(pattern.clone());
        cache.sweep();
        Ok(Selector::UrlPattern(pattern))
    }

    /// The compiled selector for `text`: the one in use if any, else compiled now (outside the
    /// lock, so a slow compile holds up nobody else).
    pub fn get(&self, text: &str) -> Result<Selector, SelectorError> {
        if let Some(found) = self.cached(text) {
            return found;
        }
        let mut compiled = Compiled::build(text, self.limits.template_bytes)?;
        let mut templates = self.lock();
        // Another request may have compiled the same text meanwhile: share its copy.
        if let Some(existing) = templates.by_text.get(text).and_then(Weak::upgrade) {
            return Ok(Selector::Template(Template { compiled: existing }));
        }
        let bytes = compiled.bytes();
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        compiled.charge = Some(Charge {
            bytes,
            used: self.used.clone(),
        });
        if before + bytes > self.limits.total_bytes {
            // Dropping the charge gives the bytes back.
            return Err(SelectorError::Full {
                limit: self.limits.total_bytes,
            });
        }
        let compiled = Arc::new(compiled);
        templates
            .by_text
            .insert(text.to_owned(), Arc::downgrade(&compiled));
        templates.sweep();
        Ok(Selector::Template(Template { compiled }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WeakTemplates> {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
mod cache_tests {
    use super::*;

    /// The cache returns the same selector as parsing.
    #[test]
    fn cache_gives_what_parse_gives() {
        let cache = SelectorCache::new(SelectorLimits::default());
        for text in [
            "a",
            "*",
            "https://x/{id}",
            "https://y/{id}",
            "https://z/{+p}",
            "https://x/{id}",
        ] {
            assert_eq!(cache.get(text), Selector::parse(text));
        }
        assert!(cache.get("bad{").is_err());
        assert!(
            cache
                .get("https://x/{id}")
                .expect("valid")
                .matches("https://x/1")
        );
    }

    /// Users of one template text share one compiled template, whose bytes are counted once
    /// and given back when the last user drops it.
    #[test]
    fn templates_are_shared_and_released_with_their_last_user() {
        let cache = SelectorCache::new(SelectorLimits::default());

        let first = cache.get("https://x/{id}").expect("valid");
        let second = cache.get("https://x/{id}").expect("valid");
        let (Selector::Template(a), Selector::Template(b)) = (&first, &second) else {
            panic!("templates expected");
        };
        assert!(Arc::ptr_eq(&a.compiled, &b.compiled));
        assert_eq!(cache.used_bytes(), a.bytes());

        drop(first);
        assert_eq!(cache.used_bytes(), b.bytes());
        drop(second);
        assert_eq!(cache.used_bytes(), 0);
    }

    /// Past the budget, new templates are refused; once users leave, they fit again.
    #[test]
    fn template_budget_refuses_then_recovers() {
        let one = Template::parse("https://x/{id}").expect("valid").bytes();
        let cache = SelectorCache::new(SelectorLimits {
            template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            total_bytes: 2 * one + one / 2,
            ..SelectorLimits::default()
        });
        let held = [
            cache.get("https://x/{id}").expect("first fits"),
            cache.get("https://y/{id}").expect("second fits"),
        ];

        let refused = cache.get("https://z/{id}");
        // A template already in use costs nothing more.
        let shared = cache.get("https://x/{id}");

        assert!(
            matches!(refused, Err(SelectorError::Full { .. })),
            "{refused:?}"
        );
        assert!(shared.is_ok());
        drop(held);
        drop(shared);
        assert_eq!(cache.used_bytes(), 0);
        assert!(cache.get("https://z/{id}").is_ok());
    }

    /// Users of one URL pattern share one compiled pattern, charged once to the budget and
    /// given back once its last user is gone and it is no longer among the recent patterns;
    /// the same text as an exact matcher is a different,
    /// literal selector; `*` is every topic whatever the type.
    #[test]
    fn url_patterns_are_shared_charged_and_released() {
        let cache = SelectorCache::new(SelectorLimits::default());
        let text = "https://example.com/books/:id";

        let first = cache
            .get_typed(MatcherType::UrlPattern, text)
            .expect("valid");
        let second = cache
            .get_typed(MatcherType::UrlPattern, text)
            .expect("valid");
        let exact = cache.get_typed(MatcherType::Exact, text).expect("valid");

        let (Selector::UrlPattern(a), Selector::UrlPattern(b)) = (&first, &second) else {
            panic!("URL patterns expected: {first:?} {second:?}");
        };
        assert!(Arc::ptr_eq(a, b));
        let charged = cache.used_bytes();
        assert!(charged > 0);
        assert!(first.matches("https://example.com/books/1"));
        assert!(!exact.matches("https://example.com/books/1"));
        assert!(exact.matches(text));
        assert_ne!(first, exact);
        for kind in [MatcherType::Exact, MatcherType::UrlPattern] {
            assert_eq!(cache.get_typed(kind, "*"), Ok(Selector::Any));
        }
        drop(first);
        assert_eq!(cache.used_bytes(), charged);
        drop(second);
        assert_eq!(cache.used_bytes(), charged, "kept as a recent pattern");
        // Once enough other patterns were compiled since, it is released.
        for i in 0..RECENT_PATTERNS {
            drop(cache.get_typed(MatcherType::UrlPattern, &format!("https://e.com/{i}/:x")));
        }
        let kept: usize = cache.lock().recent.iter().map(|p| p.matcher.bytes()).sum();
        assert_eq!(cache.used_bytes(), kept);
        assert!(cache.cached_typed(MatcherType::UrlPattern, text).is_none());
        assert!(matches!(
            cache.get_typed(MatcherType::UrlPattern, "https://e.com/("),
            Err(SelectorError::InvalidUrlPattern { .. })
        ));
    }

    /// Released templates leave no entries behind: the map is swept as it grows.
    #[test]
    fn released_templates_are_swept_from_the_map() {
        let cache = SelectorCache::new(SelectorLimits::default());

        for i in 0..5 * FIRST_SWEEP {
            drop(cache.get(&format!("https://x/{i}/{{id}}")).expect("valid"));
        }

        assert!(cache.lock().by_text.len() <= FIRST_SWEEP, "entries kept");
        assert_eq!(cache.used_bytes(), 0);
    }

    /// A template whose automaton would exceed its limit is refused, naming the limit; an
    /// ordinary long template fits.
    #[test]
    fn too_complex_templates_are_refused() {
        let pathological = format!("{{+v}}{}{{+w}}Z", "a/".repeat(450));
        let long_literal = format!(
            "https://example.com/{}/{{id}}",
            "abcdefgh-_~!$&()*+,;=:@".repeat(40)
        );

        let refused = Template::parse(&pathological);
        let accepted = Template::parse(&long_literal);

        match refused {
            Err(SelectorError::TooComplex { limit, .. }) => {
                assert_eq!(limit, DEFAULT_MAX_TEMPLATE_BYTES)
            }
            other => panic!("expected TooComplex, got {other:?}"),
        }
        let accepted = accepted.expect("a long literal template fits");
        assert!(accepted.matches(&format!(
            "https://example.com/{}/42",
            "abcdefgh-_~!$&()*+,;=:@".repeat(40)
        )));
    }
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
