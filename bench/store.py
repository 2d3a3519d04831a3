#!/usr/bin/env python3
"""The file store's own figures for scripts/bench: how big the store file is after 10,000 and
after N publishes with --history-size 10000 (it must stay within 2x), and how long a hub killed
with a full history of 10,000 events takes to serve again (spawn to a /stats answer holding all
10,000). Starts the hub itself on a free loopback port; publishes with sse-load. Prints one line
of JSON."""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HISTORY = 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    def __init__(self, binary, store, pin, log):
        self.port = free_port()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            pin + [binary, "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
                   "--store", f"file:{store}", "--history-size", str(HISTORY),
                   "--heartbeat", "15s"],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)

    def stats(self):
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)

    def serving_after(self, want_len, timeout=20.0):
        """Seconds from spawn until /stats answers with `want_len` events in the history."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the hub exited with {self.proc.returncode}")
            try:
                if self.stats()["history_len"] == want_len:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.002)
        sys.exit(f"the hub did not serve {want_len} events within {timeout} s")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def publish(load, pin, hub, count):
    """Publishes `count` events of 64 B with sse-load (one subscriber, 64 in flight)."""
    base = f"http://127.0.0.1:{hub.port}"
    out = subprocess.run(
        pin + [load, f"{base}/stream", "--publish-url", f"{base}/publish", "-n", "1",
               "-P", str(count), "-s", "64", "-k", "64", "--drain-timeout", "120s",
               "--timeout", "1800s", "--json"],
        check=True, capture_output=True, text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if report.get("lost", 0):
        sys.exit(f"sse-load lost {report['lost']} events")
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--load", required=True)
    parser.add_argument("--publishes", type=int, default=1_000_000)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1")
    args = parser.parse_args()
    server_pin = ["taskset", "-c", args.server_core]
    load_pin = ["taskset", "-c", args.load_core]

    with tempfile.TemporaryDirectory(prefix="sse-bench-store.") as work:
        store = os.path.join(work, "history.redb")
        with open(os.path.join(work, "hub.log"), "w") as log:
            hub = Hub(args.hub, store, server_pin, log)
            hub.serving_after(0)
            first = publish(args.load, load_pin, hub, HISTORY)
            size_first = os.path.getsize(store)
            rest = publish(args.load, load_pin, hub, args.publishes - HISTORY)
            size_all = os.path.getsize(store)
            history_len = hub.stats()["history_len"]
            restarts = []
            for _ in range(args.restarts):
                hub.kill9()
                hub = Hub(args.hub, store, server_pin, log)
                restarts.append(hub.serving_after(HISTORY))
            hub.kill9()
    print(json.dumps({
        "history_size": HISTORY,
        "publishes": args.publishes,
        "history_len": history_len,
        "file_bytes_after_first": size_first,
        "file_bytes_after_all": size_all,
        "file_growth": size_all / size_first,
        "publishes_per_s": rest["published"] / rest["publish_s"] if rest.get("publish_s") else None,
        "publish_round_trip_p50_ms": [first.get("publish_round_trip_p50_ms"),
                                      rest.get("publish_round_trip_p50_ms")],
        "publish_round_trip_p99_ms": [first.get("publish_round_trip_p99_ms"),
                                      rest.get("publish_round_trip_p99_ms")],
        "restart_s": restarts,
        "restart_s_median": statistics.median(restarts),
    }))


if __name__ == "__main__":
    main()
