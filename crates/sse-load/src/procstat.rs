//! The server's footprint from /proc: resident and proportional memory and CPU time of the given
//! processes (and, on request, their descendants, as nginx's workers are).

use std::{collections::BTreeSet, fs, process::Command};

use serde::Serialize;

/// One reading of the measured processes, summed over them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub processes: usize,
    /// Sum of VmRSS (shared pages count once per process that maps them).
    pub rss_kib: u64,
    /// Sum of Pss (shared pages split between the processes sharing them).
    pub pss_kib: u64,
    /// utime + stime, in µs.
    pub cpu_us: u64,
    /// write(2)-family syscalls so far (`syscw` in /proc/<pid>/io). send(2) and sendmsg(2),
    /// which Rust's std TcpStream uses, are not counted: compare servers with care.
    pub write_syscalls: u64,
}

/// Which processes to measure.
#[derive(Debug, Clone)]
pub struct Server {
    pids: Vec<u32>,
    children: bool,
    tick_us: u64,
}

impl Server {
    pub fn new(pids: Vec<u32>, children: bool) -> Self {
        Self {
            pids,
            children,
            tick_us: 1_000_000 / clock_ticks_per_second(),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        if !self.children {
            return self.pids.clone();
        }
        let mut all: BTreeSet<u32> = self.pids.iter().copied().collect();
        // Descendants by parent pid, a few levels deep (nginx: master → workers).
        let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, stat_fields(pid)?.ppid)))
            .collect();
        for _ in 0..4 {
            for &(pid, ppid) in &parents {
                if all.contains(&ppid) {
                    all.insert(pid);
                }
            }
        }
        all.into_iter().collect()
    }

    /// Reads every measured process now; a vanished process contributes nothing.
    pub fn sample(&self) -> Sample {
        let mut sample = Sample::default();
        for pid in self.pids() {
            let Some(stat) = stat_fields(pid) else {
                continue;
            };
            sample.processes += 1;
            sample.cpu_us += stat.cpu_ticks * self.tick_us;
            sample.rss_kib += status_kib(&format!("/proc/{pid}/status"), "VmRSS:");
            sample.pss_kib += status_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
            sample.write_syscalls += status_kib(&format!("/proc/{pid}/io"), "syscw:");
        }
        sample
    }
}

/// CPU time (utime + stime, µs) this process has used so far.
pub fn own_cpu_us() -> u64 {
    let tick_us = 1_000_000 / clock_ticks_per_second();
    stat_fields(std::process::id()).map_or(0, |s| s.cpu_ticks * tick_us)
}

struct StatFields {
    ppid: u32,
    cpu_ticks: u64,
}

/// ppid and utime+stime from /proc/<pid>/stat (fields 4, 14, 15; the name in field 2 may hold
/// spaces, so fields are counted after its closing parenthesis).
fn stat_fields(pid: u32) -> Option<StatFields> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<StatFields> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
    })
}

/// The number after `key` on its line in a /proc status-like file, e.g. kB (0 if absent).
fn status_kib(path: &str, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// USER_HZ from `getconf CLK_TCK`; 100, Linux's value on every common platform, if that fails.
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU ticks and the parent come from the right fields even when the name has spaces.
    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "1234 (nginx: worker (x)) S 1200 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 1 0 100 1000 200";
        let fields = parse_stat(line).unwrap();
        assert_eq!((fields.ppid, fields.cpu_ticks), (1200, 320));
    }

    /// This very process can be measured.
    #[test]
    fn own_process_is_measurable() {
        let sample = Server::new(vec![std::process::id()], false).sample();
        assert_eq!(sample.processes, 1);
        assert!(sample.rss_kib > 0);
    }
}
