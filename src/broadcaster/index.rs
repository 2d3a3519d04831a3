//! The topic index: which subscribers an event's topics may select, found without looking at
//! the others. Exact topics by hash; URI templates and URL patterns by their literal prefix, so
//! a publish runs only the patterns that could match its topics, each topic parsed once.

use std::collections::{BTreeMap, HashMap};

use indexmap::IndexSet;

use crate::topic::{ParsedTopic, Selector};

/// Finds candidate subscribers: exact topics by hash, `*` and selector-less subscribers in one
/// set, templates and URL patterns grouped so each is matched once per topic for all its
/// subscribers, and only when its literal prefix fits the topic.
#[derive(Debug, Default)]
pub(super) struct TopicIndex {
    pub(super) any: IndexSet<usize>,
    pub(super) exact: HashMap<String, IndexSet<usize>>,
    /// Templates and URL patterns, each with its subscribers.
    pub(super) patterns: HashMap<Selector, IndexSet<usize>>,
    /// Templates by the literal text before their first expression, compared with the topic.
    templates: PrefixMap,
    /// URL patterns by their literal hostname, then by the literal start of their pathname,
    /// compared with the topic's URL.
    by_host: HashMap<String, PrefixMap>,
    /// URL patterns whose hostname is not literal, by the literal start of their pathname.
    any_host: PrefixMap,
}

impl TopicIndex {
    pub(super) fn insert(&mut self, key: usize, selectors: &[Selector]) {
        if selectors.is_empty() {
            self.any.insert(key);
        }
        for selector in selectors {
            match selector {
                Selector::Any => {
                    self.any.insert(key);
                }
                Selector::Exact(topic) => {
                    self.exact.entry(topic.clone()).or_default().insert(key);
                }
                Selector::Template(_) | Selector::UrlPattern(_) => {
                    if !self.patterns.contains_key(selector) {
                        self.prefilter_insert(selector);
                    }
                    self.patterns
                        .entry(selector.clone())
                        .or_default()
                        .insert(key);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, key: usize, selectors: &[Selector]) {
        if selectors.is_empty() {
            self.any.swap_remove(&key);
        }
        for selector in selectors {
            match selector {
                Selector::Any => {
                    self.any.swap_remove(&key);
                }
                Selector::Exact(topic) => {
                    if let Some(set) = self.exact.get_mut(topic) {
                        set.swap_remove(&key);
                        if set.is_empty() {
                            self.exact.remove(topic);
                        }
                    }
                }
                Selector::Template(_) | Selector::UrlPattern(_) => {
                    if let Some(set) = self.patterns.get_mut(selector) {
                        set.swap_remove(&key);
                        if set.is_empty() {
                            self.patterns.remove(selector);
                            self.prefilter_remove(selector);
                        }
                    }
                }
            }
        }
    }

    fn prefilter_insert(&mut self, selector: &Selector) {
        match selector {
            Selector::Template(template) => {
                self.templates.insert(template.literal_prefix(), selector);
            }
            Selector::UrlPattern(pattern) => match pattern.prefilter_key() {
                (Some(host), path) => self
                    .by_host
                    .entry(host)
                    .or_default()
                    .insert(&path, selector),
                (None, path) => self.any_host.insert(&path, selector),
            },
            Selector::Any | Selector::Exact(_) => {}
        }
    }

    fn prefilter_remove(&mut self, selector: &Selector) {
        match selector {
            Selector::Template(template) => {
                self.templates.remove(template.literal_prefix(), selector);
            }
            Selector::UrlPattern(pattern) => match pattern.prefilter_key() {
                (Some(host), path) => {
                    if let Some(map) = self.by_host.get_mut(&host) {
                        map.remove(&path, selector);
                        if map.is_empty() {
                            self.by_host.remove(&host);
                        }
                    }
                }
                (None, path) => self.any_host.remove(&path, selector),
            },
            Selector::Any | Selector::Exact(_) => {}
        }
    }

    /// Calls `f` for every subscriber whose selectors match one of `topics` (possibly more
    /// than once for overlapping selectors: the caller deduplicates). Each pattern that runs
    /// has a literal prefix the topic starts with.
    pub(super) fn for_each_candidate(&self, topics: &[ParsedTopic<'_>], mut f: impl FnMut(usize)) {
        self.any.iter().for_each(|&k| f(k));
        for topic in topics {
            if let Some(set) = self.exact.get(topic.text) {
                set.iter().for_each(|&k| f(k));
            }
            let mut run = |selector: &Selector| {
                if selector.matches_parsed(topic)
                    && let Some(set) = self.patterns.get(selector)
                {
                    set.iter().for_each(|&k| f(k));
                }
            };
            self.templates.for_each_prefix_of(topic.text, &mut run);
            // Any URL pattern parses the topic for all of them (once per event).
            let Some(Selector::UrlPattern(first)) = self
                .by_host
                .values()
                .chain(std::iter::once(&self.any_host))
                .find_map(PrefixMap::first)
            else {
                continue;
            };
            let Some(url) = topic.url(first) else {
                continue;
            };
            if let Some(map) = self.by_host.get(url.hostname()) {
                map.for_each_prefix_of(url.pathname(), &mut run);
            }
            self.any_host.for_each_prefix_of(url.pathname(), &mut run);
        }
    }
}

/// Selectors by a literal prefix: a text's candidates are those whose prefix it starts with,
/// found with one hash lookup per distinct prefix length.
#[derive(Debug, Default)]
struct PrefixMap {
    by_prefix: HashMap<String, IndexSet<Selector>>,
    /// How many prefixes have each length.
    lengths: BTreeMap<usize, usize>,
}

impl PrefixMap {
    fn insert(&mut self, prefix: &str, selector: &Selector) {
        let set = self.by_prefix.entry(prefix.to_owned()).or_default();
        if set.is_empty() {
            *self.lengths.entry(prefix.len()).or_default() += 1;
        }
        set.insert(selector.clone());
    }

    fn remove(&mut self, prefix: &str, selector: &Selector) {
        let Some(set) = self.by_prefix.get_mut(prefix) else {
            return;
        };
        set.swap_remove(selector);
        if set.is_empty() {
            self.by_prefix.remove(prefix);
            if let Some(count) = self.lengths.get_mut(&prefix.len()) {
                *count -= 1;
                if *count == 0 {
                    self.lengths.remove(&prefix.len());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// Some selector of the map, if it holds any.
    fn first(&self) -> Option<&Selector> {
        self.by_prefix.values().find_map(IndexSet::first)
    }

    fn for_each_prefix_of(&self, text: &str, f: &mut impl FnMut(&Selector)) {
        for &length in self.lengths.range(..=text.len()).map(|(length, _)| length) {
            let Some(prefix) = text.get(..length) else {
                continue;
            };
            if let Some(set) = self.by_prefix.get(prefix) {
                set.iter().for_each(&mut *f);
            }
        }
    }
}
