#!/usr/bin/env python3
"""Turns the JSON reports of scripts/bench into bench/results.md: medians per server, ratios
(sse-hub / nchan), the issue's targets, and every raw figure; the cluster scenario adds Redis's
own counters (`redis-*.txt`, its INFO after each cluster run); the tls scenario compares protocols
(plaintext, HTTP/1.1+TLS, HTTP/2) of both servers; the scale scenario (sse-hub alone) shows
100,000 subscribers on six nodes. Also picks the median run's file for the charts
(--median-file)."""
import argparse
import json
import os
import re
import statistics
import sys

SERVERS = [("hub", "sse-hub"), ("hubfile", "sse-hub, file store"), ("nchan", "nginx + nchan")]
ORDER = ["fanout", "steady", "capacity", "idle"]
CLUSTER = ["cluster_fanout", "cluster_fanout_single", "cluster_steady", "cluster_steady_single"]
TLS = ["tls_fanout", "tls_idle"]
# The tls scenario's servers: (file name part, column title).
TLS_SERVERS = [("hub", "sse-hub, HTTP/1.1"), ("hubtls", "sse-hub, HTTP/1.1+TLS"),
               ("hubh2", "sse-hub, HTTP/2"), ("nchantls", "nchan, HTTP/1.1+TLS"),
               ("nchanh2", "nchan, HTTP/2")]
