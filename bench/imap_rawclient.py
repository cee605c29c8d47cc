"""
A small blocking IMAP client for benchmarks: sends one tagged command and reads until its
tagged completion, skipping literals without parsing them, so the client costs the same
against every server and stays cheap next to the server's work.
"""

from __future__ import annotations

import re
import socket
import time

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class IMAPError(Exception):
    """The server answered NO or BAD, or closed the connection."""


class Reply:
    """The untagged lines (literal bytes left out) and the tagged status of one command."""

    def __init__(self, status: str, text: bytes, lines: list[bytes], received: int):
        self.status = status
        self.text = text
        self.lines = lines
        self.received = received

    @property
    def ok(self) -> bool:
        return self.status == "OK"


class RawIMAP:
    def __init__(self, host: str, port: int, *, timeout: float = 600.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.counter = 0
        self.greeting = self._line()

    def _fill(self):
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise IMAPError("connection closed")
        self.buffer += chunk

    def _line(self) -> bytes:
        start = 0
        while True:
            end = self.buffer.find(b"\r\n", start)
            if end >= 0:
                line, self.buffer = self.buffer[:end + 2], self.buffer[end + 2:]
                return line
            start = max(0, len(self.buffer) - 1)
            self._fill()

    def _skip(self, count: int):
        while len(self.buffer) < count:
            count -= len(self.buffer)
            self.buffer = b""
            self._fill()
        self.buffer = self.buffer[count:]

    def command(self, text: str | bytes, *, literal: bytes | None = None,
                keep_lines: bool = True) -> Reply:
        """Send ``TAG text`` (and a synchronising literal if given) and read the whole reply."""
        self.counter += 1
        tag = b"b%d" % self.counter
        data = text.encode() if isinstance(text, str) else text
        if literal is None:
            self.sock.sendall(tag + b" " + data + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + data + b" {%d}\r\n" % len(literal))
            line = self._line()
            if not line.startswith(b"+"):
                return self._finish(tag, line, [], len(line))
            self.sock.sendall(literal + b"\r\n")
        lines: list[bytes] = []
        received = 0
        while True:
            line = self._line()
            received += len(line)
            if line.startswith(tag + b" "):
                return self._finish(tag, line, lines, received)
            match = _LITERAL.search(line)
            if match:
                size = int(match.group(1))
                received += size
                self._skip(size)
            if keep_lines:
                lines.append(line)

    @staticmethod
    def _finish(tag, line, lines, received) -> Reply:
        status, _, text = line[len(tag) + 1:].rstrip(b"\r\n").partition(b" ")
        return Reply(status.decode("ascii", "replace").upper(), text, lines, received)

    def check(self, text, **kwargs) -> Reply:
        reply = self.command(text, **kwargs)
        if not reply.ok:
            raise IMAPError(f"{text!r}: {reply.status} {reply.text!r}")
        return reply

    def timed(self, text, **kwargs) -> tuple[float, Reply]:
        start = time.perf_counter()
        reply = self.command(text, **kwargs)
        return time.perf_counter() - start, reply

    def login(self, user: str, password: str) -> Reply:
        return self.check(f'LOGIN "{user}" "{password}"')

    def close(self):
        try:
            self.command("LOGOUT", keep_lines=False)
        except (OSError, IMAPError):
            pass
        self.sock.close()
