"""
The LDAP component in the real server, driven by ldap3 and OpenLDAP's command-line tools
(ldap-utils): binds, searches, StartTLS, the ACL (each forbidden operation refused and
changing nothing), writes that take effect at once for SMTP.
"""

import os
import shutil
import smtplib
import subprocess

import pytest
from ldap3 import BASE, MODIFY_REPLACE, SUBTREE, Connection, Server

BASE_DN = "dc=example,dc=test"
ADMIN_DN = "cn=admin,dc=example,dc=test"
ADMIN_PASSWORD = "admin-password"
ALICE_DN = "uid=alice,ou=people,dc=example,dc=test"
BOB_DN = "uid=bob,ou=people,dc=example,dc=test"
EXTRA = {"directory": {"admin_dn": ADMIN_DN, "admin_password": ADMIN_PASSWORD}}

needs_tools = pytest.mark.skipif(shutil.which("ldapsearch") is None, reason="ldap-utils missing")


@pytest.fixture
def ldap_suite(make_suite):
    return make_suite(store="sqlite", extra=EXTRA)


def connect(suite, user=None, password=None):
    server = Server("127.0.0.1", port=suite.port("ldap"), get_info=None)
    return Connection(server, user=user, password=password, auto_bind=True, raise_exceptions=False)


def binds(suite, dn, password) -> bool:
    server = Server("127.0.0.1", port=suite.port("ldap"), get_info=None)
    return Connection(server, user=dn, password=password).bind()


def tool(suite, name, *args, input=None):
    env = dict(os.environ, LDAPTLS_REQCERT="never")
    return subprocess.run([name, "-x", "-H", f"ldap://127.0.0.1:{suite.port('ldap')}", *args],
                          capture_output=True, text=True, input=input, env=env, timeout=30)


def alice_entry(suite):
    conn = connect(suite, ADMIN_DN, ADMIN_PASSWORD)
    conn.search(ALICE_DN, "(objectClass=*)", BASE, attributes=["*"])
    return conn.entries[0].entry_attributes_as_dict


def test_anonymous_search_returns_white_pages(ldap_suite):
    """An anonymous ldap3 search finds alice with her mail but without uid or userPassword."""
    conn = connect(ldap_suite)
    conn.search(BASE_DN, "(|(cn=*lid*)(mail=*lid*))", SUBTREE, attributes=["*"])
    [entry] = conn.entries
    attributes = entry.entry_attributes_as_dict
    assert attributes["mail"] == ["alice@example.test"]
    assert "uid" not in attributes and "userPassword" not in attributes


def test_user_bind_and_wrong_password(ldap_suite):
    """Alice binds with her password; a wrong one and an unknown DN fail alike (49)."""
    assert binds(ldap_suite, ALICE_DN, "alice-password")
    server = Server("127.0.0.1", port=ldap_suite.port("ldap"))
    results = []
    for dn in (ALICE_DN, "uid=nobody,ou=people,dc=example,dc=test"):
        conn = Connection(server, user=dn, password="wrong")
        assert not conn.bind()
        results.append((conn.result["result"], conn.result["message"]))
    assert results[0] == results[1] and results[0][0] == 49


@needs_tools
def test_ldapwhoami_over_starttls(ldap_suite):
    """ldapwhoami -ZZ (StartTLS required) reports alice's DN."""
    out = tool(ldap_suite, "ldapwhoami", "-ZZ", "-D", ALICE_DN, "-w", "alice-password")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"dn:{ALICE_DN}"


@needs_tools
def test_ldapsearch_root_dse(ldap_suite):
    """ldapsearch reads the root DSE's naming context and extensions."""
    out = tool(ldap_suite, "ldapsearch", "-LLL", "-s", "base", "-b", "", "+")
    assert out.returncode == 0, out.stderr
    assert f"namingContexts: {BASE_DN}" in out.stdout
    assert "supportedExtension: 1.3.6.1.4.1.4203.1.11.3" in out.stdout


@needs_tools
def test_ldapsearch_paged(ldap_suite):
    """ldapsearch with the paged results control lists every entry a bound user sees."""
    out = tool(ldap_suite, "ldapsearch", "-D", ALICE_DN, "-w", "alice-password", "-LLL",
               "-E", "pr=2/noprompt", "-b", BASE_DN, "dn")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("dn: ") == 6


@needs_tools
def test_ldapcompare_on_password_is_refused(ldap_suite):
    """ldapcompare on userPassword is refused, even for the admin."""
    out = tool(ldap_suite, "ldapcompare", "-D", ADMIN_DN, "-w", ADMIN_PASSWORD,
               ALICE_DN, "userPassword:alice-password")
    assert out.returncode == 50, out.stdout + out.stderr


