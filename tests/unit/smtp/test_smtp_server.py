"""Tests for mailsuite.smtp.server: session basics, pipelining, MAIL/RCPT policy and limits."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.server import SMTPFactory, SMTPLimits
from tests.unit.smtp.test_smtp_support import (
    HOSTNAME,
    Session,
    codes,
    final,
    refused,
    transaction,
)


class GreetingAndEhloTests(SynchronousTestCase):
    def test_greeting(self):
        """The server greets with 220 <hostname> ESMTP mailsuite."""
        self.assertEqual(Session().greeting, [f"220 {HOSTNAME} ESMTP mailsuite"])

    def test_ehlo_advertises_extensions(self):
        """EHLO lists PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, STARTTLS."""
        lines = Session().ehlo()
        self.assertEqual(lines[0], f"250-{HOSTNAME}")
        keywords = [line[4:] for line in lines[1:]]
        for keyword in ["PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                        "CHUNKING", "STARTTLS"]:
            self.assertIn(keyword, keywords)
        self.assertTrue(lines[-1].startswith("250 "))

    def test_ehlo_hides_auth_before_tls(self):
        """Without TLS and without allow_plaintext_auth, AUTH is not advertised."""
        lines = Session().ehlo()
        self.assertFalse(any("AUTH" in line for line in lines))

    def test_ehlo_offers_auth_with_plaintext_allowed(self):
        """allow_plaintext_auth makes AUTH PLAIN LOGIN appear before TLS."""
        lines = Session(allow_plaintext_auth=True).ehlo()
        self.assertIn("250-AUTH PLAIN LOGIN", lines)

    def test_ehlo_without_tls_context_hides_starttls(self):
        """With no TLS context, STARTTLS is not advertised."""
        lines = Session(tls=None).ehlo()
        self.assertFalse(any("STARTTLS" in line for line in lines))

    def test_implicit_tls_offers_auth_not_starttls(self):
        """On an implicit-TLS listener AUTH is offered and STARTTLS is not."""
        lines = Session(implicit_tls=True).ehlo()
        self.assertIn("250-AUTH PLAIN LOGIN", lines)
        self.assertFalse(any("STARTTLS" in line for line in lines))

    def test_ehlo_without_domain(self):
        """EHLO with no argument gives 501 5.5.4."""
        self.assertEqual(final(Session().send(b"EHLO\r\n")), ["501 5.5.4 Invalid domain name"])

    def test_helo(self):
        """HELO answers 250 with the hostname."""
        self.assertEqual(Session().send(b"HELO client.example.net\r\n"), [f"250 {HOSTNAME}"])

    def test_commands_accept_bare_lf_line_ends(self):
        """Command lines ended by a bare LF are still understood."""
        self.assertEqual(codes(Session().send(b"NOOP\n")), [250])

    def test_unknown_mode_is_refused(self):
        """The factory only accepts the modes "mx" and "submission"."""
        with self.assertRaises(ValueError):
            SMTPFactory(hostname="h", local_domains=frozenset(), target=None, portal=None, tls=None,
                        mode="relay", clock=object())


class SimpleCommandTests(SynchronousTestCase):
    def test_noop_rset_help_vrfy_expn(self):
        """NOOP 250, RSET 250, HELP 214, VRFY 252, EXPN 502, each with an enhanced code."""
        lines = Session().send(b"NOOP\r\nRSET\r\nHELP\r\nVRFY alice\r\nEXPN staff\r\n")
        self.assertEqual(codes(lines), [250, 250, 214, 252, 502])
        self.assertEqual([line[4:9] for line in lines], ["2.0.0", "2.0.0", "2.0.0", "2.5.0", "5.5.1"])

    def test_quit_closes(self):
        """QUIT answers 221 2.0.0 and closes the connection."""
        session = Session()
        self.assertEqual(session.send(b"QUIT\r\n"), ["221 2.0.0 Bye"])
        self.assertTrue(session.closed)

    def test_nothing_after_quit_is_executed(self):
        """Commands pipelined after QUIT are ignored."""
        session = Session()
        self.assertEqual(codes(session.send(b"QUIT\r\nNOOP\r\n")), [221])

    def test_unknown_command(self):
        """An unknown command gives 500 5.5.1."""
        self.assertEqual(Session().send(b"FROB\r\n"), ["500 5.5.1 Command unrecognized"])

    def test_mail_before_ehlo(self):
        """MAIL before EHLO/HELO gives 503 5.5.1."""
        self.assertEqual(codes(Session().send(b"MAIL FROM:<a@b.example>\r\n")), [503])

    def test_rcpt_before_mail(self):
        """RCPT before MAIL gives 503 5.5.1."""
        session = Session()
        session.ehlo()
        self.assertEqual(final(session.send(b"RCPT TO:<alice@example.test>\r\n")),
                         ["503 5.5.1 Need MAIL command first"])

    def test_nested_mail(self):
        """A second MAIL inside a transaction gives 503 5.5.1."""
        session = Session()
        session.ehlo()
        lines = session.send(b"MAIL FROM:<a@b.example>\r\nMAIL FROM:<c@d.example>\r\n")
        self.assertEqual(codes(lines), [250, 503])

    def test_data_without_recipients(self):
        """DATA with no accepted recipient gives 554 and the next lines are commands."""
        session = Session()
        session.ehlo()
        lines = session.send(b"MAIL FROM:<a@b.example>\r\nDATA\r\nNOOP\r\n")
        self.assertEqual(codes(lines), [250, 554, 250])


class HappyPathTests(SynchronousTestCase):
    def test_full_transaction(self):
        """EHLO, MAIL, RCPT, DATA deliver the message with a Received header and 250."""
        session = Session()
        session.ehlo()
        lines = session.send(transaction("alice@example.test") + b"DATA\r\n")
        self.assertEqual(codes(lines), [250, 250, 354])
        lines = session.send(b"Subject: hi\r\n\r\nHello\r\n.\r\n")
        self.assertEqual(codes(lines), [250])
        self.assertTrue(lines[0].startswith("250 2.0.0 OK: queued as "))
        [delivery] = session.target.delivered
        self.assertEqual(delivery.envelope.mail_from, "bob@remote.example")
        self.assertEqual(delivery.recipients, [("alice@example.test", {})])
        self.assertTrue(delivery.data.endswith(b"\r\nSubject: hi\r\n\r\nHello\r\n"))
        self.assertTrue(delivery.data.startswith(b"Received: from client.example.net "))

    def test_envelope_fields(self):
        """The envelope records helo, client address, protocol, body type, size and an id."""
        session = Session()
        session.ehlo()
        session.send(b"MAIL FROM:<bob@remote.example> BODY=8BITMIME SIZE=500\r\n")
        envelope = session.target.deliveries[0].envelope
        self.assertEqual(envelope.helo, "client.example.net")
        self.assertEqual(envelope.client_address, "192.0.2.10")
        self.assertEqual(envelope.protocol, "ESMTP")
        self.assertEqual((envelope.body_type, envelope.size), ("8BITMIME", 500))
        self.assertEqual(envelope.mail_params, {"BODY": "8BITMIME", "SIZE": "500"})
        self.assertTrue(envelope.id)
        self.assertIsNone(envelope.authenticated_as)

    def test_two_transactions_on_one_connection(self):
        """After a delivered message a new MAIL starts a new delivery."""
        session = Session()
        session.ehlo()
        message = transaction("alice@example.test") + b"DATA\r\nx\r\n.\r\n"
        lines = session.send(message + message)
        self.assertEqual(codes(lines), [250, 250, 354, 250] * 2)
        self.assertEqual(len(session.target.delivered), 2)

    def test_rset_aborts_the_delivery(self):
        """RSET aborts the transaction's delivery."""
        session = Session()
        session.ehlo()
        session.send(transaction("alice@example.test") + b"RSET\r\n")
        self.assertTrue(session.target.deliveries[0].aborted)

    def test_disconnect_aborts_the_delivery(self):
        """Losing the connection mid-transaction aborts the delivery."""
        session = Session()
        session.ehlo()
        session.send(transaction("alice@example.test") + b"DATA\r\npartial")
        session.protocol.connectionLost(None)
        self.assertTrue(session.target.deliveries[0].aborted)
        self.assertEqual(session.target.delivered, [])


