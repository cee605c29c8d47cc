"""
The caching resolver on the real reactor, forwarding to small DNS servers on 127.0.0.1 port 0
that the tests run (plain sockets in threads, answers built with dnspython).  The resolver
runs in a child process with the real reactor, like the suite itself; it prints its results
as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESOLVER_SCRIPT = r"""
import json, sys
from twisted.internet import defer, reactor
from mailsuite.dns.client import SuiteResolver
from mailsuite.dns.resolver import CachingResolver

args = json.loads(sys.argv[1])
resolver = CachingResolver(reactor, upstream=[tuple(u) for u in args["upstream"]],
                           timeout=args["timeout"])
names = SuiteResolver(resolver)
output = {"resolutions": [], "lookups": []}


def summary(resolution):
    return {"rcode": resolution.rcode, "answer": [r.to_text() for r in resolution.answer]}


async def main():
    for group in args["queries"]:
        results = await defer.gatherResults([resolver.resolve(name, rdtype)
                                             for name, rdtype in group])
        output["resolutions"].append([summary(r) for r in results])
    for name in args["lookups"]:
        try:
            answers, _, _ = await names.lookupAddress(name)
            output["lookups"].append(["ok", [a.payload.dottedQuad() for a in answers]])
        except Exception as e:
            output["lookups"].append([type(e).__name__, []])


def run():
    d = defer.Deferred.fromCoroutine(main())
    d.addCallback(lambda _: print(json.dumps(output)))
    d.addErrback(lambda f: f.printTraceback(file=sys.stderr))
    d.addBoth(lambda _: reactor.stop())


reactor.callWhenRunning(run)
reactor.run()
"""

A, TXT = dns.rdatatype.A, dns.rdatatype.TXT
BIG_STRINGS = ["x" * 200 for _ in range(10)]
SOA = "example.org. 300 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60"


class LoopbackDNS:
    """
    A forwarder on 127.0.0.1 (UDP and TCP on one port 0 port).  Answers:
    www.example.org A 192.0.2.10; spoofed.example.org A 192.0.2.20, preceded by three
    forgeries (another source port, another ID, another question); big.example.org TXT
    truncated over UDP, whole over TCP; anything else NXDOMAIN.
    """

    def __init__(self):
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self.spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.spoofer.bind(("127.0.0.1", 0))
        self.seen: list[tuple[str, int, dns.message.Message]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=loop, daemon=True)
                        for loop in (self._serve_udp, self._serve_tcp)]
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        for s in (self.udp, self.tcp, self.spoofer):
            s.close()

    def questions(self, transport=None):
        return [(m.question[0].name.to_text(), m.question[0].rdtype) for t, _, m in self.seen
                if transport in (None, t)]

    def _reply(self, query, *, tcp):
        question = query.question[0]
        name, rdtype = question.name.to_text(), question.rdtype
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        if name == "www.example.org." and rdtype == A:
            reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.10"))
        elif name == "spoofed.example.org." and rdtype == A:
            reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.20"))
        elif name == "big.example.org." and rdtype == TXT:
            if tcp:
                reply.answer.append(dns.rrset.from_text_list(
                    name, 300, "IN", "TXT", [f'"{s}" "{i}"' for i, s in enumerate(BIG_STRINGS)]))
            else:
                reply.flags |= dns.flags.TC
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(dns.rrset.from_text(*SOA.split(maxsplit=4)))
        return reply

    def _forgeries(self, query, client):
        forged = dns.message.make_response(query)
        forged.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                                 "203.0.113.1"))
        self.spoofer.sendto(forged.to_wire(), client)
        wrong_id = dns.message.make_response(query)
        wrong_id.id = (query.id + 1) % 65536
        wrong_id.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                                   "203.0.113.2"))
        self.udp.sendto(wrong_id.to_wire(), client)
        other = dns.message.make_query("www.example.org.", A, id=query.id)
        wrong_question = dns.message.make_response(other)
        wrong_question.answer.append(dns.rrset.from_text("www.example.org.", 300, "IN", "A",
                                                         "203.0.113.3"))
        self.udp.sendto(wrong_question.to_wire(), client)

    def _serve_udp(self):
        self.udp.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                data, client = self.udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            query = dns.message.from_wire(data)
            self.seen.append(("udp", client[1], query))
            if query.question[0].name.to_text() == "spoofed.example.org.":
                self._forgeries(query, client)
            self.udp.sendto(self._reply(query, tcp=False).to_wire(), client)

    def _serve_tcp(self):
        self.tcp.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                connection, client = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            with connection:
                connection.settimeout(5)
                length = struct.unpack("!H", _read(connection, 2))[0]
                query = dns.message.from_wire(_read(connection, length))
                self.seen.append(("tcp", client[1], query))
                wire = self._reply(query, tcp=True).to_wire(max_size=65535)
                connection.sendall(struct.pack("!H", len(wire)) + wire)


def _read(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def _bind_pair():
    """A UDP and a TCP socket on the same free port of 127.0.0.1."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP")


