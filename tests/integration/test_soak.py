"""
The short soak: mixed concurrent clients (SMTP submission, IMAP IDLE and fetch, POP3, LDAP
search) against one server for a few seconds; every session completes and none fails.
The long version with 500 clients for 10 minutes is bench/soak.py.
"""

from bench.soak import KINDS, run_soak


def test_mixed_concurrent_clients_all_succeed(tmp_path):
    result = run_soak(str(tmp_path / "suite"), clients=40, duration=8.0, idle_seconds=1.0,
                      sample=1.0)
    for kind in KINDS:
        tally = result["tallies"][kind]
        assert tally.errors == 0, f"{kind}: {tally.errors} errors, last {tally.last_error}"
        assert tally.sessions > 0, kind
