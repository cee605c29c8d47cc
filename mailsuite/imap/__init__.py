"""mailsuite's IMAP4rev1 server (RFC 3501) with the everyday extensions."""
