"""
IMAP: mailsuite against Dovecot on the same mailbox, in the same run.

Builds a Maildir INBOX of --messages realistic messages (fixed seed; see imap_corpus.py),
gives each server a hard-linked copy of the same files (mailsuite's maildir backend serves
``<store>/alice/Maildir`` in place; Dovecot gets a minimal config of its own on a loopback
port), then times on the client side, median of --repeat runs each:

  login, SELECT INBOX, UID FETCH 1:* (FLAGS), FETCH 1:100 (ENVELOPE BODYSTRUCTURE),
  UID SEARCH HEADER Subject <word>, UID SEARCH BODY <word>, SORT (DATE) UTF-8 ALL

and a mixed workload: --clients processes, each repeating login, SELECT, then cycles of
FETCH, STORE, APPEND, UID STORE \\Deleted and UID EXPUNGE, for --duration seconds;
reported in commands per second.  A command a server does not support shows "n/a".

--store sqlite imports the same files into mailsuite's sqlite backend (flags from the file
names, internal dates from their mtimes) before the server starts; --store maildir (the
default) serves the Maildir in place.

    python3 bench/imap_bench.py [--messages 100000] [--duration 15] [--clients 8] [--dir /var/tmp]
                                [--store maildir|sqlite]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from imap_corpus import BODY_WORD, SUBJECT_WORD, build_maildir, link_tree  # noqa: E402
from imap_dovecot import Dovecot  # noqa: E402
from imap_rawclient import IMAPError, RawIMAP  # noqa: E402

from mailsuite.store.base import inline_runner  # noqa: E402
from mailsuite.testing.server import RunningSuite  # noqa: E402

USER, PASSWORD, ACCOUNT = "alice@example.test", "alice-password", "alice"
HOST = "127.0.0.1"
CYCLES_PER_SESSION = 10

TIMED = (
    ("SELECT INBOX", "SELECT INBOX"),
    ("UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)"),
    ("FETCH 1:100 (ENVELOPE BODYSTRUCTURE)", "FETCH 1:100 (ENVELOPE BODYSTRUCTURE)"),
    (f"UID SEARCH HEADER Subject {SUBJECT_WORD}", f"UID SEARCH HEADER Subject {SUBJECT_WORD}"),
    (f"UID SEARCH BODY {BODY_WORD}", f"UID SEARCH BODY {BODY_WORD}"),
    ("SORT (DATE) UTF-8 ALL", "SORT (DATE) UTF-8 ALL"),
)


class NotSupported(Exception):
    """The server answered BAD or NO."""


def session(port: int) -> RawIMAP:
    client = RawIMAP(HOST, port)
    client.login(USER, PASSWORD)
    return client


def answer_size(reply) -> str:
    """What a reply held, to check both servers found the same: hits of a SEARCH/SORT, or lines."""
    for line in reply.lines:
        if line.startswith((b"* SEARCH", b"* SORT", b"* ESEARCH")):
            return f"{len(line.split()) - 2} hits"
    return f"{len(reply.lines)} lines"


def median_of(repeat: int, run) -> tuple[float, str]:
    times, detail = [], ""
    for _ in range(repeat):
        seconds, detail = run()
        times.append(seconds)
    return statistics.median(times), detail


def measure(port: int, repeat: int) -> dict[str, tuple[float | None, str]]:
    """Timed single commands against one server: {row: (seconds or None, detail)}."""
    results: dict[str, tuple[float | None, str]] = {}
    client = session(port)
    try:
        seconds, reply = client.timed("SELECT INBOX")
        exists = next((line.split()[1].decode() for line in reply.lines
                       if line.endswith(b"EXISTS\r\n")), "?")
        results["first SELECT INBOX (cold)"] = (seconds, f"{exists} messages")
    finally:
        client.close()

    def login():
        start = time.perf_counter()
        timed = session(port)
        seconds = time.perf_counter() - start
        timed.close()
        return seconds, ""

    results["login (connect + LOGIN)"] = median_of(repeat, login)
    client = session(port)
    try:
        client.check("SELECT INBOX")
        for row, command in TIMED:
            def run(command=command):
                seconds, reply = client.timed(command)
                if not reply.ok:
                    raise NotSupported(f"{reply.status} {reply.text.decode(errors='replace')}")
                return seconds, answer_size(reply)
            try:
                results[row] = median_of(repeat, run)
            except NotSupported as e:
                results[row] = (None, str(e)[:60])
    finally:
        client.close()
    return results


def import_into_sqlite(maildir: str, store_path: str) -> int:
    """Append every message of the Maildir INBOX ``maildir`` to a sqlite store at
    ``store_path``, in delivery order, keeping flags and internal dates; the count."""
    from mailsuite.store.sqlite import SQLiteMailStore

    cur = os.path.join(maildir, "cur")
    names = sorted(os.listdir(cur), key=lambda n: int(n.split(".")[1][1:].split("P")[0]))
    store = SQLiteMailStore(store_path, runner=inline_runner)
    try:
        store.ensure_account(ACCOUNT)
        for name in names:
            path = os.path.join(cur, name)
            with open(path, "rb") as f:
                data = f.read()
            flags = frozenset({"\\Seen"}) if "S" in name.rpartition(":2,")[2] else frozenset()
            when = datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
            failed = []
            store.append(ACCOUNT, "INBOX", data, flags, when).addErrback(failed.append)
            if failed:
                failed[0].raiseException()
    finally:
        store.close()
    return len(names)


# -- the mixed workload

def _append_body(rng: random.Random, worker: int, number: int) -> bytes:
    words = " ".join(rng.choice(("status", "update", "note", "plan", "lunch")) for _ in range(40))
    return (f"From: Bench Worker <worker{worker}@example.test>\r\nTo: {USER}\r\n"
            f"Subject: mixed workload {worker}.{number}\r\n"
            f"Message-ID: <mixed.{worker}.{number}.{rng.getrandbits(32)}@example.test>\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n\r\n{words}\r\n").encode()


def mixed_worker(port: int, seconds: float, worker: int, start_at: float, queue):
    rng = random.Random(worker)
    commands = errors = appended = 0
    latency: dict[str, list[float]] = {}
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds

    def run(client, text, **kwargs):
        nonlocal commands, errors
        seconds, reply = client.timed(text, **kwargs)
        verb = " ".join(text.split()[:2]) if text.startswith("UID ") else text.split()[0]
        latency.setdefault(verb, []).append(seconds)
        commands += 1
        if not reply.ok:
            errors += 1
        return reply

    try:
        while time.time() < deadline:
            client = RawIMAP(HOST, port)
            run(client, f'LOGIN "{USER}" "{PASSWORD}"')
            reply = run(client, "SELECT INBOX")
            exists = next((int(line.split()[1]) for line in reply.lines
                           if line.endswith(b"EXISTS\r\n")), 1)
            for _ in range(CYCLES_PER_SESSION):
                if time.time() >= deadline:
                    break
                number = rng.randint(1, max(1, exists // 2))
                run(client, f"FETCH {number} (FLAGS ENVELOPE BODY.PEEK[])")
                run(client, f"STORE {number} +FLAGS (\\Flagged)")
                run(client, f"STORE {number} -FLAGS (\\Flagged)")
                appended += 1
                reply = run(client, "APPEND INBOX (\\Seen)",
                            literal=_append_body(rng, worker, appended))
                match = re.search(rb"APPENDUID \d+ (\d+)", reply.text)
                if match:
                    uid = match.group(1).decode()
                    run(client, f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
                    run(client, f"UID EXPUNGE {uid}")
            run(client, "LOGOUT")
            client.sock.close()
    except (OSError, IMAPError) as e:
        errors += 1
        queue.put((commands, errors, time.time() - start_at, repr(e), latency))
        return
    queue.put((commands, errors, time.time() - start_at, "", latency))


def mixed(port: int, clients: int, seconds: float) -> tuple[float, str, dict[str, float]]:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 0.5
    workers = [context.Process(target=mixed_worker, args=(port, seconds, i, start_at, queue))
               for i in range(clients)]
    for w in workers:
        w.start()
    outcomes = [queue.get(timeout=seconds + 600) for _ in workers]
    for w in workers:
        w.join()
    commands = sum(o[0] for o in outcomes)
    errors = sum(o[1] for o in outcomes)
    elapsed = max(o[2] for o in outcomes)
    failures = sorted({o[3] for o in outcomes if o[3]})
    detail = f"{commands} cmds, {errors} errors" + (f" ({failures[0][:40]})" if failures else "")
    latency: dict[str, list[float]] = {}
    for outcome in outcomes:
        for verb, values in outcome[4].items():
            latency.setdefault(verb, []).extend(values)
    return commands / elapsed, detail, {verb: statistics.median(v) for verb, v in latency.items()}


# -- report

def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def print_table(names, results, rows, rates):
    a, b = names
    print(f"\n{'operation':44} {a:>12} {b:>12} {'ratio':>8}   detail ({a} | {b})")
    for row in rows:
        (va, da), (vb, db) = results[a][row], results[b][row]
        ratio = f"{va / vb:.1f}x" if va is not None and vb else "n/a"
        print(f"{row:44} {fmt_seconds(va):>12} {fmt_seconds(vb):>12} {ratio:>8}   {da} | {db}")
    (ra, da, la), (rb, db, lb) = rates[a], rates[b]
    ratio = f"{rb / ra:.1f}x" if ra else "n/a"
    row = "mixed workload (commands/second)"
    print(f"{row:44} {ra:>12.0f} {rb:>12.0f} {ratio:>8}   {da} | {db}")
    for verb in sorted(set(la) | set(lb)):
        va, vb = la.get(verb), lb.get(verb)
        ratio = f"{va / vb:.1f}x" if va is not None and vb else "n/a"
        print(f"{'  mixed: median ' + verb:44} {fmt_seconds(va):>12} {fmt_seconds(vb):>12} "
              f"{ratio:>8}")
    print(f"\nratio: {a} time / {b} time (throughput: {b} / {a}); above 1 means {a} is slower.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds of mixed workload per server")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--dir", default=None, help="where to build the mail (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the files behind")
    parser.add_argument("--store", choices=("maildir", "sqlite"), default="maildir",
                        help="mailsuite's store backend (default: maildir)")
    args = parser.parse_args(argv)
    if shutil.which("dovecot") is None and not os.path.exists("/usr/sbin/dovecot"):
        sys.exit("dovecot is not installed (apt-get install dovecot-imapd)")

    work = tempfile.mkdtemp(prefix="imap-bench-", dir=args.dir)
    os.chmod(work, 0o755)
    suite = dovecot = None
    try:
        corpus = os.path.join(work, "corpus", "Maildir")
        start = time.perf_counter()
        size = build_maildir(corpus, args.messages, seed=args.seed)
        print(f"corpus: {args.messages} messages, {size / 1e6:.0f} MB, "
              f"built in {time.perf_counter() - start:.1f} s")

        suite = RunningSuite(os.path.join(work, "mailsuite"), store=args.store,
                             listen={"imap": f"tcp:port=0:interface={HOST}"})
        if args.store == "sqlite":
            start = time.perf_counter()
            count = import_into_sqlite(corpus, os.path.join(suite.data_dir, "store"))
            print(f"sqlite store: {count} messages imported in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        else:
            link_tree(corpus, os.path.join(suite.data_dir, "store", ACCOUNT, "Maildir"))
        suite.start()
        dovecot_mail = os.path.join(work, "dovecot-mail")
        link_tree(corpus, os.path.join(dovecot_mail, ACCOUNT, "Maildir"))
        dovecot = Dovecot(os.path.join(work, "dovecot"), dovecot_mail, {USER: PASSWORD}).start()
        ports = {"mailsuite": suite.port("imap"), "dovecot": dovecot.port}

        results, rates = {}, {}
        for name, port in ports.items():
            print(f"timing {name} ...", flush=True)
            results[name] = measure(port, args.repeat)
        for name, port in ports.items():
            print(f"mixed workload on {name}: {args.clients} clients, {args.duration:.0f} s ...",
                  flush=True)
            rates[name] = mixed(port, args.clients, args.duration)
        print(f"\nIMAP, {args.messages} messages in INBOX; client-side wall time, "
              f"median of {args.repeat}")
        print_table(list(ports), results, list(results["mailsuite"]), rates)
    finally:
        if dovecot is not None:
            dovecot.stop()
        if suite is not None:
            suite.stop()
        if args.keep:
            print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
