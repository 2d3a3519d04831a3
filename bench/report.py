#!/usr/bin/env python3
"""Turns the JSON reports of scripts/bench into bench/results.md: medians per server, ratios
(sse-hub / nchan), the issue's targets, and every raw figure. Also picks the median run's file
for the charts (--median-file)."""
import argparse
import json
import os
import re
import statistics
import sys

SERVERS = [("hub", "sse-hub"), ("hubfile", "sse-hub, file store"), ("nchan", "nginx + nchan")]
ORDER = ["fanout", "steady", "capacity", "idle"]
TITLES = {
    "fanout": "Fan-out: N subscribers, P events of 64 B, 16 publishes in flight",
    "steady": "Latency at a steady rate: 5 publishes/s",
    "capacity": "Capacity: subscribers held at once, two load processes",
    "idle": "Idle memory",
}


def get(report, path):
    value = report
    for key in path.split("."):
        if value is None:
            return None
        value = value.get(key)
    return value


# (label, path in the report, format, better: "high" | "low" | None)
METRICS = {
    "fanout": [
        ("delivered events/s", "delivered_per_s", "{:,.0f}", "high"),
        ("server CPU per delivered event (µs)", "server.cpu_us_per_event", "{:.3f}", "low"),
        ("latency p50 (ms)", "latency_ms.p50", "{:.1f}", "low"),
        ("latency p99 (ms)", "latency_ms.p99", "{:.1f}", "low"),
        ("latency max (ms)", "latency_ms.max", "{:.1f}", "low"),
        ("lost events", "lost", "{:,.0f}", "low"),
        ("duplicates + reordered", "_dupre", "{:,.0f}", "low"),
        ("delivery time (s)", "delivery_s", "{:.2f}", "low"),
        ("publish round trip p50 (ms)", "publish_round_trip_p50_ms", "{:.2f}", "low"),
        ("publish round trip p99 (ms)", "publish_round_trip_p99_ms", "{:.2f}", "low"),
        ("connect time (s)", "connect_s", "{:.2f}", "low"),
        ("server RSS per subscriber, connected (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("server RSS after the run (MiB)", "_rss_after_mib", "{:.1f}", "low"),
        ("sse-load's own CPU over its wall time (s)", "_load_cpu", "{}", None),
    ],
    "steady": [
        ("latency p50 (ms)", "latency_ms.p50", "{:.2f}", "low"),
        ("latency p90 (ms)", "latency_ms.p90", "{:.2f}", "low"),
        ("latency p99 (ms)", "latency_ms.p99", "{:.2f}", "low"),
        ("latency max (ms)", "latency_ms.max", "{:.2f}", "low"),
        ("server CPU per delivered event (µs)", "server.cpu_us_per_event", "{:.3f}", "low"),
        ("lost events", "lost", "{:,.0f}", "low"),
        ("duplicates + reordered", "_dupre", "{:,.0f}", "low"),
    ],
    "capacity": [
        ("subscribers connected", "connected", "{:,.0f}", "high"),
        ("events delivered", "delivered", "{:,.0f}", "high"),
        ("events expected", "expected", "{:,.0f}", None),
        ("lost events", "lost", "{:,.0f}", "low"),
        ("delivered events/s", "delivered_per_s", "{:,.0f}", "high"),
        ("server CPU per delivered event (µs)", "server.cpu_us_per_event", "{:.3f}", "low"),
        ("latency p99 (ms)", "latency_ms.p99", "{:.1f}", "low"),
        ("connect time (s)", "connect_s", "{:.2f}", "low"),
        ("server RSS per subscriber, connected (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
    ],
    "idle": [
        ("server RSS per subscriber (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("server PSS per subscriber (B)", "server.pss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("server RSS before / connected (MiB)", "_rss_pair", "{}", None),
        ("subscribers connected", "connected", "{:,.0f}", "high"),
        ("connect time (s)", "connect_s", "{:.2f}", "low"),
    ],
}


def value(report, path):
    if report is None:
        return None
    if path == "_dupre":
        return report["duplicates"] + report["reordered"]
    if path == "_rss_after_mib":
        v = get(report, "server.rss_after_kib")
        return None if v is None else v / 1024
    if path == "_load_cpu":
        return f"{report.get('load_cpu_s', 0):.1f} / {report.get('wall_s', 0):.1f}"
    if path == "_rss_pair":
        b, c = get(report, "server.rss_before_kib"), get(report, "server.rss_connected_kib")
        return None if b is None else f"{b / 1024:.1f} / {c / 1024:.1f}"
    return get(report, path)


def load(raw):
    runs = {}
    for name in sorted(os.listdir(raw)):
        m = re.fullmatch(r"(\w+)-(hub|hubfile|nchan)-(\d+)\.json", name)
        if not m:
            continue
        path = os.path.join(raw, name)
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        if not lines:
            continue
        report = json.loads(lines[-1])
        report["_file"] = path
        report["_rep"] = int(m.group(3))
        runs.setdefault((m.group(1), m.group(2)), []).append(report)
    for reports in runs.values():
        reports.sort(key=lambda r: r["_rep"])
    return runs


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(fmt_str, v):
    if v is None:
        return "–"
    return fmt_str.format(v)


def ratio(ours, theirs):
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or theirs == 0:
        return "–"
    return f"{ours / theirs:.2f}×"


KEY = {"fanout": ("delivered_per_s", False), "steady": ("latency_ms.p99", False),
       "capacity": ("delivered_per_s", False), "idle": ("server.rss_per_subscriber_bytes", False)}


def median_report(runs, scenario, server):
    """The run whose key figure is the median (the lower middle for an even count)."""
    reports = runs.get((scenario, server), [])
    if not reports:
        return None
    path = KEY[scenario][0]
    ordered = sorted(reports, key=lambda r: value(r, path) or 0)
    return ordered[(len(ordered) - 1) // 2]


def median_file(runs, scenario, server):
    report = median_report(runs, scenario, server)
    return report["_file"] if report else ""


def targets(runs, med):
    rows = []

    def m(scenario, server, path):
        return med.get((scenario, server, path))

    hub_rate, nchan_rate = m("fanout", "hub", "delivered_per_s"), m("fanout", "nchan", "delivered_per_s")
    if hub_rate and nchan_rate:
        lost = m("fanout", "hub", "lost")
        ok = hub_rate >= 20 * nchan_rate and lost == 0
        rows.append(("fan-out: delivered events/s ≥ 20× nchan, zero loss",
                     f"{hub_rate / nchan_rate:.1f}×, lost {lost:,.0f}", ok))
    file_rate = m("fanout", "hubfile", "delivered_per_s")
    if hub_rate and file_rate:
        lost = m("fanout", "hubfile", "lost")
        rows.append(("fan-out, file store: delivered events/s ≥ 0.8× the memory store's, zero loss",
                     f"{file_rate / hub_rate:.2f}× ({file_rate:,.0f} vs {hub_rate:,.0f}), "
                     f"lost {lost:,.0f}", file_rate >= 0.8 * hub_rate and lost == 0))
    hub_cpu, nchan_cpu = m("fanout", "hub", "server.cpu_us_per_event"), m("fanout", "nchan", "server.cpu_us_per_event")
    if hub_cpu and nchan_cpu:
        rows.append(("fan-out: server CPU per event ≤ 1/20 of nchan's",
                     f"{hub_cpu:.3f} µs vs {nchan_cpu:.3f} µs (1/{nchan_cpu / hub_cpu:.1f})",
                     hub_cpu * 20 <= nchan_cpu))
    hub_p99, nchan_p99 = m("steady", "hub", "latency_ms.p99"), m("steady", "nchan", "latency_ms.p99")
    if hub_p99 is not None and nchan_p99 is not None:
        rows.append(("steady: p99 latency no worse than nchan's",
                     f"{hub_p99:.2f} ms vs {nchan_p99:.2f} ms", hub_p99 <= nchan_p99))
    reports = runs.get(("capacity", "hub"), [])
    if reports:
        ok = all(r["connected"] == r["subscribers"] and r["lost"] == 0 and r["expected"] > 0
                 for r in reports)
        n = reports[0]["subscribers"]
        worst = min(reports, key=lambda r: (r["connected"], -r["lost"]))
        rows.append((f"capacity: {n:,} subscribers in one sse-hub process, every event delivered",
                     f"worst of {len(reports)} runs: {worst['connected']:,} connected, "
                     f"{worst['delivered']:,}/{worst['expected']:,} delivered", ok))
    hub_rss = m("idle", "hub", "server.rss_per_subscriber_bytes")
    if hub_rss is not None:
        rows.append(("idle: ≤ 6 KiB (6,144 B) RSS per subscriber", f"{hub_rss:,.0f} B", hub_rss <= 6144))
    return rows


def store_targets(store):
    """Targets of the file store's own run (bench/store.py)."""
    if not store:
        return []
    restart = store["restart_s_median"]
    return [
        (f"file store: serving again within 1 s of a restart with {store['history_len']:,} "
         "events in the history",
         f"{restart * 1000:.0f} ms (runs: "
         + ", ".join(f"{r * 1000:.0f}" for r in store["restart_s"]) + " ms)",
         restart <= 1.0 and store["history_len"] == store["history_size"]),
        (f"file store: size after {store['publishes']:,} publishes (--history-size "
         f"{store['history_size']:,}) within 2× of its size after the first {store['history_size']:,}",
         f"{store['file_bytes_after_all']:,} B vs {store['file_bytes_after_first']:,} B "
         f"({store['file_growth']:.2f}×)", store["file_growth"] <= 2.0),
    ]


def load_store(raw):
    path = os.path.join(raw, "store.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    return json.loads(lines[-1]) if lines else None


def write(args):
    runs = load(args.raw)
    store = load_store(args.raw)
    med = {}
    for (scenario, server), reports in runs.items():
        for _, path, _, _ in METRICS[scenario]:
            med[(scenario, server, path)] = median([value(r, path) for r in reports])
    reps = max((len(r) for r in runs.values()), default=0)
    out = []
    out.append("# sse-hub vs nginx + nchan")
    out.append("")
    out.append(f"Reproduce with `{args.command}` (15–25 minutes for the full run). "
               f"Run {args.started}: {reps} repetition(s), medians shown, ratio = sse-hub / nchan. "
               "Both servers have 2 workers pinned to core 0 (`taskset -c 0`); the load generator "
               "(`sse-load`, current-thread runtime per process) is pinned to core 1. Servers are "
               "restarted before every run. Everything runs on 127.0.0.1."
               + (f" Servers and load generator ran at nice {args.nice}." if args.nice != "0" else "")
               + (f" sse-hub built from `{args.revision}`." if args.revision else ""))
    out.append("")
    out.append(f"Load average at start {args.loadavg[0]}, at end {args.loadavg[1]} "
               "(other work on the machine shows up here: treat figures as noisy when it is high).")
    if args.quick == "1":
        out.append("")
        out.append("**Quick run: small N and one repetition; not the comparison's figures.**")
    out.append("")
    rows = targets(runs, med) + store_targets(store)
    if rows:
        out.append("## Targets (issues 6 and 10)")
        out.append("")
        out.append("| target | measured | met |")
        out.append("|---|---|---|")
        for name, measured, ok in rows:
            out.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
        out.append("")
    for scenario in ORDER:
        if not any(k[0] == scenario for k in runs):
            continue
        sample = (runs.get((scenario, "hub")) or runs.get((scenario, "nchan")))[0]
        out.append(f"## {TITLES[scenario]}")
        out.append("")
        params = f"N = {sample['subscribers']:,}"
        if sample["published"]:
            params += f", P = {sample['published']:,}"
        out.append(params + (", charts: `latency-" + scenario + ".svg`" if scenario != "idle" else ""))
        out.append("")
        with_file = bool(runs.get((scenario, "hubfile")))
        if with_file:
            out.append("| metric | sse-hub | sse-hub, file store | nchan | ratio | file / memory "
                       "| sse-hub runs | file store runs | nchan runs |")
            out.append("|---|---:|---:|---:|---:|---:|---|---|---|")
        else:
            out.append("| metric | sse-hub | nchan | ratio | sse-hub runs | nchan runs |")
            out.append("|---|---:|---:|---:|---|---|")
        for label, path, f, _ in METRICS[scenario]:
            figures = {}
            raws = {}
            for server, _ in SERVERS:
                figures[server] = med.get((scenario, server, path))
                raws[server] = ", ".join(fmt(f, value(r, path))
                                         for r in runs.get((scenario, server), []))
                if path in ("_rss_pair", "_load_cpu"):
                    # Text figures have no median: show the median run's.
                    figures[server] = value(median_report(runs, scenario, server), path)
            ours, theirs = figures["hub"], figures["nchan"]
            if with_file:
                out.append(f"| {label} | {fmt(f, ours)} | {fmt(f, figures['hubfile'])} "
                           f"| {fmt(f, theirs)} | {ratio(ours, theirs)} "
                           f"| {ratio(figures['hubfile'], ours)} | {raws['hub']} "
                           f"| {raws['hubfile']} | {raws['nchan']} |")
            else:
                out.append(f"| {label} | {fmt(f, ours)} | {fmt(f, theirs)} | {ratio(ours, theirs)} "
                           f"| {raws['hub']} | {raws['nchan']} |")
        out.append("")
        problems = []
        for server, name in SERVERS:
            for r in runs.get((scenario, server), []):
                if r.get("timed_out") or r.get("drain_timed_out") or r.get("connect_failed") \
                        or r.get("publish_failed") or r.get("closed_early"):
                    problems.append(f"{name} run {r['_rep']}: connect failed {r['connect_failed']}"
                                    f" ({r.get('connect_error')}), closed early {r['closed_early']},"
                                    f" publish failed {r['publish_failed']}, drain timed out"
                                    f" {r['drain_timed_out']}, timed out {r['timed_out']}")
        if problems:
            out.append("Anomalies: " + "; ".join(problems))
            out.append("")
    if store:
        out.append(f"## File store: size and restart (`bench/store.py`)")
        out.append("")
        out.append(f"One hub on `--store file:` with `--history-size {store['history_size']:,}`, "
                   f"{store['publishes']:,} publishes of 64 B by sse-load (64 in flight, one "
                   "subscriber), then `kill -9` and restart with the full history, "
                   f"{len(store['restart_s'])} times (spawn to a `/stats` answer holding every "
                   "event).")
        out.append("")
        out.append("| figure | value |")
        out.append("|---|---:|")
        out.append(f"| file size after the first {store['history_size']:,} publishes "
                   f"| {store['file_bytes_after_first']:,} B |")
        out.append(f"| file size after {store['publishes']:,} publishes "
                   f"| {store['file_bytes_after_all']:,} B ({store['file_growth']:.2f}×) |")
        out.append(f"| events in the history | {store['history_len']:,} |")
        if store.get("publishes_per_s"):
            out.append(f"| publishes/s after the first {store['history_size']:,} "
                       f"| {store['publishes_per_s']:,.0f} |")
        for pct in ("p50", "p99"):
            rtt = store.get(f"publish_round_trip_{pct}_ms") or []
            if rtt:
                out.append(f"| publish round trip {pct}, first {store['history_size']:,} / the "
                           "rest (ms) | " + " / ".join(fmt("{:.2f}", v) for v in rtt) + " |")
        out.append("| restart to serving (ms), median | "
                   f"{store['restart_s_median'] * 1000:.0f} |")
        out.append("")
    missing = [f"{s} on {n}" for s in ORDER for k, n in SERVERS
               if k != "hubfile" and any(x[0] == s for x in runs) and not runs.get((s, k))]
    if missing:
        out.append("Missing runs (sse-load failed): " + ", ".join(missing))
        out.append("")
    out.append("CPU is utime + stime of the server's processes (nginx: master and workers) over the "
               "publish phase, divided by delivered events. RSS per subscriber is the growth of the "
               "summed RSS from before connecting to all connected (after 1 s, or the 5 s hold in "
               "the idle scenario), divided by subscribers; PSS splits nchan's shared memory "
               "between its processes. Raw reports: `raw/*.json`.")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--median-file":
        raw, scenario, server = sys.argv[2:5]
        print(median_file(load(raw), scenario, server))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("raw")
    parser.add_argument("out")
    parser.add_argument("--quick", default="0")
    parser.add_argument("--started", default="")
    parser.add_argument("--loadavg", nargs=2, default=["?", "?"])
    parser.add_argument("--command", default="scripts/bench")
    parser.add_argument("--nice", default="0")
    parser.add_argument("--revision", default="")
    write(parser.parse_args())


if __name__ == "__main__":
    main()
