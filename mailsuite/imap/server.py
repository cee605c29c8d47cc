"""
mailsuite's IMAP server session (RFC 3501 §3): the protocol state machine.

Input is cut into commands by mailsuite.imap.framing and parsed by mailsuite.imap.parser;
commands run one at a time (the store answers with Deferreds; later input waits in the
framer), so tagged replies come out in order.  The handlers live in
mailsuite.imap.commands; this module owns connection, timers, TLS, output and the change
feed that keeps the selected mailbox and IDLE current.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.imap import framing
from mailsuite.imap.arguments import Refusal, removed_in_rev2
from mailsuite.imap.capabilities import capabilities
from mailsuite.imap.commands import State, load
from mailsuite.imap.parser import ParseError, parse_command
from mailsuite.imap.quota import usage_and_limit
from mailsuite.imap.responses import (
    BAD,
    NO,
    OVERQUOTA,
    SERVERBUG,
    TOOBIG,
    CommandFailed,
    Reply,
    store_failure,
)
from mailsuite.imap.selected import Need, SelectedMailbox
from mailsuite.session import IdleTimer, SessionFactory

log = Logger()

# Reading from the client stops while this much input waits behind a running command.
MAX_PENDING_INPUT = 256 * 1024
# Compressed input is inflated in pieces of this size, so a small packet cannot fill memory.
INFLATE_CHUNK = 64 * 1024


@implementer(IPushProducer)
class _OutputFlow:
    """What the transport pauses and resumes while a long response is being written."""

    def __init__(self):
        self.paused = False
        self._waiting: list[defer.Deferred] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopProducing(self) -> None:
        # The connection is gone or the command ended: nobody should wait any longer.
        self.resumeProducing()

    def room(self) -> defer.Deferred:
        if not self.paused:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)
        return d


@dataclass(frozen=True)
class IMAPLimits:
    max_line_length: int = 64 * 1024
    max_literal_size: int = 50 * 1024 * 1024  # also APPENDLIMIT
    # Before login only LOGIN's strings and ID's values need a literal; an anonymous client
    # must not make the server hold megabytes.
    max_literal_size_before_login: int = 8 * 1024
    max_errors: int = 20
    idle_timeout: float = 30 * 60.0  # RFC 3501 §5.4: autologout timer at least 30 minutes


class IMAPServer(IdleTimer, protocol.Protocol):
    """One IMAP session.  Built by IMAPFactory."""

    def __init__(self, *, hostname: str, portal, tls, implicit_tls: bool,
                 allow_plaintext_auth: bool, limits: IMAPLimits, clock, quota_for=None):
        self.hostname = hostname
        self.portal = portal
        self.tls = tls
        self.secure = implicit_tls
        self.allow_plaintext_auth = allow_plaintext_auth
        self.limits = limits
        self.clock = clock
        self.quota_for = quota_for
        self.commands = load()
        self.state = State.NOT_AUTHENTICATED
        self.framer = framing.Framer(max_line_length=limits.max_line_length,
                                     max_literal_size=self._literal_limit(authenticated=False))
        self.avatar = None
        self.account: str | None = None
        self.store = None
        self.selected: SelectedMailbox | None = None
        self.utf8 = False  # RFC 6855: UTF8=ACCEPT enabled
        self.enabled: set[str] = set()
        self.condstore = False  # RFC 7162 §3.1: enabled by ENABLE or a CONDSTORE-using command
        self.qresync = False  # RFC 7162 §3.2.3: only through ENABLE QRESYNC
        self.rev2 = False  # RFC 9051: ENABLE IMAP4rev2
        self._deflate = None  # RFC 4978: set once COMPRESS DEFLATE succeeded
        self._inflate = None
        self._inflate_backlog = b""
        self.client_id: dict | None = None
        self.after_reply = None  # run once the current command's tagged reply is written
        self.idling = False
        self._logout = None
        self._unsubscribe = None
        self._busy = False
        self._looping = False
        self._paused = False
        self._closing = False
        self._lost = False
        self._flow: _OutputFlow | None = None  # registered while a long response is written
        self._errors = 0
        self._timer = None
        self._line_waiter: defer.Deferred | None = None
        self._idle_syncing = False
        self._idle_again = False

    # ------------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        self._reset_timer()
        caps = " ".join(self.capabilities())
        self.write(f"* OK [CAPABILITY {caps}] {self.hostname} IMAP4rev1 ready\r\n".encode())

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._reset_timer()
        if self._inflate is not None:
            self._inflate_input(data)
            return
        self.framer.feed(data)
        self._process()
        self._maybe_pause()

    def _maybe_pause(self) -> None:
        if self._busy and not self._paused and self.framer.pending > MAX_PENDING_INPUT:
            self._paused = True
            self.transport.pauseProducing()

    def _inflate_input(self, data: bytes) -> None:
        # RFC 4978 §4: input is one raw deflate stream; inflate it a piece at a time.
        inflate = self._inflate
        data = self._inflate_backlog + data
        self._inflate_backlog = b""
        while data and not self._closing:
            if self._paused:
                # Inflated only once the running command has taken what waits.
                self._inflate_backlog = data
                return
            try:
                plain = inflate.decompress(data, INFLATE_CHUNK)
            except zlib.error:
                log.info("IMAP compressed input is corrupt, closing")
                self.write(b"* BYE Corrupt compressed data\r\n")
                self.close()
                return
            data = inflate.unconsumed_tail
            self.framer.feed(plain)
            self._process()
            self._maybe_pause()

    def start_compression(self) -> None:
        """After the tagged OK of COMPRESS DEFLATE (RFC 4978 §3): raw deflate both ways."""
        # Anything buffered was sent before the client saw the OK: not part of the stream.
        self.framer.clear()
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    def connectionLost(self, reason=None) -> None:
        self._lost = True
        if self._flow is not None:
            flow, self._flow = self._flow, None
            flow.stopProducing()
        self._closing = True
        self.framer.clear()
        self._cancel_timer()
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(error.ConnectionDone())
        self._end_login()

    def _end_login(self) -> None:
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.state = State.LOGOUT
        self.framer.clear()
        self._cancel_timer()
        self.transport.loseConnection()

    def _literal_limit(self, *, authenticated: bool) -> int:
        if authenticated:
            return self.limits.max_literal_size
        return min(self.limits.max_literal_size, self.limits.max_literal_size_before_login)

    def capabilities(self) -> list[str]:
        return capabilities(
            authenticated=self.state is not State.NOT_AUTHENTICATED,
            secure=self.secure,
            starttls=self.tls is not None,
            plaintext_allowed=self.allow_plaintext_auth,
            append_limit=self.limits.max_literal_size,
            quota=self.quota_for is not None,
            compressed=self.compressed,
        )

    @property
    def login_allowed(self) -> bool:
        # RFC 3501 §6.2.3 / RFC 8314: no cleartext passwords outside TLS unless configured.
        return self.secure or self.allow_plaintext_auth

    # RFC 3501 §5.4: the autologout timer is IdleTimer's; this is what it does.
    def _timed_out(self) -> None:
        self._timer = None
        log.info("IMAP session idle for {timeout}s, closing", timeout=self.limits.idle_timeout)
        self.write(b"* BYE Autologout; idle for too long\r\n")
        self.close()

    # ------------------------------------------------------------------ output

    def write(self, data: bytes) -> None:
        if not self._lost and data:
            if self._deflate is not None:
                # RFC 4978 §4: flush after each burst so the client can read it at once.
                data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self.transport.write(data)

    def untagged(self, text: str) -> None:
        self.write(b"* " + text.encode("utf-8") + b"\r\n")

    def output_room(self) -> defer.Deferred:
        """
        During a long response (a FETCH of many messages), fires once the client has taken
        what was written so far: the session stays registered as the transport's producer
        until the command ends, so a slow reader slows the response down instead of making
        the server queue it (or cut the connection).
        """
        if self._lost:
            return defer.succeed(None)
        if self._flow is None:
            flow = _OutputFlow()
            try:
                self.transport.registerProducer(flow, True)
            except RuntimeError:  # another producer is active; it does the flow control
                return defer.succeed(None)
            self._flow = flow
        return self._flow.room()

    def _end_output(self) -> None:
        if self._flow is not None:
            flow, self._flow = self._flow, None
            flow.stopProducing()
            if not self._lost:
                self.transport.unregisterProducer()

    def _bad(self, tag: str | None, text: str, code: str | None = None) -> None:
        self.write(Reply(BAD, text, code).line(tag or "*"))
        self._count_error()

    def _count_error(self) -> None:
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            log.info("IMAP session closed after {errors} errors", errors=self._errors)
            self.write(b"* BYE Too many errors\r\n")
            self.close()

    # ------------------------------------------------------------------ input

    def _process(self) -> None:
        if self._looping:
            return
        self._looping = True
        try:
            while not self._closing:
                if self._line_waiter is not None:
                    event = self.framer.next_event(line_mode=True)
                    if event is None:
                        break
                    waiter, self._line_waiter = self._line_waiter, None
                    waiter.callback(event)
                    continue
                if self._busy:
                    break
                event = self.framer.next_event()
                if event is None:
                    break
                self._handle_event(event)
        finally:
            self._looping = False

    def read_line(self) -> defer.Deferred:
        """The client's next line (framing.Line or framing.LineTooLong), for IDLE and SASL."""
        self._line_waiter = defer.Deferred()
        waiter = self._line_waiter
        if not self._looping:
            self._process()
        return waiter

    def _handle_event(self, event) -> None:
        if isinstance(event, framing.Continue):
            if self._quota_applies(event):
                self._check_append_quota(event)
                return
            # RFC 3501 §7.5: ready for the literal.
            self.write(b"+ Ready for literal data\r\n")
        elif isinstance(event, framing.Complete):
            self._start(event.command)
        elif isinstance(event, framing.LineTooLong):
            self._bad(event.tag, "Line too long")
        elif isinstance(event, framing.LiteralTooBig):
            self.write(Reply(NO, "Literal too big", TOOBIG).line(event.tag or "*"))
            if not event.synchronising:
                # RFC 7888 §4: a non-synchronising literal we cannot take ends the session.
                self.write(b"* BYE Literal too big\r\n")
                self.close()
            else:
                self._count_error()

    def _start(self, raw) -> None:
        try:
            command = parse_command(raw, utf8=self.utf8)
        except Refusal as e:
            self.write(Reply(NO, e.text, e.code).line(e.tag or "*"))
            return
        except ParseError as e:
            self._bad(e.tag, e.text, e.code)
            return
        if self.rev2:
            refused = removed_in_rev2(command)
            if refused is not None:
                self._bad(command.tag, refused)
                return
        handler = self.commands.get(command.name)
        if handler is None:
            self._bad(command.tag, "Unknown command")
            return
        if self.state not in handler.states:
            self._bad(command.tag, "Command not valid in this state")
            return
        self._busy = True
        d = defer.Deferred.fromCoroutine(self._run(handler, command))
        d.addErrback(self._crashed)
        d.addBoth(self._finished)

    async def _run(self, handler, command) -> None:
        try:
            reply = await handler.run(self, command)
        except CommandFailed as e:
            reply = e.reply
        except Exception as e:
            reply = store_failure(e)
            if reply is None:
                if self._lost:
                    return
                log.failure("IMAP command {name} failed", name=command.name)
                reply = Reply(NO, "Internal error", SERVERBUG)
        self._end_output()
        if reply is None:
            reply = Reply()
        if self._lost:
            return
        if self.selected is not None and self.state is State.SELECTED:
            await self.sync(allow_expunge=handler.allow_expunge)
        if reply.status == BAD:
            self._count_error()
        if self._lost:
            return
        self.write(reply.line(command.tag))
        if self.after_reply is not None:
            after, self.after_reply = self.after_reply, None
            after()

    # RFC 9208 §4.3 / RFC 3501 §7.5: an APPEND that cannot fit is refused before its
    # literal is sent.
    def _quota_applies(self, event) -> bool:
        if self.quota_for is None or self.avatar is None:
            return False
        words = event.first_line.split(b" ", 2)
        return len(words) >= 2 and words[1].upper() == b"APPEND"

    def _check_append_quota(self, event) -> None:
        self._busy = True

        async def check():
            used, limit = await usage_and_limit(self)
            if self._lost:
                return
            if limit is not None and used + event.literals_size > limit:
                self.framer.refuse_literal()
                self.write(Reply(NO, "Quota exceeded", OVERQUOTA).line(event.tag or "*"))
            else:
                self.write(b"+ Ready for literal data\r\n")

        d = defer.Deferred.fromCoroutine(check())
        d.addErrback(self._crashed)
        d.addBoth(self._finished)

    def _crashed(self, failure) -> None:
        if not self._lost:
            log.failure("IMAP session failed", failure)
            self.write(b"* BYE Internal error\r\n")
            self.close()

    def _finished(self, _result) -> None:
        self._busy = False
        if self._closing:
            return
        self._reset_timer()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
            if self._inflate_backlog:
                self._inflate_input(b"")
                return
        self._process()

    # ------------------------------------------------------------------ session changes

    def start_tls(self) -> None:
        """After the tagged OK of STARTTLS (RFC 3501 §6.2.1)."""
        # CVE-2011-0411 class: input sent before the handshake must not run inside TLS.
        self.framer.clear()
        self.transport.startTLS(self.tls)
        self.secure = True

    def logged_in(self, avatar, logout) -> None:
        self.avatar = avatar
        self._logout = logout
        self.account = avatar.account.uid
        self.store = avatar.store
        self._unsubscribe = self.store.subscribe(self._on_change)
        self.state = State.AUTHENTICATED
        self.framer.limit_literals(self._literal_limit(authenticated=True))

    def logged_out(self) -> None:
        """RFC 8437 §3: UNAUTHENTICATE: back to not authenticated, enabled extensions reset."""
        self.select(None)
        self._end_login()
        self.avatar = None
        self.account = None
        self.store = None
        self.state = State.NOT_AUTHENTICATED
        self.framer.limit_literals(self._literal_limit(authenticated=False))
        self.enabled.clear()
        self.utf8 = self.condstore = self.qresync = self.rev2 = False

    def select(self, selected: SelectedMailbox | None) -> None:
        self.selected = selected
        self.state = State.AUTHENTICATED if selected is None else State.SELECTED
        if selected is not None:
            selected.condstore = self.condstore
            selected.qresync = self.qresync

    def enable_condstore(self) -> None:
        """
        Turn CONDSTORE on (RFC 7162 §3.1: ENABLE or the first CONDSTORE-using command);
        a mailbox selected before learns its HIGHESTMODSEQ at once.
        """
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            self.selected.condstore = True
            self.untagged(f"OK [HIGHESTMODSEQ {self.selected.highestmodseq}] Highest")

    # ------------------------------------------------------------------ change feed

    def _on_change(self, change) -> None:
        if change.account != self.account or self.selected is None:
            return
        if change.mailbox != self.selected.name:
            return
        self.selected.note(change)
        if self.idling:
            self._idle_sync()

    async def sync(self, *, allow_expunge: bool) -> None:
        """
        Send the untagged responses for changes to the selected mailbox.  Expunges need no
        store call; new messages and flag changes cost one listing of what changed since
        the snapshot's MODSEQ; only a feed that no longer fits the snapshot costs a full
        listing.
        """
        selected = self.selected
        need = selected.take_pending()
        out = None
        if need is Need.CHANGES:
            changed = await self._list(selected, changed_since=selected.seen_modseq)
            if changed is None or self.selected is not selected:
                return
            out = selected.merge(changed, allow_expunge=allow_expunge)
        if need is Need.LISTING or (need is Need.CHANGES and out is None):
            listing = await self._list(selected)
            if listing is None or self.selected is not selected:
                return
            out = selected.sync(listing, allow_expunge=allow_expunge)
        if out is None:
            out = selected.flush_expunges() if allow_expunge else []
        if out:
            self.write(b"".join(out))

    async def _list(self, selected, *, changed_since: int = 0):
        try:
            return await self.store.messages(self.account, selected.name,
                                             changed_since=changed_since)
        except Exception:
            log.failure("IMAP could not list {mailbox}", mailbox=selected.name)
            return None

    def _idle_sync(self) -> None:
        # RFC 2177 §3: changes are pushed while idling.  One listing at a time.
        if self._idle_syncing:
            self._idle_again = True
            return
        self._idle_syncing = True

        def done(_):
            self._idle_syncing = False
            if self._idle_again and self.idling:
                self._idle_again = False
                self._idle_sync()

        defer.Deferred.fromCoroutine(self.sync(allow_expunge=True)).addBoth(done)


class IMAPFactory(SessionFactory):
    """Builds IMAPServer sessions; ``tls`` is the context factory for STARTTLS (None: none)."""

    protocol = IMAPServer

    def __init__(self, *, hostname: str, portal, tls, implicit_tls: bool = False,
                 allow_plaintext_auth: bool = False, limits: IMAPLimits = IMAPLimits(),
                 clock=None, quota_for=None):
        # RFC 9208: quota_for(Account) -> limit in octets, or None for no limit.
        super().__init__(hostname=hostname, portal=portal, tls=tls, implicit_tls=implicit_tls,
                         allow_plaintext_auth=allow_plaintext_auth, limits=limits, clock=clock,
                         quota_for=quota_for)
