"""
The SASL side of the LDAP bind (RFC 4513 §5.2.1) without I/O: the PLAIN message
(RFC 4616), authorization identities (RFC 4513 §5.2.1.8) and the peer credentials of a
unix-socket connection, which the EXTERNAL mechanism (RFC 4422 Appendix A) relies on.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from twisted.internet.address import UNIXAddress

from mailsuite.directory.entry import DNError, normalize_dn

PLAIN = "PLAIN"
EXTERNAL = "EXTERNAL"
MECHANISMS = (PLAIN, EXTERNAL)

# struct ucred (pid, uid, gid), as SO_PEERCRED returns it on Linux.
_UCRED = struct.Struct("3i")


class SASLError(Exception):
    """A SASL message is malformed."""


@dataclass(frozen=True)
class PlainCredentials:
    authzid: str
    authcid: str
    password: str


def parse_plain(message: bytes | None) -> PlainCredentials:
    """
    RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``, UTF-8, authcid and passwd not empty.
    SASLError when the message is not of that form.
    """
    if not message:
        raise SASLError("PLAIN needs a message")
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SASLError("PLAIN message must have three fields")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SASLError("PLAIN message is not UTF-8") from None
    if not authcid or not password:
        raise SASLError("PLAIN message without a user name or password")
    return PlainCredentials(authzid, authcid, password)


def names_identity(authzid: str, *, dn: str | None, uid: str | None) -> bool:
    """
    True if the authorization identity ``authzid`` (RFC 4513 §5.2.1.8: "dn:<DN>" or
    "u:<user>") names the identity with DN ``dn`` and user name ``uid``.
    """
    if authzid.startswith("dn:"):
        if dn is None:
            return False
        try:
            return normalize_dn(authzid[3:]) == normalize_dn(dn)
        except DNError:
            return False
    if authzid.startswith("u:"):
        return uid is not None and authzid[2:].lower() == uid.lower()
    return False


def peer_uid(transport) -> int | None:
    """
    The user id of the process at the other end of a unix-socket connection (SO_PEERCRED,
    taken when it connected), or None for any other transport or when it is not known.
    """
    try:
        if not isinstance(transport.getHost(), UNIXAddress):
            return None
        handle = transport.getHandle()
        raw = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (AttributeError, OSError):
        return None
    _, uid, _ = _UCRED.unpack(raw)
    return uid
