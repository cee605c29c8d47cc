"""
mailsuite's outbound SMTP client: one connection to a remote MX or smart host carrying any
number of transactions, with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, STARTTLS and AUTH.

``deliver`` is the whole interface.  Every recipient comes back with a result; network
trouble (refused, timed out, dropped, TLS failure, 421, garbage) becomes a temporary result
for the recipients not yet finished, never an error of the returned Deferred.  The wire
format lives in client_wire.py; this module is the session's state and timing.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
from collections import deque
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error, protocol, ssl
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.smtp.client_wire import (
    DataEncoder,
    EnvelopeError,
    Extensions,
    ReplyError,
    ReplyParser,
    ServerReply,
    mail_command,
    rcpt_command,
)

STAGES = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")

# Content is encoded and written this much at a time, as the transport asks for more.
DATA_CHUNK = 65536

log = Logger()


class TLSPolicy(enum.Enum):
    """
    Outbound STARTTLS (RFC 3207).  OPPORTUNISTIC encrypts when offered without checking
    the certificate; VERIFY requires STARTTLS and checks the certificate and host name.
    The values are those of the ``[relay] tls`` setting.
    """

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    VERIFY = "verify"


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait at each step; the defaults are RFC 5321 §4.5.3.2's minimums."""

    greeting: float = 300.0  # §4.5.3.2.1
    command: float = 300.0  # EHLO, HELO, STARTTLS, AUTH, RSET: as MAIL
    mail: float = 300.0  # §4.5.3.2.2
    rcpt: float = 300.0  # §4.5.3.2.3
    data: float = 120.0  # §4.5.3.2.4: the 354
    data_block: float = 180.0  # §4.5.3.2.5: until the transport takes more content
    data_end: float = 600.0  # §4.5.3.2.6: the reply to the final "."
    quit: float = 10.0  # not in the RFC: the results are known, only politeness is left


@dataclass
class OutboundMessage:
    """One SMTP transaction."""

    mail_from: str  # "" = null reverse-path
    recipients: list[tuple[str, dict]]  # (address, params); params may hold NOTIFY, ORCPT
    data: bytes  # as stored: CRLF or bare-LF line ends
    mail_params: dict = field(default_factory=dict)  # RET, ENVID, BODY, SMTPUTF8 (None value)
    key: object = None  # opaque, handed back untouched


@dataclass
class RecipientResult:
    address: str
    code: int  # the final SMTP code; 250 = delivered, 0 = no reply (connection failure)
    enhanced: str  # RFC 3463 status, "" when the server gave none
    text: str  # one line
    stage: str  # one of STAGES: where the session was when this was decided

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        return self.code == 0 or 400 <= self.code < 500

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300


@dataclass
class SessionResult:
    host: str
    tls: bool
    results: list[list[RecipientResult]]  # per message, per recipient, in order


def deliver(
    reactor,
    host: str,
    port: int,
    messages: list[OutboundMessage],
    *,
    helo_name: str,
    tls: TLSPolicy,
    tls_hostname: str | None = None,
    ca_file: str | None = None,
    auth: tuple[str, str] | None = None,
    connect_timeout: float = 30.0,
    timeouts: Timeouts | None = None,
    bind_address: str | None = None,
) -> defer.Deferred:
    """
    Deferred[SessionResult]: deliver ``messages`` over one connection to ``host``:``port``.
    ``auth`` is (user, password) for AUTH PLAIN or LOGIN, sent only over TLS or to a
    loopback address.  ``tls_hostname`` (default ``host``) is the name the certificate must
    carry with TLSPolicy.VERIFY; ``ca_file`` replaces the platform's trust store then.
    """
    if not isinstance(tls, TLSPolicy):
        raise TypeError(f"tls must be a TLSPolicy, not {tls!r}")
    if not helo_name or not helo_name.isascii() or any(c in helo_name for c in " \r\n"):
        raise ValueError(f"helo_name must be a domain or address literal, not {helo_name!r}")
    session = _Session(
        host,
        list(messages),
        helo_name=helo_name,
        policy=tls,
        auth=auth,
        timeouts=timeouts or Timeouts(),
    )
    if not messages:
        return defer.succeed(session.result())
    if tls is TLSPolicy.VERIFY:
        try:
            session.verifying_options = verifying_options(tls_hostname or host, ca_file)
        except (OSError, ValueError) as e:
            log.error("smtp client cannot load ca_file {ca_file}: {error}", ca_file=ca_file, error=e)
            session.stage = "starttls"
            session.settle_unfinished(_Ended(0, "4.7.5", f"cannot load ca_file {ca_file}: {e}"))
            return defer.succeed(session.result())
    endpoint = HostnameEndpoint(
        reactor,
        host,
        port,
        timeout=connect_timeout,
        bindAddress=(bind_address, 0) if bind_address else None,
    )
    d = connectProtocol(endpoint, _ClientProtocol(reactor))
    d.addCallbacks(session.run, lambda failure: session.connect_failed(failure, port))
    return d


