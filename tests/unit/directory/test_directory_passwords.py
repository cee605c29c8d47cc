"""Password hashing and verification (mailsuite.directory.passwords)."""

import base64
import hashlib

import pytest

from mailsuite.directory import passwords
from mailsuite.directory.passwords import hash_password, is_hashed, verify_password

# Vectors from the SHA-crypt specification and from glibc crypt(3) / `openssl passwd -1`.
SHA512_SPEC = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbY"
    "EdFCoEOfaS35inz1"
)
SHA512_ROUNDS = (
    "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/Urj"
    "mM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
)
SHA256_SPEC = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
SHA256_ROUNDS = "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
MD5_CRYPT = "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"


def _salted(algorithm, password, salt):
    digest = hashlib.new(algorithm, password.encode() + salt).digest()
    return base64.b64encode(digest + salt).decode()


def _plain(algorithm, password):
    return base64.b64encode(hashlib.new(algorithm, password.encode()).digest()).decode()


@pytest.mark.parametrize("stored", [SHA512_SPEC, SHA512_ROUNDS, SHA256_SPEC, SHA256_ROUNDS])
def test_sha_crypt_matches_published_vectors(stored):
    """sha512-crypt and sha256-crypt give the published results, with and without rounds."""
    assert passwords.sha_crypt(b"Hello world!", stored) == stored


def test_md5_crypt_matches_reference_vector():
    """md5-crypt gives the same result as the reference implementation."""
    assert passwords.md5_crypt(b"Hello world!", MD5_CRYPT) == MD5_CRYPT


@pytest.mark.parametrize("stored", [SHA512_SPEC, SHA512_ROUNDS, SHA256_SPEC, MD5_CRYPT])
def test_crypt_scheme_verifies_right_password_only(stored):
    """{CRYPT} values verify the right password and refuse a wrong one."""
    assert verify_password("{CRYPT}" + stored, "Hello world!")
    assert not verify_password("{CRYPT}" + stored, "Hello world")


@pytest.mark.parametrize(
    "scheme,algorithm", [("SSHA512", "sha512"), ("SSHA256", "sha256"), ("SSHA", "sha1"),
                         ("SMD5", "md5")]
)
def test_salted_digest_vectors_verify(scheme, algorithm):
    """Salted digests computed independently verify, whatever the salt length."""
    for salt in (b"\x01\x02\x03\x04", bytes(range(16))):
        stored = "{%s}%s" % (scheme, _salted(algorithm, "s3cret", salt))
        assert verify_password(stored, "s3cret")
        assert not verify_password(stored, "s3cre")


@pytest.mark.parametrize(
    "scheme,algorithm", [("SHA512", "sha512"), ("SHA256", "sha256"), ("SHA", "sha1"),
                         ("MD5", "md5")]
)
def test_unsalted_digest_vectors_verify(scheme, algorithm):
    """Unsalted digests (old data) verify the right password only."""
    stored = "{%s}%s" % (scheme, _plain(algorithm, "s3cret"))
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "S3cret")


def test_sha_known_vector():
    """{SHA} of "secret" is the well-known value."""
    assert verify_password("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret")


@pytest.mark.parametrize("scheme", sorted(passwords.HASHING_SCHEMES))
def test_hash_then_verify_round_trip(scheme):
    """Every scheme used for new hashes verifies its own output, and only for that password."""
    stored = hash_password("pässword", scheme)
    assert stored.upper().startswith("{%s}" % scheme)
    assert verify_password(stored, "pässword")
    assert not verify_password(stored, "password")


def test_default_scheme_is_ssha512_with_16_byte_salt():
    """hash_password defaults to {SSHA512}: 64-byte digest followed by a 16-byte salt."""
    stored = hash_password("x")
    assert stored.startswith("{SSHA512}")
    assert len(base64.b64decode(stored[9:])) == 64 + 16


def test_salts_differ_between_hashes():
    """Two hashes of one password differ (random salt)."""
    assert hash_password("same") != hash_password("same")


def test_argon2_value_format_and_verification():
    """{ARGON2} values hold an argon2id encoded hash and verify through argon2-cffi."""
    stored = hash_password("pw", "argon2")
    assert stored.startswith("{ARGON2}$argon2id$")
    assert verify_password(stored, "pw")
    assert not verify_password("{ARGON2}$argon2id$garbage", "pw")


@pytest.mark.parametrize("scheme", ["SSHA512", "SSHA", "CRYPT", "ARGON2"])
def test_pass_the_hash_is_refused(scheme):
    """The stored hash string itself, given as the password, never verifies."""
    stored = hash_password("secret", scheme)
    assert not verify_password(stored, stored)
    assert not verify_password(stored, stored[stored.index("}") + 1:])


def test_value_without_scheme_never_verifies():
    """A stored value with no known {SCHEME} is not compared as plaintext."""
    assert not verify_password("secret", "secret")
    assert not verify_password("{CLEARTEXT}secret", "secret")
    assert not verify_password("{CLEARTEXT}secret", "{CLEARTEXT}secret")


def test_schemes_are_case_insensitive():
    """{ssha512} and {crypt} prefixes work like their upper-case forms."""
    stored = hash_password("pw")
    assert verify_password("{ssha512}" + stored[9:], "pw")
    assert verify_password("{crypt}" + SHA512_SPEC, "Hello world!")


def test_malformed_hashes_do_not_verify():
    """Truncated or non-base64 values are refused without an exception."""
    assert not verify_password("{SSHA512}!!!", "x")
    assert not verify_password("{SSHA512}" + base64.b64encode(b"short").decode(), "x")
    assert not verify_password("{CRYPT}$6$", "x")
    assert not verify_password("{CRYPT}$9$salt$xyz", "x")


def test_bcrypt_without_package_is_refused(monkeypatch):
    """{CRYPT}$2b$ values never verify when the bcrypt package is missing."""
    monkeypatch.setattr(passwords, "_bcrypt", None)
    stored = "{CRYPT}$2b$12$GhvMmNVjRW29ulnudl.LbuAnUtN/LRfe1JsBm1Xu6LE3059z5Tr8m"
    assert not verify_password(stored, "password")


def test_is_hashed_recognises_known_schemes_only():
    """is_hashed is true for known {SCHEME} values, false for cleartext or unknown schemes."""
    assert is_hashed(hash_password("x"))
    assert is_hashed("{crypt}" + SHA512_SPEC)
    assert not is_hashed("alice-password")
    assert not is_hashed("{FOO}bar")


def test_hash_refuses_unknown_or_unsalted_scheme():
    """hash_password will not produce unknown or unsalted hashes."""
    with pytest.raises(ValueError):
        hash_password("x", "SHA")
    with pytest.raises(ValueError):
        hash_password("x", "NOPE")
