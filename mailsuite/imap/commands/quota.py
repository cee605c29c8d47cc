"""The read side of QUOTA (RFC 9208): GETQUOTAROOT and GETQUOTA; SETQUOTA is refused,
since quotas are set by administrators."""

from __future__ import annotations

from mailsuite.imap import wire
from mailsuite.imap.commands import AUTHENTICATED, command
from mailsuite.imap.quota import ROOT, kib, usage_and_limit
from mailsuite.imap.responses import CANNOT, NONEXISTENT, no


def _quota_line(used: int, most: int) -> bytes:
    # RFC 9208 §5.1: QUOTA root (resource usage limit)
    return b'* QUOTA "" (STORAGE %d %d)\r\n' % (kib(used), most // 1024)


@command("GETQUOTAROOT", states=AUTHENTICATED)
async def getquotaroot(session, cmd):
    status = await session.store.status(session.account, cmd.args)
    used, most = await usage_and_limit(session)
    name = wire.mailbox(status.name, utf8=session.utf8)
    if most is None:
        # RFC 9208 §4.3: a mailbox under no quota root.
        session.write(b"* QUOTAROOT %s\r\n" % name)
        return None
    session.write(b'* QUOTAROOT %s ""\r\n' % name + _quota_line(used, most))
    return None


@command("GETQUOTA", states=AUTHENTICATED)
async def getquota(session, cmd):
    used, most = await usage_and_limit(session)
    if cmd.args != ROOT or most is None:
        raise no("No such quota root", NONEXISTENT)
    session.write(_quota_line(used, most))
    return None


@command("SETQUOTA", states=AUTHENTICATED)
async def setquota(session, cmd):
    raise no("Quotas are set by the administrator", CANNOT)