# Which run-*.env describes a results file's scenario.
RUN_OF = {scenario: "cluster" for scenario in CLUSTER}
RUN_OF.update({scenario: "tls" for scenario in TLS})
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
    "cluster_fanout": [
        ("delivered events/s", "delivered_per_s", "{:,.0f}", "high"),
        ("lost events, node 1 / node 2", "_node_lost", "{}", None),
        ("lost events", "lost", "{:,.0f}", "low"),
        ("duplicates + reordered", "_dupre", "{:,.0f}", "low"),
        ("server CPU per delivered event (µs)", "server.cpu_us_per_event", "{:.3f}", "low"),
        ("latency p50 (ms)", "latency_ms.p50", "{:.1f}", "low"),
        ("latency p99 (ms)", "latency_ms.p99", "{:.1f}", "low"),
        ("latency p99, node 1 / node 2 (ms)", "_node_p99", "{}", None),
        ("delivery time (s)", "delivery_s", "{:.2f}", "low"),
        ("publish round trip p50 (ms)", "publish_round_trip_p50_ms", "{:.2f}", "low"),
        ("publish round trip p99 (ms)", "publish_round_trip_p99_ms", "{:.2f}", "low"),
        ("server RSS per subscriber, connected (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("sse-load's own CPU over its wall time (s)", "_load_cpu", "{}", None),
    ],
    "cluster_steady": [
        ("latency p50 (ms)", "latency_ms.p50", "{:.2f}", "low"),
        ("latency p90 (ms)", "latency_ms.p90", "{:.2f}", "low"),
        ("latency p99 (ms)", "latency_ms.p99", "{:.2f}", "low"),
        ("latency max (ms)", "latency_ms.max", "{:.2f}", "low"),
        ("lost events", "lost", "{:,.0f}", "low"),
        ("lost events, node 1 / node 2", "_node_lost", "{}", None),
        ("duplicates + reordered", "_dupre", "{:,.0f}", "low"),
    ],
    "idle": [
        ("server RSS per subscriber (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("server PSS per subscriber (B)", "server.pss_per_subscriber_bytes", "{:,.0f}", "low"),
        ("server RSS before / connected (MiB)", "_rss_pair", "{}", None),
        ("subscribers connected", "connected", "{:,.0f}", "high"),
        ("connect time (s)", "connect_s", "{:.2f}", "low"),
    ],
}


# The scale scenario: sse-hub only, N subscribers on several nodes of one Redis.
METRICS["scale"] = [
    ("subscribers connected", "connected", "{:,.0f}", "high"),
    ("connect time (s)", "connect_s", "{:.1f}", "low"),
    ("events published", "published", "{:,.0f}", None),
    ("deliveries", "delivered", "{:,.0f}", "high"),
    ("deliveries expected", "expected", "{:,.0f}", None),
    ("lost events", "lost", "{:,.0f}", "low"),
    ("lost events per node", "_node_lost", "{}", None),
    ("duplicates + reordered", "_dupre", "{:,.0f}", "low"),
    ("until every subscriber had the event, p50 over events (ms)", "complete_ms.p50", "{:.1f}", "low"),
    ("until every subscriber had the event, p99 over events (ms)", "complete_ms.p99", "{:.1f}", "low"),
    ("until every subscriber had the event, max (ms)", "complete_ms.max", "{:.1f}", "low"),
    ("publish → receive latency p50 (ms)", "latency_ms.p50", "{:.1f}", "low"),
    ("publish → receive latency p99 (ms)", "latency_ms.p99", "{:.1f}", "low"),
    ("publish round trip p99 (ms)", "publish_round_trip_p99_ms", "{:.1f}", "low"),
    ("RSS per subscriber, every node and Redis (B)", "server.rss_per_subscriber_bytes", "{:,.0f}", "low"),
    ("RSS of every node and Redis, before / connected (MiB)", "_rss_pair", "{}", None),
    ("server CPU per delivered event, every node and Redis (µs)", "server.cpu_us_per_event", "{:.2f}", "low"),
    ("sse-load's own CPU over its wall time (s)", "_load_cpu", "{}", None),
]

METRICS["cluster_steady_single"] = METRICS["cluster_steady"]
METRICS["tls_fanout"] = METRICS["fanout"]
METRICS["tls_idle"] = METRICS["idle"]
METRICS["cluster_fanout_single"] = METRICS["cluster_fanout"]


def value(report, path):
    if report is None:
        return None
    if path in ("_node_lost", "_node_p99"):
        nodes = report.get("nodes") or []
        if not nodes:
            return None
        if path == "_node_lost":
            return " / ".join(f"{n['lost']:,}" for n in nodes)
        return " / ".join(f"{n['latency_ms']['p99']:.1f}" for n in nodes)
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
        m = re.fullmatch(r"(\w+)-(hub|hubfile|nchan|hubtls|hubh2|nchantls|nchanh2)-(\d+)\.json", name)
        if not m or m.group(1) not in METRICS:
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
       "capacity": ("delivered_per_s", False), "idle": ("server.rss_per_subscriber_bytes", False),
       "cluster_fanout": ("delivered_per_s", False), "cluster_steady": ("latency_ms.p50", False),
       "cluster_steady_single": ("latency_ms.p50", False),
       "cluster_fanout_single": ("delivered_per_s", False),
       "tls_fanout": ("delivered_per_s", False), "tls_idle": ("server.rss_per_subscriber_bytes", False),
       "scale": ("complete_ms.p99", False)}


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
    return rows + cluster_targets(runs, m) + tls_targets(m) + scale_targets(runs)


def scale_targets(runs):
    """The scale scenario's target (issue 23): every subscriber connected and every event
    delivered once, on every run."""
    reports = runs.get(("scale", "hub"), [])
    if not reports:
        return []
    n, nodes = reports[0]["subscribers"], len(reports[0].get("nodes") or []) or 1
    ok = all(r["connected"] == r["subscribers"] and r["expected"] > 0
             and r["delivered"] == r["expected"] and r["lost"] == 0
             and r["duplicates"] + r["reordered"] == 0 for r in reports)
    worst = min(reports, key=lambda r: (r["connected"], r["delivered"] - r["expected"]))
    return [(f"scale: {n:,} subscribers on {nodes} sse-hub nodes of this one machine, every "
             "event to every subscriber once",
             f"worst of {len(reports)} run(s): {worst['connected']:,} connected, "
             f"{worst['delivered']:,}/{worst['expected']:,} delivered, lost {worst['lost']:,}, "
             f"duplicates + reordered {worst['duplicates'] + worst['reordered']:,}", ok)]


