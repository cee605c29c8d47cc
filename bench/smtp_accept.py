"""
Messages per second accepted and stored by the SMTP MX listener, with N concurrent senders
sending 5 KB messages, for each store backend; and the same load against Postfix's smtp-sink
(which accepts and discards: the ceiling of this machine and client) in the same run.

    python3 bench/smtp_accept.py [--messages 2000] [--senders 1,8,32]

Prints one line per (target, senders): messages, seconds, messages/second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsuite.testing.server import RunningSuite  # noqa: E402

BODY = ("Subject: benchmark\r\nFrom: sender@remote.test\r\nTo: alice@example.test\r\n\r\n"
        + ("x" * 76 + "\r\n") * 64).encode()  # about 5 KB


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def sender(port: int, count: int, results: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.remote.test\r\n")
    await _reply(reader)
    for _ in range(count):
        # RFC 2920: MAIL, RCPT and DATA pipelined, as real senders do.
        writer.write(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for expected in (b"250", b"250", b"354"):
            line = await _reply(reader)
            if not line.startswith(expected):
                raise RuntimeError(f"unexpected reply {line!r}")
        writer.write(BODY + b".\r\n")
        line = await _reply(reader)
        if not line.startswith(b"250"):
            raise RuntimeError(f"message refused: {line!r}")
        results.append(1)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


async def load(port: int, messages: int, senders: int) -> float:
    per_sender = max(1, messages // senders)
    results: list = []
    started = time.perf_counter()
    await asyncio.gather(*(sender(port, per_sender, results) for _ in range(senders)))
    elapsed = time.perf_counter() - started
    return len(results), elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_smtp_sink(port: int) -> subprocess.Popen | None:
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if binary is None:
        return None
    # smtp-sink refuses to run as root without a user to switch to.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([binary, *user, "-c", f"127.0.0.1:{port}", "1024"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


def report(target: str, senders: int, count: int, elapsed: float) -> None:
    print(f"{target:<18} senders={senders:<3} messages={count:<6} seconds={elapsed:7.2f} "
          f"msg/s={count / elapsed:8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", default="1,8,32")
    args = parser.parse_args()
    levels = [int(n) for n in args.senders.split(",")]

    for backend in ("sqlite", "maildir"):
        with tempfile.TemporaryDirectory() as folder:
            suite = RunningSuite(folder, store=backend,
                                 listen={"smtp": "tcp:port=0:interface=127.0.0.1"})
            suite.start()
            try:
                for senders in levels:
                    count, elapsed = asyncio.run(load(suite.port("smtp"), args.messages, senders))
                    report(f"mailsuite/{backend}", senders, count, elapsed)
            finally:
                suite.stop()

    port = free_port()
    sink = run_smtp_sink(port)
    if sink is None:
        print("smtp-sink            not found (Debian package postfix); no ceiling measured")
        return
    try:
        for senders in levels:
            count, elapsed = asyncio.run(load(port, args.messages, senders))
            report("smtp-sink", senders, count, elapsed)
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
