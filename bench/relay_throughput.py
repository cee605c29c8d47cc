"""
Messages per second through the outbound queue to a smart host (Postfix's smtp-sink).

Two figures from one run:

- drain:  N messages already in the queue when the server starts; time until the queue is
          empty (every message accepted by smtp-sink);
- submit: N messages sent by SMTP submission clients to a running server, from the first
          MAIL to the moment the queue is empty again (accept, fsync, relay).

    python3 bench/relay_throughput.py [--messages 2000] [--size 5000] [--clients 8]
                                      [--concurrency 20] [--store sqlite]

Needs /usr/sbin/smtp-sink (Debian package postfix).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mailsuite.interfaces import Envelope  # noqa: E402
from mailsuite.smtp.queue import OutboundQueue  # noqa: E402
from mailsuite.testing.server import RunningSuite, free_port  # noqa: E402


def message(index: int, size: int) -> bytes:
    head = (f"From: alice@example.test\r\nTo: r{index}@sink.test\r\n"
            f"Subject: bench {index}\r\nMessage-ID: <{index}@bench.test>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def queued(folder: str) -> int:
    path = os.path.join(folder, "var", "queue")
    try:
        return sum(1 for name in os.listdir(path) if name.endswith(".json"))
    except FileNotFoundError:
        return 0


def wait_empty(folder: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while queued(folder):
        if time.monotonic() > deadline:
            raise SystemExit(f"the queue still holds {queued(folder)} entries after {timeout} s")
        time.sleep(0.02)
    return time.monotonic()


def fill_queue(folder: str, count: int, size: int) -> None:
    from twisted.internet import defer

    queue = OutboundQueue(os.path.join(folder, "var", "queue"),
                          runner=lambda f, *a, **k: defer.maybeDeferred(f, *a, **k))
    for index in range(count):
        d = queue.enqueue(Envelope(mail_from="alice@example.test"),
                          [f"r{index}@sink.test"], message(index, size))
        failures = []
        d.addErrback(failures.append)
        if failures:
            failures[0].raiseException()


def submit(port: int, first: int, count: int, size: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.login("alice@example.test", "alice-password")
        for index in range(first, first + count):
            client.sendmail("alice@example.test", [f"r{index}@sink.test"], message(index, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--store", default="sqlite")
    args = parser.parse_args()
    if not shutil.which("smtp-sink"):
        raise SystemExit("smtp-sink not found (apt-get install postfix)")
    work = tempfile.mkdtemp(prefix="mailsuite-relay-bench-")
    sink_port = free_port("127.0.0.1")
    sink = subprocess.Popen(["smtp-sink", "-u", "root", "-c", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = {"relay": {"relayhost": f"127.0.0.1:{sink_port}", "tls": "none",
                       "concurrency": args.concurrency}}
    try:
        node = RunningSuite(os.path.join(work, "drain"), store=args.store, extra=extra)
        fill_queue(node.folder, args.messages, args.size)
        started = time.monotonic()
        node.start()
        drained = wait_empty(node.folder, 600)
        node.stop()
        drain_rate = args.messages / (drained - started)

        node = RunningSuite(os.path.join(work, "submit"), store=args.store, extra=extra)
        node.start()
        per_client = args.messages // args.clients
        threads = [threading.Thread(target=submit, args=(node.port("submission"),
                                                          i * per_client, per_client, args.size))
                   for i in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = time.monotonic()
        finished = wait_empty(node.folder, 600)
        node.stop()
        total = per_client * args.clients
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"relay to smtp-sink, {args.size}-byte messages, store {args.store}, "
          f"relay concurrency {args.concurrency}")
    print(f"  drain  {args.messages:6d} queued messages      {drain_rate:8.1f} msg/s "
          f"(start-up included)")
    print(f"  submit {total:6d} messages, {args.clients} clients  "
          f"{total / (finished - started):8.1f} msg/s end to end "
          f"(accepting alone {total / (accepted - started):.1f} msg/s)")


if __name__ == "__main__":
    main()
