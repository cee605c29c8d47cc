"""
Soak: many concurrent mixed clients against one server for a fixed time, on loopback.

Each client loops over one kind of session until the time is up:

- smtp:  AUTH PLAIN on submission, one message to a local user, QUIT;
- idle:  IMAP LOGIN, SELECT INBOX, IDLE for a few seconds, DONE, FETCH 1:* (FLAGS), LOGOUT;
- fetch: IMAP LOGIN, SELECT, FETCH 1:* (FLAGS), FETCH of one whole message, and when the
         mailbox holds more than 200 messages, STORE \\Deleted on the oldest 100 and EXPUNGE
         (so the data stays the same size and memory growth would mean a leak), LOGOUT;
- pop3:  USER/PASS, STAT, LIST, QUIT;
- ldap:  anonymous white-pages search (cn=*x*), unbind.

Printed: sessions and operations per second per kind, p50/p99 latency of a session, errors,
the server's resident memory every minute (peak and first-minute vs last-minute, to show
whether it grows), all from one run.

    python3 bench/soak.py [--clients 500] [--duration 600] [--store sqlite]

``run_soak()`` is also what the short soak in the integration tests calls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mailsuite.testing.server import DEFAULT_LISTEN, RunningSuite  # noqa: E402

USERS = {"alice@example.test": "alice-password", "bob@example.test": "bob-password"}
KINDS = ("smtp", "idle", "fetch", "pop3", "ldap")
MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: soak\r\n\r\n"
           + b"soak test body line\r\n" * 40)


@dataclass
class Tally:
    sessions: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last_error: str = ""


class Lines:
    """Line-oriented reading over an asyncio stream."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def line(self) -> bytes:
        data = await self.reader.readline()
        if not data:
            raise ConnectionError("connection closed")
        return data

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def _open(port: int) -> Lines:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Lines(reader, writer)


async def _smtp_reply(c: Lines, expect: str) -> None:
    while True:
        line = await c.line()
        if line[3:4] != b"-":
            if not line.startswith(expect.encode()):
                raise RuntimeError(f"SMTP: {line!r}")
            return


async def smtp_session(ports) -> None:
    c = await _open(ports["submission"])
    await _smtp_reply(c, "220")
    await c.send(b"EHLO soak.test\r\n")
    await _smtp_reply(c, "250")
    token = base64.b64encode(b"\0alice@example.test\0alice-password")
    await c.send(b"AUTH PLAIN " + token + b"\r\n")
    await _smtp_reply(c, "235")
    await c.send(b"MAIL FROM:<alice@example.test>\r\n")
    await _smtp_reply(c, "250")
    await c.send(b"RCPT TO:<bob@example.test>\r\n")
    await _smtp_reply(c, "250")
    await c.send(b"DATA\r\n")
    await _smtp_reply(c, "354")
    await c.send(MESSAGE + b".\r\n")
    await _smtp_reply(c, "250")
    await c.send(b"QUIT\r\n")
    await _smtp_reply(c, "221")
    await c.close()


async def _imap_tagged(c: Lines, tag: bytes, *, tolerate: bytes = b"") -> list[bytes]:
    seen = []
    while True:
        line = await c.line()
        seen.append(line)
        if line.endswith(b"}\r\n"):
            size = int(line[line.rindex(b"{") + 1:-3])
            seen.append(await c.reader.readexactly(size))
            continue
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK") and not (
                    tolerate and line.startswith(tag + b" NO " + tolerate)):
                raise RuntimeError(f"IMAP: {line!r}")
            return seen


async def _imap_login(ports, user="bob@example.test") -> Lines:
    c = await _open(ports["imap"])
    await c.line()
    await c.send(b"a LOGIN " + user.encode() + b" " + USERS[user].encode() + b"\r\n")
    await _imap_tagged(c, b"a")
    await c.send(b"b SELECT INBOX\r\n")
    await _imap_tagged(c, b"b")
    return c


