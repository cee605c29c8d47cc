"""The root DSE (RFC 4512 §5.1) and a minimal subschema entry (RFC 4512 §4.2)."""

from __future__ import annotations

from mailsuite.directory.entry import Entry
from mailsuite.ldap import codec, sasl

SUBSCHEMA_DN = "cn=Subschema"
SUBSCHEMA_NDN = "cn=subschema"

SUPPORTED_CONTROLS = (codec.OID_PAGED_RESULTS,)
SUPPORTED_EXTENSIONS = (codec.OID_START_TLS, codec.OID_WHO_AM_I, codec.OID_PASSWORD_MODIFY)

# RFC 4519 / RFC 2798 names, enough for LDAP tools and address books to list entries.
_ATTRIBUTE_TYPES = (
    "( 2.5.4.0 NAME 'objectClass' EQUALITY objectIdentifierMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.38 )",
    "( 2.5.4.3 NAME 'cn' SUP name )",
    "( 2.5.4.4 NAME 'sn' SUP name )",
    "( 2.5.4.41 NAME 'name' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
    "( 2.5.4.42 NAME 'givenName' SUP name )",
    "( 2.16.840.1.113730.3.1.241 NAME 'displayName' EQUALITY caseIgnoreMatch "
    "SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )",
    "( 0.9.2342.19200300.100.1.3 NAME 'mail' EQUALITY caseIgnoreIA5Match "
    "SUBSTR caseIgnoreIA5SubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )",
    "( 0.9.2342.19200300.100.1.1 NAME 'uid' EQUALITY caseIgnoreMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
    "( 2.5.4.20 NAME 'telephoneNumber' EQUALITY telephoneNumberMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.50 )",
    "( 2.5.4.35 NAME 'userPassword' EQUALITY octetStringMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )",
    "( 2.5.4.31 NAME 'member' SUP distinguishedName )",
)

_OBJECT_CLASSES = (
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) "
    "MAY ( userPassword $ telephoneNumber ) )",
    "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL "
    "MAY ( displayName $ givenName $ mail $ uid ) )",
    "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST ( member $ cn ) )",
)


def root_dse(base_dn: str) -> Entry:
    return Entry("", {
        "objectClass": ["top"],
        "namingContexts": [base_dn],
        "supportedLDAPVersion": ["3"],
        "supportedControl": [oid.decode() for oid in SUPPORTED_CONTROLS],
        "supportedExtension": [oid.decode() for oid in SUPPORTED_EXTENSIONS],
        # EXTERNAL only succeeds on a unix-socket listener; listed everywhere all the same.
        "supportedSASLMechanisms": list(sasl.MECHANISMS),
        "subschemaSubentry": [SUBSCHEMA_DN],
        "vendorName": ["mailsuite"],
    })


def subschema() -> Entry:
    return Entry(SUBSCHEMA_DN, {
        "objectClass": ["top", "subschema"],
        "cn": ["Subschema"],
        "attributeTypes": list(_ATTRIBUTE_TYPES),
        "objectClasses": list(_OBJECT_CLASSES),
    })
