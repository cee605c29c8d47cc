"""
The SASL exchanges SMTP AUTH offers (RFC 4954): PLAIN (RFC 4616) and LOGIN.  Pure: client
responses (still base64) in, the next challenge or the credentials out, SASLError when a
response is malformed, AuthCancelled when the client sends "*".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mailsuite.auth import SASLError, decode_base64, parse_plain

MECHANISMS = ("PLAIN", "LOGIN")


class AuthCancelled(Exception):
    """The client answered a challenge with "*" (RFC 4954 §4)."""


@dataclass(frozen=True)
class Challenge:
    data: bytes

    def line(self) -> bytes:
        return b"334 " + base64.b64encode(self.data) + b"\r\n"


@dataclass(frozen=True)
class Credentials:
    authzid: str
    authcid: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(authzid={self.authzid!r}, authcid={self.authcid!r})"


class SASLExchange:
    """One AUTH exchange.  ``start`` and ``respond`` return a Challenge or Credentials."""

    def __init__(self, mechanism: str):
        if mechanism not in MECHANISMS:
            raise ValueError(f"unsupported mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Challenge | Credentials:
        if initial is None:
            return Challenge(b"") if self.mechanism == "PLAIN" else Challenge(b"Username:")
        # RFC 4954 §4: "=" is an initial response of zero length.
        return self.respond(b"" if initial == b"=" else initial, initial=True)

    def respond(self, response: bytes, *, initial: bool = False) -> Challenge | Credentials:
        if not initial and response.strip() == b"*":
            raise AuthCancelled()
        decoded = decode_base64(response) if response else b""
        if self.mechanism == "PLAIN":
            authzid, authcid, password = parse_plain(decoded)
            return Credentials(authzid, authcid, password)
        text = _utf8(decoded)
        if self._username is None:
            if not text:
                raise SASLError("LOGIN needs a user name")
            self._username = text
            return Challenge(b"Password:")
        if not text:
            raise SASLError("LOGIN needs a password")
        return Credentials("", self._username, text)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SASLError("credentials are not UTF-8") from e
