"""
mailsuite's ESMTP server: the protocol state machine and its factory.

Input is processed strictly in order, one step at a time: while a step waits on a Deferred
(a recipient check, a login, a commit) the following input stays queued, so pipelined
replies (RFC 2920) come out in order and a line is only read as message content once the
354 for its DATA has been sent.  Parsing lives in command.py, data.py and sasl.py; what
happens to a message is the IDeliveryTarget's business.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime

from twisted.cred import credentials, error as cred_error
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.interfaces import DeliveryError, Envelope, IMailAccount
from mailsuite.smtp import replies
from mailsuite.smtp.command import (
    CommandError,
    parse_auth,
    parse_bdat,
    parse_command,
    parse_helo,
    parse_mail,
    parse_rcpt,
)
from mailsuite.smtp.data import ChunkReader, DataError, DataReader
from mailsuite.smtp.replies import Reply, format_reply
from mailsuite.smtp.sasl import MECHANISMS, AuthCancelled, Challenge, SASLExchange
from mailsuite.auth import SASLError, client_portal
from mailsuite.throttle import SendRate

MODES = ("mx", "submission")

# Over the hourly sending rate of [security] (RFC 3463 §3.8: 4.7.1, delivery not authorised
# now; the client keeps the message and tries later).
RATE_LIMITED = {
    SendRate.MESSAGES: Reply(450, "4.7.1",
                             "Too many messages sent in the last hour, try again later"),
    SendRate.RECIPIENTS: Reply(450, "4.7.1",
                               "Too many recipients in the last hour, try again later"),
}

_DATA_ERROR_REPLIES = {
    DataError.BARE_LINE_ENDING: replies.BARE_LINE_ENDING,
    DataError.LINE_TOO_LONG: replies.MESSAGE_LINE_TOO_LONG,
    DataError.TOO_BIG: replies.MESSAGE_TOO_BIG,
}


@dataclass(frozen=True)
class SMTPLimits:
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 8192  # bytes incl. CRLF, in commands and in DATA
    max_errors: int = 10  # then 421 and close
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2: at least 5 minutes


class _Mode(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # reading SASL responses
    DATA = "data"
    BDAT = "bdat"


@dataclass
class _Transaction:
    envelope: Envelope
    delivery: object  # provides IDelivery
    recipients: list[str] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    chunked_size: int = 0
    chunking: bool = False  # a BDAT chunk was accepted, so DATA and RCPT are out of sequence
    committing: bool = False
    sending: object = None  # the SendRate's count of this message, while it commits


class SMTPServer(protocol.Protocol):
    """One SMTP session.  See SMTPFactory for the settings it reads."""

    log = Logger()

    def __init__(self, factory: SMTPFactory):
        self.factory = factory
        self.limits = factory.limits
        self._buffer = b""  # input not yet processed starts at self._pos
        self._pos = 0
        self._mode = _Mode.COMMAND
        self._busy = False
        self._processing = False
        self._paused = False
        self._closed = False
        self._discarding_line = False
        self._errors = 0
        self._timer = None
        self._helo: str | None = None
        self._esmtp = False
        self._tls = factory.implicit_tls
        self._avatar = None
        self._logout = None
        self._sasl: SASLExchange | None = None
        self._tx: _Transaction | None = None
        self._reader: DataReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_last = False
        self._chunk_refusal: Reply | None = None
        self._client_address = ""
        self._portal = factory.portal
        self._commands = {
            "HELO": self._do_helo,
            "EHLO": self._do_ehlo,
            "MAIL": self._do_mail,
            "RCPT": self._do_rcpt,
            "DATA": self._do_data,
            "BDAT": self._do_bdat,
            "RSET": self._do_rset,
            "NOOP": self._do_noop,
            "QUIT": self._do_quit,
            "VRFY": self._do_vrfy,
            "EXPN": self._do_expn,
            "HELP": self._do_help,
            "STARTTLS": self._do_starttls,
            "AUTH": self._do_auth,
        }

    # ------------------------------------------------------------------ connection

    def connectionMade(self):
        peer = self.transport.getPeer()
        self._client_address = str(getattr(peer, "host", ""))
        # Failed logins count against the client's address too (see ThrottledPortal).
        self._portal = client_portal(self.factory.portal, self._client_address)
        self._timer = self.factory.clock.callLater(self.limits.idle_timeout, self._idle_timeout)
        self.transport.write(f"220 {self.factory.hostname} ESMTP mailsuite\r\n".encode())

    def dataReceived(self, data: bytes):
        if self._closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.limits.idle_timeout)
        self._buffer += data
        self._process()
        if self._busy and self._pending > self._queue_limit and not self._paused:
            # Keep memory bounded while a slow step holds pipelined input back.
            self._paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason=None):
        self._closed = True
        self._cancel_timer()
        self._abort_transaction()
        self._log_out()

    @property
    def _pending(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def _queue_limit(self) -> int:
        return max(4 * self.limits.max_line_length, 65536)

    def _idle_timeout(self):
        self._timer = None
        if self._busy:
            # The server, not the client, is the slow party: wait for it.
            self._timer = self.factory.clock.callLater(self.limits.idle_timeout, self._idle_timeout)
            return
        self.log.info("smtp idle timeout client={client}", client=self._client_address)
        self._reply(replies.IDLE_TIMEOUT)
        self._close()

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _close(self):
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self._abort_transaction()
        self.transport.loseConnection()

    # ------------------------------------------------------------------ input loop

    def _process(self):
        if self._processing:
            return
        self._processing = True
        try:
            while self._pending and not self._busy and not self._closed:
                if self._mode is _Mode.DATA:
                    self._feed_data()
                elif self._mode is _Mode.BDAT:
                    self._feed_chunk()
                else:
                    line = self._next_line()
                    if line is None:
                        break
                    if self._mode is _Mode.AUTH:
                        self._auth_response(line)
                    else:
                        self._command(line)
        finally:
            self._processing = False
            # Drop consumed input once per call: slicing per line would be quadratic.
            self._buffer = self._buffer[self._pos :]
            self._pos = 0
        if self._paused and not self._busy and not self._closed:
            self._paused = False
            self.transport.resumeProducing()

    def _next_line(self) -> bytes | None:
        """
        The next complete line without its line end, or None when more input is needed.
        An over-long line is dropped as it arrives and answered once it ends.
        """
        while True:
            newline = self._buffer.find(b"\n", self._pos)
            if newline < 0:
                if self._pending >= self.limits.max_line_length:
                    self._discarding_line = True
                    self._buffer, self._pos = b"", 0
                return None
            line = self._buffer[self._pos : newline + 1]
            self._pos = newline + 1
            if self._discarding_line or len(line) > self.limits.max_line_length:
                self._discarding_line = False
                self._leave_auth()
                self._error(replies.LINE_TOO_LONG)
                if self._closed or not self._pending:
                    return None
                continue
            if line.endswith(b"\r\n"):
                return line[:-2]
            return line[:-1]

    def _command(self, line: bytes):
        try:
            command = parse_command(line)
        except CommandError as e:
            self._error(e.reply)
            return
        handler = self._commands.get(command.verb)
        if handler is None:
            self._error(replies.UNKNOWN_COMMAND)
            return
        try:
            handler(command.argument)
        except CommandError as e:
            self._error(e.reply)

    def _wait(self, d: defer.Deferred, on_result):
        """Hold further input until ``d`` fires, then call ``on_result`` with its result."""
        self._busy = True

        def finished(result):
            self._busy = False
            try:
                on_result(result)
            except Exception:
                self.log.failure("smtp step failed")
                self._reply(replies.TEMPORARY_FAILURE)
            self._process()

        d.addBoth(finished)

    # ------------------------------------------------------------------ output

    def _reply(self, reply: Reply):
        if not self._closed:
            self.transport.write(reply.encode())

    def _error(self, reply: Reply):
        """Answer a client error; too many of them end the session (RFC 5321 §4.3.2)."""
        self._reply(reply)
        self._errors += 1
        if self._errors >= self.limits.max_errors and not self._closed:
            self.log.info("smtp too many errors client={client}", client=self._client_address)
            self._reply(replies.TOO_MANY_ERRORS)
            self._close()

    # ------------------------------------------------------------------ session commands

    def _do_helo(self, argument: str):
        self._greet(parse_helo(argument), esmtp=False)
        self._reply(Reply(250, None, self.factory.hostname))

    def _do_ehlo(self, argument: str):
        self._greet(parse_helo(argument), esmtp=True)
        lines = [self.factory.hostname, *self._extensions()]
        self.transport.write(format_reply(250, None, lines))

    def _greet(self, helo: str, *, esmtp: bool):
        # RFC 5321 §4.1.4: a new EHLO/HELO resets any transaction.
        self._abort_transaction()
        self._helo = helo
        self._esmtp = esmtp

    def _extensions(self) -> list[str]:
        extensions = [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "BINARYMIME",  # RFC 3030
            "CHUNKING",  # RFC 3030
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "SMTPUTF8",  # RFC 6531
            "DSN",  # RFC 3461: NOTIFY, ORCPT, RET and ENVID are kept and honoured by the relay
        ]
        if self.factory.tls is not None and not self._tls:
            extensions.append("STARTTLS")  # RFC 3207
        if self._auth_allowed():
            extensions.append("AUTH " + " ".join(MECHANISMS))  # RFC 4954
        extensions.append("HELP")
        return extensions

    def _do_rset(self, argument: str):
        if argument:
            raise CommandError(replies.BAD_SYNTAX)
        self._abort_transaction()
        self._reply(replies.RESET_OK)

    def _do_noop(self, argument: str):
        self._reply(replies.OK)

    def _do_quit(self, argument: str):
        self._reply(replies.CLOSING)
        self._close()

    def _do_vrfy(self, argument: str):
        if not argument:
            raise CommandError(replies.BAD_SYNTAX)
        # RFC 5321 §3.5.3: never confirm or deny that a user exists.
        self._reply(replies.CANNOT_VRFY)

    def _do_expn(self, argument: str):
        self._reply(replies.EXPN_DISABLED)

    def _do_help(self, argument: str):
        self._reply(replies.HELP)

    # ------------------------------------------------------------------ STARTTLS, RFC 3207

    def _do_starttls(self, argument: str):
        if argument:
            raise CommandError(replies.BAD_SYNTAX)
        if self._tls:
            raise CommandError(replies.ALREADY_TLS)
        if self.factory.tls is None:
            raise CommandError(replies.STARTTLS_UNAVAILABLE)
        self._reply(replies.READY_FOR_TLS)
        if self._pending:
            # Plaintext sent after STARTTLS but before the handshake could be injected by
            # anyone on the path; it must never run inside the TLS session (CVE-2011-0411).
            self.log.warn(
                "smtp discarded {count} bytes pipelined after STARTTLS client={client}",
                count=self._pending,
                client=self._client_address,
            )
            self._buffer, self._pos = b"", 0
        # RFC 3207 §4.2: forget everything learnt from the client before TLS.
        self._abort_transaction()
        self._log_out()
        self._helo = None
        self._esmtp = False
        self._tls = True
        self.transport.startTLS(self.factory.tls)

    # ------------------------------------------------------------------ AUTH, RFC 4954

    def _auth_allowed(self) -> bool:
        return self._tls or self.factory.allow_plaintext_auth

    def _do_auth(self, argument: str):
        if not argument:
            raise CommandError(replies.BAD_SYNTAX)
        if self._helo is None:
            raise CommandError(replies.HELO_FIRST)
        if not self._esmtp:
            raise CommandError(replies.BAD_SEQUENCE)
        if self._avatar is not None:
            raise CommandError(replies.ALREADY_AUTHENTICATED)
        if self._tx is not None:
            raise CommandError(replies.BAD_SEQUENCE)
        if not self._auth_allowed():
            raise CommandError(replies.ENCRYPTION_REQUIRED)
        mechanism, initial = parse_auth(argument)
        if mechanism not in MECHANISMS:
            raise CommandError(replies.AUTH_UNKNOWN_MECHANISM)
        self._sasl = SASLExchange(mechanism)
        self._sasl_step(lambda sasl: sasl.start(initial))

    def _auth_response(self, line: bytes):
        self._sasl_step(lambda sasl: sasl.respond(line))

    def _sasl_step(self, step):
        sasl = self._sasl
        try:
            result = step(sasl)
        except AuthCancelled:
            self._leave_auth()
            self._reply(replies.AUTH_CANCELLED)
            return
        except SASLError:
            self._leave_auth()
            self._error(replies.AUTH_MALFORMED)
            return
        if isinstance(result, Challenge):
            self._mode = _Mode.AUTH
            self.transport.write(result.line())
            return
        self._leave_auth()
        if result.authzid and result.authzid != result.authcid:
            # Acting for another identity is not offered.
            self.log.info(
                "smtp auth refused authzid client={client} user={user}",
                client=self._client_address,
                user=result.authcid,
            )
            self._error(replies.AUTH_FAILED)
            return
        creds = credentials.UsernamePassword(result.authcid.encode(), result.password.encode())
        d = defer.maybeDeferred(self._portal.login, creds, None, IMailAccount)
        self._wait(d, lambda outcome: self._logged_in(outcome, result.authcid))

    def _leave_auth(self):
        self._sasl = None
        if self._mode is _Mode.AUTH:
            self._mode = _Mode.COMMAND

    def _logged_in(self, outcome, user: str):
        if isinstance(outcome, Failure):
            if outcome.check(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials):
                self.log.info(
                    "smtp auth failed client={client} user={user}",
                    client=self._client_address,
                    user=user,
                )
                self._error(replies.AUTH_FAILED)
            else:
                self.log.failure("smtp auth error", outcome)
                self._reply(replies.AUTH_TEMPORARY_FAILURE)
            return
        _interface, avatar, logout = outcome
        if self._closed:
            logout()
            return
        self._avatar = avatar
        self._logout = logout
        self.log.info(
            "smtp auth ok client={client} user={uid}",
            client=self._client_address,
            uid=avatar.account.uid,
        )
        self._reply(replies.AUTH_OK)

    def _log_out(self):
        logout, self._logout, self._avatar = self._logout, None, None
        if logout is not None:
            logout()

    # ------------------------------------------------------------------ MAIL, RCPT

    def _do_mail(self, argument: str):
        if self._helo is None:
            raise CommandError(replies.HELO_FIRST)
        if self._tx is not None:
            raise CommandError(replies.NESTED_MAIL)
        mail = parse_mail(argument)
        if self.factory.mode == "submission" and self._avatar is None:
            # RFC 6409 §4.3
            raise CommandError(replies.AUTH_REQUIRED)
        if mail.size is not None and mail.size > self.limits.max_message_size:
            self._reply(replies.MESSAGE_TOO_BIG)
            return
        if self._avatar is not None:
            if not mail.sender:
                self._reply(replies.NULL_SENDER_NOT_ALLOWED)
                return
            owned = {a.casefold() for a in self._avatar.account.addresses}
            if mail.sender.casefold() not in owned:
                self.log.info(
                    "smtp sender refused client={client} user={uid} sender={sender}",
                    client=self._client_address,
                    uid=self._avatar.account.uid,
                    sender=mail.sender,
                )
                self._reply(replies.SENDER_NOT_OWNED)
                return
            # Refused before the content is sent; counted only once it is accepted.
            if self._rate_refused(messages=1, recipients=1):
                return
        envelope = Envelope(
            mail_from=mail.sender,
            helo=self._helo,
            client_address=self._client_address,
            authenticated_as=self._avatar.account.uid if self._avatar is not None else None,
            protocol=self._protocol_name(smtputf8=mail.smtputf8),
            smtputf8=mail.smtputf8,
            body_type=mail.body,
            size=mail.size,
            mail_params=dict(mail.params),
            id=secrets.token_hex(8).upper(),
            received_at=self._now(),
        )
        try:
            delivery = self.factory.target.start(envelope)
        except Exception:
            self.log.failure("smtp delivery start failed id={id}", id=envelope.id)
            self._reply(replies.TEMPORARY_FAILURE)
            return
        self._tx = _Transaction(envelope, delivery)
        self._reply(replies.SENDER_OK)

    def _protocol_name(self, *, smtputf8: bool) -> str:
        """The "with" keyword of the Received header (RFC 3848, RFC 6531 §3.7.3)."""
        suffix = ("S" if self._tls else "") + ("A" if self._avatar is not None else "")
        if smtputf8:
            return "UTF8SMTP" + suffix
        if not self._esmtp and not suffix:
            return "SMTP"
        return "ESMTP" + suffix

    def _do_rcpt(self, argument: str):
        tx = self._tx
        if tx is None:
            raise CommandError(replies.MAIL_FIRST)
        if tx.chunking:
            raise CommandError(replies.BAD_SEQUENCE)
        rcpt = parse_rcpt(argument, smtputf8=tx.envelope.smtputf8)
        if len(tx.recipients) >= self.limits.max_recipients:
            # RFC 5321 §4.5.3.1.10: a temporary error, the client sends the rest later.
            self._reply(replies.TOO_MANY_RECIPIENTS)
            return
        address = rcpt.recipient
        if rcpt.is_bare_postmaster:
            address = f"postmaster@{self.factory.postmaster_domain}"
        if self._avatar is not None and self._rate_refused(messages=1,
                                                           recipients=len(tx.recipients) + 1):
            return
        domain = address.rpartition("@")[2].lower()
        if domain not in self.factory.local_domains and self._avatar is None:
            self.log.info(
                "smtp relay denied client={client} id={id} recipient={recipient}",
                client=self._client_address,
                id=tx.envelope.id,
                recipient=address,
            )
            self._reply(replies.RELAY_DENIED)
            return
        d = defer.maybeDeferred(tx.delivery.add_recipient, address, dict(rcpt.params))
        self._wait(d, lambda outcome: self._recipient_checked(tx, address, outcome))

    def _recipient_checked(self, tx: _Transaction, address: str, outcome):
        if isinstance(outcome, Failure):
            reply = self._failure_reply(outcome, tx, stage="rcpt")
            if reply.code >= 500:
                # A refused recipient counts as an error, so guessing addresses one after the
                # other ends the session after max_errors of them.
                self._error(reply)
            else:
                self._reply(reply)
            return
        if tx is not self._tx:
            return
        tx.recipients.append(address)
        self._reply(replies.RECIPIENT_OK)

    # ------------------------------------------------------------------ DATA, RFC 5321 §4.1.1.4

    def _do_data(self, argument: str):
        if argument:
            raise CommandError(replies.BAD_SYNTAX)
        tx = self._tx
        if tx is None:
            raise CommandError(replies.MAIL_FIRST)
        if tx.chunking:
            raise CommandError(replies.DATA_AFTER_BDAT)
        if tx.envelope.body_type == "BINARYMIME":
            # RFC 3030 §3
            raise CommandError(replies.BINARYMIME_NEEDS_BDAT)
        if not tx.recipients:
            self._reply(replies.NO_VALID_RECIPIENTS)
            return
        self._reader = DataReader(
            max_line_length=self.limits.max_line_length,
            max_size=self.limits.max_message_size,
        )
        self._mode = _Mode.DATA
        self._reply(replies.START_DATA)

    def _feed_data(self):
        end = self._reader.feed(self._buffer, self._pos)
        if end is None:
            self._buffer, self._pos = b"", 0
            return
        self._pos = end
        reader, self._reader = self._reader, None
        self._mode = _Mode.COMMAND
        if reader.error is not None:
            self._refuse_message(reader.error)
            return
        self._deliver(reader.message())

    def _refuse_message(self, problem: DataError):
        tx = self._tx
        self.log.info(
            "smtp message refused id={id} client={client} reason={reason}",
            id=tx.envelope.id,
            client=self._client_address,
            reason=problem.value,
        )
        self._abort_transaction()
        self._reply(_DATA_ERROR_REPLIES[problem])

    # ------------------------------------------------------------------ BDAT, RFC 3030

    def _do_bdat(self, argument: str):
        bdat = parse_bdat(argument)
        tx = self._tx
        refusal = None
        if tx is None:
            refusal = replies.MAIL_FIRST
        elif not tx.recipients:
            refusal = replies.NO_VALID_RECIPIENTS
        room = 0 if tx is None else self.limits.max_message_size - tx.chunked_size
        # RFC 3030 §2: the chunk's octets follow whatever the reply; they are always read.
        self._chunk = ChunkReader(bdat.size, room=room if refusal is None else 0)
        self._chunk_last = bdat.last
        self._chunk_refusal = refusal
        if self._chunk.done:
            self._chunk_read()
        else:
            self._mode = _Mode.BDAT

    def _feed_chunk(self):
        self._pos += self._chunk.feed(self._buffer, self._pos)
        if self._chunk.done:
            self._mode = _Mode.COMMAND
            self._chunk_read()

    def _chunk_read(self):
        chunk, self._chunk = self._chunk, None
        tx = self._tx
        if self._chunk_refusal is not None:
            self._reply(self._chunk_refusal)
            return
        if chunk.overflow:
            self._refuse_message(DataError.TOO_BIG)
            return
        content = chunk.content()
        tx.chunks.append(content)
        tx.chunked_size += len(content)
        tx.chunking = True
        if self._chunk_last:
            message, tx.chunks = b"".join(tx.chunks), []
            self._deliver(message)
        else:
            self._reply(replies.CHUNK_OK.with_text(f"{len(content)} octets received"))

    # ------------------------------------------------------------------ delivery

    def _rate_refused(self, *, messages: int, recipients: int) -> bool:
        """Answer 450 4.7.1 and say True if the session's account or address is over its rate."""
        rate = self.factory.rate
        if rate is None:
            return False
        refused = rate.refusal(self._avatar.account.uid, self._client_address,
                               messages=messages, recipients=recipients)
        if refused is None:
            return False
        self._log_rate_refusal(refused)
        self._reply(RATE_LIMITED[refused])
        return True

    def _log_rate_refusal(self, refused: str):
        self.log.info("smtp rate limit reached client={client} user={uid} limit={limit}",
                      client=self._client_address, uid=self._avatar.account.uid, limit=refused)

    def _deliver(self, message: bytes):
        tx = self._tx
        rate = self.factory.rate
        if rate is not None and self._avatar is not None:
            # Counted before the commit, so that concurrent sessions cannot all slip past.
            counted = rate.count(self._avatar.account.uid, self._client_address,
                                 recipients=len(tx.recipients))
            if isinstance(counted, str):
                self._log_rate_refusal(counted)
                self._abort_transaction()
                self._reply(RATE_LIMITED[counted])
                return
            tx.sending = counted
        tx.committing = True
        data = self._received_header(tx) + message
        d = defer.maybeDeferred(tx.delivery.body, data)
        d.addCallback(lambda _: tx.delivery.commit())
        self._wait(d, lambda outcome: self._committed(tx, len(message), outcome))

    def _committed(self, tx: _Transaction, size: int, outcome):
        tx.committing = False
        if self._tx is tx:
            self._tx = None
        if isinstance(outcome, Failure):
            if tx.sending is not None:
                self.factory.rate.cancel(tx.sending)
            self._abort(tx)
            self._reply(self._failure_reply(outcome, tx, stage="commit"))
            return
        self.log.info(
            "smtp message accepted id={id} client={client} sender={sender} "
            "recipients={recipients} size={size} protocol={protocol}",
            id=tx.envelope.id,
            client=self._client_address,
            sender=tx.envelope.mail_from,
            recipients=len(tx.recipients),
            size=size,
            protocol=tx.envelope.protocol,
        )
        self._reply(replies.MESSAGE_ACCEPTED.with_text(f"OK: queued as {tx.envelope.id}"))

    def _failure_reply(self, outcome: Failure, tx: _Transaction, *, stage: str) -> Reply:
        if outcome.check(DeliveryError):
            e = outcome.value
            self.log.info(
                "smtp {stage} refused id={id} client={client} reply={code} {status} {text}",
                stage=stage,
                id=tx.envelope.id,
                client=self._client_address,
                code=e.code,
                status=e.status,
                text=e.text,
            )
            return Reply(e.code, e.status, e.text)
        self.log.failure("smtp {stage} failed id={id}", outcome, stage=stage, id=tx.envelope.id)
        return replies.TEMPORARY_FAILURE

    def _received_header(self, tx: _Transaction) -> bytes:
        """The trace header of RFC 5321 §4.4."""
        envelope = tx.envelope
        address = envelope.client_address
        literal = f"IPv6:{address}" if ":" in address else address
        client = envelope.client_name or "unknown"
        date = format_datetime(self._now())
        lines = [
            f"Received: from {envelope.helo} ({client} [{literal}])",
            f"\tby {self.factory.hostname} (mailsuite) with {envelope.protocol} id {envelope.id}",
        ]
        if len(tx.recipients) == 1:
            lines.append(f"\tfor <{tx.recipients[0]}>; {date}")
        else:
            lines[-1] += f"; {date}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _abort_transaction(self):
        tx, self._tx = self._tx, None
        self._reader = None
        if tx is not None and not tx.committing:
            # A commit in flight decides the message's fate itself.
            self._abort(tx)

    def _abort(self, tx: _Transaction):
        try:
            tx.delivery.abort()
        except Exception:
            self.log.failure("smtp abort failed id={id}", id=tx.envelope.id)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.factory.clock.seconds(), tz=timezone.utc)


