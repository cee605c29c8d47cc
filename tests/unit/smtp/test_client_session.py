"""Tests for mailsuite.smtp.client: transactions with and without PIPELINING, replies, extensions."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.client import OutboundMessage
from tests.unit.smtp.test_client_support import (
    EHLO_PLAIN,
    HELO,
    Remote,
    codes,
    message,
)


class PipelinedTests(SynchronousTestCase):
    def test_mail_rcpts_and_data_go_in_one_write(self):
        """With PIPELINING, MAIL, every RCPT and DATA are written together, DATA last."""
        remote = Remote([message("bob@example.net", "carol@example.net")]).greet()
        self.assertEqual(remote.transport.writes[-1], b"MAIL FROM:<alice@example.test> SIZE=25\r\n"
                         b"RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
        self.assertEqual(remote.sent(), [
            "MAIL FROM:<alice@example.test> SIZE=25",
            "RCPT TO:<bob@example.net>",
            "RCPT TO:<carol@example.net>",
            "DATA",
        ])

    def test_delivered_recipients_get_the_final_reply(self):
        """Each accepted recipient's result is the reply to the final dot, stage "data"."""
        remote = Remote([message("bob@example.net", "carol@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 Go ahead\r\n")
        self.assertEqual(remote.pump(), b"Subject: test\r\n\r\nHello.\r\n.\r\n")
        remote.reply(b"250 2.0.0 Ok: queued as 12345\r\n")
        result = remote.finish()
        [[bob, carol]] = result.results
        self.assertEqual((bob.address, bob.code, bob.enhanced, bob.text, bob.stage),
                         ("bob@example.net", 250, "2.0.0", "Ok: queued as 12345", "data"))
        self.assertEqual(carol.code, 250)
        self.assertFalse(result.tls)
        self.assertEqual(result.host, "192.0.2.25")

    def test_per_recipient_refusals_are_kept(self):
        """A 4xx and a 5xx to RCPT stay with their recipients; the others are delivered."""
        remote = Remote([message("a@example.net", "b@example.net", "c@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 2.1.0 OK\r\n450 4.2.1 Mailbox busy\r\n550 5.1.1 No such user\r\n"
                     b"250 2.1.5 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 2.0.0 queued\r\n")
        [[a, b, c]] = remote.finish().results
        self.assertEqual((a.code, a.enhanced, a.text, a.stage), (450, "4.2.1", "Mailbox busy", "rcpt"))
        self.assertTrue(a.temporary)
        self.assertFalse(a.permanent)
        self.assertEqual((b.code, b.stage), (550, "rcpt"))
        self.assertTrue(b.permanent)
        self.assertEqual((c.code, c.stage), (250, "data"))

    def test_all_recipients_refused_sends_no_content(self):
        """When every RCPT fails the server refuses DATA and no content is sent."""
        remote = Remote([message("a@example.net", "b@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 2.1.0 OK\r\n550 5.1.1 No\r\n551 5.1.6 Moved\r\n554 5.5.1 No valid recipients\r\n")
        result = remote.finish()
        self.assertIsNone(remote.transport.producer)
        self.assertEqual(codes(result), [[(550, "rcpt"), (551, "rcpt")]])

    def test_data_accepted_after_all_recipients_refused_gets_a_lone_dot(self):
        """RFC 2920 §3.1: a 354 although every RCPT failed is answered with "." only."""
        remote = Remote([message("a@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 2.1.0 OK\r\n550 5.1.1 No\r\n354 Go\r\n")
        self.assertEqual(remote.pump(), b".\r\n")
        remote.reply(b"554 5.5.1 No valid recipients\r\n")
        self.assertEqual(codes(remote.finish()), [[(550, "rcpt")]])

    def test_mail_refused_fails_every_recipient(self):
        """A refused MAIL is every recipient's result; RCPT and DATA replies are read and ignored."""
        remote = Remote([message("a@example.net", "b@example.net")]).greet()
        remote.sent()
        remote.reply(b"553 5.1.8 Bad sender domain\r\n503 5.5.1 MAIL first\r\n"
                     b"503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first\r\n")
        result = remote.finish()
        self.assertEqual(codes(result), [[(553, "mail"), (553, "mail")]])
        self.assertEqual(result.results[0][0].text, "Bad sender domain")

    def test_data_refused_fails_the_accepted_recipients(self):
        """A 4xx to DATA is the result of the accepted recipients, stage "data"."""
        remote = Remote([message("a@example.net", "b@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n550 5.1.1 No\r\n451 4.3.0 Try later\r\n")
        self.assertEqual(codes(remote.finish()), [[(451, "data"), (550, "rcpt")]])

    def test_refusal_right_after_354(self):
        """A server that answers 354 and at once 550 (before any content) gives the 550."""
        remote = Remote([message("a@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n550 5.7.0 Changed my mind\r\n")
        self.assertEqual(remote.pump(), b"Subject: test\r\n\r\nHello.\r\n.\r\nQUIT\r\n")
        remote.reply(b"221 Bye\r\n")
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (550, "5.7.0", "data"))

    def test_final_reply_refusal_fails_accepted_recipients(self):
        """A 554 after the final dot is the result of every accepted recipient."""
        remote = Remote([message("a@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"554 5.7.1 Spam\r\n")
        self.assertEqual(codes(remote.finish()), [[(554, "data")]])


class LockstepTests(SynchronousTestCase):
    def test_without_pipelining_each_command_waits_for_its_reply(self):
        """Without PIPELINING, MAIL, each RCPT and DATA are sent one at a time."""
        remote = Remote([message("a@example.net", "b@example.net")]).greet(EHLO_PLAIN)
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])
        remote.reply(b"250 OK\r\n")
        self.assertEqual(remote.sent(), ["RCPT TO:<a@example.net>"])
        remote.reply(b"250 OK\r\n")
        self.assertEqual(remote.sent(), ["RCPT TO:<b@example.net>"])
        remote.reply(b"250 OK\r\n")
        self.assertEqual(remote.sent(), ["DATA"])
        remote.reply(b"354 Go\r\n")
        remote.pump()
        remote.reply(b"250 Queued\r\n")
        self.assertEqual(codes(remote.finish()), [[(250, "data"), (250, "data")]])

    def test_mail_refused_sends_no_rcpt(self):
        """Without PIPELINING a refused MAIL ends the transaction before any RCPT."""
        remote = Remote([message("a@example.net")]).greet(EHLO_PLAIN)
        remote.sent()
        remote.reply(b"451 4.3.0 Later\r\n")
        self.assertEqual(codes(remote.finish()), [[(451, "mail")]])

    def test_all_recipients_refused_sends_no_data_command(self):
        """Without PIPELINING, DATA is not sent when no recipient was accepted."""
        remote = Remote([message("a@example.net")]).greet(EHLO_PLAIN)
        remote.sent()
        remote.reply(b"250 OK\r\n")
        remote.sent()
        remote.reply(b"550 5.1.1 No\r\n")
        self.assertEqual(codes(remote.finish()), [[(550, "rcpt")]])


class ConnectionReuseTests(SynchronousTestCase):
    def test_messages_share_one_connection(self):
        """Two messages go over one connection: two transactions, one QUIT."""
        remote = Remote([message("a@example.net"), message("b@example.net", data=b"two\r\n")]).greet()
        for expected in (b"Subject: test\r\n\r\nHello.\r\n.\r\n", b"two\r\n.\r\n"):
            self.assertEqual(remote.sent()[0][:10], "MAIL FROM:")
            remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
            self.assertEqual(remote.pump(), expected)
            remote.reply(b"250 2.0.0 Queued\r\n")
        self.assertEqual(codes(remote.finish()), [[(250, "data")], [(250, "data")]])
        self.assertEqual(len(remote.reactor.tcpClients), 1)

    def test_rset_follows_a_transaction_left_open(self):
        """After all RCPTs failed (MAIL accepted), RSET comes before the next MAIL."""
        remote = Remote([message("a@example.net"), message("b@example.net")]).greet(EHLO_PLAIN)
        remote.sent()
        remote.reply(b"250 OK\r\n")
        remote.sent()
        remote.reply(b"550 5.1.1 No\r\n")
        self.assertEqual(remote.sent(), ["RSET"])
        remote.reply(b"250 2.0.0 Reset\r\n")
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_no_rset_after_a_completed_transaction(self):
        """After a final reply to the content, the next MAIL follows without RSET."""
        remote = Remote([message("a@example.net"), message("b@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"550 5.7.1 Rejected\r\n")
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test> SIZE=25")

    def test_no_rset_after_a_refused_mail(self):
        """A refused MAIL opens no transaction, so the next MAIL needs no RSET."""
        remote = Remote([message("a@example.net"), message("b@example.net")]).greet(EHLO_PLAIN)
        remote.sent()
        remote.reply(b"550 5.7.1 Sender refused\r\n")
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_rset_after_refused_data(self):
        """DATA refused leaves the transaction open: RSET before the next MAIL."""
        remote = Remote([message("a@example.net"), message("b@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n451 4.3.0 Later\r\n")
        self.assertEqual(remote.sent(), ["RSET"])

    def test_message_without_recipients_is_skipped(self):
        """A message with no recipients sends nothing and has an empty result list."""
        empty = OutboundMessage("alice@example.test", [], b"x\r\n", {})
        remote = Remote([empty, message("a@example.net")]).greet()
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test> SIZE=25", "RCPT TO:<a@example.net>",
                                         "DATA"])
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        self.assertEqual(remote.finish().results, [[], [remote.result.results[1][0]]])
        self.assertEqual(codes(remote.result), [[], [(250, "data")]])


class RepliesTests(SynchronousTestCase):
    def test_multiline_replies_are_joined(self):
        """A multiline final reply becomes one text, the enhanced code taken off each line."""
        remote = Remote([message("a@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"550-5.7.1 Message rejected\r\n550-5.7.1 see https://example.net/why\r\n"
                     b"550 5.7.1 for details\r\n")
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.enhanced), (550, "5.7.1"))
        self.assertEqual(r.text, "Message rejected see https://example.net/why for details")

    def test_replies_split_across_packets(self):
        """Replies arriving a few bytes at a time are reassembled."""
        remote = Remote([message("a@example.net")]).connect()
        for byte in b"220-mx.example.net\r\n220 ESMTP\r\n":
            remote.reply(bytes([byte]))
        self.assertEqual(remote.sent(), [f"EHLO {HELO}"])

    def test_ehlo_refused_falls_back_to_helo(self):
        """A 5xx to EHLO is followed by HELO; the session then uses no extensions."""
        remote = Remote([message("a@example.net", mail_params={"BODY": "8BITMIME"})]).connect()
        remote.reply(b"220 old.example.net SMTP\r\n")
        remote.sent()
        remote.reply(b"502 5.5.1 Command not implemented\r\n")
        self.assertEqual(remote.sent(), [f"HELO {HELO}"])
        remote.reply(b"250 old.example.net\r\n")
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_helo_refused_too_fails_everything(self):
        """When HELO is refused as well, its reply is every recipient's result, then QUIT."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220 mx\r\n")
        remote.sent()
        remote.reply(b"500 What\r\n")
        remote.sent()
        remote.reply(b"550 5.7.1 Go away\r\n")
        self.assertEqual(codes(remote.finish()), [[(550, "ehlo")]])

    def test_ehlo_temporary_failure_is_temporary_for_all(self):
        """A 4xx to EHLO is not followed by HELO; every recipient gets it."""
        remote = Remote([message("a@example.net"), message("b@example.net")]).connect()
        remote.reply(b"220 mx\r\n")
        remote.sent()
        remote.reply(b"450 4.7.1 Slow down\r\n")
        result = remote.finish()
        self.assertEqual(codes(result), [[(450, "ehlo")], [(450, "ehlo")]])

    def test_refusing_greeting_fails_everything(self):
        """A 554 greeting is every recipient's result, stage "connect"."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"554 5.7.1 No SMTP service here\r\n")
        self.assertEqual(codes(remote.finish()), [[(554, "connect")]])

    def test_enhanced_code_of_another_class_stays_text(self):
        """An enhanced code whose class differs from the reply's is ordinary text."""
        remote = Remote([message("a@example.net")]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n450 5.1.1 odd\r\n554 5.5.1 No valid recipients\r\n")
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.enhanced, r.text), (450, "", "5.1.1 odd"))


class ExtensionTests(SynchronousTestCase):
    def test_message_over_the_size_limit_is_not_sent(self):
        """SIZE smaller than the message: 552 5.3.4 for its recipients, no MAIL sent."""
        big = message("a@example.net", data=b"x" * 2000)
        small = message("b@example.net")
        remote = Remote([big, small]).greet(["mx", "PIPELINING", "SIZE 1000"])
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test> SIZE=25")
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        result = remote.finish()
        self.assertEqual([(r.code, r.enhanced, r.stage) for r in result.results[0]], [(552, "5.3.4", "mail")])
        self.assertTrue(result.results[0][0].permanent)
        self.assertEqual(codes(result)[1], [(250, "data")])

    def test_size_zero_means_no_limit(self):
        """RFC 1870: "SIZE 0" announces no fixed limit."""
        remote = Remote([message("a@example.net", data=b"x" * 2000)]).greet(["mx", "SIZE 0"])
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test> SIZE=2000"])

    def test_dsn_parameters_sent_when_advertised(self):
        """With DSN announced, RET and ENVID go on MAIL, NOTIFY and ORCPT on RCPT."""
        msg = message("a@example.net", mail_params={"RET": "HDRS", "ENVID": "QQ314159"},
                      rcpt_params={"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a@example.net"})
        remote = Remote([msg]).greet()
        self.assertEqual(remote.sent()[:2], [
            "MAIL FROM:<alice@example.test> SIZE=25 RET=HDRS ENVID=QQ314159",
            "RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.net",
        ])

    def test_dsn_parameters_dropped_when_not_advertised(self):
        """Without DSN announced, no RET, ENVID, NOTIFY or ORCPT is sent."""
        msg = message("a@example.net", mail_params={"RET": "FULL", "ENVID": "X"},
                      rcpt_params={"NOTIFY": "NEVER", "ORCPT": "rfc822;a@example.net"})
        remote = Remote([msg]).greet(["mx", "PIPELINING"])
        self.assertEqual(remote.sent()[:2], ["MAIL FROM:<alice@example.test>", "RCPT TO:<a@example.net>"])

    def test_body_8bitmime_only_when_advertised(self):
        """BODY=8BITMIME is sent to a server announcing 8BITMIME and left off otherwise."""
        msg = message("a@example.net", mail_params={"BODY": "8BITMIME"})
        with_8bit = Remote([msg]).greet(["mx", "8BITMIME"])
        self.assertEqual(with_8bit.sent(), ["MAIL FROM:<alice@example.test> BODY=8BITMIME"])
        without = Remote([msg]).greet(["mx", "ENHANCEDSTATUSCODES"])
        self.assertEqual(without.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_binarymime_is_refused_without_sending(self):
        """BODY=BINARYMIME cannot go with DATA: 554 5.6.3, nothing sent."""
        msg = message("a@example.net", mail_params={"BODY": "BINARYMIME"})
        remote = Remote([msg]).greet()
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.enhanced, r.stage), (554, "5.6.3", "mail"))

    def test_smtputf8_address_refused_when_not_advertised(self):
        """A UTF-8 address to a server without SMTPUTF8: 553 5.6.7, permanent, nothing sent."""
        msg = message("jörg@example.net", mail_params={"SMTPUTF8": None})
        remote = Remote([msg]).greet(["mx", "PIPELINING", "8BITMIME"])
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.enhanced, r.stage), (553, "5.6.7", "mail"))
        self.assertTrue(r.permanent)

    def test_smtputf8_header_refused_when_not_advertised(self):
        """SMTPUTF8 with UTF-8 in the header section needs a server announcing SMTPUTF8."""
        msg = message("a@example.net", mail_params={"SMTPUTF8": None},
                      data="Subject: grüße\r\n\r\nbody\r\n".encode())
        remote = Remote([msg]).greet(["mx", "8BITMIME"])
        self.assertEqual(codes(remote.finish()), [[(553, "mail")]])

    def test_smtputf8_not_needed_by_an_ascii_message(self):
        """SMTPUTF8 asked for by an all-ASCII envelope and header goes without it."""
        msg = message("a@example.net", mail_params={"SMTPUTF8": None},
                      data="Subject: plain\r\n\r\nbody grüße\r\n".encode())
        remote = Remote([msg]).greet(["mx", "8BITMIME"])
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_smtputf8_sent_when_advertised(self):
        """With SMTPUTF8 announced, MAIL carries SMTPUTF8 and the addresses go as UTF-8."""
        msg = message("jörg@bücher.example", mail_params={"SMTPUTF8": None})
        remote = Remote([msg]).greet()
        self.assertEqual(remote.sent()[:2], ["MAIL FROM:<alice@example.test> SIZE=25 SMTPUTF8",
                                             "RCPT TO:<jörg@bücher.example>"])

    def test_null_sender(self):
        """The null reverse-path is sent as MAIL FROM:<>."""
        remote = Remote([message("a@example.net", sender="")]).greet(["mx"])
        self.assertEqual(remote.sent(), ["MAIL FROM:<>"])

    def test_address_with_line_break_is_refused_locally(self):
        """A recipient that would break the command line is refused 553 without being sent."""
        msg = message("a@example.net\r\nRCPT TO:<evil@example.org>", "b@example.net")
        remote = Remote([msg]).greet()
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test> SIZE=25", "RCPT TO:<b@example.net>",
                                         "DATA"])
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        self.assertEqual(codes(remote.finish()), [[(553, "rcpt"), (250, "data")]])

    def test_empty_message_list_makes_no_connection(self):
        """deliver() with no messages returns at once without connecting."""
        remote = Remote([])
        self.assertEqual(remote.result.results, [])
        self.assertEqual(remote.reactor.tcpClients, [])
