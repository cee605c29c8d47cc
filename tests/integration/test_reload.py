"""
`kill -HUP` on a running server: a domain added to the config works at once, and a client
in IMAP IDLE keeps its session through the reload.
"""

from __future__ import annotations

import signal
import smtplib
import time
import tomllib

import imapclient

from mailsuite.testing.server import render_config


def wait_for_log(suite, text, timeout=15.0):
    deadline = time.monotonic() + timeout
    while text not in suite.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged\n{suite.log()}")
        time.sleep(0.05)


def test_reload_adds_a_domain_without_dropping_an_idle_session(sqlite_suite):
    suite = sqlite_suite
    idle = imapclient.IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False, timeout=30)
    idle.login("alice@example.test", "alice-password")
    idle.select_folder("INBOX")
    idle.idle()

    with open(suite.config_path, "rb") as f:
        config = tomllib.load(f)
    config["suite"]["domains"] = ["example.test", "new.test"]
    with open(suite.config_path, "w") as f:
        f.write(render_config(config))
    suite.process.send_signal(signal.SIGHUP)
    wait_for_log(suite, "configuration reloaded")

    added = suite.admin("user", "add", "carol@new.test", "--password-stdin",
                        input="carol-password\n")
    assert added.returncode == 0, added.stderr
    with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=30) as client:
        refused = client.sendmail("someone@remote.test", ["carol@new.test", "alice@example.test"],
                                  b"Subject: after reload\r\n\r\nhello\r\n")
    assert refused == {}

    # The IDLE session opened before the reload hears of the new message and ends normally.
    responses = idle.idle_check(timeout=15)
    assert any(r[1] == b"EXISTS" for r in responses if len(r) > 1), responses
    idle.idle_done()
    assert idle.search(["SUBJECT", "after reload"])
    idle.logout()