def verifying_options(hostname: str, ca_file: str | None):
    """
    Client TLS options that check the certificate chain against ``ca_file`` (PEM, one or
    more certificates) or the platform's trust store, and ``hostname`` with service-identity.
    """
    if not ca_file:
        return ssl.optionsForClientTLS(hostname, trustRoot=ssl.platformTrust())
    with open(ca_file, "rb") as f:
        pem = f.read()
    certificates = [
        ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in x509.load_pem_x509_certificates(pem)
    ]
    return ssl.optionsForClientTLS(hostname, trustRoot=ssl.trustRootFromCertificates(certificates))


class _Ended(Exception):
    """
    The session cannot go on; each unfinished recipient gets this code and text.
    ``polite``: the connection is still in step, so QUIT can end it.
    """

    def __init__(self, code: int, enhanced: str, text: str, *, polite: bool = False):
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.polite = polite

    @classmethod
    def from_reply(cls, reply: ServerReply, *, polite: bool) -> _Ended:
        return cls(reply.code, reply.enhanced, reply.text, polite=polite)


# ---------------------------------------------------------------------------- the connection


class _ClientProtocol(protocol.Protocol):
    """
    The connection: commands out, replies in order.  Every command sent is owed one reply;
    a reply nobody is owed is a protocol error, except a 421 (the server may announce its
    shutdown at any time, RFC 5321 §3.8), so the queue of unread replies stays bounded.
    """

    def __init__(self, clock):
        self._clock = clock
        self._parser = ReplyParser()
        self._replies: deque[ServerReply] = deque()
        self._owed = 1  # the greeting
        self._waiter: defer.Deferred | None = None
        self._wait_timer = None
        self._ended: _Ended | None = None
        self._handshaking = False
        self._quitting = False
        self._close_timer = None
        self._aborted = False
        self._sender: _DataSender | None = None
        self.connected = False

    # -- events

    def connectionMade(self):
        self.connected = True

    def dataReceived(self, data: bytes):
        if self._ended is not None:
            return
        try:
            replies = self._parser.feed(data)
        except ReplyError as e:
            self.abort(_Ended(0, "4.5.0", f"protocol error: {e}"))
            return
        for reply in replies:
            if self._owed:
                self._owed -= 1
            elif self._quitting:
                continue
            elif reply.code != 421:
                self.abort(_Ended(0, "4.5.0", f"protocol error: reply {reply} to no command"))
                return
            if reply.code == 354:
                # RFC 5321 §4.1.1.4: the final reply follows, even before the content ends.
                self._owed += 1
            self._replies.append(reply)
        self._handshaking = self._handshaking and not self._replies
        self._wake()

    def connectionLost(self, reason=protocol.connectionDone):
        self.connected = False
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        if self._handshaking:
            ended = _Ended(0, "4.7.5", f"TLS handshake failed: {_reason(reason)}")
        else:
            ended = _Ended(0, "4.4.2", f"connection lost: {_reason(reason)}")
        self._end(ended)

    # -- commands out, replies in

    def send(self, *lines: bytes) -> None:
        """Write command lines (several at once when pipelining); each is owed a reply."""
        self._owed += len(lines)
        self.transport.write(b"".join(lines))

    def read(self, timeout: float, what: str) -> defer.Deferred:
        """Deferred[ServerReply]: the next reply; fails with _Ended when none can come."""
        if self._replies:
            return defer.succeed(self._replies.popleft())
        if self._ended is not None:
            return defer.fail(self._ended)
        self._waiter = defer.Deferred()
        self._wait_timer = self._clock.callLater(timeout, self._timed_out, timeout, what)
        return self._waiter

    def _wake(self):
        waiter = self._waiter
        if waiter is None or not (self._replies or self._ended):
            return
        self._waiter = None
        if self._wait_timer is not None and self._wait_timer.active():
            self._wait_timer.cancel()
        self._wait_timer = None
        if self._replies:
            waiter.callback(self._replies.popleft())
        else:
            waiter.errback(self._ended)

    def _timed_out(self, timeout: float, what: str):
        self._wait_timer = None
        self.abort(_Ended(0, "4.4.2", f"no reply to {what} within {timeout:g} s"))

    # -- content

    def send_data(self, data: bytes, block_timeout: float) -> defer.Deferred:
        """
        Deferred[None]: stream ``data`` encoded for DATA, terminator included, as fast as the
        transport takes it.  Fires when written or when the connection is gone; the reply
        to read next tells which.
        """
        if self._ended is not None:
            return defer.succeed(None)
        sender = self._sender = _DataSender(self.transport, self._clock, data, block_timeout,
                                            on_stall=self.data_stalled)
        sender.start()
        return sender.done

    def data_stalled(self, timeout: float):
        self.abort(_Ended(0, "4.4.2", f"the server took no message content for {timeout:g} s"))

    # -- TLS

    def start_tls(self, options) -> None:
        if self._parser.pending or self._replies:
            # RFC 3207 §4.2 and CVE-2011-0411: nothing read before the handshake may count
            # as a reply inside the TLS session.
            log.warn("smtp client discarded {count} bytes received before the TLS handshake",
                     count=self._parser.pending)
            self._parser.discard()
            self._replies.clear()
        self._handshaking = True
        self.transport.startTLS(options)

    def peer_is_loopback(self) -> bool:
        host = getattr(self.transport.getPeer(), "host", "")
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    # -- the end

    def quit(self, timeout: float) -> defer.Deferred:
        """Deferred[None]: QUIT, wait for its reply at most ``timeout``, then close."""
        if self._ended is not None:
            self.close(timeout)
            return defer.succeed(None)
        self.send(b"QUIT\r\n")
        self._quitting = True
        d = self.read(timeout, "QUIT")
        d.addErrback(lambda failure: failure.trap(_Ended))
        d.addCallback(lambda _: self.close(timeout))
        return d

    def close(self, timeout: float) -> None:
        """Close; a peer that does not let the connection go within ``timeout`` is cut off."""
        if not self.connected or self._aborted or self._close_timer is not None:
            return
        self.transport.loseConnection()
        self._close_timer = self._clock.callLater(timeout, self.transport.abortConnection)

    def abort(self, ended: _Ended) -> None:
        """Stop here: replies not yet read are dropped, the connection is cut."""
        self._replies.clear()
        self._end(ended)
        if self.connected and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()

    def _end(self, ended: _Ended):
        if self._ended is None:
            self._ended = ended
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stopProducing()
        self._wake()


