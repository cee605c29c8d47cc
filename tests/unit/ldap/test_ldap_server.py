"""The LDAP server protocol: bind, search, ACL, root DSE, compare, extended operations."""

from ldaptor.protocols import pureber, pureldap
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.directory.passwords import is_hashed
from mailsuite.ldap import codec
from mailsuite.ldap.server import LDAPLimits

from .ldap_fakes import ADMIN_DN, ADMIN_PASSWORD, ALICE_DN, BASE, BOB_DN, Session, TLSContext

WHITE = {"cn", "sn", "givenName", "displayName", "mail", "telephoneNumber", "title",
         "objectClass"}


def compare(session, dn, attr, value):
    ava = pureldap.LDAPAttributeValueAssertion(pureber.BEROctetString(attr.encode()),
                                               pureber.BEROctetString(value.encode()))
    return session.result(pureldap.LDAPCompareRequest(entry=dn.encode(), ava=ava)).resultCode


def paged(size, cookie=b""):
    return [(codec.OID_PAGED_RESULTS, True, codec.encode_paged_control(size, cookie))]


class BindTests(SynchronousTestCase):
    def test_user_bind_succeeds_with_right_password(self):
        """A simple bind with an account's DN and password succeeds."""
        self.assertEqual(Session().bind(ALICE_DN, "alice-password"), codec.SUCCESS)

    def test_wrong_password_and_unknown_dn_fail_alike(self):
        """A wrong password and an unknown DN both give invalidCredentials with the same text."""
        session = Session()
        wrong = session.result(pureldap.LDAPBindRequest(dn=ALICE_DN.encode(), auth=b"nope"))
        unknown = session.result(pureldap.LDAPBindRequest(dn=b"uid=zed,ou=people,dc=example,dc=test",
                                                          auth=b"nope"))
        self.assertEqual((wrong.resultCode, wrong.errorMessage),
                         (unknown.resultCode, unknown.errorMessage))
        self.assertEqual(wrong.resultCode, codec.INVALID_CREDENTIALS)

    def test_stored_hash_is_not_a_password(self):
        """Binding with the stored hash string as the password fails (no pass-the-hash)."""
        session = Session()
        stored = session.directory.get(ALICE_DN).first("userPassword")
        self.assertEqual(session.bind(ALICE_DN, stored), codec.INVALID_CREDENTIALS)

    def test_admin_bind(self):
        """The configured admin DN binds with the configured password, not another."""
        session = Session()
        self.assertEqual(session.bind(ADMIN_DN, "wrong"), codec.INVALID_CREDENTIALS)
        self.assertEqual(session.bind(ADMIN_DN, ADMIN_PASSWORD), codec.SUCCESS)

    def test_unauthenticated_bind_is_refused(self):
        """A DN with an empty password is refused with unwillingToPerform (RFC 4513 §5.1.2)."""
        self.assertEqual(Session().bind(ALICE_DN, ""), codec.UNWILLING_TO_PERFORM)

    def test_unknown_sasl_mechanism_is_not_supported(self):
        """A SASL mechanism other than PLAIN and EXTERNAL gets authMethodNotSupported."""
        session = Session()
        self.assertEqual(session.sasl_bind(b"DIGEST-MD5", None), codec.AUTH_METHOD_NOT_SUPPORTED)

    def test_failed_bind_drops_earlier_identity(self):
        """After a failed bind the session is anonymous again (RFC 4511 §4.2.1)."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        session.bind(ALICE_DN, "bad")
        self.assertEqual(session.extended(codec.OID_WHO_AM_I).response, b"")


class SearchTests(SynchronousTestCase):
    def test_anonymous_sees_white_pages_only(self):
        """Anonymous search returns white-pages attributes, never uid or userPassword."""
        entries, done = Session().search(filter="(uid=alice)")
        self.assertEqual(done.value.resultCode, codec.SUCCESS)
        # uid is not readable anonymously, so a filter on it is Undefined: no match.
        self.assertEqual(entries, {})
        entries, _ = Session().search(filter="(mail=alice@example.test)")
        self.assertEqual(set(entries[ALICE_DN]), WHITE)

    def test_password_never_returned_to_users(self):
        """A user reading its own entry gets uid and mailLocalAddress but not userPassword."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        entries, _ = session.search(ALICE_DN, scope=0)
        self.assertIn("uid", entries[ALICE_DN])
        self.assertIn("mailLocalAddress", entries[ALICE_DN])
        self.assertNotIn("userPassword", entries[ALICE_DN])
        entries, _ = session.search(BOB_DN, scope=0)
        self.assertNotIn("uid", entries[BOB_DN])

    def test_admin_sees_hashed_password(self):
        """The admin reads userPassword, as stored (hashed)."""
        session = Session()
        session.bind(ADMIN_DN, ADMIN_PASSWORD)
        entries, _ = session.search(ALICE_DN, scope=0, attributes=["userPassword"])
        self.assertTrue(is_hashed(entries[ALICE_DN]["userPassword"][0].decode()))

    def test_password_filter_never_matches(self):
        """(userPassword=*) matches nothing, even for the admin: no password oracle."""
        session = Session()
        session.bind(ADMIN_DN, ADMIN_PASSWORD)
        entries, _ = session.search(filter="(userPassword=*)")
        self.assertEqual(entries, {})

    def test_scopes(self):
        """base gives the entry, one its children, sub the whole subtree."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")  # anonymous clients see the people only
        base, _ = session.search("ou=people," + BASE, scope=0)
        one, _ = session.search(BASE, scope=1)
        sub, _ = session.search("ou=people," + BASE, scope=2)
        self.assertEqual(list(base), ["ou=people," + BASE])
        self.assertEqual(set(one), {"ou=people," + BASE, "ou=groups," + BASE})
        self.assertEqual(set(sub), {"ou=people," + BASE, ALICE_DN, BOB_DN})

    def test_address_book_query(self):
        """The address-book OR of substrings finds people by part of name or mail."""
        entries, _ = Session().search(filter="(|(cn=*lidd*)(mail=*lidd*)(sn=*lidd*)(givenName=*lidd*))")
        self.assertEqual(set(entries), {ALICE_DN})

    def test_missing_base_is_no_such_object(self):
        """A base DN that does not exist gives noSuchObject."""
        _, done = Session().search("ou=nowhere," + BASE)
        self.assertEqual(done.value.resultCode, codec.NO_SUCH_OBJECT)

    def test_attribute_selection(self):
        """A list selects those attributes; "1.1" returns none; typesOnly drops values."""
        session = Session()
        listed, _ = session.search(ALICE_DN, scope=0, attributes=["cn", "mail"])
        none, _ = session.search(ALICE_DN, scope=0, attributes=["1.1"])
        types, _ = session.search(ALICE_DN, scope=0, attributes=["cn"], types_only=True)
        self.assertEqual(listed[ALICE_DN], {"cn": [b"Alice Liddell"], "mail": [b"alice@example.test"]})
        self.assertEqual(none[ALICE_DN], {})
        self.assertEqual(types[ALICE_DN], {"cn": []})

    def test_operational_attributes_on_plus(self):
        """"+" returns entryDN, hasSubordinates and subschemaSubentry."""
        entries, _ = Session().search("ou=people," + BASE, scope=0, attributes=["+"])
        self.assertEqual(entries["ou=people," + BASE]["hasSubordinates"], [b"TRUE"])
        self.assertIn("entryDN", entries["ou=people," + BASE])

    def test_size_limit(self):
        """sizeLimit 1 returns one entry and sizeLimitExceeded."""
        entries, done = Session().search(size_limit=1)
        self.assertEqual(len(entries), 1)
        self.assertEqual(done.value.resultCode, codec.SIZE_LIMIT_EXCEEDED)

    def test_time_limit(self):
        """A search running past the time limit ends with timeLimitExceeded."""
        class Ticking(task.Clock):
            def seconds(self):
                self.rightNow += 100
                return self.rightNow

        session = Session(clock=Ticking())
        for k in range(600):
            session.directory.add_user(f"u{k}@example.test", "pw-pw-pw")
        _, done = session.search(filter="(cn=*)")
        self.assertEqual(done.value.resultCode, codec.TIME_LIMIT_EXCEEDED)

    def test_paged_results(self):
        """Paged results hand out pages of the requested size and an empty last cookie."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        seen = []
        entries, done = session.search(controls=paged(2))
        seen += entries
        while True:
            cookie = codec.decode_paged_control(done.controls[0][2])[1]
            if not cookie:
                break
            entries, done = session.search(controls=paged(2, cookie))
            self.assertLessEqual(len(entries), 2)
            seen += entries
        self.assertEqual(len(seen), 6)
        self.assertEqual(len(set(seen)), 6)

    def test_anonymous_search_can_be_switched_off(self):
        """With anonymous_search off, an anonymous search is refused; a bound one works."""
        session = Session(anonymous_search=False)
        entries, done = session.search()
        self.assertEqual((entries, done.value.resultCode), ({}, codec.INSUFFICIENT_ACCESS_RIGHTS))
        session.bind(BOB_DN, "bob-password")
        entries, _ = session.search()
        self.assertIn(ALICE_DN, entries)

    def test_extensible_match_is_answered(self):
        """An extensible match filter is evaluated: caseExactMatch finds alice's exact cn."""
        session = Session()
        entries, done = session.search(filter="(cn:caseExactMatch:=Alice Liddell)")
        self.assertEqual((list(entries), done.value.resultCode), ([ALICE_DN], codec.SUCCESS))
        entries, _ = session.search(filter="(cn:caseExactMatch:=alice liddell)")
        self.assertEqual(entries, {})

    def test_extensible_match_without_type_or_rule_is_a_protocol_error(self):
        """RFC 4511 §4.5.1.7.7: a matching rule assertion needs a type or a rule."""
        session = Session()
        item = pureldap.LDAPFilter_extensibleMatch(matchValue=b"x", dnAttributes=True)
        op = pureldap.LDAPSearchRequest(baseObject=BASE.encode(), filter=item)
        self.assertEqual(session.send(op)[-1].value.resultCode, codec.PROTOCOL_ERROR)


