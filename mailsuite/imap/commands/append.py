"""APPEND (RFC 3501 §6.3.11) with MULTIAPPEND (RFC 3502), APPENDUID (RFC 4315 §3),
APPENDLIMIT (RFC 7889; the framer refuses larger literals with [TOOBIG]), literal8 content
(RFC 3516 §4.4: stored as sent) and quota limits (RFC 9208, [OVERQUOTA])."""

from __future__ import annotations

from twisted.logger import Logger

from mailsuite.imap.commands import AUTHENTICATED, command
from mailsuite.imap.quota import usage_and_limit
from mailsuite.imap.responses import OVERQUOTA, Reply, bad, failed, no
from mailsuite.interfaces import StoreError

log = Logger()


@command("APPEND", states=AUTHENTICATED)
async def append(session, cmd):
    name, messages = cmd.args
    for message in messages:
        if any(flag.lower() in ("\\recent", "\\*") for flag in message.flags):
            raise bad("Invalid flag")
    store, account = session.store, session.account
    # RFC 9208 §4.3: synchronising literals were checked before they came (see the
    # server); this covers LITERAL+ and the store filling meanwhile.
    used, most = await usage_and_limit(session)
    if most is not None and used + sum(len(m.data) for m in messages) > most:
        raise no("Quota exceeded", OVERQUOTA)
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
