"""The fast wire path: byte-exact with ldaptor on encoding, the same decoded meaning on input."""

from ldaptor import ldapfilter
from ldaptor.protocols import pureldap
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.ldap import codec, fastber
from mailsuite.ldap.filters import FilterError, from_ldaptor, from_wire
from mailsuite.ldap.server import LDAPLimits

from .ldap_fakes import ALICE_DN, BASE, Session

FILTERS = [
    "(mail=alice@example.test)",
    "(objectClass=*)",
    "(&(uid=alice)(objectClass=inetOrgPerson))",
    "(|(cn=*lid*)(mail=*lid*)(sn=ali*)(givenName=*ce))",
    "(!(cn=Bob))",
    "(uidNumber>=1000)",
    "(uidNumber<=5)",
    "(cn~=alise)",
    "(cn=A*b*c*d)",
    "(cn:caseExactMatch:=Alice Liddell)",
    "(:dn:2.5.13.2:=people)",
    "(&(mail:=alice@example.test)(cn:dn:1.2.3:=x))",
]


def _wire(op, message_id=7):
    return pureldap.LDAPMessage(op, id=message_id).toWire()


class DecodeTests(SynchronousTestCase):
    def test_search_fields_match_ldaptor(self):
        """A search request decodes to the same fields and filter as through ldaptor."""
        for text in FILTERS:
            op = pureldap.LDAPSearchRequest(
                baseObject=BASE.encode(), scope=1, derefAliases=3, sizeLimit=300,
                timeLimit=70000, typesOnly=True, filter=ldapfilter.parseFilter(text),
                attributes=[b"cn", b"mail"])
            message_id, fast = fastber.decode(_wire(op, 200))
            self.assertEqual(message_id, 200)
            self.assertEqual((fast.baseObject, fast.scope, fast.derefAliases, fast.sizeLimit,
                              fast.timeLimit, fast.typesOnly, fast.attributes),
                             (BASE.encode(), 1, 3, 300, 70000, True, (b"cn", b"mail")))
            self.assertEqual(from_wire(fast.filter), from_ldaptor(op.filter), text)

    def test_simple_bind_fields(self):
        """A simple bind decodes to its version, DN and password."""
        op = pureldap.LDAPBindRequest(dn=ALICE_DN.encode(), auth=b"secret")
        self.assertEqual(fastber.decode(_wire(op)),
                         (7, fastber.SimpleBind(3, ALICE_DN.encode(), b"secret")))

    def test_unbind(self):
        """An unbind request decodes to Unbind."""
        self.assertEqual(fastber.decode(_wire(pureldap.LDAPUnbindRequest())), (7, fastber.Unbind()))

    def test_other_messages_fall_back(self):
        """Controls and other operations are left to ldaptor."""
        search = pureldap.LDAPSearchRequest(baseObject=BASE.encode())
        with_controls = pureldap.LDAPMessage(search, controls=[(b"1.2.3", False, None)], id=1)
        for frame in (with_controls.toWire(),
                      _wire(pureldap.LDAPDelRequest(entry=ALICE_DN.encode()))):
            self.assertIsNone(fastber.decode(frame))

    def test_sasl_bind_fields(self):
        """A SASL bind decodes to its mechanism and credentials, absent credentials as None."""
        with_credentials = pureldap.LDAPBindRequest(dn=b"", auth=(b"PLAIN", b"\0a\0b"), sasl=True)
        without = pureldap.LDAPBindRequest(dn=b"", auth=(b"EXTERNAL", None), sasl=True)
        self.assertEqual(fastber.decode(_wire(with_credentials)),
                         (7, fastber.SaslBind(3, b"", b"PLAIN", b"\0a\0b")))
        self.assertEqual(fastber.decode(_wire(without)),
                         (7, fastber.SaslBind(3, b"", b"EXTERNAL", None)))

    def test_sasl_credentials_with_extra_element_fall_back(self):
        """A SaslCredentials with a third element is not taken for one without credentials."""
        # SEQUENCE { 3, "", [3] { "PLAIN", "a", "b" } }
        sasl = bytes.fromhex("0201030400a30c0405504c41494e0401610401 62".replace(" ", ""))
        frame = bytes([0x30, len(sasl) + 5, 0x02, 0x01, 0x07, 0x60, len(sasl)]) + sasl
        self.assertIsNone(fastber.decode(frame))

    def test_truncated_or_overlong_falls_back(self):
        """Inner lengths that do not add up are never accepted by the fast path."""
        frame = _wire(pureldap.LDAPSearchRequest(baseObject=BASE.encode()))
        broken = frame[:6] + bytes([frame[6] + 1]) + frame[7:]
        self.assertIsNone(fastber.decode(broken))

    def test_codec_uses_fast_path(self):
        """codec.decode_message returns the fast op for a plain search."""
        request = codec.decode_message(_wire(pureldap.LDAPSearchRequest(baseObject=b"")))
        self.assertIsInstance(request.op, fastber.Search)
        self.assertEqual(request.controls, ())

    def test_bad_attribute_same_error(self):
        """An empty attribute in an equality filter is a FilterError on the fast path too."""
        tree = ("compare", "=", b"", b"x")
        self.assertRaises(FilterError, from_wire, tree)


