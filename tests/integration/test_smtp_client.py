"""
The outbound SMTP client on a real reactor, in a child process, against real servers:
Postfix's smtp-sink (exact bytes on the wire, through a recording proxy, and what the sink
read, from its dump files), and mailsuite's own server (STARTTLS in each policy, AUTH, and
the message arriving byte for byte in the mailbox).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from mailsuite.testing.server import ROOT, RunningSuite
from mailsuite.tls import self_signed_paths
from tests.integration.mailflow import retrieve_all, without_received

HELO = "relay.client.test"


# ---------------------------------------------------------------------------- the client


def run_client(host: str, port: int, messages: list[dict], **options) -> dict:
    """
    Run ``deliver`` on a real reactor in a child process and return the SessionResult as a
    dict.  ``messages`` hold mail_from, recipients, data (bytes) and optionally mail_params.
    """
    request = {
        "host": host,
        "port": port,
        "messages": [dict(m, data=base64.b64encode(m["data"]).decode()) for m in messages],
        "options": options,
    }
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.run(
        [sys.executable, "-c", "from tests.integration.test_smtp_client import child; child()"],
        input=json.dumps(request), capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def child() -> None:
    """The child process: read a request on stdin, deliver, print the result as JSON."""
    import dataclasses

    from twisted.internet import task

    from mailsuite.smtp.client import OutboundMessage, Timeouts, TLSPolicy, deliver

    request = json.load(sys.stdin)
    options = request["options"]
    messages = [
        OutboundMessage(
            mail_from=m["mail_from"],
            recipients=[(address, {}) for address in m["recipients"]],
            data=base64.b64decode(m["data"]),
            mail_params=m.get("mail_params", {}),
        )
        for m in request["messages"]
    ]
    auth = options.get("auth")

    def main(reactor):
        d = deliver(
            reactor, request["host"], request["port"], messages,
            helo_name=HELO,
            tls=TLSPolicy(options.get("tls", "none")),
            tls_hostname=options.get("tls_hostname"),
            ca_file=options.get("ca_file"),
            auth=tuple(auth) if auth else None,
            connect_timeout=10,
            timeouts=Timeouts(greeting=30, command=30, mail=30, rcpt=30, data=30, data_block=30,
                              data_end=30, quit=5),
        )
        d.addCallback(lambda result: print(json.dumps(dataclasses.asdict(result))))
        return d

    task.react(main)


def outcome(result: dict) -> list[list[tuple[int, str]]]:
    return [[(r["code"], r["stage"]) for r in message] for message in result["results"]]


# ---------------------------------------------------------------------------- smtp-sink


def listening_port(pid: int, timeout: float = 10.0) -> int:
    """The TCP port process ``pid`` listens on (it was told port 0), from /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    return int(fields[1].rsplit(":", 1)[1], 16)
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} is not listening")


class RecordingProxy:
    """A TCP proxy on 127.0.0.1, port 0, keeping every byte the client sent."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.sent = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(downstream, upstream, self.sent), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, None), daemon=True).start()

    @staticmethod
    def _pump(source, target, record):
        try:
            while data := source.recv(65536):
                if record is not None:
                    record += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def start_sink():
    """Start smtp-sink with extra options, dumping each transaction, behind a recording proxy."""
    binary = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if binary is None:
        pytest.skip("smtp-sink is not installed (apt-get install postfix)")
    sinks, proxies = [], []

    def start(*options: str) -> RecordingProxy:
        # As root smtp-sink must drop privileges; the dump folder must then be writable by nobody.
        folder = tempfile.mkdtemp(prefix="smtp-sink-")
        os.chmod(folder, 0o777)
        command = [binary, "-d", folder + "/%Y%m%d%H%M%S.", *options]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        process = subprocess.Popen(command + ["127.0.0.1:0", "10"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sinks.append((process, folder))
        proxy = RecordingProxy(listening_port(process.pid))
        proxies.append(proxy)
        proxy.dumps = lambda expected: _read_dumps(folder, expected)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
    for process, folder in sinks:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sink(start_sink):
    return start_sink()


def _read_dumps(folder: str, expected: int, timeout: float = 5.0) -> dict[str, bytes]:
    """MAIL FROM address -> the content smtp-sink read, once ``expected`` dumps are there."""
    deadline = time.monotonic() + timeout
    while True:
        dumps = {}
        for path in glob.glob(os.path.join(folder, "*")):
            with open(path, "rb") as f:
                text = f.read()
            # The sink's own header lines end with a three-line Received field.
            sender = re.search(rb"^X-Mail-Args: <([^>]*)>", text, re.M).group(1).decode()
            match = re.search(rb"^Received: .*\n\t.*\n\t.*\n", text, re.M)
            dumps[sender] = text[match.end():]
        if len(dumps) >= expected or time.monotonic() > deadline:
            return dumps
        time.sleep(0.05)


def stuffed(content: bytes) -> bytes:
    """What DATA content must look like on the wire: CRLF lines, dots doubled, terminator."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


