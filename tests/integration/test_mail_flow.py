"""
Mail flows end to end through the real server: SMTP in (MX, submission, submissions),
POP3 out, with Python's clients, swaks and fetchmail.
"""

import os
import poplib
import shutil
import smtplib
import socket
import subprocess

import pytest

from mailsuite.testing.server import free_port

from tests.integration.mailflow import (
    ALICE,
    BOB,
    insecure_tls,
    message,
    pop3,
    retrieve_all,
    send_mx,
    without_received,
)


def test_message_comes_back_byte_identical_through_pop3(suite):
    """
    A message sent to the MX listener is stored and comes back through POP3 byte for byte,
    apart from the one Received header the server added in front.
    """
    body = "".join(f"line {i}: .dots. and trailing spaces   \r\n" for i in range(200))
    body += ".leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"
    data = message(subject="identical", body=body)
    assert send_mx(suite, data) == {}

    [received] = retrieve_all(suite)
    assert received.startswith(b"Received: from client.remote.test")
    assert without_received(received) == data


def test_unknown_local_recipient_is_refused_at_rcpt(sqlite_suite):
    """RCPT for an address nobody has in a local domain gets 550 5.1.1."""
    with smtplib.SMTP("127.0.0.1", sqlite_suite.port("smtp"), timeout=30) as client:
        client.ehlo("client.remote.test")
        client.mail("carol@remote.test")
        code, reply = client.rcpt("nobody@example.test")
    assert code == 550
    assert reply.startswith(b"5.1.1")


def test_mx_listener_refuses_to_relay(sqlite_suite):
    """An unauthenticated client cannot send to a remote domain through the MX listener."""
    with smtplib.SMTP("127.0.0.1", sqlite_suite.port("smtp"), timeout=30) as client:
        client.ehlo("client.remote.test")
        client.mail("carol@remote.test")
        code, reply = client.rcpt("someone@elsewhere.test")
    assert code == 554
    assert reply.startswith(b"5.7.1")


def test_alias_and_group_deliver_to_members(sqlite_suite):
    """postmaster@ (an alias of alice) and staff@ (a group of alice and bob) deliver."""
    send_mx(sqlite_suite, message(subject="to postmaster", to="postmaster@example.test"),
            to=["postmaster@example.test"])
    send_mx(sqlite_suite, message(subject="to staff", to="staff@example.test"),
            to=["staff@example.test"])
    alice = retrieve_all(sqlite_suite, ALICE)
    bob = retrieve_all(sqlite_suite, BOB)
    assert [b"to postmaster" in m for m in alice] == [True, False]
    assert [b"to staff" in m for m in alice] == [False, True]
    assert len(bob) == 1 and b"to staff" in bob[0]


def test_submission_with_starttls_and_auth_relays_to_the_queue(make_suite):
    """
    On the submission listener, an authenticated user sends to a local and a remote
    recipient: the local copy is delivered, the remote one is queued durably (its route
    leads to a port nobody listens on, so it stays queued for a retry).
    """
    closed = free_port("127.0.0.1")
    sqlite_suite = make_suite(extra={"relay": {"routes": {"remote.test": f"127.0.0.1:{closed}"}}})
    with smtplib.SMTP("127.0.0.1", sqlite_suite.port("submission"), timeout=30) as client:
        client.starttls(context=insecure_tls())
        client.login(*ALICE)
        refused = client.sendmail(ALICE[0], [BOB[0], "dave@remote.test"],
                                  message(subject="outbound", sender=ALICE[0], to=BOB[0]))
    assert refused == {}
    assert len(retrieve_all(sqlite_suite, BOB)) == 1
    listing = sqlite_suite.admin("queue", "list")
    assert listing.returncode == 0
    assert "dave@remote.test" in listing.stdout


def test_submission_refuses_a_sender_address_of_someone_else(sqlite_suite):
    """An authenticated user may only use its own addresses as envelope sender: 553 5.7.1."""
    with smtplib.SMTP("127.0.0.1", sqlite_suite.port("submission"), timeout=30) as client:
        client.starttls(context=insecure_tls())
        client.login(*ALICE)
        code, reply = client.mail(BOB[0])
    assert code == 553
    assert reply.startswith(b"5.7.1")


def test_submission_refuses_auth_before_tls_by_default(make_suite):
    """With allow_plaintext_auth false, AUTH before STARTTLS is refused and not offered."""
    suite = make_suite(plaintext=False)
    with smtplib.SMTP("127.0.0.1", suite.port("submission"), timeout=30) as client:
        client.ehlo("client")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNzd29yZA==")
        assert code in (530, 538)
        client.starttls(context=insecure_tls())
        client.ehlo("client")
        assert "PLAIN" in client.esmtp_features["auth"]


def test_submissions_implicit_tls(sqlite_suite):
    """The submissions listener speaks TLS from the first byte and accepts AUTH."""
    with smtplib.SMTP_SSL("127.0.0.1", sqlite_suite.port("submissions"), timeout=30,
                          context=insecure_tls()) as client:
        client.login(*ALICE)
        client.sendmail(ALICE[0], [BOB[0]], message(subject="over tls", sender=ALICE[0]))
    [received] = retrieve_all(sqlite_suite, BOB)
    assert b"over tls" in received
    assert b"with ESMTPSA" in received


