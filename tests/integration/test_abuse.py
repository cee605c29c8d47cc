"""
Limits and abuse against the real server: failed logins over SMTP, IMAP and POP3 are
answered after growing delays with one reply for unknown users and wrong passwords, the
protocols share one count, and authenticated submission is held to its hourly rate.
"""

import imaplib
import poplib
import smtplib
import socket
import time

import pytest

from tests.integration.mailflow import ALICE, message

# Small delays keep the tests fast: 0.2 s after the second failure, then 0.4 s, 0.8 s ...
FIRST_DELAY = 0.2
THROTTLE = {
    "auth_failure_threshold": 2,
    "auth_failure_threshold_per_ip": 1000,
    "auth_failure_delay": f"{FIRST_DELAY}s",
    "auth_max_delay": "2s",
}


@pytest.fixture
def throttled_suite(make_suite):
    return make_suite(extra={"security": THROTTLE})


def timed(attempt) -> tuple[float, str]:
    """Seconds the failed attempt took, and the reply text it got."""
    started = time.monotonic()
    reply = attempt()
    return time.monotonic() - started, reply


def smtp_failure(client: smtplib.SMTP, user: str, password: str) -> str:
    client.user, client.password = user, password
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        # One mechanism only: smtplib.login would try each advertised one in turn.
        client.auth("PLAIN", client.auth_plain)
    return f"{failed.value.smtp_code} {failed.value.smtp_error.decode()}"


def imap_failure(client: imaplib.IMAP4, user: str, password: str) -> str:
    with pytest.raises(imaplib.IMAP4.error) as failed:
        client.login(user, password)
    return str(failed.value)


def pop3_failure(client: poplib.POP3, user: str, password: str) -> str:
    client.user(user)
    with pytest.raises(poplib.error_proto) as failed:
        client.pass_(password)
    return str(failed.value)


def assert_growing_delays(durations: list[float]) -> None:
    """Failures 1-2 are free; the 3rd waits at least FIRST_DELAY, the 4th twice that."""
    assert durations[2] >= FIRST_DELAY
    assert durations[3] >= 2 * FIRST_DELAY
    assert durations[0] < FIRST_DELAY and durations[1] < FIRST_DELAY


def test_smtp_bad_logins_get_growing_delays_and_one_reply(throttled_suite):
    """SMTP AUTH: the k-th failure waits its delay; an unknown user gets the same 535."""
    with smtplib.SMTP("127.0.0.1", throttled_suite.port("submission"), timeout=30) as client:
        client.ehlo("client.example.test")
        wrong = [timed(lambda: smtp_failure(client, ALICE[0], "wrong")) for _ in range(4)]
        unknown = [timed(lambda: smtp_failure(client, "nobody@example.test", "wrong"))
                   for _ in range(4)]
    for attempts in (wrong, unknown):
        assert_growing_delays([seconds for seconds, _ in attempts])
    replies = {reply for _, reply in wrong + unknown}
    assert replies == {"535 5.7.8 Authentication credentials invalid"}


def test_imap_bad_logins_get_growing_delays_and_one_reply(throttled_suite):
    """IMAP LOGIN: the k-th failure waits its delay; an unknown user gets the same NO."""
    client = imaplib.IMAP4("127.0.0.1", throttled_suite.port("imap"), timeout=30)
    try:
        wrong = [timed(lambda: imap_failure(client, ALICE[0], "wrong")) for _ in range(4)]
        unknown = [timed(lambda: imap_failure(client, "nobody@example.test", "wrong"))
                   for _ in range(4)]
    finally:
        client.shutdown()
    for attempts in (wrong, unknown):
        assert_growing_delays([seconds for seconds, _ in attempts])
    assert len({reply for _, reply in wrong + unknown}) == 1
    assert "AUTHENTICATIONFAILED" in wrong[0][1]