def _chunk_edges() -> bytes:
    """
    A body whose bytes fall on the client's 64 KiB write chunks: a "." first in the second
    chunk right after a line end, and a CRLF split between the second and third chunk.
    """
    head = b"Subject: 64k\r\n\r\n"
    first = head + b"b" * (65536 - len(head) - 2) + b"\r\n"
    second = b".\r\n" + b"c" * (65536 - 4) + b"\r"
    return first + second + b"\n.\r\n."


ADVERSARIAL = {
    "lone-dot@client.test": b"Subject: a lone dot\r\n\r\n.\r\nafter\r\n",
    "two-dots@client.test": b"Subject: two dots\r\n\r\n..\r\n.\r\n",
    "dot-16k@client.test": b"Subject: 16k\r\n\r\n" + b"a" * (16384 - 17) + b"\r\n.\r\nQUIT\r\n",
    "dot-64k@client.test": _chunk_edges(),
    "bare-lf@client.test": b"Subject: bare LF\n\nline one\nline two\n.\nend\n",
    "bare-cr@client.test": b"Subject: bare CR\r\rline one\rline two\r.\rend",
    "eight-bit@client.test": b"Subject: 8bit\r\n\r\n\xc3\xa4\xff\xfe\x80 bytes\r\n",
    "no-newline@client.test": b"Subject: unterminated\r\n\r\nlast line without end",
}


def test_exact_bytes_reach_smtp_sink(sink):
    """
    Every adversarial body goes over one connection with the exact expected DATA bytes,
    and smtp-sink reads each as the intended message (no early end, no lost line).
    """
    messages = [{"mail_from": sender, "recipients": ["x@sink.test"], "data": data,
                 "mail_params": {"BODY": "8BITMIME"}}
                for sender, data in ADVERSARIAL.items()]
    result = run_client("127.0.0.1", sink.port, messages)

    assert outcome(result) == [[(250, "data")]] * len(ADVERSARIAL)
    expected = f"EHLO {HELO}\r\n".encode()
    for sender, data in ADVERSARIAL.items():
        # smtp-sink announces PIPELINING, 8BITMIME and DSN but no SIZE.
        expected += f"MAIL FROM:<{sender}> BODY=8BITMIME\r\nRCPT TO:<x@sink.test>\r\nDATA\r\n".encode()
        expected += stuffed(data)
    expected += b"QUIT\r\n"
    assert bytes(sink.sent) == expected

    # The dump holds the content as the sink read it: unstuffed, lines ended by LF, plus
    # one empty line.
    dumps = sink.dumps(len(ADVERSARIAL))
    for sender, data in ADVERSARIAL.items():
        lines = stuffed(data)[:-3].replace(b"\r\n", b"\n")
        assert dumps[sender] == re.sub(rb"(?m)^\.", b"", lines) + b"\n", sender


@pytest.mark.parametrize("options, expected", [
    # 550 right after the 354, then the connection closes: the next message is temporary.
    (["-A", "0"], [[(550, "data"), (550, "data")], [(0, "mail")]]),
    # 421 to RCPT ends the session for everything unfinished.
    (["-Q", "RCPT"], [[(421, "rcpt"), (421, "rcpt")], [(421, "rcpt")]]),
    # The connection dropped after DATA without a reply.
    (["-q", "DATA"], [[(0, "data"), (0, "data")], [(0, "data")]]),
    # Every RCPT refused 4xx, no PIPELINING (-r implies -p).
    (["-r", "RCPT"], [[(450, "rcpt"), (450, "rcpt")], [(450, "rcpt")]]),
    # MAIL refused 5xx.
    (["-f", "MAIL"], [[(500, "mail"), (500, "mail")], [(500, "mail")]]),
])
def test_smtp_sink_failures(start_sink, options, expected):
    """Refusals and broken sessions from a real server come back per recipient, in order."""
    sink = start_sink(*options)
    result = run_client("127.0.0.1", sink.port, [
        {"mail_from": "a@client.test", "recipients": ["x@sink.test", "y@sink.test"], "data": b"one\r\n"},
        {"mail_from": "b@client.test", "recipients": ["z@sink.test"], "data": b"two\r\n"},
    ])
    assert outcome(result) == expected


# ---------------------------------------------------------------------------- mailsuite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    server = RunningSuite(str(tmp_path_factory.mktemp("smtp-client") / "suite"))
    server.start()
    yield server
    server.stop()


def certificate(suite) -> str:
    return self_signed_paths(suite.data_dir)[0]