@needs_tools
def test_ldappasswd_own_password(ldap_suite):
    """Alice changes her own password with ldappasswd; the new one binds, the old does not."""
    out = tool(ldap_suite, "ldappasswd", "-D", ALICE_DN, "-w", "alice-password", "-s", "new-pass-1")
    assert out.returncode == 0, out.stderr
    assert binds(ldap_suite, ALICE_DN, "new-pass-1")
    assert not binds(ldap_suite, ALICE_DN, "alice-password")


@needs_tools
def test_ldappasswd_for_someone_else_is_refused(ldap_suite):
    """Alice cannot set bob's password; bob's password still works."""
    out = tool(ldap_suite, "ldappasswd", "-D", ALICE_DN, "-w", "alice-password", "-s", "x", BOB_DN)
    assert "(50)" in out.stdout, out.stdout + out.stderr
    assert binds(ldap_suite, BOB_DN, "bob-password")


def test_anonymous_modify_is_refused_and_changes_nothing(ldap_suite):
    """An anonymous modify gets insufficientAccessRights and alice's entry is unchanged."""
    before = alice_entry(ldap_suite)
    conn = connect(ldap_suite)
    conn.modify(ALICE_DN, {"title": [(MODIFY_REPLACE, ["Hacked"])]})
    assert conn.result["result"] == 50
    assert alice_entry(ldap_suite) == before


def test_user_cannot_write_others_or_delete(ldap_suite):
    """Alice cannot modify bob, delete bob or add entries; nothing changes."""
    conn = connect(ldap_suite, ALICE_DN, "alice-password")
    conn.modify(BOB_DN, {"userPassword": [(MODIFY_REPLACE, ["owned"])]})
    assert conn.result["result"] == 50
    conn.delete(BOB_DN)
    assert conn.result["result"] == 50
    conn.add("uid=mallory,ou=people," + BASE_DN, ["inetOrgPerson"],
             {"uid": "mallory", "cn": "M", "sn": "M", "mail": "mallory@example.test"})
    assert conn.result["result"] == 50
    assert binds(ldap_suite, BOB_DN, "bob-password")
    admin = connect(ldap_suite, ADMIN_DN, ADMIN_PASSWORD)
    admin.search(BASE_DN, "(objectClass=*)", SUBTREE)
    assert len(admin.entries) == 6


def test_password_filter_is_no_oracle(ldap_suite):
    """Searching (userPassword=*) as a user finds nothing."""
    conn = connect(ldap_suite, ALICE_DN, "alice-password")
    conn.search(BASE_DN, "(userPassword=*)", SUBTREE)
    assert conn.entries == []


