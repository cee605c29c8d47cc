"""
Hostile input for LDAP: BER framing and decoding (fast path and ldaptor), filter conversion,
and the session on a fake transport anonymous, bound as a user and bound as the admin, with
and without TLS required for binds.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ldaptor import ldapfilter
from ldaptor.protocols import pureber, pureldap
from twisted.internet import task

from mailsuite.ldap import codec, fastber
from mailsuite.ldap.filters import FilterError, from_ldaptor, from_wire
from mailsuite.ldap.server import LDAPFactory, LDAPLimits
from tests.fuzz.harness import (
    JUNK_PIECE,
    JUNK_SIZE,
    Connection,
    LoggedFailures,
    fuzz_settings,
    junk,
    mutated,
    packets,
)
from tests.unit.ldap.ldap_fakes import (
    ADMIN_DN,
    ADMIN_PASSWORD,
    ALICE_DN,
    BASE,
    decode_all,
    demo_directory,
)

LIMITS = LDAPLimits(max_message_size=64 * 1024)
STATES = ["anonymous", "tls-required", "user", "admin"]
RESPONSES = (pureldap.LDAPBindResponse, pureldap.LDAPSearchResultEntry,
             pureldap.LDAPSearchResultDone, pureldap.LDAPCompareResponse,
             pureldap.LDAPAddResponse, pureldap.LDAPModifyResponse, pureldap.LDAPDelResponse,
             pureldap.LDAPModifyDNResponse, pureldap.LDAPExtendedResponse)


# --------------------------------------------------------------------------- grammar

FILTERS = [ldapfilter.parseFilter(text) for text in [
    "(objectClass=*)", "(cn=*lid*)", "(&(uid=alice)(userPassword=*))", "(!(cn=a))",
    "(|(mail=*)(cn>=a)(sn<=z))", "(cn~=alice)", "(cn:caseExactMatch:=Alice)",
    "(:dn:2.5.13.5:=people)", "(uid=*)", "(cn=a*b*c*d)", "(member=uid=alice,ou=people,"
    + BASE + ")", "(userPassword={SSHA}x)", "(objectClass=inetOrgPerson)",
    "(" + "!(" * 80 + "cn=a" + ")" * 80 + ")",
]]
dns = st.one_of(
    st.sampled_from(["", BASE, ALICE_DN, ADMIN_DN, "ou=people," + BASE,
                     "cn=staff,ou=groups," + BASE,
                     "uid=*)(uid=*,ou=people," + BASE, "uid=nobody,ou=people," + BASE, "=,=",
                     "cn=a\\,b," + BASE, "uid=a+cn=b," + BASE, "cn=\\00," + BASE, "cn=Subschema",
                     "x" * 300]).map(str.encode),
    junk,
)
values = st.one_of(st.sampled_from([b"alice-password", ADMIN_PASSWORD.encode(), b"", b"*",
                                    b"{SSHA}AAAA", b"\xff\xfe"]), junk)
attributes = st.lists(st.sampled_from([b"cn", b"mail", b"*", b"+", b"1.1", b"userPassword",
                                       b"", b"\xff", b"x;binary"]), max_size=4)


def attribute(name: str, value: bytes):
    return (pureber.BEROctetString(name), pureber.BERSet([pureber.BEROctetString(value)]))


def av(name: bytes, value: bytes):
    return pureldap.LDAPAttributeValueAssertion(pureber.BEROctetString(name),
                                                pureber.BEROctetString(value))


operations = st.one_of(
    st.builds(lambda v, dn, auth: pureldap.LDAPBindRequest(version=v, dn=dn, auth=auth),
              st.sampled_from([3, 3, 2, 0, 127]), dns, values),
    st.builds(lambda dn, creds: pureldap.LDAPBindRequest(dn=dn, auth=(b"PLAIN", creds), sasl=True),
              dns, values),
    st.builds(lambda base, scope, size, time, types, f, attrs: pureldap.LDAPSearchRequest(
        baseObject=base, scope=scope, sizeLimit=size, timeLimit=time, typesOnly=types,
        filter=f, attributes=attrs),
        dns, st.sampled_from([0, 1, 2, 3, 200]), st.sampled_from([0, 1, 2**31 - 1]),
        st.sampled_from([0, 1, 2**31 - 1]), st.booleans(), st.sampled_from(FILTERS), attributes),
    st.builds(lambda dn, name, value: pureldap.LDAPCompareRequest(entry=dn, ava=av(name, value)),
              dns, st.sampled_from([b"cn", b"userPassword", b"mail", b""]), values),
    st.builds(lambda dn: pureldap.LDAPDelRequest(entry=dn), dns),
    st.builds(lambda dn, value: pureldap.LDAPAddRequest(entry=dn, attributes=[
        attribute("objectClass", b"person"), attribute("cn", value)]),
        dns, values),
    st.builds(lambda dn, op, value: pureldap.LDAPModifyRequest(object=dn, modification=[
        pureber.BERSequence([pureber.BEREnumerated(op), pureber.BERSequence([
            pureber.BEROctetString(b"cn"), pureber.BERSet([pureber.BEROctetString(value)])])])]),
        dns, st.sampled_from([0, 1, 2, 7]), values),
    st.builds(lambda dn, rdn, delete: pureldap.LDAPModifyDNRequest(entry=dn, newrdn=rdn,
                                                                   deleteoldrdn=delete),
              dns, dns, st.booleans()),
    st.builds(lambda name, value: pureldap.LDAPExtendedRequest(requestName=name,
                                                               requestValue=value),
              st.sampled_from([codec.OID_START_TLS, codec.OID_WHO_AM_I, codec.OID_PASSWORD_MODIFY,
                               b"1.2.3", b""]),
              st.one_of(st.none(), junk, st.builds(
                  lambda user, old, new: pureber.BERSequence(
                      [pureber.BEROctetString(user, tag=0x80),
                       pureber.BEROctetString(old, tag=0x81),
                       pureber.BEROctetString(new, tag=0x82)]).toWire(), dns, values, values))),
    st.builds(lambda n: pureldap.LDAPAbandonRequest(id=n),
              st.integers(min_value=0, max_value=2**31 - 1)),
    st.just(pureldap.LDAPUnbindRequest()),
)
controls = st.one_of(st.none(), st.lists(st.tuples(
    st.sampled_from([codec.OID_PAGED_RESULTS, b"1.2.3.4"]), st.booleans(),
    st.one_of(st.none(), junk, st.builds(codec.encode_paged_control,
                                         st.integers(min_value=0, max_value=10), junk)),
), max_size=2))
messages = st.builds(
    lambda op, ident, ctrls: pureldap.LDAPMessage(op, controls=ctrls, id=ident).toWire(),
    operations, st.sampled_from([1, 2, 0, 2**31 - 1]), controls)


def tlv(tag: int, value: bytes, form: int) -> bytes:
    """A BER TLV whose length is encoded in one of several right and wrong ways."""
    n = len(value)
    if form == 0:
        length = bytes([n]) if n < 0x80 else b"\x82" + n.to_bytes(2, "big")
    elif form == 1:
        length = b"\x84" + n.to_bytes(4, "big")  # long form, not minimal
    elif form == 2:
        length = b"\x80"  # indefinite
    elif form == 3:
        length = bytes([min(n + 1, 0x7F)])  # one too many
    else:
        length = b"\x89" + b"\xff" * 9  # more length octets than anyone supports
    return bytes([tag]) + length + value


ber = st.recursive(
    st.builds(tlv, st.integers(min_value=0, max_value=255), st.binary(max_size=8),
              st.sampled_from([0, 0, 0, 1, 2, 3, 4])),
    lambda inner: st.builds(lambda tag, items, form: tlv(tag, b"".join(items), form),
                            st.sampled_from([0x30, 0x31, 0x60, 0x63, 0x68, 0x77, 0xA0, 0xA1, 0xA2,
                                             0xA3, 0xA4, 0xA9]),
                            st.lists(inner, max_size=4), st.sampled_from([0, 0, 0, 1, 2, 3])),
    max_leaves=12,
)
raw_messages = st.builds(lambda op, form: tlv(0x30, b"\x02\x01\x01" + op, form), ber,
                         st.sampled_from([0, 0, 1, 3]))
inputs = st.lists(st.one_of(messages, mutated(messages), raw_messages, ber, junk),
                  min_size=1, max_size=6).map(b"".join)


# --------------------------------------------------------------------------- sessions


class LDAPSetting:
    """One factory over a fresh copy of the demo directory."""

    def __init__(self, *, allow_plaintext_auth: bool = True):
        self.directory = demo_directory()
        self.factory = LDAPFactory(
            hostname="mail.example.test", directory=self.directory, tls=object(),
            admin_dn=ADMIN_DN, admin_password=ADMIN_PASSWORD,
            allow_plaintext_auth=allow_plaintext_auth, limits=LIMITS, clock=task.Clock())

    def connect(self, state: str, port: int = 40001) -> Connection:
        conn = Connection(self.factory, port=port)
        assert conn.greeting == b""
        if state == "user":
            assert bind(conn, ALICE_DN, "alice-password") == 0
        elif state == "admin":
            assert bind(conn, ADMIN_DN, ADMIN_PASSWORD) == 0
        return conn


def setting_for(state: str) -> LDAPSetting:
    return LDAPSetting(allow_plaintext_auth=state != "tls-required")


def request(op, ident: int = 7) -> bytes:
    return pureldap.LDAPMessage(op, id=ident).toWire()


def bind(conn: Connection, dn: str, password: str) -> int:
    [response] = decode_all(conn.send(request(pureldap.LDAPBindRequest(
        dn=dn.encode(), auth=password.encode()))))
    return response.value.resultCode


def check_output(output: bytes) -> list:
    """Everything written is a sequence of LDAP response messages."""
    messages = decode_all(output)
    for message in messages:
        assert isinstance(message.value, RESPONSES), message
    return messages


def check_bounded(conn: Connection) -> None:
    if not conn.closed:
        assert len(conn.protocol._buffer) < LIMITS.max_message_size


def complete_pending(conn: Connection) -> None:
    """Send what a partly received message still lacks (zero bytes), so that it is decoded."""
    for _ in range(8):
        buffer = conn.protocol._buffer
        if conn.closed or not buffer:
            return
        needed = 1
        if len(buffer) >= 2:
            count = buffer[1] & 0x7F if buffer[1] & 0x80 else 0
            if len(buffer) < 2 + count:
                needed = 2 + count - len(buffer)
            else:
                total = codec.frame_length(buffer, max_size=LIMITS.max_message_size)
                assert total is None
                length = int.from_bytes(buffer[2:2 + count], "big") if count else buffer[1]
                needed = 2 + count + length - len(buffer)
        check_output(conn.send(b"\0" * needed))


def still_usable(conn: Connection) -> None:
    """Closed, or a WhoAmI request is answered with success."""
    complete_pending(conn)
    if conn.closed:
        return
    messages = check_output(conn.send(request(pureldap.LDAPExtendedRequest(
        requestName=codec.OID_WHO_AM_I), ident=99)))
    assert [(m.id, m.value.resultCode) for m in messages] == [(99, codec.SUCCESS)]


def other_client_works(setting: LDAPSetting) -> None:
    """Another session of the factory reads the root DSE."""
    conn = Connection(setting.factory, port=40002)
    messages = check_output(conn.send(request(pureldap.LDAPSearchRequest(
        baseObject=b"", scope=0, filter=pureldap.LDAPFilter_present("objectClass"),
        attributes=[b"namingContexts"]))))
    assert len(messages) == 2 and messages[-1].value.resultCode == codec.SUCCESS


# --------------------------------------------------------------------------- pure parts


@fuzz_settings(200)
@given(data=st.one_of(inputs, st.binary(max_size=200)))
def test_decoding_raises_only_protocol_errors(data):
    """Any bytes frame to a message that decodes, or raise ProtocolError; the fast decoder
    never raises and, where it answers, agrees with ldaptor on the message id."""
    try:
        size = codec.frame_length(data, max_size=LIMITS.max_message_size)
    except codec.ProtocolError:
        return
    if size is None:
        return
    frame = data[:size]
    fast = fastber.decode(frame)
    try:
        decoded = codec.decode_message(frame)
    except codec.ProtocolError:
        assert fast is None
        return
    if fast is not None:
        assert decoded.id == fast[0]
        if isinstance(fast[1], fastber.Search):
            try:
                from_wire(fast[1].filter)
            except FilterError:
                pass


@fuzz_settings(150)
@given(data=inputs)
def test_fast_and_ldaptor_filters_agree(data):
    """A search the fast path decodes gives the same filter (or the same error) as ldaptor."""
    try:
        size = codec.frame_length(data, max_size=LIMITS.max_message_size)
    except codec.ProtocolError:
        return
    if size is None:
        return
    fast = fastber.decode(data[:size])
    if fast is None or not isinstance(fast[1], fastber.Search):
        return
    try:
        message, _ = pureber.berDecodeObject(codec._DECODER, data[:size])
    except Exception:
        return  # ldaptor cannot read it; codec.decode_message takes the fast result alone

    def convert(f, node):
        try:
            return f(node)
        except FilterError:
            return FilterError

    assert convert(from_wire, fast[1].filter) == convert(from_ldaptor, message.value.filter)


@pytest.mark.parametrize("state", STATES)
@fuzz_settings(40)
@given(data=st.data(), content=inputs)
def test_session_survives_hostile_input(state, data, content):
    """In every state, hostile input never raises or logs a failure, every output is an LDAP
    response, buffers stay bounded, the session answers WhoAmI afterwards (or is closed)
    and another session of the same factory still works."""
    with LoggedFailures():
        setting = setting_for(state)
        conn = setting.connect(state)
        check_output(conn.send_packets(data.draw(packets(content))))
        check_bounded(conn)
        still_usable(conn)
        other_client_works(setting)


@pytest.mark.parametrize("state", STATES)
@fuzz_settings(40)
@given(message=messages)
def test_every_request_gets_an_answer(state, message):
    """A well-formed request is answered, except Abandon (nothing to answer) and Unbind,
    which closes the session."""
    with LoggedFailures():
        conn = setting_for(state).connect(state)
        output = conn.send(message)
        op = codec.decode_message(message).op
        if isinstance(op, (pureldap.LDAPAbandonRequest, pureldap.LDAPUnbindRequest,
                           fastber.Unbind)):
            return
        assert check_output(output) or conn.closed


def test_truncated_message_id_length_is_a_protocol_error():
    """A message whose messageID announces more length octets than the message holds ends
    the session with a protocolError notice, like any other malformed message."""
    with LoggedFailures():
        setting = setting_for("anonymous")
        conn = setting.connect("anonymous")
        frame = b"\x30\x05\x02\xa2\x01\x60\x00"
        [notice] = check_output(conn.send(frame))
        assert notice.value.resultCode == codec.PROTOCOL_ERROR and conn.closed
        other_client_works(setting)


@pytest.mark.parametrize("prefix", [b"", b"\x30\x84\x00\x00\xff\xf0", b"\x30\x83\xff\xff\xff"])
def test_ten_megabytes_of_junk_stay_bounded(prefix):
    """10 MB of junk, after a length header under or over the limit, is never held beyond
    the message size limit and ends the session with a notice."""
    with LoggedFailures():
        setting = setting_for("anonymous")
        conn = setting.connect("anonymous")
        piece = bytes(range(256)) * (JUNK_PIECE // 256)
        output = conn.send(prefix)
        for _ in range(JUNK_SIZE // JUNK_PIECE):
            if conn.closed:
                break
            output += conn.send(piece)
            check_bounded(conn)
        assert conn.closed
        [notice] = check_output(output)
        assert notice.value.resultCode == codec.PROTOCOL_ERROR
        other_client_works(setting)