class RootDSETests(SynchronousTestCase):
    def test_root_dse(self):
        """The root DSE lists the naming context, LDAPv3, the controls and the extensions."""
        entries, _ = Session().search("", scope=0, attributes=["+"])
        dse = entries[""]
        self.assertEqual(dse["namingContexts"], [BASE.encode()])
        self.assertEqual(dse["supportedLDAPVersion"], [b"3"])
        self.assertIn(codec.OID_PAGED_RESULTS, dse["supportedControl"])
        for oid in (codec.OID_START_TLS, codec.OID_WHO_AM_I, codec.OID_PASSWORD_MODIFY):
            self.assertIn(oid, dse["supportedExtension"])
        self.assertEqual(sorted(dse["supportedSASLMechanisms"]), [b"EXTERNAL", b"PLAIN"])
        self.assertEqual(dse["subschemaSubentry"], [b"cn=Subschema"])

    def test_subschema(self):
        """The subschema entry has attributeTypes and objectClasses."""
        entries, _ = Session().search("cn=Subschema", scope=0, attributes=["*"])
        self.assertIn("attributeTypes", entries["cn=Subschema"])
        self.assertIn("objectClasses", entries["cn=Subschema"])


class CompareTests(SynchronousTestCase):
    def test_compare_true_and_false(self):
        """Compare answers compareTrue or compareFalse on a readable attribute."""
        session = Session()
        self.assertEqual(compare(session, ALICE_DN, "sn", "liddell"), codec.COMPARE_TRUE)
        self.assertEqual(compare(session, ALICE_DN, "sn", "Smith"), codec.COMPARE_FALSE)

    def test_compare_on_password_is_refused(self):
        """Compare on userPassword is refused for everyone, the admin included."""
        session = Session()
        session.bind(ADMIN_DN, ADMIN_PASSWORD)
        self.assertEqual(compare(session, ALICE_DN, "userPassword", "alice-password"),
                         codec.INSUFFICIENT_ACCESS_RIGHTS)


