"""
DNS: mailsuite's dns component against unbound, measured with dnsperf in the same run.

Three servers on loopback:

  upstream   a mailsuite (twistd mailsuite, dns only) authoritative for example.org
             (--names A records w<i>.example.org), the forwarder both servers under test use;
  mailsuite  twistd mailsuite with only listen.dns: zones generated for example.test plus a
             zone file of --names hosts h<i>.example.test, and the caching resolver
             forwarding everything else to upstream;
  unbound    one thread, the same example.test records as local-data in a static local-zone,
             and a forward-zone for example.org to upstream.

Three query mixes, each run for --duration seconds against each server with dnsperf
(--clients simulated clients, 100 queries in flight, UDP, no EDNS):

  authoritative   A h<i>.example.test, plus the MX, NS, SOA, SPF TXT, DMARC TXT, SRV and
                  A/AAAA of the mail host, and 1 in 10 questions for names that do not exist
                  (NXDOMAIN with SOA); each name in a random mix of upper and lower case
                  (as resolvers using DNS 0x20 ask), 20 spellings per name
  unique names    A x<i>.<random>.example.test, every question a name never asked before
                  (NXDOMAIN with SOA)
  cached          A w<i>.example.org, after a warm-up pass so every name is in the cache,
                  spelt as in the authoritative mix

mailsuite keeps the answers it encoded and sends them again (with the new ID and spelling of
the name) to the same question: authoritative ones until the zones change, recursive ones for
a second.  The authoritative and cached mixes mostly measure that; "unique names" measures
answering from the zones with nothing to reuse.

The table gives queries per second, average latency, lost queries and the ratio
mailsuite / unbound.

    python3 bench/dns_bench.py [--duration 10] [--names 1000] [--clients 4]
                               [--unique 400000] [--dir /var/tmp]

Needs dnsperf and unbound (Debian packages dnsperf, unbound).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402

from mailsuite.dns.zones import SRV_SERVICES, build_zones  # noqa: E402
from mailsuite.testing.server import RunningSuite  # noqa: E402

HOST = "127.0.0.1"
HOSTNAME = "mail.example.test"
ADDRESSES = ["192.0.2.10", "2001:db8::10"]


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def upstream_zone(names: int) -> str:
    lines = ["$ORIGIN example.org.", "$TTL 3600", "@ SOA ns hostmaster ( 1 3600 900 1209600 300 )",
             "@ NS ns", "ns A 127.0.0.1"]
    lines += [f"w{i} A 198.51.{i // 256 % 256}.{i % 256}" for i in range(names)]
    return "\n".join(lines) + "\n"


def hosts_zone(names: int) -> str:
    lines = ["$ORIGIN example.test.", "$TTL 3600"]
    lines += [f"h{i} A 192.0.{2 + i // 256 % 200}.{i % 256}" for i in range(names)]
    return "\n".join(lines) + "\n"


def authoritative_queries(names: int) -> str:
    fixed = ["example.test MX", "example.test NS", "example.test SOA", "example.test TXT",
             "_dmarc.example.test TXT", "_submission._tcp.example.test SRV",
             "_imap._tcp.example.test SRV", f"{HOSTNAME} A", f"{HOSTNAME} AAAA",
             "autoconfig.example.test A"]
    lines = []
    for i in range(names):
        lines.append(f"h{i}.example.test A")
        if i % 10 == 0:
            lines.append(f"missing{i}.example.test A")
        if i % 10 == 5:
            lines.append(fixed[(i // 10) % len(fixed)])
    return "\n".join(lines) + "\n"


def cached_queries(names: int) -> str:
    return "".join(f"w{i}.example.org A\n" for i in range(names))


def unique_queries(count: int, seed: int = 53) -> str:
    rng = random.Random(seed)
    return "".join(f"x{i}.{rng.getrandbits(40):x}.example.test A\n" for i in range(count))


def case_mixed(text: str, copies: int = 20, seed: int = 20) -> str:
    """Each query line ``copies`` times in random order, its name in random letter case."""
    rng = random.Random(seed)
    lines = [line for line in text.splitlines() if line] * copies
    rng.shuffle(lines)
    out = []
    for line in lines:
        qname, rdtype = line.split()
        out.append("".join(c.upper() if rng.random() < 0.5 else c for c in qname) + " " + rdtype)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- unbound


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (racy, as any such choice)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")


def unbound_local_data(zone_files: list[str]) -> list[str]:
    """The example.test zone as unbound local-data lines (the same records mailsuite serves)."""
    # mailsuite runs with every mail listener off: its SRV records say "not offered".
    listen = {key: "" for key, _ in SRV_SERVICES}
    [zone] = [z for z in build_zones(domains=["example.test"], hostname=HOSTNAME,
                                     addresses=ADDRESSES, ttl=3600, listen=listen,
                                     zone_files=zone_files)
              if z.origin.to_text() == "example.test."]
    lines = []
    for name, node in sorted(zone.nodes.items()):
        for rdataset in node:
            for rdata in rdataset:
                record = f"{name} {rdataset.ttl} IN {dns.rdatatype.to_text(rdataset.rdtype)} " \
                         f"{rdata.to_text()}"
                lines.append("    local-data: '" + record + "'")
    return lines


class Unbound:
    def __init__(self, folder: str, upstream_port: int, zone_files: list[str]):
        self.folder = folder
        self.port = free_port()
        self.config = os.path.join(folder, "unbound.conf")
        self.log = os.path.join(folder, "unbound.log")
        text = "\n".join([
            "server:",
            f"    interface: {HOST}",
            f"    port: {self.port}",
            "    do-daemonize: no",
            "    use-syslog: no",
            f'    logfile: "{self.log}"',
            '    chroot: ""',
            '    username: ""',
            f'    directory: "{folder}"',
            f'    pidfile: "{os.path.join(folder, "unbound.pid")}"',
            "    num-threads: 1",
            "    do-ip6: no",
            "    access-control: 127.0.0.0/8 allow",
            '    module-config: "iterator"',
            "    do-not-query-localhost: no",
            "    qname-minimisation: no",
            "    verbosity: 0",
            '    local-zone: "example.test." static',
            *unbound_local_data(zone_files),
            "remote-control:",
            "    control-enable: no",
            "forward-zone:",
            '    name: "example.org."',
            f"    forward-addr: {HOST}@{upstream_port}",
            "",
        ])
        write(self.config, text)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "Unbound":
        self.process = subprocess.Popen([shutil.which("unbound"), "-d", "-c", self.config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        query = dns.message.make_query("example.test", "SOA")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"unbound exited: {self.process.stderr.read().decode()}")
            try:
                dns.query.udp(query, HOST, port=self.port, timeout=0.2)
                return self
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise RuntimeError("unbound did not answer in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- dnsperf


def dnsperf(port: int, datafile: str, *, duration: float, clients: int) -> dict:
    result = subprocess.run(
        ["dnsperf", "-s", HOST, "-p", str(port), "-d", datafile, "-l", str(duration),
         "-c", str(clients), "-T", "1", "-q", "100", "-t", "2"],
        capture_output=True, text=True, timeout=duration + 60)
    out = result.stdout

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if not match:
            raise RuntimeError(f"dnsperf output not understood:\n{out}\n{result.stderr}")
        return float(match.group(1))

    codes = re.search(r"Response codes:\s+(.*)", out)
    return {
        "qps": number(r"Queries per second:\s+([\d.]+)"),
        "latency_ms": number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        "lost": int(number(r"Queries lost:\s+(\d+)")),
        "sent": int(number(r"Queries sent:\s+(\d+)")),
        "codes": codes.group(1).strip() if codes else "",
    }


def warm_up(port: int, names: int) -> None:
    """Every example.org name asked once, so the measured run answers from the cache."""
    for i in range(names):
        q = dns.message.make_query(f"w{i}.example.org", "A")
        answer = dns.query.udp(q, HOST, port=port, timeout=5)
        if not answer.answer:
            raise RuntimeError(f"warm-up: no answer for w{i}.example.org from port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--names", type=int, default=1000, help="names in each zone")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf clients")
    parser.add_argument("--unique", type=int, default=400000,
                        help="questions in the unique-names mix (more than a run can send)")
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    args = parser.parse_args()
    for tool in ("dnsperf", "unbound"):
        if shutil.which(tool) is None:
            sys.exit(f"dns_bench: {tool} is not installed")

    folder = tempfile.mkdtemp(prefix="dns-bench-", dir=args.dir)
    started = []
    try:
        upstream = RunningSuite(os.path.join(folder, "upstream"), listen={"dns": f"{HOST}:0"},
                              extra={"suite": {"domains": ["upstream.test"]},
                                     "dns": {"zone_files": ["example.org.zone"]}})
        write(os.path.join(upstream.folder, "example.org.zone"), upstream_zone(args.names))
        started.append(upstream.start())
        upstream_port = upstream.port("dns")

        server = RunningSuite(os.path.join(folder, "mailsuite"), listen={"dns": f"{HOST}:0"},
                            extra={"dns": {"zone_files": ["hosts.zone"], "addresses": ADDRESSES,
                                           "upstream": [f"{HOST}:{upstream_port}"]}})
        hosts = write(os.path.join(server.folder, "hosts.zone"), hosts_zone(args.names))
        started.append(server.start())

        unbound = Unbound(folder, upstream_port, [hosts])
        started.append(unbound.start())

        mixes = {
            "authoritative": case_mixed(authoritative_queries(args.names)),
            "unique names": unique_queries(args.unique),
            "cached": case_mixed(cached_queries(args.names)),
        }
        files = {mix: write(os.path.join(folder, f"{mix.replace(' ', '-')}.txt"), text)
                 for mix, text in mixes.items()}
        ports = {"mailsuite": server.port("dns"), "unbound": unbound.port}
        for port in ports.values():
            warm_up(port, args.names)

        results = {}
        for mix, datafile in files.items():
            for label, port in ports.items():
                print(f"measuring {mix} answers from {label} ({args.duration:g} s) ...",
                      file=sys.stderr)
                results[mix, label] = dnsperf(port, datafile, duration=args.duration,
                                              clients=args.clients)
        report(results, list(files), args)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict, mixes: list[str], args) -> None:
    print()
    print(f"dnsperf, UDP, {args.clients} clients, 100 in flight, {args.duration:g} s per cell, "
          f"{args.names} names per zone; unbound with 1 thread")
    print()
    print(f"{'answers':<20}{'server':<11}{'queries/s':>11}{'avg ms':>9}{'lost':>7}"
          f"{'ratio':>8}   response codes")
    for mix in mixes:
        baseline = results[mix, "unbound"]["qps"]
        for label in ("mailsuite", "unbound"):
            r = results[mix, label]
            ratio = r["qps"] / baseline if baseline else float("nan")
            print(f"{mix:<20}{label:<11}{r['qps']:>11.0f}{r['latency_ms']:>9.2f}{r['lost']:>7}"
                  f"{ratio:>8.2f}   {r['codes']}")
    print()
    print("ratio = queries/s relative to unbound for the same answers")


if __name__ == "__main__":
    main()
