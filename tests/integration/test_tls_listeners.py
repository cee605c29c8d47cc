"""
Every TLS listener, seen by `openssl s_client`: TLS 1.3 and forward-secret AEAD suites of
TLS 1.2 are accepted; TLS 1.0, TLS 1.1, CBC suites and static-RSA key exchange are refused.

The client is told to allow everything (``@SECLEVEL=0``) so a refusal is the server's.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mailsuite.testing.server import DEFAULT_LISTEN

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")

# listener -> the s_client -starttls protocol (None: implicit TLS)
LISTENERS = {
    "smtp": "smtp", "submission": "smtp", "submissions": None,
    "imap": "imap", "imaps": None, "pop3": "pop3", "pop3s": None,
    "ldap": "ldap", "ldaps": None,
}


@pytest.fixture(scope="module")
def tls_suite(tmp_path_factory):
    from mailsuite.testing.server import RunningSuite

    listen = dict(DEFAULT_LISTEN)
    listen.update({"imaps": "tcp:port=0:interface=127.0.0.1",
                   "ldaps": "tcp:port=0:interface=127.0.0.1"})
    suite = RunningSuite(str(tmp_path_factory.mktemp("tls")), listen=listen).start()
    yield suite
    suite.stop()


def handshake(suite, listener, *options) -> tuple[bool, str]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{suite.port(listener)}",
               "-servername", "mail.example.test", *options]
    if LISTENERS[listener]:
        command += ["-starttls", LISTENERS[listener]]
    done = subprocess.run(command, input=b"", capture_output=True, timeout=30)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    established = done.returncode == 0 and "Cipher is (NONE)" not in output \
        and ("Cipher is " in output or "Cipher    :" in output)
    return established, output


@pytest.mark.parametrize("listener", sorted(LISTENERS))
def test_modern_tls_is_accepted(tls_suite, listener):
    ok, output = handshake(tls_suite, listener, "-tls1_3")
    assert ok, output
    ok, output = handshake(tls_suite, listener, "-tls1_2", "-cipher",
                           "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    assert ok, output


@pytest.mark.parametrize("listener", sorted(LISTENERS))
@pytest.mark.parametrize("old", ["-tls1", "-tls1_1"])
def test_old_protocols_are_refused(tls_suite, listener, old):
    ok, output = handshake(tls_suite, listener, old, "-cipher", "ALL:@SECLEVEL=0")
    assert not ok, output


@pytest.mark.parametrize("listener", sorted(LISTENERS))
@pytest.mark.parametrize("suites", [
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",          # CBC, no AEAD
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384",    # CBC with SHA-2, no AEAD
    "AES128-GCM-SHA256:AES256-SHA",                          # static RSA: no forward secrecy
])
def test_weak_tls12_suites_are_refused(tls_suite, listener, suites):
    ok, output = handshake(tls_suite, listener, "-tls1_2", "-cipher", f"{suites}:@SECLEVEL=0")
    assert not ok, output
