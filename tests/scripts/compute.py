#!/usr/bin/env python3
"""Deterministic pure-Python workload for lifeboat's continuation tests.

usage: compute.py [STEPS=40] [SLEEP_MS=40]

Keeps a running hash plus dict- and list-heavy state, hands part of every
step to a worker thread through queues, prints one progress line per step
and paces itself with time.sleep.  stdout depends only on the arguments.
Corrupted state is reported on stderr with exit status 2.
"""

import queue
import sys
import threading
import time

MASK = (1 << 64) - 1


def mix(h, v):
    """One 64-bit mixing step."""
    h ^= (v + 0x9E3779B97F4A7C15 + ((h << 6) & MASK) + (h >> 2)) & MASK
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    return h


def corrupt(msg):
    sys.stdout.flush()
    print(f"CORRUPTION: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def worker(inbox, outbox):
    """Fold each list it receives into a digest; None ends it."""
    seen = 0
    while True:
        item = inbox.get()
        if item is None:
            outbox.put(("bye", seen))
            return
        step, values = item
        h = step
        for v in values:
            h = mix(h, v)
        seen += 1
        outbox.put((step, h))


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    delay = (int(sys.argv[2]) if len(sys.argv) > 2 else 40) / 1000.0
    inbox, outbox = queue.Queue(), queue.Queue()
    thread = threading.Thread(target=worker, args=(inbox, outbox), daemon=True)
    thread.start()

    acc = 0xC0FFEE
    table = {}
    history = []
    buckets = [[] for _ in range(13)]
    for step in range(steps):
        values = [mix(acc, i) for i in range(300)]
        inbox.put((step, values))
        for i, v in enumerate(values[:64]):
            key = f"k{(v >> 7) % 97}"
            table[key] = table.get(key, 0) ^ v
            buckets[i % 13].append(v & 0xFFFF)
            if len(buckets[i % 13]) > 50:
                buckets[i % 13].pop(0)
        got_step, digest = outbox.get()
        if got_step != step:
            corrupt(f"worker answered step {got_step}, expected {step}")
        acc = mix(acc, digest)
        for key in sorted(table):
            acc = mix(acc, table[key])
        for b in buckets:
            acc = mix(acc, sum(b))
        history.append(acc)
        if len(history) != step + 1 or (step and history[-2] == acc):
            corrupt("history is inconsistent")
        print(f"step {step} acc 0x{acc:016x} keys {len(table)}", flush=True)
        time.sleep(delay)

    inbox.put(None)
    tag, seen = outbox.get()
    thread.join()
    if tag != "bye" or seen != steps:
        corrupt(f"worker handled {seen} steps, expected {steps}")
    digest = 0
    for h in history:
        digest = mix(digest, h)
    print(f"done steps {steps} digest 0x{digest:016x}", flush=True)


if __name__ == "__main__":
    main()
