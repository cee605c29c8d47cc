"""
The IMAP server end to end: the real `twistd mailsuite` driven with imaplib and imapclient,
mail delivered over SMTP.
"""

import imaplib
import re

import pytest
from imapclient import IMAPClient

from tests.integration.mailflow import ALICE, insecure_tls, message, send_mx, without_received

LISTEN = {
    "smtp": "tcp:port=0:interface=127.0.0.1",
    "imap": "tcp:port=0:interface=127.0.0.1",
}


@pytest.fixture(params=["sqlite", "maildir"])
def imap_suite(request, make_suite):
    """A suite with SMTP and IMAP listeners that insists on TLS before login."""
    return make_suite(store=request.param, listen=LISTEN, plaintext=False)


def imaplib_session(suite) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=30)
    client.starttls(ssl_context=insecure_tls())
    client.login(*ALICE)
    return client


def test_login_is_refused_before_starttls(imap_suite):
    """Without TLS the server advertises LOGINDISABLED and refuses LOGIN."""
    client = imaplib.IMAP4("127.0.0.1", imap_suite.port("imap"), timeout=30)
    try:
        assert "LOGINDISABLED" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            client.login(*ALICE)
    finally:
        client.shutdown()


def test_everyday_commands_with_imaplib(imap_suite):
    """
    A message delivered by SMTP is fetched byte-exact; STORE, SEARCH, COPY, MOVE, EXPUNGE
    and APPEND work through imaplib over STARTTLS.
    """
    data = message(subject="over imap", body="".join(f"line {i}\r\n" for i in range(100)))
    assert send_mx(imap_suite, data) == {}
    send_mx(imap_suite, message(subject="second"))
    client = imaplib_session(imap_suite)
    try:
        typ, (count,) = client.select("INBOX")
        assert (typ, count) == ("OK", b"2")
        typ, fetched = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert without_received(fetched[0][1]) == data

        assert client.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert client.search(None, "FLAGGED") == ("OK", [b"1"])
        assert client.search(None, '(SUBJECT "second")') == ("OK", [b"2"])

        typ, reply = client.copy("1", "Trash")
        assert typ == "OK" and b"COPYUID" in reply[0]
        typ, _ = client._simple_command("MOVE", "2", "Junk")
        assert typ == "OK"
        assert client.select("Junk") == ("OK", [b"1"])
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Deleted)")
        typ, _ = client.expunge()
        assert typ == "OK"
        assert client.select("INBOX")[1] == [b"0"]

        typ, reply = client.append("Drafts", "(\\Draft)", None, message(subject="draft"))
        assert typ == "OK" and re.search(rb"APPENDUID \d+ 1", reply[0])
        typ, (status,) = client.status("Drafts", "(MESSAGES UIDNEXT)")
        assert status == b"Drafts (MESSAGES 1 UIDNEXT 2)"
    finally:
        client.logout()


def test_imapclient_lists_special_use_and_sees_delivery_while_idling(make_suite):
    """imapclient sees special-use mailboxes and, while idling, a message delivered by SMTP."""
    suite = make_suite(store="sqlite", listen=LISTEN, plaintext=False)
    client = IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False, timeout=30)
    try:
        client.starttls(insecure_tls())
        client.login(*ALICE)
        folders = {name: flags for flags, _sep, name in client.list_folders()}
        assert b"\\Sent" in folders["Sent"]
        assert b"\\Trash" in folders["Trash"]
        assert client.find_special_folder(b"\\Junk") == "Junk"

        client.select_folder("INBOX")
        client.idle()
        send_mx(suite, message(subject="while idling"))
        responses = client.idle_check(timeout=20)
        client.idle_done()
        assert (1, b"EXISTS") in responses
        fetched = client.fetch([1], ["ENVELOPE", "FLAGS"])
        (only,) = fetched.values()
        assert only[b"ENVELOPE"].subject == b"while idling"
    finally:
        client.logout()