def test_pop3_bad_logins_get_growing_delays_and_one_reply(throttled_suite):
    """POP3 USER/PASS: the k-th failure waits its delay; an unknown user gets the same -ERR."""
    client = poplib.POP3("127.0.0.1", throttled_suite.port("pop3"), timeout=30)
    try:
        wrong = [timed(lambda: pop3_failure(client, ALICE[0], "wrong")) for _ in range(4)]
        unknown = [timed(lambda: pop3_failure(client, "nobody@example.test", "wrong"))
                   for _ in range(4)]
    finally:
        client.close()
    for attempts in (wrong, unknown):
        assert_growing_delays([seconds for seconds, _ in attempts])
    assert {reply for _, reply in wrong + unknown} == {"b'-ERR [AUTH] Authentication failed'"}


def test_failures_count_across_protocols_and_success_resets(throttled_suite):
    """Two IMAP failures hold back the next SMTP attempt; the right password then clears it."""
    imap = imaplib.IMAP4("127.0.0.1", throttled_suite.port("imap"), timeout=30)
    try:
        for _ in range(2):
            imap_failure(imap, ALICE[0], "wrong")
    finally:
        imap.shutdown()
    with smtplib.SMTP("127.0.0.1", throttled_suite.port("submission"), timeout=30) as client:
        client.ehlo("client.example.test")
        client.user, client.password = ALICE
        started = time.monotonic()
        code, _ = client.auth("PLAIN", client.auth_plain)
        assert code == 235
        assert time.monotonic() - started >= FIRST_DELAY
    pop3 = poplib.POP3("127.0.0.1", throttled_suite.port("pop3"), timeout=30)
    try:
        seconds, _ = timed(lambda: pop3_failure(pop3, ALICE[0], "wrong"))
    finally:
        pop3.close()
    assert seconds < FIRST_DELAY


def test_many_names_from_one_address_are_held_back(make_suite):
    """Guessing across login names from one address reaches the per-address threshold."""
    suite = make_suite(extra={"security": {**THROTTLE, "auth_failure_threshold": 100,
                                           "auth_failure_threshold_per_ip": 3}})
    client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=30)
    try:
        durations = [timed(lambda i=i: imap_failure(client, f"user{i}@example.test", "x"))[0]
                     for i in range(5)]
    finally:
        client.shutdown()
    assert max(durations[:3]) < FIRST_DELAY
    assert durations[3] >= FIRST_DELAY and durations[4] >= 2 * FIRST_DELAY


def test_sixth_message_of_the_hour_gets_4xx(make_suite):
    """With max_messages_per_hour = 5, the sixth submitted message is refused with 450 4.7.1."""
    suite = make_suite(extra={"security": {"max_messages_per_hour": 5}})
    with smtplib.SMTP("127.0.0.1", suite.port("submission"), timeout=30) as client:
        client.ehlo("client.example.test")
        client.login(*ALICE)
        for i in range(5):
            data = message(subject=f"number {i}", sender=ALICE[0], to="bob@example.test")
            assert client.sendmail(ALICE[0], ["bob@example.test"], data) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(ALICE[0], ["bob@example.test"], message(sender=ALICE[0]))
    assert refused.value.smtp_code == 450
    assert refused.value.smtp_error.startswith(b"4.7.1 Too many messages")


def test_a_client_that_never_reads_stops_being_read(make_suite):
    """
    A client pipelining commands without reading a reply is no longer read from once its
    replies pile up, so it cannot make the server queue output without bound; other
    clients are served meanwhile.
    """
    suite = make_suite()
    sock = socket.create_connection(("127.0.0.1", suite.port("smtp")), timeout=3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = b"NOOP\r\n" * 10_000
    sent = 0
    stalled = False
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            sent += sock.send(flood)
    except socket.timeout:
        stalled = True
    try:
        assert stalled, f"the server kept reading: {sent} bytes of commands taken"
        with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=30) as other:
            assert other.ehlo("client.example.test")[0] == 250
    finally:
        sock.close()
