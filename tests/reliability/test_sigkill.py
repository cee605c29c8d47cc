"""
SIGKILL at random moments under load, on the real server, for each store backend.

Seven clients run at once: mail from outside to local users (some to an unknown address, so
refused), submissions to a remote domain routed to an SMTP sink (some also to a local user),
IMAP APPEND (with flags, a STORE \\Flagged, and now and then to a missing mailbox, so
refused) and STORE \\Deleted + EXPUNGE.  At a random moment the server gets SIGKILL; the
store check may then find only what a crash leaves (leftovers of interrupted writes, files
not yet indexed), `mailsuite check --store --repair` repairs it, and after a restart every
acknowledged message is there once, intact, with its UID and flags; nothing refused or
expunged is; nothing unacknowledged is there damaged or twice.  Relayed mail reaches the
sink at least once.

RELIABILITY_ROUNDS (default 3) sets the kills per backend; RELIABILITY_SEED the random seed.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from mailsuite.config import load_config
from mailsuite.store.check import CRASH_KINDS, check_store
from mailsuite.testing.server import RunningSuite
from tests.reliability.sink import SMTPSink
from tests.reliability.workload import (
    ACKED,
    REMOTE_DOMAIN,
    Ledger,
    create_mailboxes,
    missing_relayed,
    read_mailboxes,
    start_workers,
    verify_mailboxes,
    verify_relayed,
)

ROUNDS = int(os.environ.get("RELIABILITY_ROUNDS", "3"))
SEED = int(os.environ.get("RELIABILITY_SEED", "20240611"))
# Load runs this long (seconds, drawn per round) before the kill.
LOAD_SECONDS = (0.3, 1.5)
RELAY_WAIT_SECONDS = 60


@pytest.fixture
def sink():
    server = SMTPSink()
    yield server
    server.close()


def _suite(tmp_path, backend, sink) -> RunningSuite:
    return RunningSuite(str(tmp_path / backend), store=backend, extra={
        "relay": {"routes": {REMOTE_DOMAIN: f"127.0.0.1:{sink.port}"}, "tls": "none",
                  "retry_min": "1s", "retry_max": "2s"},
    })


@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_sigkill_at_random_moments_loses_nothing_acknowledged(backend, tmp_path, sink):
    """Acknowledged mail survives SIGKILL at random points; the store checks clean after
    the repair; relayed mail reaches its destination at least once."""
    rng = random.Random(f"{SEED}-{backend}")
    suite = _suite(tmp_path, backend, sink)
    store_path = load_config(suite.config_path).store_path
    ledger = Ledger()
    try:
        suite.start()
        create_mailboxes(suite)
        for number in range(ROUNDS):
            context = f"seed {SEED}, {backend}, round {number}"
            stop = threading.Event()
            workers = start_workers(suite, ledger, stop, rng, f"{backend}{number}")
            time.sleep(rng.uniform(*LOAD_SECONDS))
            suite.kill()
            stop.set()
            for worker in workers:
                worker.join(60)
            assert not any(w.is_alive() for w in workers), context
            errors = [f"{w.name}: {w.error!r}" for w in workers if w.error is not None]
            assert not errors, f"{context}: {errors}"

            found = check_store(backend, store_path).found
            assert {p.kind for p in found} <= CRASH_KINDS[backend], \
                f"{context}: {[p.line() for p in found]}"
            repaired = suite.admin("check", "--store", "--repair")
            assert repaired.returncode == 0, f"{context}: {repaired.stdout}{repaired.stderr}"
            checked = suite.admin("check", "--store")
            assert checked.returncode == 0, f"{context}: {checked.stdout}{checked.stderr}"
            assert "no problems" in checked.stdout

            suite.start()
            failures = verify_mailboxes(ledger, read_mailboxes(suite),
                                        recovers_to_inbox=backend == "sqlite")
            assert not failures, f"{context}:\n" + "\n".join(failures[:20])

        deadline = time.monotonic() + RELAY_WAIT_SECONDS
        while missing_relayed(ledger, sink.received) and time.monotonic() < deadline:
            time.sleep(0.2)
        failures = verify_relayed(ledger, sink.received)
        assert not failures, f"seed {SEED}, {backend}:\n" + "\n".join(failures[:20]) + \
            f"\n{suite.log()}"

        # A graceful stop leaves nothing to repair.
        suite.stop()
        assert check_store(backend, store_path).found == []
    finally:
        suite.kill()

    # The load did what it is meant to: every kind of client got acknowledgements.
    acked = [c for c in ledger.copies.values() if c.state == ACKED]
    assert {c.via for c in acked} == {"smtp", "imap"}
    assert any(c.expunge == ACKED for c in ledger.copies.values())
    assert any(c.flagged == ACKED for c in ledger.copies.values())
    assert ledger.refused
    assert any(state == ACKED for state in ledger.relayed.values())