@needs_tools
def test_ldapadd_user_receives_mail_at_once(ldap_suite):
    """A user added with ldapadd (cleartext password) is a valid SMTP recipient at once."""
    ldif = (f"dn: uid=carol,ou=people,{BASE_DN}\nobjectClass: top\nobjectClass: person\n"
            "objectClass: organizationalPerson\nobjectClass: inetOrgPerson\nuid: carol\n"
            "cn: Carol\nsn: C\nmail: carol@example.test\nuserPassword: carol-password\n")
    out = tool(ldap_suite, "ldapadd", "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, input=ldif)
    assert out.returncode == 0, out.stderr
    with smtplib.SMTP("127.0.0.1", ldap_suite.port("smtp"), timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("someone@remote.test")
        code, _ = smtp.rcpt("carol@example.test")
        assert code == 250
    assert binds(ldap_suite, f"uid=carol,ou=people,{BASE_DN}", "carol-password")
    entry = alice_entry(ldap_suite)  # the admin still reads hashed values only
    assert all(_text(v).startswith("{") for v in entry["userPassword"])


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


# ----------------------------------------------------------------------- extensible match


@needs_tools
def test_ldapsearch_extensible_match(ldap_suite):
    """ldapsearch with caseExactMatch finds alice's exact cn and not a differently cased one;
    (:dn:2.5.13.2:=people) finds the people branch and the entries in it."""
    out = tool(ldap_suite, "ldapsearch", "-LLL", "-b", BASE_DN,
               "(cn:caseExactMatch:=Alice Liddell)", "dn")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dn:", ALICE_DN]
    out = tool(ldap_suite, "ldapsearch", "-LLL", "-b", BASE_DN,
               "(cn:caseExactMatch:=alice liddell)", "dn")
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
    out = tool(ldap_suite, "ldapsearch", "-LLL", "-b", BASE_DN, "(:dn:2.5.13.2:=people)", "dn")
    assert out.returncode == 0, out.stderr
    found = sorted(line[4:] for line in out.stdout.splitlines() if line.startswith("dn: "))
    assert found == sorted([f"ou=people,{BASE_DN}", ALICE_DN, BOB_DN])


# ----------------------------------------------------------------------- SASL


@pytest.fixture
def tls_only_suite(make_suite):
    """A suite that refuses passwords outside TLS ([security] allow_plaintext_auth off)."""
    return make_suite(store="sqlite", extra=EXTRA, plaintext=False)


def sasl_tool(suite, name, *args, url=None):
    env = dict(os.environ, LDAPTLS_REQCERT="never")
    url = url or f"ldap://127.0.0.1:{suite.port('ldap')}"
    return subprocess.run([name, "-Q", "-N", "-H", url, *args],
                          capture_output=True, text=True, env=env, timeout=30)


@needs_tools
def test_ldapwhoami_sasl_plain_over_starttls(tls_only_suite):
    """ldapwhoami -Y PLAIN -U alice -ZZ binds as alice; WhoAmI names her DN."""
    out = sasl_tool(tls_only_suite, "ldapwhoami", "-ZZ", "-Y", "PLAIN", "-U", "alice",
                    "-w", "alice-password")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"dn:{ALICE_DN}"


@needs_tools
def test_sasl_plain_wrong_password_and_unknown_user_fail_alike(tls_only_suite):
    """A wrong password and an unknown user both give invalidCredentials (49)."""
    answers = []
    for user, password in (("alice", "wrong"), ("nobody", "alice-password")):
        out = sasl_tool(tls_only_suite, "ldapwhoami", "-ZZ", "-Y", "PLAIN", "-U", user,
                        "-w", password)
        answers.append((out.returncode, "Invalid credentials (49)" in out.stderr))
    assert answers == [(49, True), (49, True)]


@needs_tools
def test_sasl_plain_without_tls_is_refused(tls_only_suite):
    """Without StartTLS, PLAIN is refused with confidentialityRequired (13)."""
    # -O none: the client library itself would not send PLAIN in clear otherwise.
    out = sasl_tool(tls_only_suite, "ldapwhoami", "-O", "none", "-Y", "PLAIN", "-U", "alice",
                    "-w", "alice-password")
    assert out.returncode == 13, out.stdout + out.stderr


@needs_tools
def test_ldapsearch_sasl_plain_with_mail_address_reads_own_entry(tls_only_suite):
    """Bound with PLAIN as alice's mail address, ldapsearch reads her uid (her own entry)."""
    out = sasl_tool(tls_only_suite, "ldapsearch", "-LLL", "-ZZ", "-Y", "PLAIN",
                    "-U", "alice@example.test", "-w", "alice-password", "-b", ALICE_DN,
                    "-s", "base", "uid")
    assert out.returncode == 0, out.stderr
    assert "uid: alice" in out.stdout


def test_ldap3_sasl_plain(tls_only_suite):
    """ldap3 binds with SASL PLAIN after StartTLS, and WhoAmI answers bob's DN."""
    import ssl

    from ldap3 import SASL, Tls

    server = Server("127.0.0.1", port=tls_only_suite.port("ldap"), get_info=None,
                    tls=Tls(validate=ssl.CERT_NONE))
    conn = Connection(server, authentication=SASL, sasl_mechanism="PLAIN",
                      sasl_credentials=(None, "bob", "bob-password"))
    conn.open()
    assert conn.start_tls()
    assert conn.bind(), conn.result
    assert conn.extend.standard.who_am_i() == f"dn:{BOB_DN}"
    conn.unbind()


@pytest.fixture
def ldapi_suite(make_suite):
    """A suite whose LDAP listener is a unix socket (short path: sun_path is 108 bytes)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="ldapi-", dir="/tmp")
    os.chmod(folder, 0o755)
    socket_path = os.path.join(folder, "ldapi")
    suite = make_suite(store="sqlite", extra=EXTRA, plaintext=False,
                       listen={"ldap": f"unix:{socket_path}"})
    suite.ldapi_url = "ldapi://" + socket_path.replace("/", "%2F")
    yield suite
    shutil.rmtree(folder, ignore_errors=True)


@needs_tools
def test_ldapwhoami_sasl_external_over_ldapi(ldapi_suite):
    """-Y EXTERNAL over ldapi:// from the server's own user binds as the admin DN."""
    out = sasl_tool(ldapi_suite, "ldapwhoami", "-Y", "EXTERNAL", url=ldapi_suite.ldapi_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"dn:{ADMIN_DN}"
    out = sasl_tool(ldapi_suite, "ldapsearch", "-LLL", "-Y", "EXTERNAL", "-b", ALICE_DN,
                    "-s", "base", "userPassword", url=ldapi_suite.ldapi_url)
    assert out.returncode == 0, out.stderr
    assert "userPassword" in out.stdout


@needs_tools
@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to connect as another user")
def test_sasl_external_from_another_user_is_refused(ldapi_suite):
    """-Y EXTERNAL from a process running as nobody gets invalidCredentials (49)."""
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "ldapwhoami", "-Q", "-Y", "EXTERNAL", "-H", ldapi_suite.ldapi_url],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 49, out.stdout + out.stderr


# ---------------------------------------------------------------- the remaining ACL rules


def entries_seen(suite, *bind, base=BASE_DN, filter="(objectClass=*)", attributes=("*",)):
    """{dn: {attribute: values}} that a search with ldapsearch returns to the given bind."""
    args = ["-LLL", "-b", base, "-s", "sub", filter, *attributes]
    if bind:
        args = ["-D", bind[0], "-w", bind[1], *args]
    out = tool(suite, "ldapsearch", *args)
    # success, sizeLimit, noSuchObject, insufficientAccess (then nothing is returned)
    assert out.returncode in (0, 4, 32, 50), out.stderr
    seen, dn = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("dn: "):
            dn = line[4:]
            seen[dn] = {}
        elif dn and ": " in line:
            name, _, value = line.partition(": ")
            seen[dn].setdefault(name.rstrip(":"), []).append(value)
    return seen


@needs_tools
def test_anonymous_search_is_white_pages_under_the_people_branch_only(ldap_suite):
    """ldapsearch -x without a bind: people with white-pages attributes, nothing else."""
    seen = entries_seen(ldap_suite)
    assert ALICE_DN in seen and BOB_DN in seen
    assert all(dn.endswith("ou=people," + BASE_DN) for dn in seen)
    assert "cn=staff,ou=groups," + BASE_DN not in seen
    white = {"cn", "sn", "givenName", "displayName", "mail", "telephoneNumber", "title",
             "ou", "o", "mobile", "objectClass"}
    for attributes in seen.values():
        assert set(attributes) <= white, attributes


@pytest.fixture
def authenticated_only_suite(make_suite):
    return make_suite(store="sqlite", extra={**EXTRA, "ldap": {"anonymous_search": False}})


@needs_tools
def test_authenticated_only_config_hides_everything_from_anonymous(authenticated_only_suite):
    """With [ldap] anonymous_search = false an anonymous search sees nothing; a bound user
    still gets the white pages."""
    assert entries_seen(authenticated_only_suite) == {}
    seen = entries_seen(authenticated_only_suite, ALICE_DN, "alice-password")
    assert BOB_DN in seen and "mail" in seen[BOB_DN]


@needs_tools
def test_a_user_reads_its_own_entry_but_not_the_private_part_of_others(ldap_suite):
    """Alice sees her own uid; of bob only the white pages; userPassword of nobody."""
    seen = entries_seen(ldap_suite, ALICE_DN, "alice-password", attributes=("*", "userPassword"))
    assert seen[ALICE_DN].get("uid") == ["alice"]
    assert "uid" not in seen[BOB_DN]
    assert all("userPassword" not in attributes for attributes in seen.values())
    admin = entries_seen(ldap_suite, ADMIN_DN, ADMIN_PASSWORD, attributes=("userPassword",))
    assert "userPassword" in admin[ALICE_DN]


@needs_tools
def test_ldapmodrdn_and_ldapdelete_by_a_user_are_refused_and_change_nothing(ldap_suite):
    before = entries_seen(ldap_suite, ADMIN_DN, ADMIN_PASSWORD)
    renamed = tool(ldap_suite, "ldapmodrdn", "-D", ALICE_DN, "-w", "alice-password",
                   BOB_DN, "uid=robert")
    assert renamed.returncode == 50, renamed.stderr
    deleted = tool(ldap_suite, "ldapdelete", "-D", ALICE_DN, "-w", "alice-password", BOB_DN)
    assert deleted.returncode == 50, deleted.stderr
    own = tool(ldap_suite, "ldapdelete", "-D", ALICE_DN, "-w", "alice-password", ALICE_DN)
    assert own.returncode == 50, own.stderr
    assert entries_seen(ldap_suite, ADMIN_DN, ADMIN_PASSWORD) == before


@needs_tools
def test_a_user_cannot_change_its_own_other_attributes(ldap_suite):
    """Changing one's own password is allowed (ldappasswd); other writes are the admin's."""
    before = alice_entry(ldap_suite)
    changed = tool(ldap_suite, "ldapmodify", "-D", ALICE_DN, "-w", "alice-password",
                   input=f"dn: {ALICE_DN}\nchangetype: modify\nreplace: mail\n"
                         "mail: someone-else@example.test\n")
    assert changed.returncode == 50, changed.stderr
    assert alice_entry(ldap_suite) == before
