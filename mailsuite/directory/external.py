"""
An external LDAP server (OpenLDAP, Active Directory, ...) as the suite's directory.

Accounts, aliases, groups and forwards are read with searches on one service connection
(bound as ``bind_dn``), re-established when it fails.  Passwords are checked by the server
itself: a bind as the account's DN on a separate short connection, so no hash ever reaches
the suite.  Lookups are cached briefly.  Values put into filters are escaped (RFC 4515 §3),
and TLS (ldaps:// or StartTLS) is verified with service-identity.
"""

from __future__ import annotations

import collections
import urllib.parse

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error as net_error, ssl
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.directory.schema import (
    QUOTA_ATTRIBUTE,
    domain_of,
    is_address,
    normalize_address,
    parse_quota,
)
from mailsuite.interfaces import (
    Account,
    DirectoryError,
    Expansion,
    IDirectory,
    Recipient,
    RecipientKind,
)

log = Logger()

DEFAULT_USER_FILTER = "(&(objectClass=inetOrgPerson)(|(mail=%s)(uid=%s)(mailLocalAddress=%s)))"
DEFAULT_GROUP_FILTER = "(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))(mail=%s))"

# RFC 4511 §4.1.9 result codes.
SUCCESS = 0
INVALID_CREDENTIALS = 49
NO_SUCH_OBJECT = 32

# RFC 4511 §4.5.1.2 scopes.
SCOPE_BASE = 0
SCOPE_SUBTREE = 2

# RFC 4511 §4.14.1 StartTLS extended operation.
START_TLS_OID = b"1.3.6.1.4.1.1466.20037"

MAX_EXPANSION = 1000
MAX_DEPTH = 20
SIZE_LIMIT = 100

_CONNECTION_FAILURES = (
    net_error.ConnectError,
    net_error.ConnectionLost,
    net_error.ConnectionDone,
    defer.TimeoutError,
    defer.CancelledError,
    # A certificate that fails verification makes the server unreachable, not a crash.
    SSL.Error,
    VerificationError,
)


class ConnectionFailed(DirectoryError):
    """The LDAP server could not be reached, or the connection broke."""


# --------------------------------------------------------------------------- filters


_FILTER_SPECIALS = {"*", "(", ")", "\\", "\0"}


def escape_filter_value(value: str) -> str:
    """``value`` made safe for an LDAP filter assertion (RFC 4515 §3: ``*()\\`` and NUL)."""
    return "".join(f"\\{ord(c):02x}" if c in _FILTER_SPECIALS else c for c in value)


def render_filter(template: str, value: str) -> str:
    """The filter text of ``template`` with every ``%s`` replaced by the escaped ``value``."""
    return template.replace("%s", escape_filter_value(value))


def parse_filter(text: str):
    """The ldaptor filter object of ``text``; DirectoryError if it is not a valid filter."""
    from ldaptor.ldapfilter import InvalidLDAPFilter, parseFilter

    try:
        return parseFilter(text)
    except (InvalidLDAPFilter, ValueError) as e:
        raise DirectoryError(f"invalid LDAP filter {text!r}") from e


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an ``ldap://host:port`` or ``ldaps://host:port`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise DirectoryError(f"not an ldap:// or ldaps:// URL: {url!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise DirectoryError(f"bad port in {url!r}") from e
    return parts.scheme, parts.hostname, port or (636 if parts.scheme == "ldaps" else 389)


