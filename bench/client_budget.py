#!/usr/bin/env python3
"""How many anonymous connections from one address it takes to make a new subscriber's pattern be
refused (issue 19, item 5), measured on a release build. Starts the hub itself on a free loopback
port with its default limits, then:

  1. opens --attempts anonymous subscribers from 127.0.0.1, each with a distinct URL pattern
     (`match_urlpattern=https://example.com/pN/:id`), --concurrency at a time, keeping every
     accepted stream open; counts them by status and notes the first refusal;
  2. from 127.0.0.2 (another client), opens one subscriber with a new distinct pattern:
     accepted means one address could not drain the budget for everyone (the target).

Prints each figure as it goes and one line of JSON at the end.

  bench/client_budget.py --binary target/release/sse-hub [--attempts 2000] [--concurrency 32]
"""
import argparse
import asyncio
import json
import resource
import socket
import subprocess
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
    def __init__(self, binary):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--heartbeat", "15s"],
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
            return r.read().decode()

    def metric(self, name):
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def subscribe(port, source, n):
    """Opens one stream from `source`; returns (status, body-or-None, writer kept open)."""
    pattern = urllib.parse.quote(f"https://example.com/p{n}/:id", safe="")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        f"GET /.well-known/mercure?match_urlpattern={pattern} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status = int(head.split(b" ", 2)[1])
    if status == 200:
        return status, None, writer
    body = b""
    try:
        body = await asyncio.wait_for(reader.read(4096), 5)
    except asyncio.TimeoutError:
        pass
    writer.close()
    return status, body.decode(errors="replace"), None


async def run(args):
    hub = Hub(args.binary)
    kept = []
    by_status = {}
    first_refusal = None
    try:
        rss_before = rss_bytes(hub.proc.pid)
        started = time.monotonic()
        semaphore = asyncio.Semaphore(args.concurrency)

        async def one(n):
            nonlocal first_refusal
            async with semaphore:
                status, body, writer = await subscribe(hub.port, "127.0.0.1", n)
            by_status[status] = by_status.get(status, 0) + 1
            if writer is not None:
                kept.append(writer)
            elif first_refusal is None or n < first_refusal[0]:
                first_refusal = (n, status, body.strip().splitlines()[-1] if body else "")

        await asyncio.gather(*(one(n) for n in range(args.attempts)))
        elapsed = time.monotonic() - started
        accepted = by_status.get(200, 0)
        selector_bytes = hub.metric("sse_hub_selector_bytes")
        rss_during = rss_bytes(hub.proc.pid)
        print(f"one address, {args.attempts} distinct patterns in {elapsed:.1f} s: "
              f"by status {dict(sorted(by_status.items()))}; accepted {accepted}")
        if first_refusal:
            print(f"  first refusal: attempt {first_refusal[0]}, status {first_refusal[1]}, "
                  f"{first_refusal[2]}")
        print(f"  sse_hub_selector_bytes {selector_bytes:.0f}, RSS {rss_before / 2**20:.1f} -> "
              f"{rss_during / 2**20:.1f} MiB")

        status, body, writer = await subscribe(hub.port, "127.0.0.2", args.attempts + 1)
        other_accepted = status == 200
        print(f"another address (127.0.0.2), a new pattern: {status}"
              + ("" if other_accepted else f" {body.strip().splitlines()[-1] if body else ''}"))
        if writer is not None:
            writer.close()
        result = {
            "binary": args.binary,
            "attempts_from_one_address": args.attempts,
            "accepted_from_one_address": accepted,
            "by_status": by_status,
            "first_refusal_at": first_refusal[0] if first_refusal else None,
            "first_refusal_status": first_refusal[1] if first_refusal else None,
            "selector_bytes": selector_bytes,
            "rss_mib_during": round(rss_during / 2**20, 1),
            "other_address_new_pattern_accepted": other_accepted,
            "other_address_status": status,
        }
        print(json.dumps(result))
    finally:
        for writer in kept:
            writer.close()
        hub.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/sse-hub")
    parser.add_argument("--attempts", type=int, default=2000,
                        help="distinct patterns tried from one address (default 2000, past the "
                             "~1,300 that fill the 64 MiB global budget)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