def stored(suite, marker: bytes) -> list[bytes]:
    """alice's messages containing ``marker``, without the Received header the server added."""
    return [without_received(m) for m in retrieve_all(suite) if marker in m]


def letter(subject: str) -> bytes:
    return (f"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@remote.test>\r\n\r\n").encode() + (
        b".leading dot\r\n..two\r\n.\r\n" + (b"z" * 98 + b"\r\n") * 200 + b".\r\n\xc3\xa4 8-bit\r\nend\r\n")


def test_opportunistic_tls_to_mailsuite(suite):
    """OPPORTUNISTIC uses STARTTLS with the self-signed certificate; the message lands byte for byte."""
    data = letter("opportunistic")
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["alice@example.test"], "data": data,
         "mail_params": {"BODY": "8BITMIME"}}], tls="opportunistic")
    assert outcome(result) == [[(250, "data")]]
    assert result["tls"] is True
    assert stored(suite, b"Subject: opportunistic") == [data]


def test_bare_line_ends_arrive_normalised(suite):
    """A message stored with bare LF reaches the mailbox with CRLF line ends."""
    data = letter("bare-lf").replace(b"\r\n", b"\n")
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["alice@example.test"], "data": data}],
        tls="opportunistic")
    assert outcome(result) == [[(250, "data")]]
    assert stored(suite, b"Subject: bare-lf") == [data.replace(b"\n", b"\r\n")]


def test_verify_fails_against_an_untrusted_certificate(suite):
    """VERIFY with the platform's trust store refuses the self-signed certificate: temporary."""
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["alice@example.test"],
         "data": letter("untrusted")}], tls="verify", tls_hostname="mail.example.test")
    [[r]] = result["results"]
    assert (r["code"], r["stage"]) == (0, "starttls")
    assert r["text"] == "TLS handshake failed: certificate verify failed"
    assert stored(suite, b"Subject: untrusted") == []


def test_verify_fails_for_the_wrong_name(suite):
    """VERIFY trusting the certificate but expecting another host name: temporary."""
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["alice@example.test"],
         "data": letter("wrong-name")}],
        tls="verify", ca_file=certificate(suite), tls_hostname="mx.elsewhere.test")
    [[r]] = result["results"]
    assert (r["code"], r["stage"]) == (0, "starttls")
    assert "host name" in r["text"]
    assert stored(suite, b"Subject: wrong-name") == []


def test_verify_passes_with_the_certificate_as_ca(suite):
    """VERIFY with ca_file = the server's certificate and its name delivers over TLS."""
    data = letter("verified")
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["alice@example.test"], "data": data}],
        tls="verify", ca_file=certificate(suite), tls_hostname="mail.example.test")
    assert outcome(result) == [[(250, "data")]]
    assert result["tls"] is True
    assert stored(suite, b"Subject: verified") == [data]


def test_recipient_refusal_and_delivery_in_one_session(suite):
    """An unknown local recipient gets 550 5.1.1 while the other recipient is delivered."""
    data = letter("mixed")
    result = run_client("127.0.0.1", suite.port("smtp"), [
        {"mail_from": "carol@remote.test", "recipients": ["nobody@example.test", "alice@example.test"],
         "data": data}], tls="none")
    [[nobody, alice]] = result["results"]
    assert (nobody["code"], nobody["enhanced"], nobody["stage"]) == (550, "5.1.1", "rcpt")
    assert (alice["code"], alice["stage"]) == (250, "data")
    assert stored(suite, b"Subject: mixed") == [data]


def test_auth_over_starttls_on_submission(suite):
    """AUTH PLAIN after STARTTLS on the submission port lets alice send to bob."""
    result = run_client("127.0.0.1", suite.port("submission"), [
        {"mail_from": "alice@example.test", "recipients": ["bob@example.test"], "data": letter("auth")}],
        tls="verify", ca_file=certificate(suite), tls_hostname="mail.example.test",
        auth=["alice@example.test", "alice-password"])
    assert outcome(result) == [[(250, "data")]]


def test_wrong_password_is_permanent(suite):
    """535 to AUTH fails the recipients permanently."""
    result = run_client("127.0.0.1", suite.port("submission"), [
        {"mail_from": "alice@example.test", "recipients": ["bob@example.test"], "data": letter("badauth")}],
        tls="opportunistic", auth=["alice@example.test", "wrong"])
    [[r]] = result["results"]
    assert (r["code"], r["enhanced"], r["stage"]) == (535, "5.7.8", "auth")


def test_connection_refused_is_temporary():
    """Nothing listening: every recipient gets code 0 at stage "connect"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = run_client("127.0.0.1", port, [
            {"mail_from": "a@client.test", "recipients": ["b@example.test"], "data": b"x\r\n"}])
    assert outcome(result) == [[(0, "connect")]]