def _reason(reason) -> str:
    """One readable line for why a connection ended."""
    if reason.check(error.ConnectionDone):
        return "closed by the server"
    if reason.check(VerificationError):
        return "the certificate does not match the expected host name"
    if reason.check(SSL.Error):
        # pyOpenSSL gives a list of (library, function, reason) tuples.
        errors = reason.value.args[0] if reason.value.args else None
        if isinstance(errors, list) and errors:
            return "; ".join(str(e[-1]) for e in errors)
    return reason.getErrorMessage() or reason.type.__name__


@implementer(IPullProducer)
class _DataSender:
    """
    Writes the message content a chunk at a time whenever the transport asks for more, so
    that only one encoded chunk exists besides the stored message.
    """

    def __init__(self, transport, clock, data: bytes, block_timeout: float, *, on_stall):
        self._transport = transport
        self._clock = clock
        self._on_stall = on_stall
        self._data = data
        self._offset = 0
        self._encoder = DataEncoder()
        self._block_timeout = block_timeout
        self._timer = None
        self._finished = False
        self.done = defer.Deferred()

    def start(self):
        self._timer = self._clock.callLater(self._block_timeout, self._stalled)
        self._transport.registerProducer(self, False)

    def resumeProducing(self):
        if self._finished:
            return
        self._timer.reset(self._block_timeout)
        chunk = self._data[self._offset : self._offset + DATA_CHUNK]
        self._offset += len(chunk)
        out = self._encoder.feed(chunk)
        last = self._offset >= len(self._data)
        if last:
            out += self._encoder.finish()
        self._transport.write(out)
        if last:
            self._transport.unregisterProducer()
            self._finish()

    def stopProducing(self):
        self._finish()

    def _stalled(self):
        self._timer = None
        self._on_stall(self._block_timeout)

    def _finish(self):
        if self._finished:
            return
        self._finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.done.callback(None)


# ---------------------------------------------------------------------------- the session


