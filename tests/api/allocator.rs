//! The hub binary's allocator settings: what a burst freed goes back to the system while the
//! hub is quiet.

use std::time::{Duration, Instant};

use crate::helpers::{ChildHub, hub_command};

/// The names of the hub process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/<pid>/task is readable (Linux)");
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect()
}

/// The hub runs jemalloc's background purging thread, so freed pages are returned on a timer
/// and not only when the hub next allocates (after a burst, a quiet hub kept them).
#[test]
fn hub_purges_freed_memory_in_the_background() {
    let hub = ChildHub::spawn(hub_command("memory", &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = thread_names(hub.child.id());
        if names.iter().any(|name| name.starts_with("jemalloc_bg_thd")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no jemalloc background thread among {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