class ExtendedTests(SynchronousTestCase):
    def test_who_am_i(self):
        """WhoAmI answers "" when anonymous and "dn:<bind DN>" after a bind (RFC 4532)."""
        session = Session()
        self.assertEqual(session.extended(codec.OID_WHO_AM_I).response, b"")
        session.bind(ALICE_DN, "alice-password")
        self.assertEqual(session.extended(codec.OID_WHO_AM_I).response,
                         b"dn:" + ALICE_DN.encode())

    def test_start_tls_discards_bytes_after_the_request(self):
        """StartTLS answers success, starts TLS, and drops what followed in the same read."""
        session = Session()
        start = session.wire(pureldap.LDAPStartTLSRequest())
        smuggled = session.wire(pureldap.LDAPBindRequest(dn=ALICE_DN.encode(), auth=b"alice-password"))
        messages = session.raw(start + smuggled)
        self.assertEqual([m.value.resultCode for m in messages], [codec.SUCCESS])
        self.assertEqual(len(session.transport.tls_started), 1)
        self.assertIsInstance(session.transport.tls_started[0], TLSContext)
        self.assertEqual(session.extended(codec.OID_WHO_AM_I).response, b"")

    def test_start_tls_twice_is_an_operations_error(self):
        """A second StartTLS gets operationsError; none is offered without a TLS context."""
        session = Session()
        session.send(pureldap.LDAPStartTLSRequest())
        self.assertEqual(session.result(pureldap.LDAPStartTLSRequest()).resultCode,
                         codec.OPERATIONS_ERROR)
        self.assertEqual(Session(tls=False).result(pureldap.LDAPStartTLSRequest()).resultCode,
                         codec.UNAVAILABLE)

    def test_user_changes_own_password(self):
        """Password Modify by the user itself stores a new (hashed) password."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        op = pureldap.LDAPPasswordModifyRequest(oldPasswd=b"alice-password", newPasswd=b"new-secret")
        self.assertEqual(session.result(op).resultCode, codec.SUCCESS)
        self.assertIsNotNone(session.directory.check_password("alice", "new-secret"))
        self.assertTrue(is_hashed(session.directory.get(ALICE_DN).first("userPassword")))

    def test_user_cannot_change_another_password(self):
        """Password Modify on another user's DN is refused and changes nothing."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        op = pureldap.LDAPPasswordModifyRequest(userIdentity=BOB_DN.encode(), newPasswd=b"owned")
        self.assertEqual(session.result(op).resultCode, codec.INSUFFICIENT_ACCESS_RIGHTS)
        self.assertIsNotNone(session.directory.check_password("bob", "bob-password"))

    def test_generated_password(self):
        """Without newPasswd the server generates one and returns it (RFC 3062 §3)."""
        session = Session()
        session.bind(ADMIN_DN, ADMIN_PASSWORD)
        op = pureldap.LDAPPasswordModifyRequest(userIdentity=BOB_DN.encode())
        response = session.result(op)
        # SEQUENCE { genPasswd [0] OCTET STRING }, both lengths short-form
        value = response.response
        self.assertEqual((value[0], value[2]), (0x30, 0x80))
        generated = value[4:4 + value[3]].decode()
        self.assertIsNotNone(session.directory.check_password("bob", generated))


