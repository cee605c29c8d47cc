"""
Password hashing and verification for ``userPassword`` values.

Stored values carry an RFC 3112-style ``{SCHEME}`` prefix.  A value without a known scheme
never verifies: nothing is ever compared as plaintext, so a stored hash string used as a
password (pass-the-hash) fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

try:  # optional: only used to verify "{CRYPT}$2b$..." values
    import bcrypt as _bcrypt
except ImportError:  # pragma: no cover - depends on the installation
    _bcrypt = None

import argon2
from argon2 import exceptions as argon2_exceptions

#: The scheme hash_password uses unless told otherwise.
DEFAULT_SCHEME = "SSHA512"

_SALT_BYTES = 16

# scheme -> (hashlib name, salted)
_DIGEST_SCHEMES = {
    "SSHA512": ("sha512", True),
    "SSHA256": ("sha256", True),
    "SSHA": ("sha1", True),
    "SMD5": ("md5", True),
    "SHA512": ("sha512", False),
    "SHA256": ("sha256", False),
    "SHA": ("sha1", False),
    "MD5": ("md5", False),
}

_KNOWN_SCHEMES = frozenset(_DIGEST_SCHEMES) | {"CRYPT", "ARGON2"}

#: Schemes hash_password produces; unsalted digests are accepted only for old data.
HASHING_SCHEMES = frozenset({"SSHA512", "SSHA256", "SSHA", "CRYPT", "ARGON2"})

_SCHEME_RE = re.compile(r"^\{([A-Za-z0-9.+-]+)\}")

_argon2 = argon2.PasswordHasher()


def scheme_of(value: str) -> str | None:
    """The upper-cased ``{SCHEME}`` prefix of ``value``, known or not, or None."""
    m = _SCHEME_RE.match(value)
    return m.group(1).upper() if m else None


def cheap_to_verify(value: str) -> bool:
    """
    True for salted or plain digests (one hash, microseconds): checking them inline costs
    less than handing them to a thread.  {CRYPT} and {ARGON2} are deliberately slow.
    """
    return scheme_of(value) in _DIGEST_SCHEMES


def is_hashed(value: str) -> bool:
    """True if ``value`` carries a scheme this module can verify."""
    return scheme_of(value) in _KNOWN_SCHEMES


def hash_password(password: str, scheme: str = DEFAULT_SCHEME) -> str:
    """
    Hash ``password`` for storage, e.g. ``{SSHA512}base64(digest + 16-byte salt)``.
    ``scheme`` is one of HASHING_SCHEMES (case-insensitive); ``CRYPT`` is sha512-crypt.
    """
    scheme = scheme.upper()
    if scheme not in HASHING_SCHEMES:
        raise ValueError(f"unsupported password scheme for new hashes: {scheme}")
    secret = password.encode("utf-8")
    if scheme == "ARGON2":
        return "{ARGON2}" + _argon2.hash(secret)
    if scheme == "CRYPT":
        salt = _b64_crypt_salt(os.urandom(12))
        return "{CRYPT}" + sha_crypt(secret, f"$6${salt}")
    algorithm, _ = _DIGEST_SCHEMES[scheme]
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.new(algorithm, secret + salt).digest()
    return "{%s}%s" % (scheme, base64.b64encode(digest + salt).decode("ascii"))


def verify_password(stored: str, candidate: str) -> bool:
    """True if ``candidate`` is the password ``stored`` (a ``{SCHEME}`` value) was made from."""
    if not isinstance(stored, str) or not isinstance(candidate, str):
        return False
    scheme = scheme_of(stored)
    if scheme not in _KNOWN_SCHEMES:
        return False
    body = stored[len(scheme) + 2:]
    secret = candidate.encode("utf-8")
    if scheme == "ARGON2":
        return _verify_argon2(body, secret)
    if scheme == "CRYPT":
        return _verify_crypt(body, secret)
    return _verify_digest(scheme, body, secret)


def _verify_digest(scheme: str, body: str, secret: bytes) -> bool:
    algorithm, salted = _DIGEST_SCHEMES[scheme]
    try:
        raw = base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    size = hashlib.new(algorithm).digest_size
    if salted:
        if len(raw) <= size:
            return False
        digest, salt = raw[:size], raw[size:]
    else:
        if len(raw) != size:
            return False
        digest, salt = raw, b""
    return hmac.compare_digest(hashlib.new(algorithm, secret + salt).digest(), digest)


def _verify_argon2(body: str, secret: bytes) -> bool:
    try:
        return _argon2.verify(body, secret)
    except (argon2_exceptions.VerificationError, argon2_exceptions.InvalidHashError, ValueError):
        return False


def _verify_crypt(body: str, secret: bytes) -> bool:
    if body.startswith(("$6$", "$5$")):
        computed = sha_crypt(secret, body)
    elif body.startswith("$1$"):
        computed = md5_crypt(secret, body)
    elif body.startswith(("$2a$", "$2b$", "$2y$")):
        if _bcrypt is None:
            return False
        try:
            return _bcrypt.checkpw(secret, body.encode("ascii"))
        except ValueError:
            return False
    else:
        # Traditional DES crypt and unknown variants are not supported.
        return False
    if computed is None:
        return False
    return hmac.compare_digest(computed.encode("ascii"), body.encode("ascii", "replace"))


# --------------------------------------------------------------------------- crypt(3) helpers

_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Byte order of the final digest in the output encoding, per the SHA-crypt specification
# (three bytes per group, most significant first); the last group is shorter.
_SHA512_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
    (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
    (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
    (18, 39, 60), (40, 61, 19), (62, 20, 41), (None, None, 63),
)
_SHA256_ORDER = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5),
    (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29), (None, 31, 30),
)
_MD5_ORDER = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5), (None, None, 11))

_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999


def _encode_crypt64(digest: bytes, order) -> str:
    out = []
    for a, b, c in order:
        if a is None and b is None:
            value, chars = digest[c], 2
        elif a is None:
            value, chars = (digest[b] << 8) | digest[c], 3
        else:
            value, chars = (digest[a] << 16) | (digest[b] << 8) | digest[c], 4
        for _ in range(chars):
            out.append(_CRYPT_ALPHABET[value & 0x3F])
            value >>= 6
    return "".join(out)


def _b64_crypt_salt(raw: bytes) -> str:
    return "".join(_CRYPT_ALPHABET[b & 0x3F] for b in raw)


def _repeat(block: bytes, length: int) -> bytes:
    whole, rest = divmod(length, len(block))
    return block * whole + block[:rest]


def sha_crypt(secret: bytes, setting: str) -> str | None:
    """
    sha256-crypt (``$5$``) or sha512-crypt (``$6$``) of ``secret`` with the salt and rounds of
    ``setting`` (a full hash or just ``$6$[rounds=N$]salt``).  None if ``setting`` is malformed.
    """
    if setting.startswith("$6$"):
        algorithm, order, magic = hashlib.sha512, _SHA512_ORDER, "$6$"
    elif setting.startswith("$5$"):
        algorithm, order, magic = hashlib.sha256, _SHA256_ORDER, "$5$"
    else:
        return None
    rest = setting[3:]
    rounds, custom_rounds = _ROUNDS_DEFAULT, False
    if rest.startswith("rounds="):
        count, sep, rest = rest[7:].partition("$")
        if not sep or not count.isdigit():
            return None
        rounds = min(max(int(count), _ROUNDS_MIN), _ROUNDS_MAX)
        custom_rounds = True
    salt_text = rest.split("$", 1)[0][:16]
    try:
        salt = salt_text.encode("ascii")
    except UnicodeEncodeError:
        return None
    p, s = secret, salt

    b = algorithm(p + s + p).digest()
    ctx = algorithm(p + s)
    ctx.update(_repeat(b, len(p)))
    n = len(p)
    while n:
        ctx.update(b if n & 1 else p)
        n >>= 1
    a = ctx.digest()

    p_bytes = _repeat(algorithm(p * len(p)).digest(), len(p))
    s_bytes = _repeat(algorithm(s * (16 + a[0])).digest(), len(s))

    c = a
    for i in range(rounds):
        ctx = algorithm(p_bytes if i & 1 else c)
        if i % 3:
            ctx.update(s_bytes)
        if i % 7:
            ctx.update(p_bytes)
        ctx.update(c if i & 1 else p_bytes)
        c = ctx.digest()

    prefix = magic + (f"rounds={rounds}$" if custom_rounds else "")
    return f"{prefix}{salt_text}${_encode_crypt64(c, order)}"


def md5_crypt(secret: bytes, setting: str) -> str | None:
    """md5-crypt (``$1$``) of ``secret`` with the salt of ``setting``; None if malformed."""
    if not setting.startswith("$1$"):
        return None
    salt_text = setting[3:].split("$", 1)[0][:8]
    try:
        salt = salt_text.encode("ascii")
    except UnicodeEncodeError:
        return None
    magic = b"$1$"
    final = hashlib.md5(secret + salt + secret).digest()
    ctx = hashlib.md5(secret + magic + salt)
    ctx.update(_repeat(final, len(secret)))
    n = len(secret)
    while n:
        ctx.update(b"\0" if n & 1 else secret[:1])
        n >>= 1
    final = ctx.digest()
    for i in range(1000):
        ctx = hashlib.md5(secret if i & 1 else final)
        if i % 3:
            ctx.update(salt)
        if i % 7:
            ctx.update(secret)
        ctx.update(final if i & 1 else secret)
        final = ctx.digest()
    return f"$1${salt_text}${_encode_crypt64(final, _MD5_ORDER)}"
