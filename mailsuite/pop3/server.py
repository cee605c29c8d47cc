"""
mailsuite's POP3 server (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL PLAIN
(RFC 5034) and response codes (RFC 3206), serving each account's INBOX from the IMailStore.

Input is cut into lines here and parsed by mailsuite.pop3.command; one command runs at a
time, and lines that arrive meanwhile wait in the buffer, so pipelined commands (RFC 2449
§6.6) are answered in order even though the store answers with Deferreds.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.auth import SASLError, decode_base64, parse_plain
from mailsuite.interfaces import IMailAccount, NoSuchMessage
from mailsuite.pop3.command import (
    CommandError,
    parse_command,
    parse_message_number,
    parse_number,
)
from mailsuite.pop3.maildrop import Entry, Maildrop, MessageNumberError
from mailsuite.pop3.wire import top_slice, wire_chunks, wire_size
from mailsuite.session import IdleTimer, SessionFactory

log = Logger()

INBOX = "INBOX"

OK = "+OK"
ERR = "-ERR"
CRLF = b"\r\n"
# RFC 5034 §4: a server challenge; PLAIN's is empty.
EMPTY_CHALLENGE = b"+ \r\n"
# RFC 5034 §4: the client cancels the exchange with "*".
SASL_CANCEL = b"*"

# Response codes: RFC 2449 §8 and RFC 3206.
AUTH = "[AUTH]"
SYS_TEMP = "[SYS/TEMP]"

SASL_MECHANISMS = ("PLAIN",)

# Reading from the client stops while this much input waits behind a running command.
MAX_PENDING_INPUT = 64 * 1024

_LINE_TOO_LONG = object()


@dataclass(frozen=True)
class POP3Limits:
    max_line_length: int = 512  # RFC 1939 / RFC 2449 §4: 255 octets per argument, keep some slack
    max_errors: int = 10
    idle_timeout: float = 600.0  # RFC 1939 §3: at least 10 minutes


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


@implementer(IPullProducer)
class _ChunkSender:
    """Writes a multi-line response chunk by chunk, as fast as the transport takes it."""

    def __init__(self, transport, chunks: Iterator[bytes]):
        self._transport = transport
        self._chunks = chunks
        self._done = False
        self.deferred: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        self._transport.registerProducer(self, False)
        return self.deferred

    def resumeProducing(self) -> None:
        if self._done:
            return
        chunk = next(self._chunks, None)
        if chunk is None:
            self._finish()
            self.deferred.callback(None)
        else:
            self._transport.write(chunk)

    def stopProducing(self) -> None:
        # The transport is going away.
        if not self._done:
            self._done = True
            self._chunks = iter(())
            self.deferred.errback(error.ConnectionLost())

    def cancel(self, *, unregister: bool = True) -> None:
        """Stop sending; ``unregister=False`` once the transport itself is gone."""
        if self._done:
            return
        if unregister:
            self._finish()
        else:
            self._done = True
            self._chunks = iter(())
        self.deferred.errback(error.ConnectionDone())

    def _finish(self) -> None:
        self._done = True
        self._chunks = iter(())
        self._transport.unregisterProducer()


class POP3Server(IdleTimer, protocol.Protocol):
    """One POP3 session.  Built by POP3Factory."""

    def __init__(
        self,
        *,
        hostname: str,
        portal,
        tls,
        implicit_tls: bool,
        allow_plaintext_auth: bool,
        limits: POP3Limits,
        clock,
    ):
        self.hostname = hostname
        self.portal = portal
        self.tls = tls
        self.allow_plaintext_auth = allow_plaintext_auth
        self.limits = limits
        self.clock = clock
        self.state = State.AUTHORIZATION
        self.secure = implicit_tls
        self._buffer = bytearray()
        self._discarding = False
        self._busy = False
        self._looping = False
        self._paused = False
        self._closing = False
        self._lost = False
        self._disconnecting = False
        self._errors = 0
        self._timer = None
        self._user: str | None = None
        self._sasl_pending = False
        self._avatar = None
        self._logout: Callable[[], None] | None = None
        self._maildrop: Maildrop | None = None
        self._sender: _ChunkSender | None = None
        self._handlers = {
            State.AUTHORIZATION: {
                "CAPA": self._do_capa,
                "USER": self._do_user,
                "PASS": self._do_pass,
                "AUTH": self._do_auth,
                "STLS": self._do_stls,
                "QUIT": self._do_quit,
            },
            State.TRANSACTION: {
                "STAT": self._do_stat,
                "LIST": self._do_list,
                "RETR": self._do_retr,
                "DELE": self._do_dele,
                "NOOP": self._do_noop,
                "RSET": self._do_rset,
                "TOP": self._do_top,
                "UIDL": self._do_uidl,
                "CAPA": self._do_capa,
                "QUIT": self._do_quit,
            },
            State.UPDATE: {},
        }

    # ------------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        self._reset_timer()
        self._reply(True, f"{self.hostname} POP3 ready")

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._reset_timer()
        self._buffer += data
        self._process()
        if self._busy and not self._paused and len(self._buffer) > MAX_PENDING_INPUT:
            self._paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason=None) -> None:
        self._lost = True
        self._closing = True
        self._disconnecting = True
        self._buffer.clear()
        self._cancel_timer()
        if self._sender is not None:
            self._sender.cancel(unregister=False)
        # RFC 1939 §6: only QUIT enters the UPDATE state; deletion marks are dropped.
        self._maildrop = None
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def _close(self) -> None:
        if self._disconnecting:
            return
        self._disconnecting = True
        self._closing = True
        self._buffer.clear()
        self._cancel_timer()
        if self._sender is not None:
            self._sender.cancel()
        self.transport.loseConnection()

    # RFC 1939 §3: an idle session may be closed without a response (timer: IdleTimer).
    def _timed_out(self) -> None:
        self._timer = None
        log.info("POP3 session idle for {timeout}s, closing", timeout=self.limits.idle_timeout)
        self._close()

    # ------------------------------------------------------------------ input

    def _process(self) -> None:
        if self._looping:
            return
        self._looping = True
        try:
            while not self._busy and not self._closing:
                line = self._next_line()
                if line is None:
                    break
                result = self._handle_line(line)
                if result is not None:
                    self._busy = True
                    result.addBoth(self._finished)
        finally:
            self._looping = False

    def _finished(self, _result) -> None:
        self._busy = False
        if self._closing:
            return
        self._reset_timer()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._process()

    def _next_line(self):
        """The next complete line, _LINE_TOO_LONG, or None when more input is needed."""
        newline = self._buffer.find(b"\n")
        if self._discarding:
            if newline < 0:
                self._buffer.clear()
                return None
            del self._buffer[: newline + 1]
            self._discarding = False
            return _LINE_TOO_LONG
        if newline < 0:
            # Keep memory bounded: a line that cannot fit is dropped up to its end.
            if len(self._buffer) > self.limits.max_line_length + 1:
                self._buffer.clear()
                self._discarding = True
            return None
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.limits.max_line_length:
            return _LINE_TOO_LONG
        return line

    def _handle_line(self, line) -> defer.Deferred | None:
        if line is _LINE_TOO_LONG:
            # An over-long SASL response ends the exchange: the next line is a command again.
            self._sasl_pending = False
            self._error("Line too long")
            return None
        try:
            if self._sasl_pending:
                self._sasl_pending = False
                return self._sasl_response(line)
            command = parse_command(line)
            handler = self._handlers[self.state].get(command.name)
            if handler is None:
                self._error("Command not valid in this state")
                return None
            return handler(*command.args)
        except (CommandError, MessageNumberError) as e:
            self._error(str(e))
        except Exception:
            log.failure("POP3 command failed")
            self._reply(False, "Internal error", code=SYS_TEMP)
        return None

    # ------------------------------------------------------------------ output

    def _write(self, data: bytes) -> None:
        if not self._lost:
            self.transport.write(data)

    def _reply(self, ok: bool, text: str = "", *, code: str | None = None) -> None:
        parts = [OK if ok else ERR]
        if code:
            parts.append(code)
        if text:
            parts.append(text)
        self._write(" ".join(parts).encode("utf-8") + CRLF)

    def _multiline(self, text: str, lines: list[str]) -> None:
        out = [f"{OK} {text}".encode() + CRLF]
        out.extend(line.encode("ascii") + CRLF for line in lines)
        out.append(b"." + CRLF)
        self._write(b"".join(out))

    def _error(self, text: str, *, code: str | None = None) -> None:
        self._reply(False, text, code=code)
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            log.info("POP3 session closed after {errors} errors", errors=self._errors)
            self._close()

    def _spawn(self, coroutine) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(coroutine).addErrback(self._failed)

    def _failed(self, failure) -> None:
        if failure.check(error.ConnectionDone, error.ConnectionLost):
            return
        if self._closing:
            log.failure("POP3 store operation failed while closing", failure)
            return
        log.failure("POP3 store operation failed", failure)
        self._reply(False, "Temporary failure, try again later", code=SYS_TEMP)

    async def _send(self, chunks: Iterator[bytes]) -> None:
        first = next(chunks)
        second = next(chunks, None)
        if second is None:
            self._write(first)
            return
        self._sender = _ChunkSender(self.transport, itertools.chain((first, second), chunks))
        try:
            await self._sender.start()
        finally:
            self._sender = None

    # ------------------------------------------------------------------ AUTHORIZATION

    def _login_allowed(self) -> bool:
        # RFC 2595 §2.2: a server may refuse plaintext passwords outside TLS.
        return self.state is State.AUTHORIZATION and (self.secure or self.allow_plaintext_auth)

    def _refuse_plaintext(self) -> None:
        self._error("TLS required", code=AUTH)

    def _do_capa(self) -> None:
        # RFC 2449 §5
        lines = ["TOP", "UIDL"]
        if self._login_allowed():
            lines += ["USER", "SASL " + " ".join(SASL_MECHANISMS)]
        lines += ["RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if self.tls is not None and not self.secure and self.state is State.AUTHORIZATION:
            lines.append("STLS")
        lines.append("IMPLEMENTATION mailsuite")
        self._multiline("Capability list follows", lines)

    def _do_stls(self) -> None:
        if self.tls is None or self.secure:
            self._error("STLS not available")
            return
        self._reply(True, "Begin TLS negotiation")
        # RFC 2595 §4 and the CVE-2011-0411 class: plaintext sent after STLS, before the
        # handshake, must not run inside the TLS session.
        self._buffer.clear()
        self._discarding = False
        self.transport.startTLS(self.tls)
        self.secure = True
        self._user = None

    def _do_user(self, name: str) -> None:
        if not self._login_allowed():
            self._refuse_plaintext()
            return
        self._user = name
        self._reply(True, "Send your password")

    def _do_pass(self, password: str) -> defer.Deferred | None:
        if not self._login_allowed():
            self._refuse_plaintext()
            return None
        if self._user is None:
            self._error("USER first")
            return None
        login, self._user = self._user, None
        return self._spawn(self._login(login, password))

    def _do_auth(self, mechanism: str | None = None, initial: str | None = None):
        if not self._login_allowed():
            self._refuse_plaintext()
            return None
        if mechanism is None:
            self._multiline("Supported mechanisms", list(SASL_MECHANISMS))
            return None
        if mechanism.upper() not in SASL_MECHANISMS:
            self._error("Unsupported mechanism")
            return None
        if initial is None:
            self._sasl_pending = True
            self._write(EMPTY_CHALLENGE)
            return None
        return self._plain(initial.encode("ascii", "replace"))

    def _sasl_response(self, line: bytes) -> defer.Deferred | None:
        if line == SASL_CANCEL:
            self._error("Authentication cancelled")
            return None
        return self._plain(line)

    def _plain(self, response: bytes) -> defer.Deferred | None:
        try:
            # RFC 5034 §4: "=" is an empty initial response.
            decoded = b"" if response == b"=" else decode_base64(response)
            authzid, authcid, password = parse_plain(decoded)
        except SASLError:
            self._error("Malformed SASL response")
            return None
        if authzid and authzid != authcid:
            # Acting as another user is not offered.
            self._error("Authentication failed", code=AUTH)
            return None
        return self._spawn(self._login(authcid, password))

    async def _login(self, login: str, password: str) -> None:
        creds = UsernamePassword(login.encode("utf-8"), password.encode("utf-8"))
        try:
            _interface, avatar, logout = await self.portal.login(creds, None, IMailAccount)
        except cred_error.LoginFailed:
            log.info("POP3 login failed for {login}", login=login)
            self._error("Authentication failed", code=AUTH)
            return
        except Exception:
            log.failure("POP3 login could not be checked")
            self._reply(False, "Try again later", code=SYS_TEMP)
            return
        if self._lost:
            logout()
            return
        account, store = avatar.account.uid, avatar.store
        try:
            await store.ensure_account(account)
            status = await store.status(account, INBOX)
            messages = await store.messages(account, INBOX)
        except Exception:
            logout()
            log.failure("POP3 could not open INBOX of {account}", account=account)
            self._reply(False, "Mailbox unavailable, try again later", code=SYS_TEMP)
            return
        if self._lost:
            logout()
            return
        self._avatar, self._logout = avatar, logout
        self._maildrop = Maildrop(status.uidvalidity, messages)
        self.state = State.TRANSACTION
        log.info("POP3 login of {account}", account=account)
        self._reply(True, f"Logged in, {len(messages)} messages")

    # ------------------------------------------------------------------ TRANSACTION

    async def _read(self, entry: Entry) -> bytes | None:
        """The stored message, or None (answered) when another session expunged it."""
        try:
            return await self._avatar.store.read(self._avatar.account.uid, INBOX, entry.uid)
        except NoSuchMessage:
            self._reply(False, "No such message")
            return None

    async def _ensure_sizes(self, entries: list[Entry]) -> None:
        # Sizes as RETR sends them (CRLF line ends) are known only once a message is read.
        store, account = self._avatar.store, self._avatar.account.uid
        for entry in entries:
            if entry.wire_size is not None:
                continue
            try:
                data = await store.read(account, INBOX, entry.uid)
            except NoSuchMessage:
                entry.wire_size = entry.stored_size
            else:
                entry.wire_size = wire_size(data)

    def _do_stat(self) -> defer.Deferred:
        return self._spawn(self._stat())

    async def _stat(self) -> None:
        entries = self._maildrop.visible()
        await self._ensure_sizes(entries)
        self._reply(True, f"{len(entries)} {sum(e.wire_size for e in entries)}")

    def _do_list(self, number: str | None = None) -> defer.Deferred:
        if number is not None:
            entry = self._maildrop.entry(parse_message_number(number))
            return self._spawn(self._list_one(entry))
        return self._spawn(self._list_all())

    async def _list_one(self, entry: Entry) -> None:
        await self._ensure_sizes([entry])
        self._reply(True, f"{entry.number} {entry.wire_size}")

    async def _list_all(self) -> None:
        entries = self._maildrop.visible()
        await self._ensure_sizes(entries)
        total = sum(e.wire_size for e in entries)
        self._multiline(
            f"{len(entries)} messages ({total} octets)",
            [f"{e.number} {e.wire_size}" for e in entries],
        )

    def _do_uidl(self, number: str | None = None) -> None:
        drop = self._maildrop
        if number is not None:
            entry = drop.entry(parse_message_number(number))
            self._reply(True, f"{entry.number} {drop.unique_id(entry)}")
            return
        self._multiline(
            "Unique-id listing follows",
            [f"{e.number} {drop.unique_id(e)}" for e in drop.visible()],
        )

    def _do_retr(self, number: str) -> defer.Deferred:
        entry = self._maildrop.entry(parse_message_number(number))
        return self._spawn(self._retr(entry))

    async def _retr(self, entry: Entry) -> None:
        data = await self._read(entry)
        if data is None:
            return
        entry.wire_size = wire_size(data)
        self._reply(True, f"{entry.wire_size} octets")
        await self._send(wire_chunks(data))

    def _do_top(self, number: str, lines: str) -> defer.Deferred:
        entry = self._maildrop.entry(parse_message_number(number))
        body_lines = parse_number(lines)
        return self._spawn(self._top(entry, body_lines))

    async def _top(self, entry: Entry, body_lines: int) -> None:
        data = await self._read(entry)
        if data is None:
            return
        self._reply(True, "Top of message follows")
        await self._send(wire_chunks(top_slice(data, body_lines)))

    def _do_dele(self, number: str) -> None:
        self._maildrop.mark_deleted(parse_message_number(number))
        self._reply(True, "Message deleted")

    def _do_noop(self) -> None:
        self._reply(True)

    def _do_rset(self) -> None:
        self._maildrop.reset()
        self._reply(True, "Deletion marks removed")

    def _do_quit(self) -> defer.Deferred | None:
        if self.state is State.AUTHORIZATION:
            self._reply(True, "Bye")
            self._close()
            return None
        # RFC 1939 §6: QUIT in TRANSACTION enters UPDATE.
        self.state = State.UPDATE
        self._closing = True
        uids = self._maildrop.deleted_uids()
        return self._spawn(self._update(uids))

    async def _update(self, uids: list[int]) -> None:
        store, account = self._avatar.store, self._avatar.account.uid
        if uids:
            try:
                await store.expunge(account, INBOX, uids)
            except Exception:
                log.failure("POP3 could not expunge {count} messages", count=len(uids))
                self._reply(False, "Deleted messages not removed", code=SYS_TEMP)
                self._close()
                return
        self._reply(True, "Bye")
        self._close()


class POP3Factory(SessionFactory):
    """Builds POP3Server sessions; ``tls`` is the context factory for STLS (None: no STLS)."""

    protocol = POP3Server

    def __init__(self, *, hostname: str, portal, tls, implicit_tls: bool = False,
                 allow_plaintext_auth: bool = False, limits: POP3Limits = POP3Limits(),
                 clock=None):
        super().__init__(hostname=hostname, portal=portal, tls=tls, implicit_tls=implicit_tls,
                         allow_plaintext_auth=allow_plaintext_auth, limits=limits, clock=clock)
