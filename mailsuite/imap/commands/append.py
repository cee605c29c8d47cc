"""APPEND (RFC 3501 §6.3.11) with MULTIAPPEND (RFC 3502), APPENDUID (RFC 4315 §3) and
APPENDLIMIT (RFC 7889; the framer refuses larger literals with [TOOBIG])."""

from __future__ import annotations

from twisted.logger import Logger

from mailsuite.imap.commands import AUTHENTICATED, command
from mailsuite.imap.responses import Reply, bad, failed
from mailsuite.interfaces import StoreError

log = Logger()


@command("APPEND", states=AUTHENTICATED)
async def append(session, cmd):
    name, messages = cmd.args
    for message in messages:
        if any(flag.lower() in ("\\recent", "\\*") for flag in message.flags):
            raise bad("Invalid flag")
    store, account = session.store, session.account
    appended = []
    try:
        status = await store.status(account, name)
        for message in messages:
            info = await store.append(account, status.name, message.data,
                                      frozenset(message.flags), message.internal_date)
            appended.append(info.uid)
    except StoreError as e:
        if appended:
            # RFC 3502 §6.3.11: MULTIAPPEND is all or nothing.
            try:
                await store.expunge(account, status.name, appended)
            except Exception:
                log.failure("IMAP could not undo a partial MULTIAPPEND")
        raise failed(e, target=True) from None
    uids = ",".join(str(uid) for uid in appended)
    return Reply(text="APPEND completed", code=f"APPENDUID {status.uidvalidity} {uids}")
