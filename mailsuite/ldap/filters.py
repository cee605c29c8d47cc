"""
Search filters (RFC 4511 §4.5.1.7) as plain data, converted from ldaptor's decoded filter
objects, and their evaluation against directory entries with three-valued logic
(RFC 4511 §4.5.1.7: TRUE, FALSE or Undefined, here True, False or None).

Evaluation takes ``readable(attribute) -> bool``: an attribute the client may not read is
Undefined in a filter, so that filters cannot reveal what the client cannot see.

Extensible matches (§4.5.1.7.7) know the matching rules in mailsuite.ldap.rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ldaptor.protocols import pureldap

from mailsuite.directory.entry import DNError, Entry
from mailsuite.ldap import rules


class FilterError(Exception):
    """The filter is malformed (protocolError)."""


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class Compare:
    """equality ("="), ordering (">=", "<=") or approximate ("~=") match."""

    op: str
    attribute: str
    value: str | bytes


@dataclass(frozen=True)
class Present:
    attribute: str


@dataclass(frozen=True)
class Substrings:
    attribute: str
    initial: str | None
    any: tuple[str, ...]
    final: str | None


@dataclass(frozen=True)
class Extensible:
    """
    An extensible match (RFC 4511 §4.5.1.7.7).  ``rule`` is the matching rule as the client
    named it (an OID or a name; None: the attribute's equality rule), ``attribute`` None
    means every attribute, ``dn_attributes`` also tries the entry's DN components.
    """

    rule: str | None
    attribute: str | None
    value: str | bytes
    dn_attributes: bool = False


Filter = And | Or | Not | Compare | Present | Substrings | Extensible

# Nesting deeper than this is refused: a guard against recursion exhaustion.
MAX_DEPTH = 64

_COMPARE_OPS = (
    (pureldap.LDAPFilter_equalityMatch, "="),
    (pureldap.LDAPFilter_greaterOrEqual, ">="),
    (pureldap.LDAPFilter_lessOrEqual, "<="),
    (pureldap.LDAPFilter_approxMatch, "~="),
)


def _text(value) -> str | bytes:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, str):
        return value
    raise FilterError("a filter value is not an OCTET STRING")


def _attribute(value) -> str:
    name = _text(value)
    if not isinstance(name, str) or not name:
        raise FilterError("bad attribute description")
    return name


def from_ldaptor(node, depth: int = 0) -> Filter:
    """Convert a filter decoded by ldaptor; FilterError when it is malformed."""
    if depth > MAX_DEPTH:
        raise FilterError("filter nested too deeply")
    if isinstance(node, pureldap.LDAPFilter_and):
        return And(tuple(from_ldaptor(n, depth + 1) for n in node.data))
    if isinstance(node, pureldap.LDAPFilter_or):
        return Or(tuple(from_ldaptor(n, depth + 1) for n in node.data))
    if isinstance(node, pureldap.LDAPFilter_not):
        return Not(from_ldaptor(node.value, depth + 1))
    if isinstance(node, pureldap.LDAPFilter_extensibleMatch):
        return _extensible(
            node.matchingRule.value if node.matchingRule is not None else None,
            node.type.value if node.type is not None else None,
            node.matchValue.value,
            bool(node.dnAttributes is not None and node.dnAttributes.value),
        )
    for cls, op in _COMPARE_OPS:
        if isinstance(node, cls):
            return Compare(op, _attribute(node.attributeDesc.value), _text(node.assertionValue.value))
    if isinstance(node, pureldap.LDAPFilter_present):
        return Present(_attribute(node.value))
    if isinstance(node, pureldap.LDAPFilter_substrings):
        return _substrings(node)
    raise FilterError(f"unknown filter element {node.__class__.__name__}")


_SUBSTRING_KIND = (
    (pureldap.LDAPFilter_substrings_initial, "initial"),
    (pureldap.LDAPFilter_substrings_any, "any"),
    (pureldap.LDAPFilter_substrings_final, "final"),
)


def _substring_kind(part) -> str | None:
    for cls, kind in _SUBSTRING_KIND:
        if isinstance(part, cls):
            return kind
    return None


def _substrings(node) -> Substrings:
    return _build_substrings(node.type, [(_substring_kind(part), part.value)
                                         for part in node.substrings])


def _build_substrings(attribute, parts) -> Substrings:
    initial = final = None
    middle = []
    for kind, raw in parts:
        value = _text(raw)
        if not isinstance(value, str):
            raise FilterError("substring values must be UTF-8")
        # RFC 4511 §4.5.1.7.2: at most one initial (first) and one final (last).
        if kind == "initial":
            if initial is not None or middle or final is not None:
                raise FilterError("misplaced initial substring")
            initial = value
        elif kind == "any":
            if final is not None:
                raise FilterError("misplaced any substring")
            middle.append(value)
        elif kind == "final":
            if final is not None:
                raise FilterError("two final substrings")
            final = value
        else:
            raise FilterError("unknown substring element")
    if initial is None and final is None and not middle:
        raise FilterError("empty substrings filter")
    return Substrings(_attribute(attribute), initial, tuple(middle), final)


def _extensible(rule, attribute, value, dn_attributes: bool) -> Extensible:
    rule_name = _attribute(rule) if rule is not None else None
    name = _attribute(attribute) if attribute is not None else None
    # RFC 4511 §4.5.1.7.7: without a matching rule, the type must be present.
    if rule_name is None and name is None:
        raise FilterError("extensible match without a type or a matching rule")
    return Extensible(rule_name, name, _text(value), dn_attributes)


def from_wire(node: tuple, depth: int = 0) -> Filter:
    """
    Convert a filter tree from fastber's decoder; the same results and errors as
    from_ldaptor gives for the same filter.
    """
    if depth > MAX_DEPTH:
        raise FilterError("filter nested too deeply")
    kind = node[0]
    if kind == "compare":
        return Compare(node[1], _attribute(node[2]), _text(node[3]))
    if kind == "and":
        return And(tuple(from_wire(n, depth + 1) for n in node[1]))
    if kind == "or":
        return Or(tuple(from_wire(n, depth + 1) for n in node[1]))
    if kind == "not":
        return Not(from_wire(node[1], depth + 1))
    if kind == "present":
        return Present(_attribute(node[1]))
    if kind == "substrings":
        return _build_substrings(node[1], node[2])
    if kind == "extensible":
        return _extensible(node[1], node[2], node[3], node[4])
    raise FilterError(f"unknown filter element {kind}")


# ----------------------------------------------------------------------- evaluation


def _fold(value) -> str | bytes:
    # Directory strings compare with caseIgnoreMatch and insignificant space handling
    # (RFC 4518 §2.6.1), simplified: case-folded, runs of spaces collapsed.
    if isinstance(value, str):
        return " ".join(value.casefold().split())
    return value


def substring_match(value: str, f: Substrings) -> bool:
    """True if ``value`` matches the substring assertion, case-insensitively, without overlap."""
    text = _fold(value)
    pos = 0
    if f.initial is not None:
        initial = _fold(f.initial)
        if not text.startswith(initial):
            return False
        pos = len(initial)
    end = len(text)
    if f.final is not None:
        final = _fold(f.final)
        if len(text) - pos < len(final) or not text.endswith(final):
            return False
        end = len(text) - len(final)
    for part in f.any:
        found = text.find(_fold(part), pos, end)
        if found < 0:
            return False
        pos = found + len(_fold(part))
    return True


def _compare(op: str, value, wanted) -> bool:
    if isinstance(value, str) != isinstance(wanted, str):
        return False
    if op == "~=":
        if isinstance(value, str):
            return "".join(_fold(value).split()) == "".join(_fold(wanted).split())
        return value == wanted
    a, b = _fold(value), _fold(wanted)
    if op == "=":
        return a == b
    if isinstance(a, str) and a.lstrip("-").isdigit() and b.lstrip("-").isdigit():
        a, b = int(a), int(b)
    return a >= b if op == ">=" else a <= b


def evaluate(f: Filter, entry: Entry, readable: Callable[[str], bool]) -> bool | None:
    """True, False or None (Undefined) for ``entry``."""
    if isinstance(f, And):
        result = True
        for item in f.items:
            r = evaluate(item, entry, readable)
            if r is False:
                return False
            if r is None:
                result = None
        return result
    if isinstance(f, Or):
        result = False
        for item in f.items:
            r = evaluate(item, entry, readable)
            if r is True:
                return True
            if r is None:
                result = None
        return result
    if isinstance(f, Not):
        r = evaluate(f.item, entry, readable)
        return None if r is None else not r
    if isinstance(f, Extensible):
        return evaluate_extensible(f, entry, readable)
    if not readable(f.attribute):
        return None
    if isinstance(f, Present):
        return entry.has(f.attribute)
    values = entry.get(f.attribute)
    if isinstance(f, Substrings):
        return any(isinstance(v, str) and substring_match(v, f) for v in values)
    return any(_compare(f.op, v, f.value) for v in values)


def _either(a: bool | None, b: bool | None) -> bool | None:
    """Three-valued OR."""
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def evaluate_extensible(f: Extensible, entry: Entry,
                        readable: Callable[[str], bool]) -> bool | None:
    """
    RFC 4511 §4.5.1.7.7.  An unknown matching rule, or an assertion value the rule cannot
    read, is Undefined.  With a type, values the rule cannot read are Undefined too; without
    one, only the attributes whose values the rule can read take part.
    """
    rule = rules.find(f.rule) if f.rule is not None else rules.equality_rule(f.attribute)
    if rule is None:
        return None
    assertion = rule.prepare(f.value)
    if assertion is None:
        return None
    result = _rule_on_attributes(rule, assertion, f.attribute, entry, readable)
    if not f.dn_attributes or result is True:
        return result
    return _either(result, _rule_on_dn(rule, assertion, f.attribute, entry))


def _rule_on_attributes(rule, assertion, attribute: str | None, entry: Entry,
                        readable: Callable[[str], bool]) -> bool | None:
    if attribute is not None:
        if not readable(attribute):
            return None
        result: bool | None = False
        for value in entry.values(attribute):
            outcome = rule.match(value, assertion)
            if outcome is True:
                return True
            if outcome is None:
                result = None
        return result
    for name, values in entry.items():
        if not readable(name):
            continue
        if any(rule.match(value, assertion) is True for value in values):
            return True
    return False


def _rule_on_dn(rule, assertion, attribute: str | None, entry: Entry) -> bool:
    """
    True if an attribute value assertion of the entry's DN matches (RFC 4511 §4.5.1.7.7,
    dnAttributes).  The DN is visible to whoever sees the entry, so these values are not
    subject to attribute read rights; userPassword is never matched all the same.
    """
    wanted = attribute.lower() if attribute is not None else None
    try:
        rdns = entry.rdns
    except DNError:
        return False
    for rdn in rdns:
        for name, value in rdn:
            low = name.lower()
            if low == "userpassword" or (wanted is not None and low != wanted):
                continue
            if rule.match(value, assertion) is True:
                return True
    return False


def matches(f: Filter, entry: Entry, readable: Callable[[str], bool]) -> bool:
    """True only if the filter evaluates to TRUE (RFC 4511 §4.5.1.7)."""
    return evaluate(f, entry, readable) is True
