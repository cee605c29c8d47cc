"""
LDAP: mailsuite's directory server against OpenLDAP slapd (mdb backend), in the same run.

Both servers get the same generated people (inetOrgPerson entries under
ou=people,dc=example,dc=test with uid, cn, sn, givenName, mail and a {SSHA} userPassword, so
both verify binds the same way).  slapd indexes uid eq and mail, cn, sn, givenName eq,sub;
mailsuite uses its own in-memory indexes.  For --connections (each a separate client
process with one blocking connection) and --duration seconds per cell, it counts:

  equality search  (mail=<address>) anonymous and (uid=<uid>) bound as the admin DN (uid is
                   not a white-pages attribute in mailsuite), one entry expected
  address book     (|(cn=*x*)(mail=*x*)(sn=*x*)(givenName=*x*)), sizelimit 50, as
                   Thunderbird sends it; x is a 3-letter piece of a random name
  bind             simple bind as a random person with the right password

Then, with --startup-people entries: the time from process start until the server listens
(listening.json for mailsuite, an open port for slapd), the CPU time the process used until
then (less sensitive to other load on the machine than the elapsed time), and its resident
memory (VmRSS) then.  mailsuite is timed twice: the first start (importing the seed LDIF) and
a restart on the stored directory; slapd's offline load (slapadd -q) is shown separately.
mailsuite builds its substring index after it listens: the time until that is done and the
memory then are shown too.

    python3 bench/ldap_bench.py [--people 10000] [--startup-people 100000] [--duration 5]
                                [--connections 1,8] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ldap_wire import (SIZE_LIMIT_EXCEEDED, SUCCESS, Connection, LDAPWireError,  # noqa: E402
                       f_contains, f_equal, f_or, search_request)

from mailsuite.testing.server import RunningSuite  # noqa: E402
from mailsuite.testing.slapd import Slapd, free_port, slapd_binary, ssha  # noqa: E402

HOST = "127.0.0.1"
SUFFIX = "dc=example,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-password"
ATTRIBUTES = ["cn", "mail", "sn", "givenName", "uid"]
ADDRESS_BOOK_LIMIT = 50

GIVEN = ("Alice Bob Carol David Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy "
         "Rupert Sybil Trent Victor Walter Yvonne Zoe Marta Jonas Lena Tomasz Ingrid Pedro "
         "Aiko Farid Greta Hamid Ines Kofi Leila Mateo Nadia Oskar Priya Quentin Rosa").split()
SURNAMES = ("Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson "
            "Evans Walker White Roberts Green Hall Wood Jackson Clarke Mueller Schmidt Schneider "
            "Fischer Weber Meyer Wagner Becker Schulz Hoffmann Rossi Russo Ferrari Esposito "
            "Bianchi Romano Colombo Ricci Marino Greco Novak Kowalski Nowak Lewandowski "
            "Dubois Martin Bernard Thomas Petit Durand Leroy Moreau Simon Laurent Lefebvre "
            "Tanaka Suzuki Sato Kim Lee Park Chen Wang Singh Kumar Silva Santos").split()


# --------------------------------------------------------------------------- data

def person(i: int) -> dict:
    """The i-th generated person (deterministic, so worker processes agree with the LDIF)."""
    given = GIVEN[(i * 7) % len(GIVEN)]
    sn = SURNAMES[(i * 13 + i // len(GIVEN)) % len(SURNAMES)]
    uid = f"u{i:06d}"
    return {
        "uid": uid,
        "dn": f"uid={uid},{PEOPLE}",
        "cn": f"{given} {sn}",
        "sn": sn,
        "givenName": given,
        "mail": f"{given}.{sn}.{i}@example.test".lower(),
        "password": f"pw-{uid}-secret",
    }


def people_ldif(count: int) -> str:
    lines = [
        f"dn: {SUFFIX}", "objectClass: top", "objectClass: dcObject",
        "objectClass: organization", "dc: example", "o: Example Organisation", "",
        f"dn: {PEOPLE}", "objectClass: top", "objectClass: organizationalUnit", "ou: people", "",
    ]
    for i in range(count):
        p = person(i)
        salt = hashlib.sha1(p["uid"].encode()).digest()[:8]
        lines += [
            f"dn: {p['dn']}", "objectClass: top", "objectClass: person",
            "objectClass: organizationalPerson", "objectClass: inetOrgPerson",
            f"uid: {p['uid']}", f"cn: {p['cn']}", f"sn: {p['sn']}",
            f"givenName: {p['givenName']}", f"mail: {p['mail']}",
            f"userPassword: {ssha(p['password'], salt)}", "",
        ]
    return "\n".join(lines) + "\n"


def fragments() -> list[str]:
    """Three-letter pieces of names, as someone types them into an address book."""
    pieces = set()
    for name in GIVEN + SURNAMES:
        low = name.lower()
        pieces.update(low[k:k + 3] for k in range(len(low) - 2))
    return sorted(pieces)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_log(suite: RunningSuite, text: str, began: float, timeout: float = 300) -> float:
    """Seconds from ``began`` until ``text`` appears in the suite's log."""
    while time.monotonic() - began < timeout:
        with open(suite.log_path, errors="replace") as f:
            if text in f.read():
                return time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not logged within {timeout} s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- servers