def tls_targets(m):
    """Targets of the tls scenario (issue 21)."""
    rows = []
    plain, tls = m("tls_fanout", "hub", "delivered_per_s"), m("tls_fanout", "hubtls", "delivered_per_s")
    if plain and tls:
        lost = m("tls_fanout", "hubtls", "lost")
        rows.append(("TLS cost: sse-hub fan-out over HTTP/1.1+TLS ≥ 0.7× plaintext HTTP/1.1 (same "
                     "N and P), zero loss", f"{tls / plain:.2f}× ({tls:,.0f} vs {plain:,.0f} "
                     f"events/s), lost {lost:,.0f}", tls >= 0.7 * plain and lost == 0))
    return rows


def cluster_targets(runs, m):
    """Targets of the cluster scenario (issue 11)."""
    rows = []
    hub_rate = m("cluster_fanout", "hub", "delivered_per_s")
    nchan_rate = m("cluster_fanout", "nchan", "delivered_per_s")
    if hub_rate and nchan_rate:
        rows.append(("cluster (two nodes on one Redis each): sse-hub delivered events/s ≥ 10× "
                     "nchan's", f"{hub_rate / nchan_rate:.1f}× ({hub_rate:,.0f} vs "
                     f"{nchan_rate:,.0f})", hub_rate >= 10 * nchan_rate))
    hub_runs = [r for k in ("cluster_fanout", "cluster_steady") for r in runs.get((k, "hub"), [])]
    if hub_runs:
        per_node = [0] * max(len(r.get("nodes") or []) for r in hub_runs)
        for r in hub_runs:
            for i, node in enumerate(r.get("nodes") or []):
                per_node[i] += node["lost"]
        whole = all(r["expected"] > 0 and r["delivered"] == r["expected"]
                    and r["duplicates"] + r["reordered"] == 0 for r in hub_runs)
        rows.append(("cluster: sse-hub loses nothing on either node (every run, fan-out and "
                     "5 events/s), no duplicates or reordering",
                     "lost per node: " + " / ".join(f"{n:,}" for n in per_node)
                     + f" over {len(hub_runs)} runs", whole and not any(per_node)))
    single = m("cluster_steady_single", "hub", "latency_ms.p50")
    clustered = m("cluster_steady", "hub", "latency_ms.p50")
    if single is not None and clustered is not None:
        p99 = (m("cluster_steady_single", "hub", "latency_ms.p99"), m("cluster_steady", "hub", "latency_ms.p99"))
        rows.append(("cluster: latency added at 5 events/s (two nodes on Redis vs one on memory), "
                     "p50 under 2 ms", f"p50 {clustered - single:+.2f} ms ({clustered:.2f} vs "
                     f"{single:.2f}); p99 {p99[1] - p99[0]:+.2f} ms ({p99[1]:.2f} vs {p99[0]:.2f})",
                     clustered - single < 2.0))
    return rows


def load_redis(raw):
    """Redis's INFO after each cluster run, by (run, server): a list over repetitions of dicts
    of its `key:value` lines, `cmdstat_*` lines as {command: calls}."""
    infos = {}
    for name in sorted(os.listdir(raw)):
        m = re.fullmatch(r"redis-(\w+)-(hub|nchan)-(\d+)\.txt", name)
        if not m:
            continue
        info = {"commands": {}, "_rep": int(m.group(3))}
        with open(os.path.join(raw, name)) as f:
            for line in f:
                key, sep, val = line.strip().partition(":")
                if not sep:
                    continue
                if key.startswith("cmdstat_"):
                    calls = re.match(r"calls=(\d+)", val)
                    info["commands"][key[len("cmdstat_"):]] = int(calls.group(1)) if calls else 0
                else:
                    info[key] = val
        infos.setdefault((m.group(1), m.group(2)), []).append(info)
    return infos