class _Session:
    """The conversation (RFC 5321 §3) over one connection, and the results it produces."""

    def __init__(self, host: str, messages: list[OutboundMessage], *, helo_name: str,
                 policy: TLSPolicy, auth, timeouts: Timeouts):
        self.host = host
        self.messages = messages
        self.helo_name = helo_name
        self.policy = policy
        self.auth = auth
        self.timeouts = timeouts
        self.verifying_options = None
        self.results: list[list[RecipientResult | None]] = [[None] * len(m.recipients) for m in messages]
        self.stage = "connect"
        self.tls = False
        self.extensions = Extensions.none()
        self.client: _ClientProtocol | None = None
        self.in_transaction = False  # MAIL accepted and no final reply to the content yet

    # -- results

    def result(self) -> SessionResult:
        return SessionResult(self.host, self.tls, [list(r) for r in self.results])

    def settle(self, index: int, position: int, code: int, enhanced: str, text: str, stage: str):
        address = self.messages[index].recipients[position][0]
        self.results[index][position] = RecipientResult(address, code, enhanced, text, stage)

    def settle_message(self, index: int, code: int, enhanced: str, text: str, stage: str):
        for position, result in enumerate(self.results[index]):
            if result is None:
                self.settle(index, position, code, enhanced, text, stage)

    def settle_unfinished(self, ended: _Ended):
        for index in range(len(self.messages)):
            self.settle_message(index, ended.code, ended.enhanced, ended.text, self.stage)

    def connect_failed(self, failure, port: int) -> SessionResult:
        failure.trap(error.ConnectError, error.DNSLookupError, error.TimeoutError, OSError)
        text = f"cannot connect to {self.host} port {port}: {failure.getErrorMessage()}"
        log.info("smtp client {text}", text=text)
        self.settle_unfinished(_Ended(0, "4.4.1", text))
        return self.result()

    # -- the conversation

    def run(self, client: _ClientProtocol) -> defer.Deferred:
        self.client = client
        return defer.ensureDeferred(self._converse())

    async def _converse(self) -> SessionResult:
        client = self.client
        try:
            try:
                await self._open()
                for index, message in enumerate(self.messages):
                    await self._transaction(index, message)
            except _Ended as ended:
                log.info(
                    "smtp client session with {host} ended at {stage}: {code} {enhanced} {text}",
                    host=self.host, stage=self.stage, code=ended.code, enhanced=ended.enhanced,
                    text=ended.text,
                )
                self.settle_unfinished(ended)
                if not ended.polite:
                    client.close(self.timeouts.quit)
                    return self.result()
            await client.quit(self.timeouts.quit)
            return self.result()
        except BaseException:
            client.abort(_Ended(0, "4.3.0", "internal error"))
            raise

    async def _read(self, timeout: float, what: str, *, ok: tuple[int, ...] = (2,)) -> ServerReply:
        """The next reply; a 421 ends the session, a reply of an unexpected class is an error."""
        reply = await self.client.read(timeout, what)
        if reply.code == 421:
            raise _Ended.from_reply(reply, polite=False)
        if reply.code // 100 not in (*ok, 4, 5):
            ended = _Ended(0, "4.5.0", f"protocol error: reply {reply} to {what}")
            self.client.abort(ended)
            raise ended
        return reply

    async def _open(self):
        greeting = await self._read(self.timeouts.greeting, "the connection")
        if greeting.code // 100 != 2:  # RFC 5321 §4.3.2: 220, or 554 for "no service"
            raise _Ended.from_reply(greeting, polite=True)
        self.stage = "ehlo"
        self.extensions = await self._hello()
        if self.policy is not TLSPolicy.NONE:
            await self._starttls()
        if self.auth is not None:
            await self._authenticate()

    async def _hello(self) -> Extensions:
        helo = self.helo_name.encode("ascii")
        self.client.send(b"EHLO " + helo + b"\r\n")
        reply = await self._read(self.timeouts.command, "EHLO")
        if reply.code // 100 == 2:
            return Extensions.from_reply(reply)
        if reply.code // 100 == 5:
            # RFC 5321 §3.2: a server that does not know EHLO still knows HELO.
            self.client.send(b"HELO " + helo + b"\r\n")
            reply = await self._read(self.timeouts.command, "HELO")
            if reply.code // 100 == 2:
                return Extensions.none()
        raise _Ended.from_reply(reply, polite=True)

    async def _starttls(self):
        required = self.policy is TLSPolicy.VERIFY
        if "STARTTLS" not in self.extensions:
            if required:
                self.stage = "starttls"
                raise _Ended(0, "4.7.4", f"TLS required, but {self.host} does not offer STARTTLS",
                             polite=True)
            return
        self.stage = "starttls"
        self.client.send(b"STARTTLS\r\n")
        reply = await self._read(self.timeouts.command, "STARTTLS")
        if reply.code // 100 != 2:
            if required:
                raise _Ended(0, "4.7.4", f"TLS required, but STARTTLS was refused: {reply}",
                             polite=True)
            # Opportunistic: the session goes on unencrypted, as before STARTTLS.
            log.info("smtp client STARTTLS refused by {host}: {reply}", host=self.host, reply=str(reply))
            self.stage = "ehlo"
            return
        options = self.verifying_options if required else ssl.CertificateOptions(verify=False)
        self.client.start_tls(options)
        # RFC 3207 §4.2: what the server announced before TLS no longer holds.
        self.extensions = await self._hello()
        self.tls = True
        self.stage = "ehlo"

    async def _authenticate(self):
        self.stage = "auth"
        if not (self.tls or self.client.peer_is_loopback()):
            raise _Ended(0, "4.7.0", f"credentials withheld: the connection to {self.host} is not "
                         "encrypted and not to a loopback address", polite=True)
        user, password = (s.encode("utf-8") for s in self.auth)
        mechanisms = self.extensions.auth_mechanisms
        if "PLAIN" in mechanisms:
            # RFC 4616: authzid NUL authcid NUL password, as an initial response (RFC 4954 §4).
            token = base64.b64encode(b"\0" + user + b"\0" + password)
            command, responses = b"AUTH PLAIN " + token + b"\r\n", []
        elif "LOGIN" in mechanisms:
            command, responses = b"AUTH LOGIN\r\n", [base64.b64encode(user), base64.b64encode(password)]
        else:
            raise _Ended(0, "4.7.0", f"{self.host} offers no AUTH mechanism this client has "
                         "(PLAIN, LOGIN)", polite=True)
        self.client.send(command)
        reply = await self._read(self.timeouts.command, "AUTH", ok=(2, 3))
        while reply.code // 100 == 3:
            if not responses:
                ended = _Ended(0, "4.5.0", f"protocol error: unexpected challenge {reply} to AUTH")
                self.client.abort(ended)
                raise ended
            self.client.send(responses.pop(0) + b"\r\n")
            reply = await self._read(self.timeouts.command, "AUTH", ok=(2, 3))
        if reply.code // 100 != 2:
            # 535 (RFC 4954 §6) is permanent for everything on this connection.
            raise _Ended.from_reply(reply, polite=True)

    # -- one transaction

    async def _transaction(self, index: int, message: OutboundMessage):
        if not message.recipients:
            return
        self.stage = "mail"
        refusal = self._refusal(message)
        if refusal is not None:
            self.settle_message(index, *refusal, "mail")
            return
        utf8 = "SMTPUTF8" in self.extensions and _wants_smtputf8(message)
        try:
            mail_line = mail_command(message.mail_from, self._mail_params(message, utf8=utf8), utf8=utf8)
        except EnvelopeError as e:
            self.settle_message(index, 553, "5.1.7", f"not sent: {e}", "mail")
            return
        rcpt_lines = []
        for position, (address, params) in enumerate(message.recipients):
            try:
                rcpt_lines.append((position, rcpt_command(address, self._rcpt_params(params), utf8=utf8)))
            except EnvelopeError as e:
                self.settle(index, position, 553, "5.1.3", f"not sent: {e}", "rcpt")
        if not rcpt_lines:
            return
        if self.in_transaction:
            await self._reset()
        pipelining = "PIPELINING" in self.extensions
        client = self.client
        if pipelining:
            # RFC 2920 §3.1: MAIL, the RCPTs and DATA in one group, DATA last.
            client.send(mail_line, *(line for _, line in rcpt_lines), b"DATA\r\n")
        else:
            client.send(mail_line)
        mail = await self._read(self.timeouts.mail, "MAIL")
        sender_ok = mail.code // 100 == 2
        self.in_transaction = sender_ok
        if not sender_ok:
            self.settle_message(index, mail.code, mail.enhanced, mail.text, "mail")
            if not pipelining:
                return
        self.stage = "rcpt"
        accepted = []
        for position, line in rcpt_lines:
            if not pipelining:
                client.send(line)
            reply = await self._read(self.timeouts.rcpt, "RCPT")
            if not sender_ok:
                continue
            if reply.code // 100 == 2:
                accepted.append(position)
            else:
                self.settle(index, position, reply.code, reply.enhanced, reply.text, "rcpt")
        self.stage = "data"
        if not pipelining:
            if not accepted:
                return
            client.send(b"DATA\r\n")
        reply = await self._read(self.timeouts.data, "DATA", ok=(3,))
        if reply.code // 100 != 3:
            for position in accepted:
                self.settle(index, position, reply.code, reply.enhanced, reply.text, "data")
            return
        if not accepted:
            # RFC 2920 §3.1: DATA was accepted though nothing else was; an empty message
            # gets the server back to commands, and the RSET before the next one drops it.
            self.in_transaction = True
            await client.send_data(b"", self.timeouts.data_block)
            await self._read(self.timeouts.data_end, "the end of data")
            return
        await client.send_data(message.data, self.timeouts.data_block)
        final = await self._read(self.timeouts.data_end, "the end of data")
        self.in_transaction = False
        for position in accepted:
            self.settle(index, position, final.code, final.enhanced, final.text, "data")
        log.info(
            "smtp client message to {host}: {code} {enhanced} {text} recipients={count}",
            host=self.host, code=final.code, enhanced=final.enhanced, text=final.text,
            count=len(accepted),
        )

    async def _reset(self):
        self.client.send(b"RSET\r\n")
        reply = await self._read(self.timeouts.command, "RSET")
        if reply.code // 100 != 2:
            raise _Ended(0, "4.5.0", f"RSET refused: {reply}", polite=True)
        self.in_transaction = False

    def _refusal(self, message: OutboundMessage) -> tuple[int, str, str] | None:
        """A reason not to send ``message`` to this server at all, or None."""
        params = _upper_keys(message.mail_params)
        if str(params.get("BODY") or "").upper() == "BINARYMIME":
            # RFC 3030 §3: BINARYMIME content can only travel with BDAT, which is not used.
            return 554, "5.6.3", "BINARYMIME content cannot be relayed without CHUNKING"
        if _needs_smtputf8(message) and "SMTPUTF8" not in self.extensions:
            # RFC 6531 §3.2
            return 553, "5.6.7", f"{self.host} does not support SMTPUTF8, which this message needs"
        limit = self.extensions.size_limit
        if limit is not None and len(message.data) > limit:
            # RFC 1870 §6
            return 552, "5.3.4", (f"message size {len(message.data)} exceeds the limit of "
                                  f"{limit} of {self.host}")
        return None

    def _mail_params(self, message: OutboundMessage, *, utf8: bool) -> list[tuple[str, str | None]]:
        given = _upper_keys(message.mail_params)
        params: list[tuple[str, str | None]] = []
        if "SIZE" in self.extensions:
            params.append(("SIZE", str(len(message.data))))  # RFC 1870 §3
        if str(given.get("BODY") or "").upper() == "8BITMIME" and "8BITMIME" in self.extensions:
            params.append(("BODY", "8BITMIME"))  # RFC 6152 §3
        if utf8:
            params.append(("SMTPUTF8", None))  # RFC 6531 §3.4
        if "DSN" in self.extensions:
            # RFC 3461 §4.3-4
            params += [(k, given[k]) for k in ("RET", "ENVID") if given.get(k) is not None]
        return params

    def _rcpt_params(self, params: dict) -> list[tuple[str, str | None]]:
        if "DSN" not in self.extensions:
            return []
        given = _upper_keys(params)
        # RFC 3461 §4.1-2
        return [(k, given[k]) for k in ("NOTIFY", "ORCPT") if given.get(k) is not None]


def _upper_keys(params: dict | None) -> dict:
    return {str(k).upper(): v for k, v in (params or {}).items()}


def _wants_smtputf8(message: OutboundMessage) -> bool:
    return "SMTPUTF8" in _upper_keys(message.mail_params) or _needs_smtputf8(message)


def _needs_smtputf8(message: OutboundMessage) -> bool:
    """
    Whether the message cannot travel without SMTPUTF8: a UTF-8 address, or UTF-8 in the
    header section of a message sent with SMTPUTF8 (RFC 6532).  A message that asked for
    SMTPUTF8 but is all ASCII where it matters goes as it is.
    """
    if not message.mail_from.isascii() or any(not a.isascii() for a, _ in message.recipients):
        return True
    if "SMTPUTF8" not in _upper_keys(message.mail_params):
        return False
    return not _header_section(message.data).isascii()


def _header_section(data: bytes) -> bytes:
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return data[: min(ends)] if ends else data