def test_bdat_chunks_are_delivered(sqlite_suite):
    """CHUNKING: a message sent in three BDAT chunks arrives whole."""
    data = message(subject="chunked", body="x" * 5000 + "\r\n")
    chunks = [data[:100], data[100:3000], data[3000:]]
    with socket.create_connection(("127.0.0.1", sqlite_suite.port("smtp")), timeout=30) as s:
        reader = s.makefile("rb")

        def reply():
            lines = [reader.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(reader.readline())
            return lines

        assert reply()[0].startswith(b"220")
        s.sendall(b"EHLO client.remote.test\r\n")
        assert any(b"CHUNKING" in line for line in reply())
        s.sendall(b"MAIL FROM:<carol@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert reply()[0].startswith(b"250")
        assert reply()[0].startswith(b"250")
        for i, chunk in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            s.sendall(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            assert reply()[0].startswith(b"250")
        s.sendall(b"QUIT\r\n")
    [received] = retrieve_all(sqlite_suite)
    assert without_received(received) == data


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_submission_with_starttls_and_auth(sqlite_suite):
    """swaks submits with STARTTLS and AUTH PLAIN and gets a 250."""
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(sqlite_suite.port("submission")),
         "--from", ALICE[0], "--to", BOB[0], "--tls", "--auth", "PLAIN",
         "--auth-user", ALICE[0], "--auth-password", ALICE[1],
         "--header", "Subject: from swaks", "--body", "sent by swaks"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    [received] = retrieve_all(sqlite_suite, BOB)
    assert b"from swaks" in received


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_inbound_to_mx(sqlite_suite):
    """swaks delivers to the MX listener without authentication."""
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(sqlite_suite.port("smtp")),
         "--from", "carol@remote.test", "--to", ALICE[0], "--header", "Subject: swaks mx"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"swaks mx" in retrieve_all(sqlite_suite)[0]


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_downloads_over_pop3s_and_keeps_nothing(sqlite_suite, tmp_path):
    """fetchmail downloads every message over implicit TLS and deletes them after QUIT."""
    for i in range(3):
        send_mx(sqlite_suite, message(subject=f"fetch {i}"))
    mbox = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 service {sqlite_suite.port("pop3s")} protocol pop3 '
        f'user "{ALICE[0]}" password "{ALICE[1]}" ssl no sslcertck '
        f'mda "cat >> {mbox}" nokeep\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    result = subprocess.run(["fetchmail", "--nosyslog", "-f", str(rc)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = mbox.read_bytes()
    assert all(f"fetch {i}".encode() in fetched for i in range(3))
    assert retrieve_all(sqlite_suite) == []


def test_uidl_is_stable_across_restarts(suite):
    """The same messages have the same UIDL after the server restarts."""
    for i in range(3):
        send_mx(suite, message(subject=f"uidl {i}"))

    def uidls():
        client = pop3(suite)
        try:
            return client.uidl()[1]
        finally:
            client.quit()

    before = uidls()
    assert len(before) == 3
    suite.stop()
    suite.start()
    assert uidls() == before


def test_dele_applies_only_at_quit(suite):
    """A dropped connection after DELE deletes nothing; DELE then QUIT deletes."""
    send_mx(suite, message(subject="keep me"))
    client = pop3(suite)
    client.dele(1)
    client.sock.shutdown(socket.SHUT_RDWR)  # the connection drops without QUIT
    client.sock.close()

    assert len(retrieve_all(suite)) == 1  # retrieve_all QUITs without deleting
    client = pop3(suite)
    client.dele(1)
    client.quit()
    assert retrieve_all(suite) == []


def test_plaintext_pop3_login_refused_before_stls(make_suite):
    """Without allow_plaintext_auth, USER/PASS before STLS is refused with [AUTH]."""
    suite = make_suite(plaintext=False)
    client = poplib.POP3("127.0.0.1", suite.port("pop3"), timeout=30)
    try:
        with pytest.raises(poplib.error_proto) as refused:
            client.user(ALICE[0])
            client.pass_(ALICE[1])
        assert b"[AUTH]" in refused.value.args[0]
        client.stls(context=insecure_tls())
        client.user(ALICE[0])
        assert client.pass_(ALICE[1]).startswith(b"+OK")
    finally:
        client.quit()


def test_pop3s_implicit_tls(sqlite_suite):
    """The pop3s listener speaks TLS from the first byte."""
    send_mx(sqlite_suite, message(subject="pop3s"))
    client = poplib.POP3_SSL("127.0.0.1", sqlite_suite.port("pop3s"), timeout=30,
                             context=insecure_tls())
    try:
        client.user(ALICE[0])
        client.pass_(ALICE[1])
        assert client.stat()[0] == 1
    finally:
        client.quit()
