"""
Authentication shared by every protocol: one twisted.cred Portal whose checker asks the
directory, a realm handing out IMailAccount avatars, the failed-login throttle in front of
them, and the SASL mechanisms' pure decoders.
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.config import SecurityConfig
from mailsuite.interfaces import IMailAccount
from mailsuite.throttle import AuthThrottle

log = Logger()


class SASLError(ValueError):
    """The client's SASL response is malformed."""


def decode_base64(data: bytes) -> bytes:
    """Strict base64 as SASL exchanges it (RFC 4954 §4); SASLError when malformed."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise SASLError("malformed base64") from e


def parse_plain(response: bytes) -> tuple[str, str, str]:
    """
    Decode a SASL PLAIN message (RFC 4616 §2), already base64-decoded:
    ``authzid NUL authcid NUL passwd``.  Returns (authzid, authcid, password) as str.
    """
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise SASLError("PLAIN needs authzid, authcid and password separated by NUL")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError as e:
        raise SASLError("PLAIN credentials are not UTF-8") from e
    if not authcid or not password:
        raise SASLError("PLAIN needs an authcid and a password")
    return authzid, authcid, password


@implementer(ICredentialsChecker)
class DirectoryChecker:
    """
    Checks IUsernamePassword credentials against an IDirectory.  The avatarId is the
    account's uid (str).  Unknown login and wrong password fail alike.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, directory):
        self.directory = directory

    def requestAvatarId(self, creds):
        login = _text(creds.username)
        password = _text(creds.password)
        d = defer.maybeDeferred(self.directory.check_password, login, password)

        def checked(account):
            if account is None:
                raise error.UnauthorizedLogin("authentication failed")
            return account.uid

        return d.addCallback(checked)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


@implementer(IMailAccount)
class MailAccount:
    """See IMailAccount."""

    def __init__(self, account, store):
        self.account = account
        self.store = store


@implementer(portal.IRealm)
class MailRealm:
    """Hands out IMailAccount avatars for account uids."""

    def __init__(self, directory, store):
        self.directory = directory
        self.store = store

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMailAccount not in interfaces:
            raise NotImplementedError("mailsuite's realm only provides IMailAccount")
        d = defer.maybeDeferred(self.directory.account, _text(avatarId))

        def found(account):
            if account is None:
                raise error.UnauthorizedLogin("account vanished")
            return IMailAccount, MailAccount(account, self.store), lambda: None

        return d.addCallback(found)


class ThrottledPortal:
    """
    A Portal with the AuthThrottle in front: ``login`` has Portal.login's signature and
    results, but an attempt for a login name or from a client that failed too often first
    waits (a timer, never a block of the reactor) and only then is checked, whatever the
    outcome.  Unknown login names and wrong passwords count and wait alike.

    Protocols call ``for_client(address)`` once per connection so that the client's
    address is counted too; ``login`` on the portal itself counts the login name only.
    """

    def __init__(self, portal: portal.Portal, throttle: AuthThrottle, *, clock):
        self.portal = portal
        self.throttle = throttle
        self.clock = clock

    def __getattr__(self, name):
        # The rest of Portal (registerChecker, listCredentialsInterfaces, realm).
        return getattr(self.portal, name)

    def for_client(self, address) -> "ClientPortal":
        """The portal as one connection from ``address`` uses it."""
        return ClientPortal(self, address)

    def login(self, creds, mind, *interfaces, client=None) -> defer.Deferred:
        username = getattr(creds, "username", None)
        if username is None:
            return defer.maybeDeferred(self.portal.login, creds, mind, *interfaces)
        attempt = self.throttle.begin(username, client)
        if attempt.delay > 0:
            log.info("authentication for {login} from {client} held {delay}s after repeated "
                     "failures", login=_text(username), client=client or "-",
                     delay=attempt.delay)
            d = defer.Deferred()
            self.clock.callLater(attempt.delay, d.callback, None)
            d.addCallback(lambda _: self.portal.login(creds, mind, *interfaces))
        else:
            d = defer.maybeDeferred(self.portal.login, creds, mind, *interfaces)

        def counted(result):
            if not isinstance(result, Failure):
                self.throttle.succeeded(attempt)
            elif result.check(error.UnauthorizedLogin):
                self.throttle.failed(attempt)
            else:
                self.throttle.abandoned(attempt)
            return result

        return d.addBoth(counted)


class ClientPortal:
    """ThrottledPortal.login bound to one client address; see ThrottledPortal."""

    def __init__(self, portal: ThrottledPortal, address):
        self._portal = portal
        self.address = address

    def login(self, creds, mind, *interfaces) -> defer.Deferred:
        return self._portal.login(creds, mind, *interfaces, client=self.address)


def client_portal(portal, address):
    """
    The portal for one connection from ``address``: bound to the address when the portal
    throttles (see ThrottledPortal.for_client), else the portal itself.
    """
    for_client = getattr(portal, "for_client", None)
    if for_client is None or not address:
        return portal
    return for_client(address)


def make_portal(directory, store, *, security=None, clock=None) -> ThrottledPortal:
    """
    The one Portal shared by SMTP AUTH, IMAP and POP3, with the failed-login throttle set up
    from ``security`` (a [security] SecurityConfig; None: its defaults).
    """
    if clock is None:
        from twisted.internet import reactor as clock
    if security is None:
        security = SecurityConfig()
    throttle = AuthThrottle(
        clock,
        threshold=security.auth_failure_threshold,
        threshold_per_client=security.auth_failure_threshold_per_ip,
        window=security.auth_failure_window,
        first_delay=security.auth_failure_delay,
        max_delay=security.auth_max_delay,
    )
    realm = MailRealm(directory, store)
    return ThrottledPortal(portal.Portal(realm, [DirectoryChecker(directory)]), throttle,
                           clock=clock)
