"""
A small SMTP server for the reliability tests: it accepts every message on 127.0.0.1 and
keeps the complete ones (those whose DATA ended with the lone dot) with their envelope.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


class _Session(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")
        self.wfile.flush()

    def handle(self):
        try:
            self._converse(self.server.sink)
        except OSError:
            pass  # the client went away (the server under test was killed)

    def _converse(self, sink):
        self.reply(b"220 sink.test ESMTP")
        mail_from, recipients = "", []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply(b"250 sink.test")
            elif verb == b"MAIL":
                mail_from, recipients = line.split(b":", 1)[1].strip().decode(), []
                self.reply(b"250 2.1.0 ok")
            elif verb == b"RCPT":
                recipients.append(line.split(b":", 1)[1].strip().decode())
                self.reply(b"250 2.1.5 ok")
            elif verb == b"DATA":
                self.reply(b"354 go ahead")
                data = self._data()
                if data is None:
                    return
                sink.add(Received(mail_from, tuple(recipients), data))
                self.reply(b"250 2.0.0 kept")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 bye")
                return
            else:
                self.reply(b"250 ok")

    def _data(self) -> bytes | None:
        """The message up to the lone dot, dots unstuffed; None if the client went away."""
        lines = []
        while True:
            line = self.rfile.readline(1 << 20)
            if not line:
                return None
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SMTPSink:
    """Accepts mail on ``port`` (bound to 127.0.0.1 port 0) until ``close()``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Session)
        self._server.sink = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, message: Received) -> None:
        with self._lock:
            self._received.append(message)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