class SMTPFactory(protocol.Factory):
    """
    Builds SMTPServer sessions.  ``mode`` is "mx" (mail for ``local_domains``; relaying only
    after AUTH) or "submission" (RFC 6409: AUTH required, sender must belong to the user).
    ``tls`` is the context factory used for STARTTLS (None: STARTTLS is not offered);
    ``implicit_tls`` says the listener is already TLS.  ``rate`` (a SendRate shared by the
    listeners) limits what authenticated sessions send per hour; None: no limit.
    """

    # Listeners are logged once by the suite; per-factory start/stop lines are noise.
    noisy = False

    protocol = SMTPServer

    def __init__(
        self,
        *,
        hostname: str,
        local_domains: frozenset[str],
        target,
        portal,
        tls=None,
        mode: str,
        implicit_tls: bool = False,
        allow_plaintext_auth: bool = False,
        limits: SMTPLimits = SMTPLimits(),
        clock=None,
        rate: SendRate | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"SMTP mode must be one of {MODES}, not {mode!r}")
        if clock is None:
            from twisted.internet import reactor as clock
        self.hostname = hostname
        self.local_domains = frozenset(d.lower() for d in local_domains)
        self.target = target
        self.portal = portal
        self.tls = tls
        self.mode = mode
        self.implicit_tls = implicit_tls
        self.allow_plaintext_auth = allow_plaintext_auth
        self.limits = limits
        self.clock = clock
        self.rate = rate if rate is not None and rate.enabled else None
        # RFC 5321 §4.5.1: bare "postmaster" is the postmaster of a local domain.
        self.postmaster_domain = min(self.local_domains) if self.local_domains else hostname.lower()

    def buildProtocol(self, addr):
        p = self.protocol(self)
        p.factory = self
        return p
