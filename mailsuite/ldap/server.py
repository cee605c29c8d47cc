"""
The LDAPv3 server protocol (RFC 4511) on a Twisted transport: framing, one operation at a
time, bind, the extended operations, and output that waits for a slow reader.  ldaptor
decodes requests and encodes responses; searches, writes and access control live in their
own modules.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from ldaptor.protocols import pureldap
from twisted.internet import defer, interfaces, protocol
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.directory.entry import DNError, normalize_dn
from mailsuite.directory.schema import is_account
from mailsuite.interfaces import DirectoryError
from mailsuite.ldap import bind, codec, fastber, sasl, writes
from mailsuite.ldap.acl import ANONYMOUS, AccessPolicy, Identity
from mailsuite.ldap.filters import FilterError, from_ldaptor, from_wire
from mailsuite.ldap.search import SearchLimits, SearchQuery, Searcher, select_attributes

log = Logger()


@dataclass
class LDAPLimits:
    max_message_size: int = 1024 * 1024  # one BER message
    idle_timeout: float = 900.0
    max_pending_input: int = 4 * 1024 * 1024  # read while an operation runs, before pausing
    output_batch: int = 64 * 1024  # search output is written in chunks of about this size
    search: SearchLimits = None

    def __post_init__(self):
        if self.search is None:
            self.search = SearchLimits()


_BINDS = (fastber.SimpleBind, fastber.SaslBind, pureldap.LDAPBindRequest)

_WRITES = {
    pureldap.LDAPAddRequest: (writes.add, pureldap.LDAPAddResponse),
    pureldap.LDAPModifyRequest: (writes.modify, pureldap.LDAPModifyResponse),
    pureldap.LDAPDelRequest: (writes.delete, pureldap.LDAPDelResponse),
    pureldap.LDAPModifyDNRequest: (writes.modify_dn, pureldap.LDAPModifyDNResponse),
}


# The protocolOp tag byte of each LDAPResult response class, as ldaptor encodes it.
_RESULT_TAGS = {
    cls: cls(resultCode=0).toWire()[0]
    for cls in (pureldap.LDAPBindResponse, pureldap.LDAPSearchResultDone,
                pureldap.LDAPCompareResponse, pureldap.LDAPAddResponse,
                pureldap.LDAPModifyResponse, pureldap.LDAPDelResponse,
                pureldap.LDAPModifyDNResponse)
}


def _text(value) -> str | None:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except (AttributeError, UnicodeDecodeError):
        return None


@implementer(interfaces.IPushProducer)
class LDAPServer(protocol.Protocol):
    """One LDAP session.  Built by LDAPFactory."""

    def __init__(self, *, directory, policy: AccessPolicy, base_dn: str,
                 auth: bind.Authenticator, tls, implicit_tls: bool, limits: LDAPLimits, clock,
                 allow_plaintext_auth: bool = False):
        self.directory = directory
        self.allow_plaintext_auth = allow_plaintext_auth
        self.policy = policy
        self.auth = auth
        self.tls = tls
        self.secure = implicit_tls
        self.limits = limits
        self.clock = clock
        self.who: Identity = ANONYMOUS
        # A unix-socket connection: it never leaves the machine, and its peer is known.
        self.local = False
        self.peer_uid: int | None = None
        # A SASL mechanism waiting for the client's next message (RFC 4513 §5.2.1.2).
        self._sasl_pending: str | None = None
        self.searcher = Searcher(directory=directory, policy=policy, base_dn=base_dn,
                                 clock=clock, limits=limits.search)
        self._buffer = bytearray()
        self._busy = False
        self._closing = False
        self._paused_input = False
        self._output_paused = False
        self._output: Iterator[bytes] | None = None
        self._timer = None

    # ------------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        self.local = isinstance(self.transport.getHost(), UNIXAddress)
        if self.local:
            self.peer_uid = sasl.peer_uid(self.transport)
        self._reset_timer()

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self._output = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _reset_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.limits.idle_timeout)
        else:
            self._timer = self.clock.callLater(self.limits.idle_timeout, self._idle)

    def _idle(self) -> None:
        self._timer = None
        log.info("LDAP session idle; closing")
        self._disconnect(codec.UNAVAILABLE, "idle timeout")

    def _disconnect(self, code: int, text: str) -> None:
        """Send a Notice of Disconnection (RFC 4511 §4.4.1) and close."""
        if self._closing:
            return
        notice = pureldap.LDAPExtendedResponse(
            resultCode=code, errorMessage=text, responseName=codec.OID_NOTICE_OF_DISCONNECTION)
        self.transport.write(codec.encode(0, notice))
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._output = None
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._reset_timer()
        self._buffer += data
        self._process()
        if (self._busy and not self._paused_input
                and len(self._buffer) > self.limits.max_pending_input):
            self._paused_input = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        while not self._busy and not self._closing:
            try:
                size = codec.frame_length(self._buffer, max_size=self.limits.max_message_size)
                if size is None:
                    break
                frame = bytes(self._buffer[:size])
                del self._buffer[:size]
                request = codec.decode_message(frame)
            except codec.ProtocolError as e:
                log.info("LDAP protocol error: {error}", error=str(e))
                self._disconnect(codec.PROTOCOL_ERROR, "protocol error")
                return
            self._dispatch(request)
        if not self._busy and self._paused_input and not self._closing:
            self._paused_input = False
            self.transport.resumeProducing()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: codec.Request) -> None:
        op = request.op
        for oid, critical, _ in request.controls:
            if critical and oid != codec.OID_PAGED_RESULTS:
                # RFC 4511 §4.1.11
                self._result(request, self._response_class(op), codec.UNAVAILABLE_CRITICAL_EXTENSION,
                             "unsupported critical control")
                return
        if isinstance(op, fastber.Search):
            self._search(request)
        elif isinstance(op, _BINDS):
            self._wait(self._bind(request))
        elif isinstance(op, (fastber.Unbind, pureldap.LDAPUnbindRequest)):
            self._close()
        elif isinstance(op, pureldap.LDAPAbandonRequest):
            pass  # operations run one at a time: nothing is left to abandon
        elif isinstance(op, pureldap.LDAPSearchRequest):
            self._search(request)
        elif isinstance(op, pureldap.LDAPCompareRequest):
            self._compare(request)
        elif isinstance(op, pureldap.LDAPExtendedRequest):
            self._wait(self._extended(request))
        elif type(op) in _WRITES:
            self._write(request)
        else:
            self._disconnect(codec.PROTOCOL_ERROR, "not a request")

    @staticmethod
    def _response_class(op):
        if isinstance(op, (fastber.Search, pureldap.LDAPSearchRequest)):
            return pureldap.LDAPSearchResultDone
        if isinstance(op, _BINDS):
            return pureldap.LDAPBindResponse
        if isinstance(op, pureldap.LDAPCompareRequest):
            return pureldap.LDAPCompareResponse
        if type(op) in _WRITES:
            return _WRITES[type(op)][1]
        return pureldap.LDAPExtendedResponse

    def _wait(self, d) -> None:
        """Hold further requests until ``d`` (a Deferred or None) has fired."""
        if not isinstance(d, defer.Deferred) or d.called:
            return
        self._busy = True

        def done(_):
            self._busy = False
            if not self._closing:
                self._process()

        d.addBoth(done)

    def _send(self, request: codec.Request, op, controls=None) -> None:
        if not self._closing:
            self.transport.write(codec.encode(request.id, op, controls))

    def _result(self, request, cls, code: int, text: str = "", **extra) -> None:
        tag = _RESULT_TAGS.get(cls)
        if tag is not None and not extra:
            if not self._closing:
                self.transport.write(fastber.encode_result(request.id, tag, code, text))
            return
        self._send(request, cls(resultCode=code, errorMessage=text, **extra))

    # ------------------------------------------------------------------ bind (RFC 4511 §4.2)

    def _bind(self, request):
        op = request.op
        respond = lambda code, text="": self._result(request, pureldap.LDAPBindResponse, code, text)  # noqa: E731
        # RFC 4511 §4.2.1: a bind (even a failing one) first makes the session anonymous.
        self.who = ANONYMOUS
        pending, self._sasl_pending = self._sasl_pending, None
        if op.version != 3:
            respond(codec.PROTOCOL_ERROR, "only LDAPv3 is supported")
            return None
        if isinstance(op, fastber.SaslBind):
            return self._sasl_bind(request, _text(op.mechanism), op.credentials, pending)
        if op.sasl:
            mechanism, credentials = op.auth
            return self._sasl_bind(request, _text(mechanism), credentials, pending)
        dn, password = _text(op.dn), _text(op.auth)
        if dn is None or password is None:
            respond(codec.INVALID_CREDENTIALS, "invalid credentials")
            return None
        if not dn and not password:
            respond(codec.SUCCESS)
            return None
        if not password:
            # RFC 4513 §5.1.2: unauthenticated binds are refused.
            respond(codec.UNWILLING_TO_PERFORM, "unauthenticated bind refused")
            return None
        if not self._may_send_secrets():
            # RFC 4513 §6.3.1: a server may refuse simple binds without confidentiality.
            respond(codec.CONFIDENTIALITY_REQUIRED, "TLS required: use StartTLS or ldaps")
            return None
        return self._finish_bind(self.auth.by_dn(dn, password), respond)

    def _finish_bind(self, checking, respond, *, authzid: str = ""):
        """
        Answer a bind once ``checking`` (an Identity, None, or a Deferred of either) is
        known; ``authzid`` is the authorization identity a SASL client asked for.
        """
        def checked(identity):
            if identity is None:
                respond(codec.INVALID_CREDENTIALS, "invalid credentials")
            elif not bind.authorized(authzid, identity):
                # RFC 4616 §2: only the authenticated identity itself may be assumed.
                respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "authorization denied")
            else:
                self.who = identity
                respond(codec.SUCCESS)

        def failed(failure):
            log.failure("LDAP bind check failed", failure)
            respond(codec.UNAVAILABLE, "try again later")

        if not isinstance(checking, defer.Deferred):
            checked(checking)
            return None
        return checking.addCallbacks(checked, failed)

    def _sasl_bind(self, request, mechanism: str | None, credentials: bytes | None,
                   pending: str | None):
        """
        RFC 4513 §5.2.1: PLAIN (credentials in the first bind or, after an empty challenge,
        in the next) and EXTERNAL.
        """
        respond = lambda code, text="": self._result(request, pureldap.LDAPBindResponse, code, text)  # noqa: E731
        if mechanism == sasl.PLAIN:
            if not self._may_send_secrets():
                respond(codec.CONFIDENTIALITY_REQUIRED, "TLS required: use StartTLS or ldaps")
                return None
            if credentials is None and pending != sasl.PLAIN:
                # RFC 4422 §5: no initial response; ask for it with an empty challenge.
                self._sasl_pending = sasl.PLAIN
                self._send_bind_challenge(request)
                return None
            try:
                plain = sasl.parse_plain(credentials)
            except sasl.SASLError as e:
                log.info("LDAP SASL PLAIN refused: {error}", error=str(e))
                respond(codec.INVALID_CREDENTIALS, "invalid credentials")
                return None
            checking = self.auth.by_login(plain.authcid, plain.password)
            # RFC 4616 §2: an authzid equal to the authcid asks for nothing more.
            authzid = "" if plain.authzid == plain.authcid else plain.authzid
            return self._finish_bind(checking, respond, authzid=authzid)
        if mechanism == sasl.EXTERNAL:
            self._external_bind(respond, credentials)
            return None
        respond(codec.AUTH_METHOD_NOT_SUPPORTED, "unsupported SASL mechanism")
        return None

    def _external_bind(self, respond, credentials: bytes | None) -> None:
        """EXTERNAL: only on a unix socket, whose peer's user decides (see Authenticator)."""
        if not self.local:
            # No credentials were established outside LDAP (RFC 4513 §5.2.3).
            respond(codec.INAPPROPRIATE_AUTHENTICATION, "no external credentials")
            return
        identity = self.auth.external(self.peer_uid)
        if identity is None:
            log.info("LDAP SASL EXTERNAL refused for uid {uid}", uid=self.peer_uid)
            respond(codec.INVALID_CREDENTIALS, "invalid credentials")
            return
        # RFC 4422 Appendix A: the message, if any, is the authorization identity.
        authzid = _text(credentials or b"")
        if authzid is None or not bind.authorized(authzid, identity):
            respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "authorization denied")
            return
        self.who = identity
        respond(codec.SUCCESS)

    def _send_bind_challenge(self, request) -> None:
        if not self._closing:
            self.transport.write(fastber.encode_bind_result(
                request.id, codec.SASL_BIND_IN_PROGRESS, "", b""))

    # ------------------------------------------------------------------ search

    def _search(self, request) -> None:
        op = request.op
        done = pureldap.LDAPSearchResultDone
        base = _text(op.baseObject)
        if base is None or op.scope not in (0, 1, 2):
            self._result(request, done, codec.PROTOCOL_ERROR, "malformed search")
            return
        try:
            f = from_wire(op.filter) if isinstance(op, fastber.Search) else from_ldaptor(op.filter)
        except FilterError:
            self._result(request, done, codec.PROTOCOL_ERROR, "malformed filter")
            return
        page = None
        for oid, _, value in request.controls:
            if oid == codec.OID_PAGED_RESULTS:
                try:
                    page = codec.decode_paged_control(value)
                except codec.ProtocolError:
                    self._result(request, done, codec.PROTOCOL_ERROR, "malformed control")
                    return
        query = SearchQuery(base, op.scope, f, max(op.sizeLimit, 0), max(op.timeLimit, 0))
        result = self.searcher.search(self.who, query, page=page)
        requested = [t for t in (_text(a) for a in op.attributes) if t is not None]
        types_only = bool(op.typesOnly)
        controls = None
        if result.cookie is not None:
            controls = [(codec.OID_PAGED_RESULTS, False,
                         codec.encode_paged_control(0, result.cookie))]
        if controls is None:
            final = fastber.encode_result(request.id, _RESULT_TAGS[done], result.code,
                                          result.message)
        else:
            final = codec.encode(request.id, done(resultCode=result.code,
                                                  errorMessage=result.message), controls)

        def messages():
            for entry in result.entries:
                attributes = select_attributes(entry, result.who, self.policy, requested,
                                               types_only=types_only, directory=self.directory)
                yield fastber.encode_entry(request.id, entry.dn, attributes)
            yield final

        self._stream(messages())

    def _stream(self, messages: Iterator[bytes]) -> None:
        """
        Write ``messages`` in batches of about limits.output_batch bytes, pausing while the
        transport's buffer is full.  Output that fits in one batch is written at once.
        """
        chunk, more = self._batch(messages)
        if not more:
            if not self._closing:
                self.transport.write(chunk)
            return
        self._output = messages
        self._busy = True
        self._output_paused = False
        self.transport.registerProducer(self, True)
        self.transport.write(chunk)
        self._pump()

    def _batch(self, messages: Iterator[bytes]) -> tuple[bytes, bool]:
        """(the next batch of bytes, whether more messages may follow)."""
        parts = []
        size = 0
        limit = self.limits.output_batch
        for message in messages:
            parts.append(message)
            size += len(message)
            if size >= limit:
                return b"".join(parts), True
        return b"".join(parts), False

    def _pump(self) -> None:
        while self._output is not None and not self._output_paused and not self._closing:
            chunk, more = self._batch(self._output)
            if chunk:
                self.transport.write(chunk)
            if not more:
                self._output = None
                self.transport.unregisterProducer()
                self._busy = False
                self._process()
                return

    def pauseProducing(self) -> None:
        self._output_paused = True

    def resumeProducing(self) -> None:
        self._output_paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._output = None
        self._closing = True

    # ------------------------------------------------------------------ compare (§4.10)

    def _compare(self, request) -> None:
        op = request.op
        respond = lambda code, text="": self._result(request, pureldap.LDAPCompareResponse, code, text)  # noqa: E731
        dn = _text(op.entry)
        try:
            name = _text(op.ava.attributeDesc.value)
            wanted = op.ava.assertionValue.value
        except AttributeError:
            name = None
        if dn is None or not name:
            respond(codec.PROTOCOL_ERROR, "malformed compare")
            return
        try:
            ndn = normalize_dn(dn)
        except DNError:
            respond(codec.INVALID_DN_SYNTAX, "invalid DN")
            return
        entry = self.directory.get(dn)
        if entry is None or not self.policy.may_see_entry(self.who, ndn):
            respond(codec.NO_SUCH_OBJECT, "no such object")
            return
        if not self.policy.may_compare(self.who, ndn, name):
            respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "insufficient access")
            return
        if not entry.has(name):
            respond(codec.NO_SUCH_ATTRIBUTE, "no such attribute")
            return
        text = _text(wanted)
        value = text if text is not None else wanted
        same = any(
            (v.casefold() == value.casefold()) if isinstance(v, str) and isinstance(value, str)
            else v == value
            for v in entry.get(name)
        )
        respond(codec.COMPARE_TRUE if same else codec.COMPARE_FALSE)

    # ------------------------------------------------------------------ writes

    def _write(self, request) -> None:
        apply, response = _WRITES[type(request.op)]
        if not self.policy.may_write(self.who):
            self._result(request, response, codec.INSUFFICIENT_ACCESS_RIGHTS, "insufficient access")
            return
        try:
            apply(self.directory, request.op)
        except writes.WriteError as e:
            self._result(request, response, e.code, e.text)
            return
        log.info("LDAP {op} by {who}", op=type(request.op).__name__, who=self.who.dn)
        self._result(request, response, codec.SUCCESS)

    # ------------------------------------------------------------------ extended (§4.12)

    def _extended(self, request):
        name = request.op.requestName
        name = name.encode() if isinstance(name, str) else name
        if name == codec.OID_START_TLS:
            self._start_tls(request)
        elif name == codec.OID_WHO_AM_I:
            authz = f"dn:{self.who.dn}".encode() if not self.who.anonymous else b""
            self._result(request, pureldap.LDAPExtendedResponse, codec.SUCCESS, response=authz)
        elif name == codec.OID_PASSWORD_MODIFY:
            return self._password_modify(request)
        else:
            self._result(request, pureldap.LDAPExtendedResponse, codec.PROTOCOL_ERROR,
                         "unsupported extended operation")
        return None

    def _start_tls(self, request) -> None:
        respond = lambda code, text="", **kw: self._result(request, pureldap.LDAPExtendedResponse, code, text, **kw)  # noqa: E731
        if self.secure:
            # RFC 4511 §4.14.2: TLS is already established.
            respond(codec.OPERATIONS_ERROR, "TLS already established")
            return
        if self.tls is None:
            respond(codec.UNAVAILABLE, "TLS is not available")
            return
        respond(codec.SUCCESS, responseName=codec.OID_START_TLS)
        # Bytes sent after the request, before the handshake, must not run inside TLS
        # (the CVE-2011-0411 class): drop them.
        self._buffer.clear()
        self.transport.startTLS(self.tls)
        self.secure = True

    def _may_send_secrets(self) -> bool:
        """
        Passwords travel only inside TLS, or over a unix socket (they never leave the
        machine), unless the administrator allowed otherwise.
        """
        return self.secure or self.local or self.allow_plaintext_auth

    def _password_modify(self, request):
        respond = lambda code, text="", **kw: self._result(request, pureldap.LDAPExtendedResponse, code, text, **kw)  # noqa: E731
        if not self._may_send_secrets():
            respond(codec.CONFIDENTIALITY_REQUIRED, "TLS required: use StartTLS or ldaps")
            return None
        try:
            fields = codec.decode_password_modify(request.op.requestValue)
        except codec.ProtocolError:
            respond(codec.PROTOCOL_ERROR, "malformed request")
            return None
        if self.who.anonymous:
            respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "bind first")
            return None
        target = _text(fields[0]) if 0 in fields else self.who.dn
        if target is None:
            respond(codec.PROTOCOL_ERROR, "malformed user identity")
            return None
        if target.lower().startswith("dn:"):
            target = target[3:]
        entry = None
        try:
            entry = self.directory.get(target)
        except DirectoryError:
            entry = None
        if entry is None:
            account = self.directory.find_account(target)
            entry = self.directory.get(account.dn) if account is not None else None
        if entry is None or not is_account(entry):
            if self.who.admin:
                respond(codec.NO_SUCH_OBJECT, "no such user")
            else:
                respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "insufficient access")
            return None
        if not self.policy.may_set_password(self.who, entry.ndn):
            respond(codec.INSUFFICIENT_ACCESS_RIGHTS, "insufficient access")
            return None
        new = _text(fields[2]) if 2 in fields else None
        if 2 in fields and not new:
            respond(codec.UNWILLING_TO_PERFORM, "unacceptable new password")
            return None
        generated = new is None
        if generated:
            new = secrets.token_urlsafe(12)
        uid = entry.first("uid")
        old = _text(fields[1]) if 1 in fields else None
        if 1 in fields and not self.who.admin:
            d = defer.maybeDeferred(self.directory.check_password, uid, old or "")
        else:
            d = defer.succeed(True)

        def verified(ok):
            if not ok:
                respond(codec.INVALID_CREDENTIALS, "invalid credentials")
                return
            try:
                self.directory.set_password(uid, new)
            except DirectoryError as e:
                log.info("password change refused: {error}", error=str(e))
                respond(codec.UNWILLING_TO_PERFORM, "password not changed")
                return
            log.info("LDAP password changed for {uid} by {who}", uid=uid, who=self.who.dn)
            if generated:
                respond(codec.SUCCESS, response=codec.encode_generated_password(new.encode()))
            else:
                respond(codec.SUCCESS)

        return d.addCallback(verified)


