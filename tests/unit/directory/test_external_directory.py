"""ExternalDirectory against a fake LDAP connection layer: lookups, binds, cache, escaping."""

from ldaptor.protocols import pureldap
from twisted.internet import defer, task
from zope.interface.verify import verifyObject

from mailsuite.directory.external import (
    SCOPE_BASE,
    ConnectionFailed,
    ExternalDirectory,
    escape_filter_value,
    parse_filter,
    render_filter,
)
from mailsuite.interfaces import IDirectory, RecipientKind

BASE = "dc=example,dc=test"

ENTRIES = {
    "uid=carol,dc=example,dc=test": {
        "objectclass": ["inetOrgPerson", "inetLocalMailRecipient"], "uid": ["carol"],
        "mail": ["carol@example.test"], "maillocaladdress": ["sales@example.test"],
        "cn": ["Carol"]},
    "uid=dave,dc=example,dc=test": {
        "objectclass": ["inetOrgPerson"], "uid": ["dave"], "mail": ["Dave@example.test"],
        "mailroutingaddress": ["dave@elsewhere.example"], "cn": ["Dave"]},
    "cn=team,dc=example,dc=test": {
        "objectclass": ["groupOfNames"], "mail": ["team@example.test"], "cn": ["team"],
        "member": ["uid=carol,dc=example,dc=test", "uid=dave,dc=example,dc=test"]},
}
PASSWORDS = {"uid=carol,dc=example,dc=test": "carol-secret", "cn=svc": "svc-secret"}


def _matches(f, attrs) -> bool:
    if isinstance(f, pureldap.LDAPFilter_and):
        return all(_matches(x, attrs) for x in f)
    if isinstance(f, pureldap.LDAPFilter_or):
        return any(_matches(x, attrs) for x in f)
    if isinstance(f, pureldap.LDAPFilter_present):
        return f.value.lower() in attrs
    if isinstance(f, pureldap.LDAPFilter_equalityMatch):
        values = attrs.get(f.attributeDesc.value.lower(), [])
        return f.assertionValue.value.lower() in [v.lower() for v in values]
    raise AssertionError(f"the fake server does not evaluate {f!r}")


class FakeServer:
    """An LDAP server in memory: records connections, binds and searches."""

    def __init__(self):
        self.connections = []
        self.searches = []
        self.down = False

    def connect(self):
        if self.down:
            return defer.fail(ConnectionFailed("cannot reach the LDAP server"))
        connection = FakeConnection(self)
        self.connections.append(connection)
        return defer.succeed(connection)


class FakeConnection:
    def __init__(self, server):
        self.server = server
        self.connected = True
        self.binds = []

    def bind(self, dn, password):
        self.binds.append(dn)
        return defer.succeed(PASSWORDS.get(dn) == password)

    def search(self, base, filter_object, attributes, *, scope=2):
        if not self.connected:
            return defer.fail(ConnectionFailed("connection lost"))
        self.server.searches.append(filter_object.asText())
        if scope == SCOPE_BASE:
            return defer.succeed([(base, ENTRIES[base])] if base in ENTRIES else [])
        return defer.succeed([(dn, a) for dn, a in ENTRIES.items() if _matches(filter_object, a)])

    def close(self):
        self.connected = False


def make(**kwargs):
    server, clock = FakeServer(), task.Clock()
    directory = ExternalDirectory(
        reactor=clock, url="ldap://ldap.example.test", base_dn=BASE, domains=["example.test"],
        bind_dn="cn=svc", bind_password="svc-secret", connect=server.connect, **kwargs)
    return directory, server, clock


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


def test_implements_idirectory():
    """ExternalDirectory provides every method and attribute of IDirectory."""
    assert verifyObject(IDirectory, make()[0])


def test_escape_filter_value_escapes_rfc4515_specials():
    """*, (, ), backslash and NUL become \\2a, \\28, \\29, \\5c and \\00 (RFC 4515 §3)."""
    assert escape_filter_value("a*(b)\\c\0") == "a\\2a\\28b\\29\\5cc\\00"


def test_injected_login_stays_one_equality_value():
    """A login like `*)(uid=*` is one literal assertion value, not extra filter terms."""
    f = parse_filter(render_filter("(uid=%s)", "*)(uid=*"))
    assert isinstance(f, pureldap.LDAPFilter_equalityMatch)
    assert f.assertionValue.value == "*)(uid=*"


