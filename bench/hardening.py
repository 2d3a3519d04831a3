#!/usr/bin/env python3
"""What a hostile client can make the hub keep or spend (issue 12), measured on a release build.
Starts the hub itself on a free loopback port, prints each figure as it goes and one line of JSON
at the end:

  templates_rss_growth_mib    RSS after N subscribers with distinct ~1 KiB URI templates
                              connected and left, minus RSS before (target <= 32 MiB)
  adversarial_delay_ms        p50/max over R rounds: with A subscribers each holding a distinct
                              template like a{+v0}a{+v1}...Z (under 1 KiB), how long after a
                              publish to a 1,000-character topic like a/a/a/... a canary
                              subscriber receives the next event (target <= 50 ms)
  adversarial_no_trailing_literal_delay_ms
                              the same with templates that end in an expression, against a
                              topic each must read to its end
  baseline_delay_ms           the same without the adversarial publish

  bench/hardening.py --binary target/release/sse-hub [--templates 3000] [--adversaries 1000]

With --storm (issue 19 item 5) it measures instead, on a fresh hub for each part:

  storm_*                     N subscribers with distinct ~1 KiB URI templates connected all at
                              once from 127.0.0.x source addresses: the hub's threads and RSS
                              before, at most during, and --settle s after they all left, and
                              the selector bytes accounted while they were connected (targets:
                              RSS during <= selector bytes + 64 MiB, after <= before + 16 MiB)
  patterns_*                  N subscribers with distinct URL patterns (match_urlpattern=) on
                              /.well-known/mercure: RSS and charged selector bytes per pattern

  bench/hardening.py --storm --binary target/release/sse-hub [--templates 1000]
  (_RJEM_MALLOC_CONF in the environment is passed on to the hub.)
"""
import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Hub:
    def __init__(self, binary, extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
             "--max-subscribers", "20000", "--heartbeat", "15s"] + extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.get("/healthz")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return r.read()

    def selector_bytes(self):
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("sse_hub_selector_bytes "):
                return int(float(line.split()[1]))
        raise RuntimeError("no sse_hub_selector_bytes in /metrics")

    def threads(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise RuntimeError("no Threads")

    def subscribers(self):
        return json.loads(self.get("/stats"))["subscribers"]

    def rss(self):
        return rss_bytes(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def open_stream(port, topic, source=None, path=None):
    """Opens GET /stream?topic=... (or `path`), from `source` if given, and waits for the
    opening comment; returns the streams."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None)
    if path is None:
        path = "/stream?" + urllib.parse.urlencode({"topic": topic})
    writer.write(f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"subscribe refused: {head[:200]!r}")
    await reader.readuntil(b":")  # the opening comment's first byte
    return reader, writer


async def open_many(port, topics, concurrency=64):
    streams = [None] * len(topics)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i):
        async with semaphore:
            streams[i] = await open_stream(port, topics[i])

    await asyncio.gather(*(one(i) for i in range(len(topics))))
    return streams


def close_all(streams):
    for _, writer in streams:
        writer.close()


def long_template(i):
    """A distinct ~1 KiB template: a long literal path around two expressions."""
    filler = "abcdefghijklmnopqrstuvwxyz0123456789".encode().hex()[:900]
    return f"https://example.com/{i}/{filler}/{{id}}{{?page,sort}}"


def storm_template(i):
    """A distinct ~1 KiB template with literal text between its expressions, which its
    automaton must cover (about 15 KiB each)."""
    filler = "abcdefghijklmnopqrstuvwxyz0123456789".encode().hex()[:440]
    return f"https://example.com/{i}/{{a}}/{filler}/{{b}}/{filler}/{{c}}{{?page,sort}}"


def adversarial_template(i, trailing_literal=True):
    """The issue's shape: a{+v0}a{+v1}... up to about 1,000 bytes, then Z and a number. Without
    the trailing literal (the numbers go into the variable names), no string comparison can
    rule a topic out: the automaton reads the whole topic."""
    parts, k = [], 0
    while sum(map(len, parts)) < 980:
        parts.append(f"a{{+v{k}}}" if trailing_literal else f"a{{+v{i}x{k}}}")
        k += 1
    return "".join(parts) + (f"Z{i}" if trailing_literal else "")


async def post(port, path, body=b"x"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    response = await reader.read()
    writer.close()
    if not response.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"publish refused: {response[:200]!r}")


async def canary_delay(port, canary_reader, adversarial_topic, marker):
    """Publishes to the adversarial topic (if any), then at once to the canary topic; returns
    ms from the first request to the canary's receiving the event."""
    started = time.monotonic()
    if adversarial_topic:
        first = asyncio.create_task(post(port, "/publish?" + urllib.parse.urlencode(
            {"topic": adversarial_topic})))
        await asyncio.sleep(0)
    await post(port, f"/publish?topic=canary", marker.encode())
    await canary_reader.readuntil(marker.encode())
    elapsed = (time.monotonic() - started) * 1000
    if adversarial_topic:
        await first
    return elapsed


async def measure(args):
    result = {}
    hub = Hub(args.binary, [])
    try:
        # 1. Templates that leave take their memory with them.
        before = peak = hub.rss()
        for start in range(0, args.templates, 1000):
            batch = [long_template(i) for i in range(start, min(args.templates, start + 1000))]
            streams = await open_many(hub.port, batch)
            peak = hub.rss()
            close_all(streams)
        deadline = time.monotonic() + 30
        while hub.subscribers() != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)
        after = hub.rss()
        result["templates"] = args.templates
        result["templates_rss_before_mib"] = round(before / 2**20, 1)
        result["templates_rss_peak_mib"] = round(peak / 2**20, 1)
        result["templates_rss_growth_mib"] = round((after - before) / 2**20, 1)
        print(f"{args.templates} distinct ~1 KiB templates: RSS {before / 2**20:.1f} MiB before, "
              f"{peak / 2**20:.1f} with the last 1,000 connected, {after / 2**20:.1f} "
              f"{args.settle:.0f} s after all left (+{(after - before) / 2**20:.1f} MiB)",
              file=sys.stderr)

        # 2. A publish against many adversarial templates delays the next event by little.
        canary_reader, canary_writer = await open_stream(hub.port, "canary")
        baseline = [await canary_delay(hub.port, canary_reader, None, f"base{r}")
                    for r in range(args.rounds)]
        result["baseline_delay_ms"] = {"p50": round(statistics.median(baseline), 2),
                                       "max": round(max(baseline), 2)}
        result["adversaries"] = args.adversaries
        # The topic a/a/a/... and, for templates with nothing literal at their end, the
        # same topic with a last character no template allows: each is read to its end.
        for label, trailing, topic in (("", True, "a/" * 500),
                                       ("_no_trailing_literal", False, "a/" * 499 + 'a"')):
            started = time.monotonic()
            adversaries = await open_many(
                hub.port, [adversarial_template(i, trailing) for i in range(args.adversaries)])
            connect_s = time.monotonic() - started
            delays = [await canary_delay(hub.port, canary_reader, topic, f"adv{label}{r}")
                      for r in range(args.rounds)]
            close_all(adversaries)
            result[f"adversaries{label}_connect_s"] = round(connect_s, 1)
            result[f"adversarial{label}_delay_ms"] = {"p50": round(statistics.median(delays), 2),
                                                     "max": round(max(delays), 2)}
            print(f"{args.adversaries} adversarial templates{label.replace('_', ' ')} (connected "
                  f"in {connect_s:.1f} s): next event after a publish to a 1,000-char topic in "
                  f"p50 {statistics.median(delays):.1f} ms, max {max(delays):.1f} ms (without "
                  f"it: p50 {statistics.median(baseline):.1f} ms, max {max(baseline):.1f} ms)",
                  file=sys.stderr)
            deadline = time.monotonic() + 30
            while hub.subscribers() != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        canary_writer.close()
    finally:
        hub.stop()
    return result


def source(i):
    """The i-th of 250 loopback source addresses (127.0.0.2 to 127.0.0.251)."""
    return f"127.0.0.{2 + i % 250}"


async def settle(hub, args, subscribers=0):
    deadline = time.monotonic() + 30
    while hub.subscribers() != subscribers and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.settle)