def redis_figures(info, report):
    """Per publish figures of one cluster run from Redis's INFO and sse-load's report."""
    published = report["published"] if report else 0
    if not published:
        return {}
    commands = info["commands"]
    # The INFO call that took this snapshot is not the run's.
    commands = {k: v - (1 if k == "info" else 0) for k, v in commands.items()}
    nodes = len(report.get("nodes") or []) or 1
    # From when sse-load started (scripts/bench notes Redis's CPU then) to the end of the run.
    cpu_s = (float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))
             - float(info.get("bench_cpu_before", 0)))
    return {
        "commands": sum(commands.values()) / published,
        "evalsha": commands.get("evalsha", 0) / published,
        "xadd": commands.get("xadd", 0) / published,
        "xread_node": commands.get("xread", 0) / published / nodes,
        "publish": commands.get("publish", 0) / published,
        "in_b": int(info.get("total_net_input_bytes", 0)) / published,
        "out_b": int(info.get("total_net_output_bytes", 0)) / published,
        "cpu_us": cpu_s * 1e6 / published,
        "memory_mib": int(info.get("used_memory", 0)) / 2**20,
        "version": info.get("redis_version", "?"),
        "top": sorted(commands.items(), key=lambda kv: -kv[1])[:6],
    }


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


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, sep, val = line.strip().partition("=")
            if sep:
                env[key] = val.strip("'")
    return env


def run_envs(raw):
    """Which run each scenario's figures come from: run-SCENARIO.env, else the run.env that
    older runs wrote for all scenarios at once."""
    envs = {}
    legacy = os.path.join(raw, "run.env")
    for scenario in ORDER + ["store", "cluster", "tls", "scale"]:
        path = os.path.join(raw, f"run-{scenario}.env")
        if os.path.exists(path):
            envs[scenario] = read_env(path)
        elif os.path.exists(legacy) and scenario != "cluster":
            envs[scenario] = read_env(legacy)
    return envs


def run_lines(raw, runs, store):
    """One line per run that figures in results.md came from."""
    groups = {}
    for scenario, env in run_envs(raw).items():
        present = (store if scenario == "store"
                   else any(k[0] == scenario or RUN_OF.get(k[0]) == scenario for k in runs))
        if present:
            key = (env.get("STARTED", "?"), env.get("REVISION", ""))
            groups.setdefault(key, (env, []))[1].append(scenario)
    lines = []
    for (started, revision), (env, scenarios) in sorted(groups.items()):
        reps = max((len(r) for k, r in runs.items()
                    if k[0] in scenarios or RUN_OF.get(k[0]) in scenarios), default=0)
        line = f"- {', '.join(scenarios)}: run {started}"
        if reps:
            line += f", {reps} repetition(s)"
        if revision:
            line += f", sse-hub built from `{revision}`"
        if env.get("NICE", "0") != "0":
            line += f", servers and load generator at nice {env['NICE']}"
        line += (f"; load average {env.get('LOADAVG_START', '?')} at start, "
                 f"{env.get('LOADAVG_END', '?')} at end.")
        lines.append(line)
    return lines


def anomalies(runs, scenarios, servers=SERVERS):
    """A line naming every run that timed out, failed to connect or publish, or lost streams."""
    problems = []
    for scenario in scenarios:
        for server, name in servers:
            for r in runs.get((scenario, server), []):
                if r.get("timed_out") or r.get("drain_timed_out") or r.get("connect_failed") \
                        or r.get("publish_failed") or r.get("closed_early"):
                    where = name if len(scenarios) == 1 else f"{scenario} on {name}"
                    problems.append(f"{where} run {r['_rep']}: connect failed {r['connect_failed']}"
                                    f" ({r.get('connect_error')}), closed early {r['closed_early']},"
                                    f" publish failed {r['publish_failed']} ({r.get('publish_error')}),"
                                    f" drain timed out {r['drain_timed_out']}, timed out {r['timed_out']}")
    return ["Anomalies: " + "; ".join(problems), ""] if problems else []