def test_find_account_with_wildcard_login_finds_nobody():
    """find_account("*") sends an escaped filter and matches no account."""
    directory, server, _ = make()
    assert result(directory.find_account("*")) is None
    assert "\\2a" in server.searches[-1]


def test_resolve_primary_address_is_account_via_mail():
    """The primary mail address resolves to the account, via "mail"."""
    r = result(make()[0].resolve("carol@example.test"))
    assert r.kind is RecipientKind.ACCOUNT and r.account.uid == "carol" and r.via == "mail"


def test_resolve_mail_local_address_is_account_via_alias():
    """A mailLocalAddress resolves to its account, via "alias"."""
    r = result(make()[0].resolve("Sales@Example.test"))
    assert r.account.uid == "carol" and r.via == "alias"


def test_resolve_plus_address_is_account_via_subaddress():
    """carol+news@ resolves like carol@, via "subaddress"."""
    r = result(make()[0].resolve("carol+news@example.test"))
    assert r.account.uid == "carol" and r.via == "subaddress"


def test_resolve_unknown_local_address():
    """An address the server does not know is UNKNOWN."""
    assert result(make()[0].resolve("nobody@example.test")).kind is RecipientKind.UNKNOWN


def test_resolve_foreign_domain_asks_no_server():
    """An address outside the local domains is UNKNOWN without any search."""
    directory, server, _ = make()
    assert result(directory.resolve("carol@other.test")).kind is RecipientKind.UNKNOWN
    assert server.searches == []


def test_resolve_group_lists_member_addresses():
    """A groupOfNames address is a GROUP with its members' primary addresses."""
    r = result(make()[0].resolve("team@example.test"))
    assert r.kind is RecipientKind.GROUP
    assert r.members == ("carol@example.test", "dave@example.test")


def test_expand_group_follows_forward_to_remote():
    """Expanding a group stores for plain members and relays a member's forward."""
    e = result(make()[0].expand("team@example.test"))
    assert [a.uid for a in e.accounts] == ["carol"]
    assert e.remote == ("dave@elsewhere.example",)


def test_account_by_uid():
    """account(uid) returns the account whose uid attribute equals it."""
    assert result(make()[0].account("dave")).mail == "dave@example.test"


def test_check_password_right_returns_account():
    """The right password returns the account."""
    assert result(make()[0].check_password("carol", "carol-secret")).uid == "carol"


def test_check_password_wrong_returns_none():
    """A wrong password returns None."""
    assert result(make()[0].check_password("carol", "nope")) is None


def test_check_password_binds_as_user_on_separate_connection():
    """The user's bind happens on a new connection; the service connection stays bound as bind_dn."""
    directory, server, _ = make()
    result(directory.check_password("carol@example.test", "carol-secret"))
    service, user = server.connections
    assert service.binds == ["cn=svc"]
    assert user.binds == ["uid=carol,dc=example,dc=test"] and not user.connected


def test_empty_password_never_binds():
    """An empty password is refused without a bind (it would be an unauthenticated bind)."""
    directory, server, _ = make()
    assert result(directory.check_password("carol", "")) is None
    assert all(c.binds in ([], ["cn=svc"]) for c in server.connections)


def test_check_password_with_server_down_returns_none():
    """With the server unreachable a login fails instead of raising."""
    directory, server, _ = make()
    server.down = True
    assert result(directory.check_password("carol", "carol-secret")) is None


def test_lookups_are_cached_until_ttl():
    """A second resolve within the TTL asks no server; after it, the server is asked again."""
    directory, server, clock = make(cache_ttl=30)
    result(directory.resolve("carol@example.test"))
    count = len(server.searches)
    result(directory.resolve("carol@example.test"))
    assert len(server.searches) == count
    clock.advance(31)
    result(directory.resolve("carol@example.test"))
    assert len(server.searches) > count


def test_service_connection_is_reused():
    """Several lookups share one service connection."""
    directory, server, _ = make()
    result(directory.find_account("carol"))
    result(directory.find_account("dave"))
    assert len(server.connections) == 1


def test_broken_service_connection_is_reopened():
    """After the service connection drops, the next lookup opens and binds a new one."""
    directory, server, _ = make()
    result(directory.find_account("carol"))
    server.connections[0].close()
    assert result(directory.find_account("dave")).uid == "dave"
    assert len(server.connections) == 2 and server.connections[1].binds == ["cn=svc"]
