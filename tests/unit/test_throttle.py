"""Failed-login throttling and the hourly sending rate (mailsuite.throttle, mailsuite.auth)."""

import os

import pytest
from twisted.cred import error
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, task
from twisted.python.failure import Failure

import mailsuite.directory.embedded as embedded
from mailsuite.auth import ThrottledPortal, client_portal, make_portal
from mailsuite.config import SecurityConfig
from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.interfaces import IMailAccount
from mailsuite.throttle import (
    AuthThrottle,
    ExpiringTable,
    SendRate,
    client_key,
    login_key,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def throttle(clock=None, **options):
    settings = {"threshold": 3, "threshold_per_client": 10, "window": 900.0,
                "first_delay": 1.0, "max_delay": 30.0}
    settings.update(options)
    return AuthThrottle(clock or task.Clock(), **settings)


def fail(t, login="alice", client="192.0.2.1") -> float:
    attempt = t.begin(login, client)
    t.failed(attempt)
    return attempt.delay


# --------------------------------------------------------------------------- keys and table


def test_login_key_folds_case_and_space():
    """One login name however it is spelt: case and surrounding space do not matter."""
    assert login_key(" Alice@Example.TEST ") == login_key("alice@example.test")
    assert login_key(b"ALICE") == "alice"


def test_login_key_is_bounded():
    """A huge login name becomes a key of bounded size."""
    assert len(login_key("x" * 100_000)) <= 320


def test_client_key_groups_ipv6_by_64():
    """Addresses in one IPv6 /64 share a key; IPv4-mapped addresses count as IPv4."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("") is None


def test_table_entries_expire():
    """An entry not stored again within its lifetime is gone."""
    clock = task.Clock()
    table = ExpiringTable(clock, lifetime=10)
    table.put("a", 1)
    clock.advance(9)
    assert table.get("a") == 1
    clock.advance(1)
    assert table.get("a") is None


def test_table_is_bounded_dropping_the_least_recently_stored():
    """Past max_entries the entry stored longest ago goes first."""
    table = ExpiringTable(task.Clock(), lifetime=100, max_entries=3)
    for key in "abc":
        table.put(key, key)
    table.put("a", "a again")
    table.put("d", "d")
    assert len(table) == 3
    assert table.get("b") is None
    assert table.get("a") == "a again"


# --------------------------------------------------------------------------- AuthThrottle


def test_no_delay_below_the_threshold():
    """The first failures cost nothing extra."""
    t = throttle()
    assert [fail(t) for _ in range(3)] == [0, 0, 0]


def test_delays_double_up_to_the_cap():
    """After the threshold each attempt waits first_delay, doubling, capped at max_delay."""
    t = throttle(max_delay=10.0)
    delays = [fail(t) for _ in range(9)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 10, 10]


def test_a_right_password_waits_as_long_as_a_wrong_one():
    """While a login name is held back, every attempt waits, whatever its outcome."""
    t = throttle()
    for _ in range(4):
        fail(t)
    attempt = t.begin("alice", "192.0.2.1")
    assert attempt.delay == 2.0


def test_success_resets_the_login_name_but_not_the_address():
    """A good login clears its name's count; the address keeps its record."""
    t = throttle(threshold=3, threshold_per_client=3)
    for _ in range(3):
        fail(t, "alice", "192.0.2.1")
    attempt = t.begin("alice", "192.0.2.1")
    t.succeeded(attempt)
    assert t.failures(login="alice") == 0
    assert t.failures(client="192.0.2.1") == 3
    assert t.begin("bob", "192.0.2.1").delay == 1.0


def test_failures_from_one_address_across_names_are_throttled():
    """Trying many login names from one address reaches the per-address threshold."""
    t = throttle(threshold=100, threshold_per_client=4)
    delays = [fail(t, f"user{i}", "192.0.2.1") for i in range(6)]
    assert delays == [0, 0, 0, 0, 1, 2]
    assert fail(t, "user99", "198.51.100.1") == 0


def test_one_name_from_many_addresses_is_throttled():
    """Guessing one account's password from many addresses reaches the per-name threshold."""
    t = throttle(threshold=3)
    delays = [fail(t, "alice", f"192.0.2.{i}") for i in range(5)]
    assert delays == [0, 0, 0, 1, 2]


def test_concurrent_attempts_pay_growing_delays():
    """Attempts started together while held back each wait longer than the one before."""
    t = throttle()
    for _ in range(3):
        fail(t)
    attempts = [t.begin("alice", "192.0.2.1") for _ in range(3)]
    assert [a.delay for a in attempts] == [1, 2, 4]


def test_counts_are_forgotten_after_a_quiet_window():
    """A window without failures wipes the slate."""
    clock = task.Clock()
    t = throttle(clock, window=60)
    for _ in range(5):
        fail(t)
    clock.advance(60)
    assert fail(t) == 0
    assert t.failures(login="alice") == 1


def test_an_unchecked_attempt_does_not_count():
    """When the credentials could not be checked, the attempt is not a failure."""
    t = throttle()
    for _ in range(3):
        fail(t)
    attempt = t.begin("alice", "192.0.2.1")
    t.abandoned(attempt)
    assert t.failures(login="alice") == 3


def test_a_guarded_check_waits_and_counts():
    """guarded() runs a password check after the delay and counts its outcome."""
    clock = task.Clock()
    t = throttle(clock, threshold=1)
    outcomes = []
    t.guarded("alice", "192.0.2.1", lambda: None).addCallback(outcomes.append)
    assert outcomes == [None]
    t.guarded("alice", "192.0.2.1", lambda: defer.succeed("account")).addCallback(
        outcomes.append)
    assert outcomes == [None]
    clock.advance(1.0)
    assert outcomes == [None, "account"]
    assert t.failures(login="alice") == 0


def test_throttle_memory_is_bounded():
    """Made-up login names from many addresses never hold more than max_entries counters."""
    t = throttle(max_entries=50)
    for i in range(1000):
        fail(t, f"user{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(t._failures) <= 50


# --------------------------------------------------------------------------- ThrottledPortal


@pytest.fixture
def directory():
    with open(os.path.join(ROOT, "etc", "directory.ldif"), "rb") as f:
        seed = f.read()
    return EmbeddedDirectory(None, domains=["example.test"], base_dn="dc=example,dc=test",
                             seed_ldif=seed)


def portal_for(directory, clock, **security):
    settings = {"auth_failure_threshold": 2, "auth_failure_threshold_per_ip": 50,
                "auth_failure_delay": 1.0, "auth_max_delay": 30.0}
    settings.update(security)
    return make_portal(directory, None, security=SecurityConfig(**settings), clock=clock)


def login(portal, user: str, password: str) -> list:
    """Start a login; the returned list gets its outcome (a Failure or the avatar tuple)."""
    outcome = []
    creds = UsernamePassword(user.encode(), password.encode())
    portal.login(creds, None, IMailAccount).addBoth(outcome.append)
    return outcome


def failed(outcome) -> bool:
    """The login has been answered, with bad credentials."""
    return (len(outcome) == 1 and isinstance(outcome[0], Failure)
            and outcome[0].check(error.UnauthorizedLogin) is not None)


def test_make_portal_throttles(directory):
    """The suite's portal is a ThrottledPortal configured from [security]."""
    portal = portal_for(directory, task.Clock())
    assert isinstance(portal, ThrottledPortal)
    assert portal.throttle.first_delay == 1.0


def test_failure_reply_waits_on_the_clock_not_the_reactor(directory):
    """Past the threshold a failed login is answered only once the delay has passed."""
    clock = task.Clock()
    portal = portal_for(directory, clock)
    for _ in range(2):
        assert failed(login(portal, "alice@example.test", "wrong"))
    held = login(portal, "alice@example.test", "wrong")
    assert held == []
    clock.advance(0.999)
    assert held == []
    clock.advance(0.001)
    assert failed(held)
    second = login(portal, "alice@example.test", "wrong")
    clock.advance(1.999)
    assert second == []
    clock.advance(0.001)
    assert failed(second)


def test_unknown_user_and_bad_password_fail_alike(directory):
    """Same error, same message, same delay for an unknown login and a wrong password."""
    clock = task.Clock()
    portal = portal_for(directory, clock)
    for _ in range(2):
        login(portal, "alice@example.test", "wrong")
        login(portal, "nobody@example.test", "wrong")
    known = login(portal, "alice@example.test", "wrong")
    unknown = login(portal, "nobody@example.test", "wrong")
    assert known == [] and unknown == []
    clock.advance(1.0)
    assert failed(known) and failed(unknown)
    assert known[0].getErrorMessage() == unknown[0].getErrorMessage()


def test_unknown_user_costs_a_hash_verification(directory, monkeypatch):
    """An unknown login is checked against a dummy hash, as a known one is against its own."""
    checked = []
    real = embedded.verify_password
    monkeypatch.setattr(embedded, "verify_password",
                        lambda stored, candidate: checked.append(stored) or real(stored, candidate))
    portal = portal_for(directory, task.Clock())
    login(portal, "nobody@example.test", "wrong")
    login(portal, "alice@example.test", "wrong")
    assert len(checked) == 2


def test_right_password_while_held_back_waits_then_resets(directory):
    """A correct login during a penalty waits the same delay, then clears the count."""
    clock = task.Clock()
    portal = portal_for(directory, clock)
    for _ in range(2):
        login(portal, "alice@example.test", "wrong")
    good = login(portal, "alice@example.test", "alice-password")
    assert good == []
    clock.advance(1.0)
    assert good and good[0][1].account.uid == "alice"
    assert portal.throttle.failures(login="alice@example.test") == 0
    assert login(portal, "alice@example.test", "wrong") != []


def test_client_portal_counts_the_address(directory):
    """Logins through client_portal count against the client's address across names."""
    clock = task.Clock()
    portal = portal_for(directory, clock, auth_failure_threshold=50,
                        auth_failure_threshold_per_ip=2)
    bound = client_portal(portal, "192.0.2.9")
    login(bound, "alice@example.test", "wrong")
    login(bound, "bob@example.test", "wrong")
    assert login(bound, "carol@example.test", "wrong") == []
    assert failed(login(client_portal(portal, "198.51.100.1"), "dave@example.test", "x"))


def test_client_portal_leaves_a_plain_portal_alone():
    """A portal without throttling is used as it is."""
    plain = object()
    assert client_portal(plain, "192.0.2.1") is plain


def test_a_failing_directory_does_not_count(directory, monkeypatch):
    """An error other than bad credentials neither counts nor is hidden."""
    portal = portal_for(directory, task.Clock())
    monkeypatch.setattr(directory, "check_password",
                        lambda login, password: defer.fail(RuntimeError("down")))
    outcome = login(portal, "alice@example.test", "alice-password")
    assert outcome[0].check(RuntimeError)
    assert portal.throttle.failures(login="alice@example.test") == 0


# --------------------------------------------------------------------------- SendRate


def test_messages_over_the_hourly_limit_are_refused():
    """The sixth message of an hour is refused when the limit is five."""
    rate = SendRate(task.Clock(), max_messages=5)
    for _ in range(5):
        assert not isinstance(rate.count("alice", "192.0.2.1", recipients=1), str)
    assert rate.refusal("alice", "192.0.2.1") == SendRate.MESSAGES
    assert rate.count("alice", "192.0.2.1", recipients=1) == SendRate.MESSAGES


def test_the_window_slides():
    """A message counted an hour ago no longer counts."""
    clock = task.Clock()
    rate = SendRate(clock, max_messages=2)
    rate.count("alice", None, recipients=1)
    clock.advance(1800)
    rate.count("alice", None, recipients=1)
    assert rate.refusal("alice", None) == SendRate.MESSAGES
    clock.advance(1800)
    assert rate.refusal("alice", None) is None


def test_recipients_are_limited_too():
    """Recipients add up across messages; the message that would pass the limit is refused."""
    rate = SendRate(task.Clock(), max_recipients=10)
    rate.count("alice", None, recipients=8)
    assert rate.refusal("alice", None, recipients=2) is None
    assert rate.refusal("alice", None, recipients=3) == SendRate.RECIPIENTS


def test_accounts_and_addresses_have_their_own_limits():
    """Per-account and per-address limits apply independently."""
    rate = SendRate(task.Clock(), max_messages=2, max_messages_per_client=3)
    rate.count("alice", "192.0.2.1", recipients=1)
    rate.count("alice", "192.0.2.1", recipients=1)
    assert rate.refusal("alice", "192.0.2.2") == SendRate.MESSAGES
    assert rate.refusal("bob", "192.0.2.1") is None
    rate.count("bob", "192.0.2.1", recipients=1)
    assert rate.refusal("carol", "192.0.2.1") == SendRate.MESSAGES
    assert rate.refusal("carol", "192.0.2.9") is None


def test_a_cancelled_message_does_not_count():
    """A message counted and then not accepted (commit failed) is taken back."""
    rate = SendRate(task.Clock(), max_messages=1, max_recipients=5)
    sending = rate.count("alice", None, recipients=5)
    rate.cancel(sending)
    assert rate.refusal("alice", None, recipients=5) is None


def test_no_limits_means_disabled():
    """With every limit 0 the rate is off and never refuses."""
    rate = SendRate(task.Clock())
    assert not rate.enabled
    for _ in range(100):
        rate.count("alice", "192.0.2.1", recipients=100)
    assert rate.refusal("alice", "192.0.2.1", recipients=1000) is None
