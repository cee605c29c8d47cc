"""
A reproducible Maildir of realistic small messages for the IMAP benchmark: plain-text mail of
a few hundred bytes to a few kilobytes, a few percent multipart with a base64 attachment,
some replies (In-Reply-To / References), some flagged as read; internal dates (file mtimes)
spread over a year.  The same seed gives the same files.
"""

from __future__ import annotations

import base64
import os
import random
import time

# Words a benchmark searches for: SUBJECT_WORD is in about 1 % of subjects, BODY_WORD in
# about 0.5 % of bodies, neither anywhere else.
SUBJECT_WORD = "quarterly"
BODY_WORD = "zeppelin"

ATTACHMENT_SHARE = 0.03
SEEN_SHARE = 0.7
REPLY_SHARE = 0.25
START = 1_700_000_000  # 2023-11-14, the oldest message
SPAN = 365 * 86400

_WORDS = (
    "meeting agenda project budget review plan team update report schedule release draft "
    "invoice order customer support ticket server backup network office lunch travel "
    "contract proposal design feedback launch deadline weekly monthly status notes minutes "
    "question answer request approval change policy training holiday party coffee kitchen "
    "printer laptop account password access migration database storage archive summary "
    "the a of and to in for on with at by from is are was be this that it as we you they "
    "please thanks regards tomorrow today next last week month year morning afternoon"
).split()
_NAMES = ("alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy "
          "rupert sybil trent victor walter").split()
_DOMAINS = ("example.test", "remote.test", "partner.test", "vendor.test")


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[:1].upper() + text[1:] + "."


def _address(rng: random.Random) -> str:
    name = rng.choice(_NAMES)
    return f"{name.title()} <{name}@{rng.choice(_DOMAINS)}>"


def _date(epoch: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))


def make_message(rng: random.Random, index: int, epoch: int) -> bytes:
    subject = _sentence(rng, rng.randint(2, 7))[:-1]
    if rng.random() < 0.01:
        subject = f"{SUBJECT_WORD.title()} {subject.lower()}"
    if rng.random() < REPLY_SHARE and index > 0:
        subject = "Re: " + subject
    headers = [
        f"Return-Path: <{rng.choice(_NAMES)}@{rng.choice(_DOMAINS)}>",
        f"From: {_address(rng)}",
        "To: Alice Liddell <alice@example.test>",
    ]
    if rng.random() < 0.3:
        headers.append(f"Cc: {_address(rng)}, {_address(rng)}")
    headers += [f"Subject: {subject}", f"Date: {_date(epoch)}",
                f"Message-ID: <m{index}.{rng.getrandbits(32):08x}@bench.example.test>"]
    if subject.startswith("Re: ") and index > 0:
        parent = f"<m{rng.randrange(index)}.bench@example.test>"
        headers += [f"In-Reply-To: {parent}", f"References: {parent}"]
    paragraphs = [" ".join(_sentence(rng, rng.randint(5, 18)) for _ in range(rng.randint(1, 5)))
                  for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.005:
        paragraphs.insert(rng.randrange(len(paragraphs) + 1), f"The {BODY_WORD} is ready.")
    text = "\r\n\r\n".join(_wrap(p) for p in paragraphs) + "\r\n\r\n-- \r\nSent from the bench\r\n"
    headers.append("MIME-Version: 1.0")
    if rng.random() < ATTACHMENT_SHARE:
        boundary = f"=-bench-{index}"
        blob = base64.encodebytes(rng.randbytes(rng.randint(4_000, 40_000))).decode()
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
                f"--{boundary}\r\nContent-Type: application/pdf; name=\"report-{index}.pdf\"\r\n"
                f"Content-Disposition: attachment; filename=\"report-{index}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n"
                f"{blob.replace(chr(10), chr(13) + chr(10))}--{boundary}--\r\n")
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    else:
        body = text
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def _wrap(paragraph: str, width: int = 72) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\r\n".join(lines + [line])


def build_maildir(root: str, count: int, *, seed: int = 20240601) -> int:
    """Write ``count`` messages into ``root``/cur (a Maildir INBOX); return the bytes written."""
    rng = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    cur = os.path.join(root, "cur")
    epochs = sorted(START + rng.randrange(SPAN) for _ in range(count))
    total = 0
    for index, epoch in enumerate(epochs):
        data = make_message(rng, index, epoch)
        flags = "S" if rng.random() < SEEN_SHARE else ""
        path = os.path.join(cur, f"{epoch}.M{index}P1.bench,S={len(data)}:2,{flags}")
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (epoch, epoch))
        total += len(data)
    return total


def link_tree(source: str, target: str):
    """A copy of a Maildir whose message files are hard links to the same inodes."""
    for folder, dirs, names in os.walk(source):
        relative = os.path.relpath(folder, source)
        os.makedirs(os.path.join(target, relative), exist_ok=True)
        for name in names:
            os.link(os.path.join(folder, name), os.path.join(target, relative, name))
