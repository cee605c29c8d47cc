"""
Outbound mail between real servers: two mailsuite instances on loopback, each authoritative
for its own domain in its DNS component, finding each other through DNS and delivering to
each other; a remote refusal bounced at once; a smart host (Postfix's smtp-sink) capturing
the exact bytes on the wire.
"""

from __future__ import annotations

import email
import email.policy
import glob
import imaplib
import os
import shutil
import smtplib
import subprocess
import time

import pytest

from mailsuite.testing.server import DEFAULT_LISTEN, RunningSuite, free_port, free_udp_port

PEOPLE = """\
dn: {base}
objectClass: dcObject
objectClass: organization
dc: {dc}
o: {domain}

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: uid={user},ou=people,{base}
objectClass: inetOrgPerson
uid: {user}
cn: {user}
sn: {user}
mail: {user}@{domain}
userPassword: {user}-password
"""


def make_node(tmp_path, name, *, domain, user, address, smtp_port, dns_port, upstream,
              relay=None) -> RunningSuite:
    dc = domain.split(".")[0]
    base = ",".join(f"dc={part}" for part in domain.split("."))
    listen = dict(DEFAULT_LISTEN)
    listen["smtp"] = f"tcp:port={smtp_port}:interface={address}"
    listen["dns"] = f"{address}:{dns_port}"
    node = RunningSuite(str(tmp_path / name), listen=listen, extra={
        "suite": {"hostname": f"mx.{domain}", "domains": [domain]},
        "directory": {"base_dn": base, "seed_ldif": "people.ldif"},
        "dns": {"upstream": [upstream], "addresses": [address],
                "recursion_clients": ["127.0.0.0/8"]},
        "relay": {"smtp_port": smtp_port, "retry_min": "1s", "retry_max": "2s",
                  **(relay or {})},
    })
    with open(os.path.join(node.folder, "people.ldif"), "w") as f:
        f.write(PEOPLE.format(base=base, dc=dc, domain=domain, user=user))
    return node


def wait_for_messages(node, user, password, count, timeout=30.0):
    """The raw messages in ``user``'s INBOX once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4("127.0.0.1", node.port("imap")) as imap:
            imap.login(user, password)
            imap.select("INBOX")
            _, data = imap.search(None, "ALL")
            numbers = data[0].split()
            if len(numbers) >= count:
                messages = []
                for number in numbers:
                    _, fetched = imap.fetch(number, "(BODY.PEEK[])")
                    messages.append(fetched[0][1])
                return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} has {len(numbers)} message(s), wanted {count}\n"
                                 f"{node.log()}")
        time.sleep(0.2)


def submit(node, user, password, recipients, body: bytes, sender=None):
    with smtplib.SMTP("127.0.0.1", node.port("submission")) as client:
        client.login(user, password)
        client.sendmail(sender or user, recipients, body)


@pytest.fixture
def two_nodes(tmp_path):
    smtp_port = free_port("127.0.0.1", "127.0.0.2")
    dns_a, dns_b = free_udp_port("127.0.0.1"), free_udp_port("127.0.0.2")
    a = make_node(tmp_path, "a", domain="a.test", user="ann", address="127.0.0.1",
                  smtp_port=smtp_port, dns_port=dns_a, upstream=f"127.0.0.2:{dns_b}")
    b = make_node(tmp_path, "b", domain="b.test", user="ben", address="127.0.0.2",
                  smtp_port=smtp_port, dns_port=dns_b, upstream=f"127.0.0.1:{dns_a}")
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def test_two_servers_find_each_other_by_dns_and_exchange_mail(two_nodes):
    a, b = two_nodes
    submit(a, "ann@a.test", "ann-password", ["ben@b.test"],
           b"From: ann@a.test\r\nTo: ben@b.test\r\nSubject: over there\r\n\r\nhello b\r\n")
    [received] = wait_for_messages(b, "ben@b.test", "ben-password", 1)
    assert b"Subject: over there" in received
    assert received.endswith(b"hello b\r\n")
    submit(b, "ben@b.test", "ben-password", ["ann@a.test"],
           b"From: ben@b.test\r\nTo: ann@a.test\r\nSubject: and back\r\n\r\nhello a\r\n")
    [answer] = wait_for_messages(a, "ann@a.test", "ann-password", 1)
    assert b"Subject: and back" in answer


def test_a_remote_refusal_bounces_at_once_with_a_delivery_report(two_nodes):
    a, b = two_nodes
    submit(a, "ann@a.test", "ann-password", ["nobody@b.test"],
           b"From: ann@a.test\r\nTo: nobody@b.test\r\nSubject: lost\r\n\r\nnobody home\r\n")
    [bounce] = wait_for_messages(a, "ann@a.test", "ann-password", 1)
    report = email.message_from_bytes(bounce, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = next(p for p in report.walk()
                  if p.get_content_type() == "message/delivery-status")
    text = status.as_bytes().decode()
    assert "Final-Recipient: rfc822; nobody@b.test" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "mx.b.test" in text
    assert a.admin("queue", "list").stdout.strip() in ("", "the queue is empty")


def _adversarial() -> bytes:
    """Dots at the start of lines, a lone dot and a CRLF split at each of the 16 KiB and
    64 KiB marks, 8-bit bytes, and no line over the SMTP limit.  (Bare CR and LF are
    refused by the receiving server, so the client's own tests cover them.)"""
    message = bytearray(b"From: alice@example.test\r\nTo: x@sink.test\r\nSubject: dots\r\n\r\n"
                        b".\r\n..\r\n. leading dot\r\n\xe4 8-bit\r\n")
    for mark in (16384, 65536):
        while len(message) < mark - 200:
            message += b"z" * 98 + b"\r\n"
        # the line ends with "\r" just before the mark; "\n.\r\n" follows right after it
        message += b"w" * (mark - len(message) - 2) + b"\r"
        message += b"\n.\r\n.."
        message += b"\r\n"
    message += b".end\r\n"
    return bytes(message)


ADVERSARIAL = _adversarial()


@pytest.mark.skipif(not shutil.which("smtp-sink"), reason="Postfix's smtp-sink is not installed")
def test_smart_host_receives_exact_bytes_with_dot_stuffing(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    sink_port = free_port("127.0.0.1")
    sink = subprocess.Popen(["smtp-sink", "-u", "root", "-d", str(dump) + "/%M.", "-c",
                             f"127.0.0.1:{sink_port}", "10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        node = RunningSuite(str(tmp_path / "a"), extra={
            "relay": {"relayhost": f"127.0.0.1:{sink_port}", "tls": "none"}})
        node.start()
        try:
            submit(node, "alice@example.test", "alice-password", ["x@sink.test"], ADVERSARIAL)
            deadline = time.monotonic() + 30
            while not glob.glob(str(dump / "*")) and time.monotonic() < deadline:
                time.sleep(0.1)
            [path] = glob.glob(str(dump / "*"))
            time.sleep(0.3)
            captured = open(path, "rb").read()
        finally:
            node.stop()
    finally:
        sink.terminate()
        sink.wait()
    # smtp-sink's dump holds the envelope, then the content as received with the dots
    # un-stuffed and LF line ends: a stuffing error would end the data early or change a
    # dot line.  The dump ends with one empty line of its own.
    body = captured.split(b"Subject: dots\n", 1)[1].removesuffix(b"\n")
    expected = ADVERSARIAL.split(b"Subject: dots\r\n", 1)[1].replace(b"\r\n", b"\n")
    assert body == expected