class PipeliningTests(SynchronousTestCase):
    def test_replies_in_order_when_recipients_are_slow(self):
        """With add_recipient pending, later commands wait and replies stay in order."""
        session = Session()
        session.target.hold_recipients = True
        session.ehlo()
        packet = (transaction("alice@example.test", "bob@example.test")
                  + b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(codes(session.send(packet)), [250])
        first, = session.target.held
        first.callback(None)
        self.assertEqual(codes(session.take()), [250])
        second = session.target.held[1]
        second.callback(None)
        self.assertEqual(codes(session.take()), [250, 354, 250])
        [delivery] = session.target.delivered
        self.assertEqual([r for r, _ in delivery.recipients], ["alice@example.test", "bob@example.test"])

    def test_refused_recipient_keeps_order(self):
        """A DeliveryError at RCPT gives its reply in place; the other RCPT still works."""
        session = Session()
        session.target.refuse["nobody@example.test"] = refused(550, "5.1.1", "No such user")
        session.ehlo()
        lines = session.send(transaction("nobody@example.test", "alice@example.test") + b"DATA\r\n")
        self.assertEqual(final(lines), ["250 2.1.0 Sender OK", "550 5.1.1 No such user",
                                        "250 2.1.5 Recipient OK",
                                        "354 End data with <CR><LF>.<CR><LF>"])

    def test_lines_after_refused_data_are_commands(self):
        """When DATA is refused (no recipients), the pipelined content runs as commands."""
        session = Session()
        session.target.refuse["nobody@example.test"] = refused(550, "5.1.1", "No such user")
        session.ehlo()
        lines = session.send(transaction("nobody@example.test") + b"DATA\r\nRSET\r\n")
        self.assertEqual(codes(lines), [250, 550, 554, 250])

    def test_data_content_is_not_read_before_354(self):
        """Content pipelined behind DATA waits for the pending RCPT and then is message text."""
        session = Session()
        session.target.hold_recipients = True
        session.ehlo()
        session.send(transaction("alice@example.test") + b"DATA\r\nQUIT\r\n.\r\n")
        self.assertFalse(session.closed)
        session.target.held[0].callback(None)
        self.assertEqual(codes(session.take()), [250, 354, 250])
        self.assertFalse(session.closed)
        self.assertTrue(session.target.delivered[0].data.endswith(b"\r\nQUIT\r\n"))

    def test_unexpected_recipient_failure_is_451(self):
        """A non-DeliveryError failure at RCPT gives 451 4.3.0."""
        session = Session()
        session.target.refuse["alice@example.test"] = RuntimeError("directory down")
        session.ehlo()
        lines = session.send(transaction("alice@example.test"))
        self.assertEqual(final(lines)[1], "451 4.3.0 Temporary failure, please try again later")
        self.flushLoggedErrors(RuntimeError)

    def test_input_paused_while_queue_grows(self):
        """While a step is pending, a large queue of input pauses the transport."""
        session = Session()
        session.target.hold_recipients = True
        session.ehlo()
        session.send(transaction("alice@example.test") + b"NOOP\r\n" * 20000)
        self.assertEqual(session.transport.producerState, "paused")
        session.target.held[0].callback(None)
        self.assertEqual(session.transport.producerState, "producing")


class RecipientPolicyTests(SynchronousTestCase):
    def test_relay_denied_without_auth(self):
        """A remote recipient without AUTH gives 554 5.7.1 Relay access denied."""
        session = Session()
        session.ehlo()
        lines = session.send(transaction("someone@remote.example"))
        self.assertEqual(final(lines)[1], "554 5.7.1 Relay access denied")
        self.assertEqual(session.target.deliveries[0].recipients, [])

    def test_local_domain_case_insensitive(self):
        """Local domains match case-insensitively."""
        session = Session()
        session.ehlo()
        self.assertEqual(codes(session.send(transaction("alice@EXAMPLE.Test"))), [250, 250])

    def test_relay_allowed_after_auth(self):
        """An authenticated client may send to remote domains."""
        session = Session(allow_plaintext_auth=True)
        session.login()
        lines = session.send(transaction("someone@remote.example", sender="alice@example.test"))
        self.assertEqual(codes(lines), [250, 250])

    def test_bare_postmaster_maps_to_local_domain(self):
        """RCPT TO:<postmaster> goes to postmaster@ the first local domain."""
        session = Session()
        session.ehlo()
        session.send(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n")
        self.assertEqual(session.target.deliveries[0].recipients, [("postmaster@example.org", {})])

    def test_too_many_recipients(self):
        """Recipients beyond max_recipients get 452 4.5.3."""
        session = Session(limits=SMTPLimits(max_recipients=2))
        session.ehlo()
        lines = session.send(transaction("a@example.test", "b@example.test", "c@example.test"))
        self.assertEqual(final(lines)[1:], ["250 2.1.5 Recipient OK", "250 2.1.5 Recipient OK",
                                            "452 4.5.3 Too many recipients"])

    def test_recipient_params_are_passed_on(self):
        """RCPT parameters reach add_recipient."""
        session = Session()
        session.ehlo()
        session.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test> NOTIFY=NEVER\r\n")
        self.assertEqual(session.target.deliveries[0].recipients,
                         [("alice@example.test", {"NOTIFY": "NEVER"})])

    def test_bad_recipient_syntax(self):
        """A malformed recipient gives 501 5.1.3."""
        session = Session()
        session.ehlo()
        lines = session.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<not an address>\r\n")
        self.assertEqual(final(lines)[1], "501 5.1.3 Bad recipient address syntax")

    def test_size_parameter_over_limit(self):
        """MAIL with SIZE over the limit gives 552 5.3.4 and starts no delivery."""
        session = Session(limits=SMTPLimits(max_message_size=1000))
        session.ehlo()
        lines = session.send(b"MAIL FROM:<a@b.example> SIZE=1001\r\n")
        self.assertEqual(final(lines), ["552 5.3.4 Message size exceeds fixed limit"])
        self.assertEqual(session.target.deliveries, [])

    def test_unknown_mail_parameter(self):
        """An unknown MAIL parameter gives 555 5.5.4."""
        session = Session()
        session.ehlo()
        self.assertEqual(codes(session.send(b"MAIL FROM:<a@b.example> XFOO=1\r\n")), [555])

    def test_smtputf8_transaction(self):
        """With SMTPUTF8, UTF-8 addresses are accepted and the protocol is UTF8SMTP."""
        session = Session()
        session.ehlo()
        lines = session.send("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<ö@example.test>\r\n"
                             .encode())
        self.assertEqual(codes(lines), [250, 250])
        self.assertEqual(session.target.deliveries[0].envelope.protocol, "UTF8SMTP")

    def test_utf8_recipient_without_smtputf8(self):
        """A UTF-8 recipient without SMTPUTF8 gives 553 5.6.7."""
        session = Session()
        session.ehlo()
        lines = session.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<ö@example.test>\r\n".encode())
        self.assertEqual(final(lines)[1], "553 5.6.7 Non-ASCII address requires SMTPUTF8")


class LimitTests(SynchronousTestCase):
    def test_long_command_line(self):
        """A command over max_line_length gives 500 5.5.2; the next line is a command again."""
        session = Session()
        lines = session.send(b"NOOP " + b"x" * 20000 + b"\r\nNOOP\r\n")
        self.assertEqual(final(lines), ["500 5.5.2 Line too long", "250 2.0.0 OK"])

    def test_long_command_line_across_packets_is_dropped(self):
        """An over-long command arriving in pieces is not buffered and its tail never runs."""
        session = Session()
        session.send(b"NOOP ")
        for _ in range(10):
            session.send(b"y" * 5000)
        self.assertLess(len(session.protocol._buffer), 8192)
        lines = session.send(b" QUIT\r\nNOOP\r\n")
        self.assertEqual(codes(lines), [500, 250])
        self.assertFalse(session.closed)

    def test_too_many_errors(self):
        """After max_errors bad commands the server says 421 4.7.0 and closes."""
        session = Session(limits=SMTPLimits(max_errors=3))
        lines = session.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
        self.assertEqual(codes(lines), [500, 500, 500, 421])
        self.assertEqual(lines[-1], "421 4.7.0 Too many errors, closing connection")
        self.assertTrue(session.closed)

    def test_idle_timeout(self):
        """After idle_timeout seconds without input: 421 4.4.2 and close."""
        session = Session(limits=SMTPLimits(idle_timeout=300))
        session.clock.advance(299)
        self.assertFalse(session.closed)
        session.clock.advance(1)
        self.assertEqual(session.take(), ["421 4.4.2 Idle timeout, closing connection"])
        self.assertTrue(session.closed)

    def test_input_resets_idle_timer(self):
        """Input restarts the idle timer."""
        session = Session(limits=SMTPLimits(idle_timeout=300))
        session.clock.advance(200)
        session.send(b"NOOP\r\n")
        session.clock.advance(200)
        self.assertFalse(session.closed)

    def test_idle_timer_waits_for_a_pending_commit(self):
        """The timeout does not fire while the server itself is still committing."""
        session = Session(limits=SMTPLimits(idle_timeout=300))
        session.target.hold_commit = True
        session.ehlo()
        session.send(transaction("alice@example.test") + b"DATA\r\nx\r\n.\r\n")
        session.clock.advance(301)
        self.assertFalse(session.closed)
        session.target.deliveries[0].commit_deferred.callback(None)
        self.assertEqual(codes(session.take()), [250])

    def test_disconnect_cancels_timer(self):
        """Closing the connection leaves no timer behind."""
        session = Session()
        session.send(b"QUIT\r\n")
        session.protocol.connectionLost(None)
        self.assertEqual(session.clock.getDelayedCalls(), [])
