"""Cold listing of a large maildir folder: a fresh store lists every message (sizes and
internal dates), as a restarted server does at the first SELECT.

    python3 bench/maildir_cold_list.py --messages 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsuite.store.base import inline_runner  # noqa: E402
from mailsuite.store.maildir import MaildirMailStore  # noqa: E402


def fired(d):
    box = []
    d.addBoth(box.append)
    return box[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        store = MaildirMailStore(root, runner=inline_runner)
        fired(store.ensure_account("u"))
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        start = time.perf_counter()
        for n in range(args.messages):
            fired(store.append("u", "INBOX", b"Subject: %d\r\n\r\nbody\r\n" % n,
                               internal_date=when))
        print(f"appended {args.messages} in {time.perf_counter() - start:.1f} s")
        fired(store.messages("u", "INBOX"))   # warm: records what appends learnt
        fired(store.close())
        for run in ("cold listing, sizes and dates from the index",
                    "cold listing, index emptied (one stat() per message)"):
            if "emptied" in run:
                import sqlite3

                db = sqlite3.connect(os.path.join(root, "u", "Maildir", "mailsuite-index.sqlite"))
                db.execute("DELETE FROM files")
                db.commit()
                db.close()
            store = MaildirMailStore(root, runner=inline_runner)
            start = time.perf_counter()
            infos = fired(store.messages("u", "INBOX"))
            print(f"{run}: {len(infos)} messages in {time.perf_counter() - start:.2f} s")
            fired(store.close())


if __name__ == "__main__":
    main()