class EncodeTests(SynchronousTestCase):
    def test_bind_result_carries_an_empty_challenge(self):
        """encode_bind_result sends serverSaslCreds even when empty; without it, ldaptor's bytes."""
        frame = fastber.encode_bind_result(3, codec.SASL_BIND_IN_PROGRESS, "", b"")
        self.assertTrue(frame.endswith(b"\x87\x00"))
        self.assertEqual(fastber.encode_bind_result(3, 49, "invalid credentials"),
                         codec.encode(3, pureldap.LDAPBindResponse(
                             resultCode=49, errorMessage="invalid credentials")))

    def test_result_bytes_equal_ldaptor(self):
        """encode_result gives ldaptor's bytes for every LDAPResult class and message id."""
        for cls in (pureldap.LDAPBindResponse, pureldap.LDAPSearchResultDone,
                    pureldap.LDAPCompareResponse, pureldap.LDAPModifyResponse):
            tag = cls(resultCode=0).toWire()[0]
            for message_id in (0, 1, 127, 128, 255, 256, 32767, 32768, 2**31 - 1):
                for code, text in ((0, ""), (49, "invalid credentials"), (53, "é" * 200)):
                    expected = codec.encode(message_id, cls(resultCode=code, errorMessage=text))
                    self.assertEqual(fastber.encode_result(message_id, tag, code, text), expected)

    def test_entry_bytes_equal_ldaptor(self):
        """encode_entry gives ldaptor's bytes, short and long lengths alike."""
        cases = [
            [],
            [("cn", [b"Alice"]), ("mail", [b"a@example.test", b"b@example.test"])],
            [("description", [b"x" * 300]), ("objectClass", [])],
            [("jpegPhoto", [bytes(range(256)) * 300])],
        ]
        for attributes in cases:
            expected = codec.encode(4000, pureldap.LDAPSearchResultEntry(
                objectName=ALICE_DN.encode(), attributes=attributes))
            self.assertEqual(fastber.encode_entry(4000, ALICE_DN, attributes), expected)


class ServerOutputTests(SynchronousTestCase):
    def test_small_search_is_one_write(self):
        """A search whose answer fits in one batch reaches the transport in one write."""
        session = Session()
        writes = []
        session.transport.write = writes.append
        session.server.dataReceived(session.wire(pureldap.LDAPSearchRequest(
            baseObject=BASE.encode(), filter=ldapfilter.parseFilter("(objectClass=*)"))))
        self.assertEqual(len(writes), 1)

    def test_large_search_is_batched(self):
        """Output above the batch size is split into several writes, all messages intact."""
        session = Session(limits=LDAPLimits(output_batch=200))
        session.bind(ALICE_DN, "alice-password")  # a bound user sees every entry
        writes = []
        original = session.transport.write

        def record(data):
            writes.append(data)
            original(data)

        session.transport.write = record
        entries, done = session.search()
        self.assertGreater(len(writes), 1)
        self.assertEqual(done.value.resultCode, codec.SUCCESS)
        self.assertEqual(len(entries), 6)
