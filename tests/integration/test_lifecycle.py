"""Starting, stopping, crashing and administering the real server."""

import os
import socket
import subprocess
import sys
import time

from mailsuite.testing.server import ROOT, RunningSuite
from tests.integration.mailflow import ALICE, message, pop3, retrieve_all, send_mx, without_received


def test_message_survives_sigkill_right_after_250(suite):
    """The server is killed with SIGKILL the moment it said 250; after a restart the message is there."""
    data = message(subject="durable")
    send_mx(suite, data)
    suite.kill()
    suite.start()
    [received] = retrieve_all(suite)
    assert without_received(received) == data


def test_twistd_lists_the_mailsuite_plugin():
    """`twistd --help` names the mailsuite subcommand."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                             "--help"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert "mailsuite" in result.stdout


def test_bad_config_stops_the_start_with_one_line(tmp_path):
    """An unknown key makes twistd exit non-zero with one stderr line naming file and key."""
    suite = RunningSuite(str(tmp_path), extra={"smtp": {"max_recipients": 10, "colour": "blue"}})
    result = subprocess.run(suite.command(), capture_output=True, text=True,
                            env=suite.environment(), cwd=suite.folder, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mailsuite: {suite.config_path}: smtp.colour: unknown key"]


def test_bad_endpoint_is_named(tmp_path):
    """A listener with a malformed endpoint description is named in the error."""
    suite = RunningSuite(str(tmp_path), listen={"smtp": "tcp:port=notaport"})
    result = subprocess.run(suite.command(), capture_output=True, text=True,
                            env=suite.environment(), cwd=suite.folder, timeout=60)
    assert result.returncode != 0
    assert "listen.smtp" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_admin_adds_a_user_who_can_receive_and_log_in_at_once(sqlite_suite):
    """`mailsuite user add` on a running server: the new user gets mail and logs in via POP3."""
    added = sqlite_suite.admin("user", "add", "carol@example.test", "--password-stdin",
                               input="carol-password\n")
    assert added.returncode == 0, added.stderr
    send_mx(sqlite_suite, message(subject="welcome carol", to="carol@example.test"),
            to=["carol@example.test"])
    received = retrieve_all(sqlite_suite, ("carol@example.test", "carol-password"))
    assert len(received) == 1 and b"welcome carol" in received[0]


def test_admin_errors_are_one_line_and_nonzero(sqlite_suite):
    """Adding an existing user fails with one line on stderr and a non-zero status."""
    result = sqlite_suite.admin("user", "add", ALICE[0], "--password-stdin", input="x\n")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("mailsuite: ")


def test_admin_passwd_changes_the_login(sqlite_suite):
    """After `mailsuite user passwd`, only the new password works."""
    changed = sqlite_suite.admin("user", "passwd", ALICE[0], "--password-stdin", input="new-secret\n")
    assert changed.returncode == 0, changed.stderr
    client = pop3(sqlite_suite, (ALICE[0], "new-secret"))
    client.quit()


def test_check_prints_the_listeners(sqlite_suite):
    """`mailsuite check` validates the config and shows every listener."""
    result = sqlite_suite.admin("check")
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert "submission" in result.stdout and "pop3s" in result.stdout


def test_sample_config_is_valid():
    """etc/mailsuite.toml, the documented sample, passes `mailsuite check`."""
    result = subprocess.run([sys.executable, "-m", "mailsuite", "--config",
                             os.path.join(ROOT, "etc", "mailsuite.toml"), "check"],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr


def test_connections_per_client_are_limited(make_suite):
    """With max_connections_per_ip = 2, a third simultaneous connection is closed at once."""
    suite = make_suite(extra={"security": {"max_connections_per_ip": 2}})
    port = suite.port("smtp")
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for s in held:
            assert s.recv(100).startswith(b"220")
        third = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            assert third.recv(100) == b""
        finally:
            third.close()
    finally:
        for s in held:
            s.close()
    # The places are given back: a new connection is served again.
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as again:
            if again.recv(100).startswith(b"220"):
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
