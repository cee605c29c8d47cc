"""mailsuite's POP3 server: command parser, wire format, maildrop and protocol."""
