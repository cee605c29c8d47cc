"""The capability list (RFC 3501 §7.2.1), in one place: only what works is advertised."""

from __future__ import annotations

# Always on, in every state.
BASE = (
    "IMAP4rev1",
    "IMAP4rev2",     # RFC 9051
    "LITERAL+",      # RFC 7888
    "SASL-IR",       # RFC 4959
    "ENABLE",        # RFC 5161
    "ID",            # RFC 2971
    "IDLE",          # RFC 2177
    "NAMESPACE",     # RFC 2342
    "UIDPLUS",       # RFC 4315
    "MOVE",          # RFC 6851
    "UNSELECT",      # RFC 3691
    "CHILDREN",      # RFC 3348
    "LIST-EXTENDED",  # RFC 5258
    "LIST-STATUS",   # RFC 5819
    "SPECIAL-USE",   # RFC 6154
    "CREATE-SPECIAL-USE",  # RFC 6154 §3
    "MULTIAPPEND",   # RFC 3502
    "STATUS=SIZE",   # RFC 8438
    "UTF8=ACCEPT",   # RFC 6855
    "CONDSTORE",     # RFC 7162 §3.1
    "QRESYNC",       # RFC 7162 §3.2
    "ESEARCH",       # RFC 4731
    "SEARCHRES",     # RFC 5182
    "WITHIN",        # RFC 5032
    "BINARY",        # RFC 3516
    "UNAUTHENTICATE",  # RFC 8437
    "QUOTA",         # RFC 9208 (read side)
    "SORT",          # RFC 5256
    "SORT=DISPLAY",  # RFC 5957
    "THREAD=ORDEREDSUBJECT",  # RFC 5256
    "THREAD=REFERENCES",      # RFC 5256
)

#: What ENABLE can switch on (RFC 5161 §3.1).
ENABLEABLE = frozenset({"UTF8=ACCEPT", "CONDSTORE", "QRESYNC", "IMAP4rev2"})


def capabilities(*, authenticated: bool, secure: bool, starttls: bool,
                 plaintext_allowed: bool, append_limit: int, quota: bool = False,
                 compressed: bool = False) -> list[str]:
    caps = list(BASE)
    caps.append(f"APPENDLIMIT={append_limit}")  # RFC 7889
    if quota:
        caps.append("QUOTA=RES-STORAGE")  # RFC 9208 §5.1
    if not compressed:
        caps.append("COMPRESS=DEFLATE")  # RFC 4978 §3: not once compression is active
    if not authenticated:
        if starttls and not secure:
            caps.append("STARTTLS")
        if secure or plaintext_allowed:
            caps.append("AUTH=PLAIN")
        else:
            caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
    return caps
