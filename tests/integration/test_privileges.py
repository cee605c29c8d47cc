"""
`twistd --uid/--gid`: the server binds a privileged port as root, then runs as an
unprivileged user and still stores and serves mail (run where the tests are root).
"""

from __future__ import annotations

import os
import poplib
import pwd
import shutil
import smtplib
import socket
import tempfile

import pytest

from mailsuite.testing.server import DEFAULT_LISTEN, RunningSuite

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch user")


def free_privileged_port() -> int:
    """A port below 1024 that nothing listens on right now (the server binds it next)."""
    for port in range(1023, 600, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free privileged port")


def process_ids(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])  # effective ids


def test_runs_unprivileged_after_binding_a_privileged_port():
    nobody = pwd.getpwnam("nobody")
    # pytest's own temporary folders are private to root; this one is open to read.
    folder = tempfile.mkdtemp(prefix="mailsuite-uid-")
    os.chmod(folder, 0o755)
    port = free_privileged_port()
    listen = dict(DEFAULT_LISTEN, smtp=f"tcp:port={port}:interface=127.0.0.1")
    suite = RunningSuite(os.path.join(folder, "suite"), listen=listen,
                         twistd_args=("--uid", str(nobody.pw_uid), "--gid", str(nobody.pw_gid)))
    os.chmod(suite.folder, 0o755)
    try:
        suite.start()
        assert suite.port("smtp") == port
        assert process_ids(suite.process.pid) == (nobody.pw_uid, nobody.pw_gid)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("someone@remote.test", ["bob@example.test"],
                            b"Subject: as nobody\r\n\r\nstored by an unprivileged server\r\n")
        pop = poplib.POP3("127.0.0.1", suite.port("pop3"), timeout=30)
        pop.user("bob@example.test")
        pop.pass_("bob-password")
        assert pop.stat()[0] == 1
        assert b"Subject: as nobody" in b"\r\n".join(pop.retr(1)[1])
        pop.quit()
        assert os.stat(suite.data_dir).st_uid == nobody.pw_uid
    finally:
        suite.stop()
        shutil.rmtree(folder, ignore_errors=True)