class BenchSlapd(Slapd):
    """slapd with indexes on every attribute the benchmark filters on, loaded and started
    as separately timed steps."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.config_path) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            if line.startswith("maxsize"):
                line = "maxsize 4294967296"
            elif line.startswith("index "):
                out += ["index objectClass,uid eq",
                        "index mail,cn,sn,givenName eq,sub"]
                continue
            out.append(line)
        with open(self.config_path, "w") as f:
            f.write("\n".join(out) + "\n")

    def load(self, ldif: str) -> float:
        """Seconds slapadd took to load ``ldif`` offline."""
        os.makedirs(self.folder, exist_ok=True)
        self._write_config()
        path = os.path.join(self.folder, "data.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        began = time.monotonic()
        subprocess.run(["slapadd", "-q", "-f", self.config_path, "-l", path],
                       check=True, capture_output=True, timeout=1800)
        return time.monotonic() - began

    def launch(self, timeout: float = 120.0) -> float:
        """Seconds from starting slapd until its port accepts connections."""
        self.port = free_port()
        log = open(self.log_path, "wb")
        began = time.monotonic()
        self.process = subprocess.Popen(
            ["slapd", "-f", self.config_path, "-h", f"{self.url}/", "-d", "0"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return time.monotonic() - began
            except OSError:
                time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"slapd did not start within {timeout} s: {self.log()}")


def make_suite(folder: str, ldif: str) -> RunningSuite:
    suite = RunningSuite(
        folder, listen={"ldap": "tcp:port=0:interface=127.0.0.1"},
        extra={"directory": {"admin_dn": ADMIN_DN, "admin_password": ADMIN_PASSWORD}})
    with open(os.path.join(folder, "directory.ldif"), "w") as f:
        f.write(ldif)
    return suite


def start_suite(suite: RunningSuite) -> float:
    began = time.monotonic()
    suite.start(timeout=900)
    return time.monotonic() - began


def timed_start(suite: RunningSuite) -> dict:
    """Elapsed and CPU seconds until listening, RSS then, and the same once the substring
    index is built (the log is emptied first, so that only this start's line counts)."""
    if os.path.exists(suite.log_path):
        os.unlink(suite.log_path)
    began = time.monotonic()
    suite.start(timeout=900)
    listening = time.monotonic() - began
    pid = suite.process.pid
    figures = {"listening": listening, "cpu": cpu_seconds(pid), "rss": rss_mb(pid)}
    figures["indexed"] = wait_for_log(suite, "substring index ready", began)
    figures["indexed_rss"] = rss_mb(pid)
    return figures


# --------------------------------------------------------------------------- load

def _one_op(conn: Connection, kind: str, rng: random.Random, people: int,
            pieces: list[str]) -> bool:
    """Run one operation of ``kind``; True if the answer was the expected one."""
    if kind == "bind":
        p = person(rng.randrange(people))
        return conn.bind(p["dn"], p["password"]) == SUCCESS
    if kind in ("mail", "uid"):
        p = person(rng.randrange(people))
        code, entries = conn.search(search_request(
            SUFFIX, f_equal(kind, p[kind]), ATTRIBUTES))
        return code == SUCCESS and entries == 1
    x = rng.choice(pieces)
    code, entries = conn.search(search_request(
        SUFFIX, f_or(f_contains("cn", x), f_contains("mail", x), f_contains("sn", x),
                     f_contains("givenName", x)),
        ATTRIBUTES, size_limit=ADDRESS_BOOK_LIMIT))
    return code in (SUCCESS, SIZE_LIMIT_EXCEEDED) and 0 < entries <= ADDRESS_BOOK_LIMIT


def _worker(port: int, kind: str, people: int, seed: int, begin: float, duration: float,
            results) -> None:
    rng = random.Random(seed)
    pieces = fragments()
    ops = bad = 0
    try:
        conn = Connection(HOST, port)
        if kind == "uid" and conn.bind(ADMIN_DN, ADMIN_PASSWORD) != SUCCESS:
            raise LDAPWireError("admin bind refused")
        time.sleep(max(0.0, begin - time.time()))
        end = begin + duration
        while time.time() < end:
            if _one_op(conn, kind, rng, people, pieces):
                ops += 1
            else:
                bad += 1
        conn.close()
    except (OSError, LDAPWireError) as e:
        results.put((ops, bad + 1, repr(e)))
        return
    results.put((ops, bad, ""))


def run_load(port: int, kind: str, *, connections: int, duration: float, people: int) -> tuple:
    """(good operations per second, bad answers) for ``connections`` clients."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    begin = time.time() + 0.5 + 0.05 * connections
    workers = [ctx.Process(target=_worker,
                           args=(port, kind, people, 1000 * connections + n, begin, duration,
                                 results))
               for n in range(connections)]
    for w in workers:
        w.start()
    collected = [results.get(timeout=duration + 120) for _ in workers]
    for w in workers:
        w.join()
    ops = sum(r[0] for r in collected)
    bad = sum(r[1] for r in collected)
    for r in collected:
        if r[2]:
            print(f"  ({kind}, port {port}): worker error {r[2]}", file=sys.stderr)
    return ops / duration, bad


# --------------------------------------------------------------------------- main

KINDS = (
    ("mail", "equality (mail=)"),
    ("uid", "equality (uid=), bound as admin"),
    ("sub", "address book *x* sizelimit 50"),
    ("bind", "simple bind"),
)


def sanity(port: int, people: int) -> str:
    """One operation of each kind, to show both servers answer the same way."""
    conn = Connection(HOST, port)
    p = person(people // 2)
    _, mail_hits = conn.search(search_request(SUFFIX, f_equal("mail", p["mail"]), ATTRIBUTES))
    conn.bind(ADMIN_DN, ADMIN_PASSWORD)
    _, uid_hits = conn.search(search_request(SUFFIX, f_equal("uid", p["uid"]), ATTRIBUTES))
    conn.bind("", "")
    x = "mar"
    code, sub_hits = conn.search(search_request(
        SUFFIX, f_or(f_contains("cn", x), f_contains("mail", x), f_contains("sn", x),
                     f_contains("givenName", x)), ATTRIBUTES, size_limit=ADDRESS_BOOK_LIMIT))
    good = conn.bind(p["dn"], p["password"])
    wrong = conn.bind(p["dn"], "wrong")
    conn.close()
    return (f"mail= {mail_hits} entry, uid= {uid_hits} entry, *{x}* {sub_hits} entries "
            f"(code {code}), bind {good}, wrong password {wrong}")


def throughput(args, work: str) -> list[tuple]:
    ldif = people_ldif(args.people)
    slapd = BenchSlapd(os.path.join(work, "slapd-10k"), root_dn=ADMIN_DN,
                       root_password=ADMIN_PASSWORD)
    suite = make_suite(os.path.join(work, "suite-10k"), ldif)
    rows = []
    try:
        slapd.load(ldif)
        slapd.launch()
        start_suite(suite)
        ports = {"mailsuite": suite.port("ldap"), "slapd": slapd.port}
        for name, port in ports.items():
            print(f"check {name:9}: {sanity(port, args.people)}")
        for kind, label in KINDS:
            for n in args.connections:
                rates = {}
                for name, port in ports.items():
                    rates[name] = run_load(port, kind, connections=n, duration=args.duration,
                                           people=args.people)
                rows.append((f"{label}, {n} conn", "ops/s", rates["mailsuite"], rates["slapd"],
                             kind in ("mail", "uid", "bind")))
        rows.append((f"RSS after the runs ({args.people:,} people)", "MB",
                     (rss_mb(suite.process.pid), 0), (rss_mb(slapd.process.pid), 0), False))
    finally:
        suite.stop()
        slapd.stop()
    return rows


def startup(args, work: str) -> list[tuple]:
    ldif = people_ldif(args.startup_people)
    slapd = BenchSlapd(os.path.join(work, "slapd-100k"), root_dn=ADMIN_DN,
                       root_password=ADMIN_PASSWORD)
    suite = make_suite(os.path.join(work, "suite-100k"), ldif)
    n = f"{args.startup_people:,}"
    rows = []
    try:
        load = slapd.load(ldif)
        slapd_start = slapd.launch()
        slapd_rss = rss_mb(slapd.process.pid)
        slapd_check = sanity(slapd.port, args.startup_people)
        slapd.stop()

        first = timed_start(suite)
        suite.stop()
        again = timed_start(suite)
        suite_check = sanity(suite.port("ldap"), args.startup_people)
    finally:
        suite.stop()
        slapd.stop()
    print(f"check mailsuite ({n}): {suite_check}")
    print(f"check slapd     ({n}): {slapd_check}")
    rows += [
        (f"start-up, {n} people (mailsuite: first start, imports LDIF)", "s",
         (first["listening"], 0), (slapd_start, 0), False),
        (f"start-up, {n} people (mailsuite: restart)", "s",
         (again["listening"], 0), (slapd_start, 0), False),
        (f"CPU until listening, first start ({n})", "s", (first["cpu"], 0), None, False),
        (f"CPU until listening, restart ({n})", "s", (again["cpu"], 0), None, False),
        (f"substring index built, first start ({n}; from process start)", "s",
         (first["indexed"], 0), None, False),
        (f"RSS at listening, first start ({n})", "MB", (first["rss"], 0), (slapd_rss, 0), False),
        (f"RSS at listening, restart ({n})", "MB", (again["rss"], 0), (slapd_rss, 0), False),
        (f"RSS with the substring index, restart ({n})", "MB",
         (again["indexed_rss"], 0), (slapd_rss, 0), False),
        (f"offline load slapadd -q ({n}; mailsuite: n/a)", "s", None, (load, 0), False),
    ]
    return rows


def print_table(rows: list[tuple], args) -> None:
    width = max(len(r[0]) for r in rows) + 2
    print()
    print(f"LDAP benchmark: {args.people:,} people, {args.duration:g} s per cell, "
          f"{os.cpu_count()} CPUs (client processes share them)")
    print(f"{'':{width}}{'unit':>6}{'mailsuite':>12}{'slapd':>12}{'ratio':>8}  bad answers")
    for label, unit, ours, theirs, targeted in rows:
        o = "n/a" if ours is None else f"{ours[0]:,.{0 if unit == 'ops/s' else 2}f}"
        t = "n/a" if theirs is None else f"{theirs[0]:,.{0 if unit == 'ops/s' else 2}f}"
        ratio = ("" if ours is None or theirs is None or not theirs[0]
                 else f"{ours[0] / theirs[0]:.3f}")
        bad = f"{ours[1]}/{theirs[1]}" if unit == "ops/s" else ""
        mark = ""
        if targeted and ours is not None:
            mark = "  (target >= 0.25: " + ("met" if ours[0] >= 0.25 * theirs[0] else "MISSED") + ")"
        print(f"{label:{width}}{unit:>6}{o:>12}{t:>12}{ratio:>8}  {bad}{mark}")
    for label, unit, ours, _, _ in rows:
        if label.startswith("start-up") and ours is not None:
            verdict = "met" if ours[0] < 10 else "MISSED"
            print(f"target: {label.split('(')[1].rstrip(')')} under 10 s: {verdict} "
                  f"({ours[0]:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--startup-people", type=int, default=100_000,
                        help="0 skips the start-up measurement")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", default="1,8",
                        type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--dir", default=None, help="where the throwaway servers live")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if slapd_binary() is None:
        sys.exit("slapd and slapadd are needed: apt-get install slapd ldap-utils")
    work = tempfile.mkdtemp(prefix="ldap-bench-", dir=args.dir)
    rows = []
    try:
        if not args.skip_throughput:
            rows += throughput(args, work)
        if args.startup_people:
            rows += startup(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