async def idle_session(ports, idle_seconds: float) -> None:
    c = await _imap_login(ports)
    await c.send(b"c IDLE\r\n")
    line = await c.line()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE: {line!r}")
    deadline = time.monotonic() + idle_seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(c.line(), left)  # EXISTS/EXPUNGE updates
        except asyncio.TimeoutError:
            break
    await c.send(b"DONE\r\n")
    await _imap_tagged(c, b"c")
    await c.send(b"d FETCH 1:* (FLAGS)\r\n")
    await _imap_tagged(c, b"d")
    await c.send(b"e LOGOUT\r\n")
    await _imap_tagged(c, b"e")
    await c.close()


async def fetch_session(ports) -> None:
    c = await _imap_login(ports)
    await c.send(b"c FETCH 1:* (FLAGS)\r\n")
    lines = await _imap_tagged(c, b"c")
    count = sum(1 for line in lines if line.startswith(b"* ") and b" FETCH " in line)
    if count:
        await c.send(b"d FETCH 1 (BODY.PEEK[])\r\n")
        # Another session may have expunged it meanwhile (RFC 9051 §7.1: EXPUNGEISSUED).
        await _imap_tagged(c, b"d", tolerate=b"[EXPUNGEISSUED]")
    if count > 200:
        await c.send(b"f STORE 1:100 +FLAGS.SILENT (\\Deleted)\r\n")
        await _imap_tagged(c, b"f")
        await c.send(b"g EXPUNGE\r\n")
        await _imap_tagged(c, b"g")
    await c.send(b"e LOGOUT\r\n")
    await _imap_tagged(c, b"e")
    await c.close()


async def pop3_session(ports) -> None:
    c = await _open(ports["pop3"])
    for command in (None, b"USER alice@example.test", b"PASS alice-password", b"STAT"):
        if command:
            await c.send(command + b"\r\n")
        line = await c.line()
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"POP3: {line!r}")
    await c.send(b"LIST\r\n")
    line = await c.line()
    if not line.startswith(b"+OK"):
        raise RuntimeError(f"POP3: {line!r}")
    while (await c.line()) != b".\r\n":
        pass
    await c.send(b"QUIT\r\n")
    await c.line()
    await c.close()


async def ldap_session(ports) -> None:
    from bench import ldap_wire as w

    c = await _open(ports["ldap"])
    request = w.message(1, w.search_request(
        "ou=people,dc=example,dc=test",
        w.f_or(w.f_contains("cn", "li"), w.f_contains("mail", "li")), ["cn", "mail"]))
    await c.send(request)
    # Read replies until SearchResultDone (tag 0x65 after the message id).
    buffer = b""
    while True:
        chunk = await c.reader.read(65536)
        if not chunk:
            raise ConnectionError("LDAP connection closed")
        buffer += chunk
        if b"\x65" in buffer and _search_done(buffer):
            break
    await c.send(w.message(2, bytes([w.UNBIND_REQUEST, 0])))
    await c.close()


def _search_done(buffer: bytes) -> bool:
    at = 0
    while at + 2 <= len(buffer):
        length = buffer[at + 1]
        header = 2
        if length & 0x80:
            count = length & 0x7F
            if at + 2 + count > len(buffer):
                return False
            length = int.from_bytes(buffer[at + 2:at + 2 + count], "big")
            header += count
        end = at + header + length
        if end > len(buffer):
            return False
        body = buffer[at + header:end]
        # messageID INTEGER, then the protocolOp tag
        op_at = 2 + body[1]
        if body[op_at] == 0x65:
            if body[op_at + 2:op_at + 5][:1] == b"\x0a" and body[op_at + 4] != 0:
                raise RuntimeError(f"LDAP search result code {body[op_at + 4]}")
            return True
        at = end
    return False


SESSIONS = {
    "smtp": lambda ports, o: smtp_session(ports),
    "idle": lambda ports, o: idle_session(ports, o["idle_seconds"]),
    "fetch": lambda ports, o: fetch_session(ports),
    "pop3": lambda ports, o: pop3_session(ports),
    "ldap": lambda ports, o: ldap_session(ports),
}