async def sample_while(hub, task):
    """Samples the hub's threads and RSS every 10 ms until `task` ends; returns the maxima."""
    most_threads = most_rss = 0
    while not task.done():
        most_threads = max(most_threads, hub.threads())
        most_rss = max(most_rss, hub.rss())
        await asyncio.sleep(0.01)
    return most_threads, most_rss


async def measure_storm(args):
    mib = lambda b: round(b / 2**20, 1)
    result = {"templates": args.templates}
    hub = Hub(args.binary, args.hub_arg)
    try:
        before_rss, before_threads = hub.rss(), hub.threads()
        topics = [storm_template(i) for i in range(args.templates)]
        started = time.monotonic()
        task = asyncio.ensure_future(asyncio.gather(
            *(open_stream(hub.port, t, source(i)) for i, t in enumerate(topics))))
        most_threads, most_rss = await sample_while(hub, task)
        streams = await task
        connect_s = time.monotonic() - started
        selector = hub.selector_bytes()
        most_rss = max(most_rss, hub.rss())
        close_all(streams)
        await settle(hub, args)
        after = hub.rss()
        result.update({
            "storm_connect_s": round(connect_s, 1),
            "storm_threads_before": before_threads, "storm_threads_max": most_threads,
            "storm_rss_before_mib": mib(before_rss), "storm_rss_max_mib": mib(most_rss),
            "storm_selector_mib": mib(selector),
            "storm_rss_over_selector_mib": mib(most_rss - selector),
            "storm_rss_after_mib": mib(after),
            "storm_rss_after_growth_mib": mib(after - before_rss),
        })
        print(f"{args.templates} distinct ~1 KiB templates at once (in {connect_s:.1f} s): "
              f"threads {before_threads} -> max {most_threads}; RSS {mib(before_rss)} MiB -> "
              f"max {mib(most_rss)} (selector bytes {mib(selector)} MiB), {mib(after)} "
              f"{args.settle:.0f} s after all left (+{mib(after - before_rss)})", file=sys.stderr)
    finally:
        hub.stop()

    # The same subscribers with distinct exact topics, then with distinct URL patterns: the
    # difference is what a pattern keeps.
    for kind, label in (("match", "exact"), ("match_urlpattern", "patterns")):
        hub = Hub(args.binary, args.hub_arg)
        try:
            await asyncio.sleep(0.5)
            before = hub.rss()
            paths = ["/.well-known/mercure?" + urllib.parse.urlencode(
                     {kind: f"https://example.com/p{i}/books/:id/reviews/:review?"})
                     for i in range(args.templates)]
            opened = await asyncio.gather(
                *(open_stream(hub.port, None, source(i), path) for i, path in enumerate(paths)),
                return_exceptions=True)
            streams = [s for s in opened if not isinstance(s, Exception)]
            # Past jemalloc's 10 s decay: what the compiles used and freed is given back.
            await asyncio.sleep(12)
            rss, selector = hub.rss(), hub.selector_bytes()
            close_all(streams)
            n = max(len(streams), 1)
            result.update({
                label: len(streams),
                f"{label}_refused": len(opened) - len(streams),
                f"{label}_rss_per_subscriber_kib": round((rss - before) / n / 1024, 1),
                f"{label}_charged_per_subscriber_kib": round(selector / n / 1024, 1),
            })
            print(f"{len(streams)} distinct {label} subscribers ({len(opened) - len(streams)} "
                  f"refused): RSS {(rss - before) / n / 1024:.1f} KiB per subscriber, charged "
                  f"{selector / n / 1024:.1f} KiB each", file=sys.stderr)
        finally:
            hub.stop()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "sse-hub"))
    parser.add_argument("--templates", type=int, default=3000)
    parser.add_argument("--adversaries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds to wait after the template subscribers left")
    parser.add_argument("--storm", action="store_true",
                        help="measure the template storm and URL pattern costs instead")
    parser.add_argument("--hub-arg", action="append", default=[],
                        help="an extra argument for the hub (repeatable)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure_storm(args) if args.storm else measure(args))))


if __name__ == "__main__":
    main()
