"""
Search speed of the store backends (ISearchableStore) over one large mailbox.

Each backend gets --count generated messages (varied subjects, senders and bodies; every
500th has a rare word in its subject and body) through its own append, then this times:
a header substring, a short header substring, a body substring, a text substring, a flag
and an ALL search, plus message_meta of 1,000 messages.  Appends run inline (no reactor);
put --dir on a tmpfs (the default, /dev/shm when present) to time searching, not fsync.

    python3 bench/store_search.py [--count 100000] [--backends memory,sqlite,maildir]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsuite.interfaces import (  # noqa: E402
    SearchAll,
    SearchBody,
    SearchFlag,
    SearchHeader,
    SearchText,
)
from mailsuite.store.base import inline_runner  # noqa: E402
from mailsuite.store.maildir import MaildirMailStore  # noqa: E402
from mailsuite.store.sqlite import SQLiteMailStore  # noqa: E402
from mailsuite.testing.memstore import MemoryMailStore  # noqa: E402

WORDS = (
    "meeting report budget invoice schedule project review update lunch travel "
    "contract offer release draft notes summary question answer request plan "
    "team office client server network backup storage search index mailbox"
).split()
RARE = "zanzibarquokka"
RARE_EVERY = 500

QUERIES = (
    ("header", SearchHeader("subject", RARE)),
    ("header 2ch", SearchHeader("from", "q7")),
    ("body", SearchBody(RARE)),
    ("text", SearchText(RARE)),
    ("flag", SearchFlag("\\Flagged")),
    ("all", SearchAll()),
)


def message(i: int, rng: random.Random) -> bytes:
    words = [rng.choice(WORDS) for _ in range(6)]
    if i % RARE_EVERY == 0:
        words[2] = RARE
    sender = f"user{rng.randrange(1000)}q{i % 10}@example.test"
    when = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i)
    body = "\r\n".join(
        " ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(20)
    )
    if i % RARE_EVERY == 0:
        body += f"\r\nthe {RARE} appears here"
    return (
        f"From: User {i} <{sender}>\r\n"
        f"To: alice@example.test\r\n"
        f"Subject: {' '.join(words[:5])}\r\n"
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <{i}@example.test>\r\n"
        f"\r\n{body}\r\n"
    ).encode()


def done(d):
    box = []
    d.addBoth(box.append)
    value = box[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def open_store(name, directory):
    if name == "memory":
        return MemoryMailStore()
    if name == "sqlite":
        return SQLiteMailStore(directory, runner=inline_runner)
    return MaildirMailStore(directory, runner=inline_runner)


def run_backend(name, directory, count):
    store = open_store(name, directory)
    rng = random.Random(1)
    started = time.monotonic()
    for i in range(count):
        done(store.append("alice", "INBOX", message(i, rng)))
    loaded = time.monotonic() - started
    done(store.set_flags("alice", "INBOX", range(1, count + 1, 100), {"\\Flagged"}))
    print(f"{name:8} {count} appends: {loaded:8.1f} s ({count / loaded:,.0f}/s)")
    for label, query in QUERIES:
        started = time.monotonic()
        found = done(store.search("alice", "INBOX", query))
        first = time.monotonic() - started
        started = time.monotonic()
        done(store.search("alice", "INBOX", query))
        again = time.monotonic() - started
        print(f"{name:8} {label:11} {len(found):7} hits  first {first * 1000:9.1f} ms"
              f"  again {again * 1000:9.1f} ms")
    started = time.monotonic()
    done(store.message_meta("alice", "INBOX", range(1, 1001)))
    print(f"{name:8} {'meta 1000':11} {'':12}  {(time.monotonic() - started) * 1000:15.1f} ms")
    done(store.close())


def run():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages per backend")
    parser.add_argument("--backends", default="memory,sqlite,maildir")
    default_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    parser.add_argument("--dir", default=default_dir, help="where to create the stores")
    options = parser.parse_args()
    for name in options.backends.split(","):
        directory = tempfile.mkdtemp(prefix=f"bench-search-{name}-", dir=options.dir)
        try:
            run_backend(name, directory, options.count)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    run()
