"""
Authentication shared by every protocol: one twisted.cred Portal whose checker asks the
directory, a realm handing out IMailAccount avatars, and the SASL mechanisms' pure decoders.
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import implementer

from mailsuite.interfaces import IMailAccount


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


def make_portal(directory, store) -> portal.Portal:
    """The one Portal shared by SMTP AUTH, IMAP, POP3, LDAP bind and the web."""
    return portal.Portal(MailRealm(directory, store), [DirectoryChecker(directory)])
