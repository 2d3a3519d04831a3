#!/usr/bin/env python3
"""Memory a hub keeps per subscriber after a burst, while its subscribers keep reading.

Starts the hub binary given (pinned to core 0 when `taskset` is there), opens N subscribers
from this process, measures the hub's RSS when they are idle, publishes a burst of events
as fast as a few keep-alive connections can, reads until every subscriber has every event,
then keeps reading (heartbeats) and samples RSS again at the times given. Prints one line
per sample: seconds after the burst was read, RSS, and bytes per subscriber above idle.

    taskset -c 1 bench/burst_memory.py --hub target/release/sse-hub -n 2000 -P 1000 -s 1024
"""

import argparse
import http.client
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time

MARKER = b"\ndata: "


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hub(args):
    port = free_port()
    command = [args.hub, "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--max-subscribers", "20000", "--heartbeat", args.heartbeat] + args.hub_arg
    if shutil.which("taskset") and not args.no_pin:
        command = ["taskset", "-c", "0"] + command
    hub = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return hub, port
        except OSError:
            time.sleep(0.05)
    hub.kill()
    sys.exit("the hub did not listen within 20 s")


def subscribe(port, n):
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(s)
    for s in sockets:
        s.settimeout(10)
        got = b""
        while b"\n\n" not in got:
            piece = s.recv(4096)
            if not piece:
                sys.exit("a stream closed before its opening comment")
            got += piece
        s.setblocking(False)
    return sockets


def publish(port, events, size, in_flight):
    body = b"x" * size
    per_connection = [events // in_flight + (i < events % in_flight) for i in range(in_flight)]
    errors = []

    def run(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(count):
            connection.request("POST", "/publish", body)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(response.status)

    threads = [threading.Thread(target=run, args=(count,)) for count in per_connection]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit(f"publish errors: {errors[:5]}")


def read_for(selector, counts, tails, until, want=None):
    """Reads every readable socket; returns when `until` passes or every count reaches `want`."""
    done = 0 if want is None else sum(1 for c in counts.values() if c >= want)
    while time.time() < until:
        for key, _ in selector.select(timeout=0.2):
            s = key.fileobj
            try:
                piece = s.recv(262144)
            except BlockingIOError:
                continue
            if not piece:
                sys.exit("a stream ended")
            joined = tails[s] + piece
            before = counts[s]
            counts[s] += joined.count(MARKER)
            tails[s] = joined[-(len(MARKER) - 1):]
            if want is not None and before < want <= counts[s]:
                done += 1
        if want is not None and done == len(counts):
            return True
    return want is None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", required=True, help="the sse-hub binary")
    parser.add_argument("--hub-arg", action="append", default=[], help="extra hub argument")
    parser.add_argument("--heartbeat", default="15s")
    parser.add_argument("-n", "--subscribers", type=int, default=2000)
    parser.add_argument("-P", "--events", type=int, default=1000)
    parser.add_argument("-s", "--size", type=int, default=1024, help="bytes of data per event")
    parser.add_argument("-k", "--in-flight", type=int, default=16, help="publish connections")
    parser.add_argument("--samples", default="0,5,10,20,30",
                        help="seconds after the burst was read at which to sample RSS")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the hub to core 0")
    args = parser.parse_args()

    hub, port = start_hub(args)
    try:
        sockets = subscribe(port, args.subscribers)
        selector = selectors.DefaultSelector()
        for s in sockets:
            selector.register(s, selectors.EVENT_READ)
        counts = {s: 0 for s in sockets}
        tails = {s: b"" for s in sockets}
        read_for(selector, counts, tails, time.time() + 2)
        idle = rss_bytes(hub.pid)
        print(f"idle: {idle / 2**20:.1f} MiB with {args.subscribers} subscribers", flush=True)

        publisher = threading.Thread(
            target=publish, args=(port, args.events, args.size, args.in_flight))
        started = time.time()
        publisher.start()
        # Read while the burst is published, so the subscribers keep reading throughout.
        complete = read_for(selector, counts, tails, time.time() + 300, want=args.events)
        publisher.join()
        if not complete:
            missing = sum(1 for c in counts.values() if c < args.events)
            sys.exit(f"{missing} subscribers did not get all {args.events} events")
        read_at = time.time()
        peak = rss_bytes(hub.pid)
        print(f"burst read in {read_at - started:.1f} s; RSS then {peak / 2**20:.1f} MiB",
              flush=True)
        for sample in sorted(float(s) for s in args.samples.split(",")):
            read_for(selector, counts, tails, read_at + sample)
            rss = rss_bytes(hub.pid)
            per = (rss - idle) / args.subscribers
            print(f"+{sample:4.0f} s: {rss / 2**20:7.1f} MiB, {per / 1024:6.1f} KiB per subscriber "
                  f"above idle", flush=True)
    finally:
        hub.kill()
        hub.wait()


if __name__ == "__main__":
    main()