@pytest.fixture
def server():
    running = LoopbackDNS()
    yield running
    running.stop()


@pytest.fixture
def silent():
    """A bound UDP socket that never answers (and so sends no ICMP refusal either)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def run_resolver(upstream, *, queries=(), lookups=(), timeout=2.0):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    args = {"upstream": upstream, "timeout": timeout, "lookups": list(lookups),
            "queries": [[list(q) for q in group] for group in queries]}
    done = subprocess.run([sys.executable, "-c", RESOLVER_SCRIPT, json.dumps(args)],
                          capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_forwarded_query_is_answered_over_udp_with_edns_and_rd(server):
    """An A question forwarded to the loopback server comes back with its address."""
    out = run_resolver([["127.0.0.1", server.port]], queries=[[("www.example.org", A)]])
    (result,), = out["resolutions"]
    assert result["rcode"] == dns.rcode.NOERROR
    assert result["answer"] == ["www.example.org. 300 IN A 192.0.2.10"]
    (transport, _, query), = server.seen
    assert transport == "udp" and query.flags & dns.flags.RD
    assert query.edns == 0 and query.payload == 1232


def test_forged_replies_from_another_port_id_or_question_are_ignored(server):
    """Three forgeries arrive before the genuine reply; only the genuine one is taken."""
    out = run_resolver([["127.0.0.1", server.port]], queries=[[("spoofed.example.org", A)]])
    (result,), = out["resolutions"]
    assert result["answer"] == ["spoofed.example.org. 300 IN A 192.0.2.20"]


def test_truncated_reply_is_fetched_again_over_tcp(server):
    """A TC=1 UDP reply leads to the same question over TCP, whose full answer is used."""
    out = run_resolver([["127.0.0.1", server.port]], queries=[[("big.example.org", TXT)]])
    (result,), = out["resolutions"]
    assert result["rcode"] == dns.rcode.NOERROR
    assert all(s in result["answer"][0] for s in BIG_STRINGS)
    assert [t for t, _, _ in server.seen] == ["udp", "tcp"]


def test_silent_first_forwarder_fails_over_to_the_second(server, silent):
    """After the timeout on a silent forwarder, the next one is asked and answers."""
    out = run_resolver([["127.0.0.1", silent], ["127.0.0.1", server.port]],
                       queries=[[("www.example.org", A)]], timeout=0.5)
    (result,), = out["resolutions"]
    assert result["answer"] == ["www.example.org. 300 IN A 192.0.2.10"]


def test_only_silent_forwarders_give_servfail_and_dns_server_error(silent):
    """Nobody answering is SERVFAIL for resolve() and DNSServerError for lookupAddress."""
    out = run_resolver([["127.0.0.1", silent]], queries=[[("www.example.org", A)]],
                       lookups=["www.example.org"], timeout=0.3)
    assert out["resolutions"] == [[{"rcode": dns.rcode.SERVFAIL, "answer": []}]]
    assert out["lookups"] == [["DNSServerError", []]]


def test_names_through_the_twisted_resolver_interface(server):
    """lookupAddress gives the address, and DNSNameError for a name that does not exist."""
    out = run_resolver([["127.0.0.1", server.port]],
                       lookups=["www.example.org", "missing.example.org"])
    assert out["lookups"] == [["ok", ["192.0.2.10"]], ["DNSNameError", []]]


def test_each_query_has_its_own_source_port_and_id(server):
    """Five questions leave from (nearly always) five ports with five IDs."""
    names = [(f"n{i}.example.org", A) for i in range(5)]
    run_resolver([["127.0.0.1", server.port]], queries=[names])
    ports = {port for _, port, _ in server.seen}
    ids = {query.id for _, _, query in server.seen}
    assert len(server.seen) == 5 and len(ports) >= 4 and len(ids) >= 4


def test_concurrent_questions_share_a_query_and_repeats_come_from_the_cache(server):
    """Two simultaneous identical questions and a later repeat cost one query in all."""
    out = run_resolver([["127.0.0.1", server.port]],
                       queries=[[("www.example.org", A), ("WWW.example.org", A)],
                                [("www.example.org", A)]])
    answers = [r["answer"] for group in out["resolutions"] for r in group]
    assert len(answers) == 3 and all(a == answers[0] for a in answers)
    assert server.questions() == [("www.example.org.", A)]
