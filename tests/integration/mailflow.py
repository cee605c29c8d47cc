"""Client-side helpers shared by the integration tests."""

import poplib
import smtplib
import ssl
from email.message import EmailMessage

ALICE = ("alice@example.test", "alice-password")
BOB = ("bob@example.test", "bob-password")


def insecure_tls() -> ssl.SSLContext:
    """The suite runs with its generated self-signed certificate in tests."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(subject="hello", body="Hello there.\r\n", sender="carol@remote.test",
            to="alice@example.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.test>"
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send_mx(suite, data: bytes, *, sender="carol@remote.test", to=("alice@example.test",)):
    with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=30) as client:
        client.ehlo("client.remote.test")
        return client.sendmail(sender, list(to), data)


def pop3(suite, user=ALICE, *, tls=True) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", suite.port("pop3"), timeout=30)
    if tls:
        client.stls(context=insecure_tls())
    client.user(user[0])
    client.pass_(user[1])
    return client


def pop3_count(suite, user: str, password: str) -> int:
    """Log in with USER/PASS (no TLS: the test suites allow plaintext) and count the messages."""
    client = pop3(suite, (user, password), tls=False)
    try:
        return client.stat()[0]
    finally:
        client.quit()


def retrieve_all(suite, user=ALICE) -> list[bytes]:
    client = pop3(suite, user)
    try:
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(i + 1)[1]) + b"\r\n" for i in range(count)]
    finally:
        client.quit()


def without_received(data: bytes) -> bytes:
    """The message minus the Received header(s) the server prepended."""
    while data.startswith(b"Received:"):
        end = data.index(b"\r\n")
        while data[end + 2:end + 3] in (b" ", b"\t"):
            end = data.index(b"\r\n", end + 2)
        data = data[end + 2:]
    return data