def cluster_section(runs, med, infos):
    """The cluster scenario: fan-out over two nodes per server, latency at 5 events/s of two
    nodes against one, and what Redis did per publish."""
    if not any(k[0] in CLUSTER for k in runs):
        return []
    out = ["## Two nodes on one Redis (issue 11)", ""]
    version = next((i.get("redis_version") for reps in infos.values() for i in reps), "?")
    out.append(f"Each server runs as two nodes on one fresh `redis-server` ({version}"
               ", persistence off: `--save '' --appendonly no`, so the figures are the shared "
               "log's cost and not a disk's), restarted before every run. Both nodes (2 workers "
               "each) and Redis are pinned to core 0, the load generator to core 1: a cluster "
               "gets the one core a single server gets. sse-load splits the subscribers evenly "
               "over the two nodes (one load process per node) and publishes to the first. "
               "sse-hub: `--store redis://… --redis-prefix bench`; nchan: `nchan_redis_server` "
               "in an upstream and `nchan_redis_pass` in both locations "
               "(`nginx-nchan-cluster.conf.template`). For two nodes, CPU and RSS sum both nodes "
               "and Redis.")
    out.append("")

    def cell(scenario, server, path):
        if path.startswith("_node") or path == "_load_cpu":
            return value(median_report(runs, scenario, server), path)
        return med.get((scenario, server, path))

    def raw(scenario, server, path, f):
        return ", ".join(fmt(f, value(r, path)) for r in runs.get((scenario, server), []))

    sample = next(iter(runs.get(("cluster_fanout", "hub")) or runs.get(("cluster_fanout", "nchan")) or []), None)
    if sample:
        out.append(f"### Fan-out: N = {sample['subscribers']:,} split over the nodes, "
                   f"P = {sample['published']:,} events of 64 B, 16 publishes in flight")
        out.append("")
        out.append("sse-hub also on one node (memory store) with the same N and P; nchan's one-node "
                   "figures are the fan-out scenario's above.")
        out.append("")
        out.append("| metric | sse-hub, 2 nodes | sse-hub, 1 node | 2 nodes / 1 node | nchan, 2 nodes "
                   "| sse-hub / nchan, 2 nodes | sse-hub 2-node runs | sse-hub 1-node runs "
                   "| nchan runs |")
        out.append("|---|---:|---:|---:|---:|---:|---|---|---|")
        for label, path, f, _ in METRICS["cluster_fanout"]:
            two, one, nchan = (cell("cluster_fanout", "hub", path),
                               cell("cluster_fanout_single", "hub", path),
                               cell("cluster_fanout", "nchan", path))
            out.append(f"| {label} | {fmt(f, two)} | {fmt(f, one)} | {ratio(two, one)} "
                       f"| {fmt(f, nchan)} | {ratio(two, nchan)} "
                       f"| {raw('cluster_fanout', 'hub', path, f)} "
                       f"| {raw('cluster_fanout_single', 'hub', path, f)} "
                       f"| {raw('cluster_fanout', 'nchan', path, f)} |")
        out.append("")

    sample = next(iter(runs.get(("cluster_steady", "hub")) or runs.get(("cluster_steady", "nchan")) or []), None)
    if sample:
        out.append(f"### Latency at 5 events/s: N = {sample['subscribers']:,}, "
                   f"P = {sample['published']:,}, two nodes on Redis vs one node on memory "
                   "(chart: `latency-cluster.svg`)")
        out.append("")
        out.append("| metric | sse-hub, 1 node | sse-hub, 2 nodes | added | nchan, 1 node "
                   "| nchan, 2 nodes | added | runs (1 node; 2 nodes) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for label, path, f, _ in METRICS["cluster_steady"]:
            cells = []
            for server in ("hub", "nchan"):
                if path.startswith("_node"):
                    one = value(median_report(runs, "cluster_steady_single", server), path)
                    two = value(median_report(runs, "cluster_steady", server), path)
                    cells += [fmt(f, one), fmt(f, two), "–"]
                    continue
                one = med.get(("cluster_steady_single", server, path))
                two = med.get(("cluster_steady", server, path))
                added = (f"{two - one:+.2f}" if path.startswith("latency")
                         and isinstance(one, (int, float)) and isinstance(two, (int, float))
                         else "–")
                cells += [fmt(f, one), fmt(f, two), added]
            raws = "; ".join(
                f"{name} " + ", ".join(fmt(f, value(r, path)) for r in runs.get((k, s), []))
                for s, name in (("hub", "sse-hub"), ("nchan", "nchan"))
                for k in ("cluster_steady_single", "cluster_steady"))
            out.append(f"| {label} | " + " | ".join(cells) + f" | {raws} |")
        out.append("")

    figures = {}
    for (run, server), reps in infos.items():
        reports = {r["_rep"]: r for r in runs.get((run, server), [])}
        figures[(run, server)] = [redis_figures(i, reports.get(i["_rep"])) for i in reps]
    if figures:
        cols = [(run, server) for server in ("hub", "nchan")
                for run in ("cluster_fanout", "cluster_steady") if figures.get((run, server))]
        names = {("cluster_fanout", "hub"): "sse-hub, fan-out", ("cluster_steady", "hub"): "sse-hub, 5/s",
                 ("cluster_fanout", "nchan"): "nchan, fan-out", ("cluster_steady", "nchan"): "nchan, 5/s"}
        out.append("### Redis per publish (its INFO after each run, counters reset when the nodes "
                   "were up; medians)")
        out.append("")
        out.append("| figure | " + " | ".join(names[c] for c in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for label, key, f in [("commands, calls inside Lua scripts included", "commands", "{:.2f}"),
                              ("EVALSHA (sse-hub: one per batch of publishes)", "evalsha", "{:.2f}"),
                              ("XADD", "xadd", "{:.2f}"),
                              ("XREAD per node (sse-hub: one per batch read)", "xread_node", "{:.2f}"),
                              ("PUBLISH (nchan)", "publish", "{:.2f}"),
                              ("bytes into Redis", "in_b", "{:,.0f}"),
                              ("bytes out of Redis (both nodes)", "out_b", "{:,.0f}"),
                              ("Redis CPU (µs; the whole run, idle time included)", "cpu_us", "{:.1f}"),
                              ("Redis used memory after the run (MiB)", "memory_mib", "{:.2f}")]:
            cells = [fmt(f, median([x.get(key) for x in figures[c] if x])) for c in cols]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        tops = []
        for c in cols:
            x = next((x for x in figures[c] if x), None)
            if x:
                tops.append(f"{names[c]}: " + ", ".join(f"{k} {v:,}" for k, v in x["top"]))
        out.append("")
        out.append("Most called, in total (first run): " + "; ".join(tops) + ".")
        out.append("")
    out.extend(anomalies(runs, CLUSTER))
    return out


def tls_section(runs, med):
    """The tls scenario: each server over each protocol, fan-out and idle memory."""
    if not any(k[0] in TLS for k in runs):
        return []
    out = ["## TLS and HTTP/2 (issue 21)", ""]
    out.append("Both servers listen with TLS on the same throwaway certificate (ECDSA P-256, "
               "signed by a CA made for the run with `openssl`), offering h2 and http/1.1 in ALPN: "
               "sse-hub with `--tls-cert/--tls-key` (rustls), nginx 1.22 with `listen … ssl http2` "
               "(OpenSSL; `nginx-nchan-tls.conf.template`). sse-load (rustls, trusting only that CA) "
               "subscribes over HTTP/1.1+TLS, one connection per subscriber, or over HTTP/2, N "
               "streams on N/100 connections (100 streams each, under nginx's default 128 "
               "concurrent streams); it publishes over HTTP/1.1+TLS (16 connections). sse-hub over "
               "plaintext HTTP/1.1 runs with the same N and P, for what TLS costs. nchan's "
               "eventsource subscriber works over h2 (checked with `curl --http2`: `HTTP/2 200`, "
               "`text/event-stream`, events arrive).")
    out.append("")

    def cell(scenario, server, path):
        if path in ("_rss_pair", "_load_cpu"):
            return value(median_report(runs, scenario, server), path)
        return med.get((scenario, server, path))

    for scenario, title, servers in (
            ("tls_fanout", "Fan-out", [s for s, _ in TLS_SERVERS]),
            ("tls_idle", "Idle memory per TLS subscriber and per HTTP/2 stream",
             ["hubtls", "hubh2", "nchantls", "nchanh2"])):
        sample = next((r for s in servers for r in runs.get((scenario, s), [])), None)
        if sample is None:
            continue
        params = f"N = {sample['subscribers']:,}"
        if sample["published"]:
            params += f", P = {sample['published']:,} events of 64 B, 16 publishes in flight"
        out.append(f"### {title}: {params}"
                   + (" (chart: `latency-tls.svg`)" if scenario == "tls_fanout" else ""))
        out.append("")
        names = dict(TLS_SERVERS)
        ratios = [("TLS / plain, sse-hub", "hubtls", "hub"), ("HTTP/2 / TLS, sse-hub", "hubh2", "hubtls"),
                  ("sse-hub / nchan, TLS", "hubtls", "nchantls"), ("sse-hub / nchan, HTTP/2", "hubh2", "nchanh2")]
        ratios = [r for r in ratios if r[1] in servers and r[2] in servers]
        out.append("| metric | " + " | ".join(names[s] for s in servers) + " | "
                   + " | ".join(r[0] for r in ratios) + " | runs (" + "; ".join(servers) + ") |")
        out.append("|---|" + "---:|" * (len(servers) + len(ratios)) + "---|")
        for label, path, f, _ in METRICS[scenario]:
            figures = {s: cell(scenario, s, path) for s in servers}
            raws = "; ".join(", ".join(fmt(f, value(r, path)) for r in runs.get((scenario, s), []))
                             for s in servers)
            out.append(f"| {label} | " + " | ".join(fmt(f, figures[s]) for s in servers) + " | "
                       + " | ".join(ratio(figures[a], figures[b]) for _, a, b in ratios)
                       + f" | {raws} |")
        out.append("")
    out.extend(anomalies(runs, TLS, TLS_SERVERS))
    missing = [f"{s} on {n}" for s in TLS for k, n in TLS_SERVERS
               if (s, k) != ("tls_idle", "hub") and any(x[0] == s for x in runs)
               and not runs.get((s, k))]
    if missing:
        out.append("Missing runs (sse-load failed): " + ", ".join(missing))
        out.append("")
    return out


def scale_section(runs, med, infos, env):
    """The scale scenario: N subscribers on several sse-hub nodes of one Redis (issue 23)."""
    reports = runs.get(("scale", "hub"), [])
    if not reports:
        return []
    sample = reports[0]
    nodes = len(sample.get("nodes") or []) or 1
    out = [f"## {sample['subscribers']:,} subscribers on {nodes} sse-hub nodes of one machine "
           "(the scale scenario, issue 23)", ""]
    version = next((i.get("redis_version") for i in infos.get(("scale", "hub"), [])), "?")
    out.append(f"Opt-in: `scripts/bench --scenario scale`. A fresh `redis-server` ({version}, "
               "persistence off) and "
               f"{nodes} sse-hub nodes on it (`--store redis://… --redis-prefix bench`, 1 HTTP "
               "worker each), all pinned to core 0; sse-load on core 1, "
               f"{sample['processes']} processes, splits the subscribers evenly over the nodes "
               "(source addresses 127.0.0.2–254) and publishes events of 64 B, paced, to the "
               "first node. \"Until every subscriber had the event\": per event, its slowest "
               "publish → receive time over every subscriber, then p50 / p99 / max over the "
               "events. RSS and CPU sum every node and Redis. Redis CPU is its "
               "`used_cpu_user + used_cpu_sys` from when the nodes were ready to the end of the "
               "run (idle reads of every node included), over the events published. sse-hub "
               "only: no nchan comparison.")
    if env.get("ARGS"):
        out.append("")
        out.append(f"sse-load arguments: `{env['ARGS']}`.")
    out.append("")
    out.append("| figure | sse-hub (median) | runs |")
    out.append("|---|---:|---|")
    for label, path, f, _ in METRICS["scale"]:
        figure = med.get(("scale", "hub", path))
        if path.startswith("_node") or path in ("_rss_pair", "_load_cpu"):
            figure = value(median_report(runs, "scale", "hub"), path)
        raws = ", ".join(fmt(f, value(r, path)) for r in reports)
        out.append(f"| {label} | {fmt(f, figure)} | {raws} |")
    by_rep = {r["_rep"]: r for r in reports}
    redis = [redis_figures(i, by_rep.get(i["_rep"])) for i in infos.get(("scale", "hub"), [])]
    redis = [x for x in redis if x]
    for label, key, f in [("Redis CPU per publish (µs; the whole run, idle time included)",
                           "cpu_us", "{:,.0f}"),
                          ("Redis commands per publish", "commands", "{:.1f}"),
                          ("Redis used memory after the run (MiB)", "memory_mib", "{:.2f}")]:
        out.append(f"| {label} | {fmt(f, median([x.get(key) for x in redis]))} | "
                   + ", ".join(fmt(f, x.get(key)) for x in redis) + " |")
    out.append("")
    out.extend(anomalies(runs, ["scale"], [("hub", "sse-hub")]))
    return out


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
    infos = load_redis(args.raw)
    out = []
    out.append("# sse-hub vs nginx + nchan")
    out.append("")
    out.append(f"Reproduce with `{args.command}` (25–35 minutes for the full run; "
               "`--scenario NAME` runs one scenario and keeps the others' figures). Medians "
               "shown, ratio = sse-hub / nchan. "
               "Both servers have 2 workers pinned to core 0 (`taskset -c 0`); the load generator "
               "(`sse-load`, current-thread runtime per process) is pinned to core 1. Servers are "
               "restarted before every run. Everything runs on 127.0.0.1. The figures come from "
               "these runs (other work on the machine shows up in the load average: treat "
               "figures as noisy when it is high):")
    out.append("")
    out.extend(run_lines(args.raw, runs, store))
    if args.quick == "1":
        out.append("")
        out.append("**Quick run: small N and one repetition; not the comparison's figures.**")
    out.append("")
    rows = targets(runs, med) + store_targets(store)
    if rows:
        issues = "6, 10, 11, 21 and 23" if runs.get(("scale", "hub")) else "6, 10, 11 and 21"
        out.append(f"## Targets (issues {issues})")
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
        out.extend(anomalies(runs, [scenario]))
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
    out.extend(cluster_section(runs, med, infos))
    out.extend(tls_section(runs, med))
    out.extend(scale_section(runs, med, infos, run_envs(args.raw).get("scale", {})))
    # hubfile runs only in the fan-out, and nchan has no one-node run in the cluster scenario.
    missing = [f"{s} on {n}" for s in ORDER + CLUSTER for k, n in SERVERS
               if k != "hubfile" and (s, k) != ("cluster_fanout_single", "nchan")
               and any(x[0] == s for x in runs) and not runs.get((s, k))]
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
    parser.add_argument("--command", default="scripts/bench")
    write(parser.parse_args())


if __name__ == "__main__":
    main()