def tls_options(host: str, *, ca_file: str = "", verify: bool = True):
    """
    Client TLS options checking the server's certificate and name (service-identity) against
    ``ca_file`` or the platform's trust store; ``verify=False`` switches the checks off.
    """
    if not verify:
        return ssl.CertificateOptions(verify=False)
    trust = ssl.platformTrust()
    if ca_file:
        with open(ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------- connection


class LDAPConnection:
    """One client connection: bind, search and StartTLS as Deferreds, with a timeout each."""

    def __init__(self, client, *, reactor, timeout: float):
        self.client = client
        self.reactor = reactor
        self.timeout = timeout

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    def _send(self, op, handler=None):
        from ldaptor.protocols.ldap.ldapclient import LDAPClientConnectionLostException

        try:
            if handler is None:
                d = self.client.send(op)
            else:
                d = defer.Deferred()
                inner = self.client.send_multiResponse(op, handler, d)
                inner.addErrback(lambda failure: None if d.called else d.errback(failure))
        except LDAPClientConnectionLostException:
            return defer.fail(ConnectionFailed("connection to the LDAP server lost"))
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(self._failed)

    def _failed(self, failure):
        if failure.check(*_CONNECTION_FAILURES):
            self.close()
            raise ConnectionFailed(f"LDAP server connection failed: {failure.getErrorMessage()}")
        return failure

    def bind(self, dn: str, password: str):
        """Deferred[bool]: True when bound, False for invalid credentials."""
        from ldaptor.protocols import pureldap

        def answered(response):
            if response.resultCode == SUCCESS:
                return True
            if response.resultCode == INVALID_CREDENTIALS:
                return False
            raise DirectoryError(f"LDAP bind failed with result {response.resultCode}")

        request = pureldap.LDAPBindRequest(dn=dn.encode("utf-8"), auth=password.encode("utf-8"))
        return self._send(request).addCallback(answered)

    def search(self, base: str, filter_object, attributes, *, scope: int = SCOPE_SUBTREE):
        """Deferred[list[(dn, {lower-case attribute: [str]})]]; noSuchObject gives []."""
        from ldaptor.protocols import pureldap

        found = []

        def handle(response, done):
            if isinstance(response, pureldap.LDAPSearchResultEntry):
                attrs: dict[str, list[str]] = {}
                for name, values in response.attributes:
                    attrs.setdefault(_text(name).lower(), []).extend(_text(v) for v in values)
                found.append((_text(response.objectName), attrs))
                return False
            if isinstance(response, pureldap.LDAPSearchResultDone):
                if response.resultCode in (SUCCESS, NO_SUCH_OBJECT):
                    done.callback(found)
                else:
                    done.errback(DirectoryError(
                        f"LDAP search failed with result {response.resultCode}"))
                return True
            return False  # referrals are not followed

        request = pureldap.LDAPSearchRequest(
            baseObject=base.encode("utf-8"),
            scope=scope,
            sizeLimit=SIZE_LIMIT,
            timeLimit=max(1, int(self.timeout)),
            filter=filter_object,
            attributes=[a.encode("utf-8") for a in attributes],
        )
        return self._send(request, handle)

    def start_tls(self, options):
        """Deferred[None]: StartTLS (RFC 4511 §4.14) with ``options`` verifying the server."""
        from ldaptor.protocols import pureldap

        def answered(response):
            if response.resultCode != SUCCESS:
                raise ConnectionFailed(f"LDAP server refused StartTLS ({response.resultCode})")
            # Data written from now on waits for a verified handshake, so a bind never
            # reaches an unverified peer.
            self.client.transport.startTLS(options)

        return self._send(pureldap.LDAPExtendedRequest(requestName=START_TLS_OID)).addCallback(
            answered)

    def close(self) -> None:
        transport = getattr(self.client, "transport", None)
        if transport is not None and self.client.connected:
            transport.loseConnection()


def endpoint_connector(*, reactor, url: str, timeout: float, starttls: bool = False,
                       ca_file: str = "", tls_verify: bool = True):
    """A ``connect()`` returning Deferred[LDAPConnection] for ``url``, TLS set up as asked."""
    from ldaptor.protocols.ldap.ldapclient import LDAPClient

    scheme, host, port = parse_url(url)
    use_tls = scheme == "ldaps" or starttls
    options = tls_options(host, ca_file=ca_file, verify=tls_verify) if use_tls else None

    def connect():
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        if scheme == "ldaps":
            endpoint = wrapClientTLS(options, endpoint)
        d = connectProtocol(endpoint, LDAPClient())
        d.addTimeout(timeout, reactor)

        def connected(client):
            connection = LDAPConnection(client, reactor=reactor, timeout=timeout)
            if scheme == "ldap" and starttls:
                return connection.start_tls(options).addCallback(lambda _: connection)
            return connection

        def failed(failure):
            failure.trap(*_CONNECTION_FAILURES)
            raise ConnectionFailed(f"cannot reach the LDAP server: {failure.getErrorMessage()}")

        return d.addCallbacks(connected, failed)

    return connect


# --------------------------------------------------------------------------- cache


_MISSING = object()


class TTLCache:
    """At most ``size`` values, each forgotten ``ttl`` seconds after it was stored."""

    def __init__(self, *, clock, ttl: float, size: int):
        self.clock = clock
        self.ttl = ttl
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            return _MISSING
        expires, value = item
        if expires <= self.clock.seconds():
            del self._items[key]
            return _MISSING
        return value

    def put(self, key, value) -> None:
        if self.ttl <= 0:
            return
        self._items.pop(key, None)
        self._items[key] = (self.clock.seconds() + self.ttl, value)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


# --------------------------------------------------------------------------- directory


@implementer(IDirectory)
class ExternalDirectory:
    """See IDirectory.  Every method returns a Deferred."""

    def __init__(self, *, reactor, url: str, base_dn: str, domains, bind_dn: str = "",
                 bind_password: str = "", user_filter: str = DEFAULT_USER_FILTER,
                 group_filter: str = DEFAULT_GROUP_FILTER, uid_attribute: str = "uid",
                 mail_attribute: str = "mail", alias_attribute: str = "mailLocalAddress",
                 forward_attribute: str = "mailRoutingAddress",
                 host_attribute: str = "mailHost", member_attribute: str = "member",
                 quota_attribute: str = QUOTA_ATTRIBUTE, starttls: bool = False, ca_file: str = "", tls_verify: bool = True,
                 timeout: float = 10.0, cache_ttl: float = 30.0, cache_size: int = 4096,
                 connect=None):
        self.reactor = reactor
        self.base_dn = base_dn
        self.local_domains = frozenset(d.lower() for d in domains)
        self.bind_dn = bind_dn
        self.bind_password = bind_password
        self.user_filter = user_filter
        self.group_filter = group_filter
        self.uid_attribute = uid_attribute.lower()
        self.mail_attribute = mail_attribute.lower()
        self.alias_attribute = alias_attribute.lower()
        self.forward_attribute = forward_attribute.lower()
        self.host_attribute = host_attribute.lower()
        self.member_attribute = member_attribute.lower()
        self.quota_attribute = quota_attribute.lower()
        for template in (user_filter, group_filter):
            parse_filter(render_filter(template, "x"))  # fail at start on a broken filter
        self._connect = connect or endpoint_connector(
            reactor=reactor, url=url, timeout=timeout, starttls=starttls, ca_file=ca_file,
            tls_verify=tls_verify)
        self._cache = TTLCache(clock=reactor, ttl=cache_ttl, size=cache_size)
        self._service = None
        self._waiting: list[defer.Deferred] | None = None

    @property
    def _attributes(self) -> list[str]:
        return ["objectClass", self.uid_attribute, self.mail_attribute, self.alias_attribute,
                self.forward_attribute, self.host_attribute, self.member_attribute,
                self.quota_attribute, "cn", "displayName"]

    # ----------------------------------------------------------------------- connections

    def _service_connection(self):
        """Deferred[LDAPConnection] bound as bind_dn, shared by all lookups."""
        if self._service is not None and self._service.connected:
            return defer.succeed(self._service)
        waiter = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]

        def bound(ok, connection):
            if not ok:
                connection.close()
                raise DirectoryError("the LDAP server refused the service bind_dn credentials")
            return connection

        def opened(connection):
            if not self.bind_dn:
                return connection
            return connection.bind(self.bind_dn, self.bind_password).addCallback(
                bound, connection)

        def settle(result):
            waiting, self._waiting = self._waiting, None
            if not isinstance(result, Failure):
                self._service = result
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        d = defer.maybeDeferred(self._connect).addCallback(opened)
        d.addBoth(settle)
        return waiter

    def _search(self, base, filter_text, *, scope=SCOPE_SUBTREE, retry=True):
        filter_object = parse_filter(filter_text)

        def run(connection):
            return connection.search(base, filter_object, self._attributes, scope=scope)

        def failed(failure):
            failure.trap(ConnectionFailed)
            self._service = None
            if retry:
                return self._search(base, filter_text, scope=scope, retry=False)
            log.error("LDAP directory unavailable: {why}", why=failure.getErrorMessage())
            return failure

        return self._service_connection().addCallback(run).addErrback(failed)

    def close(self):
        if self._service is not None:
            self._service.close()
            self._service = None
        self._cache.clear()

    # ----------------------------------------------------------------------- entries

    def _account_of(self, dn: str, attrs: dict) -> Account | None:
        uids = attrs.get(self.uid_attribute, [])
        mails = [normalize_address(m) for m in attrs.get(self.mail_attribute, [])]
        if not uids or not mails:
            return None
        addresses = list(mails)
        for alias in attrs.get(self.alias_attribute, []):
            alias = normalize_address(alias)
            if alias not in addresses:
                addresses.append(alias)
        hosts = attrs.get(self.host_attribute, [])
        return Account(
            uid=uids[0],
            mail=mails[0],
            dn=dn,
            addresses=frozenset(addresses),
            display_name=(attrs.get("displayname") or attrs.get("cn") or [""])[0],
            mail_host=hosts[0] if hosts else None,
            forward=tuple(normalize_address(f) for f in attrs.get(self.forward_attribute, [])),
            quota=parse_quota(attrs.get(self.quota_attribute, []), dn=dn),
        )

    @staticmethod
    def _is_group(attrs: dict) -> bool:
        classes = {c.lower() for c in attrs.get("objectclass", [])}
        return bool(classes & {"groupofnames", "groupofuniquenames"})

    def _cached(self, key, compute):
        value = self._cache.get(key)
        if value is not _MISSING:
            return defer.succeed(value)

        def store(result):
            self._cache.put(key, result)
            return result

        return defer.maybeDeferred(compute).addCallback(store)

    def _accounts_named(self, value: str):
        """Deferred[list[Account]] of the distinct accounts user_filter finds for ``value``."""
        def found(entries):
            accounts = {}
            for dn, attrs in entries:
                account = self._account_of(dn, attrs)
                if account is not None:
                    accounts.setdefault(account.dn.lower(), account)
            return list(accounts.values())

        return self._search(self.base_dn, render_filter(self.user_filter, value)).addCallback(found)

    @defer.inlineCallbacks
    def _lookup(self, address: str):
        """("account", Account) or ("group", dn, attrs) for an exact address, else None."""
        accounts = [a for a in (yield self._accounts_named(address)) if address in a.addresses]
        if len(accounts) > 1:
            log.warn("address {address} belongs to several LDAP accounts", address=address)
            return None
        if accounts:
            return ("account", accounts[0])
        groups = yield self._search(self.base_dn, render_filter(self.group_filter, address))
        groups = [(dn, attrs) for dn, attrs in groups if self._is_group(attrs)]
        if len(groups) == 1:
            return ("group",) + groups[0]
        return None

    def _entry_at(self, dn: str):
        from ldaptor.protocols import pureldap

        present = pureldap.LDAPFilter_present("objectClass")

        def first(entries):
            return entries[0] if entries else None

        def run(connection):
            return connection.search(dn, present, self._attributes, scope=SCOPE_BASE)

        return self._service_connection().addCallback(run).addCallback(first)

    @defer.inlineCallbacks
    def _member_addresses(self, attrs: dict):
        out = []
        for member in attrs.get(self.member_attribute, []):
            entry = yield self._entry_at(member)
            if entry is None:
                continue
            mails = entry[1].get(self.mail_attribute, [])
            if mails and normalize_address(mails[0]) not in out:
                out.append(normalize_address(mails[0]))
        return out

    @defer.inlineCallbacks
    def _find(self, address: str):
        """(lookup result, reached through a subaddress) or None; exact address wins."""
        found = yield self._lookup(address)
        if found is not None:
            return found, False
        local, _, domain = address.rpartition("@")
        base = local.partition("+")[0]
        if base and base != local:
            found = yield self._lookup(f"{base}@{domain}")
            if found is not None:
                return found, True
        return None

    def _is_local(self, address: str) -> bool:
        return domain_of(address) in self.local_domains

    # ----------------------------------------------------------------------- IDirectory

    def resolve(self, address):
        address = normalize_address(address) if isinstance(address, str) else ""
        if not is_address(address) or not self._is_local(address):
            return defer.succeed(Recipient(RecipientKind.UNKNOWN, address))
        return self._cached(("resolve", address), lambda: self._resolve(address))

    @defer.inlineCallbacks
    def _resolve(self, address: str):
        found = yield self._find(address)
        if found is None:
            return Recipient(RecipientKind.UNKNOWN, address)
        result, via_subaddress = found
        if result[0] == "account":
            account = result[1]
            via = "subaddress" if via_subaddress else (
                "mail" if address == account.mail else "alias")
            return Recipient(RecipientKind.ACCOUNT, address, account=account, via=via)
        members = yield self._member_addresses(result[2])
        return Recipient(RecipientKind.GROUP, address,
                         via="subaddress" if via_subaddress else "mail", members=tuple(members))

    @defer.inlineCallbacks
    def expand(self, address):
        accounts: dict[str, Account] = {}
        remote: dict[str, None] = {}
        visited: set[str] = set()
        budget = [MAX_EXPANSION]

        @defer.inlineCallbacks
        def deliver_to_account(account: Account, depth: int):
            if account.forward and account.uid not in visited:
                visited.add(account.uid)
                for target in account.forward:
                    if target in account.addresses:
                        accounts.setdefault(account.uid, account)
                    else:
                        yield deliver_to_address(target, depth + 1)
                visited.discard(account.uid)
            else:
                accounts.setdefault(account.uid, account)

        @defer.inlineCallbacks
        def deliver_to_group(dn: str, attrs: dict, depth: int):
            if dn.lower() in visited:
                return
            visited.add(dn.lower())
            for member in attrs.get(self.member_attribute, []):
                budget[0] -= 1
                if budget[0] < 0 or depth > MAX_DEPTH:
                    log.warn("expansion of {address} cut at {dn}", address=address, dn=member)
                    return
                entry = yield self._entry_at(member)
                if entry is None:
                    continue
                member_dn, member_attrs = entry
                account = self._account_of(member_dn, member_attrs)
                if account is not None:
                    yield deliver_to_account(account, depth + 1)
                elif self._is_group(member_attrs):
                    yield deliver_to_group(member_dn, member_attrs, depth + 1)
                elif member_attrs.get(self.mail_attribute):
                    yield deliver_to_address(
                        normalize_address(member_attrs[self.mail_attribute][0]), depth + 1)

        @defer.inlineCallbacks
        def deliver_to_address(target: str, depth: int):
            budget[0] -= 1
            if budget[0] < 0 or depth > MAX_DEPTH or not is_address(target):
                return
            if not self._is_local(target):
                remote.setdefault(target, None)
                return
            found = yield self._find(target)
            if found is None:
                return
            result = found[0]
            if result[0] == "account":
                yield deliver_to_account(result[1], depth)
            else:
                yield deliver_to_group(result[1], result[2], depth)

        start = normalize_address(address) if isinstance(address, str) else ""
        yield deliver_to_address(start, 0)
        return Expansion(accounts=tuple(accounts.values()), remote=tuple(remote))

    def account(self, uid):
        if not isinstance(uid, str) or not uid:
            return defer.succeed(None)

        def pick(accounts):
            matching = [a for a in accounts if a.uid.lower() == uid.lower()]
            return matching[0] if len(matching) == 1 else None

        return self._cached(("uid", uid.lower()),
                            lambda: self._accounts_named(uid).addCallback(pick))

    def find_account(self, login):
        if not isinstance(login, str) or not login.strip():
            return defer.succeed(None)
        name = normalize_address(login)

        def pick(accounts):
            if len(accounts) > 1:
                log.warn("login {login} matches several LDAP accounts", login=name)
            return accounts[0] if len(accounts) == 1 else None

        return self._cached(("login", name),
                            lambda: self._accounts_named(name).addCallback(pick))

    def check_password(self, login, password):
        # RFC 4513 §5.1.2: a bind with an empty password is an unauthenticated bind that
        # servers report as success, so it must never reach the server.
        if not isinstance(password, str) or not password:
            return defer.succeed(None)

        def found(account):
            if account is None:
                return None
            return self._bind_as(account.dn, password).addCallback(
                lambda ok: account if ok else None)

        def unavailable(failure):
            failure.trap(DirectoryError)
            log.error("password check for {login} failed: {why}", login=login,
                      why=failure.getErrorMessage())
            return None

        return self.find_account(login).addCallback(found).addErrback(unavailable)

    def _bind_as(self, dn: str, password: str):
        def bind(connection):
            d = connection.bind(dn, password)

            def done(result):
                connection.close()
                return result

            return d.addBoth(done)

        return defer.maybeDeferred(self._connect).addCallback(bind)
