//! The selector cache: compiled templates and URL patterns shared by every subscriber (and
//! token) that uses the same text, held weakly, within a byte budget, compiled off the workers.

use std::{
    collections::{HashMap, VecDeque},
    sync::OnceLock,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::url_pattern::{HubUrl, UrlPatternMatcher};
use tokio::sync::{mpsc, oneshot};

use super::*;

/// Bytes taken from a [`SelectorCache`]'s budget, given back on drop.
#[derive(Debug)]
pub(super) struct Charge {
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

/// Compiles that may wait for a compile thread; further subscribes wait, in turn, for a place
/// in this queue (see [`SelectorCache::compile`]).
const COMPILE_QUEUE: usize = 64;

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
    /// A cache whose URL patterns resolve against Mercure's default hub URL (for tests: the
    /// hub builds its cache with its own URL, [`with_hub`](Self::with_hub)).
    #[cfg(test)]
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
