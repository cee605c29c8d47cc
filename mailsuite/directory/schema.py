"""
The directory's rules for entries, as pure functions: which entries are accounts and groups,
what an Account looks like, address syntax, and the checks an entry passes before it is stored.
"""

from __future__ import annotations

import re

from twisted.logger import Logger

from mailsuite.directory.entry import DNError, Entry, split_dn
from mailsuite.directory.passwords import hash_password, is_hashed, scheme_of
from mailsuite.interfaces import Account, InvalidEntry

log = Logger()

ADDRESS_ATTRIBUTES = ("mail", "mailLocalAddress")

# An account's storage limit, an integer number of octets.
QUOTA_ATTRIBUTE = "mailQuota"

ACCOUNT_OBJECT_CLASSES = (
    "top",
    "person",
    "organizationalPerson",
    "inetOrgPerson",
    "inetLocalMailRecipient",
)

# A conservative uid for accounts created by the admin command: it also names mailboxes.
_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Deliberately simple: one "@", no whitespace or angle brackets, non-empty parts.
_ADDRESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def normalize_address(address: str) -> str:
    """Lower-case ``address`` and strip whitespace and surrounding angle brackets."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address.lower()


def is_address(address: str) -> bool:
    return bool(_ADDRESS_RE.match(address))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".")


def valid_uid(uid: str) -> bool:
    return bool(_UID_RE.match(uid))


def is_account(entry: Entry) -> bool:
    """An account: objectClass inetOrgPerson with a ``uid`` and a ``mail``."""
    return entry.has_object_class("inetOrgPerson") and entry.has("uid") and entry.has("mail")


def is_group(entry: Entry) -> bool:
    """A distribution list: objectClass groupOfNames (reachable by address if it has a mail)."""
    return entry.has_object_class("groupOfNames")


def addresses_of(entry: Entry) -> list[str]:
    """Every address (mail and mailLocalAddress) of ``entry``, lower-cased, in order."""
    out = []
    for name in ADDRESS_ATTRIBUTES:
        for value in entry.get(name):
            if isinstance(value, str):
                address = normalize_address(value)
                if address not in out:
                    out.append(address)
    return out


def account_of(entry: Entry) -> Account:
    """The Account for an account entry (see is_account)."""
    mails = [normalize_address(v) for v in entry.get("mail") if isinstance(v, str)]
    return Account(
        uid=entry.first("uid"),
        mail=mails[0],
        dn=entry.dn,
        addresses=frozenset(addresses_of(entry)),
        display_name=_text(entry.first("displayName")) or _text(entry.first("cn")) or "",
        mail_host=_text(entry.first("mailHost")),
        forward=tuple(
            normalize_address(v) for v in entry.get("mailRoutingAddress") if isinstance(v, str)
        ),
        quota=parse_quota(entry.get(QUOTA_ATTRIBUTE), dn=entry.dn),
    )


def parse_quota(values, *, dn: str) -> int | None:
    """The limit in octets from the values of ``mailQuota``: the first value, a non-negative
    decimal integer; None (and a log line) when it is missing or not such a number."""
    if not values:
        return None
    value = values[0]
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit()):
        log.warn("ignoring invalid {attribute} {value!r} of {dn}",
                 attribute=QUOTA_ATTRIBUTE, value=value, dn=dn)
        return None
    return int(text)


def _text(value):
    return value if isinstance(value, str) else None


def base_entry(base_dn: str) -> Entry:
    """An entry for the directory's base DN, with object classes fitting its RDN."""
    attr, value = split_dn(base_dn)[0][0]
    kind = attr.lower()
    if kind == "dc":
        return Entry(base_dn, {"objectClass": ["top", "dcObject", "organization"],
                               "dc": [value], "o": [value]})
    if kind == "o":
        return Entry(base_dn, {"objectClass": ["top", "organization"], "o": [value]})
    if kind == "ou":
        return Entry(base_dn, {"objectClass": ["top", "organizationalUnit"], "ou": [value]})
    return Entry(base_dn, {"objectClass": ["top", "extensibleObject"], attr: [value]})


def prepare_entry(entry: Entry, *, scheme: str) -> Entry:
    """
    Check the rules ``entry`` must follow on its own and return it ready to store: cleartext
    ``userPassword`` values are hashed with ``scheme``.  InvalidEntry when a rule is broken.
    """
    dn = entry.dn
    try:
        rdns = entry.rdns
        if not entry.ndn:
            raise InvalidEntry("an entry needs a non-empty DN")
    except DNError as e:
        raise InvalidEntry(str(e)) from None
    if not entry.get("objectClass"):
        raise InvalidEntry(f"{dn}: objectClass is required")
    # RFC 4511 §4.7: the RDN's values must be present in the entry.
    for attr, value in rdns[0]:
        if value.lower() not in {v.lower() for v in entry.get(attr) if isinstance(v, str)}:
            raise InvalidEntry(f"{dn}: the RDN value {attr}={value} is missing from the entry")
    classes = entry.object_classes
    if "person" in classes or "inetorgperson" in classes:
        for required in ("cn", "sn"):
            if not entry.has(required):
                raise InvalidEntry(f"{dn}: {required} is required for a person")
    for name in (*ADDRESS_ATTRIBUTES, "mailRoutingAddress"):
        for value in entry.get(name):
            if not isinstance(value, str) or not is_address(normalize_address(value)):
                raise InvalidEntry(f"{dn}: {name} {value!r} is not a mail address")
    for value in entry.get("uid"):
        if not isinstance(value, str) or not value.strip():
            raise InvalidEntry(f"{dn}: uid must be a non-empty text")
    for value in entry.get("member"):
        try:
            if not isinstance(value, str) or not split_dn(value):
                raise DNError("empty")
        except DNError:
            raise InvalidEntry(f"{dn}: member {value!r} is not a DN") from None
    passwords = entry.get("userPassword")
    if passwords:
        stored = []
        for value in passwords:
            if not isinstance(value, str) or not value:
                raise InvalidEntry(f"{dn}: userPassword must be a non-empty UTF-8 text")
            if is_hashed(value):
                stored.append(value)
            elif scheme_of(value) is not None:
                raise InvalidEntry(f"{dn}: unsupported password scheme {{{scheme_of(value)}}}")
            else:
                stored.append(hash_password(value, scheme))
        entry = entry.with_values("userPassword", stored)
    return entry
