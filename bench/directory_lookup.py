"""
Benchmark of the embedded directory: load time from SQLite, resolve() and check_password()
rates for 10,000 and 100,000 accounts.

    python3 bench/directory_lookup.py [COUNT ...]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.passwords import hash_password

BASE = "dc=example,dc=test"
DOMAIN = "example.test"


def build_ldif(count: int) -> bytes:
    head = (
        f"dn: {BASE}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
        f"dc: example\no: example\n\n"
        f"dn: ou=people,{BASE}\nobjectClass: top\nobjectClass: organizationalUnit\n"
        f"ou: people\n\n"
    )
    # One precomputed hash keeps the build quick; every account still has its own entry.
    stored = hash_password("password")
    records = [head]
    for i in range(count):
        records.append(
            f"dn: uid=user{i},ou=people,{BASE}\nobjectClass: top\nobjectClass: person\n"
            f"objectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
            f"uid: user{i}\ncn: User {i}\nsn: {i}\nmail: user{i}@{DOMAIN}\n"
            f"mailLocalAddress: alias{i}@{DOMAIN}\nuserPassword: {stored}\n\n"
        )
    return "".join(records).encode()


def rate(label: str, calls: int, f) -> None:
    start = time.perf_counter()
    f()
    elapsed = time.perf_counter() - start
    print(f"  {label:<34} {calls / elapsed:>12,.0f} /s")


def run(count: int) -> None:
    print(f"{count:,} accounts")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "directory.sqlite")
        data = build_ldif(count)
        start = time.perf_counter()
        first = EmbeddedDirectory(path, domains=[DOMAIN], base_dn=BASE)
        first.import_ldif(data)
        print(f"  {'import_ldif (one transaction)':<34} {time.perf_counter() - start:>12.2f} s")
        first.close()

        start = time.perf_counter()
        directory = EmbeddedDirectory(path, domains=[DOMAIN], base_dn=BASE)
        print(f"  {'load from SQLite':<34} {time.perf_counter() - start:>12.2f} s")

        rng = random.Random(1)
        n = 50_000
        addresses = [f"{rng.choice(('user', 'alias'))}{rng.randrange(count)}@{DOMAIN}"
                     for _ in range(n)]
        rate("resolve() (mail or alias)", n, lambda: [directory.resolve(a) for a in addresses])
        plus = [f"user{rng.randrange(count)}+tag@{DOMAIN}" for _ in range(n)]
        rate("resolve() (plus-address)", n, lambda: [directory.resolve(a) for a in plus])
        rate("expand()", n, lambda: [directory.expand(a) for a in addresses])
        logins = [f"user{rng.randrange(count)}" for _ in range(20_000)]
        rate("check_password() {SSHA512}", len(logins),
             lambda: [directory.check_password(u, "password") for u in logins])
        directory.close()


def main(argv: list[str]) -> None:
    counts = [int(a) for a in argv] or [10_000, 100_000]
    for count in counts:
        run(count)


if __name__ == "__main__":
    main(sys.argv[1:])
