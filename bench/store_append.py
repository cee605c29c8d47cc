"""
Append throughput of the disk store backends, and what the disk work does to the reactor.

For each backend and N messages in flight (1, 8, 32) this appends 5 KB messages through a
thread pool runner on the real reactor, and meanwhile measures how late a 10 ms LoopingCall
ticks (worst and 99th percentile): small delays mean fsyncs do not stall the reactor.

    python3 bench/store_append.py [--count 400] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsuite.store.base import threadpool_runner  # noqa: E402
from mailsuite.store.maildir import MaildirMailStore  # noqa: E402
from mailsuite.store.sqlite import SQLiteMailStore  # noqa: E402

BACKENDS = {"sqlite": SQLiteMailStore, "maildir": MaildirMailStore}
IN_FLIGHT = (1, 8, 32)
TICK = 0.010
MESSAGE = (b"From: bench@example.test\r\nTo: alice@example.test\r\nSubject: bench\r\n\r\n"
           + (b"x" * 76 + b"\r\n") * 64)[:5120]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


async def one_run(reactor, factory, directory, in_flight, count):
    pool = ThreadPool(minthreads=1, maxthreads=max(4, in_flight), name="store-bench")
    pool.start()
    store = factory(directory, runner=threadpool_runner(reactor, pool))
    try:
        await store.ensure_account("alice")
        ticks = []
        ticker = task.LoopingCall(lambda: ticks.append(time.monotonic()))
        ticker.clock = reactor
        ticker.start(TICK, now=True)
        started = time.monotonic()
        remaining = iter(range(count))

        async def lane():
            for _ in remaining:
                await store.append("alice", "INBOX", MESSAGE)

        await defer.gatherResults(
            [defer.ensureDeferred(lane()) for _ in range(in_flight)], consumeErrors=True
        )
        elapsed = time.monotonic() - started
        ticker.stop()
        delays = [max(0.0, b - a - TICK) for a, b in zip(ticks, ticks[1:])]
        return count / elapsed, max(delays, default=0.0), percentile(delays, 0.99)
    finally:
        await store.close()
        pool.stop()


async def main(reactor, options):
    print(f"{'backend':8} {'in flight':>9} {'appends/s':>10} {'worst tick':>11} {'p99 tick':>9}")
    for name, factory in BACKENDS.items():
        for in_flight in IN_FLIGHT:
            directory = tempfile.mkdtemp(prefix=f"bench-{name}-", dir=options.dir)
            try:
                rate, worst, p99 = await one_run(
                    reactor, factory, directory, in_flight, options.count
                )
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            print(f"{name:8} {in_flight:>9} {rate:>10.0f} {worst * 1000:>9.1f}ms "
                  f"{p99 * 1000:>7.1f}ms")


def run():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="appends per run")
    parser.add_argument("--dir", default=None, help="where to create the stores")
    options = parser.parse_args()
    if options.dir:
        os.makedirs(options.dir, exist_ok=True)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))


if __name__ == "__main__":
    run()
