"""
Who a bind proves to be (RFC 4513 §5): a DN or a SASL authentication identity and a
password checked against the admin DN and the directory, and the EXTERNAL identity of a
unix-socket peer.  Answers are an Identity or None, or a Deferred of one when the password
check is slow; the LDAP protocol that sends the BindResponse lives in server.py.
"""

from __future__ import annotations

import hmac
import os

from twisted.internet import defer

from mailsuite.directory.entry import DNError, normalize_dn
from mailsuite.directory.schema import is_account
from mailsuite.ldap import sasl
from mailsuite.ldap.acl import Identity

# A login no account has: unknown bind DNs verify against the directory's dummy hash, so
# that they cost what a wrong password costs.
_NO_LOGIN = "\0"


class Authenticator:
    """Checks credentials against the admin DN and password and against ``directory``."""

    def __init__(self, *, directory, admin_dn: str, admin_password: str):
        self.directory = directory
        self.admin_dn = admin_dn
        self.admin_password = admin_password
        try:
            self.admin_ndn = normalize_dn(admin_dn) if admin_dn else None
        except DNError:
            self.admin_ndn = None

    def by_dn(self, dn: str, password: str):
        """
        The Identity that ``dn`` and ``password`` prove, or None.  An unknown DN costs what
        a wrong password costs.
        """
        try:
            ndn = normalize_dn(dn)
        except DNError:
            ndn = None
        if ndn is not None and ndn == self.admin_ndn and self.admin_password:
            if hmac.compare_digest(password.encode(), self.admin_password.encode()):
                return Identity(dn=dn, ndn=ndn, admin=True)
            return None
        entry = self.directory.get(dn) if ndn else None
        login = _NO_LOGIN
        if entry is not None and is_account(entry) and isinstance(entry.first("uid"), str):
            login = entry.first("uid")
        d = defer.maybeDeferred(self.directory.check_password, login, password)

        def checked(account):
            if account is not None and _same_dn(account.dn, ndn):
                return Identity(dn=entry.dn, ndn=ndn, uid=account.uid)
            return None

        return d.addCallback(checked)

    def by_login(self, login: str, password: str):
        """
        Like by_dn for a SASL authentication identity: a DN ("dn:" prefixed or not), a uid
        ("u:" prefixed or not) or a mail address.  A name with both "=" and "@" is a DN when
        it names an entry (or the admin), else a mail address.
        """
        if login.startswith("dn:"):
            return self.by_dn(login[3:], password)
        if login.startswith("u:"):
            login = login[2:]
        elif "=" in login and ("@" not in login or self._names_entry(login)):
            return self.by_dn(login, password)
        d = defer.maybeDeferred(self.directory.check_password, login, password)

        def checked(account):
            if account is None:
                return None
            try:
                return Identity(dn=account.dn, ndn=normalize_dn(account.dn), uid=account.uid)
            except DNError:
                return None

        return d.addCallback(checked)

    def external(self, peer_uid: int | None) -> Identity | None:
        """
        The identity of a unix-socket peer for SASL EXTERNAL: root or the server's own user
        is the admin (as with OpenLDAP's ldapi:/// and -Y EXTERNAL); anyone else is nobody.
        """
        if peer_uid is None or peer_uid not in (0, os.getuid()) or self.admin_ndn is None:
            return None
        return Identity(dn=self.admin_dn, ndn=self.admin_ndn, admin=True)

    def _names_entry(self, dn: str) -> bool:
        try:
            ndn = normalize_dn(dn)
        except DNError:
            return False
        return ndn == self.admin_ndn or self.directory.get(dn) is not None


def _same_dn(dn: str, ndn: str | None) -> bool:
    try:
        return ndn is not None and normalize_dn(dn) == ndn
    except DNError:
        return False


def authorized(authzid: str, identity: Identity) -> bool:
    """
    May ``identity`` act as ``authzid``?  Only as itself (RFC 4616 §2; RFC 4513 §5.2.1.8
    forms): an empty authzid, or one naming the same DN or user.
    """
    return not authzid or sasl.names_identity(authzid, dn=identity.dn, uid=identity.uid)


class ThrottledAuthenticator:
    """
    An Authenticator whose password checks go through the suite's login throttle (see
    mailsuite.throttle): failed binds from one client or for one name wait longer and
    longer, exactly as failed IMAP, POP3 and SMTP logins do.
    """

    def __init__(self, auth: Authenticator, throttle, client: str):
        self._auth = auth
        self._throttle = throttle
        self._client = client

    def by_dn(self, dn: str, password: str):
        return self._throttle.guarded(dn, self._client, lambda: self._auth.by_dn(dn, password))

    def by_login(self, login: str, password: str):
        return self._throttle.guarded(login, self._client,
                                      lambda: self._auth.by_login(login, password))

    def __getattr__(self, name):
        return getattr(self._auth, name)
