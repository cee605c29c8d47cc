"""Session commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE, ENABLE, ID,
NAMESPACE, IDLE, UNAUTHENTICATE and COMPRESS (RFC 3501 §6.1-6.2, RFC 5161, RFC 2971,
RFC 2342, RFC 2177, RFC 8437, RFC 4978)."""

from __future__ import annotations

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.logger import Logger

from mailsuite.auth import SASLError, decode_base64, parse_plain
from mailsuite.imap import framing
from mailsuite.imap.capabilities import ENABLEABLE
from mailsuite.imap.commands import ANY, AUTHENTICATED, NOT_AUTHENTICATED, State, command
from mailsuite.imap.responses import (
    AUTHENTICATIONFAILED,
    COMPRESSIONACTIVE,
    PRIVACYREQUIRED,
    UNAVAILABLE,
    Reply,
    bad,
    no,
)
from mailsuite.interfaces import IMailAccount

log = Logger()

SASL_MECHANISMS = ("PLAIN",)
MAX_ID_FIELDS = 30  # RFC 2971 §3.3


@command("CAPABILITY", states=ANY)
async def capability(session, cmd):
    session.untagged("CAPABILITY " + " ".join(session.capabilities()))


@command("NOOP", states=ANY)
async def noop(session, cmd):
    # Pending changes are reported by the session after every command (RFC 3501 §6.1.2).
    return None


@command("LOGOUT", states=ANY)
async def logout(session, cmd):
    session.untagged("BYE Logging out")
    session.after_reply = session.close
    return Reply(text="Logged out")


@command("STARTTLS", states=NOT_AUTHENTICATED)
async def starttls(session, cmd):
    if session.tls is None or session.secure:
        raise bad("STARTTLS not available")
    session.after_reply = session.start_tls
    return Reply(text="Begin TLS negotiation now")


@command("LOGIN", states=NOT_AUTHENTICATED)
async def login(session, cmd):
    if not session.login_allowed:
        raise no("Use STARTTLS first", PRIVACYREQUIRED)
    user, password = cmd.args
    return await _login(session, user, password)


@command("AUTHENTICATE", states=NOT_AUTHENTICATED)
async def authenticate(session, cmd):
    mechanism, initial = cmd.args
    if not session.login_allowed:
        raise no("Use STARTTLS first", PRIVACYREQUIRED)
    if mechanism not in SASL_MECHANISMS:
        raise no("Unsupported mechanism", "CANNOT")
    if initial is None:
        # RFC 3501 §6.2.2: an empty challenge; the response comes on its own line.
        session.write(b"+ \r\n")
        event = await session.read_line()
        if isinstance(event, framing.LineTooLong):
            raise bad("Line too long")
        initial = event.data
        if initial == b"*":
            raise bad("Authentication cancelled")
    try:
        # RFC 4959 §3: "=" is an empty initial response.
        decoded = b"" if initial == b"=" else decode_base64(initial)
        authzid, authcid, password = parse_plain(decoded)
    except SASLError:
        raise bad("Malformed SASL response") from None
    if authzid and authzid != authcid:
        raise no("Authentication failed", AUTHENTICATIONFAILED)
    return await _login(session, authcid, password)


async def _login(session, user: str, password: str):
    creds = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    try:
        _iface, avatar, logout_ = await session.portal.login(creds, None, IMailAccount)
    except cred_error.LoginFailed:
        log.info("IMAP login failed for {login}", login=user)
        raise no("Authentication failed", AUTHENTICATIONFAILED) from None
    except Exception:
        log.failure("IMAP login could not be checked")
        raise no("Try again later", UNAVAILABLE) from None
    try:
        await avatar.store.ensure_account(avatar.account.uid)
    except Exception:
        logout_()
        raise
    if session.state is not State.NOT_AUTHENTICATED:
        logout_()
        raise bad("Already logged in")
    session.logged_in(avatar, logout_)
    log.info("IMAP login of {account}", account=avatar.account.uid)
    # RFC 3501 §6.2.3: capabilities may change after login; tell the client.
    return Reply(text="Logged in", code="CAPABILITY " + " ".join(session.capabilities()))


@command("ENABLE", states=AUTHENTICATED)
async def enable(session, cmd):
    # RFC 5161 §3.1: unknown capabilities are ignored; only newly enabled ones are listed.
    known = {name.upper(): name for name in ENABLEABLE}
    newly = []
    for asked in cmd.args:
        name = known.get(asked.upper())
        if name is not None and name not in session.enabled and name not in newly:
            newly.append(name)
    session.enabled.update(newly)
    # RFC 9051 §6.3.1: IMAP4rev2 carries UTF-8 mailbox names and strings.
    if "UTF8=ACCEPT" in newly or "IMAP4rev2" in newly:
        session.utf8 = True
    if "IMAP4rev2" in newly:
        session.rev2 = True
    if "QRESYNC" in newly:
        # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
        session.qresync = True
        if session.selected is not None:
            session.selected.qresync = True
    session.untagged("ENABLED" + "".join(" " + n for n in newly))
    if "CONDSTORE" in newly or "QRESYNC" in newly:
        session.enable_condstore()


@command("ID", states=ANY)
async def id_(session, cmd):
    fields = cmd.args
    if fields is not None and len(fields) > MAX_ID_FIELDS:
        raise bad("Too many ID fields")
    session.client_id = fields
    session.write(b'* ID ("name" "mailsuite")\r\n')


@command("NAMESPACE", states=AUTHENTICATED)
async def namespace(session, cmd):
    # RFC 2342 §5: one personal namespace with "/" as separator; no others.
    session.write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')


@command("IDLE", states=AUTHENTICATED)
async def idle(session, cmd):
    session.write(b"+ idling\r\n")
    session.idling = True
    try:
        if session.selected is not None:
            await session.sync(allow_expunge=True)
        event = await session.read_line()
    finally:
        session.idling = False
    # RFC 2177 §3: only "DONE" ends IDLE.
    if isinstance(event, framing.Line) and event.data.upper() == b"DONE":
        return Reply(text="IDLE terminated")
    raise bad("Expected DONE")



@command("UNAUTHENTICATE", states=AUTHENTICATED)
async def unauthenticate(session, cmd):
    # RFC 8437 §3: the session returns to the not authenticated state; TLS and
    # compression stay on.
    session.logged_out()
    return Reply(text="Not authenticated any more")


@command("COMPRESS", states=AUTHENTICATED)
async def compress(session, cmd):
    if cmd.args != "DEFLATE":
        raise bad("Unknown compression mechanism")
    if session.compressed:
        raise no("Compression is already active", COMPRESSIONACTIVE)  # RFC 4978 §3
    session.after_reply = session.start_compression
    return Reply(text="DEFLATE active")