async def client(kind, ports, until, tally: Tally, options) -> None:
    rng = random.Random()
    await asyncio.sleep(rng.random() * options["ramp"])
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            await asyncio.wait_for(SESSIONS[kind](ports, options), options["session_timeout"])
        except Exception as e:
            tally.errors += 1
            tally.last_error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.5)
            continue
        tally.sessions += 1
        tally.latencies.append(time.monotonic() - started)
        await asyncio.sleep(options["pause"] * rng.random())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _run(ports, pid, clients, duration, options):
    until = time.monotonic() + duration
    tallies = {kind: Tally() for kind in KINDS}
    tasks = [asyncio.create_task(client(KINDS[i % len(KINDS)], ports, until,
                                        tallies[KINDS[i % len(KINDS)]], options))
             for i in range(clients)]
    memory = []
    while time.monotonic() < until:
        memory.append((time.monotonic(), rss_kib(pid)))
        await asyncio.sleep(min(options["sample"], max(0.05, until - time.monotonic())))
    await asyncio.gather(*tasks)
    memory.append((time.monotonic(), rss_kib(pid)))
    return tallies, memory


def run_soak(folder: str, *, clients: int, duration: float, store: str = "sqlite",
             idle_seconds: float = 5.0, sample: float = 5.0, pause: float = 0.2) -> dict:
    """Start a server in ``folder``, soak it, stop it; return the figures."""
    listen = dict(DEFAULT_LISTEN)
    suite = RunningSuite(folder, store=store, listen=listen, extra={
        "security": {"max_connections_per_ip": max(clients * 2, 100)},
    }).start()
    try:
        ports = {name: suite.port(name) for name in ("submission", "imap", "pop3", "ldap")}
        options = {"idle_seconds": idle_seconds, "ramp": min(5.0, duration / 4),
                   "pause": pause, "session_timeout": 60.0, "sample": sample}
        started = time.monotonic()
        tallies, memory = asyncio.run(_run(ports, suite.process.pid, clients, duration, options))
        elapsed = time.monotonic() - started
    finally:
        suite.stop()
    return {"tallies": tallies, "memory": memory, "elapsed": elapsed, "clients": clients,
            "pause": pause}


def report(result: dict) -> None:
    elapsed = result["elapsed"]
    print(f"soak: {result['clients']} clients for {elapsed:.0f} s, "
          f"pause up to {result['pause']} s between sessions")
    print(f"  {'kind':<6} {'sessions':>9} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for kind, tally in result["tallies"].items():
        lat = sorted(tally.latencies)
        p50 = statistics.median(lat) * 1000 if lat else 0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0
        print(f"  {kind:<6} {tally.sessions:>9} {tally.sessions / elapsed:>8.1f} "
              f"{p50:>8.1f} {p99:>8.1f} {tally.errors:>7}"
              + (f"   last: {tally.last_error}" if tally.errors else ""))
    memory = result["memory"]
    peak = max(kib for _, kib in memory)
    start = memory[0][0]
    window = max(60.0, elapsed / 10)
    first = [kib for t, kib in memory if t - start <= window]
    last = [kib for t, kib in memory if memory[-1][0] - t <= window]
    minutes = {}
    for t, kib in memory:
        minutes.setdefault(int((t - start) // 60), []).append(kib)
    print("  server RSS by minute (MiB): " + " ".join(
        f"{max(values) / 1024:.0f}" for _, values in sorted(minutes.items())))
    print(f"  server RSS: peak {peak / 1024:.0f} MiB; mean over the first {window:.0f} s "
          f"{statistics.mean(first) / 1024:.0f} MiB, over the last {window:.0f} s "
          f"{statistics.mean(last) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--store", default="sqlite")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--pause", type=float, default=2.0,
                        help="each client waits up to this long between sessions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailsuite-soak-") as folder:
        result = run_soak(os.path.join(folder, "suite"), clients=args.clients,
                          duration=args.duration, store=args.store,
                          idle_seconds=args.idle_seconds, sample=10.0, pause=args.pause)
    report(result)


if __name__ == "__main__":
    main()
