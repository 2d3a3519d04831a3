//! Topics and selectors on `/stream`: exact topics, `*`, URI templates, delivery at most once.
