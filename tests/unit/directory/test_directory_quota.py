"""mailQuota: the per-account storage limit read by the embedded and external directories."""

import pytest

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.schema import parse_quota
from tests.unit.directory.test_directory_embedded import BASE, SEED, person
from tests.unit.directory.test_external_directory import ENTRIES, make, result


@pytest.fixture
def directory():
    d = EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=SEED)
    yield d
    d.close()


@pytest.mark.parametrize("values, expected", [
    ([], None),
    (["1048576"], 1048576),
    ([" 2048 "], 2048),
    (["0"], 0),
    (["-5"], None),
    (["1.5e6"], None),
    (["lots"], None),
    (["\u0661\u0662"], None),
    ([b"100"], None),
])
def test_parse_quota_accepts_only_decimal_octets(values, expected):
    """parse_quota takes a non-negative decimal integer and ignores anything else."""
    assert parse_quota(values, dn="uid=x") == expected


def test_embedded_account_has_mail_quota(directory):
    """An embedded account with mailQuota reports it as Account.quota."""
    directory.add_entry(person("erin", mailQuota=["1048576"]))
    assert directory.account("erin").quota == 1048576


def test_embedded_account_without_mail_quota_has_none(directory):
    """An account with no mailQuota has quota None (the configured default applies)."""
    directory.add_entry(person("erin"))
    assert directory.account("erin").quota is None


def test_embedded_invalid_mail_quota_is_ignored(directory):
    """An invalid mailQuota leaves the account usable, with no quota of its own."""
    directory.add_entry(person("erin", mailQuota=["plenty"]))
    account = directory.account("erin")
    assert account is not None and account.quota is None


def test_embedded_mail_quota_from_ldif(directory):
    """mailQuota imported from LDIF is accepted and read."""
    ldif = (
        f"dn: uid=fred,ou=people,{BASE}\n"
        "objectClass: inetOrgPerson\nuid: fred\ncn: Fred\nsn: F\n"
        "mail: fred@example.test\nmailQuota: 5000\n"
    ).encode()
    directory.import_ldif(ldif)
    assert directory.account("fred").quota == 5000


def test_external_account_has_mail_quota(monkeypatch):
    """The external directory asks for mailQuota and fills Account.quota from it."""
    dn = "uid=gina,dc=example,dc=test"
    monkeypatch.setitem(ENTRIES, dn, {
        "objectclass": ["inetOrgPerson"], "uid": ["gina"], "mail": ["gina@example.test"],
        "cn": ["Gina"], "mailquota": ["7000"]})
    directory, _, _ = make()
    assert result(directory.account("gina")).quota == 7000
    assert "mailQuota".lower() in [a.lower() for a in directory._attributes]


def test_external_invalid_mail_quota_is_ignored(monkeypatch):
    """An invalid mailQuota from the external server gives quota None."""
    dn = "uid=gina,dc=example,dc=test"
    monkeypatch.setitem(ENTRIES, dn, {
        "objectclass": ["inetOrgPerson"], "uid": ["gina"], "mail": ["gina@example.test"],
        "cn": ["Gina"], "mailquota": ["-1"]})
    directory, _, _ = make()
    assert result(directory.account("gina")).quota is None
