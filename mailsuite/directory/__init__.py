"""
The directory: the embedded directory (SQLite-backed, indexed), password hashing, LDIF.
"""

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.entry import Entry, normalize_dn
from mailsuite.directory.ldif import LDIFError, parse_ldif, write_ldif
from mailsuite.directory.passwords import hash_password, is_hashed, verify_password

__all__ = [
    "EmbeddedDirectory",
    "Entry",
    "LDIFError",
    "hash_password",
    "is_hashed",
    "normalize_dn",
    "parse_ldif",
    "verify_password",
    "write_ldif",
]
