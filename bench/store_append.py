"""
Append throughput of the disk store backends, and what the disk work does to the reactor.

For each backend and N messages in flight (1, 8, 32) this appends 5 KB messages through a
thread pool runner on the real reactor, and meanwhile measures how late a 10 ms LoopingCall
ticks (worst and 99th percentile): small delays mean fsyncs do not stall the reactor.
A last case appends into an INBOX already holding --preload messages, so the cost of a
large folder shows (an append should cost the same in a full folder as in an empty one).

    python3 bench/store_append.py [--count 400] [--preload 20000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsuite.store.base import inline_runner, threadpool_runner  # noqa: E402
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


def preload_maildir(directory, count):
    """Fill alice's INBOX with ``count`` files the fast way, as another delivery agent would;
    the store gives them UIDs on its first look."""
    new = os.path.join(directory, "alice", "Maildir", "new")
    for i in range(count):
        with open(os.path.join(new, f"1700000000.M{i}P1.preload,S={len(MESSAGE)}"), "wb") as f:
            f.write(MESSAGE)


def preload_sqlite(directory, count):
    """Fill alice's INBOX with ``count`` rows sharing one body file, in one transaction."""
    file_id = "00preload"
    bucket = os.path.join(directory, "messages", "alice", file_id[:2])
    os.makedirs(bucket, exist_ok=True)
    with open(os.path.join(bucket, file_id), "wb") as f:
        f.write(MESSAGE)
    db = sqlite3.connect(os.path.join(directory, "index.sqlite"))
    with db:
        box_id, uidnext = db.execute(
            "SELECT id, uidnext FROM mailboxes WHERE account = 'alice' AND name = 'INBOX'"
        ).fetchone()
        db.executemany(
            "INSERT INTO messages (mailbox, uid, modseq, flags, internal_date, size, file) "
            "VALUES (?, ?, ?, '', '2024-01-01T00:00:00+00:00', ?, ?)",
            [(box_id, uidnext + i, 1, len(MESSAGE), file_id) for i in range(count)],
        )
        db.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = 1 WHERE id = ?",
            (uidnext + count, box_id),
        )
    db.close()


PRELOADERS = {"sqlite": preload_sqlite, "maildir": preload_maildir}


async def one_run(reactor, name, directory, in_flight, count, preload=0):
    if preload:
        setup = BACKENDS[name](directory, runner=inline_runner)
        setup.ensure_account("alice")
        setup.close()
        PRELOADERS[name](directory, preload)
    pool = ThreadPool(minthreads=1, maxthreads=max(4, in_flight), name="store-bench")
    pool.start()
    store = BACKENDS[name](directory, runner=threadpool_runner(reactor, pool))
    try:
        await store.ensure_account("alice")
        # The first look at a preloaded folder indexes it; that is not what is measured.
        await store.status("alice", "INBOX")
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
    print(f"{'backend':8} {'in folder':>9} {'in flight':>9} {'appends/s':>10} "
          f"{'worst tick':>11} {'p99 tick':>9}")
    cases = [(in_flight, 0) for in_flight in IN_FLIGHT]
    if options.preload:
        cases.append((8, options.preload))
    for name in BACKENDS:
        for in_flight, preload in cases:
            directory = tempfile.mkdtemp(prefix=f"bench-{name}-", dir=options.dir)
            try:
                rate, worst, p99 = await one_run(
                    reactor, name, directory, in_flight, options.count, preload
                )
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            print(f"{name:8} {preload:>9} {in_flight:>9} {rate:>10.0f} "
                  f"{worst * 1000:>9.1f}ms {p99 * 1000:>7.1f}ms")


def run():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="appends per run")
    parser.add_argument("--preload", type=int, default=20_000,
                        help="messages already in the folder for the last case (0: skip it)")
    parser.add_argument("--dir", default=None, help="where to create the stores")
    options = parser.parse_args()
    if options.dir:
        os.makedirs(options.dir, exist_ok=True)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))


if __name__ == "__main__":
    run()