class LDAPFactory(protocol.Factory):
    """
    Builds LDAPServer sessions over ``directory`` (an EmbeddedDirectory).  ``tls`` is the
    context factory for StartTLS (None: no StartTLS); with ``implicit_tls`` the listener
    already wraps connections in TLS.
    """

    def __init__(self, *, hostname: str, directory, tls, implicit_tls: bool = False,
                 admin_dn: str = "", admin_password: str = "", anonymous_search: bool = True,
                 allow_plaintext_auth: bool = False, limits: LDAPLimits | None = None, clock,
                 throttle=None):
        self.hostname = hostname
        # The suite's login throttle (mailsuite.throttle.AuthThrottle), or None.
        self.throttle = throttle
        self.allow_plaintext_auth = allow_plaintext_auth
        self.directory = directory
        self.tls = None if implicit_tls else tls
        self.implicit_tls = implicit_tls
        self.admin_dn = admin_dn
        self.admin_password = admin_password
        self.limits = limits or LDAPLimits()
        self.clock = clock
        self.base_dn = directory.base_dn
        self.policy = AccessPolicy(base_ndn=normalize_dn(self.base_dn),
                                   anonymous_search=anonymous_search)
        self.auth = bind.Authenticator(directory=directory, admin_dn=admin_dn,
                                       admin_password=admin_password)

    def startFactory(self) -> None:
        # The substring index is built once the listener is up, between requests; until it
        # is ready, substring searches scan (bounded by the search limits).
        build = getattr(self.directory, "build_indexes_in_background", None)
        if build is not None:
            build(self.clock)

    def buildProtocol(self, addr):
        auth = self.auth
        if self.throttle is not None:
            auth = bind.ThrottledAuthenticator(auth, self.throttle,
                                               client=getattr(addr, "host", "local"))
        p = LDAPServer(
            directory=self.directory, policy=self.policy, base_dn=self.base_dn,
            auth=auth, tls=self.tls,
            implicit_tls=self.implicit_tls, limits=self.limits, clock=self.clock,
            allow_plaintext_auth=self.allow_plaintext_auth,
        )
        p.factory = self
        return p
