"""
Who may read and write what over LDAP.  Safe defaults, fixed rules:

- anonymous clients (unless switched off) read the white-pages attributes of the entries
  of the people branch (``ou=people`` below the base); every bound user reads them for all
  entries below the base (groups too, for distribution lists);
- a user reads the whole of its own entry, except userPassword, and changes its own password;
- only the admin DN writes, and only the admin ever sees userPassword;
- nobody compares userPassword or matches it in a filter (no password oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailsuite.directory.entry import is_under

WHITE_PAGES = frozenset({
    "cn", "sn", "givenname", "displayname", "mail", "telephonenumber", "title", "ou", "o",
    "mobile", "objectclass",
})

PASSWORD = "userpassword"


@dataclass(frozen=True)
class Identity:
    """Who the session is bound as: ``ndn`` None is anonymous."""

    dn: str = ""
    ndn: str | None = None
    admin: bool = False
    uid: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.ndn is None


ANONYMOUS = Identity()


class AccessPolicy:
    """The rules above for a directory whose entries live under ``base_ndn``."""

    def __init__(self, *, base_ndn: str, anonymous_search: bool = True):
        self.base_ndn = base_ndn
        self.people_ndn = f"ou=people,{base_ndn}"
        self.anonymous_search = anonymous_search

    def may_search(self, who: Identity) -> bool:
        return self.anonymous_search or not who.anonymous

    def may_search_from(self, who: Identity, ndn: str) -> bool:
        """May ``who`` start a search at ``ndn``?  Any entry below the base; which entries
        the search then returns is may_see_entry's business."""
        return who.admin or (self.may_search(who) and is_under(ndn, self.base_ndn))

    def may_see_entry(self, who: Identity, ndn: str) -> bool:
        if who.admin:
            return True
        if who.anonymous:
            return self.anonymous_search and is_under(ndn, self.people_ndn)
        return is_under(ndn, self.base_ndn)

    def may_read(self, who: Identity, ndn: str, attribute: str) -> bool:
        """May ``who`` read (or match in a filter) ``attribute`` of the entry ``ndn``?"""
        name = attribute.lower()
        if who.admin:
            return True
        if name == PASSWORD or not self.may_see_entry(who, ndn):
            return False
        return name in WHITE_PAGES or who.ndn == ndn

    def may_filter(self, who: Identity, ndn: str, attribute: str) -> bool:
        """Filters never match userPassword, whoever asks."""
        return attribute.lower() != PASSWORD and self.may_read(who, ndn, attribute)

    def may_compare(self, who: Identity, ndn: str, attribute: str) -> bool:
        return self.may_filter(who, ndn, attribute)

    def may_write(self, who: Identity) -> bool:
        return who.admin

    def may_set_password(self, who: Identity, target_ndn: str) -> bool:
        return who.admin or (who.ndn is not None and who.ndn == target_ndn)
