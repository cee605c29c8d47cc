"""
Wildcard blow-up in LIST: a pattern like "*%*%*%...x" must not cost exponential (or even
polynomial) work in the length of the mailbox names, as it does with a backtracking matcher.
The matcher counts the characters it looks at; the test bounds that count, not the time.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.imap.commands import mailboxes
from mailsuite.imap.commands.mailboxes import MailboxPattern
from tests.fuzz.harness import Connection

LONG_NAMES = ["a" * 200, "a/" * 99 + "a", "x" * 100 + "/" + "a" * 99, "Archive/" + "b" * 150]
PATTERNS = [
    b"*%" * 500 + b"x",
    b"%*" * 500 + b"/x",
    b"a*" * 300 + b"b",
    b"*a" * 300 + b"%x",
    b"%" * 2000,
    b"*/" * 200 + b"z",
]


@pytest.fixture
def matchers(monkeypatch):
    """Every MailboxPattern a LIST builds."""
    made = []

    class Recording(MailboxPattern):
        def __init__(self, pattern):
            super().__init__(pattern)
            made.append(self)

    monkeypatch.setattr(mailboxes, "MailboxPattern", Recording)
    return made


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p[:12].decode() + "...")
@pytest.mark.parametrize("command", [b"LIST", b"LSUB"])
def test_pathological_patterns_cost_one_step_per_character(suite, matchers, command, pattern):
    """Each pattern looks at each character of each mailbox name at most once."""
    for name in LONG_NAMES:
        suite.store.ensure_account("alice")
        suite.store.create_mailbox("alice", name)
        suite.store.set_subscribed("alice", name, True)
    conn = Connection(suite.imap())
    conn.send(b"l LOGIN alice@example.test alice-password\r\n")
    out = conn.send(b'a ' + command + b' "" "' + pattern + b'"\r\n')
    assert out.endswith(b"a OK Completed\r\n"), out[-200:]
    names = [info.name for info in suite.store.mailboxes("alice").result]
    # Every name and every parent level implied by one, each looked at once.
    listed = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 2)}
    budget = sum(len(n) for n in listed)
    assert matchers and all(m.steps <= budget for m in matchers)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matching_a_long_name_is_linear(pattern):
    """Against a 1,000-character name, a pattern costs at most 1,000 steps."""
    matcher = MailboxPattern(pattern.decode())
    matcher.match("a" * 999 + "y")
    assert matcher.steps <= 1000


def as_regex(pattern: str) -> re.Pattern:
    """The meaning of a pattern (RFC 3501 §6.3.8), for short inputs only."""
    return re.compile("".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c)
                              for c in pattern) + r"\Z", re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(pattern=st.text("ab/*%", max_size=8), name=st.text("ab/", max_size=10))
def test_the_linear_matcher_means_what_the_rfc_says(pattern, name):
    """"*" matches anything, "%" anything but the separator, everything else itself."""
    assert MailboxPattern(pattern).match(name) == bool(as_regex(pattern).match(name))
