"""
The matching rules extensible match filters may name (RFC 4517 §4.2), by OID or by name, and
each attribute's equality rule.  A rule first prepares the assertion value (None: the value
is not valid for the rule) and then matches attribute values against it (None: the
attribute value is not valid for the rule either).  String preparation follows RFC 4518
simplified as in the rest of the server: case folding where the rule ignores case, runs of
spaces collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailsuite.directory.entry import DNError, normalize_dn

Value = str | bytes


@dataclass(frozen=True)
class Rule:
    name: str
    oid: str
    # the comparison form of a value, or None when the value is not in the rule's syntax
    normalize: Callable[[Value], object | None]

    def prepare(self, assertion: Value):
        """The assertion value in comparison form, or None (Undefined)."""
        return self.normalize(assertion)

    def match(self, value: Value, prepared) -> bool | None:
        """Does ``value`` match the prepared assertion?  None: ``value`` is not valid here."""
        normal = self.normalize(value)
        return None if normal is None else normal == prepared


def _case_ignore(value: Value) -> str | None:
    return " ".join(value.casefold().split()) if isinstance(value, str) else None


def _case_exact(value: Value) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) else None


def _case_ignore_ia5(value: Value) -> str | None:
    if not isinstance(value, str) or not value.isascii():
        return None
    return " ".join(value.lower().split())


def _case_exact_ia5(value: Value) -> str | None:
    if not isinstance(value, str) or not value.isascii():
        return None
    return " ".join(value.split())


def _distinguished_name(value: Value) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize_dn(value)
    except DNError:
        return None


def _octet_string(value: Value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


_NUMERIC_STRING = re.compile(r"[0-9 ]*[0-9][0-9 ]*\Z")  # RFC 4517 §3.3.23: 1*(DIGIT / SPACE)
_INTEGER = re.compile(r"-?[0-9]+\Z")  # RFC 4517 §3.3.16, leading zeros tolerated


def _numeric_string(value: Value) -> str | None:
    if not isinstance(value, str) or not _NUMERIC_STRING.match(value):
        return None
    return value.replace(" ", "")


def _integer(value: Value) -> int | None:
    if not isinstance(value, str):
        return None
    text = value.strip(" ")
    return int(text) if _INTEGER.match(text) else None


CASE_IGNORE = Rule("caseIgnoreMatch", "2.5.13.2", _case_ignore)
CASE_EXACT = Rule("caseExactMatch", "2.5.13.5", _case_exact)
CASE_IGNORE_IA5 = Rule("caseIgnoreIA5Match", "1.3.6.1.4.1.1466.109.114.2", _case_ignore_ia5)
CASE_EXACT_IA5 = Rule("caseExactIA5Match", "1.3.6.1.4.1.1466.109.114.1", _case_exact_ia5)
DISTINGUISHED_NAME = Rule("distinguishedNameMatch", "2.5.13.1", _distinguished_name)
OCTET_STRING = Rule("octetStringMatch", "2.5.13.17", _octet_string)
NUMERIC_STRING = Rule("numericStringMatch", "2.5.13.8", _numeric_string)
INTEGER = Rule("integerMatch", "2.5.13.14", _integer)

RULES = (CASE_IGNORE, CASE_EXACT, CASE_IGNORE_IA5, CASE_EXACT_IA5, DISTINGUISHED_NAME,
         OCTET_STRING, NUMERIC_STRING, INTEGER)

_BY_NAME = {key: rule for rule in RULES for key in (rule.name.lower(), rule.oid)}

# Rules whose matches are also caseIgnoreMatch matches of the same text: an equality index
# that folds case (and surrounding space) gives a superset of their matches.
INDEX_FRIENDLY = frozenset({CASE_IGNORE, CASE_EXACT, CASE_IGNORE_IA5, CASE_EXACT_IA5,
                            OCTET_STRING})

# Equality rules of the attribute types this directory uses (RFC 4519, RFC 2798,
# draft-lachman-laser-ldap-mail-routing); caseIgnoreMatch for any other.
_EQUALITY = {
    **dict.fromkeys(("mail", "maillocaladdress", "mailroutingaddress", "dc",
                     "associateddomain", "mailhost"), CASE_IGNORE_IA5),
    **dict.fromkeys(("member", "uniquemember", "owner", "seealso", "manager", "secretary",
                     "roleoccupant", "distinguishedname", "entrydn"), DISTINGUISHED_NAME),
    **dict.fromkeys(("uidnumber", "gidnumber", "mailquota"), INTEGER),
    **dict.fromkeys(("userpassword", "jpegphoto", "usercertificate"), OCTET_STRING),
}


def find(name: str) -> Rule | None:
    """The rule named ``name`` (an OID or a name, any case), or None if unknown."""
    return _BY_NAME.get(name.strip().lower())


def equality_rule(attribute: str) -> Rule:
    """The equality matching rule of ``attribute``."""
    return _EQUALITY.get(attribute.lower(), CASE_IGNORE)