class RobustnessTests(SynchronousTestCase):
    def test_oversized_message_closes_with_notice(self):
        """A message announcing more than the size limit gets a notice of disconnection."""
        session = Session(limits=LDAPLimits(max_message_size=1000))
        messages = session.raw(b"\x30\x84\x00\x10\x00\x00")
        self.assertEqual(messages[0].value.responseName, codec.OID_NOTICE_OF_DISCONNECTION)
        self.assertTrue(session.transport.disconnecting)

    def test_garbage_closes_with_protocol_error(self):
        """Bytes that are not a BER SEQUENCE end the session with protocolError."""
        session = Session()
        messages = session.raw(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(messages[0].value.resultCode, codec.PROTOCOL_ERROR)
        self.assertTrue(session.transport.disconnecting)

    def test_idle_timeout(self):
        """An idle session is closed after the idle timeout."""
        session = Session(limits=LDAPLimits(idle_timeout=10))
        session.clock.advance(11)
        self.assertTrue(session.transport.disconnecting)

    def test_unknown_critical_control(self):
        """A critical control the server does not know gets unavailableCriticalExtension."""
        session = Session()
        _, done = session.search(controls=[(b"1.2.3.4", True, None)])
        self.assertEqual(done.value.resultCode, codec.UNAVAILABLE_CRITICAL_EXTENSION)

    def test_requests_split_across_reads(self):
        """A request arriving one byte at a time is answered once complete."""
        session = Session()
        data = session.wire(pureldap.LDAPExtendedRequest(requestName=codec.OID_WHO_AM_I))
        for byte in data[:-1]:
            self.assertEqual(session.raw(bytes([byte])), [])
        self.assertEqual(len(session.raw(data[-1:])), 1)

    def test_output_waits_for_slow_reader(self):
        """When the transport pauses the server, no more entries are written until resumed."""
        session = Session(limits=LDAPLimits(output_batch=1))
        session.bind(ALICE_DN, "alice-password")
        session.transport.clear()
        session.server.pauseProducing()  # no effect before a search: reset when it starts
        request = session.wire(pureldap.LDAPSearchRequest(baseObject=BASE.encode()))
        session.transport.write = _pausing_write(session)
        session.server.dataReceived(request)
        self.assertEqual(len(session.written), 1)
        session.server.resumeProducing()
        self.assertEqual(len(session.written), 7)  # 6 entries and the done message


def _pausing_write(session):
    session.written = []

    def write(data):
        session.written.append(data)
        if len(session.written) == 1:
            session.server.pauseProducing()

    return write


class ConfidentialityTests(SynchronousTestCase):
    def test_simple_bind_before_tls_is_refused(self):
        """Without allow_plaintext_auth, a password bind in clear gets confidentialityRequired."""
        session = Session(allow_plaintext_auth=False)
        self.assertEqual(session.bind(ALICE_DN, "alice-password"), codec.CONFIDENTIALITY_REQUIRED)
        self.assertEqual(session.extended(codec.OID_WHO_AM_I).response, b"")

    def test_simple_bind_after_starttls_succeeds(self):
        """The same bind succeeds once StartTLS has run."""
        session = Session(allow_plaintext_auth=False)
        session.send(pureldap.LDAPStartTLSRequest())
        self.assertEqual(session.bind(ALICE_DN, "alice-password"), codec.SUCCESS)

    def test_implicit_tls_allows_binds(self):
        """On an ldaps listener the connection is already confidential."""
        session = Session(allow_plaintext_auth=False, implicit_tls=True)
        self.assertEqual(session.bind(ALICE_DN, "alice-password"), codec.SUCCESS)

    def test_anonymous_bind_needs_no_tls(self):
        """An anonymous bind carries no secret and is allowed in clear."""
        session = Session(allow_plaintext_auth=False)
        self.assertEqual(session.bind("", ""), codec.SUCCESS)

    def test_password_modify_before_tls_is_refused(self):
        """Password Modify carries passwords, so it needs TLS too."""
        session = Session(allow_plaintext_auth=False)
        response = session.extended(codec.OID_PASSWORD_MODIFY)
        self.assertEqual(response.resultCode, codec.CONFIDENTIALITY_REQUIRED)


class FactoryTests(SynchronousTestCase):
    def test_start_builds_the_substring_index_on_the_clock(self):
        """Starting the factory builds the substring index in steps on its clock; until
        then substring lookups answer None and searches scan."""
        session = Session()
        directory = session.directory
        directory.reload()
        session.factory.doStart()
        self.assertIsNone(directory.ndns_with_substrings("cn", None, ("lidd",), None))
        entries, _ = session.search(filter="(cn=*lidd*)")
        self.assertEqual(list(entries), [ALICE_DN])
        session.clock.advance(0)
        self.assertTrue(directory.substring_index_ready)
        self.assertEqual(directory.ndns_with_substrings("cn", None, ("lidd",), None),
                         {ALICE_DN.lower()})
        session.factory.doStop()
